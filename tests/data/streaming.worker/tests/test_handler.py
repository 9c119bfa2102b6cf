"""Replay the notebook's recorded runs against handler.py, under the real RunPod SDK.

Each case in tests/cases.json is a job run in the notebook (`%rp_test`) with what it gave.
The handler `handler` is a generator, which `python handler.py --test_input` does not
iterate, so the jobs go to the SDK's local API server (`python handler.py --rp_serve_api`,
started once for this module on a free port of 127.0.0.1): its `/runsync` answers the list
of all chunks, which must be the recorded stream (floats within WORKER_TEST_REL_TOL,
default 1e-6). A FAILED case is checked as far as the local server can show it.

Run from the worker folder: `python -m pytest tests`. WORKER_TEST_TIMEOUT (seconds, default
600) bounds each job, and the server's start (model loading) too.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

TESTS = Path(__file__).resolve().parent
WORKER = TESTS.parent  # handler.py's folder: the worker runs there, as in its container
CASES = json.loads((TESTS / "cases.json").read_text(encoding="utf-8"))["cases"]
TIMEOUT = float(os.environ.get("WORKER_TEST_TIMEOUT", "600"))
REL_TOL = float(os.environ.get("WORKER_TEST_REL_TOL", "1e-6"))
ABS_TOL = 1e-9  # for floats near zero
# Set on a deployed worker only: they would switch the SDK to another mode or log format.
DEPLOYED_ONLY = (
    "RUNPOD_ENDPOINT_ID",
    "RUNPOD_REALTIME_PORT",
    "RUNPOD_WEBHOOK_GET_JOB",
    "RUNPOD_WEBHOOK_PING",
)


def worker_env(log_level: str) -> dict[str, str]:
    """This environment, as on a development machine, with the SDK's log level set."""
    env = {key: value for key, value in os.environ.items() if key not in DEPLOYED_ONLY}
    env.update(RUNPOD_LOG_LEVEL=log_level, PYTHONIOENCODING="utf-8")
    return env


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def case_id(case: dict[str, Any]) -> str:
    """The case's name, and the notebook cell that recorded it when known."""
    cell = case.get("cell")
    return case["name"] if cell is None else f"{case['name']} (cell {cell})"


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}...{text[-30:]} ({len(text)} chars)"


def plain(value: Any) -> Any:
    """A value as the notebook recorded it: JSON, NaN and infinities as null, tuples as
    lists, anything else JSON has no type for as its repr."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return repr(value)


def assert_same(actual: Any, recorded: Any, where: str) -> None:
    """Equal as JSON values, floats within REL_TOL; the message names the first difference."""
    if isinstance(actual, bool) or isinstance(recorded, bool):
        assert actual is recorded, f"{where}: got {short(actual)}, recorded {short(recorded)}"
    elif isinstance(actual, (int, float)) and isinstance(recorded, (int, float)):
        if isinstance(actual, int) and isinstance(recorded, int):
            assert actual == recorded, f"{where}: got {actual}, recorded {recorded}"
        else:
            assert math.isclose(actual, recorded, rel_tol=REL_TOL, abs_tol=ABS_TOL), (
                f"{where}: got {actual!r}, recorded {recorded!r} (rel_tol {REL_TOL:g})"
            )
    elif isinstance(actual, dict) and isinstance(recorded, dict):
        missing = [key for key in recorded if key not in actual]
        extra = [key for key in actual if key not in recorded]
        assert not missing and not extra, (
            f"{where}: keys differ: missing {missing}, unexpected {extra}; "
            f"got {short(actual)}, recorded {short(recorded)}"
        )
        for key, item in recorded.items():
            assert_same(actual[key], item, f"{where}[{key!r}]")
    elif isinstance(actual, list) and isinstance(recorded, list):
        assert len(actual) == len(recorded), (
            f"{where}: {len(actual)} items, recorded {len(recorded)}; "
            f"got {short(actual)}, recorded {short(recorded)}"
        )
        for index, (item, expected) in enumerate(zip(actual, recorded, strict=True)):
            assert_same(item, expected, f"{where}[{index}]")
    else:
        assert actual == recorded, f"{where}: got {short(actual)}, recorded {short(recorded)}"


LEADING_FIELDS = re.compile(  # the start of RunPod's error JSON
    r'\{"error_type": ("(?:[^"\\]|\\.)*"), "error_message": ("(?:[^"\\]|\\.)*")'
)


def exception_fields(error: Any) -> dict[str, str] | None:
    """error_type and error_message of RunPod's error JSON for a handler that raised, else
    None. Read from the start of the text too, should a log have cut the rest."""
    if not isinstance(error, str) or not error.startswith("{"):
        return None
    try:
        fields = json.loads(error)
    except ValueError:
        found = LEADING_FIELDS.match(error)
        if found is None:
            return None
        fields = {"error_type": json.loads(found[1]), "error_message": json.loads(found[2])}
    if not isinstance(fields, dict) or not {"error_type", "error_message"} <= fields.keys():
        return None
    return {"error_type": fields["error_type"], "error_message": fields["error_message"]}


def streamed_exception(error: Any) -> str | None:
    """The message of a generator handler that raised (RunPod reports
    `handler: <message> \\ntraceback: ...`), else None."""
    if isinstance(error, str) and error.startswith("handler: ") and " \ntraceback: " in error:
        return error[len("handler: ") : error.index(" \ntraceback: ")]
    return None


def check_error(actual: Any, recorded: Any) -> None:
    """The same failure: for an exception the same type and message, else the same error."""
    expected = exception_fields(recorded)
    if expected is not None:
        got = exception_fields(actual)
        assert got is not None, (
            f"error: expected the handler to raise {expected['error_type']} "
            f"{expected['error_message']!r}, got the error {short(actual)}"
        )
        assert got == expected, f"error: got {got}, recorded {expected}"
        return
    message = streamed_exception(recorded)
    if message is not None:
        got = streamed_exception(actual)
        assert got == message, f"error: got {short(actual)}, recorded a raise of {message!r}"
        return
    assert_same(plain(actual), recorded, "error")


class _Floats(ast.NodeTransformer):
    """`nan` and `inf` as repr() prints floats, for literal_eval."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("nan", "inf"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


def python_value(text: str) -> Any:
    """A value the SDK logged with repr(): a Python literal (NaN and infinities included)."""
    try:
        tree = _Floats().visit(ast.parse(text.strip(), mode="eval"))
        return ast.literal_eval(tree)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as err:
        pytest.fail(f"the SDK logged a value that is not a Python literal ({err}): {short(text)}")


TRUNCATED = re.compile(r"\n\.\.\.TRUNCATED \d+ CHARACTERS\.\.\.\n")  # the SDK logger's cut
CHUNK_LINE = re.compile(  # a chunk, as the server logs it at DEBUG
    r"^DEBUG\s*\| \S+ \| (?:Async )?Generator output: (.*)$", re.MULTILINE
)


SDK_LINE = re.compile(r"^(?:TRACE|DEBUG|INFO|WARN|ERROR|TIP)\s*\| .*$", re.MULTILINE)


def sdk_lines(log: str) -> str:
    """The SDK's own log lines (not uvicorn's tracebacks), the last 40."""
    return tail("\n".join(SDK_LINE.findall(log)))


def logged_chunks(log: str) -> list[Any] | int:
    """The chunks the server logged (at DEBUG) for one job; their count alone when a line
    is not a Python literal or was cut by the logger."""
    lines = CHUNK_LINE.findall(log)
    chunks = []
    for line in lines:
        try:
            tree = _Floats().visit(ast.parse(line, mode="eval"))
            chunks.append(plain(ast.literal_eval(tree)))
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            return len(lines)
    return chunks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalAPI:
    """`python handler.py --rp_serve_api`: the SDK's local API server on 127.0.0.1, started
    on first use (again if it died), logging to a file, stopped by its PID."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy between the tests and 127.0.0.1
        self.failure: str | None = None

    def log(self, start: int = 0) -> str:
        with self.log_path.open("rb") as file:
            file.seek(start)
            return file.read().decode("utf-8", "replace")

    def start(self) -> None:
        for _attempt in range(3):  # another program may take the free port first
            port = free_port()
            start = self.log_path.stat().st_size if self.log_path.exists() else 0
            command = ["handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1"]
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, *command, "--rp_api_port", str(port)],
                    cwd=WORKER,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=worker_env("DEBUG"),  # the chunks are logged at DEBUG
                )
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    self.http.get(f"{self.url}/openapi.json", timeout=5)
                    return
                except (requests.ConnectionError, requests.Timeout):
                    time.sleep(0.1)
            if self.process.poll() is None:
                self.stop()
                self.failure = f"the local API server did not answer in {TIMEOUT:g} s"
                break
            if "address already in use" not in self.log(start).lower():
                self.failure = f"the local API server exited with code {self.process.returncode}"
                break
        self.failure = self.failure or "the local API server found no free port"
        pytest.fail(f"{self.failure}:\n{tail(self.log())}")

    def runsync(self, job: dict[str, Any]) -> tuple[requests.Response, str]:
        """POST the job's input to /runsync: the answer, and what the server logged meanwhile."""
        if self.failure is not None:
            pytest.fail(self.failure)
        if self.process is None or self.process.poll() is not None:
            self.start()
        start = self.log_path.stat().st_size
        body = {"input": job["input"]}
        response = self.http.post(f"{self.url}/runsync", json=body, timeout=TIMEOUT)
        return response, self.log(start)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPI]:
    server = LocalAPI(tmp_path_factory.mktemp("api") / "server.log")
    yield server
    server.stop()


def skip_unless_servable(case: dict[str, Any]) -> None:
    """Skip a job the local API server cannot run as it was recorded."""
    others = sorted(key for key in case["job"] if key != "input")
    if others:
        pytest.skip(f"the local API server passes the handler the input only, not {others}")
    if not isinstance(case["job"]["input"], dict):
        pytest.skip("the local API server takes only an object as input (HTTP 422 otherwise)")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case(case: dict[str, Any], api: LocalAPI) -> None:
    skip_unless_servable(case)
    response, log = api.runsync(case["job"])
    recorded = case["stream"]
    raised = streamed_exception(case["error"]) if case["status"] == "FAILED" else None
    if raised is not None:
        # The server answers a generator that raised with HTTP 500 and no detail; what it
        # streamed and the error are in its log.
        assert response.status_code == 500, (
            f"expected HTTP 500 for a raise of {raised!r}, got {response.status_code}: "
            f"{response.text[:500]}"
        )
        error_line = re.compile(r"^ERROR\s*\| \S+ \| " + re.escape(raised) + "$", re.MULTILINE)
        assert error_line.search(log), (
            f"the server did not log the error {raised!r}:\n{sdk_lines(log)}"
        )
        chunks = logged_chunks(log)
        if isinstance(chunks, int):
            assert chunks == len(recorded), (
                f"stream: {chunks} chunks before the raise, recorded {len(recorded)}"
            )
        else:
            assert_same(chunks, recorded, "stream")
        return
    assert response.status_code == 200, (
        f"/runsync: HTTP {response.status_code}: {response.text[:500]}\n{tail(log)}"
    )
    body = response.json()
    assert body.get("status") == "COMPLETED", f"/runsync: {short(body)}"
    chunks = plain(body.get("output", []))
    if case["status"] == "COMPLETED":
        assert_same(chunks, recorded, "stream")
        return
    # A yielded {"error": ...} ends the stream of a deployed worker and fails its job; the
    # local server passes it on as a chunk and goes on. Compare up to it, and it.
    assert_same(chunks[: len(recorded)], recorded, "stream")
    stopper = chunks[len(recorded)] if len(chunks) > len(recorded) else None
    assert isinstance(stopper, dict) and stopper.get("error"), (
        f"expected chunk {len(recorded)} to be an error, {case['error']!r}; got {short(stopper)}"
    )
    assert str(stopper["error"]) == case["error"], (
        f"error: got {short(stopper['error'])}, recorded {short(case['error'])}"
    )
