"""`nbworker test --url / --endpoint` and `replay_against`: recorded cases replayed against a
running server. Real servers on 127.0.0.1: the exported worker under the SDK's
`--rp_serve_api`, `%rp_serve` in a real InteractiveShell, and small `http.server` stand-ins
for a deployed endpoint and for hostile servers (garbage, HTML, 404, silence)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, free_port, write_notebook

from nbworker import cli, testing
from nbworker.testing import Options, Result

DATA = ROOT / "tests" / "data"
KEY = "rpa_SECRETKEY0123456789abcdef"
HANDLER = '%%handler\ndef handler(job):\n    if "fail" in job["input"]:\n        return {"error": job["input"]["fail"]}\n    return {"y": job["input"]["x"] * 2}'


def notebook(path: Path, sources: list[str], records: dict[int, list[Any]]) -> Path:
    """`write_notebook`, each cell's id `cell-N` (its index), so that case ids are known."""
    import nbformat

    write_notebook(path, sources, records=records)
    stored = nbformat.read(path, 4)
    for index, cell in enumerate(stored.cells):
        cell.id = f"cell-{index}"
    nbformat.write(stored, path)
    return path


def record(job_input: Any, *, status: str = "COMPLETED", output: Any = None, error: Any = None):
    return {
        "handler": "handler",
        "job": {"id": "local_test", "input": job_input},
        "status": status,
        "output": output,
        "error": error,
        "stream": None,
        "refresh_worker": False,
        "duration_ms": 1.0,
        "warnings": [],
    }


@pytest.fixture
def doubling(tmp_path: Path) -> Path:
    """A notebook whose handler doubles x, with five recorded runs: two completed, one
    failed, one --no-compare, one whose input is not an object."""
    sources = [
        "%load_ext nbworker",
        HANDLER,
        '%rp_test {"input": {"x": 1}}',
        '%rp_test {"input": {"x": 2}}',
        '%rp_test {"input": {"fail": "asked to fail"}}',
        '%rp_test --no-compare {"input": {"x": 3}}',
        '%rp_test {"input": [1, 2]}',
    ]
    records = {
        2: [record({"x": 1}, output={"y": 2})],
        3: [record({"x": 2}, output={"y": 4})],
        4: [record({"fail": "asked to fail"}, status="FAILED", error="asked to fail")],
        5: [record({"x": 3}, output={"y": 999})],
        6: [record([1, 2], status="FAILED", error="not an object")],
    }
    return notebook(tmp_path / "doubling.ipynb", sources, records)


# ------------------------------------------------------------------------ stand-in servers


class Fake:
    """A RunPod-style server on 127.0.0.1 doing what the doubling handler does. `mode`:
    "ok", "changed" (y off by one), "garbage", "html", "404", "queue" (jobs stay IN_QUEUE),
    "500" (HTTP 500 for a failed job). `key`: the Bearer key it wants (None: none)."""

    def __init__(self, *, mode: str = "ok", key: str | None = None, prefix: str = "") -> None:
        self.mode, self.key, self.prefix = mode, key, prefix
        self.seen: list[tuple[str, str, Any]] = []
        self.cancelled: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.answer(self, "GET")

            def do_POST(self) -> None:
                fake.answer(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def send(self, request: Any, code: int, body: Any, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request.send_response(code)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def answer(self, request: Any, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"null")
        path = request.path.removeprefix(self.prefix)
        with self.lock:
            self.seen.append((method, path, body))
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return self.send(request, 401, {"error": "Unauthorized"})
        if self.mode == "garbage":
            return self.send(request, 200, b"hello, not json", "text/plain")
        if self.mode == "html":
            page = b"<html><head><title>Login required</title></head><body>no</body></html>"
            return self.send(request, 200, page, "text/html")
        if self.mode == "404" or not path.startswith(("/runsync", "/cancel", "/status")):
            return self.send(request, 404, {"detail": "Not Found"})
        if path.startswith("/cancel/"):
            self.cancelled.append(path.rpartition("/")[2])
            return self.send(request, 200, {"id": path.rpartition("/")[2], "status": "CANCELLED"})
        if path.startswith("/status/"):
            return self.send(request, 200, {"id": path.rpartition("/")[2], "status": "IN_QUEUE"})
        job_input = body["input"]
        job_id = f"job-{len(self.seen)}"
        if self.mode == "queue":
            return self.send(request, 200, {"id": job_id, "status": "IN_QUEUE"})
        times = {"delayTime": 1500, "executionTime": 20}
        if "fail" in job_input:
            if self.mode == "500":
                return self.send(request, 500, {"detail": "Internal Server Error"})
            answer = {"id": job_id, "status": "FAILED", "error": job_input["fail"], **times}
            return self.send(request, 200, answer)
        y = job_input["x"] * 2 + (1 if self.mode == "changed" else 0)
        self.send(request, 200, {"id": job_id, "status": "COMPLETED", "output": {"y": y}, **times})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Callable[..., Fake]]:
    made: list[Fake] = []

    def make(**kwargs: Any) -> Fake:
        made.append(Fake(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["test", "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------ fast: options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://a", "endpoint": "b"}, "exclude each other"),
        ({"url": "ftp://127.0.0.1"}, "url must be http(s)://HOST[:PORT]"),
        ({"url": "http://"}, "url must be"),
        ({"endpoint": "a/b"}, "endpoint must be an endpoint id"),
        ({"url": "http://a", "concurrency": 0}, "concurrency must be at least 1"),
    ],
)
def test_options_refuse_what_cannot_be_replayed_against(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Options(**options)


def test_cli_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], doubling: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    for args, said in [
        (["--endpoint", "abc"], "--endpoint needs RUNPOD_API_KEY"),
        (["--url", "ftp://x"], "--url must be http(s)://HOST[:PORT], not 'ftp://x'"),
        (["--url", "http://127.0.0.1:1", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["--url", "http://127.0.0.1:1", "-p", "a", "1"], "-p is for the kernel replay"),
    ]:
        code, out, err = run_cli(capsys, str(doubling), *args)
        assert (code, out) == (2, ""), err
        assert err.count("\n") == 1 and said in err, err
    with pytest.raises(SystemExit) as stopped:
        cli.main(["test", str(doubling), "--url", "http://127.0.0.1:1", "--worker-only"])
    assert stopped.value.code == 2
    assert "not allowed with argument --url" in capsys.readouterr().err


# ------------------------------------------------------------------------ fast: a server


def test_every_case_is_sent_once_as_input_only_and_passes(
    capsys: pytest.CaptureFixture[str], doubling: Path, fake: Callable[..., Fake], tmp_path: Path
) -> None:
    server = fake()
    junit = tmp_path / "out" / "results.xml"
    code, out, err = run_cli(capsys, str(doubling), "--url", server.url, "--junit-xml", str(junit))
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].split() == ["case", "handler", "server", "time", "(round", "trip)"]
    results = {line.split()[0].split("::")[1]: line.split()[2] for line in lines[2:7]}
    assert results == {
        "cell-2": "passed",
        "cell-3": "passed",
        "cell-4": "passed",
        "cell-5": "skipped",  # --no-compare: not sent
        "cell-6": "skipped",  # its input is no object: not sent
    }
    sent = sorted(json.dumps(body) for method, path, body in server.seen if path == "/runsync")
    assert sent == sorted(
        json.dumps({"input": i}) for i in ({"x": 1}, {"x": 2}, {"fail": "asked to fail"})
    )
    assert "3 passed, 0 failed, 2 compared nowhere" in out
    assert f"server {server.url}: cold start 1.50 s" in out  # the first answer's delayTime
    assert "executionTime: median 0.02 s, max 0.02 s" in out
    suite = next(ElementTree.parse(junit).getroot().iter("testsuite"))
    assert (suite.get("tests"), suite.get("failures")) == ("5", "0")
    names = {case.get("name") for case in suite.iter("testcase")}
    assert "doubling.ipynb::cell-2::case-1 [server]" in names
    skipped = [case.find("skipped") for case in suite.iter("testcase")]
    assert sorted(s.get("message") for s in skipped if s is not None) == [
        "%rp_test --no-compare",
        "its input is not a JSON object: RunPod's API and the SDK's local server refuse it",
    ]


def test_a_changed_server_fails_with_the_difference(
    capsys: pytest.CaptureFixture[str], doubling: Path, fake: Callable[..., Fake]
) -> None:
    code, out, _ = run_cli(capsys, str(doubling), "--url", fake(mode="changed").url)
    assert code == 1
    assert "doubling.ipynb::cell-2::case-1 (server): output['y']: got 3, recorded 2" in out
    assert "doubling.ipynb::cell-3::case-1 (server): output['y']: got 5, recorded 4" in out
    assert "1 passed, 2 failed, 2 compared nowhere" in out


def test_k_selects_cases_and_the_others_are_not_sent(
    capsys: pytest.CaptureFixture[str], doubling: Path, fake: Callable[..., Fake]
) -> None:
    server = fake()
    code, out, _ = run_cli(capsys, str(doubling), "--url", server.url, "-k", "cell-3")
    assert code == 0
    assert [body for _, path, body in server.seen] == [{"input": {"x": 2}}]
    assert "1 passed, 0 failed, 0 notebook error(s)" in out
    code, out, err = run_cli(capsys, str(doubling), "--url", server.url, "-k", "nothing-such")
    assert code == 5 and "-k 'nothing-such' matches none" in err


def test_concurrency_1_and_8_give_the_same_verdicts(
    doubling: Path, fake: Callable[..., Fake]
) -> None:
    server = fake(mode="changed")
    verdicts = []
    for concurrency in (1, 8):
        report = testing.test_notebook(doubling, Options(url=server.url, concurrency=concurrency))
        verdicts.append(
            [(case.id, case.remote_result, case.remote_detail) for case in report.cases]
        )
    assert verdicts[0] == verdicts[1]
    assert [result for _, result, _ in verdicts[0]].count(Result.FAILED) == 2


def test_handler_picks_whose_cases_are_sent(tmp_path: Path, fake: Callable[..., Fake]) -> None:
    words = '%%handler\ndef words(job):\n    return {"y": job["input"]["x"] * 2}'
    sources = [
        "%load_ext nbworker",
        HANDLER,
        words,
        '%rp_test {"input": {"x": 1}}',
        '%rp_test words {"input": {"x": 5}}',
    ]
    words_run = dict(record({"x": 5}, output={"y": 10}), handler="words")
    path = notebook(
        tmp_path / "two.ipynb", sources, {3: [record({"x": 1}, output={"y": 2})], 4: [words_run]}
    )
    server = fake()
    report = testing.test_notebook(path, Options(url=server.url, handler="words"))
    assert [body for _, _, body in server.seen] == [{"input": {"x": 5}}]
    first, second = report.cases
    assert (
        first.remote_result == Result.NOT_REPLAYED
        and "not the served handler's (`words`" in first.remote_detail
    )
    assert second.remote_result == Result.PASSED and report.exit_code == 0
    report = testing.test_notebook(path, Options(url=server.url, handler="nobody"))
    assert report.exit_code == 3 and "no %%handler cell registers 'nobody'" in str(report.error)
    assert len(server.seen) == 1  # nothing more was sent


def test_an_unreachable_server_is_the_notebooks_error_in_one_line(
    capsys: pytest.CaptureFixture[str], doubling: Path
) -> None:
    started = time.monotonic()
    code, out, _ = run_cli(capsys, str(doubling), "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 3 and time.monotonic() - started < 1
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "cannot connect to http://127.0.0.1:" in errors[0]
    assert "differences:" not in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("garbage", "expected a JSON object, got 'hello, not json'"),
        ("html", "Login required"),
        ("404", "HTTP 404: Not Found"),
    ],
)
def test_a_server_that_is_no_runpod_server_is_one_line_and_gets_one_job(
    capsys: pytest.CaptureFixture[str],
    doubling: Path,
    fake: Callable[..., Fake],
    mode: str,
    said: str,
) -> None:
    server = fake(mode=mode)
    code, out, _ = run_cli(capsys, str(doubling), "--url", server.url)
    assert code == 3
    (error,) = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert said in error and error.startswith(
        f"ERROR: doubling.ipynb: cannot replay against {server.url}: POST /runsync"
    )
    assert len(server.seen) == 1  # the first job alone: the rest were not sent


def test_a_server_that_never_answers_is_bounded_by_the_timeout(doubling: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        report = testing.test_notebook(doubling, Options(url=url, timeout=0.3))
        assert time.monotonic() - started < 1.5
    failed = [case for case in report.cases if case.remote_result == Result.FAILED]
    assert len(failed) == 3 and report.exit_code == 1
    assert failed[0].remote_detail == "no answer in 0.3 s (the server sent none)"


def test_the_sdk_servers_500_for_a_failed_case_is_skipped_saying_why(
    doubling: Path, fake: Callable[..., Fake], tmp_path: Path
) -> None:
    sources = ["%load_ext nbworker", HANDLER, '%rp_test {"input": {"fail": ["a list"]}}']
    errors = record({"fail": ["a list"]}, status="FAILED", error=["a list"])
    path = notebook(tmp_path / "errors.ipynb", sources, {2: [errors]})
    report = testing.test_notebook(path, Options(url=fake(mode="500").url))
    (case,) = report.cases
    assert case.remote_result == Result.SKIPPED
    assert "HTTP 500 for an error that is not a string" in case.remote_detail
    # a string error answered with 500 is a failure, not a quirk
    report = testing.test_notebook(doubling, Options(url=fake(mode="500").url))
    failed = [case for case in report.cases if case.remote_result == Result.FAILED]
    assert len(failed) == 1 and "HTTP 500" in failed[0].remote_detail


# ------------------------------------------------------------------------ fast: --endpoint


def test_endpoint_sends_the_key_and_never_shows_it(
    capsys: pytest.CaptureFixture[str],
    doubling: Path,
    fake: Callable[..., Fake],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = fake(key=KEY, prefix="/v2/abc123")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{server.url}/v2")
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    code, out, err = run_cli(capsys, str(doubling), "--endpoint", "abc123")
    assert code == 0, out + err
    assert "server endpoint abc123: cold start 1.50 s" in out
    monkeypatch.setenv("RUNPOD_API_KEY", KEY[:-1] + "X")  # a wrong key: refused
    code, out, err = run_cli(capsys, str(doubling), "--endpoint", "abc123")
    assert code == 3 and "HTTP 401" in out
    assert KEY[:-1] not in out + err


def test_endpoint_timeout_cancels_the_job(
    doubling: Path, fake: Callable[..., Fake], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake(key=KEY, mode="queue", prefix="/v2/abc123")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{server.url}/v2")
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    report = testing.test_notebook(
        doubling, Options(endpoint="abc123", timeout=0.3, select="cell-2")
    )
    (case,) = report.cases
    assert case.remote_result == Result.FAILED
    assert case.remote_detail == "no answer in 0.3 s (job job-1 still IN_QUEUE, cancelled)"
    assert server.cancelled == ["job-1"]


# ------------------------------------------------------------------------ %rp_serve, the cell function


@pytest.fixture
def served(shell) -> Iterator[tuple[Any, str]]:
    from nbworker import serve

    shell.ok(HANDLER)
    shell.ok('%rp_test {"input": {"x": 21}}')
    shell.ok('%rp_test {"input": {"fail": "no"}}')
    shell.ok("%rp_serve --port 0")
    (server,) = serve.running(shell.session)
    yield shell, server.url
    server.stop()


def test_replay_against_from_a_cell_shows_a_report(served) -> None:
    shell, url = served
    result = shell.ok(f"from nbworker.testing import replay_against\nreplay_against(url={url!r})")
    replay = result.result
    assert replay.passed and replay.exit_code == 0
    assert [case.remote_result for case in replay.cases] == [Result.PASSED, Result.PASSED]
    bundle, _ = shell.ipython.display_formatter.format(replay)
    assert "kernel::run-1::case-1" in bundle["text/plain"]
    assert "var(--jp-" in bundle["text/html"] and "kernel::run-2::case-1" in bundle["text/html"]
    # the jobs %rp_serve ran are not cases the next time
    again = shell.ok(f"replay_against(url={url!r})").result
    assert len(again.cases) == 2
    # the server changes behind the kernel's back: the report says how
    shell.ok('%%handler\ndef handler(job):\n    return {"y": 0}')
    changed = shell.ok(f"replay_against(url={url!r}, concurrency=1)").result
    assert changed.exit_code == 1 and not changed.passed
    assert "status: got COMPLETED, recorded FAILED" in str(changed)
    with pytest.raises(ValueError, match="needs url="):
        testing.replay_against()


def test_replay_against_a_saved_notebook_and_its_refusals(
    doubling: Path, fake: Callable[..., Fake], monkeypatch: pytest.MonkeyPatch
) -> None:
    replay = testing.replay_against(doubling, url=fake().url, concurrency=1)
    assert replay.passed and replay.report.name == "doubling.ipynb"
    assert "3 passed, 0 failed, 2 compared nowhere" in str(replay)
    assert "[server]" in replay.junit_xml()
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(ValueError, match="endpoint= needs RUNPOD_API_KEY"):
        testing.replay_against(doubling, endpoint="abc")
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        testing.replay_against(doubling, url="http://127.0.0.1:1", concurrency=0)


def test_a_generator_served_by_rp_serve_is_compared_chunk_by_chunk(shell) -> None:
    from nbworker import serve

    shell.ok(
        '%%handler\ndef handler(job):\n    for word in job["input"]["text"].split():\n'
        '        yield {"word": word}'
    )
    shell.ok('%rp_test {"input": {"text": "a bb ccc"}}')
    shell.ok('%rp_test {"input": {"text": "one"}}')
    shell.ok("%rp_serve --port 0")
    (server,) = serve.running(shell.session)
    try:
        replay = testing.replay_against(url=server.url, session=shell.session)
        assert replay.passed, str(replay)
        shell.ok(
            '%%handler\ndef handler(job):\n    for word in job["input"]["text"].split():\n'
            '        yield {"word": word.upper()}'
        )
        changed = testing.replay_against(url=server.url, session=shell.session, select="run-1")
    finally:
        server.stop()
    (case,) = changed.cases
    assert case.remote_result == Result.FAILED
    assert case.remote_detail.splitlines() == [
        "stream[0]['word']: got 'A', recorded 'a'",
        "stream[1]['word']: got 'BB', recorded 'bb'",
        "stream[2]['word']: got 'CCC', recorded 'ccc'",
    ]
    assert "kernel::run-1::case-1 (server):\n    stream[0]['word']" in str(changed)


# ------------------------------------------------------------------------ slow: real servers


@contextlib.contextmanager
def sdk_server(worker: Path) -> Iterator[str]:
    """`python handler.py --rp_serve_api` in the worker folder, until /openapi.json answers."""
    import requests

    port = free_port()
    log = (worker / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "handler.py",
            "--rp_serve_api",
            "--rp_api_host",
            "127.0.0.1",
            "--rp_api_port",
            str(port),
            "--rp_log_level",
            "WARN",
        ],
        cwd=worker,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (worker / "server.log").read_text()
            try:
                requests.get(f"{url}/openapi.json", timeout=1)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "the SDK's server did not start in 60 s"
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def nbworker_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "test", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "RUNPOD_API_KEY"},
    )


@pytest.mark.slow
def test_the_exported_worker_under_rp_serve_api(tmp_path: Path) -> None:
    from nbworker.export import export_notebook

    notebook = DATA / "sentiment.ipynb"
    worker = tmp_path / "worker"
    export_notebook(notebook, worker)
    with sdk_server(worker) as url:
        done = nbworker_test(str(notebook), "--url", url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 0 failed, 0 notebook error(s)" in done.stdout
    handler = worker / "handler.py"
    text = handler.read_text()
    assert '"label"' in text or "'label'" in text
    handler.write_text(text.replace('"positive"', '"POSITIVE"').replace("'positive'", "'POSITIVE'"))
    with sdk_server(worker) as url:
        done = nbworker_test(str(notebook), "--url", url, "--concurrency", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(server): output['label']: got 'POSITIVE', recorded 'positive'" in done.stdout


@pytest.mark.slow
def test_a_streaming_worker_through_stream(tmp_path: Path) -> None:
    from nbworker.export import export_notebook

    notebook = DATA / "streaming.ipynb"
    worker = tmp_path / "worker"
    export_notebook(notebook, worker)
    with sdk_server(worker) as url:
        done = nbworker_test(str(notebook), "--url", url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 passed, 0 failed" in done.stdout
        handler = worker / "handler.py"
    handler.write_text(handler.read_text().replace('"alpha"', '"ALPHA"'))
    with sdk_server(worker) as url:
        done = nbworker_test(str(notebook), "--url", url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(server): stream[0]['word']: got 'ALPHA', recorded 'alpha'" in done.stdout


@pytest.mark.slow
def test_the_cli_against_rp_serve_in_a_shell(served, tmp_path: Path) -> None:
    _shell, url = served
    records = [
        record({"x": 21}, output={"y": 42}),
        record({"fail": "no"}, status="FAILED", error="no"),
    ]
    sources = [
        "%load_ext nbworker",
        HANDLER,
        '%rp_test {"input": {"x": 21}}',
        '%rp_test {"input": {"fail": "no"}}',
    ]
    notebook = write_notebook(
        tmp_path / "served.ipynb", sources, records={2: records[:1], 3: records[1:]}
    )
    done = nbworker_test(str(notebook), "--url", url, "--timeout", "30")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 0 failed, 0 notebook error(s)" in done.stdout


@pytest.mark.slow
def test_the_pytest_plugin_replays_against_a_server(
    doubling: Path, fake: Callable[..., Fake]
) -> None:
    server = fake(mode="changed")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--nbworker",
            "-rs",
            "-q",
            "--nbworker-url",
            server.url,
            "--nbworker-concurrency",
            "2",
            str(doubling),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=doubling.parent,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 failed, 1 passed, 2 skipped" in done.stdout, done.stdout
    assert "server: output['y']: got 3, recorded 2" in done.stdout
    assert "server: skipped (%rp_test --no-compare)" in done.stdout
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--nbworker",
            "--nbworker-url",
            server.url,
            "--nbworker-worker-only",
            str(doubling),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=doubling.parent,
    )
    assert done.returncode == 4 and "replays against the server only" in done.stderr
