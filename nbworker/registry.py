"""The handlers registered in a session: name, function, kind, options and source."""

from __future__ import annotations

import ast
import inspect
import operator
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from nbworker import checks
from nbworker.errors import HandlerError, HandlerNotFound

__all__ = [
    "DEFAULT_NAME",
    "HandlerSpec",
    "Kind",
    "Registry",
    "concurrency_answer",
    "default_choice",
    "function_name",
    "handler_kind",
]

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
    # RunPod's `concurrency_modifier`: `current -> int`, sizes the worker where given
    concurrency_modifier: Callable[[int], int] | None = None
    source: str | None = None
    cell_id: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def streams(self) -> bool:
        return self.kind in ("generator", "async_generator")


def function_name(function: Callable[..., Any]) -> str | None:
    """The name of a function, or of the one a wrapper object holds: rp_debugger's
    `FunctionTimer` has no `__name__` but keeps the function it times as `.function`, and
    `functools.partial` keeps it as `.func`."""
    seen = 0
    current: Any = function
    while current is not None and seen < 10:
        name = getattr(current, "__name__", None)
        if isinstance(name, str):
            return name
        current = (
            getattr(current, "__wrapped__", None)
            or getattr(current, "function", None)
            or getattr(current, "func", None)
        )
        seen += 1
    return None


def _takes_one_argument(function: Callable[..., Any]) -> bool | None:
    """Whether a plain function takes one positional argument, read off its code (what
    `inspect.signature(function).bind(job)` tells, at a fraction of its cost: it runs on
    every %%handler cell); None for any other callable."""
    if type(function) is not types.FunctionType or hasattr(function, "__wrapped__"):
        return None
    if hasattr(function, "__signature__"):
        return None
    code = function.__code__
    positional = code.co_argcount
    keyword_only = code.co_varnames[positional : positional + code.co_kwonlyargcount]
    keyword_defaults = function.__kwdefaults__ or {}
    if any(argument not in keyword_defaults for argument in keyword_only):
        return False
    required = positional - len(function.__defaults__ or ())
    return required <= 1 and (positional >= 1 or bool(code.co_flags & inspect.CO_VARARGS))


def _check_signature(function: Callable[..., Any], name: str) -> None:
    if _takes_one_argument(function):
        return
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


def concurrency_answer(value: Any) -> tuple[int | None, str]:
    """A concurrency modifier's answer as the SDK's JobScaler can use it (any integer,
    numpy's too, not a bool), or None and what is wrong with it, deployed."""
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            pass
        else:
            if number >= 1:
                return number, ""
            return None, f"returned {value!r}: deployed, the worker would take no jobs"
    return None, f"returned {value!r}, not a whole number: deployed, this stops the worker"


def _check_modifier(modifier: Callable[..., Any], concurrency: int, name: str) -> None:
    """A concurrency modifier must take the current concurrency and return a whole number
    >= 1: the SDK's JobScaler calls it with 1 at start and before each take of jobs, and
    deployed, one that raises or returns anything else stops the worker (or, below 1,
    takes no jobs). So it is called once here, as the SDK first calls it."""
    label = function_name(modifier) or repr(modifier)
    if not callable(modifier):
        raise HandlerError(f"concurrency_modifier {label} is not callable", name=name)
    if concurrency != 1:
        raise HandlerError(
            f"concurrency {concurrency} and concurrency_modifier {label} both size the worker: "
            "keep one",
            name=name,
        )
    try:
        signature: inspect.Signature | None = inspect.signature(modifier)
    except (TypeError, ValueError):  # some builtins and C callables have none
        signature = None
    try:
        if signature is not None:
            signature.bind(1)
    except TypeError:
        raise HandlerError(
            f"concurrency_modifier {label}{signature} cannot take one argument: RunPod calls "
            f"{label}(current_concurrency)",
            name=name,
        ) from None
    try:
        value = modifier(1)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # sys.exit() too: deployed, it ends the worker
        raise HandlerError(
            f"concurrency_modifier {label}(1) raised {type(err).__name__}: {err}: deployed, "
            "this stops the worker",
            name=name,
        ) from None
    if inspect.iscoroutine(value):  # the SDK calls it without awaiting
        value.close()
    number, problem = concurrency_answer(value)
    if number is None:
        raise HandlerError(
            f"concurrency_modifier {label}(1) {problem}; return a whole number >= 1, the jobs "
            "to run at once",
            name=name,
        )


def default_choice(names: Iterable[str]) -> str | None:
    """The one rule for a handler nobody named: the one named `handler`, else the only one;
    None when neither (the registry's default, export's and a `%%handler` cell's)."""
    names = list(names)
    if DEFAULT_NAME in names:
        return DEFAULT_NAME
    return names[0] if len(names) == 1 else None


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
        concurrency_modifier: Callable[[int], int] | None = None,
        source: str | None = None,
        cell_id: str | None = None,
        definition: ast.AST | None = None,
    ) -> HandlerSpec:
        """Register `function` under `name` (default: its own name), replacing any before.
        `concurrency_modifier` (RunPod's) replaces a fixed `concurrency`. `definition` is
        the syntax tree of the function's `def` where the caller has parsed it from
        `source` (a %%handler cell): the checks then read it rather than the function's
        source."""
        if not callable(function):
            raise HandlerError(f"{name or function!r} is not callable", name=name)
        name = name or function_name(function)
        if not name or not name.isidentifier():
            raise HandlerError(
                f"cannot register {function!r} without a name: pass name='...'", name=name
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise HandlerError(
                f"concurrency must be a whole number >= 1, not {concurrency!r}", name=name
            )
        _check_signature(function, name)
        if concurrency_modifier is not None:
            _check_modifier(concurrency_modifier, concurrency, name)
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
            concurrency_modifier=concurrency_modifier,
            source=source,
            cell_id=cell_id,
            warnings=tuple(
                checks.registration_warnings(
                    function, name=name, kind=kind, definition=definition, source=source
                )
            ),
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
        chosen = default_choice(handlers)
        if chosen is not None:
            return handlers[chosen]
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
