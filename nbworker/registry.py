"""The handlers registered in a session: name, function, kind, options and source."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from nbworker import checks
from nbworker.errors import HandlerError, HandlerNotFound

__all__ = ["DEFAULT_NAME", "HandlerSpec", "Kind", "Registry", "handler_kind"]

Kind = Literal["sync", "async", "generator", "async_generator"]
DEFAULT_NAME = "handler"


def handler_kind(function: Callable[..., Any]) -> Kind:
    """The kind RunPod sees: it inspects the function it is given and never unwraps it."""
    if inspect.isasyncgenfunction(function):
        return "async_generator"
    if inspect.isgeneratorfunction(function):
        return "generator"
    if inspect.iscoroutinefunction(function):
        return "async"
    return "sync"


@dataclass(frozen=True)
class HandlerSpec:
    """One registered handler and what export and serving need to know of it."""

    name: str
    function: Callable[..., Any]
    kind: Kind
    aggregate: bool = False
    concurrency: int = 1
    source: str | None = None
    cell_id: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def streams(self) -> bool:
        return self.kind in ("generator", "async_generator")


def _check_signature(function: Callable[..., Any], name: str) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return
    try:
        signature.bind(object())
    except TypeError:
        raise HandlerError(
            f"{name}{signature} cannot take one positional argument: RunPod calls {name}(job)",
            name=name,
        ) from None


class Registry:
    """Handlers by name. Safe to read from serving threads while a cell registers.

    Copy-on-write: a change builds a new dict (under a lock, so changes never cross) and
    swaps it in; readers take the current dict without locking, so a served job's lookup
    never waits (a contended lock in a busy process costs a GIL hand-over)."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}
        self._lock = threading.Lock()  # for writers only

    def register(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        aggregate: bool = False,
        concurrency: int = 1,
        source: str | None = None,
        cell_id: str | None = None,
    ) -> HandlerSpec:
        """Register `function` under `name` (default: its own name), replacing any before."""
        if not callable(function):
            raise HandlerError(f"{name or function!r} is not callable", name=name)
        name = name or getattr(function, "__name__", None)
        if not name or not name.isidentifier():
            raise HandlerError(
                f"cannot register {function!r} without a name: pass name='...'", name=name
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise HandlerError(
                f"concurrency must be a whole number >= 1, not {concurrency!r}", name=name
            )
        _check_signature(function, name)
        kind = handler_kind(function)
        if aggregate and kind not in ("generator", "async_generator"):
            raise HandlerError(
                f"--aggregate applies to generator handlers; {name} is {kind}", name=name
            )
        spec = HandlerSpec(
            name=name,
            function=function,
            kind=kind,
            aggregate=aggregate,
            concurrency=concurrency,
            source=source,
            cell_id=cell_id,
            warnings=tuple(checks.registration_warnings(function, name=name, kind=kind)),
        )
        with self._lock:
            self._handlers = {**self._handlers, name: spec}
        return spec

    def unregister(self, name: str) -> None:
        with self._lock:
            if name not in self._handlers:
                raise self._not_found(name, self._handlers)
            self._handlers = {k: v for k, v in self._handlers.items() if k != name}

    def get(self, name: str | None = None) -> HandlerSpec:
        """The handler `name`; without a name, the one named `handler`, else the only one."""
        handlers = self._handlers
        if name is not None:
            if name in handlers:
                return handlers[name]
            raise self._not_found(name, handlers)
        if DEFAULT_NAME in handlers:
            return handlers[DEFAULT_NAME]
        if len(handlers) == 1:
            return next(iter(handlers.values()))
        raise self._not_found(None, handlers)

    @staticmethod
    def _not_found(name: str | None, handlers: dict[str, HandlerSpec]) -> HandlerNotFound:
        available = tuple(sorted(handlers))
        if not available:
            message = (
                "no handler is registered: define one in a %%handler cell "
                "(or call nbworker.register_handler)"
            )
        elif name is None:
            message = (
                f"{len(available)} handlers are registered ({', '.join(available)}) and none is "
                f"named {DEFAULT_NAME!r}: say which one to run"
            )
        else:
            message = f"no handler named {name!r}; registered: {', '.join(available)}"
        return HandlerNotFound(message, name=name, available=available)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(list(self._handlers.values()))

    def __len__(self) -> int:
        return len(self._handlers)
