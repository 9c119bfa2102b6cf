"""nbworker.client.Endpoint against the SDK's real `--rp_serve_api` server, and against a
small stdlib server on 127.0.0.1 for retries, errors and API key hygiene."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import socket
import socketserver
import struct
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
from helpers import free_port

import nbworker.client
from nbworker.client import Endpoint, EndpointError, EndpointTimeout, JobFailed, as_job
from nbworker.errors import NbworkerError

KEY = "rpa_SECRETKEY0123456789abcdef"


# ------------------------------------------------------------------- the SDK's server
def _start_sdk_server(folder: Path, source: str) -> Iterator[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(source)
    port = free_port()
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
    url = f"http://127.0.0.1:{free_port()}"
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


# ------------------------------------------------- deadlines, dropped connections, hostile servers
class Raw:
    """TCP servers on 127.0.0.1 that do what a test says with each connection, for the
    answers no well-behaved HTTP server gives: none, half of one, a reset, a trickle."""

    def __init__(self) -> None:
        self.done = threading.Event()  # set at teardown: behaviours that wait, stop
        self.servers: list[socketserver.ThreadingTCPServer] = []
        self.connections = 0

    def start(self, behave) -> str:
        raw = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                raw.connections += 1
                _read_request(self.request)
                with contextlib.suppress(OSError):  # the client went away: fine
                    behave(self.request, raw.done)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length and (chunk := conn.recv(65536)):
        body += chunk


@pytest.fixture
def raw() -> Iterator[Raw]:
    servers = Raw()
    yield servers
    servers.done.set()
    for server in servers.servers:
        server.shutdown()
        server.server_close()


def _never(conn: socket.socket, done: threading.Event) -> None:
    done.wait(30)


def _close(conn: socket.socket, done: threading.Event) -> None:
    conn.close()


def _half(conn: socket.socket, done: threading.Event) -> None:
    conn.sendall(
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"id": '
    )
    conn.close()


def _reset(conn: socket.socket, done: threading.Event) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # an RST, not a FIN


def _trickle(conn: socket.socket, done: threading.Event) -> None:
    """A byte every 0.1 s: no read ever waits long enough to time out."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    while not done.wait(0.1):
        conn.sendall(b" ")


def _endless(conn: socket.socket, done: threading.Event) -> None:
    """An answer without a length that never ends."""
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[")
    while not done.is_set():
        conn.sendall(b"1," * 32768)


def test_run_sync_timeout_is_a_deadline_against_a_server_that_never_answers(raw):
    endpoint = Endpoint(raw.start(_never))  # its own timeout: 30 s
    start = time.monotonic()
    with pytest.raises(EndpointTimeout) as info:
        endpoint.run_sync({"input": {}}, timeout=1)
    assert time.monotonic() - start < 2  # before: the endpoint's 30 s timeout
    assert str(info.value) == "POST /runsync: no answer within 1s"
    assert isinstance(info.value, EndpointError) and info.value.status_code is None
    assert info.value.timeout == 1


def test_run_sync_timeout_is_a_deadline_against_in_queue_forever(stub):
    url, script = stub
    script.answers = [(200, {"id": "j", "status": "IN_QUEUE"}, {})]
    real_next = script.next

    def slow_status():  # each poll takes 0.4 s to answer
        time.sleep(0.4)
        return (200, {"id": "j", "status": "IN_QUEUE"}, {})

    script.next = lambda: real_next() if not script.seen[1:] else slow_status()
    start = time.monotonic()
    with pytest.raises(EndpointTimeout, match=r"^job j still IN_QUEUE after 1s$") as info:
        Endpoint(url).run_sync({"input": {}}, timeout=1, poll_interval=0.3)
    assert time.monotonic() - start < 2
    assert (info.value.job_id, info.value.status, info.value.timeout) == ("j", "IN_QUEUE", 1)


@pytest.mark.parametrize("status", [429, 503])
def test_retries_end_by_the_deadline(stub, status):
    """A 429 (or 503) loop with a long Retry-After and many retries: bounded by the deadline."""
    url, script = stub
    script.answers = [(200, {"id": "j", "status": "IN_QUEUE"}, {})]
    script.default = (status, {"error": "slow down"}, {"Retry-After": "0.4"})
    start = time.monotonic()
    with pytest.raises(EndpointError) as info:
        Endpoint(url, retries=100).run_sync({"input": {}}, timeout=1, poll_interval=0.05)
    assert time.monotonic() - start < 2
    assert info.value.status_code == status and 2 <= len(script.seen) <= 5


def test_a_trickling_answer_meets_the_deadline(raw):
    start = time.monotonic()
    with pytest.raises(EndpointTimeout, match=r"^POST /runsync: no answer within 1s$"):
        Endpoint(raw.start(_trickle)).run_sync({"input": {}}, timeout=1)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("behave", "says"),
    [
        (_close, "the server closed the connection without answering"),
        (_half, "the server closed the connection in the middle of its answer"),
        (_reset, "the server reset the connection"),
    ],
    ids=["closed", "half-an-answer", "reset"],
)
def test_a_dropped_connection_is_not_cannot_connect(raw, sleeps, behave, says):
    url = raw.start(behave)
    with pytest.raises(EndpointError) as info:
        Endpoint(url, retries=2, backoff=0.01).run({"x": 1})
    assert str(info.value).startswith(f"POST /run: {says} ("), info.value
    assert "cannot connect" not in str(info.value) and info.value.status_code is None
    assert raw.connections == 1 and sleeps == []  # it was sent: /run is not sent again
    with pytest.raises(EndpointError, match=f"^GET /health: {says}"):
        Endpoint(url, retries=2, backoff=0.01).health()
    assert raw.connections == 4  # GET is retried


def test_a_huge_answer_is_refused_unread(raw, stub):
    endpoint = Endpoint(raw.start(_endless), max_answer_bytes=2**20)
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"^GET /health: HTTP 200: the answer is over "):
        endpoint.health()
    assert time.monotonic() - start < 5 and raw.connections == 1  # not retried
    url, script = stub
    script.default = (200, b"[" + b"0," * 2**20 + b"0]", {})
    with pytest.raises(EndpointError, match=r"over max_answer_bytes=1048576 \(Content-Length"):
        Endpoint(url, max_answer_bytes=2**20).health()
    bomb = gzip.compress(b"[" + b"0," * 2**23 + b"0]")  # 16 MiB of JSON in 16 KiB
    script.default = (200, bomb, {"Content-Encoding": "gzip"})
    assert len(bomb) < 2**15
    with pytest.raises(
        EndpointError, match=r"^GET /health: HTTP 200: the answer is over max_answer"
    ):
        Endpoint(url, max_answer_bytes=2**20).health()
    with pytest.raises(EndpointError, match="expected a JSON object, got '\\[0, 0, 0,"):
        Endpoint(url, max_answer_bytes=2**25).health()  # under the cap: read and decoded


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"status": "IN_QUEUE"}, 'the answer has no job id: {"status": "IN_QUEUE"}'),
        ({"id": 7, "status": "IN_QUEUE"}, "has a job id that is no id: 7"),
        ({"id": "", "status": "IN_QUEUE"}, "has a job id that is no id: ''"),
        ({"id": "..", "status": "IN_QUEUE"}, "has a job id that is no id: '..'"),
        (["j"], """expected a JSON object, got '["j"]'"""),
        ("j", """expected a JSON object, got '"j"'"""),
    ],
)
def test_run_needs_an_answer_with_a_job_id(stub, answer, message):
    url, script = stub
    script.default = (200, answer, {})
    with pytest.raises(EndpointError) as info:
        Endpoint(url).run({"x": 1})
    assert str(info.value).startswith("POST /run: HTTP 200: ") and message in str(info.value)
    assert info.value.status_code == 200


def test_run_sync_needs_a_job_id_to_poll_and_a_status_that_is_a_string(stub):
    url, script = stub
    script.default = (200, {"status": "IN_PROGRESS"}, {})
    with pytest.raises(EndpointError, match="POST /runsync: HTTP 200: the answer has no job id"):
        Endpoint(url).run_sync({"input": {}})
    script.default = (200, {"id": "j", "status": ["COMPLETED"]}, {})
    with pytest.raises(EndpointError, match=r"not a job status: \['COMPLETED'\]"):
        Endpoint(url).run_sync({"input": {}})
    script.default = (200, {"id": "j", "status": "COMPLETED"}, {})  # no id needed when done
    script.answers = [(200, {"status": "COMPLETED", "output": 1}, {})]
    assert Endpoint(url).run_sync({"input": {}})["output"] == 1


@pytest.mark.parametrize(
    ("status", "body", "headers", "message"),
    [
        (
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>",
            {"Content-Type": "text/html"},
            "GET /health: HTTP 502: an HTML page (502 Bad Gateway)",
        ),
        (
            200,
            b"<!DOCTYPE html><html><title>\n Sign in </title>" + b"x" * 5000,
            {},
            "GET /health: HTTP 200: expected a JSON object, got an HTML page (Sign in)",
        ),
        (
            200,
            b'{"status": "COMPLETED"',
            {},
            """GET /health: HTTP 200: expected a JSON object, got '{"status": "COMPLETED"'""",
        ),
        (200, b"[" * 100_000, {}, "GET /health: HTTP 200: expected a JSON object, got '[[[["),
        (200, b"", {}, "GET /health: HTTP 200: expected a JSON object, got ''"),
    ],
    ids=["html-error-page", "html-200", "invalid-json", "nested-past-the-parser", "empty"],
)
def test_answers_that_are_not_json_objects(stub, status, body, headers, message):
    url, script = stub
    script.default = (status, body, headers)
    with pytest.raises(EndpointError) as info:
        Endpoint(url, retries=0).health()
    assert str(info.value).startswith(message), info.value
    assert len(str(info.value)) <= 300


def test_a_redirect_is_not_followed_so_the_key_stays_home(stub, raw):
    """Not to another host (requests would strip the header there; here nothing is sent)
    and not on the same host either: the answer is an error naming where it pointed."""
    elsewhere = raw.start(_close)
    url, script = stub
    script.default = (307, {"detail": "moved"}, {"Location": f"{elsewhere}/health?key={KEY}"})
    with pytest.raises(EndpointError) as info:
        Endpoint(url, api_key=KEY).health()
    assert info.value.status_code == 307
    assert (
        str(info.value)
        == f"GET /health: HTTP 307: redirected to {elsewhere}/health?key=*** (not followed)"
    )
    assert raw.connections == 0 and len(script.seen) == 1


@pytest.mark.parametrize(
    ("retry_after", "sleeps_then", "retried"),
    [
        ("1000000000", [], False),
        ("inf", [], False),
        ("Fri, 01 Jan 2100 00:00:00 GMT", [], False),
        ("-5", [0.01], True),
        ("nan", [0.01], True),
        ("soon", [0.01], True),
        ("Thu, 01 Jan 1970 00:00:00 GMT", [0.0], True),
        ("0.3", [0.3], True),
    ],
)
def test_retry_after_values(stub, sleeps, retry_after, sleeps_then, retried):
    url, script = stub
    script.answers = [(429, {"error": "slow down"}, {"Retry-After": retry_after})]
    if retried:
        Endpoint(url, backoff=0.01).health()
    else:
        with pytest.raises(EndpointError, match=r"HTTP 429: slow down \(the server asks to wait"):
            Endpoint(url, backoff=0.01).health()
    assert sleeps == sleeps_then
    assert len(script.seen) == (2 if retried else 1)


def test_url_credentials_and_the_key_stay_out_of_messages_and_logs(caplog, sleeps):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    endpoint = Endpoint(f"http://user:PASSWORD123@127.0.0.1:{port}", api_key=KEY, backoff=0.01)
    with pytest.raises(EndpointError) as info:
        endpoint.health()
    assert str(info.value).startswith(
        f"GET /health: cannot connect to http://user:***@127.0.0.1:{port}"
    )
    assert "PASSWORD123" not in repr(endpoint) + str(info.value) + caplog.text
    assert KEY not in str(info.value) + caplog.text
    with pytest.raises(ValueError) as bad:
        Endpoint("ftp://user:PASSWORD123@host")
    assert "PASSWORD123" not in str(bad.value)


def test_job_and_endpoint_ids_cannot_leave_their_path_segment(stub):
    url, script = stub
    endpoint = Endpoint(url)
    endpoint.status("a/../b?c#d")
    endpoint.cancel("../../run")
    assert [s["path"] for s in script.seen] == [
        "/status/a%2F..%2Fb%3Fc%23d",
        "/cancel/..%2F..%2Frun",
    ]
    for job_id in ("..", ".", "", None, 7):
        with pytest.raises(ValueError, match="not a job id"):
            endpoint.status(job_id)
    for endpoint_id in ("..", ".", "a/b", "a?b", "a b", ""):
        with pytest.raises(ValueError, match="not an endpoint id"):
            Endpoint(endpoint_id=endpoint_id)


def test_a_stream_whose_deadline_comes_mid_poll_says_the_jobs_state(stub):
    """Each /stream poll after the first takes 0.7 s: the deadline comes while the second is
    in flight, and the error says how the job stood, as run_sync's does."""
    url, script = stub
    real_next = script.next

    def slow_stream():
        if script.seen[1:]:
            time.sleep(0.7)
        return real_next()

    script.default = (200, {"id": "j", "status": "IN_PROGRESS", "stream": [{"output": "tick"}]}, {})
    script.next = slow_stream
    start = time.monotonic()
    with pytest.raises(EndpointTimeout, match=r"^stream of job j still IN_PROGRESS after 1s$"):
        list(Endpoint(url).stream("j", poll_interval=0.05, timeout=1))
    assert time.monotonic() - start < 2


def test_a_stream_that_never_ends_is_bounded_by_its_timeout(stub):
    url, script = stub
    script.default = (200, {"id": "j", "status": "IN_PROGRESS", "stream": [{"output": "tick"}]}, {})
    chunks = []
    start = time.monotonic()
    with pytest.raises(EndpointTimeout, match=r"^stream of job j still IN_PROGRESS after 1s$"):
        chunks.extend(Endpoint(url).stream("j", poll_interval=0.05, timeout=1))
    assert time.monotonic() - start < 2 and chunks and set(chunks) == {"tick"}
    script.default = (200, {"id": "j", "status": "IN_PROGRESS", "stream": "tick"}, {})
    with pytest.raises(
        EndpointError, match=r"GET /stream/j: HTTP 200: the answer's stream is not a list"
    ):
        next(Endpoint(url).stream("j"))
