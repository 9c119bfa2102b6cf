"""Export end to end: golden worker directories, determinism, the worker run under the real
RunPod SDK, the command line and `%rp_export`.

The expected files of each example notebook `tests/data/NAME.ipynb` sit in
`tests/data/NAME.worker/`. After a deliberate change to what export writes, regenerate them
with `NBWORKER_UPDATE_GOLDEN=1 scripts/test.sh tests/test_export.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbworker.export import ExportError, build_worker, default_directory, export_notebook
from nbworker.export.write import MANIFEST
from nbworker.record import RECORD_MIMETYPE as RECORD
from nbworker.record import recorded_runs

DATA = Path(__file__).parent / "data"
EXAMPLES = ["sentiment", "streaming"]
UPDATE = os.environ.get("NBWORKER_UPDATE_GOLDEN") == "1"
NBWORKER = [sys.executable, "-m", "nbworker.cli"]
PIN = re.compile(r"^([A-Za-z0-9_.\[\],-]+)==\S+$", re.MULTILINE)


def normalised(path: str, text: str) -> str:
    """Pinned versions depend on the environment that exports: compare names only."""
    return PIN.sub(r"\1==<version>", text) if path.endswith("requirements.txt") else text


def golden_files(name: str) -> dict[str, str]:
    folder = DATA / f"{name}.worker"
    return {
        path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("name", EXAMPLES)
def test_export_gives_the_golden_worker(name: str) -> None:
    report = build_worker(DATA / f"{name}.ipynb")
    copy = nbformat.reads(report.files.pop(f"tests/{name}.ipynb"), as_version=4)
    source = nbformat.read(DATA / f"{name}.ipynb", 4)
    # the copy keeps the sources, the tags and the run records, alone in their outputs
    assert [c.source for c in copy.cells] == [c.source for c in source.cells]
    assert [c.get("id") for c in copy.cells] == [c.get("id") for c in source.cells]
    assert [recorded_runs(c) for c in copy.cells] == [recorded_runs(c) for c in source.cells]
    assert {key for c in copy.cells for o in c.get("outputs", []) for key in o.data} <= {RECORD}
    assert sorted(copy.metadata) == sorted(set(source.metadata) & {"kernelspec", "language_info"})
    if UPDATE:
        folder = DATA / f"{name}.worker"
        shutil.rmtree(folder, ignore_errors=True)
        for path, text in report.files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
    expected = golden_files(name)
    assert sorted(report.files) == sorted(expected)
    for path, text in report.files.items():
        assert normalised(path, text) == normalised(path, expected[path]), f"{name}: {path}"


def test_the_golden_handlers_are_plain_python_without_nbworker() -> None:
    for name in EXAMPLES:
        handler = golden_files(name)["handler.py"]
        compile(handler, "handler.py", "exec")
        assert "nbworker" not in re.sub(r'^""".*?"""', "", handler, flags=re.DOTALL)
        last = handler.rstrip().splitlines()[-1]
        assert last.startswith("    runpod.serverless.start({"), last
        assert 'if __name__ == "__main__":' in handler


def test_the_streaming_worker_keeps_return_aggregate_stream() -> None:
    handler = golden_files("streaming")["handler.py"]
    assert 'runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})' in (
        handler
    )


def test_exporting_twice_gives_byte_identical_files(tmp_path: Path) -> None:
    for name in EXAMPLES:
        first, second = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
        export_notebook(DATA / f"{name}.ipynb", first)
        export_notebook(DATA / f"{name}.ipynb", second)
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert MANIFEST in {str(p) for p in files}
        assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
        for path in files:
            assert (first / path).read_bytes() == (second / path).read_bytes(), path
        again = export_notebook(DATA / f"{name}.ipynb", first)
        assert again.written is not None and again.written.written == []


def test_a_hand_edited_file_is_kept_until_force(tmp_path: Path) -> None:
    notebook = DATA / "sentiment.ipynb"
    export_notebook(notebook, tmp_path)
    handler = tmp_path / "handler.py"
    edited = handler.read_text() + "# tuned by hand\n"
    handler.write_text(edited)
    with pytest.raises(ExportError, match=r"handler\.py in .* changed since nbworker last wrote"):
        export_notebook(notebook, tmp_path)
    assert handler.read_text() == edited
    report = export_notebook(notebook, tmp_path, force=True)
    assert report.written is not None and report.written.overwritten_edits == ["handler.py"]
    assert "# tuned by hand" not in handler.read_text()


def test_the_default_directory_sits_beside_the_notebook(tmp_path: Path) -> None:
    notebook = tmp_path / "sentiment.ipynb"
    shutil.copy(DATA / "sentiment.ipynb", notebook)
    report = export_notebook(notebook)
    assert default_directory(notebook) == tmp_path / "sentiment-worker"
    assert report.directory == str(tmp_path / "sentiment-worker")
    assert (tmp_path / "sentiment-worker" / "handler.py").is_file()
    nb = nbformat.read(notebook, 4)
    with pytest.raises(ExportError, match="give the worker directory"):
        export_notebook(nb)


# ------------------------------------------------------------- the worker, for real


def run_worker(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    return subprocess.run(
        [sys.executable, "handler.py", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def job_result(stdout: str) -> dict:
    """The SDK's last `Job result: {...}` log line, as a dict."""
    import ast

    line = [x for x in stdout.splitlines() if "Job result: " in x][-1]
    return ast.literal_eval(line.split("Job result: ", 1)[1])


@pytest.mark.slow
def test_the_exported_worker_gives_the_recorded_results_under_the_sdk(tmp_path: Path) -> None:
    export_notebook(DATA / "sentiment.ipynb", tmp_path)
    cases = json.loads((tmp_path / "tests" / "cases.json").read_text())["cases"]
    default = run_worker(tmp_path)  # test_input.json
    assert default.returncode == 0, default.stdout + default.stderr
    assert job_result(default.stdout) == {"output": cases[0]["output"]}
    for case in cases:
        done = run_worker(tmp_path, "--test_input", json.dumps(case["job"]))
        if case["status"] == "COMPLETED":
            assert done.returncode == 0 and job_result(done.stdout) == {"output": case["output"]}
        else:  # the SDK logs the error and exits 1
            assert done.returncode == 1
            assert f"Job local_test failed with error: {case['error']}" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_the_exported_workers_own_tests_pass(tmp_path: Path, name: str) -> None:
    export_notebook(DATA / f"{name}.ipynb", tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout


# ------------------------------------------------------------- the command line


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NBWORKER, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_exports_and_prints_the_report(tmp_path: Path) -> None:
    done = cli("export", str(DATA / "sentiment.ipynb"), "-o", str(tmp_path / "w"))
    assert done.returncode == 0, done.stderr
    assert "export of sentiment.ipynb: handler `handler`" in done.stdout
    assert "  - cell 5: tagged nbworker:skip" in done.stdout
    assert "  + cell 8 (%%handler): the handler `handler`" in done.stdout
    assert (tmp_path / "w" / "Dockerfile").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["missing.ipynb"], "no such notebook: missing.ipynb"),
        ("notjson", ["bad.ipynb"], "cannot read bad.ipynb as a notebook"),
        (
            "sentiment",
            ["sentiment.ipynb", "--handler", "nope"],
            "no %%handler cell registers 'nope'",
        ),
        ("nohandler", ["plain.ipynb"], "the notebook has no %%handler cell to export"),
        ("secret", ["secret.ipynb"], "cell 1, line 1"),
        ("edited", ["sentiment.ipynb", "-o", "w"], "changed since nbworker last wrote it"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(
    tmp_path: Path, make: str | None, args: list[str], message: str
) -> None:
    if make == "notjson":
        (tmp_path / "bad.ipynb").write_text("{not json")
    elif make == "nohandler":
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
        nbformat.write(nb, tmp_path / "plain.ipynb")
    elif make == "secret":
        token = "hf_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"
        nb = nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell("import os"),
                nbformat.v4.new_code_cell(f'HF_TOKEN = "{token}"'),
                nbformat.v4.new_code_cell("%%handler\ndef handler(job):\n    return HF_TOKEN"),
            ]
        )
        nbformat.write(nb, tmp_path / "secret.ipynb")
    elif make in ("sentiment", "edited"):
        shutil.copy(DATA / "sentiment.ipynb", tmp_path / "sentiment.ipynb")
        if make == "edited":
            assert cli("export", "sentiment.ipynb", "-o", "w", cwd=tmp_path).returncode == 0
            (tmp_path / "w" / "Dockerfile").write_text("FROM scratch\n")
    done = cli("export", *args, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("nbworker export: error: ") and message in done.stderr
    if make == "secret":
        assert token not in done.stdout + done.stderr
        assert "read it from the environment instead (os.environ" in done.stderr
        assert not (tmp_path / "secret-worker").exists()
    if make == "edited":
        assert (tmp_path / "w" / "Dockerfile").read_text() == "FROM scratch\n"


@pytest.mark.slow
def test_cli_usage_errors_exit_2_and_help_and_version_work() -> None:
    done = cli("export")
    assert done.returncode == 2 and "NOTEBOOK.ipynb" in done.stderr
    done = cli("--help")
    assert done.returncode == 0 and "export" in done.stdout
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("nbworker ")


# ------------------------------------------------------------- %rp_export


def test_rp_export_exports_the_notebook_named_or_the_one_jupyter_names(
    shell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    shutil.copy(DATA / "sentiment.ipynb", tmp_path / "sentiment.ipynb")
    out = shell.ok("%rp_export sentiment.ipynb").captured
    assert "export of sentiment.ipynb: handler `handler`" in out.stdout
    # the file was copied just now: 0 s ago, or 1-2 s on a busy machine
    assert re.search(r"\(from sentiment\.ipynb as saved [0-2] s ago", out.stdout), out.stdout
    assert (tmp_path / "sentiment-worker" / "handler.py").is_file()
    # Jupyter server names the notebook by its path; the kernel runs in its folder
    monkeypatch.setenv("JPY_SESSION_NAME", "/elsewhere/on/the/server/sentiment.ipynb")
    out = shell.ok("%rp_export -o there").captured
    assert "wrote to there:" in out.stdout
    assert (tmp_path / "there" / "Dockerfile").is_file()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "",
            "%rp_export: this kernel does not know its notebook's path; give it: %rp_export NOTEBOOK.ipynb",
        ),
        ("--bogus", "%rp_export: unrecognized arguments: --bogus"),
        ("nope.ipynb", "%rp_export: no such notebook: nope.ipynb"),
        (
            "sentiment.ipynb --handler zzz",
            "%rp_export: no %%handler cell registers 'zzz'; the notebook's handlers: handler, other",
        ),
    ],
)
def test_rp_export_errors_are_one_usage_line(
    shell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    shutil.copy(DATA / "sentiment.ipynb", tmp_path / "sentiment.ipynb")
    assert shell.usage_error(f"%rp_export {line}") == message
    assert not (tmp_path / "sentiment-worker").exists()


@pytest.mark.slow
def test_rp_export_in_a_real_kernel_finds_its_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import papermill

    notebook = tmp_path / "sentiment.ipynb"
    nb = nbformat.read(DATA / "sentiment.ipynb", 4)
    nb.cells.append(nbformat.v4.new_code_cell("%load_ext nbworker\n%rp_export"))
    nbformat.write(nb, notebook)
    # as jupyter_server starts a notebook's kernel: its path in JPY_SESSION_NAME
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    executed = papermill.execute_notebook(
        str(notebook), str(tmp_path / "out.ipynb"), cwd=str(tmp_path), progress_bar=False
    )
    printed = "".join(o.get("text", "") for o in executed.cells[-1].outputs)
    assert "export of sentiment.ipynb: handler `handler`" in printed
    assert (tmp_path / "sentiment-worker" / "handler.py").read_text() == golden_files("sentiment")[
        "handler.py"
    ]
