"""The run record: the one model of a job run that the magics, the panel, export and the
replays share.

A `Run` is what a job did, as RunPod reports it (status, output, error, stream) plus what
the notebook shows (duration, warnings, progress). `Run.to_record()` is the JSON kept in
the cell under `RECORD_MIMETYPE` (one display a run); the panel keeps the records of its
runs in one display of its cell, under `PANEL_MIMETYPE`, each marked `"origin": "panel"`.
`recorded_runs` reads both back from a notebook cell, and `Run.from_record` makes a run of
one again. Nothing here runs or shows a job: `jobs` runs them, `display` shows them.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

__all__ = [
    "FINAL_STATUSES",
    "PANEL_MIMETYPE",
    "PANEL_ORIGIN",
    "RECORD_MIMETYPE",
    "RECORD_STREAM_LIMIT",
    "Run",
    "Status",
    "dumps_sharing",
    "is_plain",
    "jsonable",
    "recorded_runs",
    "safe_repr",
    "safe_str",
    "scrub",
]

Status = Literal["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"]
# The statuses a job ends in, as RunPod names them: the one set the runner, %rp_serve, the
# client and the magics test against (IN_QUEUE and IN_PROGRESS are the others RunPod has).
FINAL_STATUSES: frozenset[str] = frozenset(get_args(Status))
RECORD_MIMETYPE = "application/vnd.nbworker.run+json"
# The panel's runs: `{"runs": [record, ...]}` in one display, updated in place as it runs.
PANEL_MIMETYPE = "application/vnd.nbworker.panel+json"
PANEL_ORIGIN = "panel"  # a record's "origin" when it is a panel run (%rp_test's have none)


def recorded_runs(cell: Any) -> list[dict[str, Any]]:
    """The runs a notebook cell (an nbformat cell or its JSON) recorded, in order: a
    `%rp_test` record per display, and the runs a panel kept in its display. A panel display
    that holds no list of runs is given back as it is, one record that is none, for the
    callers' checks to name."""
    runs = []
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if RECORD_MIMETYPE in data:
            runs.append(data[RECORD_MIMETYPE])
        if PANEL_MIMETYPE in data:
            kept = data[PANEL_MIMETYPE]
            listed = kept.get("runs") if isinstance(kept, dict) else None
            if isinstance(listed, list):
                runs.extend(listed)
            else:
                runs.append(kept)
    return runs


def safe_str(value: Any) -> str:
    """`str(value)`, or what it is when its own `__str__` raises (a handler's exception may)."""
    try:
        return str(value)
    except Exception as err:
        return f"<{type(value).__name__} object: str() failed with {type(err).__name__}>"


def safe_repr(value: Any) -> str:
    """`repr(value)`, or what it is when its own `__repr__` raises."""
    try:
        return repr(value)
    except Exception as err:
        return f"<{type(value).__name__} object: repr() failed with {type(err).__name__}>"


def scrub(text: str, replacement: str = "replace") -> str:
    """`text` without lone surrogates ("\\ud800" is valid JSON but no valid UTF-8: Jupyter
    cannot send or save it). `replacement` is a codec error handler: "replace" gives
    U+FFFD, "backslashreplace" the escape as text."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(
            char
            if not 0xD800 <= ord(char) <= 0xDFFF
            else ("\ufffd" if replacement == "replace" else f"\\u{ord(char):04x}")
            for char in text
        )
    return text


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy for the record: NaN -> None, unknown objects -> their repr, lone
    surrogates -> U+FFFD."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, int) and not _writable_int(value):
        return f"<int of {value.bit_length():,} bits: more digits than Python writes>"
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 100:
        return safe_repr(value)
    if isinstance(value, dict):
        return {scrub(str(key)): jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item, depth + 1) for item in value]
    return scrub(safe_repr(value))


_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({list, dict})
_PLAIN = _SCALARS | _CONTAINERS


def is_plain(value: Any, depth: int = 0) -> bool:
    """Whether `jsonable(value)` leaves `value` as it is, as far as its types tell: dicts
    with str keys, lists, str, int, float, bool and None (exact types), nested at most 100
    deep. What else jsonable changes (NaN, ints past Python's digit limit, lone surrogates)
    the JSON encoder refuses, so a plain value that encodes is recorded as it is. The
    types of a container's items are collected in C (`set(map(type, ...))`): a list of a
    million floats costs a few tens of ms, not a walk in Python."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 100:
        return False
    if kind is dict:
        if not set(map(type, value)) <= {str}:
            return False
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return False
    kinds = set(map(type, items))
    if kinds <= _SCALARS:
        return True
    return kinds <= _PLAIN and all(
        is_plain(item, depth + 1) for item in items if type(item) in _CONTAINERS
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def dumps_sharing(value: Any, shared: Any, text: str) -> str:
    """`json.dumps(value, ensure_ascii=False, allow_nan=False)`, as Jupyter encodes a
    message, where the object `shared` (held in dicts of `value`) is already encoded as
    `text`: a run's big output is encoded once, for its checks, its record and its
    message alike. The same text as json.dumps (its separators `, ` and `: `), joined once."""
    pieces: list[str] = []
    _pieces(value, shared, text, pieces)
    return "".join(pieces)


def _pieces(value: Any, shared: Any, text: str, pieces: list[str]) -> None:
    if value is shared:
        pieces.append(text)
    elif type(value) is not dict or not all(type(key) is str for key in value):
        pieces.append(_dumps(value))
    else:
        pieces.append("{")
        for index, (key, item) in enumerate(value.items()):
            pieces.append(f"{', ' if index else ''}{_dumps(key)}: ")
            _pieces(item, shared, text, pieces)
        pieces.append("}")


def _writable_int(value: int) -> bool:
    """Whether str() (and so json.dumps) takes `value`: not past sys.get_int_max_str_digits()."""
    limit = sys.get_int_max_str_digits()
    return not limit or value.bit_length() * 0.30103 < limit - 2  # log10(2): digits per bit


@dataclass
class Run:
    """One job run: what RunPod would report, and what the notebook shows and records.

    `result` is the envelope a deployed worker's job loop sends (`{"output": ...}`,
    `{"error": ...}`, `"stopPod"`); None when the run was stopped (timeout, interrupt).
    `delivered` is False when that envelope cannot be sent (not JSON-serialisable): a
    deployed job would then hang.
    """

    handler: str
    job: dict[str, Any]
    status: Status
    output: Any = None
    error: Any = None
    stream: list[Any] | None = None
    refresh_worker: bool = False
    duration_ms: float = 0.0
    result: dict[str, Any] | None = None
    delivered: bool = True
    traceback: str | None = None
    warnings: list[str] = field(default_factory=list)
    # `progress_update(job, value)` calls: {"value": ..., "seconds": since the run started}
    progress: list[dict[str, Any]] = field(default_factory=list)
    # The KeyboardInterrupt that cancelled the run, for a caller that wants to re-raise it.
    interrupt: KeyboardInterrupt | None = field(default=None, repr=False, compare=False)
    # The output's JSON (C encoder, as sent), set by the runner when the output is plain
    # JSON (`is_plain`, finite, UTF-8): the record then keeps the output as it is, and the
    # views and the kernel's message reuse this text instead of encoding it again.
    output_json: str | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"

    def to_record(self) -> dict[str, Any]:
        """The JSON recorded in the cell under `RECORD_MIMETYPE`; its shape is stable.

        A stream whose chunks pass `RECORD_STREAM_LIMIT` characters of JSON is recorded
        up to there, with `stream_total`, the number of chunks it had: an endless generator
        under a timeout must not write gigabytes into the notebook. The cut depends on the
        chunks alone, so a replay of the same stream is cut at the same chunk.

        An output that is plain JSON (`output_json` set, see `is_plain`) is the run's own
        object, not a copy: `jsonable` would give an equal one, at the cost of a walk."""
        warnings = [scrub(warning) for warning in self.warnings]
        stream = None if self.stream is None else jsonable(self.stream)
        total = None
        if stream is not None:
            kept = _recordable_prefix(stream)
            if kept < len(stream):
                total, stream = len(stream), stream[:kept]
                warnings.append(
                    f"the record keeps the first {kept:,} of the {total:,} chunks "
                    f"({RECORD_STREAM_LIMIT:,} characters of JSON); replays compare those "
                    "and the count"
                )
        return {
            "handler": self.handler,
            "job": jsonable(self.job),
            "status": self.status,
            "output": self.output if self.output_json is not None else jsonable(self.output),
            "error": jsonable(self.error),
            "stream": stream,
            **({"stream_total": total} if total is not None else {}),
            "refresh_worker": self.refresh_worker,
            "duration_ms": round(self.duration_ms, 3),
            "warnings": warnings,
            **({"progress": list(self.progress)} if self.progress else {}),
        }

    # How a notebook shows a run: `display` sets it when imported (the session imports it),
    # so a run shows its card and record even without `%load_ext nbworker`; the record
    # itself does not import the display.
    renderer: ClassVar[Callable[[Run], dict[str, Any]] | None] = None

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        renderer = type(self).renderer
        return None if renderer is None else renderer(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Run:
        """The run a record describes (what `to_record` wrote, read back): the view of a
        recorded or replayed run. What a record does not keep (the result envelope, the
        traceback's frames) stays at its default."""
        return cls(
            handler=record.get("handler", ""),
            job=record.get("job") or {},
            status=record.get("status", "FAILED"),
            output=record.get("output"),
            error=record.get("error"),
            stream=record.get("stream"),
            refresh_worker=bool(record.get("refresh_worker")),
            duration_ms=float(record.get("duration_ms") or 0.0),
            warnings=list(record.get("warnings") or []),
            progress=list(record.get("progress") or []),
        )

    def __repr__(self) -> str:
        detail = (
            f"error={safe_repr(self.error)}"
            if self.status == "FAILED"
            else f"output={safe_repr(self.output)}"
        )
        if len(detail) > 200:
            detail = detail[:197] + "..."
        return f"<Run {self.handler} {self.status} in {self.duration_ms:.2f} ms, {detail}>"


RECORD_STREAM_LIMIT = 500_000  # characters of a record's stream chunks, as JSON


def _recordable_prefix(chunks: list[Any]) -> int:
    """How many of the (JSON-safe) chunks fit in RECORD_STREAM_LIMIT characters of JSON."""
    size = 0
    for index, chunk in enumerate(chunks):
        size += len(json.dumps(chunk, ensure_ascii=False)) + 2  # ", " between chunks
        if size > RECORD_STREAM_LIMIT:
            return index
    return len(chunks)
