"""RunPod's endpoint API served from the kernel's own process, for a session's handler.

`serve(session)` starts a `ThreadingHTTPServer` on a background thread with the routes of
the SDK's `--rp_serve_api` server and of a deployed endpoint (`https://api.runpod.ai/v2/ID`):

    POST /run            {"input": {...}} -> {"id", "status": "IN_QUEUE"}; runs in the background
    POST /runsync        runs and waits -> {"id", "status": "COMPLETED", "output"} or FAILED + error
    GET|POST /status/ID  {"id", "status", "output"?, "error"?}
    GET|POST /stream/ID  {"id", "status", "stream": [{"output": chunk}, ...]}: the chunks
                         produced since the previous /stream call, as the deployed API does
    POST /cancel/ID      {"id", "status": "CANCELLED"}
    GET /health          {"jobs": {...counts}, "workers": {"idle", "running"}}

Each job is run by `JobRunner.run`, the code `%rp_test` uses, so it gets RunPod's envelope
(errors, `refresh_worker`, streams) exactly as in a notebook run. The handler is looked up by
name when each job starts, so re-running its `%%handler` cell changes what new jobs run,
without a restart. Jobs run on worker threads, at most the handler's `concurrency` at once
(read at each dispatch); the others wait in a FIFO queue. Each worker thread has a runner
(and so an event loop for async handlers) of its own.

A handler with a `concurrency_modifier` is sized as the SDK's JobScaler sizes a deployed
worker: it starts at 1, and before each take of jobs (here: at start, at each submit, and
each time a worker is free) the modifier is called with the current size; a new answer
applies once no job runs (the JobScaler resizes only when idle), and no job starts while it
waits. Deployed, a modifier that raises or returns something other than a whole number
stops the worker; here one line is logged and the size is kept.

While a job runs, `/status` answers with its latest `runpod.serverless.progress_update`
value as `output`, as a deployed endpoint does.

Cancelling a running job: the job is marked CANCELLED at once and whatever it produces later
is discarded; the worker thread also gets an asynchronous `KeyboardInterrupt` (the mechanism
`jobs.py` uses for timeouts off the main thread, as signals cannot be used there), which
stops Python code at once but a blocking call (sleep, I/O, a GPU kernel) only when it returns.
A job body may carry RunPod's `policy.executionTimeout` (milliseconds): past it the job is
TIMED_OUT, by the same mechanism.

Only 127.0.0.1 (or another loopback address) may be bound without a token; with a token,
every request must carry `Authorization: Bearer <token>`. Web pages are refused (see
`Server.refusal`): a foreign `Origin`, a `Host` that is none of the server's names (DNS
rebinding) and a POST body that is not `application/json` never run a job, and no CORS
preflight is granted. Bodies are capped (413) and nested at most MAX_DEPTH deep, the queue
too (429); a socket read waits READ_TIMEOUT at most, and a client that hangs up is no
traceback in the notebook. A handler that exits or raises any BaseException, or an
exception sent to a worker thread from outside, fails that job only: the server serves on.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hmac
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nbworker import checks
from nbworker.errors import NbworkerError
from nbworker.jobs import JobRunner, error_info, user_traceback
from nbworker.record import jsonable
from nbworker.registry import HandlerSpec, concurrency_answer
from nbworker.session import Session

__all__ = ["MAX_BODY", "QueueFull", "ServeError", "Server", "running", "serve", "stop_all"]

MAX_BODY = 10 * 1024 * 1024  # bytes of a request body
MAX_DEPTH = 100  # levels of nesting in a request body (Python's json recurses, ~1,000 at most)
# Jobs waiting, at most (answered 429, which clients retry), and the bytes of their bodies:
# a flood of /run must not fill the kernel's memory.
MAX_QUEUED = 10_000
MAX_QUEUED_BYTES = 1024 * 1024 * 1024
# Seconds a socket read may wait: a client that goes silent mid-request, or an idle
# keep-alive connection, frees its thread then.
READ_TIMEOUT = 60.0
# A policy.executionTimeout (ms) over 30 days is taken as none (1e308 overflowed the timer)
MAX_EXECUTION_TIMEOUT_MS = 30 * 24 * 3600 * 1000
DRAIN_LIMIT = 64 * 1024 * 1024  # a refused body up to this size is read before answering
RUNSYNC_WAIT = 90.0  # seconds /runsync waits before answering with the job's status, as RunPod
STOP_GRACE = 2.0  # seconds stop() lets running jobs finish before cancelling them
# Jobs run at once, at most: each has a thread here (deployed, an asyncio task), and workers
# ask for hundreds (MAX_CONCURRENCY=300 is common for LLM servers).
MAX_WORKERS = 128
KEEP_FINISHED = 10_000  # finished jobs remembered for /status; the oldest are forgotten
NOT_FOUND = "Job ID not found"
TOO_DEEP = f"the body nests lists and objects over {MAX_DEPTH} levels deep"
NOT_STREAMING = "Stream not supported, handler must be a generator."

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

log = logging.getLogger(__name__)


class ServeError(NbworkerError):
    """The server cannot start as asked (address in use, no token for a public address)."""


class QueueFull(ServeError):
    """`Server.submit` refused a job: too many wait already (HTTP 429)."""


def _execution_timeout(policy: Any) -> float | None:
    """Seconds of RunPod's `policy.executionTimeout` (ms); None for none, for what is no
    positive number (a bool, NaN, a string) and for a limit too long to mean one."""
    value = policy.get("executionTimeout") if isinstance(policy, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value / 1000 if 0 < value <= MAX_EXECUTION_TIMEOUT_MS else None


def _failure(err: BaseException, streams: bool) -> str:
    """The error of a job whose handler raised `err`, as the SDK words it (error JSON; the
    text of `run_job_generator` for a generator)."""
    if streams:
        return f"handler: {err} \ntraceback: {user_traceback(err)}"
    return json.dumps(error_info(err))


def _stray_error(err: BaseException) -> str:
    if isinstance(err, Exception):  # nbworker's own fault
        return f"nbworker: {type(err).__name__}: {err}"
    return (
        f"{type(err).__name__}{f' ({err})' if str(err) else ''} reached the job's worker thread "
        "outside the handler: the job failed, the server serves on"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(eq=False)
class _Job:
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


@dataclass(eq=False)
class _Worker:
    """A worker thread and its figures, which only that thread writes (read without locks)."""

    thread: threading.Thread | None = None
    busy: bool = False
    completed: int = 0
    failed: int = 0
    job: _Job | None = None  # the job it holds, from its take until it is settled
    # Held while the worker may sleep; released to wake it. A bare C lock, not a Condition:
    # an exception delivered to the thread (PyThreadState_SetAsyncExc) while it waits cannot
    # leave the server's lock released or half-taken, as it can in Condition.wait.
    wake: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Server:
    """One running server. `url`, `host`, `port`, `name` (None: the default handler) and
    `session`; `stop()` shuts it down. Made by `serve()`."""

    def __init__(
        self,
        session: Session,
        name: str | None,
        host: str,
        port: int,
        token: str | None,
        *,
        max_body: int = MAX_BODY,
        max_queued: int = MAX_QUEUED,
        runsync_wait: float = RUNSYNC_WAIT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        if token is not None and not token:
            raise ServeError("the token must not be empty")
        if token is None and not is_loopback(host):
            raise ServeError(
                f"binding {host} opens the handler to the network: give a token "
                "(clients then send Authorization: Bearer <token>)"
            )
        self.session, self.name, self.host = session, name, host
        self.max_body, self.runsync_wait, self.read_timeout = max_body, runsync_wait, read_timeout
        self._token = token
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._queue: deque[_Job] = deque()
        self._queued_bytes = 0
        self.max_queued = max_queued
        self._workers: list[_Worker] = []
        self._sleeping: list[_Worker] = []  # workers waiting for a job (under the lock)
        self._retired = [0, 0]  # completed and failed jobs of worker threads that ended
        self._started = 0  # worker threads started, for their names
        self._closing = False
        # A concurrency modifier's answers: the size in use (the JobScaler starts at 1) and
        # the latest, which becomes the size once no job runs; both change under the lock.
        self._size = self._wanted = 1
        self._modifier_problem: str | None = None  # the last one logged, not repeated
        self._capped = False  # whether the MAX_WORKERS cap was logged
        # The server lock guards the queue and dispatch only. Requests and the end of a job
        # do not take it (job status, counts and these sets are read and changed by atomic
        # operations): in a busy process a contended lock costs the waiter a GIL hand-over
        # (5 ms and more), and with 32 clients polling in the kernel's own process, jobs took
        # 15-40 ms each instead of 40 µs.
        self._connections: set[socket.socket] = set()
        self._answering: set[object] = set()  # request handlers answering now
        try:
            self._httpd = _HTTPServer(self, host, port)
        except OSError as err:
            if err.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise ServeError(f"port {port} on {host} is in use: pick another --port") from None
            raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        self.port: int = self._httpd.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        # The Host names of this server (see `refusal`); port 80 may go without its number.
        names = {"127.0.0.1", "localhost", "[::1]", shown.lower()}
        self._hosts = {f"{name}:{self.port}" for name in names}
        if self.port == 80:
            self._hosts |= names
        self._loopback = is_loopback(host)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"nbworker-serve-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._resize(self._ask_modifier())  # the JobScaler asks before its first take

    def __repr__(self) -> str:
        state = "stopped" if self._closing else "serving"
        return f"<nbworker Server {self.name or 'default handler'} {state} at {self.url}>"

    @property
    def serving(self) -> bool:
        return not self._closing

    @property
    def requires_token(self) -> bool:
        return self._token is not None

    # ------------------------------------------------------------- jobs

    def _spec(self) -> HandlerSpec | None:
        try:
            return self.session.registry.get(self.name)
        except NbworkerError:
            return None

    def _limit(self) -> int:
        """Jobs that may run at once now: the handler's concurrency, or its modifier's
        answer in use (0 while a new answer waits for the running jobs to end)."""
        spec = self._spec()
        if spec is None:
            return 1
        if spec.concurrency_modifier is None:
            wanted = spec.concurrency
        elif self._wanted != self._size:
            return 0
        else:
            wanted = self._size
        if wanted > MAX_WORKERS and not self._capped:
            self._capped = True
            log.warning(
                "%%rp_serve: concurrency %d asked; serving at most %d jobs at once (a thread "
                "each; deployed, the SDK runs them as asyncio tasks)",
                wanted,
                MAX_WORKERS,
            )
        return min(wanted, MAX_WORKERS)

    @property
    def concurrency(self) -> int:
        """The jobs this server runs at once for its handler (with a concurrency modifier,
        its latest answer)."""
        spec = self._spec()
        if spec is None:
            return 1
        return spec.concurrency if spec.concurrency_modifier is None else self._wanted

    def _ask_modifier(self) -> int | None:
        """The handler's concurrency modifier called with the current size, as the SDK's
        JobScaler calls it before each take of jobs (not while a resize waits); None when
        there is none, or it failed (logged once: deployed, that stops the worker)."""
        spec = self._spec()
        modifier = spec.concurrency_modifier if spec is not None else None
        if modifier is None or self._wanted != self._size:
            return None
        current = self._size
        try:
            value = modifier(current)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # user code: nothing it raises stops the server
            problem = f"raised {type(err).__name__}: {err}: deployed, this stops the worker"
        else:
            number, problem = concurrency_answer(value)
            if number is not None:
                self._modifier_problem = None
                return number
        if problem != self._modifier_problem:
            self._modifier_problem = problem
            log.warning(
                "%%rp_serve: concurrency_modifier(%d) %s; keeping concurrency %d",
                current,
                problem,
                current,
            )
        return None

    def _resize(self, wanted: int | None) -> None:
        with self._lock:
            self._resize_locked(wanted)

    def _resize_locked(self, wanted: int | None = None) -> None:
        """Take the modifier's latest answer (the server lock held); a new size applies once
        no job runs, and the workers it needs start then."""
        if wanted is not None:
            self._wanted = wanted
        if self._wanted != self._size and self._running() == 0:
            self._size = self._wanted
            if self._queue:
                self._spawn_locked()
            self._wake_locked(len(self._sleeping))

    def _wake_locked(self, count: int = 1) -> None:
        """Wake up to `count` sleeping workers (the server lock held)."""
        for worker in self._sleeping[:count]:
            with contextlib.suppress(RuntimeError):  # already woken
                worker.wake.release()
        del self._sleeping[:count]

    def _spawn_locked(self) -> None:
        """Start worker threads up to the current limit (the server lock held), in place of
        any that ended too."""
        for worker in [w for w in self._workers if w.thread and not w.thread.is_alive()]:
            self._bury_locked(worker, None)
        limit = self._limit()
        while len(self._workers) < limit:
            worker = _Worker()
            worker.thread = threading.Thread(
                target=self._work_loop,
                args=(worker,),
                name=f"nbworker-job-{self.port}-{self._started}",
                daemon=True,
            )
            self._started += 1
            self._workers.append(worker)
            worker.thread.start()

    def _bury_locked(self, worker: _Worker, err: BaseException | None) -> None:
        """Forget a worker whose thread ended (the server lock held): its figures are kept
        and the job it held fails."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        if worker in self._sleeping:
            self._sleeping.remove(worker)
        job = worker.job
        if job is not None:
            what = f"{type(err).__name__}" if err is not None else "an exception"
            error = f"nbworker: the job's worker thread ended ({what}); a new one serves on"
            self._settle(job, FAILED, {"error": error}, worker, here=False)
        self._retired[0] += worker.completed
        self._retired[1] += worker.failed

    def submit(self, body: dict[str, Any], *, prefix: str = "", size: int = 0) -> _Job:
        """Queue a job made of a request body (already checked) of `size` bytes. Raises
        QueueFull when the queue holds `max_queued` jobs or MAX_QUEUED_BYTES of bodies."""
        job_id = f"{prefix}{uuid.uuid4()}"
        payload = {"id": job_id, "input": body["input"]}
        if "webhook" in body:  # handed to the handler as the SDK does; nothing is fetched
            payload["webhook"] = body["webhook"]
        job = _Job(job_id, payload, _execution_timeout(body.get("policy")), size)
        wanted = self._ask_modifier()  # user code: outside the lock
        with self._lock:
            if self._closing:
                raise ServeError("the server is stopping")
            if len(self._queue) >= self.max_queued or (
                self._queue and self._queued_bytes + size > MAX_QUEUED_BYTES
            ):
                raise QueueFull(
                    f"{len(self._queue)} jobs ({self._queued_bytes:,} bytes) wait already: "
                    "try again later"
                )
            self._jobs[job_id] = job
            self._forget_old()
            self._queue.append(job)
            self._queued_bytes += size
            self._resize_locked(wanted)
            self._spawn_locked()
            self._wake_locked()
        return job

    def _forget_old(self) -> None:
        extra = len(self._jobs) - KEEP_FINISHED
        if extra <= 0:
            return
        for job_id in [i for i, j in self._jobs.items() if j.status in FINAL][:extra]:
            del self._jobs[job_id]

    def _running(self) -> int:
        return sum(worker.busy for worker in self._workers)

    def _work_loop(self, worker: _Worker) -> None:
        """Take jobs and run them until the server stops. Nothing a job raises, and no
        exception delivered to this thread from outside, ends the loop while the server
        counts this worker; a thread that ends anyway is replaced (`_retire`)."""
        runner = JobRunner()
        error: BaseException | None = None
        try:
            while not self._closing:
                try:
                    self._work_once(worker, runner)
                except BaseException as err:  # an exit or interrupt sent to this thread
                    job = worker.job
                    if job is not None:  # a cancel's interrupt leaves it CANCELLED
                        self._settle(job, FAILED, {"error": _stray_error(err)}, worker)
                    worker.job = None
        except BaseException as err:  # one more, while handling the first: the thread ends
            error = err
        finally:
            runner.close()
            self._retire(worker, error)

    def _work_once(self, worker: _Worker, runner: JobRunner) -> None:
        """Run the next job, or sleep until woken."""
        wanted = self._ask_modifier()  # user code: outside the lock
        worker.wake.acquire(blocking=False)  # armed: a wake from now on releases it
        # The C lock: its __exit__ runs no Python code, so a cancel's interrupt cannot land
        # between taking the job and releasing.
        with self._lock:
            self._resize_locked(wanted)
            job = self._take_locked(worker)
            sleep = job is None and not self._closing
            if sleep and worker not in self._sleeping:
                self._sleeping.append(worker)
        if sleep:
            worker.wake.acquire()  # until a submit, a resize or stop() releases it
        elif job is not None:
            self._execute(job, runner, worker)  # clears `worker.busy`

    def _take_locked(self, worker: _Worker) -> _Job | None:
        """The next job for `worker`, now marked as running on it (the server lock held).
        Each step leaves a consistent state should an exception cut it short: the job
        leaves the queue last, and a job settled meanwhile is skipped."""
        queue = self._queue
        while queue and queue[0].status in FINAL:
            self._queued_bytes -= queue.popleft().size
        if self._closing or not queue or self._running() >= self._limit():
            return None
        job = queue[0]
        if worker in self._sleeping:  # listed by a sleep an exception cut short
            self._sleeping.remove(worker)
        worker.job = job
        job.thread_id = threading.get_ident()
        job.status = IN_PROGRESS
        worker.busy = True
        queue.popleft()
        self._queued_bytes -= job.size
        return job

    def _retire(self, worker: _Worker, error: BaseException | None) -> None:
        """A worker thread ends: at stop(), nothing to do; otherwise it is forgotten, its job
        fails and a new thread takes its place."""
        if self._closing:
            return
        with self._lock:
            self._bury_locked(worker, error)
            if not self._closing:
                self._spawn_locked()
        if error is not None:
            log.warning("%%rp_serve: a worker thread ended (%r); a new one serves on", error)

    def _execute(self, job: _Job, runner: JobRunner, worker: _Worker) -> None:
        result: dict[str, Any] | None = None
        status = FAILED
        try:
            spec = self.session.registry.get(self.name)
            job.spec = spec

            def on_chunk(chunk: Any, index: int) -> None:
                copy = _json_copy(chunk)  # strict JSON for /stream, and the handler's own
                with job.lock:  # object may change after it is yielded
                    job.pending.append(copy)

            def on_progress(value: Any, seconds: float) -> None:
                job.progress, job.progressed = _json_copy(value), True

            run = runner.run(
                spec,
                job.payload,
                timeout=job.timeout,
                on_chunk=on_chunk,
                on_progress=on_progress,
            )
            self.session.history.append(run)
            if run.status == CANCELLED and job.status != CANCELLED and run.interrupt:
                # An interrupt no /cancel sent: the handler raised KeyboardInterrupt, or one
                # was delivered to this thread. Deployed, it would end the worker: a failure.
                status, result = FAILED, {"error": _failure(run.interrupt, spec.streams)}
            elif run.status in (CANCELLED, TIMED_OUT):
                status, result = run.status, {"error": run.error}
            else:
                status, result = run.status, run.result or {}
                problem = checks.serialization_problem(result)
                if problem is not None:  # a deployed worker would post nothing: job hangs
                    status, result = FAILED, {"error": f"the handler's result is {problem}"}
        except NbworkerError as err:  # no handler to run
            status, result = FAILED, {"error": str(err)}
        except BaseException as err:  # nbworker's fault, or an exit or interrupt sent to this
            # thread past the runner's reach: the job fails (a cancelled one stays CANCELLED)
            status, result = FAILED, {"error": _stray_error(err)}
        finally:
            self._settle(job, status, result, worker)

    def _settle(
        self,
        job: _Job,
        status: str,
        result: dict[str, Any] | None,
        worker: _Worker,
        *,
        here: bool = True,
    ) -> None:
        """Record how `job` ended and free its worker; a second call does nothing.

        A cancel marks the job CANCELLED (under the job's lock) before it interrupts the
        thread, so a cancelled job stays cancelled whatever `status` says. Once this has
        cleared the thread's pending interrupt and `thread_id`, no cancel can interrupt this
        thread. Counts and `busy` change before the status is published, so a client that
        sees a job end sees /health count it. `here`: called on the worker's own thread (else
        for a worker whose thread ended)."""
        with job.lock:  # a C lock: no interrupt lands between acquiring and the block
            if here:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(threading.get_ident()), None
                )
            if job.thread_id is None:
                return
            job.thread_id = None
            worker.busy = False
            worker.job = None
            if job.status in FINAL:  # cancelled meanwhile: what it made is discarded
                return
            if status == COMPLETED:
                worker.completed += 1
            elif status in (FAILED, TIMED_OUT):
                worker.failed += 1
            job.result = result  # before the status: `status()` reads them without a lock
            job.status = status
            job.done.set()

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return _not_found(job_id)
            if job.status not in FINAL:
                self._cancel_locked(job)
            return {"id": job.id, "status": job.status}

    def _cancel_locked(self, job: _Job) -> None:
        """Cancel `job` (the server lock held: a queued job cannot start meanwhile)."""
        if job.status == IN_QUEUE:
            self._queue.remove(job)
            self._queued_bytes -= job.size
            job.status = CANCELLED
            job.done.set()
            return
        with job.lock:
            if job.status in FINAL:  # it ended meanwhile
                return
            job.result = None
            job.status = CANCELLED
            job.done.set()
            if job.thread_id is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(job.thread_id), ctypes.py_object(KeyboardInterrupt)
                )

    def status(self, job_id: str) -> dict[str, Any]:
        # Without the lock: the dict lookup is atomic and `_view` reads the status before
        # the result, which is always set first.
        job = self._jobs.get(job_id)
        return _not_found(job_id) if job is None else _view(job)

    def stream(self, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(job_id)  # without the server lock, as `status()`
        if job is None:
            return _not_found(job_id)
        spec = job.spec
        if spec is None:  # not started: the handler it would run now
            try:
                spec = self.session.registry.get(self.name)
            except NbworkerError as err:
                return {"id": job_id, "status": FAILED, "error": str(err)}
        if not spec.streams:
            return {"id": job_id, "status": FAILED, "error": NOT_STREAMING}
        with job.lock:
            chunks, job.pending = job.pending, []
            answer = {"id": job.id, "status": job.status, "stream": [{"output": c} for c in chunks]}
            if job.status != COMPLETED and job.result and "error" in job.result:
                answer["error"] = job.result["error"]
        return answer

    def run_sync(self, body: dict[str, Any], *, size: int = 0) -> dict[str, Any]:
        job = self.submit(body, prefix="sync-", size=size)
        job.done.wait(self.runsync_wait)
        return _view(job)

    def health(self) -> dict[str, Any]:
        workers = list(self._workers)
        running = sum(worker.busy for worker in workers)
        completed, failed = self._retired
        return {
            "jobs": {
                "completed": completed + sum(worker.completed for worker in workers),
                "failed": failed + sum(worker.failed for worker in workers),
                "inProgress": running,
                "inQueue": len(self._queue),
                "retried": 0,  # a local server never retries a job
            },
            "workers": {"idle": max(self._limit() - running, 0), "running": running},
        }

    # ------------------------------------------------------------- shutdown

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting requests, cancel queued jobs, let running ones finish for up to
        `grace` seconds and cancel the rest, then close every connection and join threads."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            while self._queue:
                self._cancel_locked(self._queue[0])
            self._wake_locked(len(self._sleeping))
        self._httpd.shutdown()  # the listening loop ends; the port is free after server_close
        self._httpd.server_close()
        self._thread.join()
        deadline = time.monotonic() + grace
        threads = [worker.thread for worker in self._workers if worker.thread is not None]
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        with self._lock:
            for job in self._jobs.values():
                if job.status in (IN_QUEUE, IN_PROGRESS):
                    self._cancel_locked(job)
        for thread in threads:
            thread.join(0.5)
        deadline = time.monotonic() + 0.5  # let answers in flight (e.g. /runsync) go out
        while self._answering and time.monotonic() < deadline:
            time.sleep(0.01)
        connections = self._connections.copy()
        for connection in connections:  # idle keep-alive connections end now
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        with _servers_lock:
            _servers.discard(self)

    # ------------------------------------------------------------- HTTP

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token: `Bearer <token>`, the scheme in
        any case (RFC 9110), compared in constant time. A token in the URL is not read."""
        if self._token is None:
            return True
        scheme, _, credentials = (header or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token.encode()
        )

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request is refused for its Host or Origin header, or None.

        Any web page the user visits may send requests to 127.0.0.1 (a form, or fetch() with
        a text/plain body, needs no preflight), and with DNS rebinding under a name of its
        own, so that it reads the answers too. Such requests carry an Origin that is not this
        server's, or a Host that is none of its names, and are refused before anything runs.
        No Origin (curl, requests, the SDK) and this server's own origins are allowed; no
        Host (HTTP/1.0) too, as no browser sends that. A server bound to a non-loopback
        address is reached under any of the machine's names and addresses, so its Host is
        not checked; it needs a token, which a page can neither read nor make a browser send.
        """
        host = host.strip().lower() if host is not None else None
        if host is not None and self._loopback and host not in self._hosts:
            names = ", ".join(sorted(self._hosts))
            return (
                f"refused: Host {host!r} is not this server (it answers as {names}); "
                "a web page reaching 127.0.0.1 under its own name (DNS rebinding) looks like this"
            )
        if origin is not None:
            allowed = {f"http://{name}" for name in self._hosts}
            if not self._loopback and host:
                allowed.add(f"http://{host}")
            if origin.strip().lower() not in allowed:
                return f"refused: cross-origin request (Origin {origin.strip()[:200]!r})"
        return None


def _not_found(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "status": FAILED, "error": NOT_FOUND}


def _json_copy(value: Any) -> Any:
    """A progress value or stream chunk as /status and /stream send it: a copy (the handler
    may change the object later) that strict JSON clients read (NaN -> null, other objects
    -> their repr)."""
    return jsonable(value)


def _view(job: _Job) -> dict[str, Any]:
    """A job as /status and /runsync answer; FAILED carries the error only, as the SDK; a
    running job that reported progress has it as `output`, as a deployed endpoint."""
    status = job.status  # before the result, which is always set first
    answer: dict[str, Any] = {"id": job.id, "status": status}
    result = job.result or {}
    if status == IN_PROGRESS and job.progressed:
        answer["output"] = job.progress
    if status == COMPLETED and result.get("output") is not None:
        answer["output"] = result["output"]
    if status in (FAILED, TIMED_OUT) and result.get("error") is not None:
        answer["error"] = result["error"]
    return answer


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: bursts of clients connecting at once
    allow_reuse_address = True

    def __init__(self, app: Server, host: str, port: int) -> None:
        self.app = app
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a request's thread: a client that hung up or went silent is one debug
        line; nothing is printed into the notebook as a traceback (socketserver's default)."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.debug("%%rp_serve: client %s went away: %r", client_address, err)
        else:
            log.warning("%%rp_serve: a request from %s failed: %r", client_address, err)


class _BadRequest(Exception):
    """A request answered with an error; `close`: the connection cannot be reused (a body
    left unread)."""

    def __init__(
        self, code: int, message: str, *, close: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.close, self.headers = code, close, headers or {}


class _HungUp(Exception):
    """The client closed the connection before its body was all sent: nothing to answer."""


def _is_json(content_type: str | None) -> bool:
    """application/json, with parameters (`; charset=utf-8`) or as a `+json` type, which the
    SDK's FastAPI server reads as JSON too (it answers 422 to anything else)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests lists and objects more than `limit` deep (without recursing)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    # TCP_NODELAY: headers and body go out as two writes, and with Nagle's algorithm the
    # body waited for the client's delayed ACK (~40 ms per request on a kept-open connection)
    disable_nagle_algorithm = True
    server_version = "nbworker"
    server: _HTTPServer
    _must_close = False  # this request's body was left unread: close after answering

    def setup(self) -> None:
        self.timeout = self.server.app.read_timeout  # each read and write of the socket
        super().setup()
        self.server.app._connections.add(self.connection)

    def finish(self) -> None:
        self.server.app._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a kernel's stderr is the notebook: no access log there

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, a URI or headers over its limits,
        an unknown method) as JSON, as every other answer."""
        self._answer(code, {"error": message or self.responses.get(code, ("error",))[0]}, True)

    def _send(
        self,
        code: int,
        body: dict[str, Any],
        *,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            data = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError):  # NaN and Infinity as null (as the SDK), objects
            data = json.dumps(jsonable(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close or self._must_close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _answer(
        self, code: int, body: dict[str, Any], close: bool = False, headers: Any = None
    ) -> None:
        """`_send` to a client that may have gone: then the connection just closes."""
        try:
            self._send(code, body, close=close, headers=headers)
        except OSError:
            self.close_connection = True

    def _read(self, length: int) -> bytes:
        """`length` bytes of the body. A client that closes first has sent part of a job,
        which must not run; one that goes silent gets 408."""
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise _BadRequest(
                408, f"the body did not come within {self.timeout:g} s", close=True
            ) from None
        if len(raw) < length:
            raise _HungUp
        return raw

    def _discard_body(self) -> bool:
        """Read and drop a body this request does not use; False when it is not read (too
        large, chunked, no length), so the connection closes after the answer."""
        length = self.headers.get("Content-Length", "0").strip()
        if "Transfer-Encoding" in self.headers or not length.isdigit():
            return False
        if int(length) > self.server.app.max_body:
            return False
        self._read(int(length))
        return True

    def _body(self) -> tuple[dict[str, Any], int]:
        """The checked body of /run or /runsync, and its size in bytes."""
        app = self.server.app
        if "Transfer-Encoding" in self.headers:
            # Not decoded, nor guessed at: a body framed one way here and another way by a
            # proxy in front is how requests are smuggled.
            raise _BadRequest(
                411, "send the body with a Content-Length (no Transfer-Encoding)", close=True
            )
        lengths = self.headers.get_all("Content-Length") or ["0"]
        try:
            (length,) = {int(value) for value in lengths}
        except ValueError:
            raise _BadRequest(400, "Content-Length is not one number", close=True) from None
        if length < 0:
            raise _BadRequest(400, "Content-Length is negative", close=True)
        if length > app.max_body:
            if length <= DRAIN_LIMIT:  # read it, so the client sees the answer, not a reset
                with contextlib.suppress(OSError):
                    left = length
                    while left > 0 and (chunk := self.rfile.read(min(left, 1 << 20))):
                        left -= len(chunk)
            raise _BadRequest(
                413,
                f"the body is {length} bytes; this server takes at most {app.max_body}",
                close=True,
            )
        raw = self._read(length)
        kind = self.headers.get("Content-Type")
        if not _is_json(kind):
            # A web page can POST text/plain (or a form) to 127.0.0.1 without asking first;
            # application/json needs a CORS preflight, which this server never grants.
            given = f"Content-Type {kind!r}" if kind else "no Content-Type"
            raise _BadRequest(
                415, f"send the body as JSON with Content-Type: application/json, not {given}"
            )
        if not raw.strip():
            raise _BadRequest(400, 'the body must be JSON like {"input": {...}}')
        try:
            body = json.loads(raw)
        except UnicodeDecodeError as err:
            raise _BadRequest(400, f"the body is not UTF-8: {err}") from None
        except json.JSONDecodeError as err:
            raise _BadRequest(
                400,
                f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno} "
                f"(char {err.pos})",
            ) from None
        except RecursionError:  # too deep for Python's parser
            raise _BadRequest(400, TOO_DEEP) from None
        if _too_deep(body, MAX_DEPTH):
            raise _BadRequest(400, TOO_DEEP)
        if not isinstance(body, dict):
            raise _BadRequest(400, f"the body must be a JSON object, not {_kind(body)}")
        if "input" not in body:
            raise _BadRequest(400, 'the body has no "input": send {"input": {...}}')
        if not isinstance(body["input"], dict):
            raise _BadRequest(400, f'"input" must be a JSON object, not {_kind(body["input"])}')
        return body, length

    def _handle(self, method: str) -> None:
        app = self.server.app
        app._answering.add(self)
        self._must_close = False
        try:
            self._route(method)
        except _HungUp:
            self.close_connection = True
        except (ConnectionError, TimeoutError) as err:  # the client left, or went silent
            log.debug("%%rp_serve: client %s went away: %r", self.client_address, err)
            self.close_connection = True
        except _BadRequest as err:
            self._answer(err.code, {"error": str(err)}, err.close, err.headers)
        except QueueFull as err:
            self._answer(429, {"error": f"the queue is full: {err}"}, headers={"Retry-After": "1"})
        except ServeError as err:
            self._answer(503, {"error": str(err)}, True)
        except Exception as err:  # nbworker's own fault: one line here, the error there
            log.warning("%%rp_serve: %s %.200s failed: %r", method, self.path, err)
            self._answer(500, {"error": f"nbworker: {type(err).__name__}: {err}"}, True)
        finally:
            app._answering.discard(self)

    def _route(self, method: str) -> None:
        app = self.server.app
        if app._closing:
            raise ServeError("the server is stopping")
        hosts = self.headers.get_all("Host") or []
        refusal = "more than one Host header" if len(hosts) > 1 else None
        refusal = refusal or app.refusal(hosts[0] if hosts else None, self.headers.get("Origin"))
        if refusal is not None:  # before the token, the body and any job
            raise _BadRequest(403, refusal, close=not self._discard_body())
        if not app.authorized(self.headers.get("Authorization")):
            message = "unauthorized: send Authorization: Bearer <token>"
            raise _BadRequest(401, message, close=not self._discard_body())
        path = self.path.split("?", 1)[0].rstrip("/")
        parts = path.lstrip("/").split("/")
        route, job_id = parts[0], "/".join(parts[1:])
        if method == "POST" and route in ("run", "runsync") and not job_id:
            body, size = self._body()
            if route == "run":
                job = app.submit(body, size=size)
                self._send(200, {"id": job.id, "status": IN_QUEUE})
            else:
                self._send(200, app.run_sync(body, size=size))
            return
        self._must_close = not self._discard_body()  # a body other routes get is not used
        if method == "OPTIONS":  # a CORS preflight: granted to no origin
            message = "no cross-origin requests: this server answers no CORS preflight"
            raise _BadRequest(405, message, headers={"Allow": "GET, POST"})
        if route in ("status", "stream") and job_id:
            self._send(200, app.status(job_id) if route == "status" else app.stream(job_id))
        elif route == "cancel" and job_id and method == "POST":
            self._send(200, app.cancel(job_id))
        elif route == "health" and not job_id:
            self._send(200, app.health())
        else:
            self._send(404, {"error": f"no route {method} {path or '/'}"})


# ----------------------------------------------------------------- module API

_servers: set[Server] = set()
_servers_lock = threading.Lock()


def serve(
    session: Session,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    *,
    max_body: int = MAX_BODY,
    max_queued: int = MAX_QUEUED,
    runsync_wait: float = RUNSYNC_WAIT,
    read_timeout: float = READ_TIMEOUT,
) -> Server:
    """Serve `session`'s handler `name` (None: `handler`, else the only one, looked up at
    each job) on `host:port` (0: a free port). A non-loopback host needs a `token`.
    `max_queued` jobs may wait (more are answered 429); a socket read waits `read_timeout`
    seconds at most. Raises ServeError when the address cannot be used."""
    server = Server(
        session,
        name,
        host,
        port,
        token,
        max_body=max_body,
        max_queued=max_queued,
        runsync_wait=runsync_wait,
        read_timeout=read_timeout,
    )
    with _servers_lock:
        _servers.add(server)
    return server


def running(session: Session | None = None) -> list[Server]:
    """The servers still serving (those of `session` only, if given)."""
    with _servers_lock:
        found = [s for s in _servers if session is None or s.session is session]
    return sorted(found, key=lambda s: s.port)


def stop_all() -> None:
    """Stop every server of this process (run at exit)."""
    for server in running():
        server.stop(grace=0.5)


atexit.register(stop_all)
