"""A conformance suite for RunPod-style servers, driven through `nbworker.client.Endpoint`.

The same checks run against the SDK's `python handler.py --rp_serve_api` server
(tests/test_client.py) and against `%rp_serve`. A server serves one handler and the SDK
decides "generator or not" from the function itself, so there are two handlers:

- `SUITE_HANDLER_BODY` (`handler`, plain): dispatches on `job["input"]["mode"]`:
  "echo" returns the input, "fail" returns `{"error": "asked to fail"}`, "raise" raises
  `ValueError("boom")`, "sleep" sleeps `input["seconds"]` then echoes.
- `SUITE_STREAM_HANDLER_BODY` (`handler`, a generator): yields each of `input["chunks"]`.

`*_SOURCE` adds the `runpod.serverless.start` main block that makes each a worker script.
`HANDLER_CHECKS` run against a server of the plain handler, `STREAM_CHECKS` against one of
the generator handler. Each check is `check(endpoint, capabilities)`; `capabilities` holds
the optional routes a server has ("health", "cancel"): without one, the route must answer
404 (the SDK's server has neither).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from nbworker.client import FINAL_STATUSES, Endpoint, EndpointError, JobFailed

SUITE_HANDLER_BODY = """\
import time


def handler(job):
    data = job["input"]
    mode = data.get("mode", "echo")
    if mode == "echo":
        return data
    if mode == "fail":
        return {"error": "asked to fail"}
    if mode == "raise":
        raise ValueError("boom")
    if mode == "sleep":
        time.sleep(float(data.get("seconds", 1)))
        return data
    return {"error": f"unknown mode {mode!r}"}
"""

SUITE_STREAM_HANDLER_BODY = """\
def handler(job):
    for chunk in job["input"].get("chunks", []):
        yield chunk
"""

_MAIN = """

if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler})
"""

SUITE_HANDLER_SOURCE = SUITE_HANDLER_BODY + _MAIN
SUITE_STREAM_HANDLER_SOURCE = SUITE_STREAM_HANDLER_BODY + _MAIN

SDK_CAPABILITIES: frozenset[str] = frozenset()
FULL_CAPABILITIES: frozenset[str] = frozenset({"health", "cancel"})

ECHO_INPUT = {"mode": "echo", "value": [1, "two", {"three": 3.5}, None, True]}
CHUNKS = ["a", {"b": 2}, [3], 4, None]

Check = Callable[[Endpoint, frozenset[str]], None]


def wait_for(endpoint: Endpoint, job_id: str, timeout: float = 10.0) -> dict:
    """Poll /status until the job is in a final status; return that answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = endpoint.status(job_id)
        assert answer.get("status") in FINAL_STATUSES | {"IN_QUEUE", "IN_PROGRESS"}, answer
        if answer["status"] in FINAL_STATUSES:
            return answer
        assert time.monotonic() < deadline, f"job {job_id} not done after {timeout}s: {answer}"
        time.sleep(0.05)


def _queued(answer: dict) -> str:
    assert isinstance(answer.get("id"), str) and answer["id"], answer
    assert answer.get("status") in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}, answer
    return answer["id"]


# ---------------------------------------------------------------- plain handler checks
def check_runsync_completed(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    answer = endpoint.run_sync({"input": ECHO_INPUT}, timeout=10)
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"] == ECHO_INPUT
    assert isinstance(answer["id"], str) and answer["id"]
    assert "error" not in answer


def check_runsync_bare_input(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    """A bare input dict is wrapped as the job's input by the client."""
    answer = endpoint.run_sync(ECHO_INPUT, timeout=10)
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"] == ECHO_INPUT


def check_runsync_failed(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    answer = endpoint.run_sync({"input": {"mode": "fail"}}, timeout=10)
    assert answer["status"] == "FAILED", answer
    assert answer["error"] == "asked to fail"
    assert answer.get("output") is None


def check_runsync_raises(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    """An exception fails the job with the SDK's error JSON (a string)."""
    answer = endpoint.run_sync({"input": {"mode": "raise"}}, timeout=10)
    assert answer["status"] == "FAILED", answer
    error = json.loads(answer["error"])
    assert error["error_type"] == "<class 'ValueError'>"
    assert error["error_message"] == "boom"
    assert "Traceback" in error["error_traceback"]


def check_run_then_status(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    job_id = _queued(endpoint.run({"input": ECHO_INPUT}))
    answer = wait_for(endpoint, job_id)
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"] == ECHO_INPUT
    assert answer.get("id", job_id) == job_id


def check_run_failed_status(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    job_id = _queued(endpoint.run({"mode": "fail"}))
    answer = wait_for(endpoint, job_id)
    assert answer["status"] == "FAILED", answer
    assert answer["error"] == "asked to fail"


def check_unknown_job(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    """The SDK answers HTTP 200 with a FAILED status for a job id it does not know."""
    answer = endpoint.status("no-such-job")
    assert answer == {"id": "no-such-job", "status": "FAILED", "error": "Job ID not found"}


def check_input_not_an_object(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    for job in ({"input": "text"}, {"input": [1, 2]}, {"input": 5}):
        for call in (endpoint.run_sync, endpoint.run):
            try:
                answer = call(job)
            except EndpointError as exc:
                assert exc.status_code in (400, 422), exc
                assert "input" in str(exc).lower(), exc
                assert "\n" not in str(exc)
            else:
                raise AssertionError(f"{job} accepted: {answer}")


def check_input_missing(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    for body in ({}, {"webhook": None}, {"inputs": {}}):
        try:
            answer = endpoint.request("POST", "/runsync", json=body)
        except EndpointError as exc:
            assert exc.status_code in (400, 422), exc
            assert "input" in str(exc).lower(), exc
        else:
            raise AssertionError(f"{body} accepted: {answer}")


def check_health(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    if "health" in capabilities:
        answer = endpoint.health()
        assert isinstance(answer.get("workers"), dict), answer
        assert isinstance(answer.get("jobs"), dict), answer
        return
    try:
        answer = endpoint.health()
    except EndpointError as exc:
        assert exc.status_code == 404, exc
    else:
        raise AssertionError(f"no health route expected, got {answer}")


def check_cancel(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    if "cancel" not in capabilities:
        try:
            answer = endpoint.cancel("no-such-job")
        except EndpointError as exc:
            assert exc.status_code == 404, exc
        else:
            raise AssertionError(f"no cancel route expected, got {answer}")
        return
    job_id = _queued(endpoint.run({"mode": "sleep", "seconds": 5}))
    endpoint.cancel(job_id)
    answer = wait_for(endpoint, job_id, timeout=3)
    assert answer["status"] == "CANCELLED", answer


# ---------------------------------------------------------- generator handler checks
def check_stream_chunks_in_order(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    job_id = _queued(endpoint.run({"chunks": CHUNKS}))
    assert list(endpoint.stream(job_id, poll_interval=0.05)) == CHUNKS


def check_stream_empty(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    job_id = _queued(endpoint.run({"chunks": []}))
    assert list(endpoint.stream(job_id, poll_interval=0.05)) == []


def check_stream_unknown_job(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    try:
        chunks = list(endpoint.stream("no-such-job"))
    except JobFailed as exc:
        assert exc.status == "FAILED"
        assert exc.error == "Job ID not found"
    else:
        raise AssertionError(f"unknown job streamed {chunks}")


def check_runsync_generator_aggregates(endpoint: Endpoint, capabilities: frozenset[str]) -> None:
    """The local server's /runsync of a generator handler answers the list of its chunks."""
    answer = endpoint.run_sync({"input": {"chunks": CHUNKS}}, timeout=10)
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"] == CHUNKS


HANDLER_CHECKS: tuple[Check, ...] = (
    check_runsync_completed,
    check_runsync_bare_input,
    check_runsync_failed,
    check_runsync_raises,
    check_run_then_status,
    check_run_failed_status,
    check_unknown_job,
    check_input_not_an_object,
    check_input_missing,
    check_health,
    check_cancel,
)

STREAM_CHECKS: tuple[Check, ...] = (
    check_stream_chunks_in_order,
    check_stream_empty,
    check_stream_unknown_job,
    check_runsync_generator_aggregates,
)
