"""How runs look in a notebook: HTML and plain text for people, and a JSON record of the
run under nbworker's own mimetype for export and replay. Pure functions returning
mimebundles; nothing here runs jobs or imports IPython."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from nbworker import memory
from nbworker.cache import Entry, Released
from nbworker.record import RECORD_MIMETYPE, Run, safe_repr, scrub

__all__ = [
    "LiveRun",
    "LiveStream",
    "ago",
    "cache_bundle",
    "entry_line",
    "released_line",
    "run_bundle",
    "stream_bundle",
    "traceback_tidier",
]

COLORS = {
    "COMPLETED": "#1a7f37",
    "FAILED": "#cf222e",
    "TIMED_OUT": "#bc4c00",
    "CANCELLED": "#6e7781",
    "IN_PROGRESS": "#0969da",
}
MARKS = {"COMPLETED": "✓", "FAILED": "✗", "TIMED_OUT": "⏱", "CANCELLED": "■", "IN_PROGRESS": "…"}
STREAM_UPDATE_SECONDS = 0.02  # at most 50 live updates a second; none is held back longer
MAX_SHOWN = 4000  # characters of one value shown; the record keeps everything
MAX_CHUNKS_SHOWN = 50

_STYLE = (
    "border-left:4px solid {color};padding:4px 10px;margin:2px 0;"
    "font-family:var(--jp-code-font-family,monospace);font-size:12px;line-height:1.45"
)
_PRE = "margin:2px 0 4px 0;padding:4px 6px;white-space:pre-wrap;background:rgba(127,127,127,.08)"


def _dump(value: Any, text: str | None = None) -> str:
    """JSON on one line when it is short, indented when it is not, cut at MAX_SHOWN
    characters. `text` is the value's one-line JSON where the caller has it (a run's
    output). A long value is indented only as far as it is shown: the view is the start of
    `json.dumps(value, indent=2)` whatever the value's size (with an indent, json's encoder
    is the lazy one in Python, so it stops once that much is out)."""
    try:
        text = text if text is not None else json.dumps(value, ensure_ascii=False)
        if len(text) <= 100:
            return text
        shown, whole = "", f"{len(text):,} in one line of JSON"
        for chunk in json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(value):
            shown += chunk
            if len(shown) > MAX_SHOWN:
                break
    except (TypeError, ValueError, RecursionError):
        shown = safe_repr(value)
        whole = f"{len(shown):,}"
    if len(shown) > MAX_SHOWN:
        return f"{shown[:MAX_SHOWN]}\n… (cut at {MAX_SHOWN:,} characters of {whole})"
    return shown


def _duration(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.2f} ms"
    return f"{ms / 1000:.2f} s"


def _error_text(run: Run) -> str:
    """The error for people: RunPod's error JSON is summarised as `Type: message`."""
    error = run.error
    if isinstance(error, str) and error.startswith("{"):
        try:
            info = json.loads(error)
        except ValueError:
            return error
        if isinstance(info, dict) and "error_type" in info:
            kind = re.sub(r"^<class '(?:builtins\.)?(.*)'>$", r"\1", info["error_type"])
            return f"{kind}: {info.get('error_message', '')}"
    if isinstance(error, str) and error.startswith("handler: "):
        return error.split(" \ntraceback: ", 1)[0]
    return error if isinstance(error, str) else _dump(error)


_FRACTION = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_PROGRESS_KEYS = ("progress", "percent", "percentage", "fraction")
BAR_WIDTH = 20


def progress_fraction(value: Any) -> float | None:
    """How far along a `progress_update` value says the job is, in [0, 1], when it says:
    a number (a fraction up to 1, else a percentage), "3/10", "40%", or a dict holding one
    of those under progress/percent/fraction (or step and total)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        if not number >= 0:  # NaN too
            return None
        if isinstance(value, float) and number <= 1:
            return number
        return min(number / 100, 1.0)
    if isinstance(value, str):
        match = _PERCENT.search(value)
        if match:
            return min(float(match[1]) / 100, 1.0)
        match = _FRACTION.search(value)
        if match and float(match[2]) > 0:
            return min(float(match[1]) / float(match[2]), 1.0)
        return None
    if isinstance(value, dict):
        for key in _PROGRESS_KEYS:
            if key in value:
                return progress_fraction(value[key])
        step, total = value.get("step"), value.get("total")
        if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return progress_fraction(f"{step}/{total}")
    return None


def _progress_text(value: Any) -> str:
    text = value if isinstance(value, str) else _dump(value)
    return text if len(text) <= 200 else text[:197] + "..."


def progress_line(value: Any) -> str:
    """One progress update for people: the value, and a bar when it says how far."""
    text = _progress_text(value)
    fraction = progress_fraction(value)
    if fraction is None:
        return text
    filled = round(fraction * BAR_WIDTH)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return f"[{bar}] {fraction:.0%}  {text}"


def _progress_html(value: Any) -> str:
    fraction = progress_fraction(value)
    text = html.escape(_progress_text(value))
    if fraction is None:
        return f"<div>progress: {text}</div>"
    return (
        f'<div>progress: <progress value="{fraction:.4f}" max="1" '
        f'style="vertical-align:middle;width:12em"></progress> {fraction:.0%} · {text}</div>'
    )


def _sections(run: Run) -> list[tuple[str, str]]:
    """(title, text) pairs shared by the text and HTML views."""
    sections = []
    if run.progress:
        updates = len(run.progress)
        last = run.progress[-1]
        sections.append(
            (
                f"progress ({updates} update{'s' if updates != 1 else ''}, last at "
                f"{_duration(last['seconds'] * 1000)})",
                progress_line(last["value"]),
            )
        )
    if run.stream is not None:
        sections.append((f"stream ({len(run.stream)} chunks)", _chunks_text(run.stream)))
    if run.status == "COMPLETED" or run.output is not None:
        sections.append(("output", _dump(run.output, run.output_json)))
    if run.error is not None:
        sections.append(("error", _error_text(run)))
    if run.traceback and run.status != "COMPLETED":
        sections.append(("traceback", run.traceback.rstrip()))
    return sections


def _chunks_text(chunks: list[Any]) -> str:
    shown = chunks[-MAX_CHUNKS_SHOWN:]
    skipped = len(chunks) - len(shown)
    lines = [f"… {skipped} earlier chunks"] if skipped else []
    lines += [f"[{skipped + index}] {_one_line_json(chunk)}" for index, chunk in enumerate(shown)]
    return "\n".join(lines)


def _one_line_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=safe_repr)
    except (ValueError, RecursionError):  # circular, too deep, an int of 5000 digits
        return safe_repr(value)


def _headline(run: Run) -> str:
    return (
        f"{MARKS[run.status]} {run.status}  {run.handler}  {_duration(run.duration_ms)}"
        f"  job {run.job.get('id')}"
    )


def _notes(run: Run) -> list[str]:
    notes = []
    if run.refresh_worker:
        notes.append("refresh_worker: RunPod would restart this worker after the job.")
    return notes + [f"⚠ {warning}" for warning in run.warnings]


def run_text(run: Run, sections: list[tuple[str, str]] | None = None) -> str:
    lines = [_headline(run)]
    for title, text in _sections(run) if sections is None else sections:
        if "\n" in text:
            lines.append(f"{title}:")
            lines.extend(f"  {line}" for line in text.splitlines())
        else:
            lines.append(f"{title}: {text}")
    lines.extend(_notes(run))
    return "\n".join(lines)


def run_html(run: Run, sections: list[tuple[str, str]] | None = None) -> str:
    color = COLORS[run.status]
    esc = html.escape
    parts = [
        f'<div class="nbworker-run" style="{_STYLE.format(color=color)}">',
        f'<div><b style="color:{color}">{MARKS[run.status]} {run.status}</b>'
        f" · <code>{esc(run.handler)}</code> · {_duration(run.duration_ms)}"
        f" · job <code>{esc(str(run.job.get('id')))}</code></div>",
        f'<details><summary>input</summary><pre style="{_PRE}">'
        f"{esc(_dump(run.job.get('input')))}</pre></details>",
    ]
    for title, text in _sections(run) if sections is None else sections:
        is_open = " open" if title != "traceback" or run.status == "FAILED" else ""
        parts.append(
            f"<details{is_open}><summary>{esc(title)}</summary>"
            f'<pre style="{_PRE}">{esc(text)}</pre></details>'
        )
    for note in _notes(run):
        parts.append(
            '<div style="background:rgba(212,167,44,.15);padding:2px 6px;margin:2px 0">'
            f"{esc(note)}</div>"
        )
    parts.append("</div>")
    return "".join(parts)


_FRAME_LINE = re.compile(r'^(\s*)File "([^"]+)", line (\d+)', re.MULTILINE)


def traceback_tidier(shell: Any) -> Callable[[str], str]:
    """The function that names a kernel's cells in a traceback as IPython does:
    `File "/tmp/ipykernel_1/123.py", line 4` -> `Cell In[3], line 4` (`shell` is the
    IPython shell whose compiler filed the cells)."""
    compiler = shell.compile

    def name(match: re.Match[str]) -> str:
        label = (
            compiler.format_code_name(match[2]) if hasattr(compiler, "format_code_name") else None
        )
        if not label:
            return match[0]
        return f"{match[1]}{label[0]} {label[1]}, line {match[3]}"

    def tidy(text: str) -> str:
        return _FRAME_LINE.sub(name, text)

    return tidy


def run_bundle(run: Run, *, tidy: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The mimebundle of a finished run: HTML, text and the JSON record.

    `tidy` rewrites tracebacks for display (e.g. kernel file names to `Cell In[3]`).
    """
    if tidy is not None and run.traceback:
        shown = Run(**{**run.__dict__, "traceback": tidy(run.traceback)})
    else:
        shown = run
    sections = _sections(shown)  # the output's view is made once, for both views
    return {  # no lone surrogate may reach Jupyter's messages (they must be UTF-8)
        "text/plain": scrub(run_text(shown, sections), "backslashreplace"),
        "text/html": scrub(run_html(shown, sections), "backslashreplace"),
        RECORD_MIMETYPE: run.to_record(),
    }


_NO_PROGRESS = object()


def stream_bundle(
    handler: str,
    chunks: list[Any] | None,
    elapsed_ms: float,
    progress: Any = _NO_PROGRESS,
) -> dict[str, Any]:
    """The live view of a run in progress: its chunks so far (None for a handler that does
    not stream) and its last progress update."""
    color = COLORS["IN_PROGRESS"]
    head = f"… IN_PROGRESS  {handler}  {_duration(elapsed_ms)}"
    if chunks is not None:
        head += f"  {len(chunks)} chunks"
    lines, parts = [head], [f'<div><b style="color:{color}">{html.escape(head)}</b></div>']
    if progress is not _NO_PROGRESS:
        lines.append(f"progress: {progress_line(progress)}")
        parts.append(_progress_html(progress))
    if chunks is not None:
        text = _chunks_text(chunks)
        lines.append(text)
        parts.append(f'<pre style="{_PRE}">{html.escape(text)}</pre>')
    return {
        "text/plain": scrub("\n".join(lines), "backslashreplace"),
        "text/html": scrub(
            f'<div class="nbworker-run" style="{_STYLE.format(color=color)}">'
            + "".join(parts)
            + "</div>",
            "backslashreplace",
        ),
    }


class LiveStream:
    """Shows a stream's chunks as they come, at most one update per `interval` seconds.

    A chunk that comes too soon after the last update is not lost: a timer shows it once
    the interval has passed, so a burst followed by a long pause is on screen during the
    pause. `update` gets a mimebundle; it may be called from the timer's thread (display
    updates by id are safe from any thread in ipykernel).
    """

    def __init__(
        self,
        handler: str,
        update: Callable[[dict[str, Any]], None],
        *,
        interval: float = STREAM_UPDATE_SECONDS,
        streams: bool = True,
    ) -> None:
        self.handler = handler
        self.interval = interval
        self.streams = streams  # False: a handler that only reports progress
        self._update = update
        self._chunks: list[Any] = []
        self._progress: Any = _NO_PROGRESS
        self._version = 0  # bumped by every chunk and progress update
        self._started = time.perf_counter()
        self._lock = threading.Lock()
        self._shown = 0  # chunks on screen (the caller shows the empty view first)
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False

    def add(self, chunk: Any, index: int | None = None) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._version += 1
            if self._timer is None and not self._closed:
                self._show_or_wait()

    def progress(self, value: Any, seconds: float | None = None) -> None:
        """A `progress_update` of the run: shown as its progress line (and bar)."""
        with self._lock:
            self._progress = value
            self._version += 1
            if self._timer is None and not self._closed:
                self._show_or_wait()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if not self._closed:
                self._show_or_wait()

    def _show_or_wait(self) -> None:
        """Show the chunks so far, or arm the one timer if the last update is too recent.
        Called with the lock held."""
        now = time.perf_counter()
        wait = self._last + self.interval - now
        if wait > 0:
            self._timer = threading.Timer(wait, self._on_timer)
            self._timer.daemon = True
            self._timer.start()
            return
        if self._version != self._shown:
            self._shown, self._last = self._version, now
            chunks = self._chunks[: len(self._chunks)] if self.streams else None
            self._update(
                stream_bundle(self.handler, chunks, (now - self._started) * 1000, self._progress)
            )

    def close(self, final: dict[str, Any]) -> None:
        """Replace the live view with `final`; no update comes after it."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            self._update(final)


class LiveRun:
    """The live view of one run, opened when there is something to show: at once for a
    streaming handler, at the first progress update for any other (a quick run that
    reports nothing shows only its result). `open_view(bundle)` displays a bundle and
    returns the function that updates it in place."""

    def __init__(
        self,
        handler: str,
        open_view: Callable[[dict[str, Any]], Callable[[dict[str, Any]], None]],
        *,
        streams: bool,
    ) -> None:
        self.handler = handler
        self._open = open_view
        self._streams = streams
        self._lock = threading.Lock()
        self._live: LiveStream | None = None
        if streams:
            self._live = LiveStream(handler, open_view(stream_bundle(handler, [], 0.0)))

    def chunk(self, chunk: Any, index: int | None = None) -> None:
        if self._live is not None:
            self._live.add(chunk, index)

    def progress(self, value: Any, seconds: float) -> None:
        with self._lock:
            if self._live is None:
                update = self._open(stream_bundle(self.handler, None, seconds * 1000, value))
                self._live = LiveStream(self.handler, update, streams=False)
        self._live.progress(value, seconds)

    def close(self, final: dict[str, Any]) -> bool:
        """Replace the live view with `final`; False when none was opened (show `final`)."""
        with self._lock:
            live = self._live
        if live is None:
            return False
        live.close(final)
        return True


def ago(seconds: float) -> str:
    """A duration as `12 s`, `4 min` or `1.5 h`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def entry_line(entry: Entry, *, hit: bool) -> str:
    """`encoder: cache hit, loaded 4 min ago in 12.3 s, 1.2 GiB on cuda:0`"""
    names = ", ".join(entry.data_names) or "no data"
    if hit:
        return (
            f"{entry.name}: cache hit, loaded {ago(time.time() - entry.loaded_at)} ago "
            f"in {entry.load_seconds:.2f} s, {entry.describe_memory()} ({names})"
        )
    cuda = f"; {entry.describe_cuda()}" if entry.describe_cuda() else ""
    return (
        f"{entry.name}: loaded in {entry.load_seconds:.2f} s, {entry.describe_memory()} "
        f"({names}){cuda}"
    )


def released_line(released: Released) -> str:
    freed = ", ".join(f"{memory.format_bytes(n)} on {d}" for d, n in released.memory.items())
    line = f"{released.name}: released ({released.reason}), {freed or 'no arrays or tensors'}"
    if released.still_referenced:
        line += f"; ⚠ still referenced elsewhere, not freed: {', '.join(released.still_referenced)}"
    return line


def cache_bundle(entries: list[Entry], *, budget: int | None) -> dict[str, Any]:
    """The model cache as a table: name, bound names, bytes per device, load, hits, use."""
    now = time.time()
    devices = sorted({device for entry in entries for device in entry.memory})
    header = ["model", "names", *devices, "loaded in", "hits", "last used"]
    rows = [
        [
            entry.name,
            ", ".join(entry.data_names),
            *(memory.format_bytes(entry.memory[d]) if d in entry.memory else "" for d in devices),
            f"{entry.load_seconds:.2f} s",
            str(entry.hits),
            f"{ago(now - entry.last_used)} ago",
        ]
        for entry in entries
    ]
    total = sum(entry.total_bytes for entry in entries)
    summary = f"{len(entries)} cached, {memory.format_bytes(total)}" + (
        f" of a {memory.format_bytes(budget)} budget" if budget is not None else ", no budget"
    )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    text = "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
    esc = html.escape
    cells = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{esc(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return {
        "text/plain": f"{text}\n{summary}" if rows else f"the model cache is empty ({summary})",
        "text/html": (
            f'<div class="nbworker-models"><table><thead><tr>{cells}</tr></thead>'
            f"<tbody>{body}</tbody></table><div>{esc(summary)}</div></div>"
        ),
    }


Run.renderer = run_bundle  # see Run.renderer
