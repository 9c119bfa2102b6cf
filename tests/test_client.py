"""nbworker.client.Endpoint against the SDK's real `--rp_serve_api` server, and against a
small stdlib server on 127.0.0.1 for retries, errors and API key hygiene."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from endpoint_suite import (
    HANDLER_CHECKS,
    SDK_CAPABILITIES,
    STREAM_CHECKS,
    SUITE_HANDLER_SOURCE,
    SUITE_STREAM_HANDLER_SOURCE,
)

import nbworker.client
from nbworker.client import Endpoint, EndpointError, JobFailed, as_job
from nbworker.errors import NbworkerError

KEY = "rpa_SECRETKEY0123456789abcdef"


# ------------------------------------------------------------------- the SDK's server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_sdk_server(folder: Path, source: str) -> Iterator[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(source)
    port = _free_port()
    log = (folder / "server.log").open("wb")
    args = ["--rp_serve_api", "--rp_api_port", str(port), "--rp_api_host", "127.0.0.1"]
    proc = subprocess.Popen(
        [sys.executable, "handler.py", *args, "--rp_log_level", "WARN"],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (folder / "server.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the SDK's server did not start in 30s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory) -> Iterator[str]:
    yield from _start_sdk_server(tmp_path_factory.mktemp("sdk_plain"), SUITE_HANDLER_SOURCE)


@pytest.fixture(scope="module")
def sdk_stream_server(tmp_path_factory) -> Iterator[str]:
    yield from _start_sdk_server(tmp_path_factory.mktemp("sdk_stream"), SUITE_STREAM_HANDLER_SOURCE)


@pytest.mark.slow
@pytest.mark.parametrize("check", HANDLER_CHECKS, ids=lambda c: c.__name__)
def test_sdk_server_conforms(sdk_server, check):
    check(Endpoint(sdk_server, timeout=10, retries=0), SDK_CAPABILITIES)


@pytest.mark.slow
@pytest.mark.parametrize("check", STREAM_CHECKS, ids=lambda c: c.__name__)
def test_sdk_stream_server_conforms(sdk_stream_server, check):
    check(Endpoint(sdk_stream_server, timeout=10, retries=0), SDK_CAPABILITIES)


@pytest.mark.slow
def test_sdk_server_quirks(sdk_server):
    """Shapes the client copes with: POST-only polling, /status runs the job and forgets it."""
    raw = requests.get(f"{sdk_server}/status/x", timeout=5)
    assert raw.status_code == 405
    endpoint = Endpoint(sdk_server, timeout=10)
    job = endpoint.run({"mode": "echo"})
    assert job["status"] == "IN_PROGRESS" and job["id"].startswith("test-")
    assert endpoint.status(job["id"]) == {
        "id": job["id"],
        "status": "COMPLETED",
        "output": {"mode": "echo"},
    }
    assert endpoint.poll_method == "POST"
    assert endpoint.status(job["id"])["error"] == "Job ID not found"
    with pytest.raises(EndpointError) as info:
        endpoint.run_sync({"input": "text"})
    assert info.value.status_code == 422
    assert (
        str(info.value) == "POST /runsync: HTTP 422: body.input: Input should be a valid dictionary"
    )


@pytest.mark.slow
def test_sdk_server_stream_of_plain_handler(sdk_server):
    endpoint = Endpoint(sdk_server, timeout=10)
    job = endpoint.run({"mode": "echo"})
    with pytest.raises(JobFailed, match="Stream not supported, handler must be a generator"):
        list(endpoint.stream(job["id"]))


# --------------------------------------------------------------- a scripted local server
class Script:
    """What the stub server answers, in order, and what it saw."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, object, dict]] = []
        self.default: tuple[int, object, dict] = (200, {"status": "COMPLETED"}, {})
        self.seen: list[dict] = []
        self.lock = threading.Lock()

    def next(self) -> tuple[int, object, dict]:
        with self.lock:
            return self.answers.pop(0) if self.answers else self.default


@pytest.fixture
def stub() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "body": json.loads(body) if body else None,
                }
            )
            status, payload, headers = script.next()
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(nbworker.client, "_sleep", recorded.append)
    return recorded


def test_constructor_rules(monkeypatch):
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    with pytest.raises(ValueError, match="exactly one"):
        Endpoint()
    with pytest.raises(ValueError, match="exactly one"):
        Endpoint("http://127.0.0.1:1", endpoint_id="abc")
    with pytest.raises(ValueError, match="http"):
        Endpoint("127.0.0.1:8000")
    deployed = Endpoint(endpoint_id="abc123")
    assert deployed.url == "https://api.runpod.ai/v2/abc123"
    assert deployed.has_api_key
    # The RunPod key goes to RunPod's API only, never to a url= server unless passed.
    assert not Endpoint("http://127.0.0.1:8000/").has_api_key
    assert Endpoint("http://127.0.0.1:8000/").url == "http://127.0.0.1:8000"
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:9/v2/")
    assert Endpoint(endpoint_id="abc").url == "http://127.0.0.1:9/v2/abc"


def test_as_job():
    assert as_job({"input": {"a": 1}}) == {"input": {"a": 1}}
    assert as_job({"input": {}, "webhook": "http://h"}) == {"input": {}, "webhook": "http://h"}
    assert as_job({"a": 1}) == {"input": {"a": 1}}
    assert as_job({"input": 1, "other": 2}) == {"input": {"input": 1, "other": 2}}
    assert as_job("text") == {"input": "text"}


def test_endpoint_id_sends_key_from_env(stub, monkeypatch):
    url, script = stub
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", url + "/v2")
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    script.default = (200, {"id": "j1", "status": "IN_QUEUE"}, {})
    endpoint = Endpoint(endpoint_id="ep1")
    assert endpoint.run({"x": 1}) == {"id": "j1", "status": "IN_QUEUE"}
    assert script.seen == [
        {
            "method": "POST",
            "path": "/v2/ep1/run",
            "auth": f"Bearer {KEY}",
            "body": {"input": {"x": 1}},
        }
    ]
    assert KEY not in repr(endpoint) and "***" not in repr(endpoint)
    assert repr(endpoint) == f"Endpoint('{url}/v2/ep1', api_key=set)"
    assert KEY not in str(endpoint.session.headers)
    assert KEY not in repr(vars(endpoint))


def test_retries_503_then_ok(stub, sleeps):
    url, script = stub
    script.answers = [(503, {"error": "busy"}, {}), (503, {"error": "busy"}, {})]
    script.default = (200, {"id": "j", "status": "COMPLETED", "output": 1}, {})
    endpoint = Endpoint(url, api_key=KEY, backoff=0.05, retries=3)
    assert endpoint.status("j")["output"] == 1
    assert len(script.seen) == 3
    assert sleeps == [0.05, 0.1]


def test_retry_wall_clock_bound(stub):
    url, script = stub
    script.answers = [(502, b"bad gateway", {})] * 2
    script.default = (200, {"status": "COMPLETED"}, {})
    start = time.monotonic()
    Endpoint(url, backoff=0.05, retries=2).health()
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < 2.0
    assert len(script.seen) == 3


def test_retries_exhausted(stub, sleeps):
    url, script = stub
    script.default = (504, {"error": "gateway timeout"}, {})
    with pytest.raises(EndpointError) as info:
        Endpoint(url, backoff=0.01, retries=2).status("j")
    assert info.value.status_code == 504
    assert str(info.value) == "GET /status/j: HTTP 504: gateway timeout"
    assert len(script.seen) == 3
    assert sleeps == [0.01, 0.02]


def test_retry_after_is_honoured(stub, sleeps):
    url, script = stub
    script.answers = [(429, {"error": "slow down"}, {"Retry-After": "0.3"})]
    Endpoint(url, backoff=0.01).health()
    assert sleeps == [0.3]


def test_run_not_retried_after_5xx(stub, sleeps):
    """POST /run may have queued the job before a 503: retrying could run it twice."""
    url, script = stub
    script.default = (503, {"error": "busy"}, {})
    with pytest.raises(EndpointError) as info:
        Endpoint(url, backoff=0.01).run({"x": 1})
    assert info.value.status_code == 503
    assert len(script.seen) == 1
    assert sleeps == []


def test_run_retried_on_429(stub, sleeps):
    url, script = stub
    script.answers = [(429, {"error": "rate limited"}, {})]
    script.default = (200, {"id": "j", "status": "IN_QUEUE"}, {})
    assert Endpoint(url, backoff=0.01).run({"x": 1})["id"] == "j"
    assert [s["method"] for s in script.seen] == ["POST", "POST"]
    assert sleeps == [0.01]


def test_connection_refused_is_retried_then_raised(sleeps):
    url = f"http://127.0.0.1:{_free_port()}"
    endpoint = Endpoint(url, api_key=KEY, backoff=0.01, retries=2)
    with pytest.raises(EndpointError) as info:
        endpoint.run({"x": 1})  # never sent: safe to retry even POST /run
    assert info.value.status_code is None
    assert sleeps == [0.01, 0.02]
    assert str(info.value).startswith(f"POST /run: cannot connect to {url}")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_timeout(stub, sleeps):
    url, script = stub

    def slow():
        time.sleep(0.5)
        return (200, {}, {})

    script.next = slow
    with pytest.raises(EndpointError, match=r"GET /health: no answer within 0.1s"):
        Endpoint(url, timeout=0.1, retries=1, backoff=0.01).health()
    assert sleeps == [0.01]


def test_http_errors_keep_key_out(stub, caplog):
    url, script = stub
    caplog.set_level(logging.DEBUG)
    endpoint = Endpoint(url, api_key=KEY, retries=1, backoff=0.0)
    script.answers = [
        (401, {"error": f"bad key Bearer {KEY}"}, {}),
        (500, b"Internal Server Error\n\n  trace line", {}),
        (503, {"detail": f"echo {KEY}"}, {}),
        (503, {"detail": f"echo {KEY}"}, {}),
    ]
    errors = []
    for call in (lambda: endpoint.run({}), lambda: endpoint.status("j"), endpoint.health):
        with pytest.raises(EndpointError) as info:
            call()
        errors.append(info.value)
    assert [e.status_code for e in errors] == [401, 500, 503]
    assert str(errors[0]) == "POST /run: HTTP 401: bad key Bearer ***"
    assert str(errors[1]) == "GET /status/j: HTTP 500: Internal Server Error trace line"
    assert str(errors[2]) == "GET /health: HTTP 503: echo ***"
    assert errors[0].body == {"error": "bad key Bearer ***"}
    assert all(s["auth"] == f"Bearer {KEY}" for s in script.seen)
    for error in errors:
        assert isinstance(error, NbworkerError)
        assert KEY not in str(error) and KEY not in repr(error) and KEY not in repr(vars(error))
        assert error.__cause__ is None
    assert caplog.records, "the client logs its requests and retries"
    assert KEY not in caplog.text
    assert KEY not in repr(endpoint)


def test_non_json_answer(stub):
    url, script = stub
    script.default = (200, b"<html>hi</html>", {})
    with pytest.raises(EndpointError, match="expected a JSON object"):
        Endpoint(url).health()


def test_poll_method_fallback_and_fixed(stub):
    url, script = stub
    script.answers = [(405, {"detail": "Method Not Allowed"}, {})]
    script.default = (200, {"id": "j", "status": "COMPLETED", "output": 2}, {})
    endpoint = Endpoint(url)
    assert endpoint.status("j")["output"] == 2
    endpoint.status("j")
    assert [s["method"] for s in script.seen] == ["GET", "POST", "POST"]
    script.seen.clear()
    Endpoint(url, poll_method="POST").status("a/b")
    assert script.seen[0]["method"] == "POST" and script.seen[0]["path"] == "/status/a%2Fb"


def test_run_sync_polls_until_final(stub, sleeps):
    url, script = stub
    script.answers = [
        (200, {"id": "j", "status": "IN_QUEUE"}, {}),
        (200, {"id": "j", "status": "IN_PROGRESS"}, {}),
    ]
    script.default = (200, {"id": "j", "status": "COMPLETED", "output": "done"}, {})
    answer = Endpoint(url).run_sync({"input": {"a": 1}}, poll_interval=0.01)
    assert answer == {"id": "j", "status": "COMPLETED", "output": "done"}
    assert [(s["method"], s["path"]) for s in script.seen] == [
        ("POST", "/runsync"),
        ("GET", "/status/j"),
        ("GET", "/status/j"),
    ]
    assert script.seen[0]["body"] == {"input": {"a": 1}}


def test_run_sync_timeout(stub):
    url, script = stub
    script.default = (200, {"id": "j", "status": "IN_QUEUE"}, {})
    with pytest.raises(EndpointError, match=r"job j still IN_QUEUE after 0\.2s"):
        Endpoint(url).run_sync({"input": {}}, timeout=0.2, poll_interval=0.05)


def test_stream_polls_and_yields_in_order(stub, sleeps):
    url, script = stub
    script.answers = [
        (200, {"status": "IN_PROGRESS", "stream": [{"output": 1}, {"output": 2}]}, {}),
        (200, {"status": "IN_PROGRESS", "stream": []}, {}),
        (200, {"status": "COMPLETED", "stream": [{"output": 3}]}, {}),
    ]
    assert list(Endpoint(url).stream("j", poll_interval=0.02)) == [1, 2, 3]
    assert sleeps == [0.02, 0.02]


def test_stream_failure_raises_after_chunks(stub):
    url, script = stub
    script.answers = [
        (200, {"id": "j", "status": "FAILED", "stream": [{"output": 1}], "error": "oops"}, {})
    ]
    chunks = []
    with pytest.raises(JobFailed, match="job j ended FAILED: oops"):
        chunks.extend(Endpoint(url).stream("j"))
    assert chunks == [1]


def test_cancel_and_health_routes(stub):
    url, script = stub
    endpoint = Endpoint(url, api_key=KEY)
    endpoint.cancel("j1")
    endpoint.health()
    assert [(s["method"], s["path"]) for s in script.seen] == [
        ("POST", "/cancel/j1"),
        ("GET", "/health"),
    ]
