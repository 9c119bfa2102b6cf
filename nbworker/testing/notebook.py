"""The first replay of `nbworker test`: the notebook re-run in a fresh kernel.

papermill runs a copy of the notebook top to bottom (outputs cleared) with a first cell that
turns on replay (`nbworker.replay`), so each `%rp_test` compares its new run with the one
recorded in its place and shows the outcome under `REPLAY_MIMETYPE`. One kernel per
notebook, whatever the number of cases. The executed notebook is the report: read back, it
gives each case's result and what, if anything, stopped the run outside a test.

papermill and nbformat are imported where they are used: the package is imported by every
pytest run (the plugin), with or without --nbworker.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from nbworker.errors import ReplayMismatch
from nbworker.testing.model import Case, NotebookReport, Options, Result

__all__ = ["KERNEL_START_ATTEMPTS", "REPLAY_ENGINE", "REPLAY_TAG", "STOPPED_KEY", "replay_notebook"]

REPLAY_TAG = "nbworker-replay"  # the cell `nbworker test` puts first
REPLAY_ENGINE = "nbworker-replay"  # papermill engine
STOPPED_KEY = "nbworker"  # in an executed cell's metadata: why it stopped the run
MISMATCH = ReplayMismatch.__name__  # its `ename` in the kernel's reply: fails its cell only


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
        def execute_managed_notebook(
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


def _note_cell_error(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
    """nbclient's `on_cell_error` hook: keep in the cell what the kernel's reply says.
    A `UsageError` (as `%rp_test` raises for misuse) fails the cell and stops the run, but
    IPython shows it on stderr, not as an `error` output: the reply is all that names it."""
    content = execute_reply.get("content", {})
    if content.get("ename") != MISMATCH:  # a mismatch fails its cell, not the run
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
        if error is None or error[0] == MISMATCH:
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


def _died_while_starting(err: BaseException) -> bool:
    """Whether papermill's run failed because the kernel died before its first reply.

    No library gives this a type: jupyter_client's `KernelClient.wait_for_ready` raises a
    bare `RuntimeError("Kernel died before replying to kernel_info")` (jupyter_client 8.x,
    `client.py`; 8.10.0 here), which nbclient 0.11 (`async_start_new_kernel_client`) and
    papermill 2.x pass on as it is. The same RuntimeError class says "Kernel didn't respond
    in N seconds" for a start that timed out, which is not started again. So the message is
    read, here only; the test of a kernel that dies while starting notices if it changes.
    """
    return isinstance(err, RuntimeError) and "before replying to kernel_info" in str(err)


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
                allow_error_names=[MISMATCH],  # a mismatch fails its cell, not the run
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
            if _died_while_starting(err) and attempt < KERNEL_START_ATTEMPTS:
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
            case.notebook_result = Result(outcome["result"])
            case.differences = list(outcome["differences"])
            case.notebook_ms = outcome.get("duration_ms")
    report.error = _notebook_error(executed, index_of, failure)
    return report
