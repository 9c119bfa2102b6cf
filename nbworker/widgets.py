"""The notebook panel (`nbworker.panel()`, `%rp_panel`): pick a handler, edit the job, run
it, watch its stream, re-run past runs, see and evict the model cache.

The panel adds no job logic: jobs are parsed by `jobs.parse_job`, run by
`Session.run_job`, shown by `live.LiveRun` and `display.run_bundle`, and evicted by
`ModelCache.evict`, the same calls the magics make. ipywidgets is imported here only.

A widget lives in the kernel, and a notebook does not save what it shows. So where the
panel is first displayed it also displays its runs' records (`record.PANEL_MIMETYPE`, a
display with an id, updated in place after each run): the saved notebook keeps them, and
`nbworker export` makes test cases of them as of `%rp_test` runs. Its own view carries a
short text and HTML for readers without the widget (nbconvert, GitHub, a closed kernel).
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
from nbworker import live, memory
from nbworker.errors import NbworkerError
from nbworker.jobs import parse_job
from nbworker.record import PANEL_MIMETYPE, PANEL_ORIGIN, Run
from nbworker.registry import default_choice
from nbworker.session import Session, default_session

__all__ = ["Panel", "panel", "runs_bundle"]

DEFAULT_JOB = '{\n  "input": {}\n}'
JOB_SOURCE = "the job"  # how the job box's errors name it: "the job is not valid JSON: ..."
_NO_MODEL = "(no cached model)"
OUTPUT_HEIGHT = "24em"  # the run's card scrolls inside this, above the history and cache
PRINTED_HEIGHT = "12em"
_DIM = f"color:{views.DIM_COLOR};font-size:var(--jp-ui-font-size1, 13px)"
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


def _marked(status: str, text: str) -> str:
    """`text` after its status mark, the mark alone in the status colour (text stays in the
    theme's text colour: the status colours are too light for text)."""
    mark = f'<span style="color:{views.status_color(status)}">{views.MARKS[status]}</span>'
    return f"{mark} {html.escape(text)}"


def _run_line(number: int, handler: str, status: str, duration_ms: float, job: Any) -> str:
    """`2. ✓ COMPLETED handler 412 µs {"text": "hi"}`: a run in a list of runs."""
    given = job.get("input") if isinstance(job, dict) else None
    shown = json.dumps(given, ensure_ascii=False, default=repr)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    mark = views.MARKS.get(status, "?")
    return f"{number}. {mark} {status} {handler} {views.duration(duration_ms)} {shown}"


def _record_line(number: int, record: dict[str, Any]) -> str:
    return _run_line(
        number,
        str(record.get("handler")),
        str(record.get("status")),
        float(record.get("duration_ms") or 0.0),
        record.get("job"),
    )


def runs_bundle(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The display that keeps a panel's runs in the notebook: their records under
    `PANEL_MIMETYPE` (`{"runs": [...]}`), and a list of them in text and HTML."""
    if records:
        head = (
            f"nbworker panel: {views.plural(len(records), 'run')} kept in this notebook "
            "(nbworker export makes test cases of them)"
        )
    else:
        head = "nbworker panel: the runs made with it are kept here, in the notebook (none yet)"
    lines = [_record_line(number, record) for number, record in enumerate(records, 1)]
    items = "".join(f"<li>{html.escape(line.split('. ', 1)[1])}</li>" for line in lines)
    listing = (
        f'<ol style="max-height:12em;overflow:auto;margin:2px 0;padding-left:2.5em">{items}</ol>'
        if items
        else ""
    )
    return {
        "text/plain": "\n".join([head, *(f"  {line}" for line in lines)]),
        "text/html": (
            f'<div class="nbworker-panel-runs" style="{_DIM}">{html.escape(head)}{listing}</div>'
        ),
        PANEL_MIMETYPE: {"runs": records},
    }


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
    `kept` holds the records of the runs made with the panel, as its cell keeps them.
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
        self.kept: list[dict[str, Any]] = []  # records of the panel's runs, oldest first
        self._job: dict[str, Any] | None = None
        self._running = False
        self._chosen: str | None = None  # the handler the user picked, kept while it exists
        self._refreshing = False
        self._kept_view: Any = None  # the DisplayHandle of the display that keeps the runs
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
        bounded = {"width": "100%", "overflow": "auto"}  # scrolls inside, never pushes below
        self.output = widgets.Output(layout=layout(max_height=OUTPUT_HEIGHT, **bounded))
        self.printed = widgets.Output(layout=layout(max_height=PRINTED_HEIGHT, **bounded))
        self.history = widgets.Select(description="history", rows=5, layout=layout(width="100%"))
        self.rerun_button = widgets.Button(description="Re-run", icon="repeat", disabled=True)
        self.models = widgets.HTML()
        self.model = widgets.Dropdown(description="model", layout=layout(width="320px"))
        self.evict_button = widgets.Button(description="Evict", button_style="warning")
        self.cache_status = widgets.HTML()

        for attribute in WIDGETS:
            getattr(self, attribute).add_class(f"nbworker-{attribute.replace('_', '-')}")

        self.job.observe(self._on_job, names="value")
        self.handler.observe(self._on_handler, names="value")
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

    # ----------------------------------------------------------------- showing the panel

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget's view, and for a reader without the widget (nbconvert, GitHub, a
        notebook reopened without its kernel) a line saying what it is. The line is written
        once, as the panel is shown: it names no count that later runs would make wrong
        (the display below the panel lists its runs)."""
        name = self.handler.value
        text = (
            f"nbworker panel: handler `{name}`" if name else "nbworker panel: no handler yet"
        ) + (
            " (a widget: run this cell with the notebook's kernel to use it; the runs made "
            "with it are kept in the output below)"
        )
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = text
        bundle["text/html"] = (
            f'<div class="nbworker-panel-fallback" style="{_DIM}">{html.escape(text)}</div>'
        )
        return bundle

    def _ipython_display_(self) -> None:
        """Show the panel; the first time, and below it, the display that keeps its runs
        (with a display id, so that each run updates it in place)."""
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        if self._kept_view is None:
            self._kept_view = display(runs_bundle(self.kept), raw=True, display_id=True)

    def _keep(self, run: Run) -> None:
        """Keep the run's record in the panel's display of its runs (a front end applies
        the update, by its id, to the cell that displayed the panel)."""
        self.kept.append({**run.to_record(), "origin": PANEL_ORIGIN})
        if self._kept_view is not None:
            self._kept_view.update(runs_bundle(self.kept), raw=True)

    # ----------------------------------------------------------------- refreshing

    def refresh(self) -> None:
        """Re-read the handlers, the history and the model cache."""
        self.refresh_handlers()
        self.refresh_history()
        self.refresh_models()

    def refresh_handlers(self) -> None:
        """The registered handlers; chosen: the one the user picked while it exists, else
        the one named `handler`, else the only one, else the first."""
        names = self.session.registry.names()
        wanted: str | None = self._chosen if self._chosen in names else default_choice(names)
        if wanted is None and names:
            wanted = names[0]
        if list(self.handler.options) != names or self.handler.value != wanted:
            self._refreshing = True
            try:
                self.handler.options = names
                self.handler.value = wanted
            finally:
                self._refreshing = False
        self._update_run_button()

    def _on_handler(self, change: Any) -> None:
        if not self._refreshing:
            self._chosen = change["new"]
        self._update_run_button()

    def refresh_history(self) -> None:
        self.runs = list(reversed(self.session.history))
        total = len(self.runs)
        options = [
            (_run_line(total - index, run.handler, run.status, run.duration_ms, run.job), index)
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
            self._job = parse_job(self.job.value, source=JOB_SOURCE)
        except NbworkerError as err:
            self._job = None
            self.validation.value = _marked("FAILED", str(err))
        else:
            self.validation.value = _marked("COMPLETED", "valid job")
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
        """Run the job in the editor against the chosen handler, as %rp_test does; keep its
        record in the notebook (the display below the panel)."""
        self.refresh_handlers()
        if self._job is None or not self.handler.value:
            return None
        try:
            spec = self.session.registry.get(self.handler.value)
        except NbworkerError as err:
            self._show_status(_marked("FAILED", str(err)))
            return None
        timeout = self.timeout.value or None
        self._running = True
        self._update_run_button()
        self._update_rerun_button()
        self.chunks = []
        self.printed.outputs = self.output.outputs = ()

        def open_view(bundle: dict[str, Any]) -> Any:
            self._show(bundle)
            return self._show

        view = live.LiveRun(spec.name, open_view, streams=spec.streams)
        self._show_status(html.escape(f"started at {time.strftime('%H:%M:%S')}"))

        def on_chunk(chunk: Any, index: int) -> None:
            self.chunks.append(chunk)
            view.chunk(chunk, index)

        measured = _Memory()
        started = time.perf_counter()
        try:
            with self.printed:  # the handler's prints and logs land in the panel
                run = self.session.run_job(
                    self._job,
                    spec,
                    timeout=timeout,
                    on_chunk=on_chunk,
                    on_progress=view.progress,
                )
        except BaseException as err:  # a usage problem (the timeout); the handler's is a Run
            view.close({"text/plain": ""})  # no live card left ticking
            if not isinstance(err, Exception):
                raise
            self._show_status(_marked("FAILED", f"{type(err).__name__}: {err}"))
            return None
        finally:
            self._running = False
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._update_run_button()
            self._update_rerun_button()
        run.interrupt = None  # a panel run ends at its click; it stops nothing else
        bundle = views.run_bundle(run, tidy=self.tidy)
        if not view.close(bundle):
            self._show(bundle)
        self.last_run = run
        self._keep(run)  # outside the printed Output: its front end would take the update
        kept = (
            f"kept in this notebook as panel run {len(self.kept)}"
            if self._kept_view is not None
            else "not kept in the notebook (display the panel in a cell to keep its runs)"
        )
        self._show_status(
            html.escape(
                f"{views.duration(elapsed_ms)} wall in the panel · "
                f"memory: {measured.describe()} · {kept}"
            )
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
            self._show_status(_marked("FAILED", f"handler {past.handler} is no longer registered"))
            return None
        return self.run()

    def _show(self, bundle: dict[str, Any]) -> None:
        self.output.outputs = (_display_data(bundle),)

    def _show_status(self, text: str) -> None:
        self.status.value = f'<div class="nbworker-status-line" style="{_DIM}">{text}</div>'

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
