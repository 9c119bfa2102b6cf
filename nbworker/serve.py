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
every request must carry `Authorization: Bearer <token>`.
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
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nbworker import checks
from nbworker.errors import NbworkerError
from nbworker.jobs import JobRunner, jsonable
from nbworker.registry import HandlerSpec, concurrency_answer
from nbworker.session import Session

__all__ = ["MAX_BODY", "ServeError", "Server", "running", "serve", "stop_all"]

MAX_BODY = 10 * 1024 * 1024  # bytes of a request body
DRAIN_LIMIT = 64 * 1024 * 1024  # a refused body up to this size is read before answering
RUNSYNC_WAIT = 90.0  # seconds /runsync waits before answering with the job's status, as RunPod
STOP_GRACE = 2.0  # seconds stop() lets running jobs finish before cancelling them
# Jobs run at once, at most: each has a thread here (deployed, an asyncio task), and workers
# ask for hundreds (MAX_CONCURRENCY=300 is common for LLM servers).
MAX_WORKERS = 128
KEEP_FINISHED = 10_000  # finished jobs remembered for /status; the oldest are forgotten
NOT_FOUND = "Job ID not found"
NOT_STREAMING = "Stream not supported, handler must be a generator."

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

log = logging.getLogger(__name__)


class ServeError(NbworkerError):
    """The server cannot start as asked (address in use, no token for a public address)."""


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


@dataclass
class _Worker:
    """A worker thread and its figures, which only that thread writes (read without locks)."""

    thread: threading.Thread | None = None
    busy: bool = False
    completed: int = 0
    failed: int = 0


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
        runsync_wait: float = RUNSYNC_WAIT,
    ) -> None:
        if token is not None and not token:
            raise ServeError("the token must not be empty")
        if token is None and not is_loopback(host):
            raise ServeError(
                f"binding {host} opens the handler to the network: give a token "
                "(clients then send Authorization: Bearer <token>)"
            )
        self.session, self.name, self.host = session, name, host
        self.max_body, self.runsync_wait = max_body, runsync_wait
        self._token = token
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._queue: deque[_Job] = deque()
        self._workers: list[_Worker] = []
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
            self._work.notify_all()

    def _spawn_locked(self) -> None:
        """Start worker threads up to the current limit (the server lock held)."""
        limit = self._limit()
        while len(self._workers) < limit:
            worker = _Worker()
            worker.thread = threading.Thread(
                target=self._work_loop,
                args=(worker,),
                name=f"nbworker-job-{self.port}-{len(self._workers)}",
                daemon=True,
            )
            self._workers.append(worker)
            worker.thread.start()

    def submit(self, body: dict[str, Any], *, prefix: str = "") -> _Job:
        """Queue a job made of a request body (already checked)."""
        job_id = f"{prefix}{uuid.uuid4()}"
        payload = {"id": job_id, "input": body["input"]}
        if "webhook" in body:
            payload["webhook"] = body["webhook"]
        timeout = None
        policy = body.get("policy")
        if isinstance(policy, dict) and isinstance(policy.get("executionTimeout"), (int, float)):
            timeout = policy["executionTimeout"] / 1000 if policy["executionTimeout"] > 0 else None
        job = _Job(job_id, payload, timeout)
        wanted = self._ask_modifier()  # user code: outside the lock
        with self._work:
            if self._closing:
                raise ServeError("the server is stopping")
            self._jobs[job_id] = job
            self._forget_old()
            self._queue.append(job)
            self._resize_locked(wanted)
            self._spawn_locked()
            self._work.notify()
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
        runner = JobRunner()
        try:
            while True:
                job = None
                try:
                    wanted = self._ask_modifier()  # user code: outside the lock
                    # The C lock, not the Condition: its __exit__ runs no Python code, so a
                    # cancel's interrupt cannot land between taking the job and releasing.
                    with self._lock:
                        self._resize_locked(wanted)
                        # A worker ending a job makes no notify: it comes back here itself.
                        while not self._closing and not (
                            self._queue and self._running() < self._limit()
                        ):
                            self._work.wait()
                            self._resize_locked()
                        if self._closing:
                            return
                        job = self._queue.popleft()
                        job.status = IN_PROGRESS
                        job.thread_id = threading.get_ident()
                        worker.busy = True
                    self._execute(job, runner, worker)  # clears `worker.busy`
                except KeyboardInterrupt:  # a cancel landed before `_execute` could catch it
                    if job is not None:
                        self._settle(job, CANCELLED, None, worker)
        finally:
            runner.close()

    def _execute(self, job: _Job, runner: JobRunner, worker: _Worker) -> None:
        result: dict[str, Any] | None = None
        status = FAILED
        try:
            try:
                spec = self.session.registry.get(self.name)
                job.spec = spec

                def on_chunk(chunk: Any, index: int) -> None:
                    with job.lock:
                        job.pending.append(chunk)

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
                if run.status in (CANCELLED, TIMED_OUT):
                    status, result = run.status, {"error": run.error}
                else:
                    status, result = run.status, run.result or {}
                    problem = checks.serialization_problem(result)
                    if problem is not None:  # a deployed worker would post nothing: job hangs
                        status, result = FAILED, {"error": f"the handler's result is {problem}"}
            except NbworkerError as err:  # no handler to run
                status, result = FAILED, {"error": str(err)}
            except Exception as err:  # nbworker's own fault: the job fails, the worker lives on
                status, result = FAILED, {"error": f"nbworker: {type(err).__name__}: {err}"}
            finally:
                self._settle(job, status, result, worker)
        except KeyboardInterrupt:  # cancelled by /cancel or stop(), past the runner's reach
            self._settle(job, CANCELLED, None, worker)  # if the interrupt cut settling short

    def _settle(
        self, job: _Job, status: str, result: dict[str, Any] | None, worker: _Worker
    ) -> None:
        """Record how `job` ended and free its worker; a second call does nothing.

        A cancel marks the job CANCELLED (under the job's lock) before it interrupts the
        thread, so a cancelled job stays cancelled whatever `status` says. Once this has
        cleared the thread's pending interrupt and `thread_id`, no cancel can interrupt this
        thread. Counts and `busy` change before the status is published, so a client that
        sees a job end sees /health count it."""
        with job.lock:  # a C lock: no interrupt lands between acquiring and the block
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
            if job.thread_id is None:
                return
            job.thread_id = None
            worker.busy = False
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

    def run_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self.submit(body, prefix="sync-")
        job.done.wait(self.runsync_wait)
        return _view(job)

    def health(self) -> dict[str, Any]:
        workers = list(self._workers)
        running = sum(worker.busy for worker in workers)
        return {
            "jobs": {
                "completed": sum(worker.completed for worker in workers),
                "failed": sum(worker.failed for worker in workers),
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
        with self._work:
            if self._closing:
                return
            self._closing = True
            while self._queue:
                self._cancel_locked(self._queue[0])
            self._work.notify_all()
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
        if self._token is None:
            return True
        expected = f"Bearer {self._token}".encode()
        return hmac.compare_digest((header or "").strip().encode(), expected)


def _not_found(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "status": FAILED, "error": NOT_FOUND}


def _json_copy(value: Any) -> Any:
    """A progress value as the record keeps it: a copy (the handler may change the object
    later) that strict JSON clients read (NaN -> null, other objects -> their repr)."""
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


class _BadRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    # TCP_NODELAY: headers and body go out as two writes, and with Nagle's algorithm the
    # body waited for the client's delayed ACK (~40 ms per request on a kept-open connection)
    disable_nagle_algorithm = True
    server_version = "nbworker"
    timeout = 120  # seconds an idle connection is kept
    server: _HTTPServer

    def setup(self) -> None:
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

    def _send(self, code: int, body: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        app = self.server.app
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise _BadRequest(411, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadRequest(400, "Content-Length is not a number") from None
        if length > app.max_body:
            if length <= DRAIN_LIMIT:  # read it, so the client sees the answer, not a reset
                left = length
                while left > 0 and self.rfile.read(min(left, 1 << 20)):
                    left -= 1 << 20
            raise _BadRequest(
                413, f"the body is {length} bytes; this server takes at most {app.max_body}"
            )
        raw = self.rfile.read(length) if length > 0 else b""
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
        if not isinstance(body, dict):
            raise _BadRequest(400, f"the body must be a JSON object, not {type(body).__name__}")
        if "input" not in body:
            raise _BadRequest(400, 'the body has no "input": send {"input": {...}}')
        if not isinstance(body["input"], dict):
            kind = "null" if body["input"] is None else type(body["input"]).__name__
            raise _BadRequest(400, f'"input" must be a JSON object, not {kind}')
        return body

    def _handle(self, method: str) -> None:
        app = self.server.app
        app._answering.add(self)
        try:
            self._route(method)
        except _BadRequest as err:
            # The body may be left unread (413): the connection cannot be reused.
            self._send(err.code, {"error": str(err)}, close=err.code in (411, 413))
        except ServeError as err:
            self._send(503, {"error": str(err)}, close=True)
        finally:
            app._answering.discard(self)

    def _route(self, method: str) -> None:
        app = self.server.app
        if app._closing:
            raise ServeError("the server is stopping")
        if not app.authorized(self.headers.get("Authorization")):
            # Drain a small body so the connection stays usable; a large one closes it.
            length = self.headers.get("Content-Length", "0")
            if length.isdigit() and 0 < int(length) <= app.max_body:
                self.rfile.read(int(length))
                self._send(401, {"error": "unauthorized: send Authorization: Bearer <token>"})
            else:
                message = {"error": "unauthorized: send Authorization: Bearer <token>"}
                self._send(401, message, close=length != "0")
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        parts = path.lstrip("/").split("/")
        route, job_id = parts[0], "/".join(parts[1:])
        if method == "POST" and route in ("run", "runsync") and not job_id:
            body = self._body()
            if route == "run":
                job = app.submit(body)
                self._send(200, {"id": job.id, "status": IN_QUEUE})
            else:
                self._send(200, app.run_sync(body))
            return
        if method == "POST":  # a body may come with the other routes; it is not used
            length = self.headers.get("Content-Length", "0")
            if length.isdigit() and int(length) > app.max_body:
                raise _BadRequest(413, f"the body is over {app.max_body} bytes")
            if length.isdigit() and int(length):
                self.rfile.read(int(length))
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
    runsync_wait: float = RUNSYNC_WAIT,
) -> Server:
    """Serve `session`'s handler `name` (None: `handler`, else the only one, looked up at
    each job) on `host:port` (0: a free port). A non-loopback host needs a `token`.
    Raises ServeError when the address cannot be used."""
    server = Server(session, name, host, port, token, max_body=max_body, runsync_wait=runsync_wait)
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
