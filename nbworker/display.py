"""How runs look in a notebook: HTML and plain text for people, and a JSON record of the
run under nbworker's own mimetype for export and replay. Pure functions returning
mimebundles; nothing here runs jobs or imports IPython.

The HTML takes its colours from JupyterLab's theme variables (light, dark and high
contrast alike), with fallbacks for other front ends; a status colour marks (the border,
the symbol) and the text is the theme's own text colour, which every theme makes legible.
Values sit in scroll boxes of bounded height. Each block element is on its own line and a
value's newlines are written `&#10;`, so the HTML is one block with no blank line in it
when nbconvert embeds it in markdown (a blank line would end the block mid-value).
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from typing import Any

from nbworker import memory, values
from nbworker.cache import Entry, Released
from nbworker.record import RECORD_MIMETYPE, Run, scrub
from nbworker.values import MAX_SHOWN, progress_fraction, progress_line

__all__ = [
    "MARKS",
    "ago",
    "cache_bundle",
    "card_open",
    "chunks_view",
    "duration",
    "entry_line",
    "plural",
    "progress_fraction",
    "progress_html",
    "progress_line",
    "released_line",
    "run_bundle",
    "run_html",
    "run_text",
    "status_color",
    "traceback_tidier",
    "value_html",
]

# Symbols in DejaVu Sans and DejaVu Sans Mono (the fonts Debian's Chromium falls back to):
# "⏱" is in neither and shows as an empty box.
MARKS = {"COMPLETED": "✓", "FAILED": "✗", "TIMED_OUT": "◷", "CANCELLED": "■", "IN_PROGRESS": "…"}
# Marks and borders only, never text: in JupyterLab's themes each is at least 3:1 against
# the background (success and warn are under 4.5:1 in the light theme, too low for text).
# The fallbacks are at least 3:1 on white and on a dark editor's #1e1e1e.
COLORS = {
    "COMPLETED": "var(--jp-success-color1, #2e8540)",
    "FAILED": "var(--jp-error-color1, #d93f3f)",
    "TIMED_OUT": "var(--jp-warn-color0, #c26100)",
    "CANCELLED": "var(--jp-content-font-color2, #808080)",
    "IN_PROGRESS": "var(--jp-brand-color1, #2f7fd6)",
}
TEXT_COLOR = "var(--jp-content-font-color1, inherit)"
DIM_COLOR = "var(--jp-content-font-color2, inherit)"
VALUE_BACKGROUND = "var(--jp-cell-editor-background, rgba(127, 127, 127, 0.08))"
NOTE_BACKGROUND = "rgba(255, 152, 0, 0.14)"  # translucent: right on light and dark alike
MAX_HTML = 100_000  # characters of a stream's chunks or joined text in the HTML view
MAX_CHUNKS_SHOWN = 50  # the last chunks listed in the text view

_CARD = (
    "border-left:4px solid {color};padding:4px 10px;margin:2px 0;color:" + TEXT_COLOR + ";"
    "font-family:var(--jp-code-font-family, monospace);"
    "font-size:var(--jp-code-font-size, 13px);line-height:1.45"
)
_VALUE = (
    "max-height:24em;overflow:auto;margin:2px 0 4px 0;padding:4px 6px;white-space:pre-wrap;"
    "overflow-wrap:anywhere;background:" + VALUE_BACKGROUND + ";color:inherit;"
    "font-family:inherit;font-size:inherit;line-height:inherit;border-radius:2px"
)
_SUMMARY = f"cursor:pointer;color:{DIM_COLOR}"
_NOTE = f"background:{NOTE_BACKGROUND};padding:2px 6px;margin:2px 0"


def status_color(status: str) -> str:
    """The CSS colour of a status (a theme variable with a fallback), for marks and borders."""
    return COLORS[status]


def card_open(status: str, *, live: bool = False) -> str:
    """The opening `<div>` of a run's card: classes `nbworker-run nbworker-<status>` (and
    `nbworker-live` while it runs), a border in the status colour, the theme's text colour."""
    classes = f"nbworker-run nbworker-{status.lower()}" + (" nbworker-live" if live else "")
    return f'<div class="{classes}" style="{_CARD.format(color=status_color(status))}">'


def plural(n: int, word: str) -> str:
    """`1 chunk`, `3 chunks`, `1,200 chunks`."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def duration(ms: float) -> str:
    """A duration in milliseconds for people: `412 µs`, `3.20 ms`, `4.00 s`."""
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.2f} ms"
    return f"{ms / 1000:.2f} s"


def _esc(text: str) -> str:
    """`text` escaped for HTML, its newlines as `&#10;` (see the module's docstring)."""
    return html.escape(text).replace("\r", "&#13;").replace("\n", "&#10;")


def value_html(text: str) -> str:
    """A value for the HTML view: escaped, in a scroll box of bounded height
    (`pre.nbworker-value`, at most 24em high)."""
    return f'<pre class="nbworker-value" style="{_VALUE}">{_esc(text)}</pre>'


def _details(summary: str, body: str, *, is_open: bool) -> str:
    """A collapsible section: `summary` is HTML, `body` a block of HTML."""
    return (
        f"<details{' open' if is_open else ''}>\n"
        f'<summary style="{_SUMMARY}">{summary}</summary>\n{body}\n</details>'
    )


def progress_html(value: Any) -> str:
    """One progress update as HTML: a `<progress>` bar when it says how far, and the value."""
    fraction = progress_fraction(value)
    text = _esc(values.progress_text(value))
    if fraction is None:
        return f"<div>progress: {text}</div>"
    return (
        f'<div>progress: <progress value="{fraction:.4f}" max="1" '
        f'style="vertical-align:middle;width:12em"></progress> {fraction:.0%} · {text}</div>'
    )


# --------------------------------------------------------------------------- streams


def _joined(chunks: list[Any]) -> tuple[str, str] | None:
    """(what, text): the chunks joined, when they are strings or dicts whose one string
    field has the same key in every chunk (`{"token": "..."}`); None otherwise."""
    if len(chunks) < 2:
        return None
    if all(isinstance(chunk, str) for chunk in chunks):
        return "the chunks joined", "".join(chunks)
    key = None
    for chunk in chunks:
        if not isinstance(chunk, dict):
            return None
        keys = [name for name, item in chunk.items() if isinstance(item, str)]
        if len(keys) != 1 or key not in (None, keys[0]):
            return None
        key = keys[0]
    return f"the chunks' {values.json_key(key)} joined", "".join(chunk[key] for chunk in chunks)


def _chunk_lines(chunks: list[Any], start: int, stop: int, budget: int) -> tuple[list[str], int]:
    """`[i] <json>` lines for chunks[start:stop] until `budget` characters; and the index
    where they stopped."""
    lines: list[str] = []
    for index in range(start, stop):
        line = f"[{index}] {values.one_line_json(chunks[index])}"
        budget -= len(line) + 1
        if budget < 0 and lines:
            return lines, index
        lines.append(line)
    return lines, stop


def chunks_view(chunks: list[Any]) -> tuple[str, str]:
    """(text, html) of a stream's chunks. The text lists the last MAX_CHUNKS_SHOWN and
    says how many came before; the HTML lists the last ones and the earlier ones in a
    closed <details> (MAX_HTML characters of them at most). Both add the joined text when
    the chunks are strings or dicts with one string field (a token stream)."""
    total = len(chunks)
    first = max(total - MAX_CHUNKS_SHOWN, 0)
    last, _ = _chunk_lines(chunks, first, total, MAX_HTML)
    text = [f"… {plural(first, 'earlier chunk')}: the Run's .stream has all {total:,}"]
    text = text[: bool(first)] + [line if len(line) <= 300 else line[:299] + "…" for line in last]
    parts = []
    if first:
        earlier, stopped = _chunk_lines(chunks, 0, first, MAX_HTML)
        if stopped < first:
            earlier.append(f"… {plural(first - stopped, 'chunk')} more: see the Run's .stream")
        parts.append(
            _details(
                _esc(plural(first, "earlier chunk")),
                value_html("\n".join(earlier)),
                is_open=False,
            )
        )
    parts.append(value_html("\n".join(last)))
    joined = _joined(chunks)
    if joined is not None:
        what, whole = joined
        cut = whole if len(whole) <= MAX_SHOWN else whole[:MAX_SHOWN] + "\n… (cut)"
        text.append(f"{what}: {cut}" if "\n" not in cut else f"{what}:\n{cut}")
        shown = whole[:MAX_HTML] + ("\n… (cut)" if len(whole) > MAX_HTML else "")
        parts.append(f"<div>{_esc(what)}:</div>\n{value_html(shown)}")
    return "\n".join(text), "\n".join(parts)


# --------------------------------------------------------------------------- finished runs

# (title, text for the text view, HTML summary, HTML body, open in the HTML view)
Section = tuple[str, str, str, str, bool]


def _error_text(run: Run) -> str:
    """The error for people, as `Type: message`: RunPod's error JSON summarised, and a
    generator's `handler: <message> \\ntraceback: ...` given the type its traceback ends with."""
    error = run.error
    if isinstance(error, str) and error.startswith("{"):
        try:
            info = json.loads(error)
        except ValueError:
            return error
        if isinstance(info, dict) and "error_type" in info:
            kind = re.sub(r"^<class '(?:builtins\.)?(.*)'>$", r"\1", str(info["error_type"]))
            return f"{kind}: {info.get('error_message', '')}"
    if isinstance(error, str) and error.startswith("handler: "):
        message, _, trace = error[len("handler: ") :].partition(" \ntraceback: ")
        return f"{_exception_type(trace, message) or 'handler'}: {message}"
    return error if isinstance(error, str) else values.dump_text(error)


def _exception_type(trace: str, message: str) -> str | None:
    """The type an exception's traceback names on its `Type: message` line (the last)."""
    first = message.split("\n", 1)[0]
    for line in reversed(trace.splitlines()):
        kind = line[: -len(first) - 2] if first else line
        if (line.endswith(f": {first}") or not first) and re.fullmatch(r"[A-Za-z_][\w.]*", kind):
            return kind
    return None


def _is_aggregate(run: Run) -> bool:
    """Whether the output is the list of the chunks (`--aggregate`); the run does not say,
    so the output tells."""
    return bool(run.stream) and isinstance(run.output, list) and run.output == run.stream


def _output_section(run: Run) -> Section:
    if _is_aggregate(run):
        said = f"the list of the {plural(len(run.stream or []), 'chunk')} above (--aggregate)"
        return "output", said, "output", f"<div>{_esc(said)}</div>", True
    shown, whole = values.dump(run.output, run.output_json)
    if run.stream and run.output == []:
        said = "[] (the chunks are the result; with --aggregate the output is their list)"
        return "output", said, "output", f"<div>{_esc(said)}</div>", True
    if whole is None:
        return "output", shown, "output", value_html(shown), True
    note = f"… (cut at {MAX_SHOWN:,} characters of {whole})"
    size = ""
    if isinstance(run.output, (list, dict)):
        size = plural(len(run.output), "item" if isinstance(run.output, list) else "key") + ", "
    title = f"output ({size}{whole.replace(' in one line of JSON', ' characters of JSON')})"
    return "output", f"{shown}\n{note}", _esc(title), value_html(f"{shown}\n{note}"), False


def _sections(run: Run) -> list[Section]:
    """The sections of both views, after the headline and the notes."""
    sections: list[Section] = []
    if run.progress:
        last = run.progress[-1]
        title = (
            f"progress ({plural(len(run.progress), 'update')}, last at "
            f"{duration(last['seconds'] * 1000)})"
        )
        line, body = progress_line(last["value"]), progress_html(last["value"])
        sections.append((title, line, _esc(title), body, True))
    if run.stream or (run.stream is not None and run.ok):
        text, body = chunks_view(run.stream)
        title = f"stream ({plural(len(run.stream), 'chunk')})"
        sections.append((title, text, _esc(title), body, True))
    if run.ok or run.output is not None:
        sections.append(_output_section(run))
    if run.error is not None:
        error = _error_text(run)
        sections.append(("error", error, "error", value_html(error), True))
    if run.traceback and not run.ok:
        trace = run.traceback.rstrip()
        is_open = run.status == "FAILED"
        sections.append(("traceback", trace, "traceback", value_html(trace), is_open))
    return sections


def _notes(run: Run) -> list[str]:
    notes = [f"⚠ {warning}" for warning in run.warnings]
    if run.refresh_worker:
        notes.append("refresh_worker: RunPod would restart this worker after the job.")
    return notes


def run_text(run: Run, sections: list[Section] | None = None) -> str:
    """The text view of a finished run: the headline, the notes, then each section."""
    lines = [
        f"{MARKS[run.status]} {run.status}  {run.handler}  {duration(run.duration_ms)}"
        f"  job {run.job.get('id')}",
        *_notes(run),
    ]
    for title, text, *_ in _sections(run) if sections is None else sections:
        if "\n" in text:
            lines.append(f"{title}:")
            lines.extend(f"  {line}" for line in text.splitlines())
        else:
            lines.append(f"{title}: {text}")
    return "\n".join(lines)


def run_html(run: Run, sections: list[Section] | None = None) -> str:
    """The HTML view of a finished run: a card in the status colour, the headline, the
    notes, the input (closed) and each section in its scroll box."""
    parts = [
        card_open(run.status),
        f'<div><span style="color:{status_color(run.status)}">{MARKS[run.status]}</span>'
        f" <b>{run.status}</b> · <code>{_esc(run.handler)}</code> · "
        f"{duration(run.duration_ms)} · job <code>{_esc(str(run.job.get('id')))}</code></div>",
        *(f'<div style="{_NOTE}">{_esc(note)}</div>' for note in _notes(run)),
        _details("input", value_html(values.dump_text(run.job.get("input"))), is_open=False),
    ]
    for _, _, summary, body, is_open in _sections(run) if sections is None else sections:
        parts.append(_details(summary, body, is_open=is_open))
    parts.append("</div>")
    return "\n".join(parts)


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


def ago(seconds: float) -> str:
    """A duration as `12 s`, `4 min` or `1.5 h`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def since(seconds: float) -> str:
    """How long ago something was: `just now` under a second, else `12 s ago`."""
    return "just now" if seconds < 1 else f"{ago(seconds)} ago"


def _names(entry: Entry) -> str:
    return ", ".join(entry.names) or "binds no names"


def entry_line(entry: Entry, *, hit: bool) -> str:
    """`encoder: cache hit, loaded 4 min ago in 12.3 s, 1.2 GiB on cuda:0 (encoder)`"""
    if hit:
        return (
            f"{entry.name}: cache hit, loaded {since(time.time() - entry.loaded_at)} "
            f"in {entry.load_seconds:.2f} s, {entry.describe_memory()} ({_names(entry)})"
        )
    cuda = f"; {entry.describe_cuda()}" if entry.describe_cuda() else ""
    return (
        f"{entry.name}: loaded in {entry.load_seconds:.2f} s, {entry.describe_memory()} "
        f"({_names(entry)}){cuda}"
    )


def released_line(released: Released) -> str:
    """`encoder: released (evicted), 1.2 GiB on cuda:0`, and what is still referenced."""
    freed = ", ".join(f"{memory.format_bytes(n)} on {d}" for d, n in released.memory.items())
    line = f"{released.name}: released ({released.reason}), {freed or 'no arrays or tensors'}"
    if released.still_referenced:
        line += f"; ⚠ still referenced elsewhere, not freed: {', '.join(released.still_referenced)}"
    return line


_CELL = "text-align:left;padding:2px 14px 2px 0;vertical-align:top"


def cache_bundle(entries: list[Entry], *, budget: int | None) -> dict[str, Any]:
    """The model cache as a table: name, bound names, bytes per device, load, hits, use."""
    now = time.time()
    devices = sorted({device for entry in entries for device in entry.memory})
    header = ["model", "names", *devices, "loaded in", "hits", "last used"]
    rows = [
        [
            entry.name,
            _names(entry),
            *(memory.format_bytes(entry.memory[d]) if d in entry.memory else "" for d in devices),
            f"{entry.load_seconds:.2f} s",
            str(entry.hits),
            since(now - entry.last_used),
        ]
        for entry in entries
    ]
    total = sum(entry.total_bytes for entry in entries)
    summary = f"{len(entries)} cached, {memory.format_bytes(total)}" + (
        f" of a {memory.format_bytes(budget)} budget" if budget is not None else ", no budget"
    )
    if not rows:
        empty = f"the model cache is empty ({summary})"
        return {
            "text/plain": empty,
            "text/html": f'<div class="nbworker-models">{html.escape(empty)}</div>',
        }
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    text = "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
    cells = "".join(f'<th style="{_CELL}">{_esc(h)}</th>' for h in header)
    body = "\n".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{_esc(str(c))}</td>' for c in row) + "</tr>"
        for row in rows
    )
    return {
        "text/plain": f"{text}\n{summary}",
        "text/html": (
            f'<div class="nbworker-models" style="color:{TEXT_COLOR}">\n'
            f'<table style="border-collapse:collapse">\n<thead><tr>{cells}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody>\n</table>\n<div>{_esc(summary)}</div>\n</div>"
        ),
    }


Run.renderer = run_bundle  # see Run.renderer
