"""One job of `%rp_serve`: what the server holds of it (`Job`) and how the API words it (the
/status view, RunPod's error texts, JSON copies of what a handler streams or reports).

Apart from the queue so that `queue.py` is the scheduling alone (which job runs where,
when, and how it ends) and what a client reads of a job is in one place, checkable
against the SDK's answers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from nbworker.jobs import error_info, user_traceback
from nbworker.record import jsonable
from nbworker.registry import HandlerSpec

__all__ = [
    "IN_PROGRESS",
    "IN_QUEUE",
    "Job",
    "execution_timeout",
    "handler_failure",
    "json_copy",
    "not_found",
    "stray_error",
    "view",
]

# The statuses of a job before it ends (those it ends in are the record's FINAL_STATUSES)
IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
# A policy.executionTimeout (ms) over 30 days is taken as none (1e308 overflowed the timer)
MAX_EXECUTION_TIMEOUT_MS = 30 * 24 * 3600 * 1000
NOT_FOUND = "Job ID not found"
NOT_STREAMING = "Stream not supported, handler must be a generator."


@dataclass(eq=False)
class Job:
    id: str
    payload: dict[str, Any]  # what the handler receives: {"id", "input", "webhook"?}
    timeout: float | None = None
    size: int = 0  # bytes of the request body, counted while the job is queued
    status: str = IN_QUEUE
    result: dict[str, Any] | None = None  # RunPod's envelope once finished
    spec: HandlerSpec | None = None
    pending: list[Any] = field(default_factory=list)  # chunks not yet sent by /stream
    progressed: bool = False  # whether the handler called progress_update
    progress: Any = None  # the latest progress_update value (a JSON copy), for /status
    thread_id: int | None = None  # the worker running it, while it runs
    done: threading.Event = field(default_factory=threading.Event)
    # Guards the job's end (a cancel against the worker settling it) and `pending`; jobs
    # never share it, so it is not contended.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def execution_timeout(policy: Any) -> float | None:
    """Seconds of RunPod's `policy.executionTimeout` (ms); None for none, for what is no
    positive number (a bool, NaN, a string) and for a limit too long to mean one."""
    value = policy.get("executionTimeout") if isinstance(policy, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value / 1000 if 0 < value <= MAX_EXECUTION_TIMEOUT_MS else None


def handler_failure(err: BaseException, streams: bool) -> str:
    """The error of a job whose handler raised `err`, as the SDK words it (error JSON; the
    text of `run_job_generator` for a generator)."""
    if streams:
        return f"handler: {err} \ntraceback: {user_traceback(err)}"
    return json.dumps(error_info(err))


def stray_error(err: BaseException) -> str:
    """The error of a job failed by `err` outside its handler."""
    if isinstance(err, Exception):  # nbworker's own fault
        return f"nbworker: {type(err).__name__}: {err}"
    return (
        f"{type(err).__name__}{f' ({err})' if str(err) else ''} reached the job's worker thread "
        "outside the handler: the job failed, the server serves on"
    )


def json_copy(value: Any) -> Any:
    """A progress value or stream chunk as /status and /stream send it: a copy (the handler
    may change the object later) that strict JSON clients read (NaN -> null, other objects
    -> their repr)."""
    return jsonable(value)


def not_found(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "status": "FAILED", "error": NOT_FOUND}


def view(job: Job) -> dict[str, Any]:
    """A job as /status and /runsync answer; FAILED carries the error only, as the SDK; a
    running job that reported progress has it as `output`, as a deployed endpoint."""
    status = job.status  # before the result, which is always set first
    answer: dict[str, Any] = {"id": job.id, "status": status}
    result = job.result or {}
    if status == IN_PROGRESS and job.progressed:
        answer["output"] = job.progress
    if status == "COMPLETED" and result.get("output") is not None:
        answer["output"] = result["output"]
    if status in ("FAILED", "TIMED_OUT") and result.get("error") is not None:
        answer["error"] = result["error"]
    return answer
