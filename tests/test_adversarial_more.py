"""Hostile inputs, second round (issue 12): what the first fixes left open, against the real
components (export and `nbworker test` through the real command line, the magics in a real
InteractiveShell, `%rp_serve` on 127.0.0.1).

Each docstring is one line: the attack, then what "held" means.
"""

from __future__ import annotations

import base64
import http.client
import json
import py_compile
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pytest
from IPython.core.error import UsageError
from nbformat.v4 import new_code_cell, new_notebook, new_output

from nbworker import cli, serve
from nbworker.session import Session

RECORD = "application/vnd.nbworker.run+json"
ECHO = '%%handler\ndef handler(job):\n    return job["input"]'
# built here, so that no scanner flags this file
HF = "hf_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"
PASSWORD = "Tr0ub4dor" + "Horse3xx"  # a password of no known shape
WANDB = "9f3b2c1d8e7a6b5c" + "4d3e2f1a0b9c8d7e6f5a4b3c"  # a W&B key: 40 hex


def one_line(text: str) -> bool:
    return text.count("\n") <= 1 and "Traceback" not in text


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> SimpleNamespace:
    """The real command line, in this process; an exception escaping it counts as exit
    "traceback" (what the user would see)."""
    try:
        code: Any = cli.main(list(args))
    except SystemExit as exit:
        code = exit.code
    except Exception as err:
        code = f"traceback: {type(err).__name__}: {err}"
    out, err = capsys.readouterr()
    return SimpleNamespace(code=code, out=out, err=err)


def all_text(folder: Path) -> str:
    if not folder.exists():
        return ""
    return "".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in folder.rglob("*")
        if path.is_file()
    )


def record(job_input: Any, output: Any = 1) -> dict[str, Any]:
    return {
        "handler": "handler",
        "job": {"id": "local_test", "input": job_input},
        "status": "COMPLETED",
        "output": output,
        "error": None,
        "stream": None,
    }


def recorded(*records: dict[str, Any]) -> Any:
    nb = new_notebook(cells=[new_code_cell(ECHO), new_code_cell('%rp_test {"input": {}}')])
    nb.cells[1].outputs = [new_output("display_data", data={RECORD: r}) for r in records]
    return nb


def export(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, nb: Any, name: str = "nb.ipynb"
) -> SimpleNamespace:
    nbformat.write(nb, tmp_path / name)
    done = run_cli(capsys, "export", str(tmp_path / name), "-o", str(tmp_path / "w"))
    done.shipped = all_text(tmp_path / "w")
    return done


def assert_not_shipped(done: SimpleNamespace, secret: str) -> None:
    assert secret not in done.out + done.err
    assert secret not in done.shipped, f"exit {done.code}: the secret was written into the worker"


def cell_nb(source: str) -> Any:
    """A notebook of `source` (and the echo handler, unless `source` is the handler)."""
    cells = [new_code_cell(source)]
    if not source.startswith("%%handler"):
        cells.append(new_code_cell(ECHO))
    return new_notebook(cells=cells)


# =========================================================================== export: what ships


def test_export_a_token_as_a_cell_id(capsys, tmp_path: Path) -> None:
    """a Hugging Face token as a cell's `id` (the copy in tests/ keeps ids)? held: no written file holds it."""
    nb = cell_nb(ECHO)
    nb.cells[0].id = HF
    assert_not_shipped(export(capsys, tmp_path, nb), HF)


def test_export_a_token_in_a_cells_tags(capsys, tmp_path: Path) -> None:
    """a token in a cell's `metadata.tags` (the copy keeps tags)? held: no written file holds it."""
    nb = cell_nb(ECHO)
    nb.cells[0].metadata["tags"] = ["parameters", HF]
    assert_not_shipped(export(capsys, tmp_path, nb), HF)


def test_export_a_token_in_the_kernelspec(capsys, tmp_path: Path) -> None:
    """a token in the notebook's kernelspec metadata (the copy keeps it)? held: no written file holds it."""
    nb = cell_nb(ECHO)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": HF, "language": "python"}
    assert_not_shipped(export(capsys, tmp_path, nb), HF)


def test_export_a_password_exported_in_a_bash_cell(capsys, tmp_path: Path) -> None:
    """`%%bash` / `export DB_PASSWORD=...` (the copy ships every cell)? held: exit 1, nothing written."""
    done = export(capsys, tmp_path, cell_nb(f"%%bash\nexport DB_PASSWORD={PASSWORD}"))
    assert_not_shipped(done, PASSWORD)


def test_export_a_wandb_key_on_a_shell_line(capsys, tmp_path: Path) -> None:
    """`!wandb login <40-hex key>`? held: exit 1, nothing written."""
    assert_not_shipped(export(capsys, tmp_path, cell_nb(f"!wandb login {WANDB}")), WANDB)


def test_export_a_basic_authorization_header(capsys, tmp_path: Path) -> None:
    """`{"Authorization": "Basic <base64 of user:password>"}` in the handler cell? held: exit 1, nothing written."""
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    source = f'%%handler\nH = {{"Authorization": "Basic {basic}"}}\ndef handler(job):\n    return 1'
    assert_not_shipped(export(capsys, tmp_path, cell_nb(source)), basic)


@pytest.mark.parametrize("call", ["os.environ.get", "os.getenv"])
def test_export_a_secret_as_the_default_of_an_environment_read(
    capsys, tmp_path: Path, call: str
) -> None:
    """`os.environ.get("HF_TOKEN", "<literal>")`: the literal is the secret? held: exit 1, nothing written."""
    source = f'%%handler\nimport os\nT = {call}("HF_TOKEN", "{PASSWORD}")\ndef handler(job):\n    return 1'
    assert_not_shipped(export(capsys, tmp_path, cell_nb(source)), PASSWORD)


def test_export_a_secret_as_a_parameter_default(capsys, tmp_path: Path) -> None:
    """`def handler(job, token="<literal>")`? held: exit 1, nothing written."""
    source = f'%%handler\ndef handler(job, token="{PASSWORD}"):\n    return 1'
    assert_not_shipped(export(capsys, tmp_path, cell_nb(source)), PASSWORD)


def test_export_a_secret_in_an_x_api_key_header(capsys, tmp_path: Path) -> None:
    """`{"X-Api-Key": "<literal>"}` (the usual header of many APIs)? held: exit 1, nothing written."""
    source = f'%%handler\nH = {{"X-Api-Key": "{PASSWORD}"}}\ndef handler(job):\n    return 1'
    assert_not_shipped(export(capsys, tmp_path, cell_nb(source)), PASSWORD)


def test_export_a_writefile_dotenv_cell(capsys, tmp_path: Path) -> None:
    """`%%writefile .env` / `DB_PASSWORD=...`? held: exit 1, nothing written."""
    done = export(capsys, tmp_path, cell_nb(f"%%writefile .env\nDB_PASSWORD={PASSWORD}"))
    assert_not_shipped(done, PASSWORD)


def test_export_a_dotenv_text_in_a_string(capsys, tmp_path: Path) -> None:
    """a `.env`-style triple-quoted string holding `DB_PASSWORD=...`? held: exit 1, nothing written."""
    source = f'%%handler\nENV = """\nDB_PASSWORD={PASSWORD}\n"""\ndef handler(job):\n    return 1'
    assert_not_shipped(export(capsys, tmp_path, cell_nb(source)), PASSWORD)


def test_export_a_token_named_as_one_in_a_recorded_job(capsys, tmp_path: Path) -> None:
    """a run record whose job input is `{"hf_token": "<no known shape>"}` (ships in cases.json, tests.json)? held: exit 1, nothing written."""
    done = export(capsys, tmp_path, recorded(record({"hf_token": PASSWORD})))
    assert_not_shipped(done, PASSWORD)


@pytest.mark.parametrize(
    "source",
    [
        '%%handler\nT = "hf_" "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"\ndef handler(job):\n    return T',
        "%pip install git+https://user:" + PASSWORD + "@github.com/org/repo.git",
        '%%handler\ndef handler(job):\n    """Use ' + HF + '"""\n    return 1',
        f'%%handler\nimport os\nos.environ.setdefault("HF_TOKEN", "{PASSWORD}")\n'
        "def handler(job):\n    return 1",
    ],
    ids=["split-literal", "pip-basic-auth-url", "docstring", "environ-setdefault"],
)
def test_export_secret_bypasses_that_hold(capsys, tmp_path: Path, source: str) -> None:
    """a token split by concatenation, in a `%pip` URL, a docstring, `setdefault`? held: exit 1 in one line, nothing written."""
    done = export(capsys, tmp_path, cell_nb(source))
    assert done.code == 1 and one_line(done.err), (done.code, done.err)
    assert not (tmp_path / "w").exists()


# =========================================================================== export: false positives

_IMAGE = base64.b64encode(random.Random(1).randbytes(3000)).decode()


@pytest.mark.parametrize(
    "nb",
    [
        recorded(record({"request_id": "3f2b8c1e-9d4a-4e7b-8c6f-1a2b3c4d5e6f"})),
        recorded(record({"image": _IMAGE}, output={"image": _IMAGE})),
        cell_nb(
            '%%handler\nfrom transformers import AutoModel\nm = AutoModel.from_pretrained("gpt2", '
            'revision="607a30d783dfa663caf39e06633721c8d4cfcd7e")\ndef handler(job):\n    return 1'
        ),
        cell_nb(
            "%%handler\ntokenizer = None\ntokenizer.pad_token = tokenizer.eos_token\n"
            'stop_token = "<|im_end|>"\ndef handler(job):\n    return 1'
        ),
        cell_nb(
            '%%handler\nNEG = "lowres, bad anatomy, bad hands, text, error, missing fingers, '
            'extra digit, fewer digits, cropped, worst quality"\ndef handler(job):\n    return 1'
        ),
    ],
    ids=["uuid", "base64-image-record", "model-revision", "pad-token", "negative-prompt"],
)
def test_export_false_positives_that_hold(capsys, tmp_path: Path, nb: Any) -> None:
    """a UUID, a base64 image in a record, a pinned revision, pad_token, a negative prompt? held: exported, exit 0."""
    done = export(capsys, tmp_path, nb)
    assert done.code == 0, done.err


def test_export_the_aws_secrets_manager_boilerplate(capsys, tmp_path: Path) -> None:
    """`secret_name = "prod/db"` (AWS's own sample for reading a secret: a name, no secret)? held: exported, exit 0."""
    source = (
        '%%handler\nimport boto3\nsecret_name = "prod/db"\nregion_name = "us-east-1"\n'
        "def handler(job):\n    return 1"
    )
    done = export(capsys, tmp_path, cell_nb(source))
    assert done.code == 0, done.err


@pytest.mark.parametrize(
    "line",
    [
        'SEED = "9f3b2c1d8e7a6b5c4d3e2f1a0b9c8d7e"',
        'EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"',
    ],
    ids=["seed-32-hex", "bare-sha256"],
)
def test_export_a_hex_seed(capsys, tmp_path: Path, line: str) -> None:
    """`SEED = "<32 hex digits>"`, a bare sha256 literal (hex as random as a 32-hex API key,
    and a seed can be a private key)? held: refused naming the rule; with detect-secrets'
    pragma on the line, exported."""
    source = f"%%handler\n{line}\ndef handler(job):\n    return 1"
    done = export(capsys, tmp_path, cell_nb(source))
    assert done.code == 1, done.err
    assert "cell 0, line 2: Hex High Entropy String (detect-secrets)" in done.err, done.err
    allowed = source.replace(line, f"{line}  # pragma: allowlist secret")
    done = export(capsys, tmp_path, cell_nb(allowed))
    assert done.code == 0, done.err


# =========================================================================== export: paths


@pytest.mark.parametrize("name", ["a'b.ipynb", "a$(id).ipynb", "a{x}.ipynb", "[ab].ipynb"])
def test_export_a_notebook_named_with_quotes_and_braces(capsys, tmp_path: Path, name: str) -> None:
    """a notebook named `a'b.ipynb`, `a$(id).ipynb`, `a{x}.ipynb`? held: exit 0 and every written .py compiles."""
    done = export(capsys, tmp_path, recorded(record({})), name=name)
    assert done.code == 0, done.err
    for path in (tmp_path / "w").rglob("*.py"):
        py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


@pytest.mark.parametrize(
    "content", [b'{"files": {"handler.py": 5}}', b'{"files": []}', b"[1]", b"\xff"]
)
def test_export_over_a_garbled_manifest(capsys, tmp_path: Path, content: bytes) -> None:
    """the manifest hand-edited into garbage, then export again? held: no traceback, exit 0 or one line."""
    assert export(capsys, tmp_path, cell_nb(ECHO)).code == 0
    (tmp_path / "w" / ".nbworker-export.json").write_bytes(content)
    done = export(capsys, tmp_path, cell_nb(ECHO))
    assert done.code in (0, 1) and "Traceback" not in done.err, (done.code, done.err)


@pytest.mark.slow  # processes
def test_export_four_times_at_once_into_one_folder(tmp_path: Path) -> None:
    """four `nbworker export` processes into the same folder at once? held: each exits 0, and a fifth finds nothing edited."""
    nbformat.write(recorded(record({})), tmp_path / "nb.ipynb")
    command = [sys.executable, "-m", "nbworker.cli", "export", "nb.ipynb", "-o", "w"]
    processes = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [(process.wait(120), process.stderr.read()) for process in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert [code for code, _ in results] == [0] * 4, results
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert not list((tmp_path / "w").rglob("*.tmp*")), "temporary files left behind"


# =========================================================================== serve


@pytest.fixture(scope="module")
def served() -> Iterator[SimpleNamespace]:
    session = Session()
    ran: list[str] = []

    def handler(job: dict[str, Any]) -> Any:
        ran.append(job["id"])
        return job["input"]

    session.register_handler(handler, name="handler")
    server = serve.serve(session, port=0, runsync_wait=10)
    yield SimpleNamespace(port=server.port, ran=ran)
    server.stop(grace=0.2)
    session.close()


def post(port: int, headers: dict[str, str], body: bytes = b'{"input": {"a": 1}}') -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("POST", "/runsync", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "host",
    [
        "localhost.:{port}",
        "127.0.0.1",
        "127.1:{port}",
        "[::ffff:127.0.0.1]:{port}",
        "0x7f000001:{port}",
        "127.0.0.1:{port}@evil.example",
        "127.0.0.1:0{port}",
        "127.0.0.2:{port}",
    ],
)
def test_serve_host_spellings_of_loopback(served: SimpleNamespace, host: str) -> None:
    """a Host of another spelling (`127.1`, `0x7f000001`, no port, a trailing dot)? held: 403, no job run."""
    before = len(served.ran)
    assert post(served.port, {**JSON, "Host": host.format(port=served.port)}) == 403
    assert len(served.ran) == before


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:{port}/",
        "null",
        "http://127.0.0.1:{port}.evil.example",
        "https://127.0.0.1:{port}",
    ],
)
def test_serve_origins_near_its_own(served: SimpleNamespace, origin: str) -> None:
    """an Origin with a trailing slash, `null` (sandboxed iframe), a suffix, https? held: 403, no job run."""
    before = len(served.ran)
    assert post(served.port, {**JSON, "Origin": origin.format(port=served.port)}) == 403
    assert len(served.ran) == before


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain; charset=application/json",
        "text/plain;application/json",
        "application/csp-report",
    ],
)
def test_serve_content_types_a_page_can_send(served: SimpleNamespace, content_type: str) -> None:
    """a POST a page sends without preflight (a form, multipart, text/plain dressed as JSON, a CSP report)? held: 415, no job run."""
    before = len(served.ran)
    assert post(served.port, {"Content-Type": content_type}) == 415
    assert len(served.ran) == before


def test_serve_a_reporting_api_post(served: SimpleNamespace) -> None:
    """a Reporting API POST (`application/reports+json`, a JSON list, sent by browsers unasked)? held: refused, no job run."""
    before = len(served.ran)
    body = json.dumps([{"type": "csp-violation", "body": {"input": {}}}]).encode()
    assert post(served.port, {"Content-Type": "application/reports+json"}, body) in (400, 415)
    assert len(served.ran) == before


def test_serve_a_header_line_of_a_megabyte(served: SimpleNamespace) -> None:
    """a request with a 1 MB header line? held: a 431 answer, and the server answers /health after."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=15) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * (1 << 20) + b"\r\n\r\n"
        )
        answer = sock.recv(64)
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert post(served.port, JSON) == 200


# =========================================================================== magics


def test_a_handler_returning_an_int_of_100000_digits(shell) -> None:
    """`return 10**100000` (str() refuses ints over 4300 digits)? held: the record is JSON Jupyter can save, with a warning."""
    shell.ok("%%handler\ndef handler(job):\n    return 10**100000")
    result = shell.record('%rp_test {"input": {}}')
    json.dumps(result)  # what the kernel sends and Jupyter saves


def test_a_streaming_handler_yielding_a_huge_int(shell) -> None:
    """a generator yielding `10**5000`? held: the cell does not raise; the run is recorded (FAILED or warned)."""
    shell.ok("%%handler\ndef handler(job):\n    yield 10**5000")
    result = shell.run('%rp_test {"input": {}}')
    assert result.error_in_exec is None, (
        f"{type(result.error_in_exec).__name__}: {result.error_in_exec}"
    )
    assert len(shell.records(result)) == 1


def test_rp_test_a_job_with_a_5000_digit_number(shell) -> None:
    """`%rp_test {"input": {"n": <5000 digits>}}`? held: a one-line UsageError, not a ValueError traceback."""
    shell.ok(ECHO)
    result = shell.run('%rp_test {"input": {"n": ' + "9" * 5000 + "}}")
    assert isinstance(result.error_in_exec, UsageError), f"{type(result.error_in_exec).__name__}"
    assert "\n" not in str(result.error_in_exec)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # del-raises
@pytest.mark.parametrize(
    "body",
    [
        "import sys\ndef handler(job):\n    for m in [m for m in sys.modules if m.startswith('runpod')]:\n"
        "        del sys.modules[m]\n    return 1",
        "class D:\n    def __del__(self):\n        raise RuntimeError('del bomb')\n"
        "def handler(job):\n    D()\n    return 1",
        "class F(float):\n    def __repr__(self):\n        raise RuntimeError('repr')\n"
        "    __str__ = __repr__\ndef handler(job):\n    return F(1.5)",
    ],
    ids=["deletes-runpod-modules", "del-raises", "float-subclass-repr-raises"],
)
def test_handlers_that_hold(shell, body: str) -> None:
    """a handler deleting runpod from sys.modules, a `__del__` raising, a float whose repr raises? held: COMPLETED twice."""
    shell.ok("%%handler\n" + body)
    assert shell.record('%rp_test {"input": {}}')["status"] == "COMPLETED"
    assert shell.record('%rp_test {"input": {}}')["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "first, second",
    [
        ("x = 1", "x = 1.0"),
        ("x = True", "x = 1"),
        ("x = 0.0", "x = -0.0"),
        ("!echo a\nx = 1", "!echo b\nx = 1"),
    ],
    ids=["int-float", "bool-int", "minus-zero", "shell-line"],
)
def test_model_cache_key_of_equal_comparing_constants(shell, first: str, second: str) -> None:
    """`%%model` cells whose constants compare equal (`1` / `1.0`, `True` / `1`, `0.0` / `-0.0`) or whose `!` line changes? held: a reload, not a cache hit."""
    shell.ok(f"%%model m\n{first}")
    assert "cache hit" not in shell.ok(f"%%model m\n{second}").captured.stdout
    assert repr(shell.ipython.user_ns["x"]) == repr(eval(second.split("= ")[-1]))


# =========================================================================== nbworker test


def test_nbworker_test_output_dir_that_is_a_file(capsys, tmp_path: Path) -> None:
    """`nbworker test --output-dir FILE`? held: exit 2, one line naming --output-dir, no traceback."""
    nbformat.write(recorded(record({})), tmp_path / "nb.ipynb")
    (tmp_path / "a-file").write_text("keep me\n")
    done = run_cli(
        capsys, "test", str(tmp_path / "nb.ipynb"), "--output-dir", str(tmp_path / "a-file")
    )
    assert done.code == 2, done.code
    assert done.err.startswith("nbworker test: error: ") and one_line(done.err), done.err
    assert (tmp_path / "a-file").read_text() == "keep me\n"


@pytest.mark.slow  # would start a kernel
def test_nbworker_test_parameter_name_that_is_code(capsys, tmp_path: Path) -> None:
    """`-p 'x; import os' 1` (papermill writes the name into code as it is)? held: exit 2, one line naming -p, nothing run."""
    nb = recorded(record({}))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "nb.ipynb")
    done = run_cli(capsys, "test", str(tmp_path / "nb.ipynb"), "-p", "x; import os", "1")
    assert done.code == 2, (done.code, done.out[-300:])
    assert done.err.startswith("nbworker test: error: ") and one_line(done.err), done.err
