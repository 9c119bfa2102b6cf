"""`%rp_serve` attacked: handlers that exit or get interrupted, web pages (cross-origin
requests, DNS rebinding), clients that hang up or go silent, hostile bodies, ids and headers.

Each test says what "held" means. The handlers are registered with `%%handler` in a real
InteractiveShell and served by `%rp_serve` over real HTTP on 127.0.0.1; the servers with
tight limits serve a plain session. One set of servers serves the whole module.
"""

from __future__ import annotations

import ctypes
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from helpers import run_python

from nbworker import serve
from nbworker.session import Session

HANDLERS = """
%%handler
import sys

def handler(job):
    do = job["input"].get("do")
    if do == "exit":
        sys.exit(3)
    if do == "base":
        raise BaseException("base")
    if do == "generator_exit":
        raise GeneratorExit("closed")
    if do == "interrupt":
        raise KeyboardInterrupt("raised in the handler")
    if do == "spin":  # pure Python until released: where an asynchronous exception lands
        gates["started"].set()
        while not gates["release"].is_set():
            pass
    if do == "wait":
        gates["started"].set()
        gates["release"].wait(10)
    return {"echo": job["input"], "webhook": job.get("webhook")}
"""

STREAMER = """
%%handler streamer
import sys

class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")

def streamer(job):
    yield {"loss": float("nan")}
    if job["input"].get("do") == "exit":
        sys.exit(4)
    if job["input"].get("do") == "unprintable":
        yield Unprintable()
    yield "last"
"""

ASYNCER = """
%%handler asyncer
async def asyncer(job):
    if job["input"].get("do") == "exit":
        raise SystemExit(5)
    raise KeyboardInterrupt
"""

TOKEN = "s3cret-token"
JSON = {"Content-Type": "application/json"}


class Servers:
    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.gates: dict[str, threading.Event] = shell.ipython.user_ns["gates"]
        (self.main,) = serve.running(shell.session)
        self.streamer = serve.serve(shell.session, "streamer")
        self.asyncer = serve.serve(shell.session, "asyncer")
        # Tight limits, a plain session: read timeout, body and queue caps.
        self.release = threading.Event()
        self.tight_session = Session()
        self.tight_session.register_handler(self._wait_handler, name="handler")
        self.tight = serve.serve(self.tight_session, max_body=1000, max_queued=3, read_timeout=0.5)
        self.guarded = serve.serve(self.tight_session, token=TOKEN)

    def _wait_handler(self, job: dict[str, Any]) -> Any:
        if job["input"].get("wait"):
            self.release.wait(10)
        return job["input"]

    def fresh_gates(self) -> None:
        self.gates["started"], self.gates["release"] = threading.Event(), threading.Event()

    def stop(self) -> None:
        for server in (self.streamer, self.asyncer, self.tight, self.guarded):
            server.stop(grace=0.2)
        self.tight_session.close()


@pytest.fixture(scope="module")
def servers(ipython) -> Iterator[Servers]:
    from shell import Shell

    from nbworker.magics import uninstall

    shell = Shell(ipython)
    ipython.user_ns["gates"] = {}
    for cell in (HANDLERS, STREAMER, ASYNCER):
        shell.ok(cell)
    shell.ok("%rp_serve --port 0")
    made = Servers(shell)
    made.fresh_gates()
    try:
        yield made
    finally:
        made.gates["release"].set()
        made.release.set()
        made.stop()
        shell.ok("%rp_serve --stop")
        uninstall(ipython)
        shell.session.close()


def wait_for(check, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


def runsync(server: serve.Server, job_input: dict, **body: Any) -> dict:
    answer = requests.post(f"{server.url}/runsync", json={"input": job_input, **body}, timeout=10)
    return answer.json()


def finished(server: serve.Server, job_id: str) -> dict:
    return wait_for(
        lambda: (a := server.status(job_id))["status"] not in ("IN_QUEUE", "IN_PROGRESS") and a
    )


def run(server: serve.Server, job_input: dict) -> dict:
    """POST /run, then the job's final /status: a job run by a worker thread (a /runsync
    job with a free slot runs on its request's thread)."""
    answer = requests.post(f"{server.url}/run", json={"input": job_input}, timeout=10).json()
    return finished(server, answer["id"])


def counts(server: serve.Server) -> dict[str, int]:
    return requests.get(f"{server.url}/health", timeout=5).json()["jobs"]


def error_type(answer: dict) -> str:
    return json.loads(answer["error"])["error_type"]


def exchange(server: serve.Server, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def request(
    server: serve.Server, head: str, body: bytes = b"", *, host: str | None = None
) -> bytes:
    host = f"127.0.0.1:{server.port}" if host is None else host
    lines = head.replace("HOST", host).strip().split("\n")
    return exchange(server, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status.split()[1]), headers, json.loads(body) if body else None


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that dies does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def interrupt_thread(thread_id: int, exception: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception)
    )


# ------------------------------------------------------------------ handlers that end the worker


@pytest.mark.parametrize(
    "do, kind",
    [
        ("exit", "SystemExit"),
        ("base", "BaseException"),
        ("generator_exit", "GeneratorExit"),
        ("interrupt", "KeyboardInterrupt"),
    ],
)
def test_a_handler_raising_a_base_exception_fails_its_job_and_the_server_serves_on(
    servers, do, kind
) -> None:
    """Held: FAILED with the SDK's error JSON naming the exception (a KeyboardInterrupt no
    /cancel sent is no cancel), then the next job completes and /health counts both."""
    before = counts(servers.main)
    answer = runsync(servers.main, {"do": do})
    assert answer["status"] == "FAILED" and error_type(answer) == f"<class '{kind}'>", answer
    assert runsync(servers.main, {"n": 1})["output"]["echo"] == {"n": 1}
    after = counts(servers.main)
    assert (after["failed"] - before["failed"], after["completed"] - before["completed"]) == (1, 1)
    assert (after["inProgress"], after["inQueue"]) == (0, 0)


def test_an_async_handler_that_exits_fails_and_asyncio_logs_nothing(servers, capfd) -> None:
    """Held: FAILED with the error, and no "Task exception was never retrieved" later."""
    import gc

    for do, kind in (("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt")):
        answer = runsync(servers.asyncer, {"do": do})
        assert answer["status"] == "FAILED" and error_type(answer) == f"<class '{kind}'>"
    gc.collect()
    assert "never retrieved" not in capfd.readouterr().err


def test_a_generator_that_exits_mid_stream_fails_with_its_chunks_kept(servers) -> None:
    job = servers.streamer.submit({"input": {"do": "exit"}})
    answer = finished(servers.streamer, job.id)
    assert answer["status"] == "FAILED" and "handler: 4" in answer["error"]
    stream = requests.get(f"{servers.streamer.url}/stream/{job.id}", timeout=5)
    assert json.loads(stream.text, parse_constant=pytest.fail)["stream"] == [
        {"output": {"loss": None}}  # strict JSON: NaN is null, as the SDK sends it
    ]
    assert runsync(servers.streamer, {})["status"] == "COMPLETED"


def test_a_chunk_that_cannot_be_copied_fails_the_job_not_the_worker(servers, monkeypatch) -> None:
    """The on_chunk callback raises (here: copying the chunk for /stream): FAILED with that
    error, and the worker serves on. A chunk whose repr raises is streamed as text."""
    job = servers.streamer.submit({"input": {"do": "unprintable"}})
    assert finished(servers.streamer, job.id)["status"] == "COMPLETED"
    stream = requests.get(f"{servers.streamer.url}/stream/{job.id}", timeout=5).json()["stream"]
    assert isinstance(stream[1]["output"], str)
    real_copy = serve.job.json_copy

    def copy(value: Any) -> Any:
        if type(value).__name__ == "Unprintable":
            raise RuntimeError("the copy failed")
        return real_copy(value)

    monkeypatch.setattr(serve.job, "json_copy", copy)
    answer = runsync(servers.streamer, {"do": "unprintable"})
    assert answer["status"] == "FAILED" and "the copy failed" in answer["error"]
    assert runsync(servers.streamer, {})["status"] == "COMPLETED"


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_an_exception_sent_to_a_running_worker_from_outside_fails_its_job(
    servers, exception
) -> None:
    """A stray asynchronous exception (no /cancel sent it) lands in the handler: FAILED
    with an error naming it, and the worker serves the next job."""
    servers.fresh_gates()
    job = servers.main.submit({"input": {"do": "spin"}})
    assert servers.gates["started"].wait(5)
    interrupt_thread(job.thread_id, exception)
    answer = finished(servers.main, job.id)
    servers.gates["release"].set()
    assert answer["status"] == "FAILED" and exception.__name__ in error_type(answer)
    assert runsync(servers.main, {"n": 2})["status"] == "COMPLETED"


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_an_exception_sent_to_an_idle_worker_leaves_it_serving(servers, exception) -> None:
    """Held: the exception lands when the sleeping worker wakes for the next job; that job
    still completes (before: a SystemExit ended the thread and jobs stayed IN_QUEUE)."""
    run(servers.main, {})
    (worker,) = servers.main._queue._workers
    wait_for(lambda: worker in servers.main._queue._sleeping)
    interrupt_thread(worker.thread.ident, exception)
    assert run(servers.main, {"n": 3})["output"]["echo"] == {"n": 3}
    assert run(servers.main, {"n": 4})["output"]["echo"] == {"n": 4}
    assert runsync(servers.main, {"n": 5})["output"]["echo"] == {"n": 5}
    assert servers.main.health()["workers"] == {"idle": 1, "running": 0}


def fail_the_next_job_twice(jobs: Any, second: type[BaseException]) -> None:
    """Make the next job of `jobs` raise SystemExit as it runs, then `second` while it is
    settled; later jobs run as usual."""
    raised: list[str] = []
    real_execute, real_settle = jobs._execute, jobs._settle

    def execute(*args: Any) -> None:
        if not raised:
            raised.append("execute")
            raise SystemExit("first")
        real_execute(*args)

    def settle(*args: Any, **kwargs: Any) -> None:
        if raised == ["execute"]:
            raised.append("settle")
            raise second("while handling the first")
        real_settle(*args, **kwargs)

    jobs._execute, jobs._settle = execute, settle


def test_a_worker_thread_that_ends_anyway_is_replaced_and_its_job_failed(caplog) -> None:
    """An exception while the worker handles another ends its thread: the job it held fails,
    a new thread serves, and /health keeps the counts."""
    session = Session()
    session.register_handler(lambda job: job["input"], name="handler")
    server = serve.serve(session)
    try:
        assert runsync(server, {"n": 0})["output"] == {"n": 0}
        jobs = server._queue
        fail_the_next_job_twice(jobs, SystemExit)
        answer = run(server, {"n": 1})
        assert answer["status"] == "FAILED" and "worker thread ended" in answer["error"]
        assert run(server, {"n": 2})["output"] == {"n": 2}
        assert server.health() == {
            "jobs": {"completed": 2, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 0},
            "workers": {"idle": 1, "running": 0},
        }
        assert [w.thread.is_alive() for w in jobs._workers] == [True]
        assert any("worker thread ended" in r.getMessage() for r in caplog.records)
    finally:
        server.stop(grace=0.2)
        session.close()


def test_exceptions_while_a_runsync_job_ends_on_its_request_thread_fail_only_it() -> None:
    """A /runsync job with a free slot runs on its request's thread: an exception there
    and one more while settling it fail that job with an error, free the slot, and the
    same connection serves on; nothing reaches the request's thread."""
    crashed: list[Any] = []
    hook, threading.excepthook = threading.excepthook, crashed.append
    session = Session()
    session.register_handler(lambda job: job["input"], name="handler")
    server = serve.serve(session)
    try:
        with requests.Session() as http:

            def post(n: int) -> dict:
                return http.post(
                    f"{server.url}/runsync", json={"input": {"n": n}}, timeout=10
                ).json()

            assert post(0)["output"] == {"n": 0}
            jobs = server._queue
            fail_the_next_job_twice(jobs, KeyboardInterrupt)
            answer = post(1)
            assert answer["status"] == "FAILED" and "KeyboardInterrupt" in answer["error"]
            assert post(2)["output"] == {"n": 2}
        assert server.health() == {
            "jobs": {"completed": 2, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 0},
            "workers": {"idle": 1, "running": 0},
        }
        assert jobs._workers == [] and crashed == []
    finally:
        threading.excepthook = hook
        server.stop(grace=0.2)
        session.close()


PROFILED_AFTER_SERVING = """
import cProfile, sys, threading, requests
from nbworker import serve
from nbworker.session import Session

spinning = threading.Event()
def handler(job):
    if job["input"].get("spin"):
        spinning.set()
        while True:
            pass
    return job["input"]

session = Session()
session.register_handler(handler, name="handler", concurrency=2)
server = serve.serve(session)
url = server.url
assert requests.post(url + "/runsync", json={"input": {"n": 1}}, timeout=10).json()["output"]
job = requests.post(url + "/run", json={"input": {"n": 2}}, timeout=10).json()["id"]
spin = requests.post(url + "/run", json={"input": {"spin": True}}, timeout=10).json()["id"]
spinning.wait(10)
assert requests.post(url + "/cancel/" + spin, timeout=10).json()["status"] == "CANCELLED"
while server.health()["workers"]["running"]:
    pass
cProfile.Profile().runcall(lambda: sum(range(10)))
sys.settrace(lambda *args: None)
(lambda: None)()
sys.settrace(None)
server.stop(grace=0.2)
print("profiled and traced after serving")
"""


def test_a_profiler_or_tracer_after_serving_does_not_hang_the_process() -> None:
    """Held: after jobs served, ended and cancelled, cProfile and sys.settrace run (before:
    clearing each job's pending interrupt with PyThreadState_SetAsyncExc(id, NULL) left
    CPython 3.11's eval breaker armed, and the first profiled call spun forever)."""
    done = run_python(PROFILED_AFTER_SERVING)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "profiled and traced after serving" in done.stdout


# ------------------------------------------------------------------ web pages


def test_a_web_pages_text_plain_post_is_refused_and_never_runs(servers) -> None:
    """A form or fetch() from any page needs no preflight for text/plain: refused, 403 for
    the foreign Origin, 415 for the body type (the SDK's server answers 422), nothing runs."""
    url, runs = servers.main.url, len(servers.shell.session.history)
    body = '{"input": {"n": 1}}'
    plain = {"Content-Type": "text/plain;charset=UTF-8"}
    answer = requests.post(
        f"{url}/runsync", data=body, headers={**plain, "Origin": "http://evil.example"}, timeout=5
    )
    assert answer.status_code == 403 and "cross-origin" in answer.json()["error"]
    for headers in (plain, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        answer = requests.post(f"{url}/run", data=body, headers=headers, timeout=5)
        assert answer.status_code == 415, answer.text
        assert "Content-Type: application/json" in answer.json()["error"]
    assert len(servers.shell.session.history) == runs
    for kind in ("application/json; charset=utf-8", "application/vnd.job+json"):
        answer = requests.post(f"{url}/runsync", data=body, headers={"Content-Type": kind})
        assert answer.json()["status"] == "COMPLETED"


def test_a_foreign_host_is_refused_dns_rebinding(servers) -> None:
    """A page under its own name, rebound to 127.0.0.1, sends that name as Host: 403 and
    nothing runs; the server's own names (and no Host, HTTP/1.0) pass."""
    server, runs = servers.main, len(servers.shell.session.history)
    body = b'{"input": {"n": 1}}'
    head = f"POST /runsync HTTP/1.1\nHost: HOST\nContent-Type: application/json\nContent-Length: {len(body)}\nConnection: close"
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}"):
        code, _, answer = parse(request(server, head, body, host=host))
        assert code == 403 and "DNS rebinding" in answer["error"], (host, answer)
    assert len(servers.shell.session.history) == runs
    for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        code, _, answer = parse(request(server, head, body, host=host))
        assert (code, answer["status"]) == (200, "COMPLETED"), host
    code, _, answer = parse(exchange(server, b"GET /health HTTP/1.0\r\n\r\n"))
    assert code == 200 and "workers" in answer
    two_hosts = head.replace("Host: HOST", f"Host: HOST\nHost: 127.0.0.1:{port}")
    assert parse(request(server, two_hosts, body, host="evil.example"))[0] == 403


def test_only_the_servers_own_origin_passes(servers) -> None:
    url, port = servers.main.url, servers.main.port
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        answer = requests.get(f"{url}/health", headers={"Origin": origin}, timeout=5)
        assert answer.status_code == 200, origin
    for origin in (
        "http://evil.example",
        "null",  # a sandboxed iframe, a file:// page
        f"http://127.0.0.1:{port + 1}",  # another local app, e.g. JupyterLab
        f"https://127.0.0.1:{port}",
    ):
        answer = requests.post(
            f"{url}/run", json={"input": {}}, headers={"Origin": origin}, timeout=5
        )
        assert answer.status_code == 403 and "cross-origin" in answer.json()["error"], origin


def test_a_preflight_never_opens_cors(servers) -> None:
    """Held: no Access-Control-* header in any answer; 403 for a foreign page's preflight,
    405 (as the SDK's server) without an Origin."""
    head = "OPTIONS /runsync HTTP/1.1\nHost: HOST\nAccess-Control-Request-Method: POST\nConnection: close"
    code, headers, answer = parse(request(servers.main, head + "\nOrigin: http://evil.example"))
    assert code == 403 and not [h for h in headers if h.startswith("access-control")]
    code, headers, answer = parse(request(servers.main, head))
    assert (code, headers["allow"]) == (405, "GET, POST") and "CORS" in answer["error"]
    assert not [h for h in headers if h.startswith("access-control")]


def test_a_token_is_checked_as_rfc_9110_says_and_only_in_the_header(servers) -> None:
    url = servers.guarded.url
    for value in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "):
        answer = requests.post(
            f"{url}/runsync", json={"input": {"n": 1}}, headers={"Authorization": value}
        )
        assert answer.json()["output"] == {"n": 1}, value
    for headers in (
        {},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        answer = requests.get(f"{url}/health", headers=headers, timeout=5)
        assert answer.status_code == 401, headers
    assert requests.get(f"{url}/health?token={TOKEN}", timeout=5).status_code == 401
    answer = requests.get(
        f"{url}/health",
        headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"},
        timeout=5,
    )
    assert answer.status_code == 403  # bound to 127.0.0.1: the Host is checked with a token too


# ------------------------------------------------------------------ clients that hang up


def test_clients_that_hang_up_print_nothing_and_no_job_runs_on_half_a_body(servers, capfd) -> None:
    """Held: no traceback into the notebook (before: two BrokenPipeError tracebacks each),
    a body cut short never runs, and the server answers the next client."""
    server, runs = servers.main, len(servers.shell.session.history)
    capfd.readouterr()

    def send(data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(data)
        return sock

    def post(path: str, body: bytes, length: int | None = None) -> bytes:
        length = len(body) if length is None else length
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        ).encode() + body

    # A /runsync whose client dies before the answer.
    servers.fresh_gates()
    sock = send(post("/runsync", b'{"input": {"do": "wait"}}'))
    assert servers.gates["started"].wait(5)
    reset(sock)
    servers.gates["release"].set()
    wait_for(lambda: not server._httpd.answering)
    runs += 1
    # Half a body, then the client leaves: the job must not run on the part it got.
    sock = send(post("/runsync", b'{"input": {"n": 1}}', length=100))
    wait_for(lambda: server._httpd.answering)
    reset(sock)
    wait_for(lambda: not server._httpd.answering)
    # A /stream and a /health read by nobody.
    for path in ("/stream/nope", "/health"):
        reset(send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()))
    assert runsync(server, {"n": 5})["status"] == "COMPLETED"
    wait_for(lambda: not server._httpd.answering)
    assert len(servers.shell.session.history) == runs + 1
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out and "Error" not in printed.err


def test_silent_clients_are_dropped_and_never_block_others(servers, capfd) -> None:
    """Slowloris: 40 connections that stop mid-headers or mid-body hold no one up, and each
    is closed after the read timeout (0.5 s here), mid-body with a 408."""
    server = servers.tight
    head = f"POST /run HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    silent = []
    for n in range(40):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        body_head = head + "Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{"
        sock.sendall((head if n % 2 else body_head).encode())
        silent.append(sock)
    started = time.monotonic()
    for _ in range(10):
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    assert time.monotonic() - started < 2
    for n, sock in enumerate(silent):
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        if n % 2 == 0:
            assert parse(received)[0] == 408
        else:
            assert received == b""
    assert "Traceback" not in capfd.readouterr().err


def test_bodies_over_the_limit_or_framed_otherwise_are_refused_and_the_connection_closed(
    servers,
) -> None:
    """413 for a Content-Length over the cap (at once, no body read), 411 for any
    Transfer-Encoding, 400 for two Content-Lengths; what follows on the connection (a
    smuggled request) is never read."""
    server = servers.tight
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = request(server, "POST /run HTTP/1.1\nHost: HOST\nContent-Length: 1000000000000")
    code, headers, body = parse(answer)
    assert (code, headers["connection"]) == (413, "close") and "at most 1000" in body["error"]
    for encoding in ("chunked", "Chunked ", "gzip, chunked"):
        head = f"POST /run HTTP/1.1\nHost: HOST\nContent-Type: application/json\nTransfer-Encoding: {encoding}"
        answer = request(server, head, b"5\r\nhello\r\n0\r\n\r\n" + smuggled)
        assert answer.count(b"HTTP/1.1 ") == 1 and parse(answer)[0] == 411, encoding
    head = "POST /run HTTP/1.1\nHost: HOST\nContent-Type: application/json\nContent-Length: 14\nContent-Length: 0"
    answer = request(server, head, b'{"input": {}}' + smuggled)
    assert answer.count(b"HTTP/1.1 ") == 1 and parse(answer)[0] == 400
    # A GET's body is read and dropped, not taken for the next request.
    head = f"GET /health HTTP/1.1\nHost: HOST\nContent-Length: {len(smuggled)}"
    assert request(server, head, smuggled).count(b"HTTP/1.1 ") == 1


def test_request_heads_are_framed_as_http_server_frames_them_or_refused(servers) -> None:
    """Held: what http.server refused is refused alike (431, 505, 400 for a bad version,
    HTTP/0.9 for anything but GET); what the email parser took in a way a proxy may not (a
    line without a colon, a space before the colon, a folded line) is a 400 and the
    connection closes; Expect: 100-continue, HTTP/1.0, HEAD and //path work as before."""
    server = servers.tight
    host = f"Host: 127.0.0.1:{server.port}\r\n"

    def answers(data: str, body: bytes = b"") -> list[int]:
        received = exchange(server, data.encode() + body)
        return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]

    many = "".join(f"X-{n}: {n}\r\n" for n in range(101))
    assert answers(f"GET /health HTTP/1.1\r\n{host}{many}\r\n") == [431]
    assert answers(f"GET /health HTTP/1.1\r\n{host}X: {'y' * 70000}\r\n\r\n") == [431]
    # A request line without a version http.server takes is answered as HTTP/0.9 (the
    # body alone), as http.server does.
    refused = exchange(server, b"GET /health HTTP/2.0\r\n\r\n")
    assert json.loads(refused) == {"error": "Invalid HTTP version (2.0)"}
    for version in ("HTTP/1", "HTTP/1.1.1", "HTTPS/1.1", "HTTP/a.b"):
        refused = exchange(server, f"GET /health {version}\r\n{host}\r\n".encode())
        assert json.loads(refused) == {"error": f"Bad request version ({version!r})"}
    smuggled = "GET /health HTTP/1.1\r\n" + host + "\r\n"
    for bad in ("Content-Length 5", "Content-Length : 5", " folded: on", "\tfolded: on", ": x"):
        head = f"POST /run HTTP/1.1\r\n{host}{bad}\r\n\r\n"
        assert answers(head + smuggled) == [400], bad
    # HTTP/0.9: a GET is answered with the body alone, anything else refused
    assert exchange(server, b"GET /health\r\n\r\n").startswith(b'{"jobs"')
    continued = f"POST /run HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
    continued += "Content-Length: 13\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    assert answers(continued, b'{"input": {}}') == [100, 200]
    code, _, body = parse(exchange(server, f"GET /health HTTP/1.0\r\n{host}\r\n".encode()))
    assert code == 200 and "jobs" in body  # and the server closed the connection
    head = exchange(server, f"HEAD /health HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 501") and head.endswith(b"\r\n\r\n")
    code, _, body = parse(
        exchange(server, f"GET //health HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
    )
    assert code == 200 and "jobs" in body
    # Header names in any case, values without the whitespace around them, each answer
    # whole (one write) on a kept-open connection.
    mixed = f"POST /run HTTP/1.1\r\nhOsT:   127.0.0.1:{server.port}  \r\ncontent-TYPE: application/json\r\n"
    mixed += "CONTENT-LENGTH: 13\r\n\r\n"
    assert answers(
        mixed
        + '{"input": {}}'
        + mixed
        + '{"input": {}}'
        + "GET /nope HTTP/1.1\r\n"
        + host
        + "Connection: close\r\n\r\n"
    ) == [200, 200, 404]


# ------------------------------------------------------------------ hostile bodies, ids, headers


def test_hostile_json_bodies_get_a_400(servers) -> None:
    """Held: each is one 400 with a message (before: 100k levels of nesting raised
    RecursionError into a traceback and no answer)."""
    url = servers.main.url
    deep = "[" * 100_000 + "]" * 100_000
    nested = {"input": {"a": json.loads("[" * 150 + "]" * 150)}}
    for data, words in [
        (deep, "levels deep"),
        ('{"input": ' + deep + "}", "levels deep"),
        (json.dumps(nested), "levels deep"),
        ("null", "not null"),
        ("3", "not int"),
        ('"input"', "not str"),
        ("{", "malformed JSON"),
        (b'{"input": {"a": "\xff"}}', "not UTF-8"),
    ]:
        answer = requests.post(f"{url}/run", data=data, headers=JSON, timeout=10)
        assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    fine = {"input": {"a": json.loads("[" * 50 + "]" * 50)}}
    assert runsync(servers.main, fine)["status"] == "COMPLETED"


def test_nan_input_is_taken_and_answered_as_strict_json(servers) -> None:
    """As the SDK: NaN and Infinity are read, and sent back as null; duplicate keys: the
    last one wins (Python's and FastAPI's json)."""
    data = '{"input": {"a": NaN, "b": -Infinity, "k": 1, "k": 2}}'
    answer = requests.post(f"{servers.main.url}/runsync", data=data, headers=JSON, timeout=5)
    output = json.loads(answer.text, parse_constant=pytest.fail)["output"]
    assert output["echo"] == {"a": None, "b": None, "k": 2}


def test_job_ids_with_path_characters_are_only_ever_looked_up(servers) -> None:
    """Held: the id is echoed in the JSON body only, never in a header; a very long one
    gets http.server's 414, as JSON."""
    server = servers.main
    for path, job_id in [
        ("/status/../../etc/passwd", "../../etc/passwd"),
        ("/status/a%2Fb", "a%2Fb"),
        ("/stream/x%0d%0aSet-Cookie:%20a=b", "x%0d%0aSet-Cookie:%20a=b"),
    ]:
        answer = request(server, f"GET {path} HTTP/1.1\nHost: HOST\nConnection: close")
        code, headers, body = parse(answer)
        assert (code, body) == (
            200,
            {"id": job_id, "status": "FAILED", "error": "Job ID not found"},
        )
        assert "set-cookie" not in headers
    answer = requests.get(f"{server.url}/status/{'a' * 70_000}", timeout=5)
    assert answer.status_code == 414 and answer.headers["Content-Type"] == "application/json"
    answer = requests.put(f"{server.url}/run", timeout=5)
    assert answer.status_code == 501 and "PUT" in answer.json()["error"]


def test_a_webhook_is_handed_to_the_handler_and_never_fetched(servers) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        hook = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        answer = runsync(servers.main, {"n": 1}, webhook=hook)
        assert answer["output"]["webhook"] == hook  # as the SDK passes it in the job
        with pytest.raises(TimeoutError):
            listener.accept()


def test_absurd_execution_timeouts_mean_none_and_break_nothing(servers, monkeypatch) -> None:
    """Held: a limit too long to be one (1e308 ms, Infinity), or no number (true, "5"), or
    none at all (-1, NaN): the job completes, and no watchdog thread dies of OverflowError
    (before: a traceback); a short one still times the job out."""
    crashed = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    url = servers.main.url
    for limit in ("1e308", "Infinity", "true", '"5"', "-1", "NaN", "[]"):
        data = f'{{"input": {{}}, "policy": {{"executionTimeout": {limit}, "ttl": 1e308}}}}'
        answer = requests.post(f"{url}/runsync", data=data, headers=JSON, timeout=5).json()
        assert answer["status"] == "COMPLETED", (limit, answer)
    for thread in threading.enumerate():
        if thread.name == "nbworker-deadline":
            thread.join(5)
    assert crashed == []
    servers.fresh_gates()
    answer = runsync(servers.main, {"do": "spin"}, policy={"executionTimeout": 50})
    servers.gates["release"].set()
    assert answer["status"] == "TIMED_OUT"


def test_a_flood_of_jobs_meets_a_bounded_queue(servers) -> None:
    """The queue holds `max_queued` jobs (3 here); more are answered 429 with Retry-After
    (which nbworker's client and RunPod's retry); none is lost."""
    server = servers.tight
    servers.release.clear()
    running = server.submit({"input": {"wait": True}})
    wait_for(lambda: server.status(running.id)["status"] == "IN_PROGRESS")
    queued = [server.submit({"input": {"n": n}}) for n in range(3)]
    answer = requests.post(f"{server.url}/run", json={"input": {"n": 3}}, timeout=5)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    assert "queue is full" in answer.json()["error"]
    servers.release.set()
    assert [finished(server, job.id).get("output") for job in queued] == [
        {"n": n} for n in range(3)
    ]


def test_many_clients_at_once_lose_no_job(servers) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = servers.main
    before = counts(server)["completed"]

    def client(n: int) -> list[str]:
        with requests.Session() as http:
            return [
                http.post(f"{server.url}/run", json={"input": {"n": n}}, timeout=10).json()["id"]
                for _ in range(25)
            ]

    with ThreadPoolExecutor(8) as pool:
        ids = [job_id for share in pool.map(client, range(8)) for job_id in share]
    assert {finished(server, job_id)["status"] for job_id in ids} == {"COMPLETED"}
    assert counts(server)["completed"] - before == len(ids) == 200
