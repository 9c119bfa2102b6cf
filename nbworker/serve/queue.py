"""The jobs of `%rp_serve` and the worker threads that run them; nothing of HTTP here.

This is the part of the server whose locks and threads decide whether a job is lost, run
twice or left hanging, so it stands alone: `http.py` parses and checks requests and calls
`JobQueue`'s methods (`submit`, `run_sync`, `status`, `stream`, `cancel`, `health`), and
this module knows nothing of how they came. What a job holds and how its answers read is
`job.py`'s.

Each job is run by `JobRunner.run`, the code `%rp_test` uses, so it gets RunPod's envelope
(errors, `refresh_worker`, streams) exactly as in a notebook run. The handler is looked up by
name when each job starts, so re-running its `%%handler` cell changes what new jobs run,
without a restart. Jobs run on worker threads, at most the handler's `concurrency` at once
(read at each dispatch); the others wait in a FIFO queue. Each worker thread has a runner
(and so an event loop for async handlers) of its own. A /runsync job that finds a free slot
and no job waiting runs on its request's own thread instead (`run_sync`; inline.py): it
counts against the same limit, and is cancelled and timed out the same way.

How many run at once (`concurrency`, or a `concurrency_modifier`'s answers, as the SDK's
JobScaler takes them) is `sizing.py`'s: the one rule here that the SDK defines.

While a job runs, `/status` answers with its latest `runpod.serverless.progress_update`
value as `output`, as a deployed endpoint does.

Cancelling a running job: the job is marked CANCELLED at once and whatever it produces later
is discarded; the worker thread also gets an asynchronous `KeyboardInterrupt` (the mechanism
`jobs.py` uses for timeouts off the main thread, as signals cannot be used there), which
stops Python code at once but a blocking call (sleep, I/O, a GPU kernel) only when it returns.
One that has not landed when the job ends lands and is dropped then (`job.settle`).
A job body may carry RunPod's `policy.executionTimeout` (milliseconds): past it the job is
TIMED_OUT, by the same mechanism.

The queue is bounded (MAX_QUEUED jobs, MAX_QUEUED_BYTES of bodies: `QueueFull`, HTTP 429).
Finished jobs are kept for /status, the newest `keep_finished` of them (KEEP_FINISHED); the
oldest are forgotten in the order they finished, at O(1) a job; a queued or running job is
never forgotten.
A handler that exits or raises any BaseException, or an exception sent to a worker thread
from outside, fails that job only: the worker serves on, and a thread that ends anyway is
replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from nbworker.errors import NbworkerError, QueueFull, ServeError
from nbworker.jobs import JobRunner
from nbworker.record import FINAL_STATUSES
from nbworker.registry import HandlerSpec
from nbworker.serve.inline import Slots
from nbworker.serve.job import (
    IN_PROGRESS,
    IN_QUEUE,
    Job,
    JobIds,
    Worker,
    execution_timeout,
    not_found,
    run_job,
    settle,
    stray_error,
    stream_view,
    view,
)
from nbworker.serve.sizing import Sizing
from nbworker.session import Session

__all__ = ["JobQueue", "Worker"]

# Jobs waiting, at most (answered 429, which clients retry), and the bytes of their bodies:
# a flood of /run must not fill the kernel's memory.
MAX_QUEUED = 10_000
MAX_QUEUED_BYTES = 1024 * 1024 * 1024
RUNSYNC_WAIT = 90.0  # seconds /runsync waits before answering with the job's status, as RunPod
KEEP_FINISHED = 10_000  # finished jobs remembered for /status; the oldest are forgotten

# The name users and tests filter on; the package's modules share it.
log = logging.getLogger("nbworker.serve")


class JobQueue:
    """The jobs of one server and the worker threads that run them: `session`'s handler
    `name` (None: the default handler), looked up as each job starts. `port` is the
    server's, in the worker threads' names."""

    def __init__(
        self,
        session: Session,
        name: str | None,
        *,
        max_queued: int = MAX_QUEUED,
        runsync_wait: float = RUNSYNC_WAIT,
        keep_finished: int = KEEP_FINISHED,
    ) -> None:
        self.session, self.name = session, name
        self.max_queued, self.runsync_wait = max_queued, runsync_wait
        self.keep_finished = keep_finished
        self.port = 0
        # The server lock guards the queue and dispatch only. Requests and the end of a job
        # do not take it (job status, counts and the HTTP side's sets are read and changed by
        # atomic operations): in a busy process a contended lock costs the waiter a GIL
        # hand-over (5 ms and more), and with 32 clients polling in the kernel's own process,
        # jobs took 15-40 ms each instead of 40 µs.
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._ids = JobIds()
        # The ids of finished jobs in the order they finished, to forget the oldest: appended
        # wherever a job ends (deque.append is atomic), popped under the server lock.
        self._finished: deque[str] = deque()
        self._waiting: deque[Job] = deque()  # the jobs no worker took yet, first in first out
        self._queued_bytes = 0
        self._workers: list[Worker] = []
        self._sleeping: list[Worker] = []  # workers waiting for a job (under the lock)
        self._inline = Slots()  # the slots of /runsync jobs run on request threads
        self._retired = [0, 0]  # completed and failed jobs of worker threads that ended
        self._started = 0  # worker threads started, for their names
        self.closing = False
        self._sizing = Sizing()  # changed under the lock

    def start(self) -> None:
        """Ask the concurrency modifier once, as the JobScaler does before its first take."""
        self._resize(self._sizing.ask(self._spec()))

    # ------------------------------------------------------------- sizing

    def _spec(self) -> HandlerSpec | None:
        try:
            return self.session.registry.get(self.name)
        except NbworkerError:
            return None

    @property
    def concurrency(self) -> int:
        """The jobs run at once for the handler (with a concurrency modifier, its latest
        answer)."""
        return self._sizing.concurrency(self._spec())

    def _resize(self, wanted: int | None) -> None:
        with self._lock:
            self._resize_locked(wanted)

    def _resize_locked(self, wanted: int | None = None) -> None:
        """Take the modifier's latest answer (the server lock held); a new size applies once
        no job runs, and the workers it needs start then."""
        sizing = self._sizing
        if wanted is not None:
            sizing.wanted = wanted
        if sizing.wanted != sizing.size and self._running() == 0:
            sizing.size = sizing.wanted
            if self._waiting:
                self._spawn_locked()
            self._wake_locked(len(self._sleeping))

    # ------------------------------------------------------------- workers

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
        limit = self._sizing.limit(self._spec())
        while len(self._workers) < limit:
            worker = Worker()
            worker.thread = threading.Thread(
                target=self._work_loop,
                args=(worker,),
                name=f"nbworker-job-{self.port}-{self._started}",
                daemon=True,
            )
            self._started += 1
            self._workers.append(worker)
            worker.thread.start()

    def _bury_locked(self, worker: Worker, err: BaseException | None) -> None:
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
            self._settle(job, "FAILED", {"error": error}, worker, here=False)
        self._retired[0] += worker.completed
        self._retired[1] += worker.failed

    def _running(self) -> int:
        return sum(worker.busy for worker in self._workers) + self._inline.busy()

    def _work_loop(self, worker: Worker) -> None:
        """Take jobs and run them until the server stops. Nothing a job raises, and no
        exception delivered to this thread from outside, ends the loop while the server
        counts this worker; a thread that ends anyway is replaced (`_retire`)."""
        runner = JobRunner()
        error: BaseException | None = None
        try:
            while not self.closing:
                try:
                    self._work_once(worker, runner)
                except BaseException as err:  # an exit or interrupt sent to this thread
                    job = worker.job
                    if job is not None:  # a cancel's interrupt leaves it CANCELLED
                        self._settle(job, "FAILED", {"error": stray_error(err)}, worker)
                    worker.job = None
        except BaseException as err:  # one more, while handling the first: the thread ends
            error = err
        finally:
            runner.close()
            self._retire(worker, error)

    def _work_once(self, worker: Worker, runner: JobRunner) -> None:
        """Run the next job, or sleep until woken."""
        wanted = self._sizing.ask(self._spec())  # user code: outside the lock
        worker.wake.acquire(blocking=False)  # armed: a wake from now on releases it
        # The C lock: its __exit__ runs no Python code, so a cancel's interrupt cannot land
        # between taking the job and releasing.
        with self._lock:
            self._resize_locked(wanted)
            job = self._take_locked(worker)
            sleep = job is None and not self.closing
            if sleep and worker not in self._sleeping:
                self._sleeping.append(worker)
        if sleep:
            worker.wake.acquire()  # until a submit, a resize or stop() releases it
        elif job is not None:
            self._execute(job, runner, worker)  # clears `worker.busy`

    def _take_locked(self, worker: Worker) -> Job | None:
        """The next job for `worker`, now marked as running on it (the server lock held).
        Each step leaves a consistent state should an exception cut it short: the job
        leaves the queue last, and a job settled meanwhile is skipped."""
        queue = self._waiting
        while queue and queue[0].status in FINAL_STATUSES:
            self._queued_bytes -= queue.popleft().size
        if self.closing or not queue or self._running() >= self._sizing.limit(self._spec()):
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

    def _retire(self, worker: Worker, error: BaseException | None) -> None:
        """A worker thread ends: at stop(), nothing to do; otherwise it is forgotten, its job
        fails and a new thread takes its place."""
        if self.closing:
            return
        with self._lock:
            self._bury_locked(worker, error)
            if not self.closing:
                self._spawn_locked()
        if error is not None:
            log.warning("%%rp_serve: a worker thread ended (%r); a new one serves on", error)

    # ------------------------------------------------------------- a job's run and end

    def _execute(self, job: Job, runner: JobRunner, worker: Worker) -> None:
        result: dict[str, Any] | None = None
        status = "FAILED"
        try:
            spec = self.session.registry.get(self.name)
            job.spec = spec
            status, result, run = run_job(job, spec, runner)
            self.session.history.append(run)
        except NbworkerError as err:  # no handler to run
            status, result = "FAILED", {"error": str(err)}
        except BaseException as err:  # nbworker's fault, or an exit or interrupt sent to this
            # thread past the runner's reach: the job fails (a cancelled one stays CANCELLED)
            status, result = "FAILED", {"error": stray_error(err)}
        finally:
            self._settle(job, status, result, worker)

    def _settle(
        self,
        job: Job,
        status: str,
        result: dict[str, Any] | None,
        worker: Worker,
        *,
        here: bool = True,
    ) -> None:
        """Record how `job` ended and free its worker (see `job.settle`)."""
        settle(job, status, result, worker, self._finished, here=here)

    # ------------------------------------------------------------- what requests call

    def submit(self, body: dict[str, Any], *, prefix: str = "", size: int = 0) -> Job:
        """Queue a job made of a request body (already checked) of `size` bytes. Raises
        QueueFull when the queue holds `max_queued` jobs or MAX_QUEUED_BYTES of bodies."""
        job = self._job(body, prefix, size)
        wanted = self._sizing.ask(self._spec())  # user code: outside the lock
        with self._lock:
            self._admit_locked(job, wanted)
            self._queue_locked(job)
        return job

    def run_sync(
        self,
        body: dict[str, Any],
        *,
        size: int = 0,
        started: Callable[[Job], None] | None = None,
    ) -> dict[str, Any]:
        """/runsync: run a job and answer with its end, or with its status after
        `runsync_wait` seconds. With a free slot and no job waiting (first come, first
        served), the job runs on this thread, to its end (`started(job)` first: the caller
        answers at the wait's end, see inline.py); else it is queued for a worker."""
        job = self._job(body, "sync-", size)
        spec = self._spec()
        wanted = self._sizing.ask(spec)  # user code: outside the lock
        worker: Worker | None = None
        try:
            with self._lock:
                self._admit_locked(job, wanted)
                worker = self._inline_slot_locked(job, spec)
                if worker is None:
                    self._queue_locked(job)
            if worker is not None:
                if started is not None:
                    started(job)
                assert worker.runner is not None
                self._execute(job, worker.runner, worker)
        except BaseException as err:  # once the job holds a slot here: a cancel's interrupt
            if worker is None:  # landing past the runner's reach, which fails the job only
                raise
            self._end_here(job, worker, err)
        finally:
            if worker is not None:
                self._free_here(worker)
        if worker is None:
            job.done.wait(self.runsync_wait)
        return view(job)

    def _job(self, body: dict[str, Any], prefix: str, size: int) -> Job:
        job_id = f"{prefix}{self._ids.next()}"
        payload = {"id": job_id, "input": body["input"]}
        if "webhook" in body:  # handed to the handler as the SDK does; nothing is fetched
            payload["webhook"] = body["webhook"]
        return Job(job_id, payload, execution_timeout(body.get("policy")), size)

    def _admit_locked(self, job: Job, wanted: int | None) -> None:
        """Take `job` in (the server lock held), forgetting the oldest finished jobs past
        `keep_finished`; ServeError when stopping, QueueFull when the queue is full."""
        if self.closing:
            raise ServeError("the server is stopping")
        waiting = self._waiting
        if len(waiting) >= self.max_queued or (
            waiting and self._queued_bytes + job.size > MAX_QUEUED_BYTES
        ):
            raise QueueFull(
                f"{len(waiting)} jobs ({self._queued_bytes:,} bytes) wait already: try again later"
            )
        self._jobs[job.id] = job
        finished, jobs = self._finished, self._jobs
        while len(finished) > self.keep_finished:
            jobs.pop(finished.popleft(), None)
        self._resize_locked(wanted)

    def _queue_locked(self, job: Job) -> None:
        """Queue an admitted job for the worker threads (the server lock held)."""
        self._waiting.append(job)
        self._queued_bytes += job.size
        self._spawn_locked()
        self._wake_locked()

    def _inline_slot_locked(self, job: Job, spec: HandlerSpec | None) -> Worker | None:
        """A slot for `job` on the calling thread, the job marked as running in it (the
        server lock held); None when the job must queue: a job waits (it goes first), all
        slots are taken, or a new size waits for the running jobs to end."""
        if self._waiting or self._running() >= self._sizing.limit(spec):
            return None
        worker = self._inline.take()
        worker.job = job
        job.thread_id = threading.get_ident()
        job.status = IN_PROGRESS
        worker.busy = True
        return worker

    def _end_here(self, job: Job, worker: Worker, err: BaseException) -> None:
        """Fail a job run on this request thread with what reached it outside the runner
        (a cancelled one stays CANCELLED), as a worker thread would."""
        try:
            self._settle(job, "FAILED", {"error": stray_error(err)}, worker)
        except BaseException as again:  # one more, while settling: as a worker thread's end
            error = f"nbworker: the job's thread was interrupted ({type(again).__name__})"
            self._settle(job, "FAILED", {"error": error}, worker, here=False)

    def _free_here(self, worker: Worker) -> None:
        """Give back a request thread's slot; a queued job may take it."""
        self._inline.give(worker)
        if self._waiting or self.closing:
            with self._lock:
                self._resize_locked()
                self._wake_locked()
                if self.closing:
                    self._inline.close_idle()

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return not_found(job_id)
            if job.status not in FINAL_STATUSES:
                self._cancel_locked(job)
            return {"id": job.id, "status": job.status}

    def _cancel_locked(self, job: Job) -> None:
        """Cancel `job` (the server lock held: a queued job cannot start meanwhile)."""
        if job.status == IN_QUEUE:
            self._waiting.remove(job)
            self._queued_bytes -= job.size
            job.status = "CANCELLED"
            self._finished.append(job.id)
            job.done.set()
            return
        with job.lock:
            if job.status in FINAL_STATUSES:  # it ended meanwhile
                return
            job.result = None
            job.status = "CANCELLED"
            self._finished.append(job.id)
            job.done.set()
            if job.thread_id is not None:
                job.interrupted = True  # before it can land: the settle absorbs it
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(job.thread_id), ctypes.py_object(KeyboardInterrupt)
                )

    def status(self, job_id: str) -> dict[str, Any]:
        # Without the lock: the dict lookup is atomic and `view` reads the status before
        # the result, which is always set first.
        job = self._jobs.get(job_id)
        return not_found(job_id) if job is None else view(job)

    def stream(self, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(job_id)  # without the server lock, as `status()`
        if job is None:
            return not_found(job_id)
        spec = job.spec
        if spec is None:  # not started: the handler it would run now
            try:
                spec = self.session.registry.get(self.name)
            except NbworkerError as err:
                return {"id": job_id, "status": "FAILED", "error": str(err)}
        return stream_view(job, spec)

    def health(self) -> dict[str, Any]:
        workers = [*self._workers, *self._inline.all]
        running = sum(worker.busy for worker in workers)
        completed, failed = self._retired
        return {
            "jobs": {
                "completed": completed + sum(worker.completed for worker in workers),
                "failed": failed + sum(worker.failed for worker in workers),
                "inProgress": running,
                "inQueue": len(self._waiting),
                "retried": 0,  # a local server never retries a job
            },
            "workers": {
                "idle": max(self._sizing.limit(self._spec()) - running, 0),
                "running": running,
            },
        }

    # ------------------------------------------------------------- shutdown

    def close(self) -> bool:
        """Take no more jobs: cancel the queued ones and wake the sleeping workers, which
        end. False when it was closed already."""
        with self._lock:
            if self.closing:
                return False
            self.closing = True
            while self._waiting:
                self._cancel_locked(self._waiting[0])
            self._wake_locked(len(self._sleeping))
        return True

    def finish(self, grace: float) -> None:
        """After `close()`: let running jobs finish for up to `grace` seconds, cancel the
        rest and join the worker threads."""
        deadline = time.monotonic() + grace
        threads = [worker.thread for worker in self._workers if worker.thread is not None]
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        for worker in list(self._inline.all):  # /runsync jobs running on request threads
            job = worker.job
            if job is not None:
                job.done.wait(max(deadline - time.monotonic(), 0))
        with self._lock:
            for job in self._jobs.values():
                if job.status in (IN_QUEUE, IN_PROGRESS):
                    self._cancel_locked(job)
            self._inline.close_idle()
        for thread in threads:
            thread.join(0.5)
