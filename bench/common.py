"""What the benchmark scripts share: timing and formatting helpers (`sample`, call by call;
`paired`, variants interleaved round by round, ratios per round), the benchmark's own
checks, the final table, and a real Jupyter kernel with a timed execute round trip.

bench/run_all.sh runs the scripts in turn with NBWORKER_BENCH_ROWS set: each final table
(`print_table`) then also appends its rows to that file, and `python bench/common.py
--summary FILE` prints them, every script's, as one table.

The scripts run as `python bench/NAME.py`, so this directory is `sys.path[0]` and they
import it as `from common import ...`, from any working directory. What the benchmarks
share with the tests lives beside the tests (tests/helpers.py, tests/kernel_client.py,
tests/load_driver.py: the tests import nothing of bench/ but to test it, in
test_bench_harness.py and test_gpu_check.py); importing this module puts that folder on
`sys.path` after this one.
"""

from __future__ import annotations

import atexit
import contextlib
import cProfile
import dataclasses
import gc
import io
import json
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_MIMETYPE = "application/vnd.nbworker.run+json"  # the scripts check it against nbworker
TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(1, str(TESTS))


# ----------------------------------------------------------------------------- figures


def median(values: list[float]) -> float:
    return statistics.median(values)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def fmt_s(seconds: float, *, signed: bool = False, ms_digits: int = 3, s_digits: int = 3) -> str:
    """A duration in the unit that reads best (µs with 2 decimals, ms and s with
    `ms_digits` and `s_digits`)."""
    sign = "+" if signed else ""
    magnitude = abs(seconds)
    if magnitude < 1e-3:
        return f"{seconds * 1e6:{sign}.2f} µs"
    if magnitude < 1:
        return f"{seconds * 1e3:{sign}.{ms_digits}f} ms"
    return f"{seconds:{sign}.{s_digits}f} s"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def log(message: str = "") -> None:
    print(message, flush=True)


def log_banner(versions: dict[str, str], quick: bool) -> None:
    """The first line of a run: the versions that matter, the machine and its load."""
    log(
        ", ".join(f"{name} {version}" for name, version in versions.items())
        + f", Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load_average()}" + (" (--quick)" if quick else "")
    )


def setup_workdir() -> Path:
    """A temporary directory for the run, removed at exit, with a fresh IPython profile
    (IPYTHONDIR) under it for this process and the kernels it starts: the run neither
    reads nor grows the user's ~/.ipython.

    Call it before IPython starts: the removal is then registered before IPython's own
    atexit hook (which closes the history database kept under the directory), so it runs
    after it."""
    workdir = Path(tempfile.mkdtemp(prefix="nbworker-bench-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    os.environ["IPYTHONDIR"] = str(workdir / "ipython")
    return workdir


# ----------------------------------------------------------------------------- checks


class BenchFailure(RuntimeError):
    """A benchmark's own check failed: the figure would measure the wrong thing."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchFailure(message)


def cell_ok(result: Any) -> None:
    """Fail the benchmark if an IPython cell (its ExecutionResult) failed."""
    if not result.success:
        raise BenchFailure(
            f"cell failed: {result.error_before_exec or result.error_in_exec!r} "
            f"({result.info.raw_cell[:60]!r})"
        )


# ----------------------------------------------------------------------------- timing


def sample(
    variants: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    per_round: int,
    warmup: int,
    gc_off: bool,
    checks: dict[str, Callable[[Any], None]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each variant, timed call by call with perf_counter_ns.

    Variants are interleaved (rounds of `per_round` calls each, in turn) so that drift of
    the machine during the run affects them alike. With `gc_off` the collector is disabled
    while timing (otherwise collecting is part of the cost). `checks[name]` sees each
    call's result (warm-up calls too), outside the timed region; the result is dropped
    before the next call.
    """
    checks = checks or {}
    for name, function in variants.items():
        verify = checks.get(name)
        for _ in range(warmup):
            result = function()
            if verify is not None:
                verify(result)
            del result
    samples: dict[str, list[int]] = {name: [] for name in variants}
    clock = time.perf_counter_ns
    gc.collect()
    if gc_off:
        gc.disable()
    try:
        for _ in range(rounds):
            for name, function in variants.items():
                out = samples[name]
                verify = checks.get(name)
                for _ in range(per_round):
                    start = clock()
                    result = function()
                    out.append(clock() - start)
                    if verify is not None:
                        verify(result)
                    del result
    finally:
        if gc_off:
            gc.enable()
    return {name: [ns / 1e9 for ns in values] for name, values in samples.items()}


@dataclass
class Paired:
    """What `paired` measured: each variant's figure, one per round, rounds in step (the
    i-th figures of all variants come from the same round)."""

    samples: dict[str, list[float]]

    @property
    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}

    def ratio(self, numerator: str, denominator: str) -> float:
        """The median over rounds of `numerator / denominator` measured in the same round
        (a round whose denominator is 0 counts as infinite)."""
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return statistics.median(a / b if b else math.inf for a, b in pairs)

    @property
    def ratios(self) -> dict[str, float]:
        """Each variant's median per-round ratio to the first variant."""
        first = next(iter(self.samples))
        return {name: self.ratio(name, first) for name in self.samples}


def paired(
    variants: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    timed: bool = True,
    checks: dict[str, Callable[[Any], None]] | None = None,
) -> Paired:
    """Each variant once per round, every variant in every round, after `warmup` rounds
    that are not kept. The order is reversed every other round (A B, B A, ...), so that
    no variant always runs first or right after the same one.

    With `timed`, a variant's figure is the wall time of its call in seconds
    (perf_counter); otherwise it is what the call returns (a float: jobs/s, a ratio...).
    `checks[name]` sees each call's result (warm-up rounds too), outside the timed region.
    Compare variants with `Paired.ratio`: a median of per-round ratios, so a slow round
    (the machine busy) moves numerator and denominator together.
    """
    checks = checks or {}
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        for name in names if index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            result = variants[name]()
            seconds = time.perf_counter() - start
            verify = checks.get(name)
            if verify is not None:
                verify(result)
            if index >= warmup:
                samples[name].append(seconds if timed else float(result))
            del result
    return Paired(samples)


def timed_run(
    argv: list[str], cwd: str | Path, env: dict[str, str] | None = None, *, timeout: float
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command (output captured as text); its wall time in seconds and the result."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - start, proc


def stats_text(profiler: cProfile.Profile, sort: str, *restrictions: Any) -> str:
    """pstats' report of `profiler`, sorted by `sort` and cut by `restrictions` (a count, a
    regular expression), indented for the log."""
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(*restrictions)
    return textwrap.indent(text.getvalue().strip(), "    ")


# ----------------------------------------------------------------------------- the table


@dataclass
class Row:
    """One line of the final table."""

    key: str
    what: str
    value: str
    versus: str = ""
    versus_value: str = ""
    result: str = ""
    target: str = ""
    ok: bool | None = None


HEADERS = ("#", "measured", "nbworker", "alternative", "alt.", "comparison", "target", "")
# Set by bench/run_all.sh: print_table also appends its rows, one JSON object a line, to the
# file ROWS_VARIABLE names, under the script's name (SCRIPT_VARIABLE, else the file's stem);
# `python bench/common.py --summary FILE` prints them all as one table.
ROWS_VARIABLE = "NBWORKER_BENCH_ROWS"
SCRIPT_VARIABLE = "NBWORKER_BENCH_SCRIPT"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("OK" if ok else "MISSED")


def _render(
    headers: tuple[str, ...],
    body: list[tuple[str, ...]],
    *,
    right: set[int],
    group: Callable[[tuple[str, ...]], str],
) -> None:
    """Log `body` under `headers` in aligned columns (`right`: right-aligned), a blank line
    where `group(row)` changes."""
    widths = [max(len(str(row[i])) for row in [headers, *body]) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    log()
    log("=" * len(line(headers)))
    log(line(headers))
    log("-" * len(line(headers)))
    previous = None
    for row in body:
        if previous is not None and group(row) != previous:
            log("")
        previous = group(row)
        log(line(row))
    log("=" * len(line(headers)))


def print_table(
    rows: list[Row],
    order: list[str],
    elapsed: float,
    *,
    headers: tuple[str, ...] = HEADERS,
    group: Callable[[str], str] = lambda key: key,
) -> None:
    """The final table: rows in the order of their keys in `order` (each key's rows in the
    order they were added), a blank line between groups (`group(key)` changes), then the
    count of targets met and missed. With ROWS_VARIABLE set, the rows also go to its file."""
    rows = sorted(rows, key=lambda row: order.index(row.key))  # stable
    body: list[tuple[str, ...]] = [
        (r.key, r.what, r.value, r.versus, r.versus_value, r.result, r.target, _verdict(r.ok))
        for r in rows
    ]
    _render(headers, body, right={2, 4}, group=lambda row: group(row[0]))
    missed = [r for r in rows if r.ok is False]
    log(
        f"targets: {sum(r.ok is True for r in rows)} met, {len(missed)} missed; "
        f"benchmark took {elapsed:.0f} s; load average now {load_average()}"
    )
    write_rows(rows, elapsed=elapsed)


def write_rows(rows: list[Row], *, elapsed: float | None = None) -> None:
    """Append `rows` to the file ROWS_VARIABLE names (nothing if unset), one JSON object a
    line, each with the script's name; then one line with the script's duration."""
    path = os.environ.get(ROWS_VARIABLE)
    if not path:
        return
    script = os.environ.get(SCRIPT_VARIABLE) or Path(sys.argv[0]).stem
    with open(path, "a", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps({"script": script, "row": dataclasses.asdict(row)}) + "\n")
        if elapsed is not None:
            file.write(json.dumps({"script": script, "seconds": round(elapsed, 1)}) + "\n")


# The combined table: each figure and its target side by side (what it is compared with is
# in the script's own table).
SUMMARY_HEADERS = ("bench", "#", "measured", "value", "comparison", "target", "")


@dataclass
class _Script:
    """What the rows file says of one script."""

    rows: list[Row]
    exit: int | None = None  # from run_all.sh's status line; None: no status line
    reason: str = ""
    seconds: float | None = None


def _failure_reason(log_path: str | None) -> str:
    """What a script's log says of why it failed: its BENCHMARK CHECK FAILED line and, when
    more follows (a traceback), the last line; else the last line (an exception)."""
    if not log_path or not os.path.exists(log_path):
        return ""
    with open(log_path, encoding="utf-8", errors="replace") as file:
        lines = [line.strip() for line in file if line.strip()]
    if not lines:
        return ""
    at = next((i for i, line in enumerate(lines) if "BENCHMARK CHECK FAILED" in line), None)
    if at is None:
        return _cut(lines[-1], 120)
    return _cut(lines[at], 80) + (f" ... {_cut(lines[-1], 80)}" if at < len(lines) - 1 else "")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def read_rows(path: str | Path) -> dict[str, _Script]:
    """The rows file: each script's rows, exit status and duration, in the order they came.
    A status line is {"script", "exit", "log"} (bench/run_all.sh writes them)."""
    scripts: dict[str, _Script] = {}
    with open(path, encoding="utf-8") as file:
        for number, text in enumerate(file, 1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
                script = scripts.setdefault(str(item["script"]), _Script([]))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}, line {number}: not a row ({err})") from None
            if "row" in item:
                script.rows.append(Row(**item["row"]))
            if "seconds" in item:
                script.seconds = float(item["seconds"])
            if "exit" in item:
                script.exit = int(item["exit"])
                if script.exit != 0:
                    script.reason = _failure_reason(item.get("log"))
    return scripts


def summary(path: str | Path) -> int:
    """Print every script's figures from the rows file as one table, then a line per script
    (targets met and missed, FAILED). 1 if a script failed (non-zero exit, or exit 0 and
    no table), else 0."""
    scripts = read_rows(path)
    body: list[tuple[str, ...]] = []
    failed = []
    for name, script in scripts.items():
        for r in script.rows:
            body.append((name, r.key, r.what, r.value, r.result, r.target, _verdict(r.ok)))
        if script.exit is not None and (script.exit != 0 or not script.rows):
            failed.append(name)
            why = f"exit {script.exit}" if script.exit else "exit 0 but no table"
            body.append((name, "", f"FAILED ({why}): see below", "", "", "", "FAILED"))
    _render(SUMMARY_HEADERS, body, right={3}, group=lambda row: row[0])
    for name, script in scripts.items():
        met = sum(r.ok is True for r in script.rows)
        missed = [r.key for r in script.rows if r.ok is False]
        text = f"{name}: {met} met, {len(missed)} missed" + (
            f" (#{', #'.join(dict.fromkeys(missed))})" if missed else ""
        )
        if script.seconds is not None:
            text += f", {script.seconds:.0f} s"
        if name in failed:
            text += f"; FAILED (exit {script.exit})" + (
                f": {script.reason}" if script.reason else ""
            )
        log(text)
    rows = [r for script in scripts.values() for r in script.rows]
    log(
        f"all: {sum(r.ok is True for r in rows)} met, {sum(r.ok is False for r in rows)} "
        f"missed, {len(failed)} of {len(scripts)} scripts FAILED"
        + (f" ({', '.join(failed)})" if failed else "")
        + f"; load average now {load_average()}"
    )
    return 1 if failed else 0


# ----------------------------------------------------------------------------- a kernel


class Kernel:
    """A real Jupyter kernel (tests/kernel_client.py's, without the extension loaded), with
    a timed execute round trip."""

    def __init__(self, log_path: str | Path) -> None:
        from kernel_client import Kernel as ClientKernel

        # The kernel's own stdout/stderr (e.g. its warning about unencrypted TCP) go to a
        # file, shown should the kernel fail.
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in close())
        try:
            self.kernel = ClientKernel(extension=False, stdout=self._log, stderr=self._log)
        except BaseException:
            self._log.close()
            raise
        self.startup = self.kernel.startup

    def execute(self, code: str, timeout: float = 60) -> tuple[float, dict[str, Any], list[Any]]:
        """Send an execute_request; wait for its execute_reply and its idle status. Returns
        the round trip in seconds, the reply content and the IOPub output messages
        (display_data, update_display_data, execute_result, stream, error) as
        {"msg_type", "content"} dicts."""
        start = time.perf_counter_ns()
        try:
            execution = self.kernel.execute(code, timeout=timeout)
        except TimeoutError:
            raise BenchFailure(f"the kernel did not answer {code[:40]!r} in {timeout} s") from None
        elapsed = (time.perf_counter_ns() - start) / 1e9
        if execution.status != "ok":
            raise BenchFailure(f"{code[:40]!r} failed in the kernel: {execution.reply}")
        outputs = [
            {"msg_type": m.msg_type, "content": m.content}
            for m in execution.messages
            if m.msg_type
            in ("display_data", "update_display_data", "execute_result", "stream", "error")
        ]
        return elapsed, execution.reply, outputs

    def close(self) -> None:
        self.kernel.shutdown()
        self._log.close()

    def log_tail(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read()[-3000:]


@contextlib.contextmanager
def started_kernel(log_path: str | Path) -> Iterator[Kernel]:
    """A Kernel, shut down on leaving; a BenchFailure raised meanwhile gets the tail of the
    kernel's log."""
    kernel = Kernel(log_path)
    try:
        yield kernel
    except BenchFailure as err:
        raise BenchFailure(f"{err}\nkernel log:\n{kernel.log_tail()}") from None
    finally:
        kernel.close()


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="What the bench scripts share; run as a script, the combined table."
    )
    parser.add_argument(
        "--summary",
        metavar="FILE",
        required=True,
        help=f"print the rows the scripts wrote to FILE (${ROWS_VARIABLE}) as one table",
    )
    args = parser.parse_args(argv)
    try:
        return summary(args.summary)
    except (OSError, ValueError) as err:
        print(f"common.py --summary: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main())
