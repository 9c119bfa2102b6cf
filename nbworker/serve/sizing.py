"""How many jobs `%rp_serve` runs at once for a handler: its `concurrency`, or the answers of
its `concurrency_modifier`, taken as the SDK's JobScaler takes them.

Apart from the queue because this is the one rule here that the SDK defines (and the one
part of the queue that calls user code): keeping it in one place keeps it checkable against
the JobScaler. A handler with a modifier starts at size 1; before each take of jobs (at
start, at each submit, and each time a worker is free) the modifier is called with the
current size; a new answer applies once no job runs (the JobScaler resizes only when idle),
and no job starts while it waits. Deployed, a modifier that raises or returns something
other than a whole number stops the worker; here one line is logged and the size is kept.
"""

from __future__ import annotations

import logging

from nbworker.registry import HandlerSpec, concurrency_answer

__all__ = ["MAX_WORKERS", "Sizing"]

# Jobs run at once, at most: each has a thread here (deployed, an asyncio task), and workers
# ask for hundreds (MAX_CONCURRENCY=300 is common for LLM servers).
MAX_WORKERS = 128

# The name users and tests filter on; the package's modules share it.
log = logging.getLogger("nbworker.serve")


class Sizing:
    """A server's size: `size`, the modifier's answer in use (the JobScaler starts at 1), and
    `wanted`, its latest, which becomes the size once no job runs. The queue changes both
    under its lock."""

    def __init__(self) -> None:
        self.size = self.wanted = 1
        self._problem: str | None = None  # the last one logged, not repeated
        self._capped = False  # whether the MAX_WORKERS cap was logged

    def limit(self, spec: HandlerSpec | None) -> int:
        """Jobs that may run at once now: the handler's concurrency, or its modifier's
        answer in use (0 while a new answer waits for the running jobs to end)."""
        if spec is None:
            return 1
        if spec.concurrency_modifier is None:
            wanted = spec.concurrency
        elif self.wanted != self.size:
            return 0
        else:
            wanted = self.size
        if wanted > MAX_WORKERS and not self._capped:
            self._capped = True
            log.warning(
                "%%rp_serve: concurrency %d asked; serving at most %d jobs at once (a thread "
                "each; deployed, the SDK runs them as asyncio tasks)",
                wanted,
                MAX_WORKERS,
            )
        return min(wanted, MAX_WORKERS)

    def concurrency(self, spec: HandlerSpec | None) -> int:
        """The jobs run at once for the handler (with a concurrency modifier, its latest
        answer)."""
        if spec is None:
            return 1
        return spec.concurrency if spec.concurrency_modifier is None else self.wanted

    def ask(self, spec: HandlerSpec | None) -> int | None:
        """The handler's concurrency modifier called with the current size, as the SDK's
        JobScaler calls it before each take of jobs (not while a resize waits); None when
        there is none, or it failed (logged once: deployed, that stops the worker)."""
        modifier = spec.concurrency_modifier if spec is not None else None
        if modifier is None or self.wanted != self.size:
            return None
        current = self.size
        try:
            value = modifier(current)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # user code: nothing it raises stops the server
            problem = f"raised {type(err).__name__}: {err}: deployed, this stops the worker"
        else:
            number, problem = concurrency_answer(value)
            if number is not None:
                self._problem = None
                return number
        if problem != self._problem:
            self._problem = problem
            log.warning(
                "%%rp_serve: concurrency_modifier(%d) %s; keeping concurrency %d",
                current,
                problem,
                current,
            )
        return None
