"""What the runpod SDK keeps for the whole process, handled around each job as a deployed
worker handles it.

A deployed worker is one process running one job loop; a kernel runs many jobs, and the
SDK's process-wide state would leak from one to the next or reach for a platform that is
not there. Four pieces of it matter to real workers:

- `rp_debugger`: `FunctionTimer` / `LineTimer` add named checkpoints to one process-wide
  `Checkpoints`; a second checkpoint of a name raises `KeyError`. The deployed loop
  (`rp_job.handle_job`) clears them after every job: so do we (`after_job`).
- `progress_update(job, value)`: deployed, it posts `{"status": "IN_PROGRESS", "output":
  value}`; in a kernel there is no platform, so the SDK logs a failed send. We route each
  update to the run of that job instead (`progress_route`).
- prestart hooks (runpod 2.0, `register_prestart_hook`): run once before the first job,
  by the SDK's own `run_prestart_phase`, so the failure payload is the SDK's (`Prestart`).
- `RUNPOD_LOG_CAPTURE=all` (runpod 2.0): the last 16 KiB of what the handler printed join
  a failure's error (`log_capture`), through the SDK's own tee.

Nothing here imports runpod unless the user's code already has (or asked for log capture):
`import runpod` costs 1.6 s under 1.12. This module's state mirrors the SDK's, which is
per process, so it is per process too: one `_Routes` and one `Prestart`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PRESTART",
    "Prestart",
    "after_job",
    "log_capture",
    "log_capture_enabled",
    "prepare",
    "progress_route",
    "sdk_major",
]

DEBUGGER_MODULE = "runpod.serverless.utils.rp_debugger"
PROGRESS_MODULE = "runpod.serverless.modules.rp_progress"
PRESTART_MODULE = "runpod.serverless.modules.rp_prestart"
SERVERLESS_MODULE = "runpod.serverless"


@functools.cache
def sdk_major() -> int | None:
    """The installed runpod SDK's major version (read from its metadata, not imported)."""
    from importlib import metadata

    try:
        return int(metadata.version("runpod").split(".", 1)[0])
    except (metadata.PackageNotFoundError, ValueError):
        return None


# --------------------------------------------------------------------------- rp_debugger


def after_job() -> None:
    """Clear rp_debugger's checkpoints, as `handle_job` does after every deployed job."""
    debugger = sys.modules.get(DEBUGGER_MODULE)
    if debugger is None:
        return
    checkpoints = getattr(debugger, "Checkpoints", None)
    if checkpoints is not None:  # what clear_debugger_output() does, without its print
        checkpoints().clear()


DEBUGGER_KEY_MESSAGE = "already exists"


def debugger_warning(err: BaseException) -> str | None:
    """Why an rp_debugger checkpoint clash happened, when it did."""
    if not (isinstance(err, KeyError) and DEBUGGER_KEY_MESSAGE in str(err)):
        return None
    if sys.modules.get(DEBUGGER_MODULE) is None:
        return None
    return (
        "rp_debugger already held this checkpoint when the job started: code outside a job "
        "(a direct call in a cell, a warm-up at start-up) ran a FunctionTimer / LineTimer of "
        "that name. A deployed worker fails its first job the same way; nbworker, like the "
        "deployed job loop, clears rp_debugger after every job."
    )


# --------------------------------------------------------------------------- progress

ProgressCallback = Callable[[Any], None]


@dataclass(eq=False)
class _Route:
    """A run's claim on the progress updates of its job: a context manager (a class, not
    a generator: it is entered on every job)."""

    job: Any  # the job dict the handler was given
    thread: int  # the thread running the handler
    callback: ProgressCallback

    def __enter__(self) -> None:
        _ROUTES.add(self)

    def __exit__(self, *exc_info: object) -> None:
        _ROUTES.remove(self)


class _Routes:
    """Where `progress_update(job, value)` goes: the run that gave the handler that very
    job dict, else the run on the calling thread; else the SDK's own function. Job ids do
    not decide: every run in a kernel is `local_test` (deployed, each job has an id of its
    own), so a thread of an earlier job must not reach the run of a later one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: tuple[_Route, ...] = ()  # copy-on-write: lookups take no lock
        self._original: Callable[..., Any] | None = None
        self._finder: _PatchOnImport | None = None

    def add(self, route: _Route) -> None:
        with self._lock:
            self._routes = (*self._routes, route)

    def remove(self, route: _Route) -> None:
        with self._lock:
            self._routes = tuple(r for r in self._routes if r is not route)

    def _find(self, job: Any) -> ProgressCallback | None:
        routes = self._routes
        for route in reversed(routes):
            if route.job is job:
                return route.callback
        thread = threading.get_ident()
        for route in reversed(routes):
            if route.thread == thread:
                return route.callback
        return None

    def progress_update(self, job: Any, progress: Any) -> None:
        """What `runpod.serverless.progress_update` does while nbworker is loaded."""
        job["id"]  # as the SDK's first line does: a job that is no job raises here
        callback = self._find(job)
        if callback is not None:
            callback(progress)
        elif self._original is not None:  # no run of ours: the SDK's own (it logs, sends)
            self._original(job, progress)

    def prepare(self) -> None:
        """Take over the SDK's progress_update now if it is imported, else as it is."""
        module = sys.modules.get(PROGRESS_MODULE)
        if module is not None:
            self.patch(module)
        elif self._finder is None:
            with self._lock:
                if self._finder is None:
                    self._finder = _PatchOnImport(self)
                    sys.meta_path.insert(0, self._finder)

    def patch(self, module: Any) -> None:
        """Send the SDK's progress_update here.

        Its code object is swapped for a two-line trampoline, not its module attribute:
        a worker that did `from runpod.serverless import progress_update` holds the
        function itself, and its update must reach the run too, on the calling thread, in
        order, before the run ends (the SDK sends each from a thread of its own)."""
        if getattr(module, _TRAMPOLINE_TARGET, None) is not None:
            return
        with self._lock:
            function = getattr(module, "progress_update", None)
            if getattr(module, _TRAMPOLINE_TARGET, None) is not None or function is None:
                return
            original = types.FunctionType(
                function.__code__,
                function.__globals__,
                function.__name__,
                function.__defaults__,
                function.__closure__,
            )
            self._original = original
            namespace: dict[str, Any] = {}
            exec(_TRAMPOLINE, function.__globals__, namespace)  # compiled in the SDK's module
            setattr(module, _TRAMPOLINE_TARGET, self.progress_update)
            function.__code__ = namespace["progress_update"].__code__


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches the SDK's progress module as it is imported, whenever that is (a handler
    may `import runpod` in its body; runpod 2 imports `runpod.serverless` on first use,
    which may come inside a job), then leaves `sys.meta_path`."""

    def __init__(self, routes: _Routes) -> None:
        self.routes = routes

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != PROGRESS_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, self)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, finder: _PatchOnImport) -> None:
        self.loader, self.finder = loader, finder

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        self.finder.routes.patch(module)
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self.finder)


_TRAMPOLINE_TARGET = "_nbworker_progress_update"
_TRAMPOLINE = f"""
def progress_update(job, progress):
    return {_TRAMPOLINE_TARGET}(job, progress)
"""


_ROUTES = _Routes()


def prepare() -> None:
    """Take over the SDK's progress_update: now if the user's code has imported it, else
    when it does (nothing here imports runpod)."""
    _ROUTES.prepare()


def progress_route(job: Any, callback: ProgressCallback) -> contextlib.AbstractContextManager:
    """While in this context, `progress_update(job, value)` for this job dict (or from this
    thread) reaches `callback(value)`, from whatever thread the handler called it on."""
    return _Route(job, threading.get_ident(), callback)


# --------------------------------------------------------------------------- prestart


class Prestart:
    """runpod 2.0's prestart hooks, run once before the first job that follows their
    registration, by the SDK's own `run_prestart_phase`.

    A hook that fails fails that job and every later one with the SDK's `prestart_failed`
    payload, as a deployed worker fails the jobs it holds before it exits 1; registering a
    hook again (re-running its cell) runs the hooks again before the next job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: tuple[Any, ...] = ()  # the hooks that ran, by identity
        self._failure: dict[str, Any] | None = None

    @staticmethod
    def hooks() -> tuple[Any, ...]:
        module = sys.modules.get(PRESTART_MODULE)
        if module is None:
            return ()
        return tuple(module.get_prestart_hooks())

    def ensure(self, drive: Callable[[Any], Any]) -> dict[str, Any] | None:
        """Run the registered hooks if they have not run; the failure payload or None.
        `drive` runs a coroutine to completion (the runner's private loop)."""
        __tracebackhide__ = True  # an interrupt here shows the hook's frames, not ours
        hooks = self.hooks()
        if not hooks:
            return None
        with self._lock:
            if len(hooks) == len(self._done) and all(
                a is b for a, b in zip(hooks, self._done, strict=True)
            ):
                return self._failure
            module = sys.modules[PRESTART_MODULE]
            try:
                with _tee():
                    failure = drive(module.run_prestart_phase(hooks, None))
            except BaseException as stop:  # a timeout or an interrupt: say where it came
                stop._nbworker_prestart = tuple(_hook_name(hook) for hook in hooks)  # type: ignore[attr-defined]
                raise
            self._done, self._failure = hooks, failure
            return failure


PRESTART = Prestart()


def _hook_name(hook: Any) -> str:
    return getattr(hook, "__name__", type(hook).__name__)


def stopped_in_prestart(stop: BaseException) -> tuple[str, ...] | None:
    """The hooks that were running when `stop` (a timeout, an interrupt) came, if any."""
    return getattr(stop, "_nbworker_prestart", None)


# --------------------------------------------------------------------------- log capture


def log_capture_enabled() -> bool:
    """RUNPOD_LOG_CAPTURE=all under an SDK that has it (runpod 2)."""
    if os.environ.get("RUNPOD_LOG_CAPTURE", "").strip().lower() != "all":
        return False
    return (sdk_major() or 0) >= 2


@contextlib.contextmanager
def _tee() -> Iterator[None]:
    """The SDK's tee on stdout and stderr, installed once and left, as a worker does
    (its capture contexts read what passes through it)."""
    try:
        from runpod.serverless.modules import rp_capture
    except ImportError:  # runpod 1.x: no capture
        yield
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, rp_capture._TeeProxy):
            setattr(sys, name, rp_capture._TeeProxy(stream))
    yield


def _nothing() -> str:
    return ""


_NO_CAPTURE = contextlib.nullcontext(_nothing)


def log_capture() -> contextlib.AbstractContextManager[Callable[[], str]]:
    """Capture the handler's output for a failure's `logs`, as runpod 2's `run_job` does
    under RUNPOD_LOG_CAPTURE=all; gives a function returning what was captured ('' when
    capture is off)."""
    if not log_capture_enabled():
        return _NO_CAPTURE
    return _captured()


@contextlib.contextmanager
def _captured() -> Iterator[Callable[[], str]]:
    from runpod.serverless.modules import rp_capture

    with _tee(), rp_capture.capture() as buffer:
        yield buffer.getvalue
