"""Hostile inputs (issue 12), one per test, against the real components: the magics in a real
InteractiveShell, export and `nbworker test` through the real command line, `%rp_serve` on
127.0.0.1, the client against servers on 127.0.0.1 that misbehave on purpose.

Each docstring is one line: the attack, then what "held" means.
"""

from __future__ import annotations

import _thread
import contextlib
import http.client
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pytest
from IPython.core.error import UsageError
from nbformat.v4 import new_code_cell, new_notebook, new_output

from nbworker import cli, serve
from nbworker.client import Endpoint, EndpointError
from nbworker.errors import NbworkerError
from nbworker.session import Session

RECORD = "application/vnd.nbworker.run+json"
ECHO = '%%handler\ndef handler(job):\n    return job["input"]'
KEY = "rpa_" + "ADVERSARIAL0KEY0" + "1234567890abcdef"  # built here: no scanner flags this file


def one_line(text: str) -> bool:
    return text.count("\n") <= 1 and "Traceback" not in text


# =========================================================================== magics


def usage_line(shell, cell: str) -> str:
    """The cell's error: a one-line UsageError (what IPython shows as one line)."""
    result = shell.run(cell)
    error = result.error_before_exec or result.error_in_exec
    assert isinstance(error, UsageError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error)
    return str(error)


def test_rp_test_with_an_unknown_flag(shell) -> None:
    """`%rp_test --bogus JOB`? held: one-line UsageError naming the flag, no run recorded."""
    shell.ok(ECHO)
    result = shell.run('%rp_test --bogus {"input": {}}')
    assert isinstance(result.error_in_exec, UsageError)
    assert "--bogus" in str(result.error_in_exec)
    assert shell.records(result) == []


def test_rp_test_with_a_25_mb_job(shell) -> None:
    """a 25 MB job echoed back? held: COMPLETED, with the warning that RunPod refuses results over 20 MB."""
    shell.ok(ECHO)
    shell.ipython.user_ns["big_job"] = json.dumps({"input": {"blob": "x" * (25 * 1024 * 1024)}})
    record = shell.record("%rp_test --var big_job")
    assert record["status"] == "COMPLETED"
    assert any("20 MB" in warning for warning in record["warnings"]), record["warnings"]


def test_rp_test_with_nan_in_the_job(shell) -> None:
    """JSON with NaN and Infinity? held: COMPLETED, warned, and the record is strict JSON (null)."""
    shell.ok(ECHO)
    record = shell.record('%rp_test {"input": {"a": NaN, "b": -Infinity}}')
    assert record["status"] == "COMPLETED"
    assert any("NaN" in warning for warning in record["warnings"]), record["warnings"]
    json.dumps(record, allow_nan=False)  # what Jupyter saves must be strict JSON


def test_rp_test_with_deeply_nested_json(shell) -> None:
    """job JSON nested 100,000 deep? held: a one-line UsageError, not a RecursionError traceback."""
    shell.ok(ECHO)
    shell.ipython.user_ns["deep_job"] = '{"input": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    usage_line(shell, "%rp_test --var deep_job")


def test_rp_test_with_a_lone_surrogate(shell) -> None:
    """a job holding "\\ud800" (valid JSON, not UTF-8)? held: a result and a warning, no UnicodeEncodeError."""
    shell.ok(ECHO)
    record = shell.record('%rp_test {"input": {"s": "\\ud800"}}')
    assert record["status"] == "COMPLETED"
    assert any("surrogate" in warning for warning in record["warnings"])
    json.dumps(record, ensure_ascii=False).encode("utf-8")  # the record itself is UTF-8


def test_rp_test_file_that_is_not_utf8(shell, tmp_path: Path) -> None:
    """`%rp_test -f` a file of Latin-1 bytes? held: a one-line UsageError naming the file."""
    shell.ok(ECHO)
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"input": {"name": "Jos\xe9"}}')
    assert "latin1.json" in usage_line(shell, f"%rp_test -f {path}")


def test_rp_test_file_pointing_at_etc_passwd(shell) -> None:
    """`%rp_test -f /etc/passwd`? held: a one-line UsageError that quotes none of the file."""
    shell.ok(ECHO)
    message = usage_line(shell, "%rp_test -f /etc/passwd")
    assert "root:" not in message and "/bin/" not in message


def test_rp_test_file_pointing_at_a_directory(shell, tmp_path: Path) -> None:
    """`%rp_test -f DIR`? held: a one-line UsageError, nothing run."""
    shell.ok(ECHO)
    assert "Is a directory" in usage_line(shell, f"%rp_test -f {tmp_path}")


@pytest.mark.parametrize("seconds", ["inf", "1e300"])
def test_rp_test_with_an_endless_timeout(shell, seconds: str) -> None:
    """`%rp_test --timeout inf`? held: a UsageError or a normal COMPLETED run, never an OverflowError."""
    shell.ok(ECHO)
    result = shell.run(f'%rp_test {{"input": {{"a": 1}}}} --timeout {seconds}')
    error = result.error_in_exec
    assert error is None or isinstance(error, UsageError), f"{type(error).__name__}: {error}"
    if error is None:
        assert [r["status"] for r in shell.records(result)] == ["COMPLETED"]


def test_a_handler_that_deletes_itself_from_the_namespace(shell) -> None:
    """a handler popping its own name from globals()? held: the registered function runs again."""
    shell.ok('%%handler\ndef handler(job):\n    globals().pop("handler", None)\n    return 1')
    assert shell.record('%rp_test {"input": {}}')["status"] == "COMPLETED"
    assert "handler" not in shell.ipython.user_ns
    assert shell.record('%rp_test {"input": {}}')["output"] == 1


def test_a_handler_that_registers_another_mid_job(shell) -> None:
    """a handler running `%%handler` for a new one mid-job? held: this job ends on the old, the next runs the new."""
    shell.ok(
        '%%handler\ndef handler(job):\n    get_ipython().run_cell_magic("handler", "", '
        '"def handler(job):\\n    return 2")\n    return 1'
    )
    assert shell.record('%rp_test {"input": {}}')["output"] == 1
    assert shell.record('%rp_test {"input": {}}')["output"] == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_handler_whose_thread_raises(shell) -> None:
    """a handler spawning a thread that raises? held: COMPLETED, and the next run COMPLETED too."""
    shell.ok(
        "%%handler\nimport threading\ndef handler(job):\n"
        "    thread = threading.Thread(target=lambda: 1 / 0)\n"
        "    thread.start()\n    thread.join()\n    return 'fine'"
    )
    assert shell.record('%rp_test {"input": {}}')["output"] == "fine"
    assert shell.record('%rp_test {"input": {}}')["status"] == "COMPLETED"


def test_a_handler_returning_an_object_whose_repr_raises(shell) -> None:
    """a returned object whose __repr__ raises? held: the run is recorded with the not-JSON warning, the cell does not raise."""
    shell.ok(
        "%%handler\nclass Nasty:\n    def __repr__(self):\n        raise RuntimeError('repr bomb')\n"
        "def handler(job):\n    return Nasty()"
    )
    record = shell.record('%rp_test {"input": {}}')
    assert any("JSON" in warning for warning in record["warnings"]), record["warnings"]


def test_a_handler_raising_an_exception_whose_str_raises(shell) -> None:
    """an exception whose __str__ raises? held: a FAILED run with RunPod's error JSON, the cell does not raise."""
    shell.ok(
        "%%handler\nclass Nasty(Exception):\n    def __str__(self):\n        raise RuntimeError('str bomb')\n"
        "def handler(job):\n    raise Nasty()"
    )
    record = shell.record('%rp_test {"input": {}}')
    assert record["status"] == "FAILED"
    assert "Nasty" in json.loads(record["error"])["error_type"]


def test_a_handler_returning_a_self_referencing_dict(shell) -> None:
    """a dict that holds itself? held: recorded, small, with the circular-reference warning."""
    shell.ok(
        '%%handler\ndef handler(job):\n    loop = {}\n    loop["self"] = loop\n    return loop'
    )
    record = shell.record('%rp_test {"input": {}}')
    assert any("Circular reference" in warning for warning in record["warnings"])
    assert len(json.dumps(record)) < 100_000


def test_an_endless_generator_with_a_timeout(shell) -> None:
    """a generator yielding 100-byte chunks forever, --timeout 0.5? held: TIMED_OUT (the
    run ends: a bound far above the timeout, not a speed figure, as CI's load varies), the
    record under 1 MB."""
    shell.ok('%%handler\ndef handler(job):\n    while True:\n        yield "x" * 100')
    started = time.monotonic()
    record = shell.record('%rp_test {"input": {}} --timeout 0.5')
    assert time.monotonic() - started < 20
    assert record["status"] == "TIMED_OUT"
    size = len(json.dumps(record))
    assert size < 1_000_000, f"the record of 0.5 s of chunks is {size} bytes"


@contextlib.contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    """A safety net, not synchronisation: Ctrl-C the main thread if a case hangs."""
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(seconds):
            _thread.interrupt_main()

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_handler_that_ignores_sigalrm_under_a_timeout(shell) -> None:
    """a handler setting SIGALRM to SIG_IGN and spinning, --timeout 0.5? held: TIMED_OUT, not a hung kernel."""
    previous = signal.getsignal(signal.SIGALRM)
    shell.ok(
        "%%handler\nimport signal\ndef handler(job):\n"
        "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass"
    )
    try:
        with interrupt_after(4):
            result = shell.run('%rp_test {"input": {}} --timeout 0.5')
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert [r["status"] for r in shell.records(result)] == ["TIMED_OUT"]


@pytest.mark.filterwarnings("ignore:To exit:UserWarning")
def test_a_model_cell_that_calls_sys_exit(shell) -> None:
    """a `%%model` loader calling sys.exit()? held: the cell fails, nothing of it stays bound, the other entry is still a hit."""
    shell.ok("%%model first\nweights = [1, 2, 3]")
    result = shell.run("%%model second\nhalf_loaded = 1\nimport sys\nsys.exit(1)")
    assert isinstance(result.error_in_exec, SystemExit)
    assert "half_loaded" not in shell.ipython.user_ns
    assert [entry.name for entry in shell.session.cache.info()] == ["first"]
    assert "cache hit" in shell.ok("%%model first\nweights = [1, 2, 3]").captured.stdout
    assert shell.ipython.user_ns["weights"] == [1, 2, 3]


class _Hung(Exception):
    pass


def test_a_model_cell_that_runs_another_model_cell(shell) -> None:
    """a `%%model` cell running `%%model` inside it? held: both load (or a UsageError), never a deadlocked kernel."""

    def hung(signum: int, frame: Any) -> None:
        raise _Hung("the nested %%model waited 5 s for the outer one's lock")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        result = shell.run(
            '%%model outer\nget_ipython().run_cell_magic("model", "inner", "tokenizer = 1")\nencoder = 2'
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    error = result.error_in_exec
    assert not isinstance(error, _Hung), error
    assert error is None or isinstance(error, UsageError), f"{type(error).__name__}: {error}"


def test_rp_serve_twice_on_the_same_port(shell) -> None:
    """`%rp_serve --port P` run twice? held: one server on P, answering; the first one stopped."""
    shell.ok(ECHO)
    try:
        shell.ok("%rp_serve --port 0")
        (first,) = serve.running(shell.session)
        shell.ok(f"%rp_serve --port {first.port}")
        (second,) = serve.running(shell.session)
        assert second is not first and not first.serving and second.port == first.port
        status, _, body = http_call(second.port, "GET", "/health")
        assert status == 200 and "jobs" in json.loads(body)
    finally:
        for server in serve.running(shell.session):
            server.stop(grace=0.2)


def test_rp_serve_on_a_port_another_program_holds(shell) -> None:
    """`%rp_serve --port P` while another program listens on P? held: one-line UsageError, that program untouched."""
    shell.ok(ECHO)
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        assert "in use" in usage_line(shell, f"%rp_serve --port {port}")
        assert serve.running(shell.session) == []
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            other.accept()[0].close()  # still its listener


def test_handler_magic_with_code_as_its_name(shell) -> None:
    """`%%handler __import__('os').system`? held: one-line UsageError, nothing run or registered."""
    message = usage_line(
        shell, "%%handler __import__('os').system\ndef handler(job):\n    return 1"
    )
    assert "not a Python name" in message
    assert list(shell.session.registry) == []


# =========================================================================== export


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> SimpleNamespace:
    """The real command line, in this process (quick: nbformat's import costs seconds here);
    what argparse exits with counts as the exit status."""
    try:
        code = cli.main(list(args))
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return SimpleNamespace(code=code, out=out, err=err)


def notebook(path: Path, *sources: str, **metadata: Any) -> Path:
    nb = new_notebook(cells=[new_code_cell(source) for source in sources])
    nb.metadata.update(metadata)
    nbformat.write(nb, path)
    return path


def all_text(folder: Path) -> str:
    return "".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in folder.rglob("*")
        if path.is_file()
    )


def export_error(done: SimpleNamespace) -> str:
    assert done.code == 1, (done.code, done.out, done.err)
    assert done.err.startswith("nbworker export: error: ") and one_line(done.err), done.err
    return done.err


SECRETS = {
    "openai-bearer-header": (
        "sk-proj-" + "Q7mK2vN9xR4tY8wZ1aB5cD3eF6gH0jL2nP4qS6uV8xZ0bD2fH4jK",
        'HEADERS = {{"Authorization": "Bearer {}"}}',
    ),
    "password-in-url": ("Zq8-Passw0rd-x71", 'DB = "postgresql://admin:{}@db.internal/prod"'),
    "api-key-dict": ("a8f5f167f44f4964e6c998dee827110c", 'CONFIG = {{"api_key": "{}"}}'),
    "secret-key-name": ("django-insecure-9x!k2@h7q#p4m8z", 'SECRET_KEY = "{}"'),
    "environ-update": (
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg",
        'os.environ.update({{"OPENAI_API_KEY": "{}"}})',
    ),
    "basic-auth-tuple": ("Tr0ub4dor-and-3-horses", 'AUTH = ("admin", "{}")'),
    "aws-secret": ("wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY", 'AWS_SECRET_ACCESS_KEY = "{}"'),
    "huggingface": ("hf_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z", 'token = "{}"'),
}


@pytest.mark.parametrize("shape", sorted(SECRETS))
def test_export_refuses_a_secret_in_a_taken_cell(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shape: str
) -> None:
    """a secret of a known shape in the handler's cell? held: exit 1, one line naming cell and line, nothing written, the secret never printed."""
    secret, line = SECRETS[shape]
    cell = f"%%handler\nimport os\n{line.format(secret)}\ndef handler(job):\n    return 1"
    path = notebook(tmp_path / "nb.ipynb", cell)
    done = run_cli(capsys, "export", str(path), "-o", str(tmp_path / "w"))
    message = export_error(done)
    assert "cell 0" in message and "line 3" in message, message
    assert secret not in done.out + done.err
    assert not (tmp_path / "w").exists()


def test_export_never_ships_a_token_found_only_in_outputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """a token only in a printed stream and an execute_result? held: no written file holds it, and it is never printed."""
    printed = "hf_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCb"
    shown = "rpa_" + "OUTPUTONLY0TOKEN0" + "9876543210fedcba"
    nb = new_notebook(
        cells=[new_code_cell('import os\nprint(os.environ["HF_TOKEN"])'), new_code_cell(ECHO)]
    )
    nb.cells[0].outputs = [
        new_output("stream", name="stdout", text=printed + "\n"),
        new_output("execute_result", data={"text/plain": repr(shown)}, execution_count=1),
    ]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    done = run_cli(capsys, "export", str(tmp_path / "nb.ipynb"), "-o", str(tmp_path / "w"))
    assert "Traceback" not in done.err
    for token in (printed, shown):
        assert token not in done.out + done.err
        if (tmp_path / "w").exists():
            assert token not in all_text(tmp_path / "w")


def test_export_never_ships_a_token_in_metadata_or_attachments(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """a token in the notebook's widget state and in a cell attachment? held: no written file holds it."""
    in_metadata = "rpa_" + "METADATA00TOKEN00" + "0123456789abcdef"
    in_attachment = "hf_" + "Att4chm3ntT0k3nAbCdEfGhIjKlMnOpQrS"
    nb = new_notebook(cells=[new_code_cell(ECHO)])
    nb.metadata["widgets"] = {"state": {"model": {"token": in_metadata}}}
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("![x](attachment:x.txt)"))
    nb.cells[0].attachments = {"x.txt": {"text/plain": in_attachment}}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    done = run_cli(capsys, "export", str(tmp_path / "nb.ipynb"), "-o", str(tmp_path / "w"))
    assert "Traceback" not in done.err
    for token in (in_metadata, in_attachment):
        assert token not in done.out + done.err
        if (tmp_path / "w").exists():
            assert token not in all_text(tmp_path / "w")


def test_export_through_a_symlinked_tests_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`-o w` where `w/tests -> /elsewhere`? held: exit 1 in one line, nothing written outside w."""
    path = notebook(tmp_path / "nb.ipynb", ECHO)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "tests").symlink_to(elsewhere, target_is_directory=True)
    done = run_cli(capsys, "export", str(path), "-o", str(tmp_path / "w"))
    export_error(done)
    assert list(elsewhere.iterdir()) == []


def test_export_force_over_a_symlinked_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`w/handler.py -> ~/victim.py`, exported with --force? held: the victim's bytes unchanged."""
    path = notebook(tmp_path / "nb.ipynb", ECHO)
    victim = tmp_path / "victim.py"
    victim.write_text("precious = True\n")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "handler.py").symlink_to(victim)
    done = run_cli(capsys, "export", str(path), "-o", str(tmp_path / "w"), "--force")
    assert "Traceback" not in done.err
    assert victim.read_text() == "precious = True\n"


@pytest.mark.parametrize("target", ["notes.txt", "notes.txt/sub"])
def test_export_to_a_regular_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str
) -> None:
    """`-o` naming a regular file (or a folder under one)? held: exit 1 in one line, the file intact."""
    path = notebook(tmp_path / "nb.ipynb", ECHO)
    (tmp_path / "notes.txt").write_text("keep me\n")
    done = run_cli(capsys, "export", str(path), "-o", str(tmp_path / target))
    export_error(done)
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"


@pytest.mark.slow  # a process
def test_export_of_a_json_list_through_the_real_command(tmp_path: Path) -> None:
    """`nbworker export` of a .ipynb holding `[]`, as a process? held: exit 1, one line `nbworker export: error: ...`."""
    (tmp_path / "list.ipynb").write_text("[]\n")
    done = subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "export", "list.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("nbworker export: error: ") and one_line(done.stderr), done.stderr
    assert not (tmp_path / "list-worker").exists()


@pytest.mark.parametrize(
    "content",
    [
        '{"cells": [{"cell_type": "nope"}], "nbformat": 4, "nbformat_minor": 5}',
        '{"cells": 5, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
        "\xff\xfe not json at all",
    ],
    ids=["bad-cell-type", "cells-not-a-list", "not-json"],
)
def test_export_of_a_notebook_that_fails_the_schema(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str
) -> None:
    """a .ipynb that nbformat's schema refuses, or no JSON? held: exit 1 in one line, nothing written."""
    (tmp_path / "odd.ipynb").write_text(content, encoding="latin-1")
    done = run_cli(capsys, "export", str(tmp_path / "odd.ipynb"), "-o", str(tmp_path / "w"))
    export_error(done)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "record",
    ["not a record", {"handler": "handler", "status": "COMPLETED", "job": "no dict", "output": 1}],
    ids=["record-is-a-string", "job-is-a-string"],
)
def test_export_of_a_notebook_with_a_malformed_record(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, record: Any
) -> None:
    """a recorded run that is no run record (hand-edited JSON)? held: exit 1 in one line naming cell 1."""
    nb = new_notebook(cells=[new_code_cell(ECHO), new_code_cell('%rp_test {"input": {}}')])
    nb.cells[1].outputs = [new_output("display_data", data={RECORD: record})]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    done = run_cli(capsys, "export", str(tmp_path / "nb.ipynb"), "-o", str(tmp_path / "w"))
    assert "cell 1" in export_error(done)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_export_file_modes_follow_the_umask(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """export under umask 022? held: every file 0644 (not the temporary file's 0600)."""
    path = notebook(tmp_path / "nb.ipynb", ECHO)
    with umask(0o022):
        done = run_cli(capsys, "export", str(path), "-o", str(tmp_path / "w"))
    assert done.code == 0, done.err
    modes = {
        p.relative_to(tmp_path / "w").as_posix(): oct(stat.S_IMODE(p.stat().st_mode))
        for p in (tmp_path / "w").rglob("*")
        if p.is_file() and ".git" not in p.relative_to(tmp_path / "w").parts  # git's own
    }
    assert set(modes.values()) == {"0o644"}, modes


def test_export_keeps_the_mode_of_a_replaced_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """handler.py made 0755 by the user, then re-exported with new code? held: still 0755."""
    path = notebook(tmp_path / "nb.ipynb", ECHO)
    with umask(0o022):
        assert run_cli(capsys, "export", str(path), "-o", str(tmp_path / "w")).code == 0
        (tmp_path / "w" / "handler.py").chmod(0o755)
        notebook(path, '%%handler\ndef handler(job):\n    return {"v": 2}')
        done = run_cli(capsys, "export", str(path), "-o", str(tmp_path / "w"))
    assert done.code == 0, done.err
    assert '{"v": 2}' in (tmp_path / "w" / "handler.py").read_text()
    assert stat.S_IMODE((tmp_path / "w" / "handler.py").stat().st_mode) == 0o755


# =========================================================================== serve


def http_call(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection (closed after), with exactly these headers
    (a `Host` given here replaces http.client's own)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


JSON = {"Content-Type": "application/json"}


class _Kill(BaseException):
    """A BaseException of the handler's own."""


GATES: dict[str, tuple[threading.Event, threading.Event]] = {}  # name -> (started, go on)


def _served_handler(job: dict[str, Any]) -> Any:
    job_input = job["input"]
    kill = job_input.get("kill")
    if kill == "exit":
        sys.exit(3)
    if kill == "base":
        raise _Kill("gone")
    if kill == "interrupt":
        raise KeyboardInterrupt
    if "gate" in job_input:
        started, go_on = GATES[job_input["gate"]]
        started.set()
        go_on.wait(10)
    return job_input


def _streamed_handler(job: dict[str, Any]) -> Any:
    yield "first"
    if job["input"].get("kill"):
        raise GeneratorExit
    yield "second"


@pytest.fixture(scope="module")
def served() -> Iterator[SimpleNamespace]:
    """One server for the request cases: an echo handler that counts its jobs."""
    session = Session()
    ran: list[str] = []

    def handler(job: dict[str, Any]) -> Any:
        ran.append(job["id"])
        return job["input"]

    session.register_handler(handler, name="handler")
    server = serve.serve(session, port=0, runsync_wait=10)
    yield SimpleNamespace(port=server.port, ran=ran, server=server)
    server.stop(grace=0.2)
    session.close()


@contextlib.contextmanager
def fresh_server(handler: Callable[..., Any]) -> Iterator[serve.Server]:
    """A server of its own, for a case that may break it; stopping it joins its request
    threads, so whatever they print is printed by then."""
    session = Session()
    session.register_handler(handler, name="handler")
    server = serve.serve(session, port=0, runsync_wait=5)
    try:
        yield server
    finally:
        server.stop(grace=0.5)
        session.close()


def runsync(port: int, job_input: dict[str, Any]) -> dict[str, Any]:
    status, _, body = http_call(
        port, "POST", "/runsync", json.dumps({"input": job_input}).encode(), JSON
    )
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("kill", ["exit", "base", "interrupt"])
def test_serve_a_handler_that_kills_its_worker(kill: str) -> None:
    """a served handler calling sys.exit / raising a BaseException / KeyboardInterrupt? held: that job ends with an error, the next COMPLETED."""
    with fresh_server(_served_handler) as server:
        answer = runsync(server.port, {"kill": kill})
        assert answer["status"] in ("FAILED", "CANCELLED") and answer.get("error"), answer
        again = runsync(server.port, {"after": kill})
        assert again["status"] == "COMPLETED" and again["output"] == {"after": kill}, again
        health = json.loads(http_call(server.port, "GET", "/health")[2])
        assert health["jobs"]["inQueue"] == 0 and health["workers"]["running"] == 0, health


def test_serve_a_generator_raising_generator_exit() -> None:
    """a streaming handler raising GeneratorExit mid-stream? held: that job FAILED with an error, the next COMPLETED."""
    with fresh_server(_streamed_handler) as server:
        answer = runsync(server.port, {"kill": True})
        assert answer["status"] == "FAILED" and answer.get("error"), answer
        assert runsync(server.port, {})["status"] == "COMPLETED"


def test_serve_a_text_plain_post_from_an_evil_origin(served: SimpleNamespace) -> None:
    """a web page's `text/plain` POST /runsync with `Origin: http://evil.example`? held: refused (4xx), the handler never ran."""
    before = len(served.ran)
    headers = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    status, _, _ = http_call(served.port, "POST", "/runsync", b'{"input": {"a": 1}}', headers)
    assert 400 <= status < 500, status
    assert len(served.ran) == before


@pytest.mark.parametrize("origin", ["http://localhost.evil.example", "null"])
def test_serve_a_json_post_from_a_foreign_origin(served: SimpleNamespace, origin: str) -> None:
    """a JSON POST whose Origin is a look-alike host or `null` (a sandboxed frame)? held: refused (4xx), the handler never ran."""
    before = len(served.ran)
    headers = {**JSON, "Origin": origin}
    status, _, _ = http_call(served.port, "POST", "/runsync", b'{"input": {"a": 1}}', headers)
    assert 400 <= status < 500, status
    assert len(served.ran) == before


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.evil.example:{port}", "localhost.evil.example:{port}"]
)
def test_serve_a_foreign_host_header(served: SimpleNamespace, host: str) -> None:
    """DNS rebinding: a request whose Host is a foreign (or look-alike) name? held: refused (4xx), the handler never ran."""
    before = len(served.ran)
    headers = {**JSON, "Host": host.format(port=served.port)}
    status, _, _ = http_call(served.port, "POST", "/runsync", b'{"input": {"a": 1}}', headers)
    assert 400 <= status < 500, status
    assert len(served.ran) == before


def test_serve_a_loopback_host_name_is_still_served(served: SimpleNamespace) -> None:
    """the control for the Host rule: `Host: localhost:PORT`? held: served, COMPLETED."""
    headers = {**JSON, "Host": f"localhost:{served.port}"}
    status, _, body = http_call(served.port, "POST", "/runsync", b'{"input": {"a": 1}}', headers)
    assert status == 200 and json.loads(body)["status"] == "COMPLETED", body


def test_serve_a_cors_preflight(served: SimpleNamespace) -> None:
    """an OPTIONS preflight from http://evil.example? held: no Access-Control-Allow-Origin for it or for *."""
    headers = {
        "Origin": "http://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    _, answer_headers, _ = http_call(served.port, "OPTIONS", "/runsync", headers=headers)
    allowed = {k.lower(): v for k, v in answer_headers.items()}.get("access-control-allow-origin")
    assert allowed not in ("*", "http://evil.example", "null"), allowed


def hang_up(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a browser tab closed mid-request does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def raw_request(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request.replace(b"HOST", b"127.0.0.1:%d" % port))
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """One HTTP answer (headers and a Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"closed after {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail(f"closed after {data!r}")
    return head + b"\r\n\r\n" + body


def test_serve_a_client_hanging_up_before_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    """a client resetting its connection while /runsync runs? held: no traceback printed, the next job COMPLETED."""
    started, go_on = GATES["hang-up"] = (threading.Event(), threading.Event())
    with fresh_server(_served_handler) as server:
        body = b'{"input": {"gate": "hang-up"}}'
        sock = raw_request(
            server.port,
            b"POST /runsync HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        )
        assert started.wait(10), "the job never started"
        hang_up(sock)
        go_on.set()
        assert runsync(server.port, {"b": 2})["status"] == "COMPLETED"
    printed = capsys.readouterr().err
    assert "Traceback" not in printed and printed.count("\n") <= 1, printed


def test_serve_a_keep_alive_client_resetting_between_requests(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """a keep-alive client that resets after its answer? held: no traceback printed, the server goes on."""
    with fresh_server(_served_handler) as server:
        sock = raw_request(server.port, b"GET /health HTTP/1.1\r\nHost: HOST\r\n\r\n")
        assert b" 200 " in read_answer(sock).split(b"\r\n")[0]
        hang_up(sock)
        assert runsync(server.port, {"b": 2})["status"] == "COMPLETED"
    printed = capsys.readouterr().err
    assert "Traceback" not in printed and printed.count("\n") <= 1, printed


def test_serve_malformed_json(served: SimpleNamespace) -> None:
    """a POST /runsync of `{not json`? held: 400 with a message, the server goes on."""
    status, _, body = http_call(served.port, "POST", "/runsync", b"{not json", JSON)
    assert status == 400 and "malformed JSON" in json.loads(body)["error"]
    assert runsync(served.port, {"after": 1})["status"] == "COMPLETED"


def test_serve_deeply_nested_json(
    served: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    """a body nested 100,000 deep? held: a 400 answer (not a dropped connection), no traceback, the server goes on."""
    body = b'{"input": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    try:
        status, _, _ = http_call(served.port, "POST", "/runsync", body, JSON)
    except (http.client.HTTPException, OSError) as err:
        pytest.fail(f"no answer: {type(err).__name__}: {err}")
    assert status == 400
    assert runsync(served.port, {"after": 1})["status"] == "COMPLETED"
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "path",
    ["/status/..%2F..%2F..%2Fetc%2Fpasswd", "/stream/../../../../etc/passwd", "/status/%00%0d%0a"],
)
def test_serve_path_traversal_job_ids(served: SimpleNamespace, path: str) -> None:
    """job ids like `../../etc/passwd` or `%00%0d%0a`? held: a not-found answer as JSON, no file read, the server goes on."""
    status, headers, body = http_call(served.port, "GET", path)
    assert status in (200, 404), status
    assert b"root:" not in body and "\r" not in "".join(headers)
    json.loads(body)
    assert runsync(served.port, {"after": 1})["status"] == "COMPLETED"


def test_serve_answers_strict_json_for_nan(served: SimpleNamespace) -> None:
    """a job whose output is NaN (echoed)? held: the answer is strict JSON (browsers and JSON.parse reject NaN)."""
    _, _, body = http_call(served.port, "POST", "/runsync", b'{"input": {"a": NaN}}', JSON)

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    json.loads(body, parse_constant=refuse)


# =========================================================================== client


class RawServer:
    """A TCP listener on 127.0.0.1 that hands each request to `respond(server, conn, head)`."""

    def __init__(self, respond: Callable[[RawServer, socket.socket, bytes], None]) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self.release = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(rest) < length:
                rest += conn.recv(65536)
            self.requests.append(head)
            self.respond(self, conn, head)

    def close(self) -> None:
        self.release.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


def answer(code: int, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (code, content_type.encode(), len(body), body)
    )


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    started: list[RawServer] = []

    def start(respond: Callable[[RawServer, socket.socket, bytes], None]) -> RawServer:
        started.append(RawServer(respond))
        return started[-1]

    yield start
    for server in started:
        server.close()


def silent(server: RawServer, conn: socket.socket, head: bytes) -> None:
    server.release.wait(30)


def test_client_run_sync_deadline_against_a_silent_server(raw_server) -> None:
    """run_sync(timeout=1) against a server that accepts and never answers? held: EndpointError within 2 s."""
    server = raw_server(silent)
    started = time.monotonic()
    with pytest.raises(EndpointError):
        Endpoint(server.url, timeout=4).run_sync({"input": {}}, timeout=1)
    assert time.monotonic() - started < 2


def test_client_run_sync_deadline_while_status_polls_hang(raw_server) -> None:
    """run_sync(timeout=1): /runsync says IN_QUEUE, then /status never answers? held: EndpointError within 2 s, retries included."""

    def queued_then_silent(server: RawServer, conn: socket.socket, head: bytes) -> None:
        if head.startswith(b"POST /runsync"):
            conn.sendall(answer(200, b'{"id": "job-1", "status": "IN_QUEUE"}'))
        else:
            server.release.wait(30)

    server = raw_server(queued_then_silent)
    started = time.monotonic()
    with pytest.raises(EndpointError):
        Endpoint(server.url, timeout=2, retries=1, backoff=0.05).run_sync(
            {"input": {}}, timeout=1, poll_interval=0.05
        )
    assert time.monotonic() - started < 2


def test_client_a_dropped_connection(raw_server) -> None:
    """a server that reads POST /run and closes without answering? held: sent once, reported as dropped, not "cannot connect"."""
    server = raw_server(lambda server, conn, head: None)  # closed on return
    with pytest.raises(EndpointError) as caught:
        Endpoint(server.url).run({"input": {}})
    assert caught.value.status_code is None
    assert "cannot connect" not in str(caught.value), str(caught.value)
    assert len(server.requests) == 1  # /run is never sent twice: the job may exist


def test_client_run_answer_without_an_id(raw_server) -> None:
    """POST /run answered `{"status": "IN_QUEUE"}` (no id)? held: an EndpointError, not a job nobody can poll."""
    server = raw_server(lambda s, conn, head: conn.sendall(answer(200, b'{"status": "IN_QUEUE"}')))
    with pytest.raises(NbworkerError):
        Endpoint(server.url).run({"input": {}})


def test_client_run_sync_answer_without_an_id(raw_server) -> None:
    """POST /runsync answered `{"status": "IN_PROGRESS"}` (no id)? held: an error, not that unfinished answer returned as the result."""
    server = raw_server(
        lambda s, conn, head: conn.sendall(answer(200, b'{"status": "IN_PROGRESS"}'))
    )
    with pytest.raises(NbworkerError):
        Endpoint(server.url).run_sync({"input": {}}, timeout=2)


def echo_key(server: RawServer, conn: socket.socket, head: bytes) -> None:
    auth = [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization:")]
    echoed = auth[0].split(b":", 1)[1].strip() if auth else b"none"
    if head.startswith(b"POST /run "):
        conn.sendall(answer(200, b'["%s"]' % echoed))  # 200, but not a JSON object
    else:
        conn.sendall(answer(500, b"denied for " + echoed, "text/plain"))


@pytest.mark.parametrize("route", ["run", "runsync"])
def test_client_never_shows_the_api_key(raw_server, route: str) -> None:
    """a server echoing the Authorization header in a 500 text body or a 200 non-object? held: the key in no message, repr, body or traceback."""
    server = raw_server(echo_key)
    endpoint = Endpoint(server.url, api_key=KEY, retries=0)
    with pytest.raises(EndpointError) as caught:
        getattr(endpoint, "run" if route == "run" else "run_sync")({"input": {}})
    error = caught.value
    assert KEY.encode() in b"".join(server.requests)  # it was sent, and echoed
    shown = [str(error), repr(error), repr(error.args), json.dumps(error.body), repr(endpoint)]
    shown += traceback.format_exception(error)
    assert not [text for text in shown if KEY in text]


def test_rp_test_url_never_sends_the_runpod_key(shell, raw_server, monkeypatch) -> None:
    """`%rp_test --url` to some server while RUNPOD_API_KEY is set? held: no Authorization header goes there."""
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    body = b'{"id": "j", "status": "COMPLETED", "output": 1}'
    server = raw_server(lambda s, conn, head: conn.sendall(answer(200, body)))
    record = shell.record(f'%rp_test --url {server.url} {{"input": {{}}}}')
    assert record["status"] == "COMPLETED"
    assert KEY.encode() not in b"".join(server.requests)
    assert b"authorization:" not in b"".join(server.requests).lower()


@pytest.mark.parametrize("endpoint_id", ["..", "abc?x=", "abc#frag", "%2e%2e", "abc def"])
def test_client_endpoint_id_that_rewrites_the_url(monkeypatch, endpoint_id: str) -> None:
    """an endpoint id like `..`, `abc?x=` or `abc#frag` (the key then goes to another route)? held: ValueError, no request."""
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:9/v2")  # never reached
    with pytest.raises(ValueError):
        Endpoint(endpoint_id=endpoint_id, api_key=KEY)


# =========================================================================== nbworker test


def recorded_notebook(path: Path, *sources: str, record: Any = None) -> Path:
    """A notebook whose last cell holds `record` (default: a COMPLETED run of `handler`)."""
    if record is None:
        record = {"handler": "handler", "job": {"id": "local_test", "input": {}}}
        record.update(status="COMPLETED", output=1, error=None, stream=None)
    cells = [new_code_cell(source) for source in sources]
    cells[-1].outputs = [new_output("display_data", data={RECORD: record})]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize(
    "content", [b"[]", b"\x89PNG\r\n\x1a\n binary"], ids=["json-list", "binary"]
)
def test_nbworker_test_of_a_file_that_is_not_a_notebook(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    """`nbworker test x.ipynb` where x is a JSON list or binary? held: exit 2, one line."""
    (tmp_path / "x.ipynb").write_bytes(content)
    done = run_cli(capsys, "test", str(tmp_path / "x.ipynb"))
    assert done.code == 2, (done.code, done.err)
    assert done.err.startswith("nbworker test: error: ") and one_line(done.err)


@pytest.mark.slow  # a kernel
def test_nbworker_test_of_a_notebook_that_calls_os_exit(tmp_path: Path) -> None:
    """a notebook cell calling os._exit(1) under `nbworker test`? held: exit 3 naming the dead kernel, well before the timeout."""
    recorded_notebook(
        tmp_path / "exits.ipynb",
        "%load_ext nbworker",
        ECHO,
        "import os\nos._exit(1)",
        '%rp_test {"input": {}}',
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "test", "exits.ipynb", "--notebook-only"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JUPYTER_PATH": str(Path(sys.prefix, "share", "jupyter"))},
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cell 2" in done.stdout and "Kernel died" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60


def test_nbworker_test_of_a_folder_with_a_symlink_loop(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """a folder holding `loop -> .` and `deeper/up -> ..`? held: each notebook found once, exit 5 (no runs recorded), no hang."""
    (tmp_path / "nb").mkdir()
    notebook(tmp_path / "nb" / "a.ipynb", ECHO)
    (tmp_path / "nb" / "loop").symlink_to(tmp_path / "nb", target_is_directory=True)
    (tmp_path / "nb" / "deeper").mkdir()
    (tmp_path / "nb" / "deeper" / "up").symlink_to(tmp_path / "nb", target_is_directory=True)
    done = run_cli(capsys, "test", str(tmp_path / "nb"))
    assert done.code == 5, (done.code, done.err)
    notes = [line for line in done.out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, done.out


@pytest.mark.parametrize(
    "record",
    ["not a record", ["a", "list"]],
    ids=["string", "list"],
)
def test_nbworker_test_of_a_malformed_record(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, record: Any
) -> None:
    """a recorded run that is no run record? held: exit 2 or 3 naming cell 2, no traceback."""
    path = recorded_notebook(
        tmp_path / "nb.ipynb", "%load_ext nbworker", ECHO, '%rp_test {"input": {}}', record=record
    )
    done = run_cli(capsys, "test", str(path), "--notebook-only")
    assert done.code in (2, 3), (done.code, done.out, done.err)
    assert "cell 2" in done.out + done.err and "Traceback" not in done.err


def test_nbworker_test_k_that_matches_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`-k '*[' ` (a broken glob matching nothing)? held: exit 5, one line naming the pattern, no kernel started."""
    path = recorded_notebook(tmp_path / "nb.ipynb", ECHO, '%rp_test {"input": {}}')
    done = run_cli(capsys, "test", str(path), "-k", "*[")
    assert done.code == 5, (done.code, done.err)
    assert "-k '*['" in done.err.splitlines()[-1]


@pytest.mark.parametrize("value", ["{", "!!python/object/apply:os.system ['echo pwned']"])
def test_nbworker_test_parameter_that_is_bad_yaml(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str
) -> None:
    """`-p x VALUE` with broken or code-constructing YAML? held: exit 2, one line naming -p, nothing run."""
    path = notebook(tmp_path / "nb.ipynb", ECHO)
    done = run_cli(capsys, "test", str(path), "-p", "x", value)
    assert done.code == 2, (done.code, done.err)
    assert done.err.startswith("nbworker test: error: ") and one_line(done.err), done.err
    assert "pwned" not in done.out


def test_nbworker_test_junit_xml_into_a_missing_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--junit-xml missing/dir/r.xml`, or under a file? held: the folder is made (as pytest does); under a file, exit 2 and one line before anything runs."""
    path = notebook(tmp_path / "nb.ipynb", ECHO)
    report = tmp_path / "missing" / "dir" / "r.xml"
    done = run_cli(capsys, "test", str(path), "--junit-xml", str(report))
    assert "Traceback" not in done.err and report.is_file(), done.err
    (tmp_path / "a-file").write_text("")
    done = run_cli(capsys, "test", str(path), "--junit-xml", str(tmp_path / "a-file" / "r.xml"))
    assert done.code == 2, (done.code, done.err)
    assert done.err.startswith("nbworker test: error: --junit-xml ") and one_line(done.err)
    assert "no case" not in done.out + done.err  # refused before the run
