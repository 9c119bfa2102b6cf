"""A /runsync job run on its request's own thread: its slot, and how long it is waited for.

A /runsync job that finds a free slot and no job waiting runs on the thread that read its
request (`JobQueue.run_sync`): handing it to a worker thread and back costs two thread
switches, each a GIL hand-over in the kernel's process, more than a small job. Its slot is
a `Worker` from `Slots`, with a runner of its own (an event loop for async handlers), made
as needed and reused.

RunPod answers a /runsync whose job runs past its wait (90 s; RUNSYNC_WAIT) with the job's
status, and the client polls /status from then on. A job queued for a worker gets that
from `JobQueue.run_sync`, which stops waiting then; a job on its request's thread holds
that thread until it ends, so its answer is a `Pending`, claimed by whichever comes first:
the request's thread when the job ends, or the server's `Waits` thread when the wait is
over, which sends the job's status and closes the connection. That thread starts with the
first such job, wakes once a second at most while none is near its end, and watches only
the jobs running on request threads (at most the handler's concurrency).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from nbworker.jobs import JobRunner
from nbworker.serve.job import Job, Worker, view

__all__ = ["Pending", "Slots", "Waits"]


class Slots:
    """The slots of jobs run on request threads: `all` of them (their figures count in
    /health), `take` one (under the server lock), `give` it back, `close_idle` at stop."""

    def __init__(self) -> None:
        self.all: list[Worker] = []
        self._idle: list[Worker] = []  # popped under the server lock, appended by any thread

    def busy(self) -> int:
        return sum(worker.busy for worker in self.all)

    def take(self) -> Worker:
        if self._idle:
            return self._idle.pop()
        worker = Worker(runner=JobRunner())
        self.all.append(worker)
        return worker

    def give(self, worker: Worker) -> None:
        self._idle.append(worker)  # atomic

    def close_idle(self) -> None:
        """Close the runners of the free slots (the server lock held, once stopping)."""
        while self._idle:
            runner = self._idle.pop().runner
            if runner is not None:
                runner.close()


class Pending:
    """The answer to one /runsync request whose job runs on its thread: `send(view)` writes
    the job's status (closing the connection), `claim()` is True for the first caller."""

    __slots__ = ("_claimed", "deadline", "job", "send")

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send
        self.job: Job | None = None
        self.deadline = 0.0
        self._claimed = threading.Lock()

    def claim(self) -> bool:
        return self._claimed.acquire(blocking=False)


class Waits:
    """The /runsync requests of one server whose jobs run on their threads, each answered
    with its job's status once `wait()` seconds have passed if the job has not ended."""

    def __init__(self, wait: Callable[[], float], name: str) -> None:
        self._wait, self._name = wait, name
        self._pending: set[Pending] = set()  # changed by request threads: atomic set ops
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = threading.Event()

    def started(self, pending: Pending, job: Job) -> None:
        """`job` starts on the request's thread (called on it): watch it from now on."""
        pending.job, pending.deadline = job, time.monotonic() + self._wait()
        self._pending.add(pending)
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stopped.is_set():
                    self._thread = threading.Thread(
                        target=self._watch, name=self._name, daemon=True
                    )
                    self._thread.start()

    def ended(self, pending: Pending) -> bool:
        """The job ended (called on the request's thread): True if this thread answers."""
        self._pending.discard(pending)
        return pending.claim()

    def _watch(self) -> None:
        while not self._stopped.is_set():
            now = time.monotonic()
            soonest = now + 1.0
            for pending in list(self._pending):
                if pending.deadline > now:
                    soonest = min(soonest, pending.deadline)
                    continue
                self._pending.discard(pending)
                if pending.job is not None and pending.claim():
                    pending.send(view(pending.job))
            self._stopped.wait(max(soonest - now, 0.001))

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(2)
