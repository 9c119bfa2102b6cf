"""Export as an attacker or a careless user would try it: no credential ships (in a cell, an
output or a run record), nothing is written outside the worker directory or with the wrong
mode, and a bad notebook or path is one line of error, never a traceback.

Secrets are put together here from pieces, so that this file holds none of their shapes
whole for a scanner to trip over.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nbworker import cli
from nbworker.export import ExportError, build_worker, export_notebook
from nbworker.export.secrets import find_in_files, find_in_records, find_secrets
from nbworker.export.write import MANIFEST, write_files
from nbworker.record import RECORD_MIMETYPE as RECORD

ROOT = Path(__file__).resolve().parent.parent
HANDLER = "%%handler\ndef handler(job):\n    return {'n': job['input'].get('n', 0)}"
HF = "hf_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCb"
RPA = "rpa_" + "OUTPUTONLY0TOKEN0" + "9876543210fedcba"
OPENAI = "sk-proj-" + "Q7mK2vN9xR4tY8wZ1aB5cD3eF6gH0jL2nP4qS6uV8xZ0bD2fH4jK"
PASSWORD = "Zq8-Passw0rd" + "-x71"


def record(handler: str = "handler", **fields: Any) -> dict[str, Any]:
    run = {"handler": handler, "status": "COMPLETED", "job": {"id": "j", "input": {"n": 1}}}
    run.update(output={"n": 1}, error=None, stream=None, refresh_worker=False)
    run.update(fields)
    return run


def run_cell(*records: Any) -> Any:
    cell = new_code_cell('%rp_test {"input": {"n": 1}}')
    cell.outputs = [new_output("display_data", data={RECORD: run}) for run in records]
    return cell


def notebook(*cells: Any) -> Any:
    return new_notebook(cells=[new_code_cell(c) if isinstance(c, str) else c for c in cells])


def refused(nb: Any) -> str:
    with pytest.raises(ExportError) as caught:
        build_worker(nb)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ secrets in sources


@pytest.mark.parametrize(
    ("line", "secret", "rule"),
    [
        ('HEADERS = {{"Authorization": "Bearer {}"}}', OPENAI, "an OpenAI API key"),
        ('H = {{"Authorization": "Bearer {}"}}', "9f8e7d6c5b4a3210ffee", "a bearer token"),
        (
            'DB = "postgresql://admin:{}@db.internal/prod"',
            PASSWORD,
            "Basic Auth Credentials (detect-secrets)",
        ),
        ('CONFIG = {{"api_key": "{}"}}', "a8f5f167f44f4964e6c9", "a literal keyed api_key"),
        ('SECRET_KEY = "{}"', "django-insecure-9x!k2@h7q", "a literal assigned to SECRET_KEY"),
        (
            'os.environ.update({{"OPENAI_API_KEY": "{}"}})',
            "Zm9vYmFyYmF6cXV4MTIz",
            "a literal keyed OPENAI_API_KEY",
        ),
        (
            'requests.get(URL, auth=("admin", "{}"))',
            PASSWORD,
            "a user name and password given as auth",
        ),
        ('AUTH = ("admin", "{}")', PASSWORD, "a user name and password given as AUTH"),
        ('os.environ.setdefault("X_TOKEN", "{}")', "q1w2e3r4t5", "a literal assigned to X_TOKEN"),
        (
            'T = "{}"',
            "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z12",
            "GitHub Token (detect-secrets)",
        ),
        ('K = "{}"', "sk-ant-api03-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7t", "an Anthropic API key"),
        ("%env HF_TOKEN={}", "q1w2e3r4t5y6", "a literal assigned to HF_TOKEN"),
    ],
)
def test_a_credential_in_a_cell_is_refused_naming_cell_line_and_rule(
    line: str, secret: str, rule: str
) -> None:
    nb = notebook("import os, requests", f"x = 1\n{line.format(secret)}", HANDLER)
    message = refused(nb)
    assert message.startswith(f"cell 1, line 2: {rule}"), message
    assert secret not in message and secret[:8] not in message


@pytest.mark.parametrize(
    "source",
    [
        'API_KEY = "<your key>"',
        'TOKEN = "xxxxxxxxxxxxxxxx"',
        'token = os.environ["HF_TOKEN"]',
        'login(token="$TOKEN")',
        'tokenizer.pad_token = "[PAD]"',
        'MODEL = "sentence-transformers/all-MiniLM-L6-v2"',
        'H = {"Authorization": f"Bearer {token}"}',
        'M = from_pretrained("gpt2", revision="3f8a1c2b9d0e4f5a6b7c8d9e0f1a2b3c4d5e6f70")',
        'AUTH = ("user", os.environ["PASSWORD"])',
        'DB = "postgresql://admin:${DB_PASSWORD}@db/prod"',
        'KEY = "AKIAIOSFODNN7EXAMPLE"',  # AWS's documented example
        'IP = "8.8.8.8"',
        'RUN = "550e8400-e29b-41d4-a716-446655440000"',
        "# Bearer authentication, as the API documents it",
    ],
)
def test_placeholders_and_ordinary_code_pass(source: str) -> None:
    assert find_secrets([(0, source)]) == []


@pytest.mark.parametrize(
    "source",
    [
        'secret_name = "prod/db"\ntoken_type = "bearer"\npassword_field = "pw_input"',
        'token_url = "https://auth.example.com/oauth/token"',
        "!git checkout 607a30d783dfa663caf39e06633721c8d4cfcd7e",
        "!huggingface-cli download sentence-transformers/all-MiniLM-L6-v2 --local-dir ./m",
        "%%bash\nexport PASSWORD_FILE=/run/secrets/db\nexport HF_TOKEN=$(cat /run/secrets/hf)",
        "%%writefile .env\nDB_PASSWORD=changeme\nDB_HOST=db.internal",
        'def handler(job, token=None, api_key=""):\n    return 1',
        'T = os.environ.get("HF_TOKEN", "")',
        '"""Call it with\ntoken=<your token>\n"""',
    ],
)
def test_names_paths_commits_and_empty_defaults_pass(source: str) -> None:
    assert find_secrets([(0, source)]) == []


def test_a_streamed_text_token_in_a_record_is_no_finding() -> None:
    text = json.dumps({"output": [{"token": "ONE"}, {"token": " world"}]}, indent=1)
    assert find_in_records([(1, 0, text)]) == []
    named = json.dumps({"job": {"input": {"hf_token": PASSWORD}}}, indent=1)
    assert [f.kind for f in find_in_records([(1, 0, named)])] == ["a literal keyed hf_token"]


def test_the_example_notebooks_have_no_finding() -> None:
    from nbworker.export import trimmed

    paths = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("tests/data/*.ipynb"))
    assert len(paths) >= 7
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert find_secrets([(i, c.source) for i, c in enumerate(nb.cells)]) == [], path.name
        assert find_in_records(trimmed.records_text(nb)) == [], path.name
        files = dict(build_worker(path).files)
        files.pop(f"tests/{path.name}")
        assert find_in_files(files) == [], path.name


def test_the_files_every_worker_gets_as_they_are_hold_nothing_of_the_notebook() -> None:
    """export scans every file it writes but these (`testfiles.FIXED`): they are nbworker's
    own text, the same whatever the notebook; scanned here, once for all workers."""
    from nbworker import compare
    from nbworker.export import testfiles

    texts = {
        "tests/compare.py": {Path(compare.__file__).read_text(encoding="utf-8")},
        "tests/test_handler.py": {
            testfiles.template("handler_tests.py"),
            testfiles.template("stream_handler_tests.py"),
        },
        "tests/test_notebook.py": {testfiles.template("notebook_tests.py")},
    }
    paths = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("tests/data/*.ipynb"))
    requirements = set()
    for path in paths:
        files = build_worker(path).files
        assert set(files) >= testfiles.FIXED, path.name
        for name, allowed in texts.items():
            assert files[name] in allowed, (path.name, name)
        requirements.add(files["tests/requirements.txt"])
    assert len(requirements) == 1
    every = {name: text for name, options in texts.items() for text in options}
    every["tests/requirements.txt"] = requirements.pop()
    for name, text in every.items():
        assert find_in_files({name: text}) == [], name


@pytest.mark.parametrize(
    "source",
    [
        f'DB = "postgresql://admin:{PASSWORD}@db/prod"  # pragma: allowlist secret',
        f'# pragma: allowlist nextline secret\nDB = "postgresql://admin:{PASSWORD}@db/prod"',
        "!curl -H 'Authorization: Bearer 9f8e7d6c5b4a3210ffee' x  # pragma: allowlist secret",
        f"%env DB_PASSWORD={PASSWORD}  # pragma: allowlist secret",
        f'SECRET_KEY = "{PASSWORD}"  # pragma: allowlist secret',
    ],
)
def test_detect_secrets_allowlist_pragma_allows_that_line(source: str) -> None:
    assert find_secrets([(0, source)]) == []
    without = source.replace("pragma: allowlist nextline secret", "a comment")
    without = without.replace("  # pragma: allowlist secret", "")
    assert find_secrets([(0, without)]) != []


def test_a_thousand_cells_scan_in_well_under_a_second_or_so() -> None:
    cells = [c.source for c in nbformat.read(ROOT / "notebooks/quickstart.ipynb", 4).cells]
    sources = [(i, cells[i % len(cells)]) for i in range(1000)]
    find_secrets(sources[:1])  # detect-secrets' plugins load once
    started = time.perf_counter()
    assert find_secrets(sources) == []
    assert time.perf_counter() - started < 3  # about 0.35 s here; generous for slow machines


# ------------------------------------------------------------------- outputs, records


def test_a_token_only_in_outputs_metadata_or_attachments_is_not_shipped(tmp_path: Path) -> None:
    printer = new_code_cell('import os\nprint(os.environ["HF_TOKEN"])')
    printer.metadata.update(tags=["keep-me"], secret_note=RPA)
    printer.outputs = [
        new_output("stream", name="stdout", text=HF + "\n"),
        new_output("execute_result", data={"text/plain": repr(RPA)}, execution_count=1),
        new_output("display_data", data={"text/html": f"<b>{HF}</b>"}),
        new_output("error", ename="KeyError", evalue=HF, traceback=[f"KeyError: {HF}"]),
    ]
    shown = new_markdown_cell("![x](attachment:x.txt)")
    shown.attachments = {"x.txt": {"text/plain": HF}}
    runs = run_cell(record(), record(status="FAILED", error="boom"))
    runs.outputs.insert(0, new_output("stream", name="stdout", text=RPA))
    runs.outputs[1].data["text/plain"] = f"ran with {RPA}"  # beside the record, in one output
    nb = notebook(printer, shown, HANDLER, runs)
    nb.metadata["widgets"] = {"state": {"token": RPA}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    report = export_notebook(nb, tmp_path / "w")
    for path in (tmp_path / "w").rglob("*"):
        if path.is_file():
            assert HF not in path.read_text() and RPA not in path.read_text(), path
    copy = nbformat.read(tmp_path / "w" / "tests" / "notebook.ipynb", as_version=4)
    nbformat.validate(copy)
    assert [c.source for c in copy.cells] == [c.source for c in nb.cells]
    assert copy.cells[0].metadata == {"tags": ["keep-me"]} and copy.cells[0].outputs == []
    assert "attachments" not in copy.cells[1]
    assert [list(o.data) for o in copy.cells[3].outputs] == [[RECORD], [RECORD]]
    assert [o.data[RECORD]["status"] for o in copy.cells[3].outputs] == ["COMPLETED", "FAILED"]
    assert sorted(copy.metadata) == ["kernelspec"]
    assert report.handler == "handler"


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"output": {"token": HF}}, "a Hugging Face token"),
        ({"job": {"input": {"key": RPA}}}, "a RunPod API key"),
        ({"error": f"could not reach postgresql://admin:{PASSWORD}@db/x"}, "Basic Auth"),
    ],
)
def test_a_credential_in_a_run_record_is_refused_naming_the_output(
    tmp_path: Path, fields: dict[str, Any], rule: str
) -> None:
    runs = run_cell(record(), record(**fields))
    runs.outputs.insert(0, new_output("stream", name="stdout", text="hello\n"))
    message = refused(notebook(HANDLER, runs))
    assert message.startswith(f"cell 1, output 2: {rule}"), message
    for secret in (HF, RPA, PASSWORD):
        assert secret not in message


def test_a_base64_image_a_handler_returns_is_no_finding() -> None:
    image = base64.b64encode(bytes(range(256)) * 8 + os.urandom(512)).decode()
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    runs = run_cell(record(output={"png": image, "sha256": digest, "vec": [0.1, 0.2]}))
    report = build_worker(notebook(HANDLER, runs))
    assert image in report.files["tests/cases.json"]


def test_the_last_check_names_the_file_and_line() -> None:
    files = {"handler.py": "x = 1\n", "tests/cases.json": f'{{\n  "output": "{HF}"\n}}\n'}
    (finding,) = find_in_files(files)
    assert (finding.file, finding.line, finding.kind) == (
        "tests/cases.json",
        2,
        "a Hugging Face token",
    )


# ------------------------------------------------------------------ only inside DIR


def test_a_link_inside_the_worker_is_never_written_through(tmp_path: Path) -> None:
    nb = notebook(HANDLER, run_cell(record()))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = tmp_path / "victim.py"
    victim.write_text("precious = True\n")
    cases = {
        "tests": lambda w: (w / "tests").symlink_to(elsewhere, target_is_directory=True),
        "handler.py": lambda w: (w / "handler.py").symlink_to(victim),
        MANIFEST: lambda w: (w / MANIFEST).symlink_to(victim),
        "tests/x": lambda w: ((w / "tests").mkdir(), (w / "tests/x").symlink_to(w / "nowhere")),
    }
    for name, make in cases.items():
        worker = tmp_path / f"w-{name.replace('/', '-')}"
        worker.mkdir()
        make(worker)
        if name == "tests/x":  # a link export does not write: left alone
            export_notebook(nb, worker)
            assert (worker / "tests/x").is_symlink()
            continue
        with pytest.raises(ExportError, match=r"is a symbolic link: export writes only inside"):
            export_notebook(nb, worker, force=True)
        assert sorted(p.name for p in worker.iterdir()) == [name], "nothing written"
    assert list(elsewhere.iterdir()) == []
    assert victim.read_text() == "precious = True\n"


def test_a_fifo_or_a_folder_where_a_file_goes_is_refused_not_read(tmp_path: Path) -> None:
    nb = notebook(HANDLER)
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "handler.py")  # reading it would block for ever
    (tmp_path / "folder" / "Dockerfile").mkdir(parents=True)
    with pytest.raises(ExportError, match=r"handler\.py is not a regular file"):
        export_notebook(nb, tmp_path / "fifo", force=True)
    with pytest.raises(ExportError, match="Dockerfile is a folder"):
        export_notebook(nb, tmp_path / "folder", force=True)


@pytest.mark.parametrize("relative", ["../x.py", "/tmp/x.py", "tests/../../x.py", "."])
def test_a_path_out_of_the_worker_is_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ExportError, match="not a path inside the worker"):
        write_files(tmp_path / "w", {"ok.txt": "1\n", relative: "2\n"})
    assert not (tmp_path / "w").exists() and not (tmp_path / "x.py").exists()


@pytest.mark.slow  # a process
def test_modes_follow_the_umask_and_a_replaced_file_keeps_its_own(tmp_path: Path) -> None:
    """In a process of its own (the umask is the process's): the real CLI's main, twice."""
    nb = notebook(HANDLER, run_cell(record()))
    nbformat.write(nb, tmp_path / "nb.ipynb")
    script = textwrap.dedent(
        """
        import os, sys
        from nbworker import cli
        os.umask(0o022)
        assert cli.main(["export", "nb.ipynb", "-o", "w022"]) == 0
        os.umask(0o077)
        assert cli.main(["export", "nb.ipynb", "-o", "w077"]) == 0
        os.chmod("w077/handler.py", 0o755)
        os.chmod("w077/Dockerfile", 0o640)
        text = open("nb.ipynb").read().replace("get('n', 0)", "get('n', 1)")
        open("nb.ipynb", "w").write(text)
        assert cli.main(["export", "nb.ipynb", "-o", "w077"]) == 0
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

    def modes(folder: str) -> set[str]:
        root = tmp_path / folder  # the CLI made it a git repository too: git's files aside
        paths = [p for p in root.rglob("*") if p.name != "handler.py"]
        paths = [p for p in paths if ".git" not in p.relative_to(root).parts]
        return {oct(stat.S_IMODE(p.stat().st_mode)) for p in paths if p.is_file()}

    assert modes("w022") == {"0o644"}
    assert oct(stat.S_IMODE((tmp_path / "w022" / "tests").stat().st_mode)) == "0o755"
    handler = tmp_path / "w077" / "handler.py"
    assert "get('n', 1)" in handler.read_text()  # replaced
    assert stat.S_IMODE(handler.stat().st_mode) == 0o755  # with the mode it had
    assert stat.S_IMODE((tmp_path / "w077" / "Dockerfile").stat().st_mode) == 0o640
    assert modes("w077") - {"0o640"} == {"0o600"}


# ------------------------------------------------------------- bad notebooks, bad paths


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exit:
        code = int(exit.code or 0)
    return code, capsys.readouterr().err


BAD_NOTEBOOKS = {
    "a-json-list": (b"[]\n", "it holds a JSON list, not an object"),
    "schema": (
        b'{"cells": [{"cell_type": "nope"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
        "is not a valid notebook (nbformat's schema)",
    ),
    "cells-not-a-list": (
        b'{"cells": 5, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
        "its cells are not a list of objects",
    ),
    "no-version": (b'{"cells": []}', "it has no nbformat version"),
    "not-json": (b"{not json", "not JSON (Expecting property name"),
    "not-utf8": (b'{"cells": "\xff\xfe"}', "not UTF-8 text (byte 11)"),
    "empty": (b"", "the file is empty"),
}


@pytest.mark.parametrize("name", sorted(BAD_NOTEBOOKS))
def test_a_bad_notebook_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    content, message = BAD_NOTEBOOKS[name]
    (tmp_path / "nb.ipynb").write_bytes(content)
    code, err = run_cli(capsys, "export", str(tmp_path / "nb.ipynb"), "-o", str(tmp_path / "w"))
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("nbworker export: error: ") and message in err, err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("notebook_arg", "output", "message"),
    [
        ("folder.ipynb", "w", "folder.ipynb is a folder, not a notebook"),
        ("nb.ipynb", "notes.txt", "notes.txt is not a folder: give -o the worker's folder"),
        ("nb.ipynb", "notes.txt/sub", "notes.txt is a file (nothing was written)"),
        ("nb.ipynb", "/sys/nbworker-test/w", "/sys/nbworker-test/w"),  # refused even to root
    ],
)
def test_a_bad_path_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, notebook_arg: str, output: str, message: str
) -> None:
    nbformat.write(notebook(HANDLER), tmp_path / "nb.ipynb")
    (tmp_path / "folder.ipynb").mkdir()
    (tmp_path / "notes.txt").write_text("keep me\n")
    target = output if output.startswith("/") else str(tmp_path / output)
    code, err = run_cli(capsys, "export", str(tmp_path / notebook_arg), "-o", target)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("nbworker export: error: ") and message in err, err
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root")
def test_an_unwritable_parent_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    nbformat.write(notebook(HANDLER), tmp_path / "nb.ipynb")
    (tmp_path / "locked").mkdir(mode=0o500)
    code, err = run_cli(
        capsys, "export", str(tmp_path / "nb.ipynb"), "-o", str(tmp_path / "locked/w")
    )
    assert code == 1 and "is not writable" in err and err.count("\n") == 1, err


@pytest.mark.slow  # a process
def test_the_real_command_refuses_a_bad_notebook_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "list.ipynb").write_text("[]\n")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("nbworker")), "export", "list.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert done.stderr == (
        "nbworker export: error: cannot read list.ipynb as a notebook: it holds a JSON list, "
        "not an object\n"
    )
    assert not (tmp_path / "list-worker").exists()


# ------------------------------------------------------------------- hostile notebooks


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (
            [
                "import asyncio",
                "%%handler\nasync def handler(job):\n    return 1\nawait asyncio.sleep(0)",
            ],
            "cell 1 (%%handler), line 4: `await asyncio.sleep(0)` is IPython syntax",
        ),
        (
            ["X = 1\nasync with lock:\n    X = 2", "%%handler\ndef handler(job):\n    return X"],
            "cell 0, line 2: `async with lock:` is IPython syntax",
        ),
        (
            ["%%handler\ndef handler(job):\n    return 1\nreturn 2"],
            "cell 0 (%%handler), line 4: SyntaxError: 'return' outside function",
        ),
        (
            [
                "X = 1",
                "from __future__ import annotations\nY = X",
                "%%handler\ndef handler(job):\n    return Y",
            ],
            "handler.py does not compile: line 12 (cell 1, exported there): from __future__",
        ),
        (
            ["%%handler class\ndef handler(job):\n    return 1"],
            "%%handler 'class': not a Python name",
        ),
        (
            ["%%handler --concurrency-modifier lambda\ndef handler(job):\n    return 1"],
            "%%handler 'lambda': not a Python name",
        ),
    ],
)
def test_what_the_kernel_allows_but_a_module_does_not_names_the_cell(
    cells: list[str], message: str
) -> None:
    assert message in refused(notebook(*cells))


def test_carriage_returns_and_list_sources_read_as_the_kernel_reads_them() -> None:
    cr = new_code_cell("%%handler\rdef handler(job):\r    return {'cr': 1}\r")
    listed = new_code_cell("")
    listed.source = ["X = 1\r\n", "Y = 2\n"]
    nb = notebook(listed, cr, run_cell(record()))
    report = build_worker(nb)
    assert "def handler(job):\n    return {'cr': 1}\n" in report.files["handler.py"]
    assert "\r" not in report.files["handler.py"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("not a record", "cell 1: run record 1 is a JSON str, not a run record"),
        ([1, 2], "cell 1: run record 1 is a JSON list"),
        (record(job="no dict"), "case-1 of handler (cell 1): the record's job has no input"),
        (record(stream=5), "case-1 of handler (cell 1): the record's stream is not a list"),
        (
            record(output=float("nan")),
            "case-1 of handler (cell 1): case-1 output is not strict JSON",
        ),
    ],
)
def test_a_hostile_record_is_one_error_naming_its_cell(output: Any, message: str) -> None:
    assert message in refused(notebook(HANDLER, run_cell(output)))


def test_a_record_of_another_or_a_pathlike_handler_is_no_case(tmp_path: Path) -> None:
    nb = notebook(HANDLER, run_cell(record(handler="../../x"), record(handler="x; import os")))
    report = export_notebook(nb, tmp_path / "w")
    assert json.loads(report.files["tests/cases.json"])["cases"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


@pytest.mark.parametrize(
    "name", ["$(id).ipynb", "`id`.ipynb", "-rf.ipynb", "a b.ipynb", "..ipynb", "{handler}.ipynb"]
)
def test_an_odd_notebook_name_stays_one_file_in_tests(tmp_path: Path, name: str) -> None:
    nb = notebook(HANDLER)
    nbformat.write(nb, tmp_path / name)
    export_notebook(tmp_path / name, tmp_path / "w")
    assert (tmp_path / "w" / "tests" / name).is_file()
    compile((tmp_path / "w" / "handler.py").read_text(), "handler.py", "exec")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "w"])
