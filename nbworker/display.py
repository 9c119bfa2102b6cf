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
from nbworker.jobs import RECORD_MIMETYPE, Run

__all__ = [
    "LiveStream",
    "ago",
    "cache_bundle",
    "entry_line",
    "released_line",
    "run_bundle",
    "stream_bundle",
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


def _dump(value: Any) -> str:
    """JSON on one line when it is short, indented when it is not."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        if len(text) > 100:
            text = json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}\n… ({len(text) - MAX_SHOWN:,} more characters)"
    return text


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


def _sections(run: Run) -> list[tuple[str, str]]:
    """(title, text) pairs shared by the text and HTML views."""
    sections = []
    if run.stream is not None:
        sections.append((f"stream ({len(run.stream)} chunks)", _chunks_text(run.stream)))
    if run.status == "COMPLETED" or run.output is not None:
        sections.append(("output", _dump(run.output)))
    if run.error is not None:
        sections.append(("error", _error_text(run)))
    if run.traceback and run.status != "COMPLETED":
        sections.append(("traceback", run.traceback.rstrip()))
    return sections


def _chunks_text(chunks: list[Any]) -> str:
    shown = chunks[-MAX_CHUNKS_SHOWN:]
    skipped = len(chunks) - len(shown)
    lines = [f"… {skipped} earlier chunks"] if skipped else []
    lines += [
        f"[{skipped + index}] {json.dumps(chunk, ensure_ascii=False, default=repr)}"
        for index, chunk in enumerate(shown)
    ]
    return "\n".join(lines)


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


def run_text(run: Run) -> str:
    lines = [_headline(run)]
    for title, text in _sections(run):
        if "\n" in text:
            lines.append(f"{title}:")
            lines.extend(f"  {line}" for line in text.splitlines())
        else:
            lines.append(f"{title}: {text}")
    lines.extend(_notes(run))
    return "\n".join(lines)


def run_html(run: Run) -> str:
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
    for title, text in _sections(run):
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


def run_bundle(run: Run, *, tidy: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The mimebundle of a finished run: HTML, text and the JSON record.

    `tidy` rewrites tracebacks for display (e.g. kernel file names to `Cell In[3]`).
    """
    if tidy is not None and run.traceback:
        shown = Run(**{**run.__dict__, "traceback": tidy(run.traceback)})
    else:
        shown = run
    return {
        "text/plain": run_text(shown),
        "text/html": run_html(shown),
        RECORD_MIMETYPE: run.to_record(),
    }


def stream_bundle(handler: str, chunks: list[Any], elapsed_ms: float) -> dict[str, Any]:
    """The live view of a stream in progress."""
    color = COLORS["IN_PROGRESS"]
    head = f"… IN_PROGRESS  {handler}  {_duration(elapsed_ms)}  {len(chunks)} chunks"
    text = _chunks_text(chunks)
    return {
        "text/plain": f"{head}\n{text}",
        "text/html": (
            f'<div class="nbworker-run" style="{_STYLE.format(color=color)}">'
            f'<div><b style="color:{color}">{html.escape(head)}</b></div>'
            f'<pre style="{_PRE}">{html.escape(text)}</pre></div>'
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
    ) -> None:
        self.handler = handler
        self.interval = interval
        self._update = update
        self._chunks: list[Any] = []
        self._started = time.perf_counter()
        self._lock = threading.Lock()
        self._shown = 0  # chunks on screen (the caller shows the empty view first)
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False

    def add(self, chunk: Any, index: int | None = None) -> None:
        with self._lock:
            self._chunks.append(chunk)
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
        count = len(self._chunks)
        if count != self._shown:
            self._shown, self._last = count, now
            self._update(
                stream_bundle(self.handler, self._chunks[:count], (now - self._started) * 1000)
            )

    def close(self, final: dict[str, Any]) -> None:
        """Replace the live view with `final`; no update comes after it."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            self._update(final)


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
