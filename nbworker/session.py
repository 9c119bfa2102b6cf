"""A session: the registered handlers, the model cache, the runner, the runs. The plain-Python
twins of the magics (`register_handler`, `run_job`) work on the default session, the one the
IPython extension uses; tests and scripts may make sessions of their own."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, overload

from nbworker import display as _display  # noqa: F401  (sets Run.renderer: runs show as cards)
from nbworker.cache import ModelCache, default_cache
from nbworker.jobs import ChunkCallback, JobRunner, ProgressCallback, build_job, parse_job
from nbworker.record import Run
from nbworker.registry import HandlerSpec, Registry, function_name

__all__ = ["Session", "default_session", "register_handler", "run_job"]

Handler = Callable[..., Any]


class Session:
    """Registered handlers, the model cache, the job runner and the recent runs of one
    notebook kernel."""

    def __init__(
        self, *, history: int = 100, budget: int | None = None, cache: ModelCache | None = None
    ) -> None:
        self.registry = Registry()
        self.cache = cache if cache is not None else ModelCache(budget=budget)
        self.runner = JobRunner()
        self.history: deque[Run] = deque(maxlen=history)

    @overload
    def register_handler(
        self,
        function: Handler,
        /,
        *,
        name: str | None = None,
        aggregate: bool = False,
        concurrency: int = 1,
        concurrency_modifier: Callable[[int], int] | None = None,
        source: str | None = None,
        cell_id: str | None = None,
    ) -> HandlerSpec: ...
    @overload
    def register_handler(
        self,
        function: None = None,
        /,
        *,
        name: str | None = None,
        aggregate: bool = False,
        concurrency: int = 1,
        concurrency_modifier: Callable[[int], int] | None = None,
        source: str | None = None,
        cell_id: str | None = None,
    ) -> Callable[[Handler], Handler]: ...

    def register_handler(
        self,
        function: Handler | None = None,
        /,
        *,
        name: str | None = None,
        aggregate: bool = False,
        concurrency: int = 1,
        concurrency_modifier: Callable[[int], int] | None = None,
        source: str | None = None,
        cell_id: str | None = None,
    ) -> Any:
        """Register `function` as a RunPod handler (also usable as a decorator, which
        returns the function unchanged). `concurrency_modifier` is RunPod's `current -> int`
        sizing function, in place of a fixed `concurrency`."""
        options: dict[str, Any] = dict(
            name=name,
            aggregate=aggregate,
            concurrency=concurrency,
            concurrency_modifier=concurrency_modifier,
            source=source,
            cell_id=cell_id,
        )
        if function is None:

            def decorate(function: Handler) -> Handler:
                self.registry.register(function, **options)
                return function

            return decorate
        return self.registry.register(function, **options)

    def run_job(
        self,
        job: dict[str, Any] | str,
        /,
        handler: str | Handler | HandlerSpec | None = None,
        *,
        timeout: float | None = None,
        on_chunk: ChunkCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Run:
        """Run `job` (`{"input": ...}`, a dict or JSON text) with RunPod's semantics.

        `handler` is a registered name, a function (run without registering it), or None
        for the default handler: the one named `handler`, else the only one registered.
        """
        job_dict = parse_job(job) if isinstance(job, str) else build_job(job)
        if isinstance(handler, HandlerSpec):
            spec = handler
        elif handler is None or isinstance(handler, str):
            spec = self.registry.get(handler)
        else:  # a plain function, run as it is without registering it
            name = function_name(handler) or ""
            spec = Registry().register(handler, name=name if name.isidentifier() else "handler")
        run = self.runner.run(
            spec, job_dict, timeout=timeout, on_chunk=on_chunk, on_progress=on_progress
        )
        self.history.append(run)
        return run

    def close(self) -> None:
        self.runner.close()


_default: Session | None = None


def default_session() -> Session:
    """The session of this process, shared by the magics and the functions below."""
    global _default
    if _default is None:  # its cache is the one `nbworker.cache.load` and friends use
        _default = Session(cache=default_cache())
    return _default


def register_handler(function: Handler | None = None, /, **options: Any) -> Any:
    """Register a handler in the default session; see `Session.register_handler`."""
    return default_session().register_handler(function, **options)


def run_job(
    job: dict[str, Any] | str,
    /,
    handler: str | Handler | HandlerSpec | None = None,
    **options: Any,
) -> Run:
    """Run a job in the default session; see `Session.run_job`."""
    return default_session().run_job(job, handler, **options)
