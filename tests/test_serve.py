"""`%rp_serve`: RunPod's endpoint API served from a real InteractiveShell, called over HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest
import requests

from nbworker import serve
from nbworker.session import Session

ECHO = """
%%handler
def handler(job):
    return {"echo": job["input"]}
"""


@pytest.fixture
def served(shell):
    """The shell; the servers of its session are stopped after the test."""
    yield shell
    for server in serve.running(shell.session):
        server.stop(grace=0.2)


def start(shell, options: str = "") -> serve.Server:
    result = shell.ok(f"%rp_serve --port 0 {options}")
    (server,) = serve.running(shell.session)
    assert server.url in result.captured.stdout
    return server


def wait_for(check, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def finished(url: str, job_id: str) -> dict:
    def check():
        answer = requests.get(f"{url}/status/{job_id}", timeout=5).json()
        return answer if answer["status"] not in ("IN_QUEUE", "IN_PROGRESS") else None

    return wait_for(check)


# ------------------------------------------------------------------ jobs


def test_runsync_completed_and_failed_as_the_sdk(served) -> None:
    served.ok(
        """
        %%handler
        def handler(job):
            if job["input"].get("raise"):
                raise ValueError("bad input")
            if job["input"].get("fail"):
                return {"error": "no luck", "partial": 1}
            if job["input"].get("none"):
                return None
            return {"echo": job["input"], "id": job["id"]}
        """
    )
    url = start(served).url
    answer = requests.post(f"{url}/runsync", json={"input": {"a": 1}}, timeout=5).json()
    assert answer["status"] == "COMPLETED" and answer["id"].startswith("sync-")
    assert answer["output"] == {"echo": {"a": 1}, "id": answer["id"]}
    answer = requests.post(f"{url}/runsync", json={"input": {"none": 1}}, timeout=5).json()
    assert answer == {"id": answer["id"], "status": "COMPLETED"}  # None output: no key

    answer = requests.post(f"{url}/runsync", json={"input": {"fail": 1}}, timeout=5).json()
    assert answer == {"id": answer["id"], "status": "FAILED", "error": "no luck"}

    answer = requests.post(f"{url}/runsync", json={"input": {"raise": 1}}, timeout=5).json()
    assert answer["status"] == "FAILED" and "output" not in answer
    served_error = json.loads(answer["error"])
    recorded = json.loads(served.record('%rp_test {"input": {"raise": 1}}')["error"])
    assert set(served_error) == set(recorded)
    for key in ("error_type", "error_message", "hostname", "worker_id", "runpod_version"):
        assert served_error[key] == recorded[key]
    assert served_error["error_type"] == "<class 'ValueError'>"
    assert 'raise ValueError("bad input")' in served_error["error_traceback"]


def test_run_then_status_until_completed(served) -> None:
    served.ok(
        """
        %%handler
        import asyncio
        async def handler(job):
            await asyncio.sleep(0.05)
            return job["input"]["x"] * 2
        """
    )
    url = start(served).url
    answer = requests.post(f"{url}/run", json={"input": {"x": 21}}, timeout=5).json()
    assert answer == {"id": answer["id"], "status": "IN_QUEUE"}
    status = requests.post(f"{url}/status/{answer['id']}", timeout=5).json()  # POST works too
    assert status["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert finished(url, answer["id"]) == {"id": answer["id"], "status": "COMPLETED", "output": 42}


def test_stream_returns_the_chunks_since_the_last_call(served) -> None:
    gate = served.ipython.user_ns["gate"] = threading.Event()
    served.ok(
        """
        %%handler
        def handler(job):
            yield "first"
            gate.wait(5)
            yield "second"
            yield {"third": 3}
        """
    )
    url = start(served).url
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]
    polls = []

    def poll():
        answer = requests.get(f"{url}/stream/{job_id}", timeout=5).json()
        polls.append(answer)
        return answer["stream"]

    assert wait_for(poll) == [{"output": "first"}]
    assert polls[-1]["status"] == "IN_PROGRESS"
    gate.set()
    wait_for(lambda: poll() is not None and polls[-1]["status"] == "COMPLETED")
    chunks = [item["output"] for answer in polls for item in answer["stream"]]
    assert chunks == ["first", "second", {"third": 3}]
    assert requests.get(f"{url}/stream/{job_id}", timeout=5).json() == {
        "id": job_id,
        "status": "COMPLETED",
        "stream": [],
    }
    # The final output is a deployed worker's: [] without --aggregate, as %rp_test.
    assert finished(url, job_id)["output"] == []


def test_stream_of_a_plain_handler_answers_as_the_sdk(served) -> None:
    served.ok(ECHO)
    url = start(served).url
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]
    assert requests.get(f"{url}/stream/{job_id}", timeout=5).json() == {
        "id": job_id,
        "status": "FAILED",
        "error": "Stream not supported, handler must be a generator.",
    }


def test_rerunning_the_handler_cell_swaps_it_without_a_restart(served) -> None:
    served.ok(ECHO)
    server = start(served)
    url = server.url
    body = {"input": {"n": 1}}
    assert requests.post(f"{url}/runsync", json=body, timeout=5).json()["output"] == {
        "echo": {"n": 1}
    }
    served.ok(
        """
        %%handler
        def handler(job):
            return {"new": job["input"]["n"] + 1}
        """
    )
    assert requests.post(f"{url}/runsync", json=body, timeout=5).json()["output"] == {"new": 2}
    assert serve.running(served.session) == [server]


def test_cancel_a_queued_job_it_never_runs(served) -> None:
    gate = served.ipython.user_ns["gate"] = threading.Event()
    ran = served.ipython.user_ns["ran"] = []
    served.ok(
        """
        %%handler
        def handler(job):
            ran.append(job["input"]["n"])
            if job["input"]["n"] == 1:
                gate.wait(5)
            return job["input"]["n"]
        """
    )
    url = start(served).url
    first = requests.post(f"{url}/run", json={"input": {"n": 1}}, timeout=5).json()["id"]
    second = requests.post(f"{url}/run", json={"input": {"n": 2}}, timeout=5).json()["id"]
    wait_for(lambda: ran == [1])
    assert requests.get(f"{url}/status/{second}", timeout=5).json()["status"] == "IN_QUEUE"
    assert requests.post(f"{url}/cancel/{second}", timeout=5).json() == {
        "id": second,
        "status": "CANCELLED",
    }
    gate.set()
    assert finished(url, first)["output"] == 1
    assert requests.get(f"{url}/status/{second}", timeout=5).json() == {
        "id": second,
        "status": "CANCELLED",
    }
    # One worker takes jobs in order: once a job queued after it has run, the cancelled one
    # would have run too, had it been taken (/runsync waits on that job's end).
    third = requests.post(f"{url}/runsync", json={"input": {"n": 3}}, timeout=10).json()
    assert third["status"] == "COMPLETED" and third["output"] == 3
    assert ran == [1, 3]


def test_cancel_a_running_job_stops_it(served) -> None:
    served.ok(
        """
        %%handler
        def handler(job):
            while True:
                pass
        """
    )
    url = start(served).url
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]
    wait_for(
        lambda: requests.get(f"{url}/status/{job_id}", timeout=5).json()["status"] == "IN_PROGRESS"
    )
    assert requests.post(f"{url}/cancel/{job_id}", timeout=5).json()["status"] == "CANCELLED"
    # The worker is free again: the spinning handler was stopped.
    wait_for(lambda: requests.get(f"{url}/health", timeout=5).json()["workers"]["running"] == 0)


def test_concurrency_limit_of_the_handler(served) -> None:
    served.ok(
        """
        %%handler --concurrency 2
        import threading, time
        lock, now, most = threading.Lock(), [0], [0]
        def handler(job):
            with lock:
                now[0] += 1
                most[0] = max(most[0], now[0])
            time.sleep(0.05)
            with lock:
                now[0] -= 1
            return job["input"]["n"]
        """
    )
    url = start(served).url
    ids = [
        requests.post(f"{url}/run", json={"input": {"n": n}}, timeout=5).json()["id"]
        for n in range(8)
    ]
    assert [finished(url, job_id)["output"] for job_id in ids] == list(range(8))
    assert served.ipython.user_ns["most"] == [2]


def test_a_concurrency_modifier_sizes_the_workers(served, monkeypatch) -> None:
    """MAX_CONCURRENCY=3: three jobs wait for each other at a barrier, so they only end if
    three run at once."""
    monkeypatch.setenv("MAX_CONCURRENCY", "3")
    served.ipython.user_ns["together"] = threading.Barrier(3, timeout=20)
    served.ok(
        """
        %%handler
        import os
        def concurrency_modifier(current):
            return int(os.environ.get("MAX_CONCURRENCY", 1))
        def handler(job):
            together.wait()
            return job["input"]["n"]
        """
    )
    result = served.ok("%rp_serve --port 0")
    (server,) = serve.running(served.session)
    assert (
        f"serving handler handler (concurrency 3 from concurrency_modifier()) at {server.url}"
        in (result.captured.stdout)
    )
    ids = [
        requests.post(f"{server.url}/run", json={"input": {"n": n}}, timeout=5).json()["id"]
        for n in range(3)
    ]
    assert [finished(server.url, job_id).get("output") for job_id in ids] == [0, 1, 2]
    assert server.health()["workers"] == {"idle": 3, "running": 0}


def test_a_new_size_applies_once_the_running_jobs_end(served) -> None:
    """As the SDK's JobScaler: the modifier gets the current size, and its new answer waits
    for the jobs in flight before it applies."""
    answers = served.ipython.user_ns["answers"] = [1]
    calls = served.ipython.user_ns["calls"] = []
    gate = served.ipython.user_ns["gate"] = threading.Event()
    served.ipython.user_ns["pair"] = threading.Barrier(2, timeout=20)
    served.ok(
        """
        %%handler
        def concurrency_modifier(current):
            calls.append(current)
            return answers[0]
        def handler(job):
            if job["input"]["first"]:
                gate.wait(20)
            else:
                pair.wait()  # the two later jobs run at once, or fail
            return job["input"]["n"]
        """
    )
    server = start(served)
    assert server.concurrency == 1
    first = server.submit({"input": {"first": True, "n": 0}})
    wait_for(lambda: server.status(first.id)["status"] == "IN_PROGRESS")
    answers[0] = 2
    later = [server.submit({"input": {"first": False, "n": n}}) for n in (1, 2)]
    assert server.concurrency == 2 and server.health()["workers"]["idle"] == 0  # waiting
    gate.set()
    assert [finished(server.url, job.id).get("output") for job in [first, *later]] == [0, 1, 2]
    assert calls[:2] == [1, 1]  # registration's check, then the server's start: both with 1
    assert set(calls) == {1, 2} and calls.index(2) > calls.index(1)


def test_a_failing_concurrency_modifier_is_logged_once_and_the_size_kept(served, caplog) -> None:
    answers = served.ipython.user_ns["answers"] = [2]
    served.ok(
        """
        %%handler
        def concurrency_modifier(current):
            if isinstance(answers[0], Exception):
                raise answers[0]
            return answers[0]
        def handler(job):
            return job["input"]["n"]
        """
    )
    server = start(served)
    assert server.concurrency == 2

    def run(n: int) -> dict:
        return requests.post(f"{server.url}/runsync", json={"input": {"n": n}}, timeout=10).json()

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "nbworker.serve"]

    answers[0] = ValueError("no GPU count")
    assert [run(n)["output"] for n in range(3)] == [0, 1, 2]
    assert server.concurrency == 2
    assert logged() == [
        "%rp_serve: concurrency_modifier(2) raised ValueError: no GPU count: deployed, this "
        "stops the worker; keeping concurrency 2"
    ]
    answers[0] = "4"
    assert run(3)["output"] == 3
    assert logged()[1:] == [
        "%rp_serve: concurrency_modifier(2) returned '4', not a whole number: deployed, this "
        "stops the worker; keeping concurrency 2"
    ]
    answers[0] = 1
    assert run(4)["output"] == 4
    assert server.concurrency == 1 and len(logged()) == 2


def test_status_shows_the_latest_progress_while_the_job_runs(served) -> None:
    gate = served.ipython.user_ns["gate"] = threading.Event()
    served.ok(
        """
        %%handler
        import runpod
        def handler(job):
            runpod.serverless.progress_update(job, "1/2")
            runpod.serverless.progress_update(job, {"done": 2, "of": 2})
            gate.wait(20)
            return "finished"
        """
    )
    url = start(served).url
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]

    def progressed() -> dict | None:
        answer = requests.get(f"{url}/status/{job_id}", timeout=5).json()
        return answer if answer.get("output") == {"done": 2, "of": 2} else None

    assert wait_for(progressed, timeout=20) == {
        "id": job_id,
        "status": "IN_PROGRESS",
        "output": {"done": 2, "of": 2},
    }
    gate.set()
    assert finished(url, job_id) == {"id": job_id, "status": "COMPLETED", "output": "finished"}
    (run,) = [run for run in served.session.history if run.job["id"] == job_id]
    assert [update["value"] for update in run.progress] == ["1/2", {"done": 2, "of": 2}]


def test_status_progress_is_strict_json(served) -> None:
    gate = served.ipython.user_ns["gate"] = threading.Event()
    served.ok(
        """
        %%handler
        import runpod
        def handler(job):
            runpod.serverless.progress_update(job, {"loss": float("nan"), "step": 1})
            gate.wait(20)
            return 1
        """
    )
    url = start(served).url
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]

    def progressed() -> str | None:
        text = requests.get(f"{url}/status/{job_id}", timeout=5).text
        return text if "step" in text else None

    text = wait_for(progressed, timeout=20)
    gate.set()
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}")) == {
        "id": job_id,
        "status": "IN_PROGRESS",
        "output": {"loss": None, "step": 1},
    }
    assert finished(url, job_id)["status"] == "COMPLETED"


def test_a_huge_concurrency_is_capped_at_a_thread_count_a_kernel_can_hold(served) -> None:
    served.ok(
        """
        %%handler --concurrency-modifier wide
        def wide(current):
            return 10**6
        def handler(job):
            return 1
        """
    )
    server = start(served)
    answer = requests.post(f"{server.url}/runsync", json={"input": {}}, timeout=30).json()
    assert answer["status"] == "COMPLETED"
    assert len(server._queue._workers) <= serve.MAX_WORKERS


def test_a_handler_that_exits_fails_its_job_and_the_server_goes_on(served) -> None:
    served.ok(
        """
        %%handler
        import sys
        def handler(job):
            if job["input"].get("exit"):
                sys.exit(3)
            return "still here"
        """
    )
    url = start(served).url
    for _ in range(3):  # concurrency 1: a dead worker would leave the next job queued
        failed = requests.post(f"{url}/runsync", json={"input": {"exit": True}}, timeout=10)
        answer = failed.json()
        assert answer["status"] == "FAILED"
        assert "SystemExit" in json.loads(answer["error"])["error_type"]
        fine = requests.post(f"{url}/runsync", json={"input": {}}, timeout=10).json()
        assert fine["status"] == "COMPLETED" and fine["output"] == "still here"


# ------------------------------------------------------------------ HTTP


def test_token_is_required_on_every_request_and_never_printed(served) -> None:
    served.ok(ECHO)
    result = served.ok("%rp_serve --port 0 --token s3cret-value")
    assert "s3cret-value" not in result.captured.stdout + result.captured.stderr
    (server,) = serve.running(served.session)
    url, body = server.url, {"input": {"a": 1}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-value"}):
        answer = requests.post(f"{url}/runsync", json=body, headers=headers, timeout=5)
        assert answer.status_code == 401 and "Bearer" in answer.json()["error"]
        assert requests.get(f"{url}/health", headers=headers, timeout=5).status_code == 401
    good = {"Authorization": "Bearer s3cret-value"}
    answer = requests.post(f"{url}/runsync", json=body, headers=good, timeout=5)
    assert answer.status_code == 200 and answer.json()["output"] == {"echo": {"a": 1}}
    assert requests.get(f"{url}/health", headers=good, timeout=5).status_code == 200


def test_a_public_host_needs_a_token(served) -> None:
    message = served.usage_error("%rp_serve --host 0.0.0.0")
    assert "--token" in message and "\n" not in message
    assert serve.running(served.session) == []
    with pytest.raises(serve.ServeError, match="token"):
        serve.serve(served.session, host="0.0.0.0")


def test_bad_requests_get_a_400_with_a_message(served) -> None:
    served.ok(ECHO)
    url = start(served).url
    json_type = {"Content-Type": "application/json"}
    answer = requests.post(f"{url}/run", data='{"input": {"a": }}', headers=json_type, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("malformed JSON: Expecting value at line 1")
    assert "(char 16)" in answer.json()["error"]
    for body, words in [
        ({"input": [1, 2]}, '"input" must be a JSON object, not list'),
        ({"input": None}, '"input" must be a JSON object, not null'),
        ({"inputs": {}}, 'no "input"'),
        ([1], "must be a JSON object"),
    ]:
        for route in ("run", "runsync"):
            answer = requests.post(f"{url}/{route}", json=body, timeout=5)
            assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    assert requests.get(f"{url}/nowhere", timeout=5).status_code == 404


def test_a_body_over_the_limit_is_refused(served) -> None:
    served.ok(ECHO)
    server = serve.serve(served.session, max_body=1000)
    answer = requests.post(f"{server.url}/run", json={"input": {"x": "y" * 2000}}, timeout=5)
    assert answer.status_code == 413 and "at most 1000" in answer.json()["error"]
    answer = requests.post(f"{server.url}/runsync", json={"input": {"x": "y"}}, timeout=5)
    assert answer.json()["output"] == {"echo": {"x": "y"}}


def test_unknown_job_ids_get_the_sdk_answer(served) -> None:
    url = start(served).url
    for method, route in [("get", "status"), ("post", "status"), ("get", "stream")]:
        answer = requests.request(method, f"{url}/{route}/nope", timeout=5)
        assert answer.status_code == 200
        assert answer.json() == {"id": "nope", "status": "FAILED", "error": "Job ID not found"}
    assert requests.post(f"{url}/cancel/nope", timeout=5).json()["error"] == "Job ID not found"


def test_a_job_without_a_handler_fails_with_the_reason(served) -> None:
    url = start(served).url
    answer = requests.post(f"{url}/runsync", json={"input": {}}, timeout=5).json()
    assert answer["status"] == "FAILED" and "no handler is registered" in answer["error"]


def test_health_counts_jobs_and_workers(served) -> None:
    gate = served.ipython.user_ns["gate"] = threading.Event()
    served.ok(
        """
        %%handler
        def handler(job):
            if job["input"].get("wait"):
                gate.wait(5)
            if job["input"].get("fail"):
                raise RuntimeError("no")
            return 1
        """
    )
    url = start(served).url
    health = requests.get(f"{url}/health", timeout=5).json()
    assert health == {
        "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
        "workers": {"idle": 1, "running": 0},
    }
    requests.post(f"{url}/runsync", json={"input": {}}, timeout=5)
    requests.post(f"{url}/runsync", json={"input": {"fail": 1}}, timeout=5)
    blocked = requests.post(f"{url}/run", json={"input": {"wait": 1}}, timeout=5).json()["id"]
    requests.post(f"{url}/run", json={"input": {}}, timeout=5)
    wait_for(lambda: requests.get(f"{url}/health", timeout=5).json()["jobs"]["inProgress"] == 1)
    assert requests.get(f"{url}/health", timeout=5).json() == {
        "jobs": {"completed": 1, "failed": 1, "inProgress": 1, "inQueue": 1, "retried": 0},
        "workers": {"idle": 0, "running": 1},
    }
    gate.set()
    finished(url, blocked)
    wait_for(lambda: requests.get(f"{url}/health", timeout=5).json()["jobs"]["completed"] == 3)


# ------------------------------------------------------------------ the magic


def test_stop_frees_the_port_and_a_port_in_use_is_a_usage_error(served) -> None:
    server = start(served)
    port = server.port
    result = served.ok("%rp_serve --stop")
    assert f"stopped serving at {server.url}" in result.captured.stdout
    assert serve.running(served.session) == [] and not server.serving
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))
        sock.listen()
        message = served.usage_error(f"%rp_serve --port {port}")
        assert message == f"%rp_serve: port {port} on 127.0.0.1 is in use: pick another --port"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/health", timeout=5)
    assert "not serving" in served.ok("%rp_serve --stop").captured.stdout


def test_serving_again_restarts_on_the_new_port(served) -> None:
    served.ok(ECHO)
    first = start(served)
    second = start(served)  # start() checks that only one is serving
    assert not first.serving and second.serving
    body = {"input": {"k": 1}}
    assert requests.post(f"{second.url}/runsync", json=body, timeout=5).json()["status"] == (
        "COMPLETED"
    )


def test_a_cell_can_call_the_server_while_it_serves(served) -> None:
    served.ok(
        """
        %%handler
        import threading
        def handler(job):
            return {"thread": threading.current_thread().name, "main": threading.main_thread().name}
        """
    )
    url = start(served).url
    served.ok(
        f"""
        import requests
        answer = requests.post("{url}/runsync", json={{"input": {{}}}}, timeout=5).json()
        """
    )
    answer = served.ipython.user_ns["answer"]
    assert answer["status"] == "COMPLETED"
    assert answer["output"]["thread"] != answer["output"]["main"]
    # a worker thread, or with a slot free, the request's own thread: never the kernel's
    assert answer["output"]["thread"].startswith(("nbworker-job-", "nbworker-request-"))


def test_the_named_handler_is_served(served) -> None:
    served.ok(ECHO)
    served.ok(
        """
        %%handler
        def other(job):
            return "other"
        """
    )
    url = start(served, "other").url
    assert requests.post(f"{url}/runsync", json={"input": {}}, timeout=5).json()["output"] == (
        "other"
    )
    assert "not a Python name" in served.usage_error("%rp_serve not-a-name")


def test_a_large_body_over_the_limit_gets_its_answer(served) -> None:
    server = serve.serve(served.session, max_body=1024)
    answer = requests.post(f"{server.url}/run", data=b"x" * (4 << 20), timeout=10)
    assert answer.status_code == 413 and f"{4 << 20} bytes" in answer.json()["error"]


def test_cancels_racing_with_job_ends_lose_no_worker_slot() -> None:
    """Cancels land at every moment of a job's life (queued, running, settling, done): each
    job ends in one final state, and the workers' slots all come back."""
    import random

    from nbworker.session import Session

    def handler(job):
        end = time.perf_counter() + job["input"]["spin"]
        while time.perf_counter() < end:
            pass
        return job["input"]["n"]

    session = Session()
    session.register_handler(handler, name="handler", concurrency=3)
    server = serve.serve(session)
    try:
        rng = random.Random(7)
        jobs = [server.submit({"input": {"n": n, "spin": rng.random() / 500}}) for n in range(300)]
        for job in rng.sample(jobs, 150):
            time.sleep(rng.random() / 1000)
            server.cancel(job.id)
        assert all(job.done.wait(10) for job in jobs)
        states = [server.status(job.id)["status"] for job in jobs]
        assert set(states) <= {"COMPLETED", "CANCELLED"}
        health = server.health()
        assert health["jobs"]["completed"] == states.count("COMPLETED")
        assert (health["jobs"]["inProgress"], health["jobs"]["inQueue"]) == (0, 0)
        assert health["workers"] == {"idle": 3, "running": 0}
        answer = requests.post(
            f"{server.url}/runsync", json={"input": {"n": -1, "spin": 0}}, timeout=10
        )
        assert answer.json()["output"] == -1
    finally:
        server.stop(grace=0.5)
        session.close()


# ------------------------------------------------------------------ /runsync on the request thread


class Gated:
    """A plain session's server whose handler records each job it starts (its id and input)
    and, for {"wait": true}, spins in Python until released (where a cancel's or a
    timeout's interrupt lands at once)."""

    def __init__(self, concurrency: int = 1, **options: Any) -> None:
        from nbworker.session import Session

        self.started: list[tuple[str, Any]] = []
        self.release = threading.Event()
        self.session = Session()
        self.session.register_handler(self.handler, name="handler", concurrency=concurrency)
        self.server = serve.serve(self.session, **options)
        self.url = self.server.url

    def handler(self, job: dict[str, Any]) -> Any:
        self.started.append((job["id"], job["input"].get("n")))
        if job["input"].get("wait"):
            while not self.release.is_set():
                pass
        return {"n": job["input"].get("n"), "thread": threading.current_thread().name}

    def runsync(self, job_input: dict, **body: Any) -> dict:
        payload = {"input": job_input, **body}
        return requests.post(f"{self.url}/runsync", json=payload, timeout=10).json()

    def runsync_in_background(self, job_input: dict, **body: Any) -> tuple[threading.Thread, list]:
        answers: list[dict] = []
        thread = threading.Thread(target=lambda: answers.append(self.runsync(job_input, **body)))
        thread.start()
        return thread, answers

    def close(self) -> None:
        self.release.set()
        self.server.stop(grace=0.5)
        self.session.close()


@pytest.fixture
def gated():
    made = Gated()
    yield made
    made.close()


def test_a_runsync_job_with_a_free_slot_runs_on_its_request_thread(gated) -> None:
    answer = gated.runsync({"n": 1})
    assert answer["status"] == "COMPLETED" and answer["output"]["n"] == 1
    assert answer["output"]["thread"].startswith(f"nbworker-request-{gated.server.port}-")
    assert gated.server._queue._workers == []  # no worker thread was needed
    assert gated.server.health() == {
        "jobs": {"completed": 1, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
        "workers": {"idle": 1, "running": 0},
    }


def test_a_runsync_job_on_its_request_thread_holds_the_only_slot(gated) -> None:
    """Concurrency 1: while a /runsync job runs on its request thread, a /run job waits in
    the queue, and runs once the slot is free."""
    thread, answers = gated.runsync_in_background({"n": 1, "wait": True})
    wait_for(lambda: len(gated.started) == 1)
    queued = requests.post(f"{gated.url}/run", json={"input": {"n": 2}}, timeout=5).json()["id"]
    health = gated.server.health()
    assert (health["jobs"]["inProgress"], health["jobs"]["inQueue"]) == (1, 1)
    assert health["workers"] == {"idle": 0, "running": 1}
    assert gated.server.status(queued)["status"] == "IN_QUEUE"
    gated.release.set()
    thread.join(10)
    assert answers[0]["status"] == "COMPLETED"
    assert finished(gated.url, queued)["output"]["n"] == 2
    assert [n for _, n in gated.started] == [1, 2]


def test_a_runsync_job_waits_behind_queued_jobs_first_come_first_served(gated) -> None:
    """A /run job runs and another waits: a /runsync arriving then is queued behind it (not
    run on its thread when the slot frees), and the three start in the order they came."""
    running = requests.post(f"{gated.url}/run", json={"input": {"n": 1, "wait": True}}, timeout=5)
    wait_for(lambda: len(gated.started) == 1)
    queued = requests.post(f"{gated.url}/run", json={"input": {"n": 2}}, timeout=5).json()["id"]
    thread, answers = gated.runsync_in_background({"n": 3})
    wait_for(lambda: gated.server.health()["jobs"]["inQueue"] == 2)
    assert len(gated.started) == 1
    gated.release.set()
    thread.join(10)
    assert answers[0]["status"] == "COMPLETED" and answers[0]["output"]["n"] == 3
    assert answers[0]["output"]["thread"].startswith("nbworker-job-")
    assert finished(gated.url, running.json()["id"])["status"] == "COMPLETED"
    assert finished(gated.url, queued)["status"] == "COMPLETED"
    assert [n for _, n in gated.started] == [1, 2, 3]


def test_a_runsync_job_on_its_request_thread_can_be_cancelled(gated) -> None:
    """Held: /cancel stops the spinning handler on the request thread; the /runsync answer
    says CANCELLED, and the next job on the same connection completes (no interrupt left
    over for it)."""
    with requests.Session() as http:
        answers: list[dict] = []
        body = {"input": {"n": 1, "wait": True}}
        thread = threading.Thread(
            target=lambda: answers.append(
                http.post(f"{gated.url}/runsync", json=body, timeout=10).json()
            )
        )
        thread.start()
        wait_for(lambda: gated.started)
        job_id = gated.started[0][0]
        cancel = requests.post(f"{gated.url}/cancel/{job_id}", timeout=5).json()
        assert cancel == {"id": job_id, "status": "CANCELLED"}
        thread.join(10)
        assert answers == [{"id": job_id, "status": "CANCELLED"}]
        for n in range(2, 5):
            answer = http.post(f"{gated.url}/runsync", json={"input": {"n": n}}, timeout=10)
            assert answer.json()["status"] == "COMPLETED"
    assert gated.server.health()["workers"] == {"idle": 1, "running": 0}


def test_a_runsync_job_on_its_request_thread_times_out_by_its_policy(gated) -> None:
    answer = gated.runsync({"n": 1, "wait": True}, policy={"executionTimeout": 100})
    assert answer["status"] == "TIMED_OUT" and "timed out after 0.1 s" in answer["error"]
    assert gated.runsync({"n": 2})["status"] == "COMPLETED"
    assert gated.server.health()["jobs"]["failed"] == 1


def test_runsync_jobs_and_cancels_racing_lose_no_slot() -> None:
    """Eight clients' /runsync jobs (concurrency 3: some run on their request threads, some
    queue for workers) while a canceller cancels random ones at any moment of their lives:
    every answer is final, /health counts them, and all slots come back."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    made = Gated(concurrency=3)
    crashed: list[Any] = []
    hook, threading.excepthook = threading.excepthook, crashed.append
    try:
        rng = random.Random(11)

        def client(first: int) -> list[dict]:
            with requests.Session() as http:
                return [
                    http.post(f"{made.url}/runsync", json={"input": {"n": n}}, timeout=10).json()
                    for n in range(first, first + 40)
                ]

        with ThreadPoolExecutor(9) as pool:
            futures = [pool.submit(client, 100 * c) for c in range(8)]
            while not all(f.done() for f in futures):
                if made.started:
                    made.server.cancel(rng.choice(made.started)[0])
                time.sleep(rng.random() / 2000)  # a canceller's pace, not a synchronisation
            answers = [answer for f in futures for answer in f.result()]
        states = [answer["status"] for answer in answers]
        assert len(answers) == 320 and set(states) <= {"COMPLETED", "CANCELLED"}
        health = made.server.health()
        assert health["jobs"]["completed"] == states.count("COMPLETED")
        assert (health["jobs"]["inProgress"], health["jobs"]["inQueue"]) == (0, 0)
        assert health["workers"] == {"idle": 3, "running": 0}
        assert made.runsync({"n": -1})["status"] == "COMPLETED"
        assert crashed == []
    finally:
        threading.excepthook = hook
        made.close()


# ------------------------------------------------------------------ forgetting old jobs


def test_the_newest_finished_jobs_are_kept_and_never_a_running_or_queued_one() -> None:
    """keep_finished=100 (KEEP_FINISHED is 10,000): a running job and a queued one, then
    1,000 jobs that end (cancelled while queued, in order); the newest 100 finished answer
    /status, the older ones are forgotten, the running and the queued one never; what is
    kept stays bounded. Jobs are forgotten as new ones come, so those that ended since the
    last one came are kept too."""
    made = Gated(keep_finished=100)
    try:
        server = made.server
        running = server.submit({"input": {"n": 0, "wait": True}})
        wait_for(lambda: made.started)
        waiting = server.submit({"input": {"n": 1}})
        ended = []
        for n in range(2, 1002):
            job = server.submit({"input": {"n": n}})
            server.cancel(job.id)
            ended.append(job.id)
            assert len(server._queue._jobs) <= 100 + 3
        assert server.status(running.id)["status"] == "IN_PROGRESS"
        assert server.status(waiting.id)["status"] == "IN_QUEUE"
        statuses = [server.status(job_id)["status"] for job_id in ended]
        assert statuses[-101:] == ["CANCELLED"] * 101  # the last ended after the last came
        assert server.status(ended[-102]) == {
            "id": ended[-102],
            "status": "FAILED",
            "error": serve.NOT_FOUND,
        }
        assert statuses[:-101] == ["FAILED"] * 899  # not found
        made.release.set()
        assert finished(made.url, running.id)["status"] == "COMPLETED"
        assert finished(made.url, waiting.id)["status"] == "COMPLETED"
        # They finished last: they are the newest kept, once one more job comes.
        assert made.runsync({"n": 2000})["status"] == "COMPLETED"
        assert server.status(ended[-98])["status"] == "CANCELLED"
        assert server.status(ended[-99])["status"] == "FAILED"  # pushed out by the two
        assert len(server._queue._jobs) == 101  # and the /runsync job, ended since
    finally:
        made.close()


def test_forgetting_scales_with_the_jobs_kept_not_the_jobs_seen() -> None:
    """20,000 jobs through a server keeping 1,000: the store never holds more than that
    (plus the job that ended since the last came), whatever has gone through."""
    made = Gated(keep_finished=1000)
    try:
        queue = made.server._queue
        for n in range(20_000):
            job = made.server.submit({"input": {"n": n}})
            made.server.cancel(job.id)
            assert len(queue._finished) <= 1001 and len(queue._jobs) <= 1001
        assert len(queue._jobs) == 1001
    finally:
        made.close()


def test_a_runsync_job_past_the_wait_is_answered_with_its_status_as_runpod_does() -> None:
    """runsync_wait=0.3 s: a job still running then is answered IN_PROGRESS with its id
    (as RunPod answers after 90 s), on its request's thread or queued for a worker; the
    client polls /status until it ends; the connection of the one on its request's thread
    closes (that thread is still in the job)."""
    made = Gated(runsync_wait=0.3)
    try:
        with requests.Session() as http:
            started = time.monotonic()
            answer = http.post(
                f"{made.url}/runsync", json={"input": {"n": 1, "wait": True}}, timeout=10
            )
            assert time.monotonic() - started < 5
            assert answer.headers["Connection"] == "close"
            inline = answer.json()
            assert inline["status"] == "IN_PROGRESS" and inline["id"].startswith("sync-")
            # The slot is taken: this one is queued, and its wait ends the same way.
            queued = http.post(f"{made.url}/runsync", json={"input": {"n": 2}}, timeout=10)
            assert queued.json()["status"] == "IN_QUEUE"
            made.release.set()
            assert finished(made.url, inline["id"])["output"]["n"] == 1
            assert finished(made.url, queued.json()["id"])["output"]["n"] == 2
            assert made.runsync({"n": 3})["status"] == "COMPLETED"  # answered when it ends
    finally:
        made.close()


def test_a_result_that_cannot_be_sent_fails_the_job_with_why() -> None:
    """A deployed worker could not post a result holding a set: the job would hang there.
    The server fails it, saying why, and serves on."""
    session = Session()
    session.register_handler(
        lambda job: {"tags": {1, 2}} if job["input"].get("bad") else job["input"], name="handler"
    )
    server = serve.serve(session)
    try:
        for route in ("/runsync", "/run"):
            answer = requests.post(
                f"{server.url}{route}", json={"input": {"bad": True}}, timeout=10
            ).json()
            if route == "/run":
                answer = _wait_final(server, answer["id"])
            assert answer["status"] == "FAILED", answer
            assert answer["error"].startswith("the handler's result is "), answer
            assert "set" in answer["error"], answer
        good = requests.post(f"{server.url}/runsync", json={"input": {"n": 1}}, timeout=10)
        assert good.json()["output"] == {"n": 1}
    finally:
        server.stop(grace=0.2)
        session.close()


def _wait_final(server: Any, job_id: str) -> dict:
    with requests.Session() as http:
        while True:
            answer = http.get(f"{server.url}/status/{job_id}", timeout=10).json()
            if answer["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                return answer
