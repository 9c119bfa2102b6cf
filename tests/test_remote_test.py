"""`%rp_test --url` / `--endpoint`: the job goes to a server; the answer is recorded like a
run in the kernel. Against `%rp_serve` over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest

from nbworker import serve

HANDLER = """
%%handler
def handler(job):
    if job["input"].get("fail"):
        return {"error": "asked to fail"}
    return {"twice": job["input"]["n"] * 2}
"""


@pytest.fixture
def served(shell):
    shell.ok(HANDLER)
    shell.ok("%rp_serve --port 0")
    (server,) = serve.running(shell.session)
    yield shell, server.url
    server.stop()


def test_a_job_sent_to_a_server_is_recorded_like_a_local_run(served) -> None:
    shell, url = served
    record = shell.record(f'%rp_test --url {url} {{"input": {{"n": 21}}}}')
    assert record["handler"] == f"url:{url}"
    assert (record["status"], record["output"], record["error"]) == (
        "COMPLETED",
        {"twice": 42},
        None,
    )
    assert record["job"]["input"] == {"n": 21} and record["job"]["id"].startswith("sync-")
    failed = shell.record(f'%rp_test --url {url} {{"input": {{"fail": true}}}}')
    assert (failed["status"], failed["error"]) == ("FAILED", "asked to fail")
    # and the same job in the kernel gives the same
    local = shell.record('%rp_test {"input": {"n": 21}}')
    assert local["output"] == record["output"]


def test_server_and_endpoint_errors_are_one_line_and_never_show_the_key(
    shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shell.usage_error('%rp_test --url http://127.0.0.1:1 {"input": {}}') == (
        "%rp_test: POST /runsync: cannot connect to http://127.0.0.1:1 (ConnectionError)"
    )
    assert (
        shell.usage_error('%rp_test --url ftp://x {"input": {}}')
        == "%rp_test: not an http(s) URL: 'ftp://x'"
    )
    assert (
        shell.usage_error('%rp_test --url http://127.0.0.1:1 --endpoint abc {"input": {}}')
        == "%rp_test: give --url or --endpoint, not both"
    )
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_SECRETKEY123")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:1/v2")
    result = shell.run('%rp_test --endpoint abc123 {"input": {}}')
    message = str(result.error_in_exec)
    assert message.startswith("%rp_test: POST /runsync: ") and "SECRETKEY" not in message
    assert "SECRETKEY" not in result.captured.stdout + result.captured.stderr
    assert "SECRETKEY" not in json.dumps([o.data for o in result.captured.outputs], default=str)


def test_timeout_is_a_deadline_for_a_server_that_never_answers(shell) -> None:
    """A listening socket that never accepts: the request is sent and no answer comes. The
    run ends by --timeout, not by the client's own 30 s per request."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        record = shell.record(f'%rp_test --url {url} --timeout 1 {{"input": {{}}}}')
        assert time.monotonic() - start < 2
    assert record["status"] == "TIMED_OUT"
    assert record["error"] == "POST /runsync: no answer within 1s"
