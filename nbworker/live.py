"""The live view of a run in progress: shown from the run's start, refreshed on a timer,
turned in place into the run's result when it ends.

A `LiveRun` shows its handler, the time since the run started (ticking), the chunks so far
and the last `progress_update` (a bar when it says how far). Nothing is drawn on the
handler's thread: `chunk` and `progress` only note what came, and a `Ticker` thread
redraws every TICK_SECONDS, so a run makes at most 1 / TICK_SECONDS updates a second
whatever it yields, and a burst of chunks followed by a pause is on screen within one
tick. A run that ends before its first tick opens no view at all: its result is its only
display, so a quick run costs what it did without a live view.

The ticks run in a copy of the context of the thread that made the LiveRun: ipykernel
keeps the parent message of a cell in context variables, and that copy is how a display
made on the ticker's thread lands in the cell that runs the job.

Nothing here imports IPython; `open_view` is how a view reaches the screen.
"""

from __future__ import annotations

import contextvars
import html
import threading
import time
from collections.abc import Callable
from typing import Any

from nbworker.display import (
    MARKS,
    card_open,
    chunks_view,
    duration,
    plural,
    progress_html,
    progress_line,
    status_color,
)
from nbworker.record import scrub

__all__ = ["TICK_SECONDS", "LiveRun", "Ticker", "live_bundle"]

TICK_SECONDS = 0.25  # at most 4 live updates a second; the first one a quarter second in

Bundle = dict[str, Any]
OpenView = Callable[[Bundle], Callable[[Bundle], None]]

_NO_PROGRESS = object()


def live_bundle(
    handler: str, elapsed_ms: float, chunks: list[Any] | None, progress: Any = _NO_PROGRESS
) -> Bundle:
    """The view of a run in progress: its handler, the time since it started, its chunks so
    far (None for a handler that does not stream) and its last progress update (if any).
    In HTML: `span.nbworker-elapsed`, `span.nbworker-chunks`, a `<progress>` bar."""
    mark = f"{MARKS['IN_PROGRESS']} IN_PROGRESS"
    head = [mark, handler, duration(elapsed_ms)]
    html_head = [
        f'<b style="color:{status_color("IN_PROGRESS")}">{mark}</b>',
        f"<code>{html.escape(handler)}</code>",
        f'<span class="nbworker-elapsed">{duration(elapsed_ms)}</span>',
    ]
    if chunks is not None:
        head.append(plural(len(chunks), "chunk"))
        html_head.append(f'<span class="nbworker-chunks">{head[-1]}</span>')
    lines = ["  ".join(head)]
    parts = [card_open("IN_PROGRESS", live=True), f"<div>{' · '.join(html_head)}</div>"]
    if progress is not _NO_PROGRESS:
        lines.append(f"progress: {progress_line(progress)}")
        parts.append(progress_html(progress))
    if chunks:
        text, body = chunks_view(chunks)
        lines.append(text)
        parts.append(body)
    return {
        "text/plain": scrub("\n".join(lines), "backslashreplace"),
        "text/html": scrub("\n".join(parts) + "\n</div>", "backslashreplace"),
    }


class Ticker:
    """One daemon thread that redraws the live views given to it: each first `interval`
    seconds after its start, then `interval` seconds after its last redraw ended (so never
    more often, however long a redraw takes). It starts with its first view and idles (no
    wake-ups) while it has none; `close` ends it."""

    def __init__(self, *, interval: float = TICK_SECONDS) -> None:
        self.interval = interval
        self._condition = threading.Condition(threading.Lock())
        self._views: list[LiveRun] = []
        self._waiting_until: float | None = None  # the ticker's wake-up; None: idle
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, view: LiveRun) -> None:
        """Redraw `view` at each of its ticks until `remove`."""
        with self._condition:
            if self._closed:
                raise RuntimeError("the ticker is closed")
            self._views.append(view)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nbworker-live", daemon=True)
                self._thread.start()
            elif self._waiting_until is None or view.due < self._waiting_until:
                self._condition.notify()  # else its wake-up comes before this view's tick

    def remove(self, view: LiveRun) -> None:
        """Stop redrawing `view` (a view not given is ignored)."""
        with self._condition:
            if view in self._views:
                self._views.remove(view)

    def close(self) -> None:
        """End the thread (at once if it is waiting; after its redraw if it is drawing)."""
        with self._condition:
            self._closed = True
            self._views.clear()
            self._condition.notify()

    def _due(self) -> list[LiveRun] | None:
        """Wait for the next tick; the views due then (None once closed). Called with the
        condition held."""
        while not self._closed:
            now = time.perf_counter()
            due = [view for view in self._views if view.due <= now]
            if due:
                return due
            self._waiting_until = min((view.due for view in self._views), default=None)
            wait = None if self._waiting_until is None else self._waiting_until - now
            self._condition.wait(wait)
            self._waiting_until = None
        return None

    def _run(self) -> None:
        while True:
            with self._condition:
                due = self._due()
            if due is None:
                return
            for view in due:
                try:
                    view.tick()
                except Exception:  # a view that cannot draw stays as it was until closed
                    self.remove(view)
                    continue
                with self._condition:  # an interval from the end of a draw to the next
                    view.due = time.perf_counter() + self.interval


class LiveRun:
    """The live view of one run, from its start until `close`.

    `open_view(bundle)` shows a bundle and returns the function that shows another in its
    place; it is called at the first tick (not at all for a run that ends before) in a copy
    of this thread's context, as every later update is. `streams`: the handler yields
    chunks (the view counts them). `ticker`: the thread that draws (a private one, started
    here and ended by `close`, when None)."""

    def __init__(
        self,
        handler: str,
        open_view: OpenView,
        *,
        streams: bool,
        ticker: Ticker | None = None,
    ) -> None:
        self.handler = handler
        self._open = open_view
        self._chunks: list[Any] | None = [] if streams else None
        self._progress: Any = _NO_PROGRESS
        self._lock = threading.Lock()
        self._update: Callable[[Bundle], None] | None = None
        self._closed = False
        self._context = contextvars.copy_context()
        self._own_ticker = ticker is None
        self._ticker = Ticker() if ticker is None else ticker
        self.started = time.perf_counter()
        self.due = self.started + self._ticker.interval  # the next tick, kept by the ticker
        self._ticker.add(self)

    def chunk(self, chunk: Any, index: int | None = None) -> None:
        """A chunk the handler yielded: counted and shown at the next tick."""
        if self._chunks is not None:
            self._chunks.append(chunk)  # one append: atomic, as the ticker reads the list

    def progress(self, value: Any, seconds: float | None = None) -> None:
        """A `progress_update` of the run: the last one is shown at the next tick."""
        self._progress = value

    def tick(self) -> None:
        """Draw the view as the run stands now (the ticker calls this)."""
        self._context.run(self._draw)

    def _draw(self) -> None:
        chunks = self._chunks
        bundle = live_bundle(
            self.handler,
            (time.perf_counter() - self.started) * 1000,
            None if chunks is None else chunks[: len(chunks)],
            self._progress,
        )
        with self._lock:  # close() shows the result under it: no live view comes after
            if self._closed:
                return
            if self._update is None:
                self._update = self._open(bundle)
            else:
                self._update(bundle)

    def close(self, final: Bundle) -> bool:
        """End the live view: show `final` in its place, or, for a run that ended before
        its first tick, return False (the caller shows `final`, the one display)."""
        self._ticker.remove(self)
        if self._own_ticker:
            self._ticker.close()
        with self._lock:
            self._closed = True
            update = self._update
            if update is not None:
                update(final)
        return update is not None
