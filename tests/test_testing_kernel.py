"""`nbworker test`'s own notebook runner (`nbworker.testing.execute`) in a real kernel: the
outputs a frontend would show, execution counts in order, a failing cell stopping the run
(unless its error is allowed or the cell is tagged `raises-exception`), a timeout and a dead
kernel named; and a whole replay without nbformat, papermill or jsonschema imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbworker.record import RECORD_MIMETYPE
from nbworker.replay import CELL_MIMETYPE
from nbworker.testing import execute
from nbworker.testing.notebook import _run_cases

pytestmark = pytest.mark.slow  # real kernels


def cell(source: str, *tags: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex[:8],
        "cell_type": "code",
        "metadata": {"tags": list(tags)} if tags else {},
        "execution_count": None,
        "source": source,
        "outputs": [],
    }


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[execute.Kernel]:
    started = execute.Kernel("python3", str(tmp_path))
    started.start()
    ready = execute.ready(started, attempts=1, notes=[])
    try:
        yield ready
    finally:
        ready.stop()
        ready.close()


def test_outputs_are_what_a_frontend_shows_and_counts_run_in_order(
    kernel: execute.Kernel,
) -> None:
    cells = [
        cell(
            "import sys\nprint('a')\nprint('b', flush=True)\n"
            "print('e', file=sys.stderr, flush=True)\nprint('c')"
        ),
        {"id": "md", "cell_type": "markdown", "metadata": {}, "source": "# skipped"},
        cell("   "),  # empty: not sent, as nbclient does
        cell(
            "from IPython.display import display, clear_output\n"
            "display('first', display_id='d')\n"
            "clear_output(wait=True)\n"
            "print('after clear')\n"
            "41 + 1"
        ),
        cell(
            "from IPython.display import update_display\nupdate_display('second', display_id='d')"
        ),
    ]
    run = kernel.run(cells)
    assert run.stopped is None and run.failure is None and run.ran == {0, 3, 4}
    assert cells[0]["outputs"] == [
        {"output_type": "stream", "name": "stdout", "text": "a\nb\n"},
        {"output_type": "stream", "name": "stderr", "text": "e\n"},
        {"output_type": "stream", "name": "stdout", "text": "c\n"},
    ]
    assert [c["execution_count"] for c in cells if c["cell_type"] == "code"] == [1, None, 2, 3]
    kinds = [output["output_type"] for output in cells[3]["outputs"]]
    assert kinds == ["stream", "execute_result"]  # the display was cleared by the print
    assert cells[3]["outputs"][1]["execution_count"] == 2
    assert cells[3]["outputs"][1]["data"]["text/plain"] == "42"
    assert cells[4]["outputs"] == []
    timing = cells[0]["metadata"]["execution"]
    assert set(timing) == {
        "iopub.status.busy",
        "iopub.execute_input",
        "iopub.status.idle",
        "shell.execute_reply",
    }


def test_an_update_reaches_the_display_of_an_earlier_cell(kernel: execute.Kernel) -> None:
    cells = [
        cell("from IPython.display import display\ndisplay('first', display_id='d')"),
        cell(
            "from IPython.display import update_display\nupdate_display('second', display_id='d')"
        ),
    ]
    kernel.run(cells)
    assert cells[0]["outputs"][0]["data"]["text/plain"] == "'second'"


def test_a_failing_cell_stops_the_run_and_says_why(kernel: execute.Kernel) -> None:
    seen: list[tuple[int, str]] = []
    cells = [cell("x = 1"), cell("raise ValueError('boom')"), cell("y = 2")]
    run = kernel.run(cells, on_error=lambda index, reply: seen.append((index, reply["ename"])))
    assert (run.stopped, run.error, run.failure) == (1, ("ValueError", "boom"), None)
    assert run.ran == {0, 1} and seen == [(1, "ValueError")]
    assert cells[1]["outputs"][0]["output_type"] == "error"
    assert cells[1]["outputs"][0]["ename"] == "ValueError"
    assert cells[2]["outputs"] == [] and cells[2]["execution_count"] is None


def test_allowed_errors_and_raises_exception_cells_do_not_stop_it(
    kernel: execute.Kernel,
) -> None:
    cells = [
        cell("raise KeyError('allowed')"),
        cell("raise ValueError('tagged')", "raises-exception"),
        cell("%this_magic_does_not_exist"),  # a UsageError: in the reply, not an error output
        cell("never = True"),
    ]
    run = kernel.run(cells, allowed=["KeyError"])
    assert run.stopped == 2 and run.error is not None and run.error[0] == "UsageError"
    assert [c["outputs"][0]["output_type"] for c in cells[:2]] == ["error", "error"]
    assert all(output["output_type"] != "error" for output in cells[2]["outputs"])
    assert cells[3]["execution_count"] is None


def test_a_cell_past_the_timeout_stops_the_run(kernel: execute.Kernel) -> None:
    started = time.monotonic()
    run = kernel.run([cell("import time\ntime.sleep(60)"), cell("x = 1")], timeout=2)
    assert run.stopped == 0 and run.error is None and time.monotonic() - started < 30
    assert run.failure == (
        "CellTimeoutError: A cell timed out while it was being executed, after 2 seconds."
    )


def test_a_kernel_that_dies_is_named(kernel: execute.Kernel) -> None:
    run = kernel.run([cell("x = 1"), cell("import os\nos._exit(1)"), cell("y = 2")])
    assert (run.stopped, run.failure) == (1, "DeadKernelError: Kernel died")


def test_a_kernel_that_never_starts_is_a_runtime_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "kernels" / "broken"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-c", "import sys; sys.exit(3)", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "broken"}))
    monkeypatch.setenv(
        "JUPYTER_PATH",
        os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("JUPYTER_PATH")])]),
    )
    notes: list[str] = []
    broken = execute.Kernel("broken", str(tmp_path))
    broken.start()
    with pytest.raises(RuntimeError, match="Kernel died before replying to kernel_info"):
        execute.ready(broken, attempts=2, notes=notes)
    assert len(notes) == 1 and notes[0].startswith("the kernel died while starting")


# ------------------------------------------------------------------ batches


def printing(cell: dict[str, Any]) -> bool:
    return str(cell["source"]).startswith(("print", "raise", "import time", "import os"))


BATCH = execute.Batch(printing, _run_cases, CELL_MIMETYPE)


def without_timing(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in cell.items() if key not in ("id", "metadata")}
        for cell in cells
    ]


def test_a_batch_gives_each_cell_what_it_would_get_alone(tmp_path: Path) -> None:
    sources = [
        "x = 1",
        "print('a', x)",
        "import sys\nprint('to stderr', file=sys.stderr)",
        "print('c')\n42",
        "raise KeyError('allowed')",
        "print('after')",
        "x = 2",
        "print(x)",
    ]
    results = []
    for batch in (None, BATCH):
        kernel = execute.Kernel("python3", str(tmp_path))
        kernel.start()
        kernel = execute.ready(kernel, attempts=1, notes=[])
        cells = [cell(source) for source in sources]
        try:
            run = kernel.run(cells, allowed=["KeyError"], batch=batch)
        finally:
            kernel.stop()
            kernel.close()
        assert run.stopped is None and run.failure is None
        results.append(without_timing(cells))
    alone, batched = results
    assert batched == alone
    assert [c["execution_count"] for c in batched] == list(range(1, len(sources) + 1))
    assert batched[1]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "a 1\n"}]


def test_a_failing_cell_stops_a_batch_and_is_named(kernel: execute.Kernel) -> None:
    cells = [cell("print(1)"), cell("raise ValueError('boom')"), cell("print(2)")]
    run = kernel.run(cells, batch=BATCH)
    assert (run.stopped, run.error, run.ran) == (1, ("ValueError", "boom"), {0, 1})
    assert cells[1]["outputs"][0]["ename"] == "ValueError"
    assert cells[2]["outputs"] == [] and cells[2]["execution_count"] is None


def test_a_cell_past_the_timeout_in_a_batch_is_named(kernel: execute.Kernel) -> None:
    cells = [cell("print(1)"), cell("import time\ntime.sleep(60)"), cell("print(2)")]
    run = kernel.run(cells, timeout=3, batch=BATCH)
    assert run.stopped == 1 and run.failure is not None
    assert run.failure.startswith("CellTimeoutError")
    assert cells[0]["outputs"][0]["text"] == "1\n"


def test_a_kernel_that_dies_in_a_batch_is_named_with_the_cell(kernel: execute.Kernel) -> None:
    cells = [cell("print(1)"), cell("import os\nos._exit(1)"), cell("print(2)")]
    run = kernel.run(cells, batch=BATCH)
    assert (run.stopped, run.failure, run.ran) == (1, "DeadKernelError: Kernel died", {0, 1})


def killed_after_starting_the_second(sources: list[str], allowed: list[str], ledger: str) -> str:
    """A batch whose kernel dies in its second cell before ZeroMQ sent any mark."""
    return (
        f"import os\nfd = os.open({ledger!r}, os.O_WRONLY)\n"
        "os.pwrite(fd, b'00000001', 0)\nos._exit(1)"
    )


def test_a_kernel_killed_before_its_marks_were_sent_is_named_by_the_ledger(
    kernel: execute.Kernel,
) -> None:
    lost = execute.Batch(printing, killed_after_starting_the_second, CELL_MIMETYPE)
    cells = [cell("print(1)"), cell("print(2)"), cell("print(3)")]
    run = kernel.run(cells, batch=lost)
    assert (run.stopped, run.failure, run.ran) == (1, "DeadKernelError: Kernel died", {0, 1})


def test_a_kernel_that_cannot_run_a_batch_gets_the_cells_one_by_one(
    kernel: execute.Kernel,
) -> None:
    old = execute.Batch(
        printing, lambda sources, allowed, ledger: "raise AttributeError('old')", "x/y"
    )
    cells = [cell("print(1)"), cell("print(2)")]
    run = kernel.run(cells, batch=old)
    assert run.stopped is None and run.ran == {0, 1}
    assert [c["outputs"][0]["text"] for c in cells] == ["1\n", "2\n"]


# ------------------------------------------------------------------ a whole replay

REPLAY_PROBE = """
import json, sys
from nbworker import testing
report = testing.test_notebook(sys.argv[1], testing.Options(worker=False))
print(json.dumps({
    "code": report.exit_code,
    "results": [str(case.notebook_result) for case in report.cases],
    "imported": [name for name in HEAVY if name in sys.modules],
}))
"""


def test_a_replay_imports_neither_nbformat_nor_papermill_nor_jsonschema(tmp_path: Path) -> None:
    record = {
        "handler": "handler",
        "job": {"id": "local_test", "input": {"x": 2}},
        "status": "COMPLETED",
        "output": {"y": 4},
        "error": None,
        "stream": None,
    }
    runs = cell('%rp_test {"input": {"x": 2}}')
    runs["outputs"] = [
        {"output_type": "display_data", "metadata": {}, "data": {RECORD_MIMETYPE: record}}
    ]
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            cell("%load_ext nbworker"),
            cell('%%handler\ndef handler(job):\n    return {"y": job["input"]["x"] * 2}'),
            runs,
        ],
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    heavy = ("nbformat", "papermill", "jsonschema", "nbclient", "rfc3987_syntax")
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {heavy!r}\n" + textwrap.dedent(REPLAY_PROBE), str(path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"code": 0, "results": ["passed"], "imported": []}


TCP_WARNING = "susceptible to eavesdropping"  # ipykernel's, at the start of a TCP kernel


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets: TCP on 127.0.0.1 elsewhere")
def test_a_kernel_talks_over_unix_sockets_in_a_private_folder(tmp_path: Path) -> None:
    """Not TCP (ipykernel warns of it unencrypted at every start), and not jupyter_client's
    default `kernel-ipc-N` files, relative to the kernel's folder (the notebook's)."""
    kernel = execute.Kernel("python3", str(tmp_path))
    kernel.start()
    try:
        assert kernel.manager.transport == "ipc"
        folder = Path(kernel.manager.ip).parent
        assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
        kernel = execute.ready(kernel, attempts=1, notes=[])
        cells = [cell("import os\nprint(os.getcwd())")]
        assert kernel.run(cells, timeout=60).stopped is None
        assert cells[0]["outputs"][0]["text"] == f"{tmp_path}\n"
        assert list(tmp_path.iterdir()) == []
    finally:
        kernel.stop()
        kernel.close()
    assert not folder.exists()


PAPERMILL = """
import sys

import nbformat
import papermill

notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
nbformat.write(notebook, "in.ipynb")
manager = {"nbworker": "nbworker.testing.execute.AsyncLocalKernelManager"}.get(sys.argv[1])
options = {} if manager is None else {"kernel_manager_class": manager}
papermill.execute_notebook("in.ipynb", "out.ipynb", kernel_name="python3", **options)
print(nbformat.read("out.ipynb", as_version=4).cells[0].outputs[0].text, end="")
"""


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets: TCP on 127.0.0.1 elsewhere")
def test_papermill_with_nbworkers_kernel_manager_starts_no_tcp_kernel(tmp_path: Path) -> None:
    """As scripts/demo.sh runs the quickstart notebook; papermill's default kernel manager
    (TCP) shows the warning, so its absence is the manager's doing."""
    for manager, warned in (("nbworker", False), ("default", True)):
        done = subprocess.run(
            [sys.executable, "-c", PAPERMILL, manager],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "42\n"
        assert (TCP_WARNING in done.stderr) is warned, done.stderr
