#!/usr/bin/env python
"""Benchmark of `nbworker test` on a notebook with 50 recorded `%rp_test` runs, next to
running each case in a notebook of its own and next to nbmake.

    python bench/bench_test.py           # full run, about 5-6 min on 2 cores
    python bench/bench_test.py --quick   # fewer repetitions, 10 of the 50 per-case runs
                                         # (extrapolated), no worker replay: about 1.5 min
    python bench/bench_test.py --quick --cases 200   # a bigger notebook (about 4 min)

The notebook is generated in code (`nbformat.v4`): `%load_ext nbworker`, a `%%model` cell
whose load takes 1 s (`time.sleep(1.0)` standing in for loading weights) and binds a small
table, a sync `%%handler` cell scoring `job["input"]` with the table, and 50 `%rp_test`
cells with different inputs. It is recorded by executing it once with papermill in a fresh
kernel (the executed notebook holds the records). Then, in this same run:

(a) `nbworker test recorded.ipynb --notebook-only` in a subprocess (wall time), and the
    same through the API in-process (`nbworker.testing.test_notebook`): one kernel, one
    model load, 50 cases. Next to it, its floor: papermill running only the setup cells.
(b) One papermill run per case: the setup cells plus that one `%rp_test` cell, each in a
    fresh kernel (`papermill.execute_notebook` in-process), 50 of them (with --quick: 10,
    extrapolated to 50, and said so). Each new run is compared with its record afterwards,
    outside the timing (plain papermill compares nothing). Target: (b)/(a) >= 10x.
(c) `pytest --nbmake recorded.ipynb` in a subprocess: one run of the notebook, but nothing
    about the records is checked (shown: it passes a notebook whose handler changed).
(d) `nbworker test recorded.ipynb` with the worker replay (each case is `python handler.py
    --test_input JOB` under the RunPod SDK): once, full run only; its cost per case.

Before timing, the script checks what it times: the records (50 COMPLETED runs with the
outputs the handler gives), that (a) exits 0 with 50 passed, that (a) exits 1 with 50
failed once the handler cell is edited after recording, that nbmake passes both, and that
no run changes the recorded notebook. Kernels run this venv's interpreter (its
share/jupyter comes first in JUPYTER_PATH), with a temporary IPYTHONDIR. Only 127.0.0.1 is
used; files go to a temporary directory, removed at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
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
    print_table,
    setup_workdir,
    timed_run,
)

CASES = 50
QUICK_PER_CASE = 10  # --quick: per-case notebooks run in (b), the rest extrapolated
MODEL_SECONDS = 1.0  # the %%model cell's sleep
TARGET_RATIO = 10.0  # (b) / (a)
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


@contextlib.contextmanager
def papermill_saves_off(calls: list[dict[str, Any]]) -> Iterator[None]:
    """Probe: `papermill.execute_notebook` (as `nbworker.testing` calls it) with
    `request_save_on_cell_execute=False`, so that papermill writes the executed notebook
    once at the end instead of before and after every cell. `calls` gets each call's
    keyword arguments, to check the probe took effect."""
    import papermill

    original = papermill.execute_notebook

    @functools.wraps(original)
    def patched(*args: Any, **kwargs: Any) -> Any:
        kwargs["request_save_on_cell_execute"] = False
        calls.append(kwargs)
        return original(*args, **kwargs)

    papermill.execute_notebook = patched
    try:
        yield
    finally:
        papermill.execute_notebook = original


ROWS: list[Row] = []


# ----------------------------------------------------------------------------- the notebook


def case_inputs() -> list[dict[str, Any]]:
    """50 different inputs: a few words (some not in the table) and a scale (its own)."""
    rng = random.Random(20240601)
    inputs = [
        {"words": [rng.choice("abcdefxyz") for _ in range(1 + i % 6)], "scale": 0.5 + i / 20}
        for i in range(CASES)
    ]
    distinct = {json.dumps(value, sort_keys=True) for value in inputs}
    check(len(distinct) == CASES, f"{len(distinct)} distinct inputs, not {CASES}")
    return inputs


def expected_output(value: dict[str, Any]) -> Any:
    """What the handler gives for `value`, computed here from the cells' own code."""
    namespace: dict[str, Any] = {}
    table = MODEL_CELL.split("TABLE = ", 1)[1]
    namespace["TABLE"] = eval(table, {})  # the dict literal of the %%model cell
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


def execute(notebook: Any, output: Path, cwd: Path) -> Any:
    """papermill in-process, in a fresh kernel; the executed notebook."""
    import nbformat
    import papermill

    papermill.execute_notebook(
        notebook, str(output), kernel_name="python3", cwd=str(cwd), progress_bar=False
    )
    return nbformat.read(output, as_version=4)


def record(workdir: Path, inputs: list[dict[str, Any]], stderr_log: Path) -> tuple[Path, Any]:
    """Generate the notebook, execute it once (the recording) and check the records."""
    import nbformat

    log(f"[0] generate the notebook and record it (papermill, one run, {CASES} cases)")
    source = workdir / "source.ipynb"
    nbformat.write(make_notebook(inputs), source)
    recorded = workdir / "recorded.ipynb"
    start = time.perf_counter()
    with kernel_stderr(stderr_log):
        executed = execute(nbformat.read(source, as_version=4), recorded, workdir)
    took = time.perf_counter() - start
    check(not errors_of(executed), f"the recording raised: {errors_of(executed)}")
    cases = executed.cells[SETUP_CELLS:]
    check(len(cases) == CASES, f"{len(cases)} %rp_test cells, not {CASES}")
    for index, (cell, value) in enumerate(zip(cases, inputs, strict=True)):
        runs = records_of(cell)
        check(len(runs) == 1, f"case {index}: {len(runs)} records, not 1")
        run = runs[0]
        check(run.get("status") == "COMPLETED", f"case {index}: recorded {run.get('status')}")
        check(run.get("job", {}).get("input") == value, f"case {index}: recorded another job")
        want = expected_output(value)
        check(run.get("output") == want, f"case {index}: {run.get('output')} != {want}")
    log(
        f"    recorded.ipynb: {CASES} COMPLETED runs, outputs as the handler gives them; "
        f"recording took {fmt_s(took)}"
    )
    ROWS.append(
        Row("0", "record: papermill, the whole notebook, once", fmt_s(took), result="(context)")
    )
    return recorded, executed


# ----------------------------------------------------------------------------- commands


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, Any]:
    return timed_run(argv, cwd, env, timeout=SUBPROCESS_TIMEOUT)


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


# ----------------------------------------------------------------------------- checks


def checks(workdir: Path, recorded: Path, env: dict[str, str], commands: Any) -> None:
    """Before timing: (a) passes the recorded notebook, fails it once the handler is
    edited; nbmake passes both; nothing changes the recorded notebook."""
    import nbformat

    log("[check] what is timed does what it says (not timed)")
    before = digest(recorded)
    _, proc = run(commands.test(recorded, workdir / "check-a"), workdir, env)
    expect_test(proc, 0, CASES, 0, "nbworker test --notebook-only recorded.ipynb")
    outcomes = replay_outcomes(workdir / "check-a" / recorded.name)
    check(
        outcomes == ["passed"] * CASES,
        f"the executed notebook shows {len(outcomes)} replays: {sorted(set(outcomes))}",
    )
    log(f"    (a) recorded.ipynb: exit 0, {CASES} passed; {CASES} replays shown 'passed'")

    edited_nb = nbformat.read(recorded, as_version=4)
    handler_cell = edited_nb.cells[SETUP_CELLS - 1]
    check(handler_cell.source == HANDLER_CELL.rstrip("\n"), "cell 2 is not the %%handler cell")
    handler_cell.source = EDITED_HANDLER_CELL.rstrip("\n")  # the records stay
    edited_dir = workdir / "edited"
    edited_dir.mkdir()
    edited = edited_dir / "recorded.ipynb"
    nbformat.write(edited_nb, edited)
    _, proc = run(commands.test(edited, workdir / "check-edited"), edited_dir, env)
    expect_test(proc, 1, 0, CASES, "nbworker test --notebook-only, handler edited")
    check(
        proc.stdout.count("output['n']: got ") == CASES,
        f"the differences do not name output['n'] {CASES} times: {proc.stdout[-1500:]}",
    )
    log(
        f"    (a) the handler cell edited after recording: exit 1, {CASES} failed, each "
        "naming output['n']"
    )

    _, proc = run(commands.nbmake(recorded), workdir, env)
    expect_nbmake(proc, "pytest --nbmake recorded.ipynb")
    _, proc = run(commands.nbmake(edited), edited_dir, env)
    expect_nbmake(proc, "pytest --nbmake on the edited notebook")
    log(
        "    (c) nbmake: 1 passed on recorded.ipynb, and 1 passed on the edited one too "
        "(it runs the cells, it compares no record)"
    )
    check(digest(recorded) == before, "a run changed recorded.ipynb")
    log("    recorded.ipynb unchanged by these runs")


# ----------------------------------------------------------------------------- (a), (c)


def bench_one_kernel(
    workdir: Path, recorded: Path, env: dict[str, str], commands: Any, rounds: int, log2: Path
) -> dict[str, Any]:
    """(a) CLI and API, (c) nbmake and the floor (papermill, setup cells only), interleaved."""
    import nbformat

    from nbworker.testing import Options, test_notebook

    log(f"[a, c] one kernel for the {CASES} cases: {rounds} rounds, interleaved")
    recorded_nb = nbformat.read(recorded, as_version=4)
    setup = copy.deepcopy(recorded_nb)
    setup.cells = setup.cells[:SETUP_CELLS]
    for cell in setup.cells:
        cell.outputs, cell.execution_count = [], None
    counter = iter(range(1_000_000))
    in_kernel: list[float] = []

    def cli() -> None:
        _, proc = run(commands.test(recorded, workdir / f"a-{next(counter)}"), workdir, env)
        expect_test(proc, 0, CASES, 0, "nbworker test --notebook-only")

    def api(probe: bool = False) -> None:
        options = Options(worker=False, output_dir=str(workdir / f"api-{next(counter)}"))
        calls: list[dict[str, Any]] = []
        saves = papermill_saves_off(calls) if probe else contextlib.nullcontext()
        with kernel_stderr(log2), saves:
            report = test_notebook(recorded, options)
        check(not probe or len(calls) == 1, f"the probe patched {len(calls)} papermill calls")
        check(report.exit_code == 0, f"test_notebook: exit code {report.exit_code}")
        results = [case.notebook_result for case in report.cases]
        check(results == ["passed"] * CASES, f"test_notebook: {sorted(set(results))}")
        if not probe:
            in_kernel.extend(case.notebook_ms or 0.0 for case in report.cases)

    def nbmake() -> None:
        _, proc = run(commands.nbmake(recorded), workdir, env)
        expect_nbmake(proc, "pytest --nbmake")

    def floor() -> None:
        with kernel_stderr(log2):
            executed = execute(
                copy.deepcopy(setup), workdir / f"floor-{next(counter)}.ipynb", workdir
            )
        check(not errors_of(executed), f"setup cells raised: {errors_of(executed)}")

    variants: dict[str, Callable[[], None]] = {
        "nbworker test --notebook-only (CLI)": cli,
        "test_notebook(path, Options(worker=False))": api,
        "pytest --nbmake recorded.ipynb": nbmake,
        "papermill, setup cells only (floor)": floor,
        "test_notebook, papermill per-cell saves off (probe)": lambda: api(probe=True),
    }
    api()  # warm-up: imports (papermill, nbclient) of this process; not timed
    times: dict[str, list[float]] = {name: [] for name in variants}
    # The floor is cheap, and now and then a kernel takes about 3.4 s more to shut down (in
    # nbclient's cleanup, with or without nbworker): it runs twice a round, so that its
    # median holds.
    repeat = {"papermill, setup cells only (floor)": 2}
    for _ in range(rounds):
        for name, function in variants.items():
            for _ in range(repeat.get(name, 1)):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        log(
            f"    {name:<52} median {fmt_s(median(values)):>9}  min {fmt_s(min(values)):>9}  "
            f"max {fmt_s(max(values)):>9}  ({len(values)} runs)"
        )
    log(f"    a %rp_test run in the replay kernel: median {fmt_s(median(in_kernel) / 1e3)}")
    return {name: median(values) for name, values in times.items()} | {
        "in_kernel": median(in_kernel) / 1e3,
        "names": list(variants),
    }


# ----------------------------------------------------------------------------- (b)


def bench_per_case(workdir: Path, recorded: Path, quick: bool, log2: Path) -> dict[str, Any]:
    """(b) one papermill run per case: setup cells + that one %rp_test cell, fresh kernel."""
    import nbformat

    from nbworker.replay import compare_runs

    recorded_nb = nbformat.read(recorded, as_version=4)
    picked = list(range(0, CASES, CASES // QUICK_PER_CASE)) if quick else list(range(CASES))
    extrapolated = len(picked) < CASES
    log(
        "[b] one papermill run per case (setup cells + that %rp_test cell, fresh kernel): "
        + (
            f"{len(picked)} of {CASES} cases run, EXTRAPOLATED to {CASES} (--quick)"
            if extrapolated
            else f"all {CASES} cases"
        )
    )
    notebooks = []
    for index in picked:
        notebook = copy.deepcopy(recorded_nb)
        notebook.cells = [*notebook.cells[:SETUP_CELLS], notebook.cells[SETUP_CELLS + index]]
        recorded_run = records_of(notebook.cells[-1])[0]
        for cell in notebook.cells:
            cell.outputs, cell.execution_count = [], None
        notebooks.append((index, notebook, recorded_run))
    out = workdir / "per-case"
    out.mkdir()
    times: list[float] = []
    for index, notebook, recorded_run in notebooks:
        path = out / f"case-{index:02d}.ipynb"
        start = time.perf_counter()
        with kernel_stderr(log2):
            executed = execute(notebook, path, workdir)
        times.append(time.perf_counter() - start)
        # Outside the timing: plain papermill compares nothing, so compare here.
        check(not errors_of(executed), f"case {index}: {errors_of(executed)}")
        runs = records_of(executed.cells[-1])
        check(len(runs) == 1, f"case {index}: {len(runs)} runs in the executed notebook")
        differences = compare_runs(runs[0], recorded_run)
        check(not differences, f"case {index}: the run differs from its record: {differences}")
    total = sum(times)
    estimate = total / len(times) * CASES
    slow = sum(value > 2 * median(times) for value in times)
    log(
        f"    per case: median {fmt_s(median(times))}  min {fmt_s(min(times))}  "
        f"max {fmt_s(max(times))} (each pays a kernel start and the {MODEL_SECONDS:g} s load); "
        f"{slow} of {len(times)} runs over 2x the median (counted in the total)"
    )
    if extrapolated:
        log(
            f"    {len(times)} runs took {fmt_s(total)}; {CASES} cases EXTRAPOLATED: "
            f"{CASES} x mean {fmt_s(total / len(times))} = {fmt_s(estimate)}"
        )
    else:
        log(f"    all {CASES} runs took {fmt_s(total)}")
    log(f"    each new run compared with its record afterwards (not timed): {len(times)} equal")
    return {
        "total": estimate,
        "median": median(times),
        "run": len(times),
        "extrapolated": extrapolated,
    }


# ----------------------------------------------------------------------------- (d)


def bench_worker(
    workdir: Path, recorded: Path, env: dict[str, str], commands: Any
) -> dict[str, Any]:
    """(d) `nbworker test recorded.ipynb`: the notebook replay, then the worker replay."""
    log(f"[d] nbworker test recorded.ipynb, with the worker replay ({CASES} worker cases): once")
    junit = workdir / "worker-junit.xml"
    took, proc = run(commands.test(recorded, workdir / "d", worker=True, junit=junit), workdir, env)
    expect_test(proc, 0, CASES, 0, "nbworker test (with the worker)")
    check(junit.is_file(), "no JUnit XML written")
    worker_times = []
    notebook_suite = 0.0
    for suite in ElementTree.parse(junit).getroot().iter("testsuite"):
        notebook_suite = float(suite.get("time") or 0.0)
        for case in suite.iter("testcase"):
            if not case.get("name", "").endswith("[worker]"):
                continue
            check(
                case.find("failure") is None and case.find("error") is None,
                f"worker case failed: {case.get('name')}",
            )
            check(case.find("skipped") is None, f"worker case skipped: {case.get('name')}")
            worker_times.append(float(case.get("time") or 0.0))
    check(len(worker_times) == CASES, f"{len(worker_times)} worker cases in the JUnit XML")
    worker_sum = sum(worker_times)
    log(
        f"    wall {fmt_s(took)} (exit 0, {CASES} passed on both sides); the worker cases: "
        f"sum {fmt_s(worker_sum)}, per case median {fmt_s(median(worker_times))}, "
        f"min {fmt_s(min(worker_times))}, max {fmt_s(max(worker_times))}"
    )
    log(
        f"    (each worker case is a new `python handler.py --test_input JOB`: interpreter, "
        f"runpod import and the {MODEL_SECONDS:g} s model load every time)"
    )
    return {
        "wall": took,
        "worker_sum": worker_sum,
        "worker_median": median(worker_times),
        "reported": notebook_suite,
    }


# ----------------------------------------------------------------------------- table


ORDER = ["0", "a", "b", "c", "d"]
HEADERS = ("#", "measured", "value", "compared with", "its value", "comparison", "target", "")


def add_rows(one: dict[str, Any], per_case: dict[str, Any], worker: dict[str, Any] | None) -> None:
    cli, api, nbmake, floor, probe = (one[name] for name in one["names"])
    total = per_case["total"]
    b_label = (
        f"(b) {CASES} papermill runs, EXTRAPOLATED from {per_case['run']}"
        if per_case["extrapolated"]
        else f"(b) {CASES} papermill runs, one per case"
    )
    ROWS.extend(
        [
            Row(
                "a",
                f"(a) nbworker test --notebook-only, CLI, {CASES} cases",
                fmt_s(cli),
                b_label,
                fmt_s(total),
                f"(b)/(a) = {total / cli:.1f}x",
                f">= {TARGET_RATIO:g}x",
                total / cli >= TARGET_RATIO,
            ),
            Row(
                "a",
                "(a) test_notebook(...) in-process (API)",
                fmt_s(api),
                b_label,
                fmt_s(total),
                f"(b)/(a) = {total / api:.1f}x",
            ),
            Row(
                "a",
                "  floor: papermill, setup cells only",
                fmt_s(floor),
                "(a) API minus the floor, per case",
                fmt_s((api - floor) / CASES),
                f"{CASES} cases + replay cost {fmt_s(api - floor, signed=True)}",
            ),
            Row(
                "a",
                "  probe: (a) API, papermill's per-cell saves off",
                fmt_s(probe),
                "(a) API",
                fmt_s(api),
                f"the saves: {fmt_s(api - probe, signed=True)} ({(api - probe) / api:.0%} of (a))",
            ),
            Row(
                "a",
                "  a %rp_test run in the replay kernel",
                fmt_s(one["in_kernel"]),
                "",
                "",
                "median of the cases",
            ),
            Row(
                "b",
                "(b) one papermill run per case, median",
                fmt_s(per_case["median"]),
                "the floor (kernel start + 1 s load)",
                fmt_s(floor),
                f"{per_case['median'] / floor:.2f}x",
            ),
            Row(
                "c",
                "(c) pytest --nbmake recorded.ipynb (no record checked)",
                fmt_s(nbmake),
                "(a) nbworker test --notebook-only, CLI",
                fmt_s(cli),
                f"(c)/(a) = {nbmake / cli:.2f}x ({fmt_s(nbmake - cli, signed=True)})",
            ),
        ]
    )
    if worker is not None:
        ROWS.extend(
            [
                Row(
                    "d",
                    f"(d) nbworker test, with the worker, {CASES} cases",
                    fmt_s(worker["wall"]),
                    "(a) nbworker test --notebook-only, CLI",
                    fmt_s(cli),
                    f"{worker['wall'] / cli:.1f}x ({fmt_s(worker['wall'] - cli, signed=True)})",
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


class Commands:
    """The command lines timed, in this venv."""

    def __init__(self) -> None:
        bin_dir = Path(sys.executable).parent
        self.nbworker = bin_dir / "nbworker"
        check(self.nbworker.is_file(), f"no console script {self.nbworker}: install the package")

    def test(
        self, notebook: Path, out: Path, *, worker: bool = False, junit: Path | None = None
    ) -> list[str]:
        argv = [str(self.nbworker), "test", str(notebook), "--output-dir", str(out)]
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


def main() -> int:
    global CASES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"3 rounds, {QUICK_PER_CASE} per-case runs (extrapolated), no worker replay",
    )
    parser.add_argument(
        "--cases",
        type=int,
        default=CASES,
        help=f"%%rp_test cells in the notebook (default {CASES}, at least {QUICK_PER_CASE})",
    )
    args = parser.parse_args()
    if args.cases < QUICK_PER_CASE:
        parser.error(f"--cases: at least {QUICK_PER_CASE}")
    CASES = args.cases

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
    env = dict(os.environ)
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
        commands = Commands()
        inputs = case_inputs()
        recorded, _ = record(workdir, inputs, stderr_log)
        recorded_digest = digest(recorded)
        checks(workdir, recorded, env, commands)
        one = bench_one_kernel(workdir, recorded, env, commands, 3 if args.quick else 4, stderr_log)
        per_case = bench_per_case(workdir, recorded, args.quick, stderr_log)
        worker = None
        if args.quick:
            log("[d] the worker replay: skipped with --quick (about 2.5 s a case; full run only)")
        else:
            worker = bench_worker(workdir, recorded, env, commands)
        check(digest(recorded) == recorded_digest, "a run changed recorded.ipynb")
        add_rows(one, per_case, worker)
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    print_table(ROWS, ORDER, time.perf_counter() - started, headers=HEADERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
