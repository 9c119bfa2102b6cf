"""`nbworker test --url / --endpoint` and `replay_against` under attack: servers on 127.0.0.1
that misbehave (echo the key, drip bytes, nest answers past the parser's depth, answer
IN_QUEUE forever), options at their edges (`--timeout inf`, a URL with a password), Ctrl-C
in the middle of a replay, and the same notebook replayed against the exported worker's
`--rp_serve_api` and `%rp_serve` serving the same handler."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, write_notebook

from nbworker import cli, testing
from nbworker.testing import Options, Result
from nbworker.testing.against import ServerReplay

KEY = "rpa_ATTACKKEY0123456789"
DOUBLE = '%%handler\ndef handler(job):\n    return {"y": job["input"]["x"] * 2}'
COUNT = '%%handler\ndef handler(job):\n    for i in range(job["input"]["n"]):\n        yield i'

# what a respond function gives: (HTTP status, a JSON value or bytes[, headers]), or None
# when it wrote its answer itself
Respond = Callable[[BaseHTTPRequestHandler, str, str, Any], Any]


class Scripted:
    """A server on 127.0.0.1 that answers each request with `respond(request, method, path,
    body)`; `seen` holds (method, path, body, headers) of every request."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.seen: list[tuple[str, str, Any, dict[str, str]]] = []
        self.lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                scripted.answer(self, "GET")

            def do_POST(self) -> None:
                scripted.answer(self, "POST")

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # 8 clients at once: none waits for a SYN retry
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def answer(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"null")
        with self.lock:
            self.seen.append((method, request.path, body, dict(request.headers)))
        given = self.respond(request, method, request.path, body)
        if given is None:
            return
        code, data, *more = given
        data = data if isinstance(data, bytes) else json.dumps(data).encode()
        request.send_response(code)
        for name, value in (more[0] if more else {}).items():
            request.send_header(name, value)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(data)

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _, _ in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Respond], Scripted]]:
    made: list[Scripted] = []

    def make(respond: Respond) -> Scripted:
        made.append(Scripted(respond))
        return made[-1]

    yield make
    for server in made:
        server.close()


def record(job_input: Any, *, output: Any = None, stream: Any = None, **more: Any):
    return {
        "handler": "handler",
        "job": {"id": "local_test", "input": job_input},
        "status": "COMPLETED",
        "output": output,
        "error": None,
        "stream": stream,
        "refresh_worker": False,
        "duration_ms": 1.0,
        "warnings": [],
        **more,
    }


def notebook(path: Path, records: list[dict[str, Any]], handler: str = DOUBLE) -> Path:
    """A notebook of `handler` and a `%rp_test` cell per record, cell ids `cell-N`."""
    import nbformat

    sources = ["%load_ext nbworker", handler] + ['%rp_test {"input": {}}'] * len(records)
    write_notebook(path, sources, records={i + 2: [r] for i, r in enumerate(records)})
    stored = nbformat.read(path, 4)
    for index, cell in enumerate(stored.cells):
        cell.id = f"cell-{index}"
    nbformat.write(stored, path)
    return path


@pytest.fixture
def doubling(tmp_path: Path) -> Path:
    return notebook(
        tmp_path / "doubling.ipynb",
        [record({"x": 1}, output={"y": 2}), record({"x": 2}, output={"y": 4})],
    )


def doubled(request: Any, method: str, path: str, body: Any) -> Any:
    """A /runsync that doubles x, as the doubling handler does."""
    return 200, {"id": "job-1", "status": "COMPLETED", "output": {"y": body["input"]["x"] * 2}}


def everything(report: Any) -> str:
    """All a user may see of a report: the summary, the JUnit XML, the cell's HTML."""
    replay = ServerReplay(report)
    return testing.summary([report]) + testing.junit_xml([report]) + replay._html()


@pytest.fixture
def endpoint_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Scripted], None]:
    def point(server: Scripted) -> None:
        monkeypatch.setenv("RUNPOD_API_KEY", KEY)
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{server.url}/v2")

    return point


# ------------------------------------------------------------------------ options at their edges


@pytest.mark.parametrize("value", ["inf", "1e12", "nan", "0", "-3"])
def test_a_timeout_no_socket_can_take_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], doubling: Path, value: str
) -> None:
    # inf and 1e12 used to reach the socket: OverflowError, a traceback
    code = cli.main(
        ["test", "--no-progress", str(doubling), "--url", "http://127.0.0.1:1", "--timeout", value]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert err.startswith("nbworker test: error: --timeout must be") and err.count("\n") == 1


def test_a_urls_password_is_sent_as_asked_and_never_shown(
    doubling: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    server = scripted(doubled)
    url = server.url.replace("://", "://user:hunter2secret@")
    report = testing.test_notebook(doubling, Options(url=url))
    assert report.exit_code == 0
    assert {headers.get("Authorization") for *_, headers in server.seen} == {
        "Basic dXNlcjpodW50ZXIyc2VjcmV0"  # the URL's own credentials, which the user gave
    }
    assert report.remote == server.url.replace("://", "://user:***@")
    assert "hunter2secret" not in everything(report)
    closed = f"http://user:hunter2secret@127.0.0.1:{free_port()}"
    report = testing.test_notebook(doubling, Options(url=closed))
    assert report.exit_code == 3 and "hunter2secret" not in everything(report)


def test_the_runpod_key_never_goes_to_a_url(
    doubling: Path, scripted: Callable[[Respond], Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    server = scripted(doubled)
    assert testing.test_notebook(doubling, Options(url=server.url + "/v2/abc/")).exit_code == 0
    assert server.paths() == ["/v2/abc/runsync"] * 2  # the prefix kept, the slash dropped
    assert all("Authorization" not in headers for *_, headers in server.seen)


def test_an_ipv6_loopback_server_is_reached_past_a_proxy(
    doubling: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Server6(ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

    class Doubling(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(doubled(self, "POST", self.path, body)[1]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    try:
        server = Server6(("::1", 0), Doubling)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://[::1]:{server.server_address[1]}"
        assert testing.test_notebook(doubling, Options(url=url)).exit_code == 0
    finally:
        server.shutdown()
        server.server_close()


def test_a_bad_endpoint_base_url_is_the_notebooks_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str], doubling: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the command line a usage error before anything runs (exit 2); from Python, the
    notebook's error in one line (exit 3)."""
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "ftp://127.0.0.1/v2")
    code = cli.main(["test", "--no-progress", str(doubling), "--endpoint", "abc"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err == (
        "nbworker test: error: RUNPOD_ENDPOINT_BASE_URL must be an http(s) URL, "
        "not 'ftp://127.0.0.1/v2'\n"
    )
    report = testing.test_notebook(doubling, Options(endpoint="abc"))
    assert report.exit_code == 3
    assert "not an http(s) URL: 'ftp://127.0.0.1/v2/abc' (RUNPOD_ENDPOINT_BASE_URL)" in str(
        report.error
    )
    assert "Traceback" not in out + err


def test_a_notebook_with_runs_of_another_handler_only_says_which(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    other = '%%handler\ndef other(job):\n    return {"y": 0}'
    sources = ["%load_ext nbworker", DOUBLE, other, '%rp_test other {"input": {"x": 0}}']
    runs = {3: [record({"x": 0}, output={"y": 0}, handler="other")]}
    path = write_notebook(tmp_path / "other.ipynb", sources, records=runs)
    server = scripted(doubled)
    code = cli.main(["test", "--no-progress", str(path), "--url", server.url])
    out, err = capsys.readouterr()
    assert code == 5 and server.seen == [] and "no case was compared" in err
    assert (
        "note: other.ipynb: no recorded case of `handler` to send to the server "
        "(recorded: runs of other; --handler NAME sends them)"
    ) in out


# ------------------------------------------------------------------------ servers that misbehave


def test_a_key_the_server_echoes_in_a_jobs_answer_is_scrubbed(
    tmp_path: Path, scripted: Callable[[Respond], Scripted], endpoint_env: Callable
) -> None:
    path = notebook(
        tmp_path / "echo.ipynb",
        [record({"x": 1}, output={"y": 2}), record({"x": 2}, output={"y": 4})],
    )

    def echo(request: Any, method: str, path: str, body: Any) -> Any:
        said = f"you sent {request.headers.get('Authorization')}"
        if body["input"]["x"] == 1:  # a FAILED job whose error quotes the header
            return 200, {"id": "job-1", "status": "FAILED", "error": said}
        return 200, {"id": "job-2", "status": "COMPLETED", "output": {"y": said}}

    server = scripted(echo)
    endpoint_env(server)
    report = testing.test_notebook(path, Options(endpoint="abc", concurrency=1))
    assert all(f"Bearer {KEY}" == headers["Authorization"] for *_, headers in server.seen)
    first, second = (case.remote_detail for case in report.cases)
    assert first == "status: got FAILED, recorded COMPLETED, error 'you sent Bearer ***'"
    assert second == "output['y']: got 'you sent Bearer ***', recorded 4"
    assert KEY not in everything(report)


def test_a_key_echoed_in_a_stream_chunk_is_scrubbed(
    tmp_path: Path, scripted: Callable[[Respond], Scripted], endpoint_env: Callable
) -> None:
    path = notebook(tmp_path / "s.ipynb", [record({"n": 1}, output=[], stream=[0])], COUNT)

    def echo(request: Any, method: str, path: str, body: Any) -> Any:
        if path.endswith("/run"):
            return 200, {"id": "job-1", "status": "IN_QUEUE"}
        chunk = {"output": request.headers.get("Authorization")}
        return 200, {"id": "job-1", "status": "COMPLETED", "stream": [chunk]}

    server = scripted(echo)
    endpoint_env(server)
    (case,) = testing.test_notebook(path, Options(endpoint="abc")).cases
    assert case.remote_detail == "stream[0]: got 'Bearer ***', recorded 0"


def drip(request: Any, method: str, path: str, body: Any) -> None:
    """Headers, then a byte every 50 ms of a body that would take hours."""
    request.send_response(200)
    request.send_header("Content-Length", "1000000")
    request.end_headers()
    with contextlib.suppress(OSError):
        for _ in range(1_000_000):
            request.wfile.write(b" ")
            request.wfile.flush()
            time.sleep(0.05)  # the server's pace, not a test's synchronisation


@pytest.mark.parametrize("handler", [DOUBLE, COUNT], ids=["runsync", "run-stream"])
def test_a_slow_drip_answer_meets_the_timeout(
    tmp_path: Path, scripted: Callable[[Respond], Scripted], handler: str
) -> None:
    # /run of a streaming handler had no deadline: each byte restarted the socket's timeout
    path = notebook(tmp_path / "d.ipynb", [record({"x": 1, "n": 1}, output={"y": 2})], handler)
    server = scripted(drip)
    started = time.monotonic()
    report = testing.test_notebook(path, Options(url=server.url, timeout=0.5))
    assert time.monotonic() - started < 3
    (case,) = report.cases
    assert case.remote_result == Result.FAILED and case.remote_detail.startswith(
        "no answer in 0.5 s"
    )


def test_an_answer_of_gigabytes_is_refused_unread_and_stops_the_replay(
    doubling: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    def gigabytes(request: Any, method: str, path: str, body: Any) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(8 * 2**30))
        request.end_headers()
        request.wfile.write(b'{"id": "job-1", "status": "COMPLETED", "output": "')  # and so on

    server = scripted(gigabytes)
    started = time.monotonic()
    report = testing.test_notebook(doubling, Options(url=server.url, timeout=30))
    assert time.monotonic() - started < 2 and len(server.seen) == 1
    assert report.exit_code == 3 and "over max_answer_bytes=104857600" in str(report.error)


def test_an_answer_nested_past_the_comparisons_depth_fails_its_case_only(
    doubling: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    deep: Any = {"y": 2}
    for _ in range(900):  # parses (json's limit is ~1000), but comparing recursed too deep
        deep = [deep]

    def nested(request: Any, method: str, path: str, body: Any) -> Any:
        if body["input"]["x"] == 1:
            return 200, {"id": "job-1", "status": "COMPLETED", "output": deep}
        return doubled(request, method, path, body)

    report = testing.test_notebook(doubling, Options(url=scripted(nested).url, concurrency=1))
    first, second = report.cases
    assert (first.remote_result, first.remote_detail) == (
        Result.FAILED,
        "the answer is nested too deep to compare",
    )
    assert second.remote_result == Result.PASSED and report.error is None


def test_runsync_early_with_an_id_then_status_until_completed(
    doubling: Path, scripted: Callable[[Respond], Scripted], endpoint_env: Callable
) -> None:
    polls: dict[str, int] = {}

    def queue(request: Any, method: str, path: str, body: Any) -> Any:
        if path.endswith("/runsync"):
            job_id = f"job-{body['input']['x']}"
            polls[job_id] = 0
            return 200, {"id": job_id, "status": "IN_QUEUE"}
        job_id = path.rpartition("/")[2]
        polls[job_id] += 1
        if polls[job_id] < 3:
            return 200, {"id": job_id, "status": "IN_PROGRESS"}
        x = int(job_id.removeprefix("job-"))
        answer = {"status": "COMPLETED", "output": {"y": 2 * x}, "delayTime": 2500}
        return 200, {"id": job_id, **answer, "executionTime": 40}

    server = scripted(queue)
    endpoint_env(server)
    report = testing.test_notebook(doubling, Options(endpoint="abc"))
    assert report.exit_code == 0, testing.summary([report])
    assert polls == {"job-1": 3, "job-2": 3}
    assert all(method == "GET" for method, path, *_ in server.seen if "/status/" in path)
    assert report.cold_start_seconds == 2.5 and report.execution_seconds == [0.04, 0.04]


@pytest.mark.parametrize("status", ["TIMED_OUT", "CANCELLED", "FAILED"])
def test_a_job_that_ends_otherwise_fails_with_its_status(
    doubling: Path, scripted: Callable[[Respond], Scripted], status: str
) -> None:
    def ends(request: Any, method: str, path: str, body: Any) -> Any:
        if path.endswith("/runsync"):
            return 200, {"id": "job-1", "status": "IN_PROGRESS"}
        return 200, {"id": "job-1", "status": status}

    report = testing.test_notebook(doubling, Options(url=scripted(ends).url, select="cell-2"))
    (case,) = report.cases
    assert case.remote_detail == f"status: got {status}, recorded COMPLETED"
    assert report.exit_code == 1


def test_a_redirect_is_not_followed_and_the_key_stays(
    doubling: Path, scripted: Callable[[Respond], Scripted], endpoint_env: Callable
) -> None:
    elsewhere = scripted(doubled)
    server = scripted(lambda *_: (307, {}, {"Location": f"{elsewhere.url}/v2/abc/runsync"}))
    endpoint_env(server)
    report = testing.test_notebook(doubling, Options(endpoint="abc"))
    assert elsewhere.seen == [] and len(server.seen) == 1  # every case would get the same
    assert report.exit_code == 3 and "HTTP 307: redirected to http://127.0.0.1:" in report.error
    assert report.error.endswith("/v2/abc/runsync (not followed)")


def test_the_sdks_500_for_an_empty_dict_is_skipped_saying_why(
    tmp_path: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    # a handler returning {}: recorded COMPLETED with no output; the SDK's server answers 500
    path = notebook(tmp_path / "e.ipynb", [record({"x": 0}, output=None)])
    server = scripted(lambda *_: (500, b"Internal Server Error"))
    (case,) = testing.test_notebook(path, Options(url=server.url)).cases
    assert case.remote_result == Result.SKIPPED
    assert (
        case.remote_detail
        == "the SDK's local server answers HTTP 500 for a handler that returns {}"
    )
    # a 500 for a case with an output is a failure
    path = notebook(tmp_path / "f.ipynb", [record({"x": 0}, output={"y": 0})])
    (case,) = testing.test_notebook(path, Options(url=server.url)).cases
    assert case.remote_result == Result.FAILED and "HTTP 500" in case.remote_detail


def test_hostile_text_in_a_report_never_reaches_the_html_as_markup(
    tmp_path: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    hostile = "<script>alert(1)</script>"
    path = notebook(tmp_path / "h.ipynb", [record({"x": 1}, output={"y": 2})])
    server = scripted(lambda *_: (200, {"id": "j", "status": "FAILED", "error": hostile}))
    report = testing.test_notebook(path, Options(url=server.url))
    report.notes.append(hostile)
    html = ServerReplay(report)._html()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_no_job_rides_a_kept_alive_connection_the_server_may_drop(
    tmp_path: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    # The replay asks for `Connection: close`; a server that honours it closes the socket
    # just after answering, without saying so (as %rp_serve can). urllib3 pooled such a
    # connection and sent the next job down it: "closed the connection without answering",
    # the whole replay an error. Here the server keeps the socket until a second request
    # comes down it, and drops that one unanswered.
    path = notebook(tmp_path / "k.ipynb", [record({"x": x}, output={"y": 2 * x}) for x in range(6)])
    reused: list[str] = []

    def once_per_connection(request: Any, method: str, path: str, body: Any) -> Any:
        if getattr(request, "answered", False):
            reused.append(path)
            request.close_connection = True
            return None  # no answer: the connection is closed
        request.answered = True
        data = json.dumps(doubled(request, method, path, body)[1]).encode()
        request.send_response(200)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()  # no `Connection: close`: the client may think it is kept
        request.wfile.write(data)
        request.close_connection = False  # read what comes next on it: the race, lost
        return None

    server = scripted(once_per_connection)
    for concurrency in (1, 3):
        report = testing.test_notebook(path, Options(url=server.url, concurrency=concurrency))
        assert report.error is None and report.exit_code == 0, testing.summary([report])
    assert reused == []


# ------------------------------------------------------------------------ concurrency


def test_fifty_cases_eight_at_a_time_against_a_one_at_a_time_server(
    tmp_path: Path, scripted: Callable[[Respond], Scripted]
) -> None:
    path = notebook(
        tmp_path / "many.ipynb", [record({"x": x}, output={"y": 2 * x}) for x in range(50)]
    )
    one_at_a_time = threading.Lock()
    in_flight, most = [0], [0]

    def serial(request: Any, method: str, path: str, body: Any) -> Any:
        with one_at_a_time:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            time.sleep(0.005)  # the job's work, not synchronisation
            in_flight[0] -= 1
            return doubled(request, method, path, body)

    server = scripted(serial)
    started = time.monotonic()
    report = testing.test_notebook(path, Options(url=server.url, concurrency=8))
    assert time.monotonic() - started < 10
    assert report.exit_code == 0 and most == [1]
    sent = sorted(body["input"]["x"] for _, _, body, _ in server.seen)
    assert sent == list(range(50))  # every case once: none twice, none lost


# ------------------------------------------------------------------------ Ctrl-C


@pytest.mark.slow
@pytest.mark.parametrize("remote", ["--url", "--endpoint"])
def test_ctrl_c_ends_the_replay_at_once_and_cancels_deployed_jobs(
    tmp_path: Path, scripted: Callable[[Respond], Scripted], remote: str
) -> None:
    path = notebook(
        tmp_path / "slow.ipynb", [record({"x": x}, output={"y": 2 * x}) for x in range(20)]
    )
    running: set[str] = set()
    lock = threading.Lock()

    def never(request: Any, method: str, path: str, body: Any) -> Any:
        if path.endswith("/runsync"):
            job_id = f"job-{body['input']['x']}"
            if body["input"]["x"] == 0:  # the first case alone: answered
                return doubled(request, method, path, body)
            with lock:
                running.add(job_id)
            return 200, {"id": job_id, "status": "IN_QUEUE"}
        return 200, {"id": path.rpartition("/")[2], "status": "IN_QUEUE"}

    server = scripted(never)

    def polled() -> set[str]:
        return {path.rpartition("/")[2] for path in server.paths() if "/status/" in path}

    env = dict(os.environ, RUNPOD_API_KEY=KEY, RUNPOD_ENDPOINT_BASE_URL=f"{server.url}/v2")
    target = server.url if remote == "--url" else "abc"
    command = [sys.executable, "-m", "nbworker.cli", "test", "--no-progress", str(path)]
    process = subprocess.Popen(
        [*command, remote, target, "--concurrency", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while len(polled()) < 4:  # four jobs queued, each id known to the client (it polls)
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert time.monotonic() - started < 5  # not the 600 s the jobs in flight may wait
    assert process.returncode == 130, out + err
    assert err.strip() == "nbworker test: interrupted" and "Traceback" not in out + err
    runs = [path for path in server.paths() if path.endswith("/runsync")]
    assert len(runs) == 5  # the first and four in flight: no case sent after Ctrl-C
    cancelled = {path.rpartition("/")[2] for path in server.paths() if "/cancel/" in path}
    assert running == polled()  # (a job whose /runsync is unanswered has no id to cancel)
    assert cancelled == (running if remote == "--endpoint" else set())


# ------------------------------------------------------------------------ peer servers

KINDS = """%%handler
import runpod

def handler(job):
    kind = job["input"]["kind"]
    if kind == "raise":
        raise ValueError("boom <b>")
    if kind == "progress":  # deployed: an IN_PROGRESS output; locally: a failed send, logged
        runpod.serverless.progress_update(job, {"percent": 50})
        return {"done": True}
    answers = {
        "ok": {"y": 42},
        "error": {"error": "asked to fail"},
        "partial": {"error": "e", "partial": 42},
        "list_error": {"error": ["not", "a string"]},
        "empty": {},
        "none": None,
        "float": {"f": 0.1 + 0.2},
        "unicode": {"text": "héllo ✓ 🚀 \\u0000 </script>"},
        "big": {"blob": "é" * 2_000_000},
        "list": [1, 2, 3],
        "str": "just a string",
        "number": 7,
    }
    return answers[kind]"""
KIND_NAMES = [
    "ok", "raise", "error", "partial", "list_error", "empty", "none", "float", "unicode",
    "big", "list", "str", "number", "progress",
]  # fmt: skip


@contextlib.contextmanager
def sdk_server(worker: Path) -> Iterator[str]:
    """The exported worker under the SDK's `--rp_serve_api`, until /openapi.json answers."""
    import requests

    port = free_port()
    flags = ["--rp_api_host", "127.0.0.1", "--rp_api_port", str(port), "--rp_log_level", "WARN"]
    process = subprocess.Popen(
        [sys.executable, "handler.py", "--rp_serve_api", *flags],
        cwd=worker,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the SDK's server ended"
            try:
                requests.get(f"{url}/openapi.json", timeout=1)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "the SDK's server did not start in 60 s"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_sdks_server_and_rp_serve_give_the_same_verdicts(shell, tmp_path: Path) -> None:
    from nbworker import serve
    from nbworker.export import export_notebook

    shell.ok(KINDS)
    lines = [f'%rp_test {{"input": {{"kind": "{kind}"}}}}' for kind in KIND_NAMES]
    records = {index + 2: [shell.record(line)] for index, line in enumerate(lines)}
    path = write_notebook(
        tmp_path / "kinds.ipynb", ["%load_ext nbworker", KINDS, *lines], records=records
    )
    shell.ok("%rp_serve --port 0")
    (served,) = serve.running(shell.session)
    try:
        kernel = testing.test_notebook(path, Options(url=served.url))
    finally:
        served.stop()
    export_notebook(path, tmp_path / "worker")
    with sdk_server(tmp_path / "worker") as url:
        sdk = testing.test_notebook(path, Options(url=url))

    def verdicts(report: Any) -> dict[str, tuple[Result, str]]:
        assert report.error is None, testing.summary([report])
        return {
            kind: (case.remote_result, case.remote_detail)
            for kind, case in zip(KIND_NAMES, report.cases, strict=True)
        }

    ours, theirs = verdicts(kernel), verdicts(sdk)
    assert all(result == Result.PASSED for result, _ in ours.values()), testing.summary([kernel])
    # the SDK's local server answers HTTP 500 where a deployed worker answers: skipped, saying so
    quirks = {
        "list_error": "the SDK's local server answers HTTP 500 for an error that is not a string",
        "empty": "the SDK's local server answers HTTP 500 for a handler that returns {}",
    }
    assert {kind: theirs.pop(kind) for kind in quirks} == {
        kind: (Result.SKIPPED, why) for kind, why in quirks.items()
    }
    assert theirs == {kind: ours[kind] for kind in theirs}, testing.summary([sdk])


WORDS = """%%handler --aggregate
def handler(job):
    text = job["input"]["text"]
    if text == "stop":
        yield {"error": "asked to stop"}
        return
    for word in text.split():
        yield {"word": word, "score": len(word) / 3}"""


@pytest.mark.slow
def test_a_generator_gives_the_same_verdicts_on_both_servers(shell, tmp_path: Path) -> None:
    from nbworker import serve
    from nbworker.export import export_notebook

    shell.ok(WORDS)
    texts = ("a bb ccc", "ünï ✓", "stop")
    lines = [f'%rp_test {{"input": {{"text": "{text}"}}}}' for text in texts]
    records = {index + 2: [shell.record(line)] for index, line in enumerate(lines)}
    path = write_notebook(
        tmp_path / "words.ipynb", ["%load_ext nbworker", WORDS, *lines], records=records
    )
    shell.ok("%rp_serve --port 0")
    (served,) = serve.running(shell.session)
    try:
        kernel = testing.test_notebook(path, Options(url=served.url))
    finally:
        served.stop()
    export_notebook(path, tmp_path / "worker")
    with sdk_server(tmp_path / "worker") as url:
        sdk = testing.test_notebook(path, Options(url=url, rtol=0.0))
    for report in (kernel, sdk):
        assert report.exit_code == 0, testing.summary([report])
        assert [case.remote_result for case in report.cases] == [Result.PASSED] * 3
