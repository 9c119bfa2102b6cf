"""Replay the notebook's recorded runs against handler.py, under the real RunPod SDK.

Each case in tests/cases.json is a job run in the notebook (`%rp_test`) with what it gave.
The handler is a generator, which `python handler.py --test_input` does not
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
from compare import assert_same, case_id, ignored, plain, recorded_part, short, streamed_exception

TESTS = Path(__file__).resolve().parent
WORKER = TESTS.parent  # handler.py's folder: the worker runs there, as in its container
CASES = json.loads((TESTS / "cases.json").read_text(encoding="utf-8"))["cases"]
TIMEOUT = float(os.environ.get("WORKER_TEST_TIMEOUT", "600"))
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


class _Floats(ast.NodeTransformer):
    """`nan` and `inf` as repr() prints floats, for literal_eval."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("nan", "inf"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


# A log line that another thread (the SDK's progress sender) wrote into the end of this one.
GLUED = re.compile(r"(?:TRACE|DEBUG|INFO|WARN|ERROR|TIP)\s*\| ")


def python_value(text: str) -> Any:
    """A value the SDK logged with repr(): a Python literal (NaN and infinities included).
    A log line glued onto its end by another thread is cut off."""
    cuts = [len(text)] + [found.start() for found in GLUED.finditer(text)]
    problem: Exception | None = None
    for cut in cuts:
        try:
            tree = _Floats().visit(ast.parse(text[:cut].strip(), mode="eval"))
            return ast.literal_eval(tree)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as err:
            problem = problem or err
    pytest.fail(f"the SDK logged a value that is not a Python literal ({problem}): {short(text)}")


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
        # A fresh connection per request. After answering HTTP 500 for a handler that
        # raised, the server closes the connection, so a kept-alive one could be reset
        # under the next case's request. Retrying that would be wrong: a POST /runsync
        # whose connection broke may have run its job, and a job must not run twice.
        self.http.headers["Connection"] = "close"
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
    if not case.get("compare", True):
        pytest.skip("the notebook runs this case with %rp_test --no-compare")
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
            assert_same(chunks, recorded, "stream", ignored(case))
        return
    assert response.status_code == 200, (
        f"/runsync: HTTP {response.status_code}: {response.text[:500]}\n{tail(log)}"
    )
    body = response.json()
    assert body.get("status") == "COMPLETED", f"/runsync: {short(body)}"
    chunks = plain(body.get("output", []))
    if case["status"] == "COMPLETED":
        assert_same(recorded_part(chunks, case), recorded, "stream", ignored(case))
        return
    # A yielded {"error": ...} ends the stream of a deployed worker and fails its job; the
    # local server passes it on as a chunk and goes on. Compare up to it, and it.
    assert_same(chunks[: len(recorded)], recorded, "stream", ignored(case))
    stopper = chunks[len(recorded)] if len(chunks) > len(recorded) else None
    assert isinstance(stopper, dict) and stopper.get("error"), (
        f"expected chunk {len(recorded)} to be an error, {case['error']!r}; got {short(stopper)}"
    )
    assert str(stopper["error"]) == case["error"], (
        f"error: got {short(stopper['error'])}, recorded {short(case['error'])}"
    )
