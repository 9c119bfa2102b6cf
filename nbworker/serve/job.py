"""One job of `%rp_serve`: what the server holds of it (`Job`), the slot that runs it
(`Worker`), how a run of the handler ends it (`run_job`, `settle`) and how the API words it
(the /status view, RunPod's error texts, JSON copies of what a handler streams or reports).

Apart from the queue so that `queue.py` is the scheduling alone (which job runs where and
when) and what a job's end and a client's view of it are is in one place, checkable
against the SDK's answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nbworker import checks
from nbworker.jobs import JobRunner, error_info, user_traceback
from nbworker.record import FINAL_STATUSES, Run, jsonable
from nbworker.registry import HandlerSpec

__all__ = [
    "IN_PROGRESS",
    "IN_QUEUE",
    "Job",
    "JobIds",
    "Worker",
    "absorb_interrupt",
    "execution_timeout",
    "handler_failure",
    "json_copy",
    "not_found",
    "run_job",
    "settle",
    "stray_error",
    "stream_view",
    "view",
]

# The statuses of a job before it ends (those it ends in are the record's FINAL_STATUSES)
IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
# A policy.executionTimeout (ms) over 30 days is taken as none (1e308 overflowed the timer)
MAX_EXECUTION_TIMEOUT_MS = 30 * 24 * 3600 * 1000
NOT_FOUND = "Job ID not found"
NOT_STREAMING = "Stream not supported, handler must be a generator."


class Latch:
    """A job's end, for threads to wait on: `set` once, `wait(timeout)`, `is_set` (an
    Event's API). A bare C lock held until set: a threading.Event is a Condition and two
    locks made in Python, several µs for each job, most of which nobody waits for."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # set already
            self._lock.release()

    def is_set(self) -> bool:
        return not self._lock.locked()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        with contextlib.suppress(RuntimeError):  # handed on to the next waiter
            self._lock.release()
        return True


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
    thread_id: int | None = None  # the thread running it, while it runs
    interrupted: bool = False  # a cancel sent that thread an interrupt
    done: Latch = field(default_factory=lambda: Latch())
    # Guards the job's end (a cancel against the worker settling it) and `pending`; jobs
    # never share it, so it is not contended.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class JobIds:
    """Job ids as the SDK's (random version-4 UUIDs), from random bytes read 64 ids at a
    time: each read of os.urandom lets go of the GIL, and in a busy kernel getting it back
    costs a wait. Shared by the request threads without a lock (deque operations are
    atomic)."""

    BATCH = 64

    def __init__(self) -> None:
        self._ready: deque[str] = deque()

    def next(self) -> str:
        ready = self._ready
        while True:
            try:
                return ready.popleft()
            except IndexError:
                ready.extend(self._batch())

    def _batch(self) -> list[str]:
        raw = bytearray(os.urandom(16 * self.BATCH))
        for start in range(0, len(raw), 16):  # the version and variant bits of RFC 9562
            raw[start + 6] = raw[start + 6] & 0x0F | 0x40
            raw[start + 8] = raw[start + 8] & 0x3F | 0x80
        text = raw.hex()
        return [
            f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            for h in (text[i : i + 32] for i in range(0, len(text), 32))
        ]


@dataclass(eq=False)
class Worker:
    """A slot that runs jobs, and its figures, which only the thread holding it writes (read
    without locks): a worker thread's, or a /runsync job's on its request thread."""

    thread: threading.Thread | None = None
    busy: bool = False
    completed: int = 0
    failed: int = 0
    job: Job | None = None  # the job it holds, from its take until it is settled
    # Held while the worker may sleep; released to wake it. A bare C lock, not a Condition:
    # an exception delivered to the thread (PyThreadState_SetAsyncExc) while it waits cannot
    # leave the server's lock released or half-taken, as it can in Condition.wait.
    wake: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # A slot on request threads (no thread of its own) has a runner of its own
    runner: JobRunner | None = field(default=None, repr=False)


def run_job(job: Job, spec: HandlerSpec, runner: JobRunner) -> tuple[str, dict[str, Any], Run]:
    """Run `job` with `spec` on this thread: the status and result it ends with, and the
    run. Chunks and progress are copied into the job for /stream and /status."""

    def on_chunk(chunk: Any, index: int) -> None:
        copy = json_copy(chunk)  # strict JSON for /stream, and the handler's own
        with job.lock:  # object may change after it is yielded
            job.pending.append(copy)

    def on_progress(value: Any, seconds: float) -> None:
        job.progress, job.progressed = json_copy(value), True

    run = runner.run(
        spec,
        job.payload,
        timeout=job.timeout,
        on_chunk=on_chunk if spec.streams else None,
        on_progress=on_progress,
    )
    if run.status == "CANCELLED" and job.status != "CANCELLED" and run.interrupt:
        # An interrupt no /cancel sent: the handler raised KeyboardInterrupt, or one was
        # delivered to this thread. Deployed, it would end the worker: a failure.
        return "FAILED", {"error": handler_failure(run.interrupt, spec.streams)}, run
    if run.status in ("CANCELLED", "TIMED_OUT"):
        return run.status, {"error": run.error}, run
    result = run.result or {}
    if not run.delivered:  # a deployed worker would post nothing: the job hangs
        # The runner found it unsendable as it encoded the result; only the words are
        # asked for again.
        problem = checks.serialization_problem(result)
        return "FAILED", {"error": f"the handler's result is {problem}"}, run
    return run.status, result, run


def absorb_interrupt() -> None:
    """Let a cancel's interrupt still pending for this thread land here, and drop it.

    A GIL hand-over re-signals a pending asynchronous exception, and each call and backward
    jump checks for one, so it lands in this block if it has not landed before. (Clearing
    it with `PyThreadState_SetAsyncExc(id, NULL)` leaves CPython 3.11's eval breaker armed
    for good: the next call under a profiler or tracer, on any thread, spins forever.)"""
    try:
        time.sleep(0)
        for _ in range(3):
            pass
    except KeyboardInterrupt:
        pass


def settle(
    job: Job,
    status: str,
    result: dict[str, Any] | None,
    worker: Worker,
    finished: deque[str],
    *,
    here: bool = True,
) -> None:
    """Record how `job` ended, free its worker and add its id to `finished` (the order
    jobs are forgotten in); a second call does nothing.

    A cancel marks the job CANCELLED (under the job's lock) before it interrupts the
    thread, so a cancelled job stays cancelled whatever `status` says. Once this has let
    the thread's pending interrupt land and cleared `thread_id`, no cancel can interrupt
    this thread. Counts and `busy` change before the status is published, so a client that
    sees a job end sees /health count it. `here`: called on the thread that ran the job
    (else for a worker whose thread ended)."""
    with job.lock:  # a C lock: no interrupt lands between acquiring and the block
        if here and job.interrupted:
            absorb_interrupt()
        if job.thread_id is None:
            return
        job.thread_id = None
        worker.busy = False
        worker.job = None
        if job.status in FINAL_STATUSES:  # cancelled meanwhile: what it made is discarded
            return
        if status == "COMPLETED":
            worker.completed += 1
        elif status in ("FAILED", "TIMED_OUT"):
            worker.failed += 1
        job.result = result  # before the status: `status()` reads them without a lock
        job.status = status
        finished.append(job.id)
        job.done.set()


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


def stream_view(job: Job, spec: HandlerSpec) -> dict[str, Any]:
    """A job as /stream answers: the chunks since the last call, which it hands over; FAILED
    for a handler that does not stream, as the SDK."""
    if not spec.streams:
        return {"id": job.id, "status": "FAILED", "error": NOT_STREAMING}
    with job.lock:
        chunks, job.pending = job.pending, []
        answer = {"id": job.id, "status": job.status, "stream": [{"output": c} for c in chunks]}
        if job.status != "COMPLETED" and job.result and "error" in job.result:
            answer["error"] = job.result["error"]
    return answer


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
