"""Run the notebook copy in a fresh kernel: its runs must still give what tests/cases.json says.

The notebook in tests/ is where the handler was written and tested. Running it again, top to
bottom with papermill, checks that the `%rp_test` runs of the handler it records still give
what cases.json says: the same status, output, stream and error, in the same order. It needs
papermill, nbformat and nbworker (tests/requirements.txt) and is skipped without them.
WORKER_TEST_TIMEOUT (seconds, default 600) bounds each cell.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from compare import assert_same, case_id, check_error, ignored, short

TESTS = Path(__file__).resolve().parent
SPEC = json.loads((TESTS / "cases.json").read_text(encoding="utf-8"))
# A run made with the panel (%rp_panel) is a case test_handler.py replays; a fresh run of
# the notebook clicks no panel, so this test compares the %rp_test runs alone.
CASES = [case for case in SPEC["cases"] if case.get("origin") != "panel"]
NOTEBOOK = TESTS / SPEC["notebook"]
RECORD = "application/vnd.nbworker.run+json"  # where nbworker records each %rp_test run
TIMEOUT = float(os.environ.get("WORKER_TEST_TIMEOUT", "600"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The COMPLETED and FAILED runs of the handler recorded by a fresh run of the notebook."""
    papermill = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbworker")  # the notebook's kernel runs this interpreter
    if not NOTEBOOK.is_file():
        pytest.skip(f"the notebook copy tests/{NOTEBOOK.name} is missing")
    executed = tmp_path_factory.mktemp("notebook") / NOTEBOOK.name
    kernels = Path(sys.prefix, "share", "jupyter")
    with pytest.MonkeyPatch.context() as patch:
        if kernels.is_dir():  # the python3 kernel of this environment, which has nbworker
            paths = [str(kernels), *filter(None, [os.environ.get("JUPYTER_PATH")])]
            patch.setenv("JUPYTER_PATH", os.pathsep.join(paths))
        papermill.execute_notebook(
            str(NOTEBOOK),
            str(executed),
            kernel_name="python3",
            cwd=str(TESTS),
            progress_bar=False,
            execution_timeout=TIMEOUT,
        )
    notebook = nbformat.read(str(executed), as_version=4)
    return [
        record
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if (record := output.get("data", {}).get(RECORD))
        and record.get("handler") == SPEC["handler"]
        and record.get("status") in ("COMPLETED", "FAILED")
    ]


def test_the_notebook_records_a_run_per_case(runs: list[dict[str, Any]]) -> None:
    got = [run["status"] for run in runs]
    assert got == [case["status"] for case in CASES], f"runs of {SPEC['handler']}: {got}"


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[case_id(c) for c in CASES])
def test_case_still_holds(runs: list[dict[str, Any]], index: int, case: dict[str, Any]) -> None:
    if not case.get("compare", True):
        pytest.skip("the notebook runs this case with %rp_test --no-compare")
    assert index < len(runs), f"the notebook recorded {len(runs)} runs of {SPEC['handler']}"
    run = runs[index]
    assert run["status"] == case["status"], (
        f"status: got {run['status']}, error {short(run['error'])}"
    )
    assert_same(run["output"], case["output"], "output", ignored(case))
    assert_same(run["stream"], case["stream"], "stream", ignored(case))
    assert run.get("stream_total") == case.get("stream_total"), "stream: chunk count"
    if case["status"] == "FAILED":
        check_error(run["error"], case["error"])
    assert run["refresh_worker"] == case["refresh_worker"], "refresh_worker"
