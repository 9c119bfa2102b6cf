"""Run the notebook copy in a fresh kernel: its runs must still give what tests/cases.json says.

The notebook in tests/ is where the handler was written and tested. Running it again, top to
bottom with papermill, checks that the `%rp_test` runs of `handler` it records still give
what cases.json says: the same status, output, stream and error, in the same order. It needs
papermill, nbformat and nbworker (tests/requirements.txt) and is skipped without them.
WORKER_TEST_TIMEOUT (seconds, default 600) bounds each cell.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
SPEC = json.loads((TESTS / "cases.json").read_text(encoding="utf-8"))
CASES = SPEC["cases"]
NOTEBOOK = TESTS / SPEC["notebook"]
RECORD = "application/vnd.nbworker.run+json"  # where nbworker records each %rp_test run
TIMEOUT = float(os.environ.get("WORKER_TEST_TIMEOUT", "600"))
REL_TOL = float(os.environ.get("WORKER_TEST_REL_TOL", "1e-6"))
ABS_TOL = 1e-9  # for floats near zero


def case_id(case: dict[str, Any]) -> str:
    """The case's name, and the notebook cell that recorded it when known."""
    cell = case.get("cell")
    return case["name"] if cell is None else f"{case['name']} (cell {cell})"


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}...{text[-30:]} ({len(text)} chars)"


def plain(value: Any) -> Any:
    """A value as the notebook recorded it: JSON, NaN and infinities as null, tuples as
    lists, anything else JSON has no type for as its repr."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return repr(value)


def assert_same(actual: Any, recorded: Any, where: str) -> None:
    """Equal as JSON values, floats within REL_TOL; the message names the first difference."""
    if isinstance(actual, bool) or isinstance(recorded, bool):
        assert actual is recorded, f"{where}: got {short(actual)}, recorded {short(recorded)}"
    elif isinstance(actual, (int, float)) and isinstance(recorded, (int, float)):
        if isinstance(actual, int) and isinstance(recorded, int):
            assert actual == recorded, f"{where}: got {actual}, recorded {recorded}"
        else:
            assert math.isclose(actual, recorded, rel_tol=REL_TOL, abs_tol=ABS_TOL), (
                f"{where}: got {actual!r}, recorded {recorded!r} (rel_tol {REL_TOL:g})"
            )
    elif isinstance(actual, dict) and isinstance(recorded, dict):
        missing = [key for key in recorded if key not in actual]
        extra = [key for key in actual if key not in recorded]
        assert not missing and not extra, (
            f"{where}: keys differ: missing {missing}, unexpected {extra}; "
            f"got {short(actual)}, recorded {short(recorded)}"
        )
        for key, item in recorded.items():
            assert_same(actual[key], item, f"{where}[{key!r}]")
    elif isinstance(actual, list) and isinstance(recorded, list):
        assert len(actual) == len(recorded), (
            f"{where}: {len(actual)} items, recorded {len(recorded)}; "
            f"got {short(actual)}, recorded {short(recorded)}"
        )
        for index, (item, expected) in enumerate(zip(actual, recorded, strict=True)):
            assert_same(item, expected, f"{where}[{index}]")
    else:
        assert actual == recorded, f"{where}: got {short(actual)}, recorded {short(recorded)}"


LEADING_FIELDS = re.compile(  # the start of RunPod's error JSON
    r'\{"error_type": ("(?:[^"\\]|\\.)*"), "error_message": ("(?:[^"\\]|\\.)*")'
)


def exception_fields(error: Any) -> dict[str, str] | None:
    """error_type and error_message of RunPod's error JSON for a handler that raised, else
    None. Read from the start of the text too, should a log have cut the rest."""
    if not isinstance(error, str) or not error.startswith("{"):
        return None
    try:
        fields = json.loads(error)
    except ValueError:
        found = LEADING_FIELDS.match(error)
        if found is None:
            return None
        fields = {"error_type": json.loads(found[1]), "error_message": json.loads(found[2])}
    if not isinstance(fields, dict) or not {"error_type", "error_message"} <= fields.keys():
        return None
    return {"error_type": fields["error_type"], "error_message": fields["error_message"]}


def streamed_exception(error: Any) -> str | None:
    """The message of a generator handler that raised (RunPod reports
    `handler: <message> \\ntraceback: ...`), else None."""
    if isinstance(error, str) and error.startswith("handler: ") and " \ntraceback: " in error:
        return error[len("handler: ") : error.index(" \ntraceback: ")]
    return None


def check_error(actual: Any, recorded: Any) -> None:
    """The same failure: for an exception the same type and message, else the same error."""
    expected = exception_fields(recorded)
    if expected is not None:
        got = exception_fields(actual)
        assert got is not None, (
            f"error: expected the handler to raise {expected['error_type']} "
            f"{expected['error_message']!r}, got the error {short(actual)}"
        )
        assert got == expected, f"error: got {got}, recorded {expected}"
        return
    message = streamed_exception(recorded)
    if message is not None:
        got = streamed_exception(actual)
        assert got == message, f"error: got {short(actual)}, recorded a raise of {message!r}"
        return
    assert_same(plain(actual), recorded, "error")


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
    assert index < len(runs), f"the notebook recorded {len(runs)} runs of {SPEC['handler']}"
    run = runs[index]
    assert run["status"] == case["status"], (
        f"status: got {run['status']}, error {short(run['error'])}"
    )
    assert_same(run["output"], case["output"], "output")
    assert_same(run["stream"], case["stream"], "stream")
    if case["status"] == "FAILED":
        check_error(run["error"], case["error"])
    assert run["refresh_worker"] == case["refresh_worker"], "refresh_worker"
