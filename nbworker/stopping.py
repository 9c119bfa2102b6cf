"""Stopping a handler whose time is up, on any thread, even in a pure-Python loop.

On the main thread a SIGALRM timer raises `JobTimeout` in the handler (it interrupts
blocking sleeps too); a watchdog thread is the backstop for a handler that ignored or took
over SIGALRM, and the only means on other threads (`%rp_serve`'s workers), where it raises
the exception asynchronously with `PyThreadState_SetAsyncExc`.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["NO_LIMIT", "JobTimeout", "deadline", "watchdog"]


class JobTimeout(BaseException):
    """Raised inside a handler whose time is up. A BaseException, so `except Exception`
    in user code does not swallow it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "the job's time was up"


# A longer limit is no limit: setitimer cannot take 1e300, nor a watchdog wait inf.
NO_LIMIT = 1e8  # seconds, over three years
# How long after the deadline the watchdog stops a main-thread handler whose SIGALRM never
# came (it set SIGALRM to SIG_IGN, blocked it, or took the signal over).
_BACKSTOP = 1.0


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise JobTimeout in this thread after `seconds`.

    On the main thread a SIGALRM timer interrupts pure-Python loops and blocking sleeps
    alike, with the watchdog below as a backstop. Elsewhere a watchdog thread sets an
    asynchronous exception, which interrupts Python code but not a blocking call until it
    returns.
    """
    if not seconds or seconds >= NO_LIMIT:
        yield
        return
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        with watchdog(seconds):
            yield
        return
    armed = True

    def on_alarm(signum: int, frame: Any) -> None:
        if armed:
            raise JobTimeout(f"the job's {seconds:g} s were up")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with watchdog(seconds + _BACKSTOP):
            yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise JobTimeout in this thread after `seconds`, from a watchdog thread."""
    thread_id = ctypes.c_ulong(threading.get_ident())
    lock = threading.Lock()
    state = {"active": True, "fired": False}
    done = threading.Event()

    def watch() -> None:
        if done.wait(seconds):
            return
        with lock:
            if state["active"]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread_id, ctypes.py_object(JobTimeout))
                state["fired"] = True

    watchdog = threading.Thread(target=watch, name="nbworker-deadline", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            state["active"] = False
            fired = state["fired"]
        done.set()
        if fired:
            _absorb_timeout()


def _absorb_timeout() -> None:
    """Let a JobTimeout the watchdog sent this thread land here, should it not have landed
    yet, and drop it. (Clearing it with `PyThreadState_SetAsyncExc(id, NULL)` instead leaves
    CPython 3.11's eval breaker armed for good: the next call under a profiler or tracer, on
    any thread, spins forever.) A GIL hand-over re-signals a pending asynchronous exception,
    and each call and backward jump checks for one."""
    try:
        time.sleep(0)
        for _ in range(3):
            pass
    except JobTimeout:
        pass
