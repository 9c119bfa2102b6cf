"""How `nbworker test`'s results read: the summary table, JUnit XML, the progress bar, and
the verdict a pytest item gives for its case.

Only reads the reports (`model.py`); the text is what users and CI parse, so its wording
and layout stay as they are.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

from nbworker.testing.model import PASSING, Case, NotebookReport, Result

__all__ = ["Progress", "Step", "junit_xml", "summary", "verdict"]

FAILING = (Result.FAILED, Result.ERROR)  # a side that says why in its detail
NOT_PASSED = (Result.FAILED, Result.NOT_RUN)  # a failure in JUnit, as in the verdict


class Step(NamedTuple):
    """Where one notebook's replay is, for `Progress`: sent as it goes, from a pool process
    too (a tuple pickles)."""

    name: str  # the notebook, as its report calls it
    phase: str  # "notebook": its cells run; "worker": the worker's tests; "server": its jobs
    cells: int  # code cells run so far
    cells_total: int
    cases: int  # cases replayed in the notebook so far
    cases_total: int
    failed: int = 0  # of those, the ones that did not pass


class Progress:
    """`nbworker test`'s progress on stderr. On a terminal (or with `bar=True`) a tqdm bar
    over the cells run, with the cases replayed and the worker tests running; elsewhere
    (CI logs) a line per notebook as it ends. `quiet`: neither. Safe from two threads (the
    steps of pool processes arrive on one, the reports on another)."""

    def __init__(
        self,
        notebooks: int,
        *,
        quiet: bool = False,
        bar: bool | None = None,
        remote: str | None = None,
    ) -> None:
        self.notebooks = notebooks
        self.quiet = quiet
        self.interactive = not quiet and (sys.stderr.isatty() if bar is None else bar)
        self.steps: dict[str, Step] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.bar: Any = None
        if self.interactive:  # tqdm only then: its import is ~0.1 s of a CI run's start
            from tqdm.std import tqdm

            unit = "cell" if remote is None else "case"  # against a server: jobs, no cells
            self.bar = tqdm(total=0, unit=unit, desc="nbworker test", file=sys.stderr)
            start = "starting the kernel" if remote is None else f"sending to {remote}"
            self.bar.set_postfix_str(start, refresh=True)

    def step(self, step: Step) -> None:
        """A notebook got further."""
        with self.lock:
            if self.bar is None or step.name in self.finished:
                return
            before = self.steps.get(step.name)
            self.steps[step.name] = step
            self._show(force=before is None or before.phase != step.phase)

    def done(self, report: NotebookReport) -> None:
        """A notebook ended: its report."""
        with self.lock:
            self.finished.add(report.name)
            if self.bar is not None:
                last = self.steps.get(report.name)
                failed = sum(not case.passed for case in report.cases)
                total = last.cells_total if last else 0
                cases = len(report.cases)
                self.steps[report.name] = Step(
                    report.name, "done", total, total, cases, cases, failed
                )
                self._show(force=True)
            elif not self.quiet:
                passed = sum(case.passed for case in report.cases)
                state = f"{passed}/{len(report.cases)} cases passed" if report.cases else "no case"
                state = "ERROR" if report.error else state
                took = report.seconds + report.worker_seconds
                print(f"{report.name}: {state} ({took:.1f} s)", file=sys.stderr, flush=True)

    def _show(self, *, force: bool) -> None:
        steps = self.steps.values()
        total = sum(step.cells_total for step in steps)
        if total != self.bar.total:
            self.bar.total = total
        cases = sum(step.cases for step in steps)
        words = [f"{len(self.finished)}/{self.notebooks} notebooks"] if self.notebooks > 1 else []
        words.append(f"{cases}/{sum(step.cases_total for step in steps)} cases replayed")
        failed = sum(step.failed for step in steps)
        if failed:
            words.append(f"{failed} failed")
        working = [step.name for step in steps if step.phase == "worker"]
        if working:
            words.append(f"worker: {', '.join(working)}")
        serving = [step.name for step in steps if step.phase == "server"]
        if serving:
            words.append(f"server: {', '.join(serving)}")
        self.bar.set_postfix_str(", ".join(words), refresh=False)
        self.bar.update(sum(step.cells for step in steps) - self.bar.n)  # at most 10 a second
        if force:  # a new phase shows at once: the worker's tests may take a while
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _remote_rows(reports: Sequence[NotebookReport]) -> tuple[list[tuple[str, ...]], list[str]]:
    """The table's rows and the differences of a replay against a server."""
    rows: list[tuple[str, ...]] = [("case", "handler", "server", "time (round trip)")]
    details: list[str] = []
    for report in reports:
        for case in report.cases:
            took = "" if case.remote_seconds is None else f"{case.remote_seconds:.2f} s"
            rows.append((case.id, case.handler, str(case.remote_result), took))
            if case.remote_result in FAILING:
                lines = case.remote_detail.splitlines() or [str(case.remote_result)]
                if len(lines) == 1:
                    details.append(f"{case.id} (server): {lines[0]}")
                else:
                    details.append(f"{case.id} (server):")
                    details += [f"    {line}" for line in lines]
    return rows, details


def summary(reports: Sequence[NotebookReport]) -> str:
    """The table people read: case, notebook result, worker result, time (against a server:
    case, server result, round trip; and the server's times)."""
    if any(report.remote is not None for report in reports):
        rows, details = _remote_rows(reports)
        return _table(reports, rows, details)
    rows = [("case", "handler", "notebook", "worker", "time (notebook run / worker test)")]
    details = []
    for report in reports:
        for case in report.cases:
            took = []
            if case.notebook_ms is not None:
                took.append(f"{case.notebook_ms:.1f} ms")
            if case.worker_seconds is not None:
                took.append(f"{case.worker_seconds:.2f} s")
            rows.append(
                (
                    case.id,
                    case.handler,
                    str(case.notebook_result),
                    str(case.worker_result),
                    " / ".join(took),
                )
            )
            if case.differences:
                details.append(f"{case.id} (notebook):")
                details += [f"    {line}" for line in case.differences]
            if case.worker_result in FAILING:
                details.append(f"{case.id} (worker): {case.worker_detail}")
    return _table(reports, rows, details)


def _table(
    reports: Sequence[NotebookReport], rows: Sequence[tuple[str, ...]], details: list[str]
) -> str:
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
        times = report.job_times()
        if times is not None:
            lines.append(f"{name}: server {report.remote}: {times}")
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
                ("server", item.remote_result, item.remote_detail, item.remote_seconds or 0.0),
            ):
                if result in (Result.NOT_REPLAYED, Result.DESELECTED):
                    continue
                case = ElementTree.SubElement(
                    suite,
                    "testcase",
                    classname=report.name,
                    name=f"{item.id} [{side}]",
                    time=f"{seconds:.3f}",
                )
                tests += 1
                if result in NOT_PASSED:
                    failures += 1
                    message = detail or str(result)
                    ElementTree.SubElement(case, "failure", message=message[:500]).text = message
                elif result == Result.ERROR:
                    errors += 1
                    ElementTree.SubElement(case, "error", message=detail[:500]).text = detail
                elif result == Result.SKIPPED:
                    ElementTree.SubElement(case, "skipped", message=detail or "--no-compare")
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("time", f"{report.seconds + report.worker_seconds:.3f}")
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def verdict(case: Case, report: NotebookReport) -> tuple[Result, str]:
    """What a case's replay means for its pytest item: (PASSED, FAILED or SKIPPED, the text
    pytest shows). The first line says the most, as `pytest -ra` shows only it."""
    executed = [f"executed notebook: {report.executed}"] if report.executed else []
    if report.error is not None:
        return Result.FAILED, "\n".join([f"the notebook failed: {report.error}", *executed])
    lines: list[str] = []
    if case.notebook_result == Result.FAILED:
        lines += _side("notebook", case.differences or ["differs (no difference given)"])
    elif case.notebook_result == Result.NOT_RUN:
        lines.append("notebook: the recorded run was not replayed (did its cell's source change?)")
        lines += [f"    note: {note}" for note in report.notes]
    elif case.notebook_result not in PASSING:
        lines.append(f"notebook: {case.notebook_result}")
    if case.worker_result in FAILING:
        lines += _side("worker", case.worker_detail.strip().splitlines() or [case.worker_result])
    elif case.worker_result not in PASSING:
        lines.append(f"worker: {case.worker_result}")
    if case.remote_result in FAILING:
        lines += _side("server", case.remote_detail.strip().splitlines() or [case.remote_result])
    elif case.remote_result not in PASSING:
        lines.append(f"server: {case.remote_result}")
    if lines:
        if case.notebook_result in NOT_PASSED:
            lines += executed
        return Result.FAILED, "\n".join(lines)
    if Result.PASSED in (case.notebook_result, case.worker_result, case.remote_result):
        return Result.PASSED, ""
    # Neither side compared anything: say why, rather than pass.
    if report.remote is not None:
        return Result.SKIPPED, f"server: {case.remote_result} ({case.remote_detail or 'not sent'})"
    reasons = []
    if case.notebook_result == Result.SKIPPED:
        reasons.append("notebook: not compared (%rp_test --no-compare)")
    elif case.notebook_result == Result.NOT_REPLAYED:
        reasons.append("notebook: not replayed (--nbworker-worker-only)")
    if case.worker_result == Result.SKIPPED:
        reasons.append(f"worker: skipped{f' ({case.worker_detail})' if case.worker_detail else ''}")
    elif case.worker_result == Result.NOT_REPLAYED:
        reasons.append(f"worker: {case.worker_detail or 'not replayed (--nbworker-notebook-only)'}")
    return Result.SKIPPED, "; ".join(reasons) or "not replayed"


def _side(side: str, lines: list[str]) -> list[str]:
    """`side: the line`, or `side:` over the lines indented."""
    if len(lines) == 1:
        return [f"{side}: {lines[0]}"]
    return [f"{side}:", *(f"    {line}" for line in lines)]
