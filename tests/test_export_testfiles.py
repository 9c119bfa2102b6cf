"""nbworker.export.testfiles: the cases and the pytest files an exported worker ships with.

The unit tests check the selection and the JSON texts. The slow tests build worker folders by
hand (a handler.py and the generated tests/), run the generated tests with pytest in a
subprocess under the real RunPod SDK, and check that they pass, then that they fail, naming
the case, once handler.py (or the notebook) gives something else. The records they replay
are made by nbworker itself: in-process with a Session, or by a notebook run with papermill.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import papermill
import pytest
from helpers import notebook_records
from nbformat.v4 import new_code_cell, new_notebook

from nbworker.session import Session

MODULE_PATH = Path(__file__).parent.parent / "nbworker" / "export" / "testfiles.py"


def _load() -> ModuleType:
    # Loaded from its file: nbworker.export's __init__ is being written elsewhere.
    spec = importlib.util.spec_from_file_location("_nbworker_export_testfiles", MODULE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


testfiles = _load()


# --------------------------------------------------------------------------- handlers

SYNC_SOURCE = """\
LEXICON = {"love": 2.0, "great": 1.5, "bad": -1.0, "slow": -0.5}


def handler(job):
    data = job["input"]
    if "text" not in data:
        return {"error": "text is a required input."}
    text = data["text"]
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    if not text:
        return {"error": ["text is empty", "give at least one word"]}
    words = text.split()
    score = sum(LEXICON.get(word.strip(",.!"), 0.0) for word in words) / 3
    output = {"label": "positive" if score > 0 else "negative", "score": score}
    output["words"] = len(words)
    if data.get("echo"):
        output["echo"] = text * data["echo"]
    if data.get("refresh"):
        output["refresh_worker"] = True
    return output
"""

STREAM_SOURCE = """\
def tokens(job):
    for index, word in enumerate(job["input"]["text"].split()):
        if word == "stop":
            yield {"error": f"stopped at word {index}"}
        if word == "boom":
            raise ValueError(f"boom at word {index}")
        yield {"word": word, "index": index, "weight": index / 3}
"""

SYNC_JOBS = [
    {"input": {"text": "I love this, it is great!"}},  # COMPLETED
    {"input": {"txt": "typo in the key"}},  # FAILED: a validation error string
    {"input": {"text": 42}},  # FAILED: an exception
    {"input": {"text": ""}},  # FAILED: an error that is a list
    {"input": {"text": "great", "echo": 1000}},  # COMPLETED, too long for the log line
    {"input": {"text": "bad", "refresh": True}},  # COMPLETED, refresh_worker
    {"input": {"text": "bad " * 30000}},  # COMPLETED, too long for a command line
]
STREAM_JOBS = [
    {"input": {"text": "good food but slow service"}},  # COMPLETED
    {"input": {"text": "one stop two"}},  # FAILED: a yielded error
    {"input": {"text": "one two boom three"}},  # FAILED: a raise after two chunks
    {"input": {"text": "a b"}, "policy": {"ttl": 1000}},  # COMPLETED, not servable locally
]


def worker_script(source: str, function: str, **config: Any) -> str:
    """A handler.py as the exporter writes one: the function, then runpod's start()."""
    options = "".join(f", {key!r}: {value!r}" for key, value in config.items())
    return (
        f'{source}\n\nif __name__ == "__main__":\n    import runpod\n\n'
        f'    runpod.serverless.start({{"handler": {function}{options}}})\n'
    )


def record_runs(
    source: str, function: str, jobs: list[dict[str, Any]], **options: Any
) -> list[dict[str, Any]]:
    """The records nbworker makes of `jobs` run against the function `source` defines."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<cell>", "exec"), namespace)
    session = Session()
    try:
        spec = session.register_handler(namespace[function], name=function, **options)
        return [session.run_job(job, spec).to_record() for job in jobs]
    finally:
        session.close()


def write_worker(
    root: Path, script: str, files: dict[str, str], notebook: nbformat.NotebookNode | None = None
) -> Path:
    root.mkdir()
    (root / "handler.py").write_text(script, encoding="utf-8")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if notebook is not None:
        nbformat.write(notebook, root / "tests" / "worker.ipynb")
    return root


def run_pytest(worker: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-rfEs", "-p", "no:cacheprovider", *args],
        cwd=worker,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    return done.returncode, done.stdout + done.stderr


# --------------------------------------------------------------------------- select_cases


def test_select_cases_keeps_completed_and_failed_runs_of_the_handler_in_order() -> None:
    records = record_runs(SYNC_SOURCE, "handler", SYNC_JOBS[:3])
    other = record_runs(STREAM_SOURCE, "tokens", STREAM_JOBS[:1], aggregate=True)
    timed_out = dict(records[0], status="TIMED_OUT", output=None, error="timed out after 1 s")
    cancelled = dict(records[0], status="CANCELLED", output=None, error="interrupted")
    records[1]["cell"] = 7
    mixed = [timed_out, records[0], other[0], cancelled, records[1], records[2]]

    cases = testfiles.select_cases(mixed, handler="handler")

    assert [case["name"] for case in cases] == ["case-1", "case-2", "case-3"]
    assert [case["status"] for case in cases] == ["COMPLETED", "FAILED", "FAILED"]
    assert list(cases[0]) == [
        "name", "cell", "job", "status", "output", "error", "stream", "refresh_worker",
        "ignore", "compare",
    ]  # fmt: skip
    assert (cases[0]["ignore"], cases[0]["compare"]) == ([], True)
    options = dict(records[0], ignore=["at", "id"], compare=False)
    assert testfiles.select_cases([options], handler="handler")[0]["ignore"] == ["at", "id"]
    assert testfiles.select_cases([options], handler="handler")[0]["compare"] is False
    assert cases[0]["job"] == {"input": {"text": "I love this, it is great!"}}  # no "id"
    assert cases[0]["output"] == {"label": "positive", "score": 3.5 / 3, "words": 6}
    assert (cases[0]["cell"], cases[1]["cell"]) == (None, 7)
    assert cases[1]["error"] == "text is a required input."
    assert json.loads(cases[2]["error"])["error_type"] == "<class 'TypeError'>"
    assert cases[0]["stream"] is None and cases[0]["refresh_worker"] is False
    assert testfiles.select_cases(mixed, handler="missing") == []


def test_select_cases_copies_a_stream_and_keeps_other_job_keys() -> None:
    records = record_runs(STREAM_SOURCE, "tokens", STREAM_JOBS, aggregate=True)
    records[0]["job"]["id"] = "my-own-id"

    cases = testfiles.select_cases(records, handler="tokens")

    assert [case["status"] for case in cases] == ["COMPLETED", "FAILED", "FAILED", "COMPLETED"]
    assert cases[0]["stream"] == cases[0]["output"] and len(cases[0]["stream"]) == 5
    assert cases[0]["job"] == {"input": {"text": "good food but slow service"}}
    assert cases[3]["job"] == {"input": {"text": "a b"}, "policy": {"ttl": 1000}}
    assert cases[1]["error"] == "stopped at word 1"
    assert cases[2]["error"].startswith("handler: boom at word 2 \ntraceback: ")
    assert cases[2]["stream"] == [
        {"word": "one", "index": 0, "weight": 0.0},
        {"word": "two", "index": 1, "weight": 1 / 3},
    ]
    cases[0]["stream"].append("changed")
    assert len(records[0]["stream"]) == 5  # the cases are copies


def test_select_cases_refuses_what_is_not_strict_json_and_jobs_without_input() -> None:
    record = record_runs(SYNC_SOURCE, "handler", SYNC_JOBS[:1])[0]
    with pytest.raises(ValueError, match="case-1 output is not strict JSON"):
        testfiles.select_cases([dict(record, output=float("nan"))], handler="handler")
    with pytest.raises(ValueError, match="has no input"):
        testfiles.select_cases([dict(record, job={"id": "x"})], handler="handler")


# --------------------------------------------------------------------------- JSON texts


def sync_cases() -> list[dict[str, Any]]:
    return testfiles.select_cases(record_runs(SYNC_SOURCE, "handler", SYNC_JOBS), handler="handler")


def test_test_input_is_the_first_completed_job_sorted_and_deterministic() -> None:
    cases = sync_cases()
    failed_first = [cases[1], cases[4]]
    text = testfiles.example_job(failed_first)
    assert text == '{\n  "input": {\n    "echo": 1000,\n    "text": "great"\n  }\n}\n'
    assert testfiles.example_job(failed_first) == text
    assert json.loads(testfiles.example_job(cases[1:2])) == {"input": {"txt": "typo in the key"}}
    with pytest.raises(ValueError, match="no test case"):
        testfiles.example_job([])


def test_hub_tests_are_the_completed_cases_in_runpods_format() -> None:
    cases = sync_cases()
    cases.append(dict(cases[0], name="case-7", job={"input": "not an object"}))

    text = testfiles.hub_tests(cases, timeout_ms=120000)

    assert text == testfiles.hub_tests(cases, timeout_ms=120000) and text.endswith("}\n")
    hub = json.loads(text)
    assert list(hub) == ["tests", "config"]
    assert hub["tests"][:3] == [
        {"name": "case-1", "input": {"text": "I love this, it is great!"}, "timeout": 120000},
        {"name": "case-5", "input": {"text": "great", "echo": 1000}, "timeout": 120000},
        {"name": "case-6", "input": {"text": "bad", "refresh": True}, "timeout": 120000},
    ]
    assert [test["name"] for test in hub["tests"]] == ["case-1", "case-5", "case-6", "case-7"]
    assert hub["config"] == {
        "gpuTypeId": "NVIDIA GeForce RTX 4090",
        "gpuCount": 1,
        "allowedCudaVersions": ["12.7", "12.6", "12.5", "12.4", "12.3"],
    }
    assert json.loads(testfiles.hub_tests(cases[1:4]))["tests"] == []
    with pytest.raises(ValueError, match="timeout_ms"):
        testfiles.hub_tests(cases, timeout_ms=0)


def test_test_files_are_the_five_files_and_deterministic() -> None:
    cases = sync_cases()
    options = {"handler": "handler", "streaming": False, "notebook_name": "worker.ipynb"}

    files = testfiles.worker_tests(cases=cases, **options)

    assert list(files) == [
        "tests/cases.json",
        "tests/compare.py",
        "tests/test_handler.py",
        "tests/test_notebook.py",
        "tests/requirements.txt",
    ]
    assert files == testfiles.worker_tests(cases=sync_cases(), **options)
    spec = json.loads(files["tests/cases.json"])
    assert list(spec) == ["format", "handler", "streaming", "notebook", "cases"]
    assert spec["format"] == 1 and spec["notebook"] == "worker.ipynb" and spec["cases"] == cases
    assert "nbworker" not in files["tests/test_handler.py"]
    assert "--test_input" in files["tests/test_handler.py"]
    streaming = testfiles.worker_tests(cases=cases, **dict(options, streaming=True))
    assert "/runsync" in streaming["tests/test_handler.py"]
    assert "def run_test_input" not in streaming["tests/test_handler.py"]
    requirements = files["tests/requirements.txt"].splitlines()
    assert requirements[0].startswith("# ") and "does not need" in requirements[0]
    assert {"pytest>=8", "requests>=2.31", "papermill>=2.5", "nbformat>=5.9"} <= set(requirements)
    assert any(line.startswith("nbworker>=") for line in requirements)
    assert not any(text.count("\t") or not text.endswith("\n") for text in files.values())


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("handler", "not a name", "Python name"),
        ("notebook_name", "sub/dir.ipynb", "file name"),
        ("notebook_name", "notebook.py", "file name"),
    ],
)
def test_test_files_refuses_bad_names(option: str, value: str, message: str) -> None:
    options: dict[str, Any] = {"handler": "handler", "streaming": False, "notebook_name": "w.ipynb"}
    with pytest.raises(ValueError, match=message):
        testfiles.worker_tests(cases=[], **dict(options, **{option: value}))


def test_no_public_function_of_export_is_named_like_a_test() -> None:
    """A test module that imports one would have pytest collect it (no `__test__ = False`
    workarounds: the names say what they make)."""
    from nbworker import export
    from nbworker.export import cases

    for module in (export, cases, testfiles):
        assert [name for name in module.__all__ if name.startswith("test")] == []


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True])
def test_generated_files_compile_and_pass_ruff(tmp_path: Path, streaming: bool) -> None:
    files = testfiles.worker_tests(
        cases=sync_cases(), handler="handler", streaming=streaming, notebook_name="w.ipynb"
    )
    for name in ("tests/compare.py", "tests/test_handler.py", "tests/test_notebook.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(files[name], encoding="utf-8")
        py_compile.compile(str(path), doraise=True)
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed")
    rules = ["--select", "E,F,W,I,B,UP,SIM,RUF", "--line-length", "100"]
    for command in (["check", *rules], ["format", "--check", "--line-length", "100"]):
        done = subprocess.run(
            [str(ruff), *command, "--isolated", str(tmp_path / "tests")],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


TEMPLATES = MODULE_PATH.parent / "templates"


def test_the_templates_pass_ruff_and_are_what_a_fresh_export_writes() -> None:
    from nbworker.export import build_worker

    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed")
    root = MODULE_PATH.parents[2]  # the project's own rules (pyproject.toml), as for nbworker
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run([str(ruff), *command, TEMPLATES], capture_output=True, cwd=root)
        assert done.returncode == 0, (done.stdout + done.stderr).decode()
    assert sorted(path.name for path in TEMPLATES.iterdir()) == [
        "handler_tests.py",
        "notebook_tests.py",
        "stream_handler_tests.py",
        "worker.gitignore",  # the worker's .gitignore (tests/test_export_ship.py)
        "worker_tests.yml",  # its GitHub workflow, checked against GitHub's schema there
    ]
    notebook_tests = (TEMPLATES / "notebook_tests.py").read_text(encoding="utf-8")
    examples = {"sentiment": "handler_tests.py", "streaming": "stream_handler_tests.py"}
    for name, handler_tests in examples.items():
        files = build_worker(Path(__file__).parent / "data" / f"{name}.ipynb").files
        assert files["tests/test_handler.py"] == (TEMPLATES / handler_tests).read_text("utf-8")
        assert files["tests/test_notebook.py"] == notebook_tests, name


def _definitions(path: Path) -> dict[str, str]:
    """Each top-level def, class and assignment of a module: name -> its source."""
    text = path.read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = ast.get_source_segment(text, node) or ""
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ast.get_source_segment(text, node) or ""
    return found


def test_the_two_handler_templates_share_their_common_code_unchanged() -> None:
    # each worker gets one of them whole, so the code both need is written in both: it
    # must not drift apart
    plain = _definitions(TEMPLATES / "handler_tests.py")
    stream = _definitions(TEMPLATES / "stream_handler_tests.py")
    shared = sorted(set(plain) & set(stream) - {"test_case"})
    assert {"LocalAPI", "python_value", "worker_env", "skip_unless_servable"} <= set(shared)
    assert [name for name in shared if plain[name] != stream[name]] == []


def test_the_notebook_template_reads_records_as_nbworker_writes_and_selects_them() -> None:
    from nbworker.record import RECORD_MIMETYPE

    text = (TEMPLATES / "notebook_tests.py").read_text(encoding="utf-8")
    assert f'RECORD = "{RECORD_MIMETYPE}"' in text
    statuses = str(testfiles.CASE_STATUSES).replace("'", '"')
    assert f'record.get("status") in {statuses}' in text


# --------------------------------------------------------------------------- replay, for real


@pytest.fixture(scope="module")
def sync_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = record_runs(SYNC_SOURCE, "handler", SYNC_JOBS)
    for index, record in enumerate(records):
        record["cell"] = 10 + index
    cases = testfiles.select_cases(records, handler="handler")
    files = testfiles.worker_tests(
        cases=cases, handler="handler", streaming=False, notebook_name="worker.ipynb"
    )
    root = tmp_path_factory.mktemp("sync") / "worker"
    return write_worker(root, worker_script(SYNC_SOURCE, "handler"), files)


@pytest.fixture(scope="module")
def stream_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = record_runs(STREAM_SOURCE, "tokens", STREAM_JOBS, aggregate=True)
    cases = testfiles.select_cases(records, handler="tokens")
    files = testfiles.worker_tests(
        cases=cases, handler="tokens", streaming=True, notebook_name="worker.ipynb"
    )
    root = tmp_path_factory.mktemp("stream") / "worker"
    script = worker_script(STREAM_SOURCE, "tokens", return_aggregate_stream=True)
    return write_worker(root, script, files)


def break_handler(worker: Path, old: str, new: str) -> None:
    script = (worker / "handler.py").read_text(encoding="utf-8")
    assert script.count(old) == 1
    (worker / "handler.py").write_text(script.replace(old, new), encoding="utf-8")


@pytest.mark.slow
def test_generated_handler_tests_pass_for_a_sync_handler(sync_worker: Path) -> None:
    code, output = run_pytest(sync_worker, "-v", "tests/test_handler.py")
    assert code == 0, output
    for index in range(7):
        assert f"test_case[case-{index + 1} (cell {10 + index})] PASSED" in output, output


@pytest.mark.slow
def test_generated_handler_tests_fail_naming_the_case_whose_output_changed(
    sync_worker: Path, tmp_path: Path
) -> None:
    worker = tmp_path / "worker"
    shutil.copytree(sync_worker, worker)
    break_handler(worker, "/ 3\n", "/ 3.1\n")  # every score moves by 3 %
    break_handler(worker, "a required input.", "required.")

    code, output = run_pytest(worker, "tests/test_handler.py")

    assert code == 1, output
    assert "FAILED tests/test_handler.py::test_case[case-1 (cell 10)]" in output
    assert "output['score']: got 1.129032258064516, recorded 1.1666666666666667" in output
    assert "FAILED tests/test_handler.py::test_case[case-2 (cell 11)]" in output
    assert "error: got 'text is required.', recorded 'text is a required input.'" in output
    assert "output (from /runsync)['score']: got 0.48387096774193544, recorded 0.5" in output
    assert "output (from /runsync)['score']: got -9677.41935483871, recorded -10000.0" in output
    assert "5 failed, 2 passed" in output  # the scores of case-5, 6 and 7 moved too


@pytest.mark.slow
def test_generated_handler_tests_pass_for_a_streaming_handler(stream_worker: Path) -> None:
    code, output = run_pytest(stream_worker, "-v", "tests/test_handler.py")
    assert code == 0, output
    assert output.count(" PASSED") == 3, output
    assert "test_case[case-4] SKIPPED" in output
    assert "passes the handler the input only, not ['policy']" in output


@pytest.mark.slow
def test_generated_streaming_tests_fail_when_a_chunk_changes(
    stream_worker: Path, tmp_path: Path
) -> None:
    worker = tmp_path / "worker"
    shutil.copytree(stream_worker, worker)
    break_handler(worker, '"index": index,', '"index": index + 1,')

    code, output = run_pytest(worker, "tests/test_handler.py")

    assert code == 1, output
    assert "FAILED tests/test_handler.py::test_case[case-1]" in output
    assert "stream[0]['index']: got 1, recorded 0" in output
    assert "3 failed, 1 skipped" in output  # the raise's chunks, read from the log, too
    assert processes_in(worker) == []  # the server was stopped


@pytest.mark.slow
def test_generated_streaming_tests_pass_on_the_cases_after_an_http_500(tmp_path: Path) -> None:
    """A generator that raises makes the SDK's server answer HTTP 500, then close the
    connection. The next case's request must not go out on that connection (it was reset at
    random): cases that raise alternate with cases that pass, six times."""
    jobs = [
        job
        for index in range(6)
        for job in ({"input": {"text": f"boom {index}"}}, {"input": {"text": f"ok {index}"}})
    ]
    records = record_runs(STREAM_SOURCE, "tokens", jobs, aggregate=True)
    assert [record["status"] for record in records] == ["FAILED", "COMPLETED"] * 6
    files = testfiles.worker_tests(
        cases=testfiles.select_cases(records, handler="tokens"),
        handler="tokens",
        streaming=True,
        notebook_name="worker.ipynb",
    )
    script = worker_script(STREAM_SOURCE, "tokens", return_aggregate_stream=True)
    worker = write_worker(tmp_path / "worker", script, files)

    code, output = run_pytest(worker, "tests/test_handler.py")

    assert code == 0, output
    assert "12 passed" in output and "ConnectionError" not in output


def processes_in(folder: Path) -> list[int]:
    """The processes whose working directory is `folder` (Linux)."""
    if not Path("/proc/self/cwd").exists():
        pytest.skip("no /proc here")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == folder.resolve():
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


# --------------------------------------------------------------------------- test_notebook.py


def handler_notebook(source: str) -> nbformat.NotebookNode:
    """A notebook as a user writes one: the extension, a %%handler cell, %rp_test runs."""
    cells = [new_code_cell("%load_ext nbworker"), new_code_cell(f"%%handler\n{source}")]
    cells += [new_code_cell(f"%rp_test {json.dumps(job)}") for job in SYNC_JOBS[:3]]
    cells.append(new_code_cell('%rp_test {"input": {}} --timeout 5'))  # FAILED too
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return notebook


def indexed_records(notebook: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The records of an executed notebook, each with the index of its cell."""
    return [dict(record, cell=index) for index, record in notebook_records(notebook)]


@pytest.fixture(scope="module")
def notebook_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worker exported by hand from a notebook executed once with papermill."""
    folder = tmp_path_factory.mktemp("notebook")
    source, executed = folder / "source.ipynb", folder / "executed.ipynb"
    nbformat.write(handler_notebook(SYNC_SOURCE), source)
    papermill.execute_notebook(
        str(source), str(executed), kernel_name="python3", cwd=str(folder), progress_bar=False
    )
    records = indexed_records(nbformat.read(executed, as_version=4))
    cases = testfiles.select_cases(records, handler="handler")
    assert [case["cell"] for case in cases] == [2, 3, 4, 5]
    files = testfiles.worker_tests(
        cases=cases, handler="handler", streaming=False, notebook_name="worker.ipynb"
    )
    script = worker_script(SYNC_SOURCE, "handler")
    return write_worker(folder / "worker", script, files, nbformat.read(source, as_version=4))


@pytest.mark.slow
def test_generated_notebook_test_skips_without_the_notebook_copy(tmp_path: Path) -> None:
    files = testfiles.worker_tests(
        cases=sync_cases(), handler="handler", streaming=False, notebook_name="worker.ipynb"
    )
    worker = write_worker(tmp_path / "worker", worker_script(SYNC_SOURCE, "handler"), files)

    code, output = run_pytest(worker, "tests/test_notebook.py")

    assert code == 0, output
    assert "8 skipped" in output
    assert "the notebook copy tests/worker.ipynb is missing" in output


@pytest.mark.slow
def test_generated_notebook_test_skips_without_papermill(tmp_path: Path) -> None:
    files = testfiles.worker_tests(
        cases=sync_cases(), handler="handler", streaming=False, notebook_name="worker.ipynb"
    )
    worker = write_worker(tmp_path / "worker", worker_script(SYNC_SOURCE, "handler"), files)
    hidden = tmp_path / "hidden" / "papermill"
    hidden.mkdir(parents=True)
    stub = "raise ModuleNotFoundError(\"No module named 'papermill'\", name='papermill')\n"
    (hidden / "__init__.py").write_text(stub)
    env = dict(os.environ, PYTHONPATH=str(hidden.parent))

    code, output = run_pytest(worker, "tests/test_notebook.py", env=env)

    assert code == 0, output
    assert "8 skipped" in output and "could not import 'papermill'" in output


@pytest.mark.slow
def test_generated_notebook_test_passes_then_names_the_case_that_changed(
    notebook_worker: Path,
) -> None:
    code, output = run_pytest(notebook_worker, "-v", "tests/")
    assert code == 0, output
    assert "test_handler.py::test_case[case-3 (cell 4)] PASSED" in output
    assert "test_notebook.py::test_case_still_holds[case-3 (cell 4)] PASSED" in output
    assert "test_notebook.py::test_the_notebook_records_a_run_per_case PASSED" in output

    copy = notebook_worker / "tests" / "worker.ipynb"
    notebook = nbformat.read(copy, as_version=4)
    notebook.cells[1].source = notebook.cells[1].source.replace("/ 3\n", "/ 4\n")
    notebook.cells[1].source = notebook.cells[1].source.replace(
        "not {type(text).__name__}", "got {type(text).__name__}"
    )
    nbformat.write(notebook, copy)

    code, output = run_pytest(notebook_worker, "tests/test_notebook.py")

    assert code == 1, output
    assert "FAILED tests/test_notebook.py::test_case_still_holds[case-1 (cell 2)]" in output
    assert "output['score']: got 0.875, recorded 1.1666666666666667" in output
    assert "FAILED tests/test_notebook.py::test_case_still_holds[case-3 (cell 4)]" in output
    assert "text must be a string, got int" in output
    assert "2 failed, 3 passed" in output


def test_case_ids_name_the_cell_when_known() -> None:
    text = testfiles.worker_tests(
        cases=[], handler="handler", streaming=False, notebook_name="w.ipynb"
    )["tests/compare.py"]
    namespace: dict[str, Any] = {}
    start = text.index("def case_id")
    exec(textwrap.dedent(text[start : text.index("\n\n\n", start)]), namespace)
    assert namespace["case_id"]({"name": "case-2", "cell": None}) == "case-2"
    assert namespace["case_id"]({"name": "case-2", "cell": 5}) == "case-2 (cell 5)"


def test_the_workers_compare_is_nbworkers_own_and_needs_only_the_standard_library() -> None:
    """One source: the worker's tests/compare.py is nbworker/compare.py, which the notebook
    replay uses too; it imports nothing outside the standard library."""
    import ast

    from nbworker import compare
    from nbworker.export.testfiles import worker_tests

    source = Path(compare.__file__).read_text(encoding="utf-8")
    files = worker_tests(cases=[], handler="handler", streaming=False, notebook_name="nb.ipynb")
    assert files["tests/compare.py"] == source
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


LONG_STREAM_SOURCE = """\
def pages(job):
    for index in range(job["input"]["pages"]):
        yield {"page": index, "text": "lorem ipsum " * 100}
"""


@pytest.mark.slow
def test_a_stream_too_long_to_record_whole_is_compared_by_its_first_chunks_and_count(
    tmp_path: Path,
) -> None:
    """The record keeps the first chunks of a long stream (jobs.RECORD_STREAM_LIMIT) and its
    count; the worker's test compares its first chunks with those, and its count."""
    records = record_runs(LONG_STREAM_SOURCE, "pages", [{"input": {"pages": 600}}], aggregate=True)
    assert records[0]["stream_total"] == 600 and len(records[0]["stream"]) < 600
    cases = testfiles.select_cases(records, handler="pages")
    assert cases[0]["stream_total"] == 600
    files = testfiles.worker_tests(
        cases=cases, handler="pages", streaming=True, notebook_name="worker.ipynb"
    )
    script = worker_script(LONG_STREAM_SOURCE, "pages", return_aggregate_stream=True)
    worker = write_worker(tmp_path / "worker", script, files)
    code, output = run_pytest(worker, "tests/test_handler.py")
    assert code == 0, output
    break_handler(worker, 'job["input"]["pages"]', 'job["input"]["pages"] + 1')
    code, output = run_pytest(worker, "tests/test_handler.py")
    assert code == 1 and "stream: got 601 chunks, recorded 600" in output, output
