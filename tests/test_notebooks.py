"""The example notebooks run top to bottom in a fresh kernel (papermill), as the demo does."""

from __future__ import annotations

from pathlib import Path

import papermill
import pytest
from helpers import NOTEBOOKS
from helpers import records_of as records


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quickstart_runs_headless_and_records_every_run(tmp_path: Path) -> None:
    out = tmp_path / "quickstart.ipynb"
    papermill.execute_notebook(
        NOTEBOOKS / "quickstart.ipynb", out, kernel_name="python3", cwd=tmp_path, progress_bar=False
    )
    runs = records(out)
    assert [(run["handler"], run["status"]) for run in runs] == [
        ("handler", "COMPLETED"),
        ("handler", "FAILED"),
        ("tokens", "COMPLETED"),
        ("scores", "COMPLETED"),
        ("scores", "FAILED"),
        ("stuck", "TIMED_OUT"),
        ("handler", "COMPLETED"),
    ]
    assert runs[0]["output"] == {"label": "positive", "score": 3.5, "words": 6}
    assert runs[1]["error"] == (
        "Unexpected input. txt is not a valid input option.; text is a required input."
    )
    assert runs[2]["stream"] == runs[2]["output"] and len(runs[2]["stream"]) == 5
    assert runs[3]["output"] == [1.0, -3.0]
    assert "texts must be a list of strings" in runs[4]["error"]
