"""The panel's runs in the notebook's records: kept in a display of the `%rp_panel` cell
that each run updates by its id, read back by `recorded_runs`, shipped in the worker's copy
of the notebook and made test cases by `nbworker export`, as `%rp_test` runs are.

The last test is the whole path in a real kernel: the notebook is saved from the messages
the kernel sent, as a front end applies them (update_display_data by display_id)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import KERNELSPEC
from nbformat.v4 import new_code_cell, new_notebook, new_output
from shell import Shell

from nbworker.export import ExportError, build_worker
from nbworker.export.trimmed import records_text, trimmed_notebook
from nbworker.record import PANEL_MIMETYPE, RECORD_MIMETYPE, Run, recorded_runs

HANDLER = (
    "%%handler\n"
    "def handler(job):\n"
    "    if job['input'].get('n', 0) < 0:\n"
    "        raise ValueError('n must be >= 0')\n"
    "    return {'echo': job['input']}"
)


def record(n: int, *, origin: str | None = None) -> dict[str, Any]:
    run = Run("handler", {"id": "local", "input": {"n": n}}, "COMPLETED", output={"echo": n})
    return {**run.to_record(), **({"origin": origin} if origin else {})}


def panel_output(runs: Any) -> Any:
    return new_output("display_data", data={"text/plain": "nbworker panel", PANEL_MIMETYPE: runs})


def test_recorded_runs_reads_a_panels_runs_in_their_place() -> None:
    cell = new_code_cell("%rp_panel")
    first, second, third = record(1), record(2, origin="panel"), record(3, origin="panel")
    cell.outputs = [
        new_output("display_data", data={RECORD_MIMETYPE: first}),
        new_output("stream", name="stdout", text="hi\n"),
        panel_output({"runs": [second, third]}),
    ]
    assert recorded_runs(cell) == [first, second, third]
    cell.outputs = [panel_output([second])]  # no {"runs": [...]}: one record that is none
    assert recorded_runs(cell) == [[second]]


def test_export_refuses_a_panel_display_that_holds_no_runs(tmp_path: Path) -> None:
    notebook = new_notebook(cells=[new_code_cell(HANDLER), new_code_cell("%rp_panel")])
    notebook.cells[1].outputs = [panel_output(["not a record"])]
    with pytest.raises(ExportError, match=r"cell 1: run record 1 is a JSON list"):
        build_worker(notebook)


def shown(captured: list[Any]) -> list[Any]:
    """The outputs a cell keeps of what the shell displayed: each update replaces the data
    of the display with its id."""
    outputs: list[Any] = []
    by_id: dict[str, Any] = {}
    for each in captured:
        display_id = (each.transient or {}).get("display_id")
        if each.update:
            by_id[display_id]["data"] = each.data
            continue
        outputs.append(new_output("display_data", data=each.data))
        if display_id:
            by_id[display_id] = outputs[-1]
    return outputs


def panel_notebook(shell: Shell) -> tuple[Any, list[dict[str, Any]]]:
    """A notebook of a %%handler cell, a %rp_test cell and a %rp_panel cell whose panel ran
    two jobs, each cell holding the outputs the shell gave it (the panel's display updated
    as a front end updates it); and the panel's records."""
    cells = [HANDLER, '%rp_test {"input": {"n": 0}}', "%rp_panel"]
    ran = [shell.ok(source) for source in cells]
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell, result in zip(notebook.cells, ran, strict=True):
        cell.outputs = shown(result.captured.outputs)
    panel = ran[2].result
    try:
        updates = []
        for job in ('{"input": {"n": 1}}', '{"input": {"n": -1}}'):
            panel.job.value = job
            clicked = shell.ok(f"Out[{ran[2].execution_count}].run_button.click()")
            updates += [o for o in clicked.captured.outputs if o.update]
        assert len(updates) == 2
        # the panel's display is the cell's second output: the update replaces its data
        notebook.cells[2].outputs[1]["data"] = updates[-1].data
        return notebook, list(panel.kept)
    finally:
        panel.close()


def test_export_makes_test_cases_of_the_panels_runs(shell: Shell) -> None:
    notebook, kept = panel_notebook(shell)
    assert [run["status"] for run in kept] == ["COMPLETED", "FAILED"]
    assert [run["origin"] for run in kept] == ["panel", "panel"]
    report = build_worker(notebook, notebook_name="panel.ipynb")
    cases = json.loads(report.files["tests/cases.json"])["cases"]
    assert [(c["name"], c["cell"], c["job"]["input"], c["status"]) for c in cases] == [
        ("case-1", 1, {"n": 0}, "COMPLETED"),  # %rp_test's
        ("case-2", 2, {"n": 1}, "COMPLETED"),  # the panel's, in the order they ran
        ("case-3", 2, {"n": -1}, "FAILED"),
    ]
    assert cases[1]["output"] == {"echo": {"n": 1}} and "n must be >= 0" in str(cases[2]["error"])
    hub = json.loads(report.files[".runpod/tests.json"])["tests"]
    assert [test["input"] for test in hub] == [{"n": 0}, {"n": 1}]  # COMPLETED runs only
    # the worker's copy of the notebook keeps the panel's runs, and nothing else it showed
    copy = json.loads(report.files["tests/panel.ipynb"])
    (kept_output,) = copy["cells"][2]["outputs"]
    assert kept_output["data"] == {PANEL_MIMETYPE: {"runs": kept}}
    assert recorded_runs(copy["cells"][2]) == kept


def test_a_secret_in_a_panel_run_stops_the_export(shell: Shell) -> None:
    notebook, kept = panel_notebook(shell)
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    kept[0]["job"]["input"]["token"] = token
    notebook.cells[2].outputs[1]["data"][PANEL_MIMETYPE] = {"runs": kept}
    assert any(token in text for _, _, text in records_text(notebook))
    with pytest.raises(ExportError, match="cell 2") as raised:
        build_worker(notebook)
    assert token not in str(raised.value)
    assert trimmed_notebook(notebook)["cells"][2]["outputs"][0]["data"][PANEL_MIMETYPE]


# ------------------------------------------------------------------ in a real kernel


def saved_outputs(executions: list[Any]) -> list[list[dict[str, Any]]]:
    """Each cell's outputs as a front end saves them from the kernel's messages: outputs in
    the order they came, an update_display_data (from whichever request, a widget's click
    too) replacing the data of every output with its display_id, in any cell."""
    cells: list[list[dict[str, Any]]] = []
    by_id: dict[str, list[dict[str, Any]]] = {}
    for execution in executions:
        outputs: list[dict[str, Any]] = []
        cells.append(outputs)
        for message in execution.messages:
            content = message.content
            display_id = content.get("transient", {}).get("display_id")
            if message.msg_type == "update_display_data":
                for output in by_id.get(display_id, []):
                    output["data"], output["metadata"] = content["data"], content["metadata"]
                continue
            if message.msg_type == "stream":
                output = new_output("stream", name=content["name"], text=content["text"])
            elif message.msg_type == "error":
                output = new_output(
                    "error", **{k: content[k] for k in ("ename", "evalue", "traceback")}
                )
            else:
                fields = {"data": content["data"], "metadata": content["metadata"]}
                if message.msg_type == "execute_result":
                    fields["execution_count"] = content["execution_count"]
                output = new_output(message.msg_type, **fields)
            outputs.append(output)
            if display_id:
                by_id.setdefault(display_id, []).append(output)
    return cells


@pytest.mark.slow
def test_a_panel_run_in_a_kernel_is_saved_and_exported(tmp_path: Path) -> None:
    from kernel_client import Kernel

    sources = [
        "%load_ext nbworker",
        HANDLER,
        "%rp_panel",
        # what the Run button does, from a later cell
        'panel = _\npanel.job.value = \'{"input": {"text": "hi"}}\'\npanel.run().status',
    ]
    kernel = Kernel(tmp_path, extension=False)
    try:
        executions = [kernel.ok(source) for source in sources]
    finally:
        kernel.shutdown()
    assert executions[3].of_type("update_display_data"), executions[3].describe()
    notebook = new_notebook(cells=[new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell, outputs in zip(notebook.cells, saved_outputs(executions), strict=True):
        cell.outputs = outputs
    nbformat.validate(notebook)
    path = tmp_path / "panel.ipynb"
    nbformat.write(notebook, str(path))

    saved = nbformat.read(str(path), as_version=4)
    widget, kept = saved.cells[2].outputs
    assert widget.data["text/plain"].startswith("nbworker panel: handler `handler`")
    assert "<div" in widget.data["text/html"]
    assert "1 run kept in this notebook" in kept.data["text/plain"]
    (run,) = recorded_runs(saved.cells[2])
    assert run["origin"] == "panel" and run["output"] == {"echo": {"text": "hi"}}

    done = subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "export", str(path), "-o", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    worker = tmp_path / "w"
    (case,) = json.loads((worker / "tests" / "cases.json").read_text())["cases"]
    assert (case["cell"], case["job"], case["output"]) == (
        2,
        {"input": {"text": "hi"}},
        {"echo": {"text": "hi"}},
    )
    hub = json.loads((worker / ".runpod" / "tests.json").read_text())
    assert [test["input"] for test in hub["tests"]] == [{"text": "hi"}]
    assert json.loads((worker / "test_input.json").read_text()) == {"input": {"text": "hi"}}
