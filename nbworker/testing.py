"""`nbworker test`: the runs a notebook recorded are its test cases, replayed twice.

1. In the notebook: papermill runs it top to bottom in a fresh kernel, with a first cell
   that turns on replay (`nbworker.replay`), so each `%rp_test` compares its new run with
   the recorded one. One kernel per notebook, whatever the number of cases.
2. In the worker: the notebook is exported to a temporary folder and the exported
   `tests/test_handler.py` replays the same cases against `handler.py` under the real
   runpod SDK, so drift between notebook and worker shows.

Exit codes: 0 all passed, 1 a case mismatched (or the worker could not be built), 2 usage,
3 a notebook failed outside a test (a cell raised, a UsageError included, the kernel died, a
timeout: any cell that stopped the run; or it could not be replayed at all: unreadable, or a
run record in it is malformed), 5 no case was compared at all (no run recorded, `-k`
matching nothing, every case compared nowhere), as pytest's 5 for no tests.

The pytest plugin (`pytest --nbworker notebooks/`) is at the end of this module; it is
loaded by every pytest run in an environment with nbworker, so imports here stay lazy.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbworker.compare import DEFAULT_REL_TOL

__all__ = [
    "EXIT_MISMATCH",
    "EXIT_NOTEBOOK",
    "EXIT_NO_CASES",
    "EXIT_OK",
    "EXIT_USAGE",
    "Case",
    "NotebookReport",
    "Options",
    "Progress",
    "exit_code",
    "junit_xml",
    "notebooks_under",
    "nothing_compared",
    "report_names",
    "summary",
    "test_notebook",
    "test_notebooks",
]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_NOTEBOOK, EXIT_NO_CASES = 0, 1, 2, 3, 5
REPLAY_TAG = "nbworker-replay"  # the cell `nbworker test` puts first
REPLAY_ENGINE = "nbworker-replay"  # papermill engine
WORKER_CASE = re.compile(r"\[(case-\d+)")


@dataclass
class Options:
    """How to replay (the command line's options)."""

    notebook: bool = True  # replay in a fresh kernel
    worker: bool = True  # replay against the exported worker
    select: str | None = None  # -k: only cases whose id matches
    timeout: float | None = None  # seconds per cell / per worker job
    rtol: float = DEFAULT_REL_TOL
    output_dir: str | None = None  # executed notebooks (the report) go there
    parameters: dict[str, Any] = field(default_factory=dict)  # papermill -p
    kernel_name: str | None = None

    def __post_init__(self) -> None:
        """ValueError naming the option (as `rtol ...`), for each front end to prefix."""
        if not self.rtol >= 0:
            raise ValueError(f"rtol must be >= 0, not {self.rtol}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")


@dataclass
class Case:
    """One recorded `%rp_test` run, and what replaying it gave."""

    notebook: str  # the notebook's file name
    cell: int  # index in the stored notebook
    cell_id: str | None
    index: int  # 1-based among the runs recorded in that cell
    handler: str
    status: str  # recorded status
    notebook_result: str = "not run"  # passed, failed, skipped, not run
    differences: list[str] = field(default_factory=list)
    notebook_ms: float | None = None
    worker_result: str = "-"  # passed, failed, skipped, error, - (not replayed)
    worker_detail: str = ""
    worker_seconds: float | None = None

    @property
    def id(self) -> str:
        """`notebook.ipynb::cell-id::case-n`, as pytest shows it."""
        return f"{self.notebook}::{self.cell_id or f'cell-{self.cell}'}::case-{self.index}"

    @property
    def compared(self) -> bool:
        """Whether either side compared this case with its record."""
        return self.notebook_result in ("passed", "failed", "not run") or (
            self.worker_result in ("passed", "failed", "error")
        )

    @property
    def passed(self) -> bool:
        return self.notebook_result in ("passed", "skipped", "deselected", "-") and (
            self.worker_result in ("passed", "skipped", "-", "deselected")
        )


@dataclass
class NotebookReport:
    """What replaying one notebook gave."""

    path: str
    cases: list[Case] = field(default_factory=list)  # the cases -k selected
    error: str | None = None  # the notebook failed outside a test
    notes: list[str] = field(default_factory=list)
    executed: str | None = None  # the executed notebook (the report)
    seconds: float = 0.0
    worker_seconds: float = 0.0
    name: str = ""  # in case ids and the summary: the file name, or a path where names clash
    deselected: int = 0  # recorded cases -k left out

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.path).name

    @property
    def exit_code(self) -> int:
        """3 the notebook failed, 1 a case did not pass, 5 no case was compared, else 0."""
        if self.error is not None:
            return EXIT_NOTEBOOK
        if not all(case.passed for case in self.cases):
            return EXIT_MISMATCH
        return EXIT_OK if any(case.compared for case in self.cases) else EXIT_NO_CASES


def exit_code(reports: Iterable[NotebookReport]) -> int:
    """3 if a notebook failed, else 1 if a case did not pass, else 5 if no case was compared
    in any notebook (as pytest, a notebook without cases among others is no failure), else 0."""
    reports = list(reports)
    codes = {report.exit_code for report in reports}
    for code in (EXIT_NOTEBOOK, EXIT_MISMATCH):
        if code in codes:
            return code
    return EXIT_NO_CASES if nothing_compared(reports) else EXIT_OK


def nothing_compared(reports: Iterable[NotebookReport], *, select: str | None = None) -> str | None:
    """Why no case was compared in any of the notebooks, in a line; None if one was.
    `select` is the -k pattern, for the message."""
    reports = list(reports)
    cases = [case for report in reports for case in report.cases]
    if any(case.compared for case in cases):
        return None
    if not reports:
        return "no notebook was given"
    where = reports[0].name if len(reports) == 1 else f"any of the {len(reports)} notebooks"
    recorded = len(cases) + sum(report.deselected for report in reports)
    if recorded == 0:
        return f"no %rp_test run is recorded in {where} (record runs in Jupyter, then save)"
    if not cases:
        pattern = f" {select!r}" if select else ""
        return f"-k{pattern} matches none of the {recorded} recorded case(s) in {where}"
    return (
        f"the {len(cases)} selected case(s) were compared nowhere (see the table: "
        "%rp_test --no-compare, or a handler the worker does not export under --worker-only)"
    )


# ------------------------------------------------------------------------ cases


def recorded_cases(notebook: Any, name: str) -> list[Case]:
    """A case per recorded run; `replay.MalformedRecord` for a record that is none."""
    from nbworker.replay import expected_runs

    return [
        Case(
            name,
            expected.cell,
            expected.cell_id,
            index,
            record["handler"],
            record["status"],
        )
        for expected in expected_runs(notebook)
        for index, record in enumerate(expected.records, 1)
    ]


def _selected(case: Case, pattern: str | None) -> bool:
    """-k: a substring of the case id or its handler, or a glob of the id."""
    if not pattern:
        return True
    text = f"{case.id} {case.handler}".lower()
    return pattern.lower() in text or fnmatch.fnmatch(case.id.lower(), pattern.lower())


# ------------------------------------------------------------------------ 1. the notebook


def _replay_cell(expected_path: Path, rtol: float) -> Any:
    import nbformat

    cell = nbformat.v4.new_code_cell(
        "# nbworker test: each %rp_test below compares its run with the one recorded here\n"
        "import nbworker.replay\n"
        f"nbworker.replay.start({str(expected_path)!r}, rtol={rtol!r})"
    )
    cell.metadata["tags"] = [REPLAY_TAG]
    return cell


def _replay_engine() -> str:
    """papermill's nbclient engine, which also writes the notebook when a cell times out or
    the kernel dies (papermill itself does so only when it saves after every cell)."""
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.iorw import write_ipynb

    class ReplayEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(  # type: ignore[override]
            cls, nb_man: Any, kernel_name: str, save_on_failure: str | None = None, **kwargs: Any
        ) -> Any:
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            except BaseException:
                if save_on_failure:
                    write_ipynb(nb_man.nb, save_on_failure)
                raise

    papermill_engines.register(REPLAY_ENGINE, ReplayEngine)
    return REPLAY_ENGINE


def _error_of(cell: Any) -> tuple[str, str] | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return str(output.get("ename")), str(output.get("evalue"))
    return None


STOPPED_KEY = "nbworker"  # in an executed cell's metadata: why it stopped the run


def _note_cell_error(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
    """nbclient's `on_cell_error` hook: keep in the cell what the kernel's reply says.
    A `UsageError` (as `%rp_test` raises for misuse) fails the cell and stops the run, but
    IPython shows it on stderr, not as an `error` output: the reply is all that names it."""
    content = execute_reply.get("content", {})
    if content.get("ename") != "ReplayMismatch":  # a mismatch fails its cell, not the run
        cell.metadata[STOPPED_KEY] = {
            "ename": str(content.get("ename")),
            "evalue": str(content.get("evalue")),
        }


def _notebook_error(executed: Any, index_of: dict[Any, int], failure: str | None) -> str | None:
    """What failed the notebook outside a test, naming the cell; None when every cell ran.

    In order: a cell with an error output (or the cell running when the kernel died or timed
    out), a cell papermill marks as having stopped the run (an error with no error output, a
    `UsageError`), the cell running at a failure, then any code cell that never started.
    """

    def where(cell: Any) -> str:
        return f"cell {index_of.get(cell.get('id'), '?')} (id {cell.get('id')})"

    def papermill(cell: Any) -> dict[str, Any]:
        return cell.get("metadata", {}).get("papermill", {})

    for cell in executed.cells:
        error = _error_of(cell)
        if error is None or error[0] == "ReplayMismatch":
            continue
        if failure is not None:  # a timeout or a dead kernel: the cell that was running
            return f"{where(cell)}: {failure}"
        if REPLAY_TAG in cell.get("metadata", {}).get("tags", []):
            return f"replay could not start: {error[0]}: {error[1]}"
        return f"{where(cell)} raised {error[0]}: {error[1]}"
    for cell in executed.cells:
        if papermill(cell).get("exception") is True:
            stopped = cell.get("metadata", {}).get(STOPPED_KEY)
            if stopped:
                return f"{where(cell)} raised {stopped['ename']}: {stopped['evalue']}"
            return f"{where(cell)} stopped the notebook{f': {failure}' if failure else ''}"
    if failure is not None:
        # the last cell papermill started is the one that was running
        started = [cell for cell in executed.cells if papermill(cell).get("start_time")]
        return f"{where(started[-1])}: {failure}" if started else failure
    never = [
        cell
        for cell in executed.cells
        if cell.get("cell_type") == "code" and "papermill" in cell.get("metadata", {})
        if not papermill(cell).get("start_time")
    ]
    if never:
        return f"{where(never[0])} and {len(never) - 1} code cell(s) below it never ran"
    return None


# A kernel that dies before its first reply ran nothing of the notebook: most often one of
# the TCP ports jupyter_client picked for it was taken meanwhile by another process (it
# picks free ports, then the kernel binds them). Such a start is tried again.
KERNEL_START_ATTEMPTS = 3


def _never_started(err: BaseException) -> bool:
    return "before replying to kernel_info" in str(err)


def replay_notebook(
    path: Path, stored: Any, cases: list[Case], options: Options, out: Path, *, name: str = ""
) -> NotebookReport:
    """Run the notebook in a fresh kernel with replay on; fill in each case's result. The
    executed notebook is `out/NAME` (the report's name: its file name by default)."""
    import json

    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from nbworker.replay import REPLAY_MIMETYPE, expected_runs

    report = NotebookReport(str(path), cases, name=name)
    work = copy.deepcopy(stored)
    for cell in work.cells:  # outputs come only from this run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    expected = [vars(item) for item in expected_runs(stored)]
    executed_path = out / report.name
    executed_path.parent.mkdir(parents=True, exist_ok=True)
    # beside the executed notebook, so that the report can be run again
    expected_path = executed_path.with_suffix(".replay.json").resolve()
    expected_path.write_text(json.dumps(expected), encoding="utf-8")
    work.cells.insert(0, _replay_cell(expected_path, options.rtol))
    report.executed = str(executed_path)
    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        failure = None
        try:
            papermill.execute_notebook(
                work,
                str(executed_path),
                parameters=options.parameters or None,
                kernel_name=options.kernel_name
                or stored.metadata.get("kernelspec", {}).get("name")
                or "python3",
                cwd=str(path.parent.resolve()),
                execution_timeout=options.timeout,
                progress_bar=False,
                log_output=False,
                allow_error_names=["ReplayMismatch"],  # a mismatch fails its cell, not the run
                # written once at the end, a timeout or a dead kernel included, not after
                # every cell: that would cost O(cells^2)
                request_save_on_cell_execute=False,
                engine_name=_replay_engine(),
                save_on_failure=str(executed_path),
                on_cell_error=_note_cell_error,  # nbclient's hook: what stopped a cell
            )
        except PapermillExecutionError:
            pass  # the cells say what failed, read below
        except Exception as err:  # the kernel died, a cell timed out, ...
            failure = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
            if _never_started(err) and attempt < KERNEL_START_ATTEMPTS:
                report.notes.append(
                    f"the kernel died while starting ({failure}); started a new one"
                )
                continue
        break
    executed = nbformat.read(executed_path, as_version=4) if executed_path.exists() else None
    if executed is None:
        report.error = failure or "papermill wrote no executed notebook"
        return report
    index_of = {cell.get("id"): index for index, cell in enumerate(stored.cells)}
    by_key = {(case.cell, case.index): case for case in cases}
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            outcome = output.get("data", {}).get(REPLAY_MIMETYPE)
            if outcome is None:
                continue
            case = by_key.get((outcome["cell"], outcome["case"]))
            if case is None:
                where = index_of.get(cell.get("id"), "?")
                report.notes.append(
                    f"cell {where}: a run of {outcome['handler']} with no recorded run to "
                    "compare (record it by running the cell in Jupyter and saving)"
                )
                continue
            case.notebook_result = outcome["result"]
            case.differences = list(outcome["differences"])
            case.notebook_ms = outcome.get("duration_ms")
    report.error = _notebook_error(executed, index_of, failure)
    return report


# ------------------------------------------------------------------------ 2. the worker


def replay_worker(path: Path, stored: Any, cases: list[Case], options: Options) -> list[str]:
    """Export the notebook and run the exported tests/test_handler.py; fill in each case's
    worker result. Returns notes."""
    import xml.etree.ElementTree as ElementTree

    from nbworker.export import ExportError, export_notebook
    from nbworker.export.testfiles import CASE_STATUSES, select_cases
    from nbworker.replay import expected_runs

    with tempfile.TemporaryDirectory(prefix="nbworker-worker-") as folder:
        try:
            report = export_notebook(path, folder)
        except ExportError as err:
            for case in cases:
                case.worker_result, case.worker_detail = "error", f"export failed: {err}"
            return [f"the worker could not be exported: {err}"]
        records = [
            dict(record, cell=expected.cell, _index=index)
            for expected in expected_runs(stored)
            for index, record in enumerate(expected.records, 1)
        ]
        kept = [
            record
            for record in records
            if record.get("handler") == report.handler and record.get("status") in CASE_STATUSES
        ]
        exported = select_cases(kept, handler=report.handler)  # numbered as export numbers them
        names = {
            (record["cell"], record["_index"]): case["name"]
            for record, case in zip(kept, exported, strict=True)
        }
        wanted = {names[(c.cell, c.index)]: c for c in cases if (c.cell, c.index) in names}
        for case in cases:
            if (case.cell, case.index) not in names:
                case.worker_result = "-"
                case.worker_detail = (
                    f"not in the worker (it exports `{report.handler}`)"
                    if case.handler != report.handler
                    else f"a {case.status} run is no worker case"
                )
        if not wanted:
            return [f"no recorded case of `{report.handler}` to replay against the worker"]
        Path(folder, "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not ours
        junit = Path(folder, "junit.xml")
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}  # not for this run
        env["WORKER_TEST_REL_TOL"] = repr(options.rtol)
        if options.timeout:
            env["WORKER_TEST_TIMEOUT"] = repr(options.timeout)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/test_handler.py",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                "-o",
                "junit_family=xunit2",
            ],
            cwd=folder,
            capture_output=True,
            text=True,
            env=env,
        )
        if not junit.exists():
            for case in wanted.values():
                case.worker_result = "error"
                case.worker_detail = "pytest did not run: " + done.stderr[-500:].strip()
            return [f"the worker's tests did not run (exit {done.returncode})"]
        for testcase in ElementTree.parse(junit).getroot().iter("testcase"):
            found = WORKER_CASE.search(testcase.get("name", ""))
            case = wanted.get(found[1]) if found else None
            if case is None:
                continue
            case.worker_seconds = float(testcase.get("time") or 0.0)
            problem = testcase.find("failure")
            if problem is None:
                problem = testcase.find("error")
            skipped = testcase.find("skipped")
            if problem is not None:
                case.worker_result = "failed"
                case.worker_detail = _first_assertion(problem.get("message") or problem.text)
            elif skipped is not None:
                case.worker_result = "skipped"
                case.worker_detail = skipped.get("message") or ""
            else:
                case.worker_result = "passed"
    return []


def _first_assertion(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("AssertionError: "):
            return line[len("AssertionError: ") :]
    return lines[0] if lines else "failed"


# ------------------------------------------------------------------------ both


def test_notebook(
    path: str | os.PathLike[str], options: Options | None = None, *, name: str | None = None
) -> NotebookReport:
    """Replay one notebook's recorded runs in a fresh kernel and against its worker.

    `name` is what case ids and the summary call it, and where under `output_dir` the
    executed notebook goes: a relative path (default: the file name). A notebook none of
    whose cases is selected (none recorded, or -k) is not run.
    """
    import nbformat

    from nbworker.replay import MalformedRecord

    options = options or Options()
    path = Path(path)
    name = name or path.name
    started = time.perf_counter()
    try:
        stored = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook, unreadable: the notebook failed
        error = f"not a readable notebook: {type(err).__name__}: {' '.join(str(err).split())}"
        return NotebookReport(str(path), error=error[:500], name=name)
    try:
        cases = recorded_cases(stored, name)
    except MalformedRecord as err:  # hand-edited or hostile: nothing of it is replayed
        return NotebookReport(str(path), error=str(err), name=name)
    selected = [case for case in cases if _selected(case, options.select)]
    if not selected:
        report = NotebookReport(str(path), name=name, deselected=len(cases))
        report.notes.append(
            f"-k {options.select!r} selects none of its {len(cases)} recorded case(s): not run"
            if cases
            else "no %rp_test run is recorded in this notebook: nothing to replay"
        )
        return report
    if options.notebook and options.output_dir:
        out = Path(options.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = replay_notebook(path, stored, cases, options, out, name=name)
    elif options.notebook:  # the executed notebook is not kept
        with tempfile.TemporaryDirectory(prefix="nbworker-out-") as scratch:
            report = replay_notebook(path, stored, cases, options, Path(scratch), name=name)
        report.executed = None
    else:
        report = NotebookReport(str(path), cases, name=name)
        for case in cases:
            case.notebook_result = "-"
    report.seconds = time.perf_counter() - started
    if options.worker and report.error is None:
        started = time.perf_counter()
        report.notes += replay_worker(path, stored, cases, options)
        report.worker_seconds = time.perf_counter() - started
    for case in cases:
        if not _selected(case, options.select):
            case.notebook_result = case.worker_result = "deselected"
    report.cases = selected
    report.deselected = len(cases) - len(selected)
    return report


test_notebook.__test__ = False  # type: ignore[attr-defined]  # not a test, for pytest


def _test_one(item: tuple[str, Options, str]) -> NotebookReport:
    path, options, name = item
    return test_notebook(path, options, name=name)


def notebooks_under(folder: str | os.PathLike[str]) -> list[Path]:
    """Every `*.ipynb` under `folder`, at any depth, sorted; hidden folders and files
    (`.ipynb_checkpoints`, `.git`, `.venv`, ...) left out, and so are exported workers
    (a folder with nbworker's export manifest: its `tests/` holds a copy of a notebook)."""
    from nbworker.export.write import MANIFEST

    found = []
    for root, folders, files in os.walk(folder):
        if MANIFEST in files and Path(root) != Path(folder):
            folders[:] = []
            continue
        folders[:] = [name for name in folders if not name.startswith(".")]  # not walked
        found += [
            Path(root, name)
            for name in files
            if name.endswith(".ipynb") and not name.startswith(".")
        ]
    return sorted(found)


def report_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """What to call each notebook: its path from the folder all of them are in, so that the
    case ids and executed notebooks of `a/nb.ipynb` and `b/nb.ipynb` stay apart (a file
    name alone when all are in one folder)."""
    if not paths:
        return []
    absolute = [Path(os.path.abspath(path)) for path in paths]
    common = Path(os.path.commonpath([str(path.parent) for path in absolute]))
    return [path.relative_to(common).as_posix() for path in absolute]


@contextlib.contextmanager
def _spawnable_main() -> Iterator[None]:
    """Let `spawn` start processes from IPython too: its `__main__` stand-in has no
    `__spec__`, which multiprocessing reads. Our workers need nothing of `__main__`."""
    main = sys.modules.get("__main__")
    if main is None or hasattr(main, "__spec__"):
        yield
        return
    bare = types.ModuleType("__main__")
    bare.__spec__ = None
    sys.modules["__main__"] = bare
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def test_notebooks(
    paths: Sequence[str | os.PathLike[str]],
    options: Options | None = None,
    *,
    jobs: int | None = None,
    on_done: Callable[[NotebookReport], None] | None = None,
) -> list[NotebookReport]:
    """Replay several notebooks, in parallel across cores (one process, and one kernel,
    per notebook at a time). Reports come back in the order of `paths`."""
    options = options or Options()
    items = [
        (str(path), options, name) for path, name in zip(paths, report_names(paths), strict=True)
    ]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(items)))
    if jobs == 1:
        reports = []
        for item in items:
            reports.append(_test_one(item))
            if on_done:
                on_done(reports[-1])
        return reports
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: dict[int, NotebookReport] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        with _spawnable_main():  # the processes start on submit
            futures = {pool.submit(_test_one, item): index for index, item in enumerate(items)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done:
                on_done(results[futures[future]])
    return [results[index] for index in range(len(items))]


test_notebooks.__test__ = False  # type: ignore[attr-defined]


# ------------------------------------------------------------------------ results


class Progress:
    """A bar over notebooks (cases counted as they come) on a terminal; a line per
    notebook elsewhere (CI logs)."""

    def __init__(self, notebooks: int) -> None:
        from tqdm.auto import tqdm

        self.passed = self.failed = 0
        self.interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=notebooks, unit="notebook", desc="nbworker test", disable=not self.interactive
        )

    def done(self, report: NotebookReport) -> None:
        passed = sum(case.passed for case in report.cases)
        self.passed += passed
        self.failed += len(report.cases) - passed
        self.bar.set_postfix(cases=f"{self.passed} passed, {self.failed} failed")
        self.bar.update(1)
        if not self.interactive:
            state = f"{passed}/{len(report.cases)} cases passed" if report.cases else "no case"
            state = "ERROR" if report.error else state
            took = report.seconds + report.worker_seconds
            print(f"{report.name}: {state} ({took:.1f} s)", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def summary(reports: Sequence[NotebookReport]) -> str:
    """The table people read: case, notebook result, worker result, time."""
    rows = [("case", "handler", "notebook", "worker", "time (notebook run / worker test)")]
    details: list[str] = []
    for report in reports:
        for case in report.cases:
            took = []
            if case.notebook_ms is not None:
                took.append(f"{case.notebook_ms:.1f} ms")
            if case.worker_seconds is not None:
                took.append(f"{case.worker_seconds:.2f} s")
            rows.append(
                (case.id, case.handler, case.notebook_result, case.worker_result, " / ".join(took))
            )
            if case.differences:
                details.append(f"{case.id} (notebook):")
                details += [f"    {line}" for line in case.differences]
            if case.worker_result in ("failed", "error"):
                details.append(f"{case.id} (worker): {case.worker_detail}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if details:
        lines += ["", "differences:", *details]
    for report in reports:
        name = report.name
        for note in report.notes:
            lines.append(f"note: {name}: {note}")
        if report.error is not None:
            lines.append(f"ERROR: {name}: {report.error}")
        if report.executed:
            lines.append(f"{name}: executed notebook in {report.executed}")
    cases = [case for report in reports for case in report.cases]
    failed = sum(not case.passed for case in cases)
    unchecked = sum(case.passed and not case.compared for case in cases)
    broken = sum(report.error is not None for report in reports)
    seconds = sum(report.seconds + report.worker_seconds for report in reports)
    lines.append(
        f"{len(cases) - failed - unchecked} passed, {failed} failed"
        + (f", {unchecked} compared nowhere" if unchecked else "")
        + f", {broken} notebook error(s), {len(reports)} notebook(s) in {seconds:.1f} s"
    )
    return "\n".join(lines)


def junit_xml(reports: Sequence[NotebookReport]) -> str:
    """JUnit XML: a testsuite per notebook, a testcase per case and side."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.Element("testsuites", name="nbworker test")
    for report in reports:
        suite = ElementTree.SubElement(root, "testsuite", name=report.name)
        tests = failures = errors = 0
        if report.error is not None:
            case = ElementTree.SubElement(suite, "testcase", name="run the notebook")
            ElementTree.SubElement(case, "error", message=report.error).text = report.error
            tests, errors = tests + 1, errors + 1
        for item in report.cases:
            for side, result, detail, seconds in (
                (
                    "notebook",
                    item.notebook_result,
                    "\n".join(item.differences),
                    (item.notebook_ms or 0.0) / 1000,
                ),
                ("worker", item.worker_result, item.worker_detail, item.worker_seconds or 0.0),
            ):
                if result in ("-", "deselected"):
                    continue
                case = ElementTree.SubElement(
                    suite,
                    "testcase",
                    classname=report.name,
                    name=f"{item.id} [{side}]",
                    time=f"{seconds:.3f}",
                )
                tests += 1
                if result in ("failed", "not run"):
                    failures += 1
                    message = detail or result
                    ElementTree.SubElement(case, "failure", message=message[:500]).text = message
                elif result == "error":
                    errors += 1
                    ElementTree.SubElement(case, "error", message=detail[:500]).text = detail
                elif result == "skipped":
                    ElementTree.SubElement(case, "skipped", message=detail or "--no-compare")
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("time", f"{report.seconds + report.worker_seconds:.3f}")
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ---- pytest plugin
#
# `pytest --nbworker notebooks/`: every run recorded in a .ipynb is a test item,
# `NOTEBOOK.ipynb::CELL-ID::case-N`. Collection only reads the stored notebook. When the
# tests start, every collected notebook is replayed (`test_notebook`: one kernel, then the
# worker) in a pool of processes, notebooks in parallel across cores; each item waits for
# its notebook's report and reads its case from it.
#
# pytest loads this module in every run (entry point `pytest11`), so the hooks below do
# nothing without --nbworker, and pytest itself (a dev dependency only) is imported in them.

PYTEST_PLUGIN = "nbworker-replays"  # the per-run state, registered with --nbworker only


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("nbworker", "nbworker: replay the runs recorded in notebooks")
    group.addoption(
        "--nbworker",
        action="store_true",
        help="collect .ipynb files: each %%rp_test run they recorded is a test, replayed in "
        "a fresh kernel and against the exported worker",
    )
    group.addoption("--nbworker-notebook-only", action="store_true", help="skip the worker replay")
    group.addoption("--nbworker-worker-only", action="store_true", help="skip the notebook replay")
    group.addoption(
        "--nbworker-rtol",
        type=float,
        default=DEFAULT_REL_TOL,
        metavar="X",
        help=f"relative tolerance for floats (default {DEFAULT_REL_TOL:g})",
    )
    group.addoption(
        "--nbworker-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per notebook cell, and per worker job",
    )


def pytest_configure(config: Any) -> None:
    if not config.getoption("nbworker", False):
        return
    import pytest

    notebook_only = config.getoption("nbworker_notebook_only")
    worker_only = config.getoption("nbworker_worker_only")
    rtol, timeout = config.getoption("nbworker_rtol"), config.getoption("nbworker_timeout")
    if notebook_only and worker_only:
        raise pytest.UsageError(
            "--nbworker-notebook-only and --nbworker-worker-only exclude each other"
        )
    try:
        options = Options(
            notebook=not worker_only, worker=not notebook_only, timeout=timeout, rtol=rtol
        )
    except ValueError as err:
        raise pytest.UsageError(f"--nbworker-{err}") from None
    config.pluginmanager.register(_pytest_classes().Replays(config, options), PYTEST_PLUGIN)


def pytest_collect_file(file_path: Path, parent: Any) -> Any:
    if file_path.suffix != ".ipynb" or not parent.config.getoption("nbworker", False):
        return None
    if ".ipynb_checkpoints" in file_path.parts:  # Jupyter's autosaves
        return None
    if _in_exported_worker(file_path) and not _named(file_path, parent.config):
        return None  # the copy an export ships in tests/: found by a folder, not a test
    return _pytest_classes().Notebook.from_parent(parent, path=file_path)


def _in_exported_worker(path: Path) -> bool:
    """Whether `path` is the notebook copy in an exported worker's `tests/` folder."""
    from nbworker.export.write import MANIFEST

    return path.parent.name == "tests" and (path.parent.parent / MANIFEST).is_file()


def _named(path: Path, config: Any) -> bool:
    """Whether the pytest command line named this file itself (not a folder above it)."""
    root = Path(str(config.invocation_params.dir))
    for argument in config.invocation_params.args:
        named = Path(str(argument).split("::", 1)[0])
        named = named if named.is_absolute() else root / named
        if named.suffix == ".ipynb" and os.path.abspath(named) == os.path.abspath(path):
            return True
    return False


def verdict(case: Case, report: NotebookReport) -> tuple[str, str]:
    """What a case's replay means for its pytest item: ("passed" | "failed" | "skipped",
    the text pytest shows). The first line says the most, as `pytest -ra` shows only it."""
    executed = [f"executed notebook: {report.executed}"] if report.executed else []
    if report.error is not None:
        return "failed", "\n".join([f"the notebook failed: {report.error}", *executed])
    lines: list[str] = []
    if case.notebook_result == "failed":
        lines += _side("notebook", case.differences or ["differs (no difference given)"])
    elif case.notebook_result == "not run":
        lines.append("notebook: the recorded run was not replayed (did its cell's source change?)")
        lines += [f"    note: {note}" for note in report.notes]
    elif case.notebook_result not in ("passed", "skipped", "-", "deselected"):
        lines.append(f"notebook: {case.notebook_result}")
    if case.worker_result in ("failed", "error"):
        lines += _side("worker", case.worker_detail.strip().splitlines() or [case.worker_result])
    elif case.worker_result not in ("passed", "skipped", "-", "deselected"):
        lines.append(f"worker: {case.worker_result}")
    if lines:
        if case.notebook_result in ("failed", "not run"):
            lines += executed
        return "failed", "\n".join(lines)
    if "passed" in (case.notebook_result, case.worker_result):
        return "passed", ""
    # Neither side compared anything: say why, rather than pass.
    reasons = []
    if case.notebook_result == "skipped":
        reasons.append("notebook: not compared (%rp_test --no-compare)")
    elif case.notebook_result == "-":
        reasons.append("notebook: not replayed (--nbworker-worker-only)")
    if case.worker_result == "skipped":
        reasons.append(f"worker: skipped{f' ({case.worker_detail})' if case.worker_detail else ''}")
    elif case.worker_result == "-":
        reasons.append(f"worker: {case.worker_detail or 'not replayed (--nbworker-notebook-only)'}")
    return "skipped", "; ".join(reasons) or "not replayed"


def _side(side: str, lines: list[str]) -> list[str]:
    """`side: the line`, or `side:` over the lines indented."""
    if len(lines) == 1:
        return [f"{side}: {lines[0]}"]
    return [f"{side}:", *(f"    {line}" for line in lines)]


def _quiet_worker() -> None:
    """In a pool process: kernels' warnings go nowhere (pytest would show them under
    whichever test happened to be running)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def _pytest_name(path: str | os.PathLike[str], config: Any) -> str:
    """A notebook's name in case ids and in the output folder: its path from pytest's
    rootdir, as pytest names it, so that a/nb.ipynb and b/nb.ipynb stay apart."""
    name = Path(os.path.relpath(path, config.rootpath)).as_posix()
    return Path(path).name if name.startswith("../") else name


def _replay_for_pytest(
    path: str, options: Options, name: str
) -> tuple[NotebookReport, dict[str, Any]]:
    """`test_notebook` in a pool process, with where and when it ran."""
    started = time.time()
    report = test_notebook(path, options, name=name)
    return report, {"pid": os.getpid(), "started": started, "finished": time.time()}


_pytest_namespace: Any = None


def _pytest_classes() -> Any:
    """The plugin's pytest classes, defined on first use so that importing this module
    does not import pytest."""
    global _pytest_namespace
    if _pytest_namespace is not None:
        return _pytest_namespace
    import multiprocessing
    import types
    from concurrent.futures import Future, ProcessPoolExecutor

    import pytest

    class CaseFailed(Exception):
        """A case's replay failed: its message is all pytest shows."""

    class Notebook(pytest.File):
        """A .ipynb file: a `Cell` per code cell with recorded runs."""

        def collect(self) -> Iterable[Any]:
            import nbformat

            try:
                stored = nbformat.read(self.path, as_version=4)
            except Exception as err:
                raise self.CollectError(
                    f"{self.path.name}: not a readable notebook: {err}"
                ) from err
            from nbworker.replay import MalformedRecord

            try:
                cases = recorded_cases(stored, _pytest_name(self.path, self.config))
            except MalformedRecord as err:
                raise self.CollectError(f"{self.path.name}: {err}") from None
            cells: dict[int, list[Case]] = {}
            for case in cases:
                cells.setdefault(case.cell, []).append(case)
            for cases in cells.values():
                name = cases[0].cell_id or f"cell-{cases[0].cell}"
                yield Cell.from_parent(self, name=name, cases=cases)

    class Cell(pytest.Collector):
        """A code cell with recorded runs: a `CaseItem` per run. (A collector rather than
        items named `CELL-ID::case-N`, so that the node id given on the command line
        selects an item, or every case of a cell.)"""

        def __init__(self, *, cases: list[Case], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.cases = cases

        def collect(self) -> Iterable[Any]:
            for case in self.cases:
                yield CaseItem.from_parent(self, name=f"case-{case.index}", case=case)

    class CaseItem(pytest.Item):
        """One recorded run, passed when its replays gave what was recorded."""

        def __init__(self, *, case: Case, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.case = case

        def runtest(self) -> None:
            replays = self.config.pluginmanager.get_plugin(PYTEST_PLUGIN)
            try:
                report, run = replays.result(self.path)
            except Exception as err:  # the pool process died, or nbworker has a bug
                cause = getattr(err.__cause__, "tb", "")  # the traceback in the pool process
                raise CaseFailed(
                    f"{self.case.id}: replaying {self.path.name} raised "
                    f"{type(err).__name__}: {err}{cause}"
                ) from None
            self.user_properties += [(f"nbworker_{key}", value) for key, value in run.items()]
            if report.executed:
                self.user_properties.append(("nbworker_executed", report.executed))
            case = next(
                (
                    found
                    for found in report.cases
                    if (found.cell, found.index) == (self.case.cell, self.case.index)
                ),
                None,
            )
            if case is None:
                raise CaseFailed(
                    f"{self.case.id}: not in the replay's report (was the notebook changed "
                    "during the test run?)"
                )
            outcome, text = verdict(case, report)
            if outcome == "failed":
                raise CaseFailed(text)
            if outcome == "skipped":
                pytest.skip(text)

        def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
            if isinstance(excinfo.value, CaseFailed):
                return str(excinfo.value)
            return super().repr_failure(excinfo, style=style)

        def reportinfo(self) -> tuple[Path, int | None, str]:
            # Not the bare id: pytest -v would show a name that ends the node id with its
            # dots as `::` (`sentiment::ipynb::...`), as it does for `Class.method`.
            return self.path, None, f"{self.case.id} ({self.case.handler})"

    class Replays:
        """The replays of one pytest run: a future per notebook, in a process pool."""

        def __init__(self, config: Any, options: Options) -> None:
            self.config = config
            self.options = options
            self.pool: ProcessPoolExecutor | None = None
            self.futures: dict[str, Future[tuple[NotebookReport, dict[str, Any]]]] = {}

        def start(self, paths: Iterable[Path]) -> None:
            """Submit the notebooks not yet submitted; the pool is sized for the first
            batch (every collected notebook, or one at a time under pytest-xdist)."""
            new = [path for path in dict.fromkeys(map(str, paths)) if path not in self.futures]
            if not new:
                return
            if self.options.notebook and self.options.output_dir is None:
                # executed notebooks, the reports, go where pytest keeps its temporary files
                factory = getattr(self.config, "_tmp_path_factory", None)
                if factory is not None:
                    self.options.output_dir = str(factory.mktemp("nbworker", numbered=True))
            if self.pool is None:
                self.pool = ProcessPoolExecutor(
                    max_workers=max(1, min(len(new), os.cpu_count() or 1)),
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_quiet_worker,
                )
            with _spawnable_main():  # the processes start on submit
                for path in new:
                    name = _pytest_name(path, self.config)
                    self.futures[path] = self.pool.submit(
                        _replay_for_pytest, path, self.options, name
                    )

        def result(self, path: Path) -> tuple[NotebookReport, dict[str, Any]]:
            self.start([path])  # not started with the others (--setup-only, xdist, ...)
            return self.futures[str(path)].result()

        def close(self) -> None:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None

        @pytest.hookimpl(wrapper=True)
        def pytest_runtestloop(self, session: Any) -> Any:
            option = session.config.option
            try:
                blocked = session.testsfailed and not option.continue_on_collection_errors
                if not (
                    blocked
                    or option.collectonly
                    or getattr(option, "setuponly", False)
                    or getattr(option, "setupplan", False)
                    or hasattr(session.config, "workerinput")  # an xdist worker: run on demand
                ):
                    self.start(item.path for item in session.items if isinstance(item, CaseItem))
                return (yield)
            finally:
                self.close()

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_makereport(self, item: Any, call: Any) -> Any:
            report = yield
            if isinstance(item, CaseItem) and report.skipped and isinstance(report.longrepr, tuple):
                # at the notebook, not at the pytest.skip above
                report.longrepr = (item.location[0], None, report.longrepr[2])
            return report

        def pytest_report_header(self, config: Any) -> str:
            sides = [
                side
                for side, on in (
                    ("the notebook", self.options.notebook),
                    ("the worker", self.options.worker),
                )
                if on
            ]
            return (
                f"nbworker: replaying recorded runs in {' and '.join(sides)} "
                f"(rtol {self.options.rtol:g}, timeout {self.options.timeout or 'none'})"
            )

        def pytest_terminal_summary(self, terminalreporter: Any) -> None:
            notes = []
            for future in self.futures.values():
                if future.done() and not future.cancelled() and future.exception() is None:
                    report = future.result()[0]
                    notes += [f"{report.name}: {note}" for note in report.notes]
            if notes:
                terminalreporter.write_sep("-", "nbworker notes")
                for note in notes:
                    terminalreporter.write_line(note)

    _pytest_namespace = types.SimpleNamespace(
        CaseFailed=CaseFailed, Notebook=Notebook, Cell=Cell, CaseItem=CaseItem, Replays=Replays
    )
    return _pytest_namespace
