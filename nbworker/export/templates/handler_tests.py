"""Replay the notebook's recorded runs against handler.py, under the real RunPod SDK.

Each case in tests/cases.json is a job run in the notebook (`%rp_test`) with what it gave,
for the handler that cases.json names.
Here each job runs as RunPod's own local test runs it, `python handler.py --test_input JOB`
in the worker folder, and must give the same: COMPLETED with the same output (floats within
WORKER_TEST_REL_TOL, default 1e-6), or FAILED with the same error (for an exception: the
same type and message). The SDK's logger cuts messages over 4096 characters, so a result
too long for its log line is fetched from the SDK's local API server instead.

Run from the worker folder: `python -m pytest tests`. WORKER_TEST_TIMEOUT (seconds, default
600) bounds each job, the worker's start (model loading) included.
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
from compare import assert_same, case_id, check_error, exception_fields, ignored, plain, short

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
ARG_LIMIT = 100_000  # longer jobs do not fit on a command line


def run_test_input(job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`python handler.py --test_input JOB` in the worker folder."""
    try:
        return subprocess.run(
            [sys.executable, "handler.py", "--test_input", json.dumps(job)],
            cwd=WORKER,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=TIMEOUT,
            env=worker_env("INFO"),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"handler.py did not finish the job in {TIMEOUT:g} s (WORKER_TEST_TIMEOUT)")


def logged(stdout: str, marker: str) -> str | None:
    """What the SDK's last log line starting with `marker` says, to the end of the output."""
    index = stdout.rfind(marker)
    if index < 0:
        return None
    text = stdout[index + len(marker) :]
    return text[:-1] if text.endswith("\n") else text


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


def check_via_api(case: dict[str, Any], api: LocalAPI, why: str) -> None:
    """Replay the case through the local API server's /runsync instead (`why`)."""
    skip_unless_servable(case)
    response, log = api.runsync(case["job"])
    if response.status_code == 500 and case["status"] == "FAILED":
        pytest.skip(f"{why}, and the local API server answers HTTP 500 for a non-string error")
    assert response.status_code == 200, (
        f"{why}; /runsync: HTTP {response.status_code}: {response.text[:500]}\n{tail(log)}"
    )
    body = response.json()
    assert body.get("status") == case["status"], f"{why}; /runsync: {short(body)}"
    if case["status"] == "COMPLETED":
        output = plain(body.get("output"))
        assert_same(output, case["output"], "output (from /runsync)", ignored(case))
    else:
        check_error(body.get("error"), case["error"])


# BaseExceptions a handler may raise: deployed, each ends the worker process.
PROCESS_ENDERS = {
    f"<class '{name}'>"
    for name in (
        "SystemExit",
        "GeneratorExit",
        "KeyboardInterrupt",
        "asyncio.exceptions.CancelledError",
    )
}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case(case: dict[str, Any], api: LocalAPI) -> None:
    if not case.get("compare", True):
        pytest.skip("the notebook runs this case with %rp_test --no-compare")
    job = case["job"]
    if len(json.dumps(job)) > ARG_LIMIT:
        check_via_api(case, api, why=f"the job is too long for --test_input (> {ARG_LIMIT})")
        return
    done = run_test_input(job)
    output = tail(done.stdout + done.stderr)
    where = f"python handler.py --test_input exited with code {done.returncode}:\n{output}"
    if case["status"] == "COMPLETED":
        assert done.returncode == 0, where
        result = logged(done.stdout, "| Job result: ")
        assert result is not None, f"no 'Job result:' line; {where}"
        if TRUNCATED.search(result):
            check_via_api(case, api, why="the SDK's logger cut the Job result line")
            return
        result = python_value(result.split("\n", 1)[0])
        assert isinstance(result, dict), f"Job result is not a dict: {short(result)}"
        assert_same(plain(result.get("output")), case["output"], "output", ignored(case))
        assert bool(result.get("stopPod")) == case["refresh_worker"], (
            f"refresh_worker: got {bool(result.get('stopPod'))}, recorded {case['refresh_worker']}"
        )
        return
    fields = exception_fields(case["error"])
    if fields is not None and fields["error_type"] in PROCESS_ENDERS:
        # The job loop catches only Exception: the worker process ends, no result is sent.
        assert "| Job result: " not in done.stdout, where
        assert "| Job local_test failed with error: " not in done.stdout, where
        return
    assert done.returncode == 1, where
    if job.get("input") is None:  # the SDK refuses the job before the handler runs
        said = [line.rpartition("| ")[2].strip() for line in done.stdout.splitlines()]
        assert case["error"] in said, f"no line saying {case['error']!r}; {where}"
        return
    error = logged(done.stdout, "| Job local_test failed with error: ")
    assert error is not None, f"no 'Job ... failed with error:' line; {where}"
    recorded = case["error"]
    if exception_fields(recorded) is not None:
        check_error(error.split("\n", 1)[0], recorded)  # its start, even if the log cut it
    elif TRUNCATED.search(error):
        check_via_api(case, api, why="the SDK's logger cut the error line")
    elif isinstance(recorded, str):
        glued = error.startswith(recorded) and GLUED.match(error[len(recorded) :])
        assert error == recorded or glued, f"error: got {short(error)}, recorded {short(recorded)}"
    else:  # an error that is not a string is logged with repr()
        check_error(python_value(error), recorded)
