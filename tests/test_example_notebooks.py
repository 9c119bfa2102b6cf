"""The committed example notebooks carry recorded %rp_test runs, and `nbworker test` replays
every one of them, in a fresh kernel and against the exported worker (as CI does).
embeddings.ipynb, the one with a real model, is replayed by test_real_model.py."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from helpers import ROOT
from helpers import records_of as records

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Needs the `model` extra, and each of its worker's processes loads the model: replayed by
# test_real_model.py, which skips it where the extra is not installed.
REAL_MODEL = "embeddings.ipynb"
TOY_MODELS = [path for path in NOTEBOOKS if path.name != REAL_MODEL]


def test_the_examples_are_there() -> None:
    names = {path.name for path in NOTEBOOKS}
    toys = {"quickstart.ipynb", "streaming.ipynb", "patterns.ipynb", "export.ipynb"}
    assert {*toys, REAL_MODEL} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_notebook_is_recorded(path: Path) -> None:
    """Recorded by scripts/record_notebooks.sh: at least two runs, and no cell that failed."""
    assert len(records(path)) >= 2, f"{path.name}: run scripts/record_notebooks.sh"
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].source.startswith("#"), "a title first"
    assert notebook.cells[1].source.strip() == "%load_ext nbworker"
    errors = [
        output.get("ename")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nbworker_test_replays_every_example(tmp_path: Path) -> None:
    """Every recorded case, in the notebook and (for the exported handler) in the worker;
    the notebooks of toy models only."""
    env = dict(os.environ)
    jupyter = ROOT / ".venv" / "share" / "jupyter"
    if jupyter.is_dir():
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(jupyter), env.get("JUPYTER_PATH")]))
    junit = tmp_path / "results.xml"
    done = subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "test",
         *(str(path.relative_to(ROOT)) for path in TOY_MODELS),
         "--junit-xml", str(junit), "--output-dir", str(tmp_path / "replay")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    cases = list(ET.parse(junit).iter("testcase"))
    for path in TOY_MODELS:
        recorded = len(records(path))
        assert recorded >= 2
        assert f"{path.name}: {recorded}/{recorded} cases passed" in done.stdout + done.stderr
    assert len(cases) >= sum(len(records(path)) for path in TOY_MODELS)
