"""How values read for people, in plain text: JSON laid out to be read and cut where it
is long (a million floats cost no more than a few), and `progress_update` values as how
far along a job is. Used by the run views (`nbworker.display`, `nbworker.live`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from nbworker.record import safe_repr

__all__ = [
    "MAX_SHOWN",
    "WIDTH",
    "dump",
    "dump_text",
    "json_key",
    "one_line_json",
    "progress_fraction",
    "progress_line",
    "progress_text",
]

MAX_SHOWN = 4000  # characters of one value in the text view; the record keeps everything
WIDTH = 100  # characters a value's JSON takes on one line before it is spread over lines

# --------------------------------------------------------------------------- values as JSON

_LAZY = json.JSONEncoder(ensure_ascii=False)  # iterencode in Python: it stops when we do


def _one_line(value: Any, room: int) -> str | None:
    """The one-line JSON of `value` when it takes at most `room` characters; a big value
    is encoded only that far."""
    size, pieces = 0, []
    for piece in _LAZY.iterencode(value):
        size += len(piece)
        if size > room:
            return None
        pieces.append(piece)
    return "".join(pieces)


def json_key(key: Any) -> str:
    """A dict key as JSON writes it (`"name"`, `"1"` for 1)."""
    return json.dumps({key: 0}, ensure_ascii=False)[1:-4]  # json's own rule for keys


def _pieces(value: Any, level: int, room: int) -> Iterator[str]:
    """The pieces of `value`'s JSON for people: a value that fits in `room` characters on
    one line, else spread over lines with a two-space indent, short scalars of a list
    filling lines. Lazy: the caller stops taking pieces once it has shown enough."""
    one = _one_line(value, room)
    if one is not None:
        yield one
        return
    pad, width = "  " * (level + 1), WIDTH - 2 * (level + 1)
    if isinstance(value, dict) and value:
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            head = json_key(key) + ": "
            yield f"{',' if index else ''}\n{pad}{head}"
            yield from _pieces(item, level + 1, width - len(head))
        yield f"\n{'  ' * level}}}"
    elif isinstance(value, (list, tuple)) and value:
        yield "["
        used: int | None = None  # characters on the current line; None: start a new one
        for index, item in enumerate(value):
            text = None if isinstance(item, (dict, list, tuple)) else _one_line(item, width)
            if text is not None and used is not None and used + len(text) + 2 <= width:
                yield f", {text}"
                used += len(text) + 2
                continue
            yield f"{',' if index else ''}\n{pad}"
            if text is not None:
                yield text
                used = len(text)
            else:
                yield from _pieces(item, level + 1, width)
                used = None
        yield f"\n{'  ' * level}]"
    else:  # a long string
        yield _LAZY.encode(value)


def dump(value: Any, text: str | None = None) -> tuple[str, str | None]:
    """`value` for people, and what it was cut from when it was cut at MAX_SHOWN
    characters (else None). JSON on one line when it fits in WIDTH characters, else spread
    over lines as far as it is shown (`_pieces`): a million floats cost no more than a few.
    `text` is the value's one-line JSON where the caller has it (a run's output)."""
    try:
        text = text if text is not None else json.dumps(value, ensure_ascii=False)
        if len(text) <= WIDTH:
            return text, None
        shown, whole = "", f"{len(text):,} in one line of JSON"
        for piece in _pieces(value, 0, WIDTH):
            shown += piece
            if len(shown) > MAX_SHOWN:
                break
    except (TypeError, ValueError, RecursionError):
        shown = safe_repr(value)
        whole = f"{len(shown):,}"
    if len(shown) > MAX_SHOWN:
        return shown[:MAX_SHOWN], whole
    return shown, None


def dump_text(value: Any, text: str | None = None) -> str:
    """`dump` with the note of where it was cut."""
    shown, whole = dump(value, text)
    return shown if whole is None else f"{shown}\n… (cut at {MAX_SHOWN:,} characters of {whole})"


def one_line_json(value: Any) -> str:
    """`value` as one line of JSON; its repr where JSON cannot hold it."""
    try:
        return json.dumps(value, ensure_ascii=False, default=safe_repr)
    except (ValueError, RecursionError):  # circular, too deep, an int of 5000 digits
        return safe_repr(value)


# --------------------------------------------------------------------------- progress

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


def progress_text(value: Any) -> str:
    """A `progress_update` value as a line of at most 200 characters."""
    text = value if isinstance(value, str) else one_line_json(value)
    return text if len(text) <= 200 else text[:197] + "..."


def progress_line(value: Any) -> str:
    """One progress update for people: the value, and a bar when it says how far."""
    text = progress_text(value)
    fraction = progress_fraction(value)
    if fraction is None:
        return text
    filled = round(fraction * BAR_WIDTH)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return f"[{bar}] {fraction:.0%}  {text}"
