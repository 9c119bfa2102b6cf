"""The first replay of `nbworker test`: the notebook re-run in a fresh kernel.

A copy of the notebook (outputs cleared) runs top to bottom in a fresh kernel
(`execute.py`, over jupyter_client, as papermill would run it) with a first cell that turns
on replay (`nbworker.replay`), so each `%rp_test` compares its new run with the one
recorded in its place and shows the outcome under `REPLAY_MIMETYPE`. One kernel per
notebook, whatever the number of cases. The kernel starts first and boots while the
notebook is prepared. The executed notebook is the report (written when it is kept): its
cells give each case's result, and the run says what, if anything, stopped it outside a
test.

Nothing here imports nbformat or papermill (papermill's parameter translator only, for
`-p`): the package is imported by every pytest run (the plugin), and a second of imports
would weigh on every `nbworker test`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbworker.errors import ReplayMismatch
from nbworker.testing.model import Case, NotebookReport, Options, Result
from nbworker.testing.report import Step

__all__ = ["KERNEL_START_ATTEMPTS", "REPLAY_TAG", "STOPPED_KEY", "replay_notebook"]

REPLAY_TAG = "nbworker-replay"  # the cell `nbworker test` puts first
PARAMETERS_TAG, INJECTED_TAG = "parameters", "injected-parameters"  # papermill's tags
STOPPED_KEY = "nbworker"  # in an executed cell's metadata: why it stopped the run
MISMATCH = ReplayMismatch.__name__  # its `ename` in the kernel's reply: fails its cell only
NOT_VALID = "not a valid notebook (nbformat's schema)"
# A kernel that dies before its first reply ran nothing of the notebook: started again.
KERNEL_START_ATTEMPTS = 3


def _code_cell(source: str, tags: list[str]) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex[:8],
        "cell_type": "code",
        "metadata": {"tags": tags},
        "execution_count": None,
        "source": source,
        "outputs": [],
    }


def _replay_cell(expected_path: Path, rtol: float) -> dict[str, Any]:
    return _code_cell(
        "# nbworker test: each %rp_test below compares its run with the one recorded here\n"
        "import nbworker.replay\n"
        f"nbworker.replay.start({str(expected_path)!r}, rtol={rtol!r})",
        [REPLAY_TAG],
    )


def _with_parameters(work: Any, parameters: dict[str, Any], kernel_name: str) -> None:
    """papermill's `parameterize_notebook`: a cell tagged `injected-parameters` setting
    them, after the cell tagged `parameters` (replacing an injected one; at the top when
    there is neither), written by papermill's own translator for the kernel's language."""
    from papermill.translators import translate_parameters

    spec = work.get("metadata", {}).get("kernelspec", {})
    language = spec.get("language") or work.get("metadata", {}).get("language_info", {}).get(
        "name", "python"
    )
    cell = _code_cell(
        translate_parameters(kernel_name, language, parameters, "Parameters"), [INJECTED_TAG]
    )

    def tagged(tag: str) -> int:
        for index, each in enumerate(work["cells"]):
            if tag in each.get("metadata", {}).get("tags", []):
                return index
        return -1

    injected, given = tagged(INJECTED_TAG), tagged(PARAMETERS_TAG)
    if injected >= 0:
        work["cells"][injected] = cell
    else:
        work["cells"].insert(given + 1, cell)  # -1: at the top


def _error_of(cell: Any) -> tuple[str, str] | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return str(output.get("ename")), str(output.get("evalue"))
    return None


def _note_cell_error(cell: dict[str, Any], content: dict[str, Any]) -> None:
    """Keep in a failed cell what the kernel's reply says. A `UsageError` (as `%rp_test`
    raises for misuse) fails the cell and stops the run, but IPython shows it on stderr,
    not as an `error` output: the reply is all that names it."""
    if content.get("ename") != MISMATCH:  # a mismatch fails its cell, not the run
        cell["metadata"][STOPPED_KEY] = {
            "ename": str(content.get("ename")),
            "evalue": str(content.get("evalue")),
        }


def _notebook_error(cells: list[Any], run: Any, index_of: dict[Any, int]) -> str | None:
    """What failed the notebook outside a test, naming the cell; None when every cell ran.

    In order: what broke the run (a timeout, a dead kernel) and the cell then running, a
    cell with an error output (a mismatch aside), the cell whose failure stopped the run
    without one (a `UsageError`).
    """

    def where(cell: Any) -> str:
        return f"cell {index_of.get(cell.get('id'), '?')} (id {cell.get('id')})"

    def replay(cell: Any) -> bool:
        return REPLAY_TAG in cell.get("metadata", {}).get("tags", [])

    if run.failure is not None:
        return run.failure if run.stopped is None else f"{where(cells[run.stopped])}: {run.failure}"
    for cell in cells:
        error = _error_of(cell)
        if error is None or error[0] == MISMATCH:
            continue
        if replay(cell):
            return f"replay could not start: {error[0]}: {error[1]}"
        return f"{where(cell)} raised {error[0]}: {error[1]}"
    if run.stopped is not None and run.error is not None:
        cell = cells[run.stopped]
        if replay(cell):
            return f"replay could not start: {run.error[0]}: {run.error[1]}"
        return f"{where(cell)} raised {run.error[0]}: {run.error[1]}"
    return None


def _one_case(cell: dict[str, Any]) -> bool:
    """A cell that is one `%rp_test` line and nothing else, untagged: most of a recorded
    notebook. Such cells go to the kernel many to a request (`execute.Batch`)."""
    source = str(cell.get("source", "")).strip()
    tags = cell.get("metadata", {}).get("tags")
    return source.startswith("%rp_test ") and "\n" not in source and not tags


def _run_cases(sources: list[str], allowed: list[str], ledger: str) -> str:
    """The code of a request that runs `sources` as cells (`nbworker.replay.run_cells`)."""
    call = f"run_cells({sources!r}, {allowed!r}, {ledger!r})"
    return f"__import__('nbworker.replay', fromlist=['run_cells']).{call}"


def _work_copy(stored: dict[str, Any]) -> dict[str, Any]:
    """The notebook to run: the stored one's cells, code cells without their outputs (they
    come only from this run), each cell's metadata its own to fill in."""
    cells = []
    for cell in stored["cells"]:
        cell = dict(cell, metadata=dict(cell.get("metadata", {})))
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    return dict(stored, cells=cells, metadata=copy.deepcopy(stored.get("metadata", {})))


class _Counter:
    """The cells a replay ran and the cases they replayed, told to `on_step` as each
    cell ends."""

    def __init__(
        self, name: str, cells: list[Any], cases: int, on_step: Callable[[Step], None]
    ) -> None:
        from nbworker.replay import REPLAY_MIMETYPE
        from nbworker.testing.execute import code_cells

        self.name, self.cells, self.on_step = name, cells, on_step
        self.mimetype = REPLAY_MIMETYPE
        self.total = len(code_cells(cells))
        self.cases_total = cases
        self.ran = self.cases = self.failed = 0
        on_step(self._step())

    def ended(self, index: int) -> None:
        self.ran += 1
        for output in self.cells[index].get("outputs", []):
            outcome = output.get("data", {}).get(self.mimetype)
            if outcome is not None:
                self.cases += 1
                self.failed += outcome.get("result") == Result.FAILED
        self.on_step(self._step())

    def _step(self) -> Step:
        return Step(
            self.name, "notebook", self.ran, self.total, self.cases, self.cases_total, self.failed
        )


def replay_notebook(
    path: Path,
    stored: Any,
    cases: list[Case],
    options: Options,
    out: Path,
    *,
    name: str = "",
    keep: bool = True,
    on_step: Callable[[Step], None] | None = None,
) -> NotebookReport:
    """Run the notebook in a fresh kernel with replay on; fill in each case's result. The
    executed notebook is `out/NAME` (the report's name: its file name by default), written
    when `keep`; the recorded runs the replay compares with go beside it. `on_step` hears
    of each cell that ends (progress)."""
    import json

    from nbworker.export import ipynb
    from nbworker.replay import CELL_MIMETYPE, REPLAY_MIMETYPE, expected_runs
    from nbworker.testing import execute

    report = NotebookReport(str(path), cases, name=name)
    kernel_name = str(
        options.kernel_name
        or stored.get("metadata", {}).get("kernelspec", {}).get("name")
        or "python3"
    )
    kernel = execute.Kernel(kernel_name, str(path.parent.resolve()))
    try:
        try:
            kernel.start()  # it boots while the notebook is prepared
        except Exception as err:  # no such kernel, a kernelspec that cannot be launched
            report.error = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
            return report
        problem = ipynb.schema_problem(stored)  # while the kernel boots
        if problem is not None:
            report.error = f"{NOT_VALID}: {problem}"[:500]
            return report
        work = _work_copy(stored)
        expected = [vars(item) for item in expected_runs(stored)]
        executed_path = out / report.name
        executed_path.parent.mkdir(parents=True, exist_ok=True)
        # beside the executed notebook, so that the report can be run again
        expected_path = executed_path.with_suffix(".replay.json").resolve()
        expected_path.write_text(json.dumps(expected), encoding="utf-8")
        work["cells"].insert(0, _replay_cell(expected_path, options.rtol))
        if options.parameters:
            _with_parameters(work, options.parameters, kernel_name)
        try:
            kernel = execute.ready(kernel, attempts=KERNEL_START_ATTEMPTS, notes=report.notes)
        except Exception as err:  # died at every start, or never answered
            report.error = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
            return report
        counter = (
            None if on_step is None else _Counter(report.name, work["cells"], len(cases), on_step)
        )
        run = kernel.run(
            work["cells"],
            timeout=options.timeout,
            allowed=[MISMATCH],  # a mismatch fails its cell, not the run
            on_error=lambda index, content: _note_cell_error(work["cells"][index], content),
            on_cell=None if counter is None else counter.ended,
            batch=execute.Batch(_one_case, _run_cases, CELL_MIMETYPE),
        )
        kernel.stop()  # it exits while the report is written
        if keep:
            text = ipynb.dumps(work)
            executed_path.write_text(text if text.endswith("\n") else text + "\n", "utf-8")
            report.executed = str(executed_path)
    finally:
        kernel.close()
    index_of = {cell.get("id"): index for index, cell in enumerate(stored["cells"])}
    by_key = {(case.cell, case.index): case for case in cases}
    for cell in work["cells"]:
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
            case.notebook_result = Result(outcome["result"])
            case.differences = list(outcome["differences"])
            case.notebook_ms = outcome.get("duration_ms")
    report.error = _notebook_error(work["cells"], run, index_of)
    return report
