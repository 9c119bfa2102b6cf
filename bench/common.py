"""What the benchmark scripts share: timing and formatting helpers, the benchmark's own
checks, the final table, and a real Jupyter kernel with a timed execute round trip.

The scripts run as `python bench/NAME.py`, so this directory is `sys.path[0]` and they
import it as `from common import ...`, from any working directory. What the benchmarks
share with the tests lives beside the tests (tests/helpers.py, tests/kernel_client.py,
tests/load_driver.py: the tests never import bench/); importing this module puts that
folder on `sys.path` after this one.
"""

from __future__ import annotations

import atexit
import contextlib
import cProfile
import gc
import io
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
    count of targets met and missed."""
    rows = sorted(rows, key=lambda row: order.index(row.key))  # stable
    body = [
        (
            r.key,
            r.what,
            r.value,
            r.versus,
            r.versus_value,
            r.result,
            r.target,
            "" if r.ok is None else ("OK" if r.ok else "MISSED"),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [headers, *body]) for i in range(len(headers))]
    right = {2, 4}

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
        if previous is not None and group(row[0]) != previous:
            log("")
        previous = group(row[0])
        log(line(row))
    log("=" * len(line(headers)))
    missed = [r for r in rows if r.ok is False]
    log(
        f"targets: {sum(r.ok is True for r in rows)} met, {len(missed)} missed; "
        f"benchmark took {elapsed:.0f} s; load average now {load_average()}"
    )


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
        (display_data, execute_result, stream, error) as {"msg_type", "content"} dicts."""
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
            if m.msg_type in ("display_data", "execute_result", "stream", "error")
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
