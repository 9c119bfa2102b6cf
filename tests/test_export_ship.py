"""What makes an exported folder a repository RunPod can build and test as it is:
`.runpod/hub.json` (valid against the Hub's documented fields, its env read from handler.py),
the GitHub workflow (checked against GitHub's schema, its commands run for real), the README,
the .gitignore, and `--git` (a real git: one commit, a clean status, never nested).

git runs with HOME and XDG_CONFIG_HOME in the test's own folder (its identity, or none) and
with GIT_* variables of the test set to point elsewhere, to prove they do not leak in."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

from nbworker import cli
from nbworker.export import (
    ExportError,
    build_worker,
    ci,
    environ,
    export_notebook,
    hub,
    readme,
    secrets,
)
from nbworker.export.testfiles import TEMPLATES
from nbworker.export.write import MANIFEST
from nbworker.record import RECORD_MIMETYPE

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
EXAMPLES = sorted(glob.glob(str(ROOT / "notebooks" / "*.ipynb"))) + sorted(
    glob.glob(str(DATA / "*.ipynb"))
)
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    return subprocess.run(
        ["git", *args], cwd=folder, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with a git identity; GIT_* variables that would break a leaking export."""
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / ".gitconfig").write_text("[user]\n\tname = Ada Worker\n\temail = ada@example.org\n")
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder / ".config"))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-a-repository"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Leaked Author")
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "leaked-index"))
    return folder


def notebook_with(cells: list[Any], name: str = "made.ipynb", **metadata: Any) -> Any:
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata.update(
        {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    notebook.metadata.update(metadata, nbworker_name=name)
    return notebook


HANDLER = '%%handler\ndef handler(job):\n    return {"n": job["input"]["n"]}'


# ------------------------------------------------------------------------- hub.json


# embeddings.ipynb imports torch to read its CUDA version (seconds): slow
@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=[pytest.mark.slow] if "embeddings" in p else [], id=Path(p).name)
        for p in EXAMPLES
    ],
)
def test_hub_json_of_every_example_is_valid_and_agrees_with_tests_json(path: str) -> None:
    files = build_worker(path).files
    document = json.loads(files[".runpod/hub.json"])
    assert hub.hub_problems(document) == []
    assert document["type"] == "serverless" and document["title"] and document["description"]
    tests = json.loads(files[".runpod/tests.json"])["config"]
    config = document["config"]
    if config["runsOn"] == "GPU":
        assert tests["allowedCudaVersions"] == config["allowedCudaVersions"]
        assert tests["gpuCount"] == config["gpuCount"] == 1
    else:
        assert tests == {"cpuFlavor": config["cpuFlavor"]}


@pytest.mark.slow
def test_the_embeddings_notebook_is_an_embedding_worker_on_a_gpu() -> None:
    files = build_worker(ROOT / "notebooks" / "embeddings.ipynb").files
    document = json.loads(files[".runpod/hub.json"])
    assert document["title"] == "A real model: sentence embeddings with all-MiniLM-L6-v2"
    assert document["description"].startswith("The other notebooks stand a few lines")
    assert "[" not in document["description"]  # the link is its text
    assert document["category"] == "embedding"
    config = document["config"]
    assert (config["runsOn"], config["gpuCount"], config["gpuIds"]) == ("GPU", 1, hub.GPU_POOLS)
    assert config["containerDiskInGb"] >= 20  # torch
    assert "cpuFlavor" not in config
    env = {entry["key"]: entry["input"] for entry in config["env"]}
    assert env["HF_HUB_OFFLINE"]["default"] == "1"  # os.environ.setdefault(..., "1")
    assert "sets it" in env["HF_HUB_OFFLINE"]["description"]


def test_a_small_cpu_worker_and_the_category_override() -> None:
    notebook = notebook_with([nbformat.v4.new_code_cell(HANDLER)])
    document = json.loads(build_worker(notebook).files[".runpod/hub.json"])
    assert document["config"] == {
        "runsOn": "CPU",
        "containerDiskInGb": 10,
        "cpuFlavor": hub.CPU_FLAVOR,
        "env": [],
    }
    assert document["category"] == "language"
    chosen = json.loads(build_worker(notebook, category="audio").files[".runpod/hub.json"])
    assert chosen["category"] == "audio"
    with pytest.raises(ExportError, match="category must be one of"):
        build_worker(notebook, category="music")


@pytest.mark.parametrize(
    ("modules", "category", "gpu"),
    [
        ({"sentence_transformers", "torch"}, "embedding", True),
        ({"diffusers", "torch", "PIL"}, "image", True),
        ({"whisper"}, "audio", True),
        ({"torchaudio.transforms"}, "audio", True),
        ({"decord", "numpy"}, "video", False),
        ({"vllm"}, "language", True),
        ({"jax.numpy"}, "language", True),
        ({"numpy", "json"}, "language", False),
        (set(), "language", False),
    ],
)
def test_category_and_gpu_come_from_the_imports(
    modules: set[str], category: str, gpu: bool
) -> None:
    assert hub.category_of(modules) == category
    assert hub.needs_gpu(modules) is gpu


HOSTILE = """
import os as operating_system
import os.path
from os import environ as E, getenv as ge
import os

env = os.environ
fetch = os.getenv
MODEL = operating_system.environ.get("MODEL_NAME", "gpt2")
BATCH = int(fetch("BATCH_SIZE", 8))
DEBUG = os.getenv("DEBUG", default=False)


def outer():
    def inner():
        return ge("INNER_VAR")
    return inner


class Settings:
    level = E["LOG_LEVEL_X"]
    via = (lambda: env.get("VIA_ALIAS"))()


name = "DYNAMIC"
computed = os.environ[name]
formatted = os.getenv(f"PREFIX_{name}")
token = os.environ.get("HF_TOKEN", "placeholder")
api = os.environ["OPENAI_API_KEY"]
pod = os.environ.get("RUNPOD_POD_ID", "local")
hook = os.environ.get("RUNPOD_WEBHOOK_GET_JOB")
concurrency = os.environ.get("RUNPOD_MAX_CONCURRENCY", "2")
tokens = os.environ.get("MAX_TOKENS", "256")
if "FEATURE_FLAG" in os.environ:
    pass
os.environ["WRITTEN_HERE"] = "1"
del os.environ["WRITTEN_HERE"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
again = os.environ.get("MODEL_NAME")
getattr(os, "environ")["HIDDEN"]
"""


def test_env_vars_are_found_through_aliases_nested_code_and_all_forms() -> None:
    entries, notes = environ.env_entries(environ.environment_reads(HOSTILE))
    found = {entry["key"]: entry["input"] for entry in entries}
    assert list(found) == [
        "MODEL_NAME",
        "BATCH_SIZE",
        "DEBUG",
        "INNER_VAR",
        "LOG_LEVEL_X",
        "VIA_ALIAS",
        "HF_TOKEN",
        "OPENAI_API_KEY",
        "RUNPOD_MAX_CONCURRENCY",  # read by the worker, not set by the platform
        "MAX_TOKENS",
        "FEATURE_FLAG",
        "HF_HUB_OFFLINE",
    ]
    assert found["MODEL_NAME"]["default"] == "gpt2"
    lines = [n for n, line in enumerate(HOSTILE.split("\n"), 1) if '"MODEL_NAME"' in line]
    assert f"lines {lines[0]}, {lines[1]}" in found["MODEL_NAME"]["description"]  # both reads
    assert found["BATCH_SIZE"]["default"] == "8" and found["DEBUG"]["default"] == "false"
    assert "default" not in found["INNER_VAR"]
    for secret in ("HF_TOKEN", "OPENAI_API_KEY"):  # no default, a RunPod secret asked for
        assert "default" not in found[secret]
        assert "RUNPOD_SECRET_" in found[secret]["description"]
    assert "RUNPOD_SECRET_" not in found["MAX_TOKENS"]["description"]  # not a credential
    assert not {"RUNPOD_POD_ID", "RUNPOD_WEBHOOK_GET_JOB", "WRITTEN_HERE", "DYNAMIC"} & set(found)
    assert len(notes) == 2 and all("computed at run time" in note for note in notes)
    assert {entry["input"]["type"] for entry in entries} == {"string"}
    document = {
        "title": "t",
        "description": "d",
        "type": "serverless",
        "category": "language",
        "config": {"runsOn": "CPU", "containerDiskInGb": 5, "cpuFlavor": "cpu3c", "env": entries},
    }
    assert hub.hub_problems(document) == []


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("HF_TOKEN", True),
        ("API_KEY", True),
        ("OPENAI_APIKEY", True),
        ("PASSKEY_HINT", False),  # a word ending in KEY is no key
        ("APIKEY", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("GITHUB_CREDENTIALS", True),
        ("MAX_TOKENS", False),
        ("TOKENIZER_NAME", False),
        ("MONKEY_MODE", False),
        ("MODEL_NAME", False),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    assert environ.is_secret_name(name) is secret


def test_the_exported_handlers_env_reads_reach_hub_json_and_the_readme() -> None:
    source = (
        '%%handler\nimport os\nfrom os import getenv\n\nPREFIX = os.environ.get("GREETING", '
        '"hello")\n\n\ndef handler(job):\n    key = getenv("SERVICE_TOKEN")\n    return '
        "f\"{PREFIX} {job['input']['n']} {bool(key)}\""
    )
    files = build_worker(notebook_with([nbformat.v4.new_code_cell(source)])).files
    env = json.loads(files[".runpod/hub.json"])["config"]["env"]
    assert [entry["key"] for entry in env] == ["GREETING", "SERVICE_TOKEN"]
    assert env[0]["input"]["default"] == "hello" and "default" not in env[1]["input"]
    assert "| `GREETING` | `hello` |" in files["README.md"]
    assert "| `SERVICE_TOKEN` | (none) |" in files["README.md"]


def _valid() -> dict[str, Any]:
    return {
        "title": "T",
        "description": "D",
        "type": "serverless",
        "category": "image",
        "iconUrl": "https://example.org/icon.png",
        "config": {
            "runsOn": "GPU",
            "containerDiskInGb": 20,
            "gpuCount": 1,
            "gpuIds": "ADA_24",
            "allowedCudaVersions": ["12.4"],
            "env": [
                {"key": "STATIC", "value": "v"},
                {"key": "N", "input": {"name": "N", "type": "number", "description": "n"}},
            ],
            "presets": [{"name": "fast", "defaults": {"N": 1}}],
        },
    }


def _broken(change: str) -> dict[str, Any]:
    document = _valid()
    config = document["config"]
    if change == "no title":
        del document["title"]
    elif change == "category":
        document["category"] = "music"
    elif change == "type":
        document["type"] = "pod"
    elif change == "unknown":
        document["version"] = "1"
    elif change == "icon":
        document["iconUrl"] = "javascript:alert(1)"
    elif change == "runsOn":
        config["runsOn"] = "TPU"
    elif change == "disk":
        config["containerDiskInGb"] = True
    elif change == "gpuIds":
        del config["gpuIds"]
    elif change == "cpu":
        config["runsOn"] = "CPU"
    elif change == "cuda":
        config["allowedCudaVersions"] = "12.4"
    elif change == "both":
        config["env"][0]["input"] = {"name": "x", "type": "string", "description": "x"}
    elif change == "twice":
        config["env"].append({"key": "STATIC", "value": "w"})
    elif change == "input type":
        config["env"][1]["input"]["type"] = "json"
    elif change == "default type":
        config["env"][1]["input"]["default"] = "ten"
    elif change == "key":
        config["env"][0]["key"] = "BAD KEY"
    elif change == "presets":
        config["presets"] = {"fast": {}}
    elif change == "config":
        document["config"] = []
    return document


BROKEN = [
    "no title", "category", "type", "unknown", "icon", "runsOn", "disk", "gpuIds", "cpu",
    "cuda", "both", "twice", "input type", "default type", "key", "presets", "config",
]  # fmt: skip


def test_hub_problems_accepts_the_documented_template() -> None:
    assert hub.hub_problems(_valid()) == []
    assert hub.hub_problems([]) == ["hub.json must be an object, not a list"]


@pytest.mark.parametrize("change", BROKEN)
def test_hub_problems_names_each_departure_from_the_documented_fields(change: str) -> None:
    problems = hub.hub_problems(_broken(change))
    assert len(problems) == 1, problems


@pytest.mark.parametrize(
    ("cells", "name", "title"),
    [
        ([], "my_cool-worker.ipynb", "My cool worker"),
        (["```\n# not a heading\n```\n\n## The **real** `title` [link](https://x.y)"], "a.ipynb",
         "The real title link"),
        (["intro text only"], "plain.ipynb", "Plain"),
    ],
)  # fmt: skip
def test_title_from_the_first_heading_else_the_file_name(
    cells: list[str], name: str, title: str
) -> None:
    notebook = notebook_with([nbformat.v4.new_markdown_cell(text) for text in cells])
    assert hub.notebook_title(notebook, notebook_name=name) == title


def test_description_is_the_first_paragraph_else_names_the_handler() -> None:
    long = "word " * 200
    notebook = notebook_with(
        [
            nbformat.v4.new_markdown_cell("# Title\n\n- a list item\n\nFirst *real*\nparagraph."),
            nbformat.v4.new_markdown_cell(long),
        ]
    )
    assert hub.notebook_description(notebook) == "First real paragraph."
    emphasis = notebook_with([nbformat.v4.new_markdown_cell("---\n\n*Fast* and `small`.")])
    assert hub.notebook_description(emphasis) == "Fast and small."
    only_long = notebook_with([nbformat.v4.new_markdown_cell(long)])
    assert len(hub.notebook_description(only_long) or "") <= 303
    bare = notebook_with([nbformat.v4.new_code_cell(HANDLER)])
    document = json.loads(build_worker(bare).files[".runpod/hub.json"])
    assert document["description"] == (
        "A RunPod serverless worker: the handler `handler`, exported by nbworker from made.ipynb."
    )


# ------------------------------------------------------------------------- the workflow


def check_workflow(*paths: Path) -> None:
    done = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not CHECK_JSONSCHEMA.exists(), reason="check-jsonschema is not installed")
def test_the_workflow_passes_githubs_schema(tmp_path: Path) -> None:
    paths = [TEMPLATES / "worker_tests.yml"]  # the template as it is, and as rendered
    for name in ("sentiment", "streaming"):
        paths.append(tmp_path / f"{name}.yml")
        paths[-1].write_text(build_worker(DATA / f"{name}.ipynb").files[ci.WORKFLOW])
    check_workflow(*paths)
    broken = tmp_path / "broken.yml"  # the check does fail a workflow GitHub would refuse
    broken.write_text(paths[1].read_text().replace("runs-on:", "runs_on:"))
    with pytest.raises(AssertionError):
        check_workflow(broken)


@pytest.mark.slow
def test_the_workflow_installs_the_requirements_and_runs_the_seed_and_the_tests() -> None:
    files = build_worker(ROOT / "notebooks" / "embeddings.ipynb").files
    workflow = yaml.safe_load(files[ci.WORKFLOW])
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML 1.1 reads `on` as true
    steps = workflow["jobs"]["test"]["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    assert steps[1]["uses"].startswith("actions/setup-python@")
    assert steps[1]["with"]["python-version"] == "3.11"  # the kernel's 3.11.7
    runs = "\n".join(step.get("run", "") for step in steps)
    assert "python -m pip install -r requirements.txt" in runs
    assert '"pytest>=8"' in runs and '"requests>=2.31"' in runs
    assert 'python handler.py --test_input "$(cat test_input.json)"' in runs
    assert "python -m pytest -v tests" in runs
    assert workflow["env"]["TEST_INPUT_COMPLETES"] == "true"
    # torch pinned with its build label comes from the index requirements.txt names
    assert "--extra-index-url https://download.pytorch.org/whl/" in files["requirements.txt"]


def test_the_workflow_skips_the_seed_when_no_run_completed_and_follows_the_kernel() -> None:
    record = {
        "handler": "handler",
        "status": "FAILED",
        "job": {"id": "x", "input": {"n": 1}},
        "error": "bad",
    }
    cell = nbformat.v4.new_code_cell('%rp_test {"input": {"n": 1}}')
    cell.outputs = [nbformat.v4.new_output("display_data", data={RECORD_MIMETYPE: record})]
    notebook = notebook_with(
        [nbformat.v4.new_code_cell(HANDLER), cell],
        language_info={"name": "python", "version": "3.12.4"},
    )
    files = build_worker(notebook).files
    workflow = yaml.safe_load(files[ci.WORKFLOW])
    assert workflow["env"]["TEST_INPUT_COMPLETES"] == "false"
    assert workflow["jobs"]["test"]["steps"][1]["with"]["python-version"] == "3.12"
    assert json.loads(files["test_input.json"]) == {"input": {"n": 1}}
    with pytest.raises(ValueError, match=r"X\.Y"):
        ci.workflow(python_version="3.11\nrun: evil", test_input_completes=True)


@pytest.mark.slow
def test_the_workflows_commands_pass_in_the_exported_folder(tmp_path: Path) -> None:
    """The steps after the install, run as the runner runs them (bash, `python` on PATH)."""
    for name in ("sentiment", "streaming"):
        folder = tmp_path / name
        export_notebook(DATA / f"{name}.ipynb", folder)
        steps = yaml.safe_load((folder / ci.WORKFLOW).read_text())["jobs"]["test"]["steps"]
        commands = [step["run"] for step in steps if "run" in step and "pip" not in step["run"]]
        assert len(commands) == 2
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for command in commands:
            done = subprocess.run(
                ["bash", "-e", "-c", command],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{name}: {command}\n{done.stdout[-3000:]}{done.stderr}"


def test_gitignore_keeps_what_runs_leave_and_nothing_the_worker_needs() -> None:
    files = build_worker(DATA / "sentiment.ipynb").files
    ignored = files[".gitignore"].splitlines()
    for pattern in ("__pycache__/", ".pytest_cache/", ".venv/", "*.py[cod]", ".env"):
        assert pattern in ignored
    assert not any(line.strip() in ("*.json", "tests/", "*.ipynb", "*.md") for line in ignored)


# ------------------------------------------------------------------------- README


def test_the_readme_shows_the_recorded_example_and_every_deploy_path() -> None:
    files = build_worker(DATA / "sentiment.ipynb").files
    text = files["README.md"]
    assert text.startswith("# Sentiment worker\n\nA tiny lexicon model")
    assert '{"input": {"text": "I love it, great!"}}' in text
    assert '{"label": "positive", "score": 3.5}' in text
    assert "### case-3: FAILED" in text and "txt is not a valid input option" in text
    for words in (
        "GitHub integration",
        "RunPod Hub",
        "create a GitHub release",
        "nbworker deploy . --image",
        "--dry-run",
        "--rp_serve_api",
        "python -m pytest tests",
        "git remote add origin",
        "git push -u origin main",
        ".github/workflows/test.yml",
    ):
        assert words in text, words


@pytest.mark.slow
def test_the_readme_bounds_big_outputs() -> None:
    files = build_worker(ROOT / "notebooks" / "embeddings.ipynb").files
    text = files["README.md"]
    cases = json.loads(files["tests/cases.json"])["cases"]
    assert len(json.dumps(cases)) > 20000  # the vectors: too much for a README
    assert len(text) < 12000 and "more characters)" in text
    for block in text.split("```json\n")[1:]:
        assert len(block.split("\n```", 1)[0]) <= readme.JSON_SHOWN + 40


def test_a_secret_in_markdown_never_reaches_the_readme_or_hub_json(tmp_path: Path) -> None:
    token = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3f"
    notebook = nbformat.read(DATA / "sentiment.ipynb", 4)
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"# Worker\n\nUse {token} to log in."))
    path = tmp_path / "leaky.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(ExportError, match="Hugging Face token") as caught:
        export_notebook(path, tmp_path / "w")
    assert token not in str(caught.value)
    assert not (tmp_path / "w").exists()
    # and the last scan reads the README as it reads every other file written
    found = secrets.find_in_files({"README.md": f"# W\n\n{token}\n"})
    assert found and found[0].kind == "a Hugging Face token"


def test_new_files_are_kept_when_edited_by_hand(tmp_path: Path) -> None:
    export_notebook(DATA / "sentiment.ipynb", tmp_path)
    hub_file = tmp_path / ".runpod" / "hub.json"
    hub_file.write_text(hub_file.read_text().replace("cpu3c", "cpu5c"))
    with pytest.raises(ExportError, match=r"\.runpod/hub\.json in .* changed"):
        export_notebook(DATA / "sentiment.ipynb", tmp_path)
    assert "cpu5c" in hub_file.read_text()


# ------------------------------------------------------------------------- git


def tree(folder: Path) -> list[str]:
    return sorted(git(folder, "ls-tree", "-r", "--name-only", "HEAD").stdout.split())


@needs_git
def test_git_makes_one_commit_of_exactly_the_files(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "worker"
    report = export_notebook(DATA / "sentiment.ipynb", folder, git=True)
    assert report.commit is not None and len(report.commit) == 40
    assert (folder / ".git").is_dir() and not (tmp_path / "not-a-repository").exists()
    log = git(folder, "log", "--format=%H|%an|%ae|%s").stdout.splitlines()
    assert log == [
        f"{report.commit}|Ada Worker|ada@example.org|Worker exported by nbworker from "
        "sentiment.ipynb"
    ]
    assert git(folder, "branch", "--show-current").stdout.strip() == "main"
    assert tree(folder) == sorted([*report.files, MANIFEST])
    assert git(folder, "status", "--porcelain", "--ignored").stdout == ""
    assert any("git remote add origin" in note for note in report.notes)
    # again, nothing changed: no diff, no second commit, git left alone
    again = export_notebook(DATA / "sentiment.ipynb", folder, git=True)
    assert again.commit is None and again.written is not None and again.written.written == []
    assert any("git repository already" in n and "no file changed" in n for n in again.notes)
    assert git(folder, "status", "--porcelain").stdout == ""
    assert len(git(folder, "log", "--format=%H").stdout.split()) == 1


@needs_git
def test_git_without_an_identity_commits_as_nbworker_and_says_so(
    tmp_path: Path, home: Path
) -> None:
    (home / ".gitconfig").unlink()
    if git(tmp_path, "config", "user.email").stdout.strip():
        pytest.skip("this machine's system git config sets an identity")
    report = export_notebook(DATA / "streaming.ipynb", tmp_path / "w", git=True)
    assert report.commit is not None
    author = git(tmp_path / "w", "log", "--format=%an <%ae>").stdout.strip()
    assert author == "nbworker <nbworker@localhost>"
    assert any("no git identity is configured" in note for note in report.notes)


@needs_git
def test_a_folder_inside_a_repository_is_not_made_one_of_its_own(
    tmp_path: Path, home: Path
) -> None:
    outer = tmp_path / "project"
    outer.mkdir()
    assert git(outer, "init", "-q").returncode == 0
    report = export_notebook(DATA / "sentiment.ipynb", outer / "workers" / "w", git=True)
    assert report.commit is None and not (outer / "workers" / "w" / ".git").exists()
    assert any(f"inside the git work tree {outer}" in note for note in report.notes)
    assert git(outer, "rev-parse", "--verify", "-q", "HEAD").returncode != 0  # no commit made


@needs_git
def test_a_folder_with_its_own_repository_is_left_alone(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    assert git(folder, "init", "-q").returncode == 0
    report = export_notebook(DATA / "sentiment.ipynb", folder, git=True)
    assert report.commit is None
    (note,) = [note for note in report.notes if "git repository already" in note]
    assert "git add -A && git commit" in note and "handler.py" in note
    assert git(folder, "rev-parse", "--verify", "-q", "HEAD").returncode != 0
    assert "handler.py" in git(folder, "status", "--porcelain").stdout  # for the user to add


def test_git_missing_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    report = export_notebook(DATA / "sentiment.ipynb", tmp_path / "w", git=True)
    assert report.commit is None and (tmp_path / "w" / "handler.py").is_file()
    assert any("git is not installed" in note for note in report.notes)


def test_the_python_api_makes_no_repository_by_default(tmp_path: Path) -> None:
    report = export_notebook(DATA / "sentiment.ipynb", tmp_path / "w")
    assert report.commit is None and not (tmp_path / "w" / ".git").exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbworker.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_git
@pytest.mark.slow
def test_the_cli_makes_a_repository_of_a_new_folder_only(tmp_path: Path, home: Path) -> None:
    notebook = str(DATA / "sentiment.ipynb")
    done = run_cli("export", notebook, "-o", "new", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(git(tmp_path / "new", "log", "--format=%H").stdout.split()) == 1
    assert "note: made" in done.stdout
    again = run_cli("export", notebook, "-o", "new", cwd=tmp_path)
    assert again.returncode == 0 and "git repository already" not in again.stdout  # not asked
    assert len(git(tmp_path / "new", "log", "--format=%H").stdout.split()) == 1
    assert run_cli("export", notebook, "-o", "off", "--no-git", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "off" / ".git").exists()
    (tmp_path / "there").mkdir()
    assert run_cli("export", notebook, "-o", "there", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "there" / ".git").exists()  # an existing folder: only with --git
    assert run_cli("export", notebook, "-o", "there", "--git", cwd=tmp_path).returncode == 0
    assert len(git(tmp_path / "there", "log", "--format=%H").stdout.split()) == 1


def test_the_cli_category_option(tmp_path: Path) -> None:
    notebook = str(DATA / "sentiment.ipynb")
    assert cli.main(["export", notebook, "-o", str(tmp_path / "w"), "--category", "image",
                     "--no-git"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "w" / ".runpod" / "hub.json").read_text())["category"] == "image"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["export", notebook, "--category", "music"])
    assert stopped.value.code == 2
    choices = next(
        action.choices
        for command in cli._parser()._subparsers._group_actions  # type: ignore[union-attr]
        for name, parser in command.choices.items()  # type: ignore[union-attr]
        if name == "export"
        for action in parser._actions
        if action.dest == "category"
    )
    assert tuple(choices) == hub.CATEGORIES  # the parser's list is the Hub's
