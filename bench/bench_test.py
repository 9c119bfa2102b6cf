#!/usr/bin/env python
"""Benchmark of `nbworker test` on notebooks with 50 and 200 recorded `%rp_test` runs, next
to running each case in a notebook of its own (papermill), and next to nbmake.

    python bench/bench_test.py                # full run: 4 rounds, all 50 per-case runs,
                                              # the worker replay; about 10 min on 2 cores
    python bench/bench_test.py --quick        # CI-sized: 2 rounds, 10 per-case runs
                                              # (EXTRAPOLATED, and said so), no worker
                                              # replay: about 3 min
    python bench/bench_test.py --cases 50,200 # the two notebook sizes (targets: 30x, 100x)

The notebook is generated in code (`nbformat.v4`): `%load_ext nbworker`, a `%%model` cell
whose load takes 1 s (`time.sleep(1.0)` standing in for loading weights) and binds a small
table, a sync `%%handler` cell scoring `job["input"]` with the table, and 200 `%rp_test`
cells with different inputs. It is recorded once with papermill in a fresh kernel (per-cell
saves off); the 50-case notebook is the same with its first 50 cases (records and all).
Then, in this same run:

(a) `nbworker test recorded-N.ipynb --notebook-only` in a subprocess (wall time: process
    start, imports, kernel, the 1 s load, N cases), for each size, and the same through the
    API in-process (`nbworker.testing.test_notebook`) for the smaller one. Paired with the
    floor: rounds of every variant, the order reversed every other round, one warm-up round.
    Per case: ((a) at 200 - (a) at 50) / 150, next to what the 100x goal leaves per case.
(floor) papermill running only the three setup cells (kernel start, `%load_ext`, the 1 s
    load, `%%handler`): what every per-case run of (b) pays, and (a)'s floor too.
(b) One papermill run per case: the setup cells plus that one `%rp_test` cell, each in a
    fresh kernel (`papermill.execute_notebook` in-process). Every such run does the same
    work, so (b) for N cases is N x their mean: all 50 cases are run (--quick: every fifth),
    and any larger total is EXTRAPOLATED from them (said so in its row). Each run is compared
    with its record afterwards, outside the timing (plain papermill compares nothing).
    Targets: (b)/(a) >= 30x at 50 cases, >= 100x at 200 cases.
(c) `pytest --nbmake recorded-50.ipynb` in a subprocess: one run of the notebook, nothing
    about the records checked (it passes a notebook whose handler changed).
(d) `nbworker test recorded-50.ipynb` with the worker replay (each case is `python handler.py
    --test_input JOB` under the RunPod SDK): once, full run only; its cost per case.

Before timing, the script checks what it times: the records (COMPLETED runs with the outputs
the handler gives), that (a) exits 0 with every case passed (each replay shown 'passed' in
the executed notebook), that (a) exits 1 with every case failed once the handler cell is
edited after recording, that nbmake passes both, and that no run changes a recorded
notebook. Kernels run this venv's interpreter (its share/jupyter first in JUPYTER_PATH),
with a temporary IPYTHONDIR. Only 127.0.0.1 is used; files go to a temporary directory,
removed at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import random
import re
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import common
from common import (
    BenchFailure,
    Row,
    check,
    log,
    log_banner,
    median,
    paired,
    print_table,
    setup_workdir,
    timed_run,
)

SIZES = (50, 200)  # cases in the two notebooks
TARGETS = {50: 30.0, 200: 100.0}  # (b) / (a), CLI
QUICK_PER_CASE = 10  # --quick: per-case papermill runs in (b), the rest extrapolated
MODEL_SECONDS = 1.0  # the %%model cell's sleep
SUBPROCESS_TIMEOUT = 600.0

MODEL_CELL = f"""\
%%model table
import time

time.sleep({MODEL_SECONDS})  # stands for loading weights
TABLE = {{"a": 0.5, "b": 1.25, "c": -2.0, "d": 3.0, "e": 0.1, "f": 7.5}}
"""
HANDLER_BODY = """\
def handler(job):
    words = job["input"]["words"]
    scale = job["input"].get("scale", 1.0)
    score = sum(TABLE.get(word, 0.0) for word in words) * scale
    return {"score": score, "n": len(words), "unknown": [w for w in words if w not in TABLE]}
"""
HANDLER_CELL = "%%handler\n" + HANDLER_BODY
# The handler edited after recording: every case's output changes (its "n").
EDITED_HANDLER_CELL = HANDLER_CELL.replace('"n": len(words)', '"n": len(words) + 1')
SETUP_CELLS = 3  # %load_ext, %%model, %%handler


# ----------------------------------------------------------------------------- helpers


def fmt_s(seconds: float, *, signed: bool = False) -> str:
    """A duration, coarser than the other benchmarks' (whole notebook runs, seconds)."""
    return common.fmt_s(seconds, signed=signed, ms_digits=1, s_digits=2)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def kernel_stderr(path: Path) -> Iterator[None]:
    """Send this process's fd 2 to `path` meanwhile: kernels started in-process inherit it
    and each logs a warning (plain TCP) there; subprocesses' stderr is captured anyway."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


ROWS: list[Row] = []


# ----------------------------------------------------------------------------- the notebooks


def case_inputs(count: int) -> list[dict[str, Any]]:
    """`count` different inputs: a few words (some not in the table) and a scale."""
    rng = random.Random(20240601)
    inputs = [
        {"words": [rng.choice("abcdefxyz") for _ in range(1 + i % 6)], "scale": 0.5 + i / 20}
        for i in range(count)
    ]
    distinct = {json.dumps(value, sort_keys=True) for value in inputs}
    check(len(distinct) == count, f"{len(distinct)} distinct inputs, not {count}")
    return inputs


def expected_output(value: dict[str, Any]) -> Any:
    """What the handler gives for `value`, computed here from the cells' own code."""
    namespace: dict[str, Any] = {}
    namespace["TABLE"] = eval(MODEL_CELL.split("TABLE = ", 1)[1], {})  # its dict literal
    exec(HANDLER_BODY, namespace)
    return namespace["handler"]({"id": "x", "input": value})


def make_notebook(inputs: list[dict[str, Any]]) -> Any:
    from nbformat import v4

    cells = [
        v4.new_code_cell("%load_ext nbworker"),
        v4.new_code_cell(MODEL_CELL.rstrip("\n")),
        v4.new_code_cell(HANDLER_CELL.rstrip("\n")),
    ]
    cells += [v4.new_code_cell("%rp_test " + json.dumps({"input": value})) for value in inputs]
    notebook = v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


def records_of(cell: Any) -> list[dict[str, Any]]:
    from nbworker.record import RECORD_MIMETYPE

    return [
        output["data"][RECORD_MIMETYPE]
        for output in cell.get("outputs", [])
        if RECORD_MIMETYPE in output.get("data", {})
    ]


def errors_of(notebook: Any) -> list[str]:
    return [
        f"cell {index}: {output.get('ename')}: {output.get('evalue')}"
        for index, cell in enumerate(notebook.cells)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def execute(notebook: Any, output: Path, cwd: Path, *, saves: bool = True) -> Any:
    """papermill in-process, in a fresh kernel; the executed notebook."""
    import nbformat
    import papermill

    papermill.execute_notebook(
        notebook,
        str(output),
        kernel_name="python3",
        cwd=str(cwd),
        progress_bar=False,
        request_save_on_cell_execute=saves,
    )
    return nbformat.read(output, as_version=4)


def record(workdir: Path, sizes: tuple[int, ...], stderr_log: Path) -> dict[int, Path]:
    """Generate the largest notebook, record it once (papermill, per-cell saves off: the
    same outputs, written once), check the records; the smaller ones are its first cases."""
    import nbformat

    largest = max(sizes)
    inputs = case_inputs(largest)
    log(f"[0] generate the notebook and record it (papermill, one run, {largest} cases)")
    start = time.perf_counter()
    with kernel_stderr(stderr_log):
        executed = execute(make_notebook(inputs), workdir / "recording.ipynb", workdir, saves=False)
    took = time.perf_counter() - start
    check(not errors_of(executed), f"the recording raised: {errors_of(executed)}")
    cases = executed.cells[SETUP_CELLS:]
    check(len(cases) == largest, f"{len(cases)} %rp_test cells, not {largest}")
    for index, (cell, value) in enumerate(zip(cases, inputs, strict=True)):
        runs = records_of(cell)
        check(len(runs) == 1, f"case {index}: {len(runs)} records, not 1")
        run = runs[0]
        check(run.get("status") == "COMPLETED", f"case {index}: recorded {run.get('status')}")
        check(run.get("job", {}).get("input") == value, f"case {index}: recorded another job")
        want = expected_output(value)
        check(run.get("output") == want, f"case {index}: {run.get('output')} != {want}")
    paths = {}
    for size in sizes:
        notebook = copy.deepcopy(executed)
        notebook.cells = notebook.cells[: SETUP_CELLS + size]
        folder = workdir / f"n{size}"
        folder.mkdir()
        paths[size] = folder / f"recorded-{size}.ipynb"
        nbformat.write(notebook, paths[size])
    log(
        f"    {largest} COMPLETED runs, outputs as the handler gives them; recording took "
        f"{fmt_s(took)}; notebooks of {', '.join(map(str, sizes))} cases"
    )
    ROWS.append(
        Row("0", f"record: papermill, {largest} cases, once", fmt_s(took), result="(context)")
    )
    return paths


# ----------------------------------------------------------------------------- commands


SUMMARY = re.compile(r"(\d+) passed, (\d+) failed, (\d+) notebook error\(s\)")


def summary_counts(stdout: str) -> tuple[int, int, int]:
    found = SUMMARY.findall(stdout)
    check(bool(found), f"no summary line in the output of nbworker test: {stdout[-1500:]}")
    passed, failed, errors = found[-1]
    return int(passed), int(failed), int(errors)


def expect_test(proc: Any, code: int, passed: int, failed: int, what: str) -> None:
    tail = f"\n--- stdout ---\n{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-1500:]}"
    check(proc.returncode == code, f"{what}: exit {proc.returncode}, expected {code}{tail}")
    counts = summary_counts(proc.stdout)
    check(
        counts == (passed, failed, 0),
        f"{what}: summary says {counts[0]} passed, {counts[1]} failed, {counts[2]} notebook "
        f"error(s); expected {passed} passed, {failed} failed{tail}",
    )


def expect_nbmake(proc: Any, what: str) -> None:
    tail = f"\n--- stdout ---\n{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-1500:]}"
    check(proc.returncode == 0, f"{what}: exit {proc.returncode}{tail}")
    check(re.search(r"\b1 passed\b", proc.stdout) is not None, f"{what}: not 1 passed{tail}")


def replay_outcomes(executed: Path) -> list[str]:
    """The replay results `nbworker test` shows in the executed notebook, in order."""
    import nbformat

    from nbworker.replay import REPLAY_MIMETYPE

    notebook = nbformat.read(executed, as_version=4)
    return [
        output["data"][REPLAY_MIMETYPE]["result"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if REPLAY_MIMETYPE in output.get("data", {})
    ]


class Commands:
    """The command lines timed, in this venv."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.nbworker = Path(sys.executable).parent / "nbworker"
        check(self.nbworker.is_file(), f"no console script {self.nbworker}: install the package")
        self.workdir, self.env = workdir, env

    def run(self, argv: list[str], cwd: Path | None = None) -> tuple[float, Any]:
        return timed_run(argv, cwd or self.workdir, self.env, timeout=SUBPROCESS_TIMEOUT)

    def test(
        self,
        notebook: Path,
        out: Path | None = None,
        *,
        worker: bool = False,
        junit: Path | None = None,
    ) -> list[str]:
        argv = [str(self.nbworker), "test", str(notebook)]
        if out is not None:
            argv += ["--output-dir", str(out)]
        if not worker:
            argv.append("--notebook-only")
        if junit is not None:
            argv += ["--junit-xml", str(junit)]
        return argv

    def nbmake(self, notebook: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pytest",
            "--nbmake",
            str(notebook),
            "-q",
            "-p",
            "no:cacheprovider",
        ]


# ----------------------------------------------------------------------------- checks


def checks(workdir: Path, recorded: dict[int, Path], commands: Commands) -> None:
    """Before timing: (a) passes each recorded notebook (every replay shown 'passed'), fails
    the smaller one once its handler is edited; nbmake passes both; nothing changes them."""
    import nbformat

    log("[check] what is timed does what it says (not timed)")
    before = {size: digest(path) for size, path in recorded.items()}
    for size, path in recorded.items():
        _, proc = commands.run(commands.test(path, workdir / f"check-{size}"))
        expect_test(proc, 0, size, 0, f"nbworker test --notebook-only {path.name}")
        outcomes = replay_outcomes(workdir / f"check-{size}" / path.name)
        check(
            outcomes == ["passed"] * size,
            f"the executed notebook shows {len(outcomes)} replays: {sorted(set(outcomes))}",
        )
        log(f"    (a) {path.name}: exit 0, {size} passed; {size} replays shown 'passed'")

    small = min(recorded)
    edited_nb = nbformat.read(recorded[small], as_version=4)
    handler_cell = edited_nb.cells[SETUP_CELLS - 1]
    check(handler_cell.source == HANDLER_CELL.rstrip("\n"), "cell 2 is not the %%handler cell")
    handler_cell.source = EDITED_HANDLER_CELL.rstrip("\n")  # the records stay
    edited = workdir / "edited" / recorded[small].name
    edited.parent.mkdir()
    nbformat.write(edited_nb, edited)
    _, proc = commands.run(commands.test(edited), edited.parent)
    expect_test(proc, 1, 0, small, "nbworker test --notebook-only, handler edited")
    check(
        proc.stdout.count("output['n']: got ") == small,
        f"the differences do not name output['n'] {small} times: {proc.stdout[-1500:]}",
    )
    log(
        f"    (a) the handler cell edited after recording: exit 1, {small} failed, each "
        "naming output['n']"
    )

    _, proc = commands.run(commands.nbmake(recorded[small]))
    expect_nbmake(proc, f"pytest --nbmake {recorded[small].name}")
    _, proc = commands.run(commands.nbmake(edited), edited.parent)
    expect_nbmake(proc, "pytest --nbmake on the edited notebook")
    log(
        "    (c) nbmake: 1 passed on the recorded notebook, and on the edited one too (it "
        "compares no record)"
    )
    for size, path in recorded.items():
        check(digest(path) == before[size], f"a run changed {path.name}")
    log("    the recorded notebooks are unchanged by these runs")


# ----------------------------------------------------------------------------- (a), (c)


def bench_one_kernel(
    workdir: Path, recorded: dict[int, Path], commands: Commands, rounds: int, log2: Path
) -> dict[str, Any]:
    """(a) CLI per size and API, (c) nbmake, and the floor (papermill, setup cells only):
    paired rounds."""
    import nbformat

    from nbworker.testing import Options, test_notebook

    small = min(recorded)
    log(f"[a, c] one kernel per notebook: {rounds} rounds after a warm-up round, paired")
    setup = nbformat.read(recorded[small], as_version=4)
    setup.cells = setup.cells[:SETUP_CELLS]
    for cell in setup.cells:
        cell.outputs, cell.execution_count = [], None
    counter = iter(range(1_000_000))
    in_kernel: list[float] = []

    def cli(size: int) -> Callable[[], None]:
        def run() -> None:
            _, proc = commands.run(commands.test(recorded[size]))
            expect_test(proc, 0, size, 0, f"nbworker test --notebook-only, {size} cases")

        return run

    def api() -> None:
        with kernel_stderr(log2):
            report = test_notebook(recorded[small], Options(worker=False))
        check(report.exit_code == 0, f"test_notebook: exit code {report.exit_code}")
        results = [case.notebook_result for case in report.cases]
        check(results == ["passed"] * small, f"test_notebook: {sorted(set(results))}")
        in_kernel.extend(case.notebook_ms or 0.0 for case in report.cases)

    def nbmake() -> None:
        _, proc = commands.run(commands.nbmake(recorded[small]))
        expect_nbmake(proc, "pytest --nbmake")

    def floor() -> None:
        with kernel_stderr(log2):
            executed = execute(
                copy.deepcopy(setup), workdir / f"floor-{next(counter)}.ipynb", workdir
            )
        check(not errors_of(executed), f"setup cells raised: {errors_of(executed)}")

    variants: dict[str, Callable[[], None]] = {
        f"cli-{size}": cli(size) for size in sorted(recorded)
    } | {"api": api, "floor": floor, "nbmake": nbmake}
    measured = paired(variants, rounds=rounds, warmup=1)
    labels = {
        **{
            f"cli-{size}": f"nbworker test --notebook-only, {size} cases (CLI)" for size in recorded
        },
        "api": f"test_notebook(path, Options(worker=False)), {small} cases",
        "floor": "papermill, setup cells only (floor)",
        "nbmake": f"pytest --nbmake, {small} cases",
    }
    for name, values in measured.samples.items():
        log(
            f"    {labels[name]:<52} median {fmt_s(median(values)):>9}  "
            f"min {fmt_s(min(values)):>9}  max {fmt_s(max(values)):>9}  ({len(values)} runs)"
        )
    log(f"    a %rp_test run in the replay kernel: median {fmt_s(median(in_kernel) / 1e3)}")
    return {"medians": measured.medians, "paired": measured, "in_kernel": median(in_kernel) / 1e3}


# ----------------------------------------------------------------------------- (b)


def bench_per_case(
    workdir: Path, recorded: Path, size: int, quick: bool, log2: Path
) -> dict[str, Any]:
    """(b) one papermill run per case: setup cells + that one %rp_test cell, fresh kernel."""
    import nbformat

    from nbworker.replay import compare_runs

    recorded_nb = nbformat.read(recorded, as_version=4)
    picked = list(range(0, size, size // QUICK_PER_CASE)) if quick else list(range(size))
    log(
        f"[b] one papermill run per case (setup cells + that %rp_test cell, fresh kernel): "
        f"{len(picked)} of the {size} cases run"
        + (", the total EXTRAPOLATED (--quick)" if len(picked) < size else "")
    )
    out = workdir / "per-case"
    out.mkdir()
    times: list[float] = []
    for index in picked:
        notebook = copy.deepcopy(recorded_nb)
        notebook.cells = [*notebook.cells[:SETUP_CELLS], notebook.cells[SETUP_CELLS + index]]
        recorded_run = records_of(notebook.cells[-1])[0]
        for cell in notebook.cells:
            cell.outputs, cell.execution_count = [], None
        start = time.perf_counter()
        with kernel_stderr(log2):
            executed = execute(notebook, out / f"case-{index:03d}.ipynb", workdir)
        times.append(time.perf_counter() - start)
        # Outside the timing: plain papermill compares nothing, so compare here.
        check(not errors_of(executed), f"case {index}: {errors_of(executed)}")
        runs = records_of(executed.cells[-1])
        check(len(runs) == 1, f"case {index}: {len(runs)} runs in the executed notebook")
        differences = compare_runs(runs[0], recorded_run)
        check(not differences, f"case {index}: the run differs from its record: {differences}")
    mean = sum(times) / len(times)
    slow = sum(value > 2 * median(times) for value in times)
    log(
        f"    per case: median {fmt_s(median(times))}  mean {fmt_s(mean)}  "
        f"min {fmt_s(min(times))}  max {fmt_s(max(times))} (each pays a kernel start and "
        f"the {MODEL_SECONDS:g} s load); "
        f"{slow} of {len(times)} runs over 2x the median (counted in the mean)"
    )
    log(f"    each new run compared with its record afterwards (not timed): {len(times)} equal")
    return {"mean": mean, "median": median(times), "run": len(times)}


# ----------------------------------------------------------------------------- (d)


def bench_worker(workdir: Path, recorded: Path, size: int, commands: Commands) -> dict[str, Any]:
    """(d) `nbworker test recorded.ipynb`: the notebook replay, then the worker replay."""
    log(f"[d] nbworker test {recorded.name}, with the worker replay ({size} worker cases): once")
    junit = workdir / "worker-junit.xml"
    took, proc = commands.run(commands.test(recorded, workdir / "d", worker=True, junit=junit))
    expect_test(proc, 0, size, 0, "nbworker test (with the worker)")
    check(junit.is_file(), "no JUnit XML written")
    worker_times = []
    for suite in ElementTree.parse(junit).getroot().iter("testsuite"):
        for case in suite.iter("testcase"):
            if not case.get("name", "").endswith("[worker]"):
                continue
            check(
                case.find("failure") is None and case.find("error") is None,
                f"worker case failed: {case.get('name')}",
            )
            check(case.find("skipped") is None, f"worker case skipped: {case.get('name')}")
            worker_times.append(float(case.get("time") or 0.0))
    check(len(worker_times) == size, f"{len(worker_times)} worker cases in the JUnit XML")
    log(
        f"    wall {fmt_s(took)} (exit 0, {size} passed on both sides); the worker cases: "
        f"sum {fmt_s(sum(worker_times))}, per case median {fmt_s(median(worker_times))} "
        f"(each a new `python handler.py --test_input JOB`: interpreter, runpod import and "
        f"the {MODEL_SECONDS:g} s load every time)"
    )
    return {"wall": took, "worker_median": median(worker_times)}


# ----------------------------------------------------------------------------- table


ORDER = ["0", "a", "b", "c", "d"]
HEADERS = ("#", "measured", "value", "compared with", "its value", "comparison", "target", "")


def add_rows(
    one: dict[str, Any], per_case: dict[str, Any], sizes: list[int], worker: dict[str, Any] | None
) -> None:
    medians = one["medians"]
    small, large = sizes[0], sizes[-1]
    floor = medians["floor"]
    for size in sizes:
        cli = medians[f"cli-{size}"]
        total = per_case["mean"] * size
        label = (
            f"(b) {size} papermill runs, one per case"
            if per_case["run"] == size
            else f"(b) {size} x mean of {per_case['run']} runs, EXTRAPOLATED"
        )
        target = TARGETS.get(size)
        ROWS.append(
            Row(
                "a",
                f"(a) nbworker test --notebook-only, CLI, {size} cases",
                fmt_s(cli),
                label,
                fmt_s(total),
                f"(b)/(a) = {total / cli:.1f}x",
                f">= {target:g}x" if target else "",
                None if target is None else total / cli >= target,
            )
        )
    api = medians["api"]
    ROWS.append(
        Row(
            "a",
            f"(a) test_notebook(...) in-process (API), {small} cases",
            fmt_s(api),
            "(a) CLI, same notebook",
            fmt_s(medians[f"cli-{small}"]),
            f"the CLI's start-up {fmt_s(medians[f'cli-{small}'] - api, signed=True)}",
        )
    )
    if large > small:
        marginal = one["paired"].samples
        per = median(
            (b - a) / (large - small)
            for a, b in zip(marginal[f"cli-{small}"], marginal[f"cli-{large}"], strict=True)
        )
        fixed = medians[f"cli-{small}"] - small * per
        budget = (per_case["mean"] * large / TARGETS.get(large, 100.0) - fixed) / large
        ROWS.append(
            Row(
                "a",
                f"  per case: ((a) {large} - (a) {small}) / {large - small}, paired",
                fmt_s(per),
                f"left per case by >= {TARGETS.get(large, 100.0):g}x at {large}",
                fmt_s(budget),
                f"(a)'s fixed part {fmt_s(fixed)} (floor {fmt_s(floor)})",
            )
        )
    ROWS.extend(
        [
            Row(
                "a",
                "  floor: papermill, setup cells only",
                fmt_s(floor),
                "(a) CLI minus the floor",
                fmt_s(medians[f"cli-{small}"] - floor),
                f"start-up and {small} cases",
            ),
            Row(
                "a",
                "  a %rp_test run in the replay kernel",
                fmt_s(one["in_kernel"]),
                result="median of the cases",
            ),
            Row(
                "b",
                "(b) one papermill run per case, mean",
                fmt_s(per_case["mean"]),
                "the floor (kernel start + 1 s load)",
                fmt_s(floor),
                f"{per_case['mean'] / floor:.2f}x",
            ),
            Row(
                "c",
                f"(c) pytest --nbmake, {small} cases (no record checked)",
                fmt_s(medians["nbmake"]),
                "(a) nbworker test --notebook-only, CLI",
                fmt_s(medians[f"cli-{small}"]),
                f"(c)/(a) = {medians['nbmake'] / medians[f'cli-{small}']:.2f}x",
            ),
        ]
    )
    if worker is not None:
        ROWS.extend(
            [
                Row(
                    "d",
                    f"(d) nbworker test, with the worker, {small} cases",
                    fmt_s(worker["wall"]),
                    "(a) nbworker test --notebook-only, CLI",
                    fmt_s(medians[f"cli-{small}"]),
                    f"{worker['wall'] / medians[f'cli-{small}']:.1f}x",
                ),
                Row(
                    "d",
                    "  a worker case (python handler.py --test_input)",
                    fmt_s(worker["worker_median"]),
                    "(b) one papermill run per case, median",
                    fmt_s(per_case["median"]),
                    f"{worker['worker_median'] / per_case['median']:.2f}x",
                ),
            ]
        )


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"2 rounds, {QUICK_PER_CASE} per-case runs (extrapolated), no worker replay",
    )
    parser.add_argument(
        "--cases",
        default=",".join(map(str, SIZES)),
        help="the notebook sizes, comma-separated (default 50,200; each at least "
        f"{QUICK_PER_CASE}); the targets: 30x at 50 cases, 100x at 200",
    )
    args = parser.parse_args()
    sizes = sorted({int(size) for size in args.cases.split(",")})
    if sizes[0] < QUICK_PER_CASE:
        parser.error(f"--cases: at least {QUICK_PER_CASE}")

    started = time.perf_counter()
    # Kernels and subprocesses: a throw-away IPython profile, this venv's kernelspec first,
    # a bytecode cache of their own (the repository gets no __pycache__).
    workdir = setup_workdir()
    kernels = Path(sys.prefix, "share", "jupyter")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(kernels), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )
    os.environ["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    stderr_log = workdir / "kernels-stderr.log"

    from importlib import metadata

    import IPython
    import papermill

    import nbworker

    log_banner(
        {
            "nbworker": nbworker.__version__,
            "papermill": papermill.__version__,
            "nbmake": metadata.version("nbmake"),
            "ipykernel": metadata.version("ipykernel"),
            "IPython": IPython.__version__,
            "runpod": metadata.version("runpod"),
        },
        args.quick,
    )
    try:
        commands = Commands(workdir, dict(os.environ))
        recorded = record(workdir, tuple(sizes), stderr_log)
        digests = {size: digest(path) for size, path in recorded.items()}
        checks(workdir, recorded, commands)
        one = bench_one_kernel(workdir, recorded, commands, 2 if args.quick else 4, stderr_log)
        small = sizes[0]
        per_case = bench_per_case(workdir, recorded[small], small, args.quick, stderr_log)
        worker = None
        if args.quick:
            log("[d] the worker replay: skipped with --quick (about 2.5 s a case; full run only)")
        else:
            worker = bench_worker(workdir, recorded[small], small, commands)
        for size, path in recorded.items():
            check(digest(path) == digests[size], f"a run changed {path.name}")
        add_rows(one, per_case, sizes, worker)
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    print_table(ROWS, ORDER, time.perf_counter() - started, headers=HEADERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
