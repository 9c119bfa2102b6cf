"""The notebook panel (`nbworker.panel()`, `%rp_panel`): pick a handler, edit the job, run
it, watch its stream, re-run past runs, see and evict the model cache.

The panel adds no job logic: jobs are parsed by `jobs.parse_job`, run by
`Session.run_job`, shown by `display.LiveStream`/`run_bundle`, and evicted by
`ModelCache.evict`, the same calls the magics make. ipywidgets is imported here only.
"""

from __future__ import annotations

import contextlib
import html
import json
import time
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from nbworker import display as views
from nbworker import memory
from nbworker.errors import NbworkerError
from nbworker.jobs import parse_job
from nbworker.record import Run
from nbworker.session import Session, default_session

__all__ = ["Panel", "panel"]

DEFAULT_JOB = '{\n  "input": {}\n}'
_NO_MODEL = "(no cached model)"
# The panel's key widgets, by attribute; each has the CSS class nbworker-<name, _ as ->.
WIDGETS = (
    "handler",
    "refresh_button",
    "job",
    "validation",
    "timeout",
    "run_button",
    "status",
    "output",
    "printed",
    "history",
    "rerun_button",
    "models",
    "model",
    "evict_button",
    "cache_status",
)


def _display_data(bundle: dict[str, Any]) -> dict[str, Any]:
    """An Output widget's entry for a mimebundle."""
    return {"output_type": "display_data", "data": bundle, "metadata": {}}


def _signed(size: int) -> str:
    return f"{'+' if size >= 0 else '-'}{memory.format_bytes(abs(size))}"


class _Memory:
    """Process memory around a run, for the status line (figures only, no job logic)."""

    def __init__(self) -> None:
        self.rss, self.peak = memory.process_rss(), memory.peak_rss()
        self.cuda = memory.cuda_allocated()

    def describe(self) -> str:
        parts = []
        rss = memory.process_rss()
        if rss is not None:
            change = f" ({_signed(rss - self.rss)})" if self.rss is not None else ""
            parts.append(f"RSS {memory.format_bytes(rss)}{change}")
        peak = memory.peak_rss()
        if peak is not None and self.peak is not None and peak > self.peak:
            parts.append(f"new peak {memory.format_bytes(peak)}")
        cuda = memory.cuda_allocated()
        for device, after in cuda.items():
            parts.append(f"{device} {_signed(after - self.cuda.get(device, 0))}")
        return ", ".join(parts) or "not measured"


class Panel(widgets.VBox):
    """A VBox: handler, job editor, Run, live output, status, history, model cache.

    Attributes (each key widget also has a CSS class `nbworker-<attribute>` with `_` as `-`):
    handler, refresh_button, job, validation, timeout, run_button, status, output (the run:
    live stream, then the run's bundle with its record), printed (what the handler printed or
    logged), history, rerun_button, models, model, evict_button, cache_status.
    """

    def __init__(
        self,
        session: Session | None = None,
        *,
        tidy: Callable[[str], str] | None = None,
        job: str = DEFAULT_JOB,
    ) -> None:
        self.session = session if session is not None else default_session()
        self.tidy = tidy
        self.runs: list[Run] = []  # the history shown, newest first
        self.last_run: Run | None = None
        self.chunks: list[Any] = []  # the chunks of the last run, as they came
        self._job: dict[str, Any] | None = None
        self._running = False
        self._unhook: Callable[[], None] = lambda: None

        layout = widgets.Layout
        self.handler = widgets.Dropdown(description="handler", layout=layout(width="320px"))
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", tooltip="re-read handlers, history and cache"
        )
        self.job = widgets.Textarea(
            value=job,
            placeholder='{"input": {...}}',
            continuous_update=True,
            layout=layout(width="100%", height="120px"),
        )
        self.validation = widgets.HTML()
        self.timeout = widgets.BoundedFloatText(
            value=0, min=0, max=86400, step=1, description="timeout s", tooltip="0: none",
            layout=layout(width="180px"),
        )  # fmt: skip
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = widgets.HTML()
        self.output = widgets.Output(layout=layout(width="100%"))
        self.printed = widgets.Output(layout=layout(width="100%"))
        self.history = widgets.Select(description="history", rows=5, layout=layout(width="100%"))
        self.rerun_button = widgets.Button(description="Re-run", icon="repeat", disabled=True)
        self.models = widgets.HTML()
        self.model = widgets.Dropdown(description="model", layout=layout(width="320px"))
        self.evict_button = widgets.Button(description="Evict", button_style="warning")
        self.cache_status = widgets.HTML()

        for attribute in WIDGETS:
            getattr(self, attribute).add_class(f"nbworker-{attribute.replace('_', '-')}")

        self.job.observe(self._on_job, names="value")
        self.handler.observe(lambda change: self._update_run_button(), names="value")
        self.history.observe(lambda change: self._update_rerun_button(), names="value")
        self.refresh_button.on_click(lambda button: self.refresh())
        self.run_button.on_click(lambda button: self.run())
        self.rerun_button.on_click(lambda button: self.rerun())
        self.evict_button.on_click(lambda button: self.evict())

        super().__init__(
            children=[
                widgets.HBox([self.handler, self.refresh_button]),
                self.job,
                self.validation,
                widgets.HBox([self.run_button, self.timeout]),
                self.status,
                self.output,
                self.printed,
                widgets.HBox([self.history, self.rerun_button]),
                self.models,
                widgets.HBox([self.model, self.evict_button]),
                self.cache_status,
            ]
        )
        self.add_class("nbworker-panel")
        self._validate()
        self.refresh()
        self._hook_cells()

    # ----------------------------------------------------------------- refreshing

    def refresh(self) -> None:
        """Re-read the handlers, the history and the model cache."""
        self.refresh_handlers()
        self.refresh_history()
        self.refresh_models()

    def refresh_handlers(self) -> None:
        names = self.session.registry.names()
        if list(self.handler.options) != names:
            current = self.handler.value
            self.handler.options = names
            if current in names:
                self.handler.value = current
            elif names:
                try:
                    self.handler.value = self.session.registry.get(None).name
                except NbworkerError:
                    self.handler.value = names[0]
        self._update_run_button()

    def refresh_history(self) -> None:
        self.runs = list(reversed(self.session.history))
        total = len(self.runs)
        options = [
            (
                f"{total - index}. {views.MARKS[run.status]} {run.status} {run.handler} "
                f"{views._duration(run.duration_ms)} {json.dumps(run.job.get('input'))[:60]}",
                index,
            )
            for index, run in enumerate(self.runs)
        ]
        self.history.options = options
        self.history.value = 0 if options else None
        self._update_rerun_button()

    def refresh_models(self) -> None:
        cache = self.session.cache
        self.models.value = views.cache_bundle(cache.info(), budget=cache.budget)["text/html"]
        names = cache.names()
        current = self.model.value
        self.model.options = names or [_NO_MODEL]
        self.model.value = current if current in names else (names or [_NO_MODEL])[0]
        self.evict_button.disabled = not names

    def _hook_cells(self) -> None:
        """Refresh after each cell runs, so a new %%handler or %%model shows (while the
        panel lives: the hook holds it weakly)."""
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with ipywidgets
            return
        shell = get_ipython()
        if shell is None:
            return
        ref = weakref.ref(self)

        def post_run_cell(*args: Any) -> None:
            panel = ref()
            if panel is None:
                with contextlib.suppress(ValueError):
                    shell.events.unregister("post_run_cell", post_run_cell)
            elif not panel._running:
                panel.refresh()

        shell.events.register("post_run_cell", post_run_cell)
        self._unhook = lambda: shell.events.unregister("post_run_cell", post_run_cell)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._unhook()
        super().close()

    # ----------------------------------------------------------------- the job

    def _on_job(self, change: Any) -> None:
        self._validate()

    def _validate(self) -> None:
        """Parse the job as %rp_test does; show 'valid job' or the error with its position."""
        try:
            self._job = parse_job(self.job.value)
        except NbworkerError as err:
            self._job = None
            self.validation.value = f'<span style="color:#cf222e">✗ {html.escape(str(err))}</span>'
        else:
            self.validation.value = '<span style="color:#1a7f37">✓ valid job</span>'
        self._update_run_button()

    @property
    def valid(self) -> bool:
        return self._job is not None

    def _update_run_button(self) -> None:
        self.run_button.disabled = self._running or self._job is None or not self.handler.value

    def _update_rerun_button(self) -> None:
        self.rerun_button.disabled = self._running or self.history.value is None

    # ----------------------------------------------------------------- running

    def run(self) -> Run | None:
        """Run the job in the editor against the chosen handler, as %rp_test does."""
        self.refresh_handlers()
        if self._job is None or not self.handler.value:
            return None
        try:
            spec = self.session.registry.get(self.handler.value)
        except NbworkerError as err:
            self._show_status(f'<span style="color:#cf222e">✗ {html.escape(str(err))}</span>')
            return None
        timeout = self.timeout.value or None
        self._running = True
        self._update_run_button()
        self._update_rerun_button()
        self.chunks = []
        self.printed.outputs = ()
        if not spec.streams:
            self.output.outputs = ()

        def open_view(bundle: dict[str, Any]) -> Any:
            self._show(bundle)
            return self._show

        live = views.LiveRun(spec.name, open_view, streams=spec.streams)
        self._show_status(f"… running {html.escape(spec.name)}")

        def on_chunk(chunk: Any, index: int) -> None:
            self.chunks.append(chunk)
            live.chunk(chunk, index)

        measured = _Memory()
        started = time.perf_counter()
        try:
            with self.printed:  # the handler's prints and logs land in the panel
                run = self.session.run_job(
                    self._job,
                    spec,
                    timeout=timeout,
                    on_chunk=on_chunk,
                    on_progress=live.progress,
                )
        except Exception as err:  # a usage problem, e.g. the timeout; the handler's own is a Run
            live.close({"text/plain": ""})
            self._show_status(
                f'<span style="color:#cf222e">✗ {html.escape(type(err).__name__)}: '
                f"{html.escape(str(err))}</span>"
            )
            return None
        finally:
            self._running = False
            elapsed = time.perf_counter() - started
            self._update_run_button()
            self._update_rerun_button()
        run.interrupt = None  # a panel run ends at its click; it stops nothing else
        bundle = views.run_bundle(run, tidy=self.tidy)
        if not live.close(bundle):
            self._show(bundle)
        self.last_run = run
        color = views.COLORS[run.status]
        self._show_status(
            f'<b style="color:{color}">{views.MARKS[run.status]} {run.status}</b>'
            f" · <code>{html.escape(run.handler)}</code>"
            f" · {views._duration(run.duration_ms)} ({elapsed:.2f} s wall)"
            f" · memory: {html.escape(measured.describe())}"
        )
        self.refresh()
        return run

    def rerun(self) -> Run | None:
        """Load the chosen run of the history into the editor and run it again."""
        index = self.history.value
        if index is None or index >= len(self.runs):
            return None
        past = self.runs[index]
        self.job.value = json.dumps(past.job, indent=2, ensure_ascii=False)
        self.refresh_handlers()
        if past.handler in self.handler.options:
            self.handler.value = past.handler
        else:
            self._show_status(
                f'<span style="color:#cf222e">✗ handler {html.escape(past.handler)} '
                "is no longer registered</span>"
            )
            return None
        return self.run()

    def _show(self, bundle: dict[str, Any]) -> None:
        self.output.outputs = (_display_data(bundle),)

    def _show_status(self, text: str) -> None:
        self.status.value = f'<div class="nbworker-status-line">{text}</div>'

    # ----------------------------------------------------------------- the cache

    def evict(self, name: str | None = None) -> None:
        """Evict the chosen model, as `%rp_models --evict NAME` does."""
        name = name or self.model.value
        if not name or name == _NO_MODEL:
            return
        try:
            line = views.released_line(self.session.cache.evict(name))
        except NbworkerError as err:
            line = f"✗ {err}"
        self.cache_status.value = html.escape(line)
        self.refresh_models()


def _shell_tidy() -> Callable[[str], str] | None:
    """The traceback tidier of the IPython shell this runs in (cells named `Cell In[n]`)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    shell = get_ipython()
    return None if shell is None else views.traceback_tidier(shell)


def panel(session: Session | None = None) -> Panel:
    """The panel for `session` (default: the one `%load_ext nbworker` uses)."""
    session = session if session is not None else default_session()
    return Panel(session, tidy=_shell_tidy())
