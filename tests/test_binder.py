"""binder/ is what mybinder.org needs to open notebooks/ with nbworker installed.

Checked three ways: the files themselves (fast); the Dockerfile that repo2docker generates
with `--no-build` (no Docker daemon needed); and `pip install -r binder/requirements.txt`
into a fresh venv, from the repository root as repo2docker runs it, after which the example
notebooks replay there with `nbworker test`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

import nbworker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
BINDER = ROOT / "binder"
# What a fresh clone would not have, or what pip must not see (a stale build/ or egg-info).
NOT_IN_A_CLONE = (
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",  # written by other tests meanwhile (pytest-xdist): not safe to copy
    ".venv-rp2",
)
NO_TORCH = re.compile(r"^(torch|torchvision|torchaudio|nvidia-.*|triton)$", re.IGNORECASE)


def requirement_lines() -> list[str]:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """The environment without this test run's venv and Jupyter paths."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH")
    }
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")  # the fresh venv's kernel
    return env


def test_requirements_install_the_repository_and_no_torch() -> None:
    lines = requirement_lines()
    assert "." in lines  # the repository itself, resolved from the root where pip runs
    names = [re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0] for line in lines]
    assert not [n for n in names if NO_TORCH.match(n)]
    assert not [line for line in lines if "index-url" in line or "find-links" in line]
    # nbworker's own dependencies do not pull torch either (it is a dev extra only)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if "torch" in d.lower()]


def test_runtime_pins_a_python_that_nbworker_supports() -> None:
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert runtime == "python-3.11"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "3.11" in SpecifierSet(project["requires-python"])


def repo2docker_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """jupyter-repo2docker from this venv (the dev extra) or else from a throwaway venv."""
    found = shutil.which("jupyter-repo2docker", path=str(Path(sys.executable).parent))
    if found:
        return [found]
    venv = tmp_path_factory.mktemp("r2d") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "jupyter-repo2docker"],
        check=True,
        capture_output=True,
        timeout=300,
        env=clean_env(),
    )
    return [str(venv / "bin" / "jupyter-repo2docker")]


@pytest.mark.slow
def test_repo2docker_dockerfile_installs_binder_requirements(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # --no-build renders the Dockerfile without talking to a Docker daemon.
    result = subprocess.run(
        [
            *repo2docker_command(tmp_path_factory),
            "--no-build",
            "--no-run",
            "--user-id",
            "1000",
            "--user-name",
            "jovyan",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "Building conda environment for python=3.11" in result.stderr
    dockerfile = result.stdout
    # the runtime.txt pin was honoured: the conda lock file for Python 3.11 (its name is
    # escaped in the Dockerfile, `.` as `-2e` and `-` as `-2d`)
    assert re.search(r"environment(\.|-2e)py(-|-2d)3(\.|-2e)11(-|-2d)linux", dockerfile)
    install = 'pip install --no-cache-dir -r "binder/requirements.txt"'
    assert install in dockerfile
    # pip runs in ${REPO_DIR}, the repository root, after the whole repository is copied in:
    # so the `.` line in binder/requirements.txt is the repository.
    workdir = dockerfile.index("WORKDIR ${REPO_DIR}")
    copied = dockerfile.index("COPY --chown=1000:1000 src/ ${REPO_DIR}/")
    assert workdir < copied < dockerfile.index(install)
    assert "torch" not in dockerfile


@pytest.fixture(scope="module")
def binder_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the repository as a clone has it, and a fresh venv with
    `pip install -r binder/requirements.txt` run from the copy's root."""
    base = tmp_path_factory.mktemp("binder")
    repo = base / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-r", "binder/requirements.txt"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(venv),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo, venv


@pytest.mark.slow
def test_binder_requirements_install_nbworker_without_torch(
    binder_venv: tuple[Path, Path],
) -> None:
    repo, venv = binder_venv
    python = str(venv / "bin" / "python")
    env = clean_env(venv)
    version = subprocess.run(
        [python, "-c", "import nbworker; print(nbworker.__version__)"],
        cwd=repo.parent,  # not the copy's root, so the installed package is imported
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout.strip()
    assert version == nbworker.__version__

    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"nbworker", "ipykernel", "ipywidgets", "numpy", "pytest"} <= installed
    assert not [name for name in installed if NO_TORCH.match(name)]

    kernels = subprocess.run(
        [str(venv / "bin" / "jupyter"), "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout
    spec = json.loads(kernels)["kernelspecs"]["python3"]
    assert Path(spec["resource_dir"]).is_relative_to(venv)

    magics = subprocess.run(
        [
            python,
            "-c",
            "from IPython.core.interactiveshell import InteractiveShell\n"
            "shell = InteractiveShell.instance()\n"
            "shell.run_line_magic('load_ext', 'nbworker')\n"
            "m = shell.magics_manager.magics\n"
            "print(sorted(set(m['cell']) & {'model', 'handler'}), 'rp_test' in m['line'])\n",
        ],
        cwd=repo.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert magics.returncode == 0, magics.stderr
    assert magics.stdout.strip() == "['handler', 'model'] True"


@pytest.mark.slow
def test_the_notebooks_replay_with_only_binder_requirements(
    binder_venv: tuple[Path, Path],
) -> None:
    repo, venv = binder_venv
    # embeddings.ipynb needs PyTorch and sentence-transformers (the `model` extra), which
    # binder's image leaves out; tests/test_real_model.py replays it
    notebooks = sorted(
        str(p.relative_to(repo))
        for p in (repo / "notebooks").glob("*.ipynb")
        if p.name != "embeddings.ipynb"
    )
    assert notebooks
    result = subprocess.run(
        [str(venv / "bin" / "nbworker"), "test", *notebooks],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=280,
        env=clean_env(venv),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " 0 failed, 0 notebook error(s)" in result.stdout + result.stderr
