"""nbworker's in-kernel runs give what the real runpod SDK's deployed job loop gives.

Every case in conformance_cases.py runs once through the SDK (`rp_job.run_job`,
`run_job_generator` and `handle_job`, in a subprocess, posting to a stand-in platform on
127.0.0.1) and once through nbworker's JobRunner; the results must be the same, file
paths of the two libraries' own frames in tracebacks aside.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conformance_cases import CASES, comparable, normalise
from helpers import package_frames

from nbworker.jobs import JobRunner, build_job
from nbworker.registry import Registry

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def sdk_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("sdk") / "results.json"
    done = subprocess.run(
        [sys.executable, str(HERE / "sdk_job_loop.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def run_case(name: str, handler: object, job_input: object, aggregate: bool):
    spec = Registry().register(handler, name=name, aggregate=aggregate)
    runner = JobRunner()
    try:
        return spec, runner.run(spec, build_job({"id": f"job-{name}", "input": job_input}))
    finally:
        runner.close()


def test_every_case_ran_under_the_sdk(sdk_results: dict) -> None:
    assert sorted(sdk_results) == sorted(name for name, *_ in CASES)


@pytest.mark.parametrize(
    ("name", "handler", "job_input", "aggregate"), CASES, ids=[c[0] for c in CASES]
)
def test_same_result_as_the_sdk_job_loop(
    sdk_results: dict, name: str, handler: object, job_input: object, aggregate: bool
) -> None:
    sdk = sdk_results[name]
    spec, run = run_case(name, handler, job_input, aggregate)

    # What the job loop asks to send, and what reaches the platform.
    assert normalise(run.result) == normalise(sdk["sent_result"])
    chunks = [] if run.stream is None else [{"output": chunk} for chunk in run.stream]
    assert comparable(chunks) == sdk["sent_stream"]
    sendable = [chunk for chunk in chunks if _sendable(chunk)]
    assert comparable(sendable) == sdk["posted_stream"]
    assert ([normalise(run.result)] if run.delivered else []) == [
        normalise(posted) for posted in sdk["posted_result"]
    ]
    if not spec.streams:  # and what the SDK's run_job itself returned
        assert normalise(run.result) == normalise(sdk["job_function"])

    # The run's own fields agree with the result.
    assert run.status == ("FAILED" if run.result.get("error") else "COMPLETED")
    assert run.refresh_worker == bool(run.result.get("stopPod"))


def _sendable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# The SDK is the judge above; these pin down what that judgement is, so a change in a
# future SDK shows up as a readable failure rather than a silent change of behaviour.
@pytest.mark.parametrize(
    ("name", "status", "output", "error"),
    [
        ("plain_string", "COMPLETED", "HELLO", None),
        ("returns_none", "COMPLETED", None, None),
        ("returns_empty_dict", "COMPLETED", None, None),
        ("error_with_partial_output", "FAILED", {"partial": 42}, "e"),
        ("falsy_error", "COMPLETED", {"value": 1}, None),
        ("refresh_worker", "COMPLETED", {"result": 1}, None),
        ("generator", "COMPLETED", [], None),
        ("generator_aggregated", "COMPLETED", ["chunk-0", "chunk-1", "chunk-2"], None),
        ("generator_error_chunk", "FAILED", None, "went wrong"),
        ("async_generator_aggregated", "COMPLETED", [{"i": 0}, {"i": 1}], None),
    ],
)
def test_outcomes(name: str, status: str, output: object, error: object) -> None:
    _, handler, job_input, aggregate = next(c for c in CASES if c[0] == name)
    _, run = run_case(name, handler, job_input, aggregate)
    assert (run.status, run.output, run.error) == (status, output, error)


def test_exception_error_json_has_runpod_fields() -> None:
    _, handler, job_input, aggregate = next(c for c in CASES if c[0] == "raises")
    _, run = run_case("raises", handler, job_input, aggregate)
    info = json.loads(run.error)
    assert sorted(info) == [
        "error_message",
        "error_traceback",
        "error_type",
        "hostname",
        "runpod_version",
        "worker_id",
    ]
    assert info["error_type"] == "<class 'ValueError'>"
    assert info["error_message"] == "cannot handle 1"
    assert info["runpod_version"] == metadata.version("runpod")  # the SDK line installed
    assert info["hostname"] == info["worker_id"] == "unknown"
    # The notebook's traceback shows the user's frames, innermost last, and none of ours.
    assert package_frames(run.traceback) == []
    assert run.traceback.splitlines()[-1] == "ValueError: cannot handle 1"
    assert "in raises" in run.traceback and "in _inner" in run.traceback


def test_deploy_only_failures_are_warned() -> None:
    expectations = {
        "not_serialisable": "sends nothing",
        "error_not_a_string": "not a string",
        "returns_empty_dict": "returned {}",
        "generator_behind_decorator": "hidden behind a decorator",
        "generator_not_serialisable_chunk": "dropped from the stream",
    }
    for name, phrase in expectations.items():
        _, handler, job_input, aggregate = next(c for c in CASES if c[0] == name)
        _, run = run_case(name, handler, job_input, aggregate)
        assert any(phrase in warning for warning in run.warnings), (name, run.warnings)
    _, handler, job_input, aggregate = next(c for c in CASES if c[0] == "plain_string")
    assert run_case("plain_string", handler, job_input, aggregate)[1].warnings == []
