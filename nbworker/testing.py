"""`nbworker test`: the runs a notebook recorded are its test cases, replayed twice.

1. In the notebook: papermill runs it top to bottom in a fresh kernel, with a first cell
   that turns on replay (`nbworker.replay`), so each `%rp_test` compares its new run with
   the recorded one. One kernel per notebook, whatever the number of cases.
2. In the worker: the notebook is exported to a temporary folder and the exported
   `tests/test_handler.py` replays the same cases against `handler.py` under the real
   runpod SDK, so drift between notebook and worker shows.

Exit codes: 0 all passed, 1 a case mismatched (or the worker could not be built), 2 usage,
3 a notebook failed outside a test (a cell raised, the kernel died, a timeout).

The pytest plugin (`pytest --nbworker notebooks/`) is at the end of this module; it is
loaded by every pytest run in an environment with nbworker, so imports here stay lazy.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_MISMATCH",
    "EXIT_NOTEBOOK",
    "EXIT_OK",
    "EXIT_USAGE",
    "Case",
    "NotebookReport",
    "Options",
    "Progress",
    "exit_code",
    "junit_xml",
    "summary",
    "test_notebook",
    "test_notebooks",
]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_NOTEBOOK = 0, 1, 2, 3
REPLAY_TAG = "nbworker-replay"  # the cell `nbworker test` puts first
WORKER_CASE = re.compile(r"\[(case-\d+)")


@dataclass
class Options:
    """How to replay (the command line's options)."""

    notebook: bool = True  # replay in a fresh kernel
    worker: bool = True  # replay against the exported worker
    select: str | None = None  # -k: only cases whose id matches
    timeout: float | None = None  # seconds per cell / per worker job
    rtol: float = 1e-6
    output_dir: str | None = None  # executed notebooks (the report) go there
    parameters: dict[str, Any] = field(default_factory=dict)  # papermill -p
    kernel_name: str | None = None


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
    def passed(self) -> bool:
        return self.notebook_result in ("passed", "skipped", "deselected", "-") and (
            self.worker_result in ("passed", "skipped", "-", "deselected")
        )


@dataclass
class NotebookReport:
    """What replaying one notebook gave."""

    path: str
    cases: list[Case] = field(default_factory=list)
    error: str | None = None  # the notebook failed outside a test
    notes: list[str] = field(default_factory=list)
    executed: str | None = None  # the executed notebook (the report)
    seconds: float = 0.0
    worker_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_NOTEBOOK
        return EXIT_OK if all(case.passed for case in self.cases) else EXIT_MISMATCH


def exit_code(reports: Iterable[NotebookReport]) -> int:
    """The worst exit code of the notebooks: 3 over 1 over 0."""
    return max((report.exit_code for report in reports), default=EXIT_OK)


# ------------------------------------------------------------------------ cases


def recorded_cases(notebook: Any, name: str) -> list[Case]:
    from nbworker.replay import expected_runs

    return [
        Case(
            name,
            expected.cell,
            expected.cell_id,
            index,
            str(record.get("handler")),
            str(record.get("status")),
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


def _error_of(cell: Any) -> tuple[str, str] | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return str(output.get("ename")), str(output.get("evalue"))
    return None


def replay_notebook(path: Path, cases: list[Case], options: Options, out: Path) -> NotebookReport:
    """Run the notebook in a fresh kernel with replay on; fill in each case's result."""
    import json

    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from nbworker.replay import REPLAY_MIMETYPE, expected_runs

    report = NotebookReport(str(path), cases)
    stored = nbformat.read(path, as_version=4)
    work = copy.deepcopy(stored)
    for cell in work.cells:  # outputs come only from this run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    expected = [vars(item) for item in expected_runs(stored)]
    with tempfile.TemporaryDirectory(prefix="nbworker-test-") as scratch:
        expected_path = Path(scratch, "expected.json")
        expected_path.write_text(json.dumps(expected), encoding="utf-8")
        work.cells.insert(0, _replay_cell(expected_path, options.rtol))
        executed_path = out / path.name
        report.executed = str(executed_path)
        failure = None
        try:
            papermill.execute_notebook(
                work,
                str(executed_path),
                parameters=options.parameters or None,
                kernel_name=options.kernel_name,
                cwd=str(path.parent.resolve()),
                execution_timeout=options.timeout,
                progress_bar=False,
                log_output=False,
                allow_error_names=["ReplayMismatch"],  # a mismatch fails its cell, not the run
            )
        except PapermillExecutionError:
            pass  # the cells say what failed, read below
        except Exception as err:  # the kernel died, a cell timed out, ...
            failure = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
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
        error = _error_of(cell)
        if error is not None and error[0] != "ReplayMismatch" and report.error is None:
            if REPLAY_TAG in cell.get("metadata", {}).get("tags", []):
                report.error = f"replay could not start: {error[0]}: {error[1]}"
            else:
                where = index_of.get(cell.get("id"), "?")
                report.error = f"cell {where} raised {error[0]}: {error[1]}"
    if failure is not None:
        report.error = failure if report.error is None else f"{report.error}; {failure}"
    return report


# ------------------------------------------------------------------------ 2. the worker


def replay_worker(path: Path, cases: list[Case], options: Options) -> list[str]:
    """Export the notebook and run the exported tests/test_handler.py; fill in each case's
    worker result. Returns notes."""
    import xml.etree.ElementTree as ElementTree

    from nbworker.export import ExportError, export_notebook
    from nbworker.export.testfiles import CASE_STATUSES, select_cases

    with tempfile.TemporaryDirectory(prefix="nbworker-worker-") as folder:
        try:
            report = export_notebook(path, folder)
        except ExportError as err:
            for case in cases:
                case.worker_result, case.worker_detail = "error", f"export failed: {err}"
            return [f"the worker could not be exported: {err}"]
        import nbformat

        stored = nbformat.read(path, as_version=4)
        records = [
            dict(record, cell=expected.cell, _index=index)
            for expected in _expected(stored)
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
        env = dict(os.environ, WORKER_TEST_REL_TOL=repr(options.rtol))
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


def _expected(notebook: Any) -> list[Any]:
    from nbworker.replay import expected_runs

    return expected_runs(notebook)


def _first_assertion(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("AssertionError: "):
            return line[len("AssertionError: ") :]
    return lines[0] if lines else "failed"


# ------------------------------------------------------------------------ both


def test_notebook(path: str | os.PathLike[str], options: Options | None = None) -> NotebookReport:
    """Replay one notebook's recorded runs in a fresh kernel and against its worker."""
    import nbformat

    options = options or Options()
    path = Path(path)
    started = time.perf_counter()
    stored = nbformat.read(path, as_version=4)
    cases = recorded_cases(stored, path.name)
    out = Path(options.output_dir) if options.output_dir else Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    if options.notebook:
        report = replay_notebook(path, cases, options, out)
    else:
        report = NotebookReport(str(path), cases)
        for case in cases:
            case.notebook_result = "-"
    report.seconds = time.perf_counter() - started
    if options.worker and report.error is None:
        started = time.perf_counter()
        report.notes += replay_worker(path, cases, options)
        report.worker_seconds = time.perf_counter() - started
    if not cases:
        report.notes.append("no %rp_test run is recorded in this notebook: nothing to replay")
    for case in cases:
        if not _selected(case, options.select):
            case.notebook_result = case.worker_result = "deselected"
    report.cases = [case for case in cases if _selected(case, options.select)]
    return report


test_notebook.__test__ = False  # type: ignore[attr-defined]  # not a test, for pytest


def _test_one(item: tuple[str, Options]) -> NotebookReport:
    path, options = item
    return test_notebook(path, options)


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
    items = [(str(path), options) for path in paths]
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
            state = "ERROR" if report.error else f"{passed}/{len(report.cases)} cases passed"
            took = report.seconds + report.worker_seconds
            print(f"{Path(report.path).name}: {state} ({took:.1f} s)", file=sys.stderr)

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
        name = Path(report.path).name
        for note in report.notes:
            lines.append(f"note: {name}: {note}")
        if report.error is not None:
            lines.append(f"ERROR: {name}: {report.error}")
        if report.executed:
            lines.append(f"{name}: executed notebook in {report.executed}")
    cases = [case for report in reports for case in report.cases]
    failed = sum(not case.passed for case in cases)
    broken = sum(report.error is not None for report in reports)
    seconds = sum(report.seconds + report.worker_seconds for report in reports)
    lines.append(
        f"{len(cases) - failed} passed, {failed} failed, {broken} notebook error(s), "
        f"{len(reports)} notebook(s) in {seconds:.1f} s"
    )
    return "\n".join(lines)


def junit_xml(reports: Sequence[NotebookReport]) -> str:
    """JUnit XML: a testsuite per notebook, a testcase per case and side."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.Element("testsuites", name="nbworker test")
    for report in reports:
        suite = ElementTree.SubElement(root, "testsuite", name=Path(report.path).name)
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
                    classname=Path(report.path).name,
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
