"""Replay: each `%rp_test` run of a notebook re-run is compared with the run it recorded.

`nbworker test` runs a notebook top to bottom in a fresh kernel with a first cell that
calls `start(...)` with the runs the stored notebook holds. From then on every cell is
matched to its stored counterpart by its source (the n-th run of a source is the n-th cell
with that source), and each `%rp_test` in it compares its new run with the recorded one, in
order: status, output, stream chunk by chunk (floats within a relative tolerance) and the
error (for an exception: its type and message, not the traceback or host). The outcome is
shown in the cell and recorded under `REPLAY_MIMETYPE`; a mismatch then raises
`ReplayMismatch`, which fails that cell with the differences and nothing else.

Pure Python: IPython is only asked for its shell, to watch cells start.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbworker import compare
from nbworker.errors import MalformedRecord, ReplayMismatch

__all__ = [
    "CELL_MIMETYPE",
    "LEDGER_WIDTH",
    "REPLAY_MIMETYPE",
    "Expected",
    "MalformedRecord",
    "Outcome",
    "Replay",
    "ReplayMismatch",
    "compare_runs",
    "current",
    "record_problem",
    "run_cells",
    "start",
    "stop",
]

REPLAY_MIMETYPE = "application/vnd.nbworker.replay+json"
CELL_MIMETYPE = "application/vnd.nbworker.cell+json"  # run_cells' marks
LEDGER_WIDTH = 8  # digits of a cell's index in run_cells' ledger
DEFAULT_RTOL = compare.DEFAULT_REL_TOL


def _json_type(value: Any) -> str:
    """`value`'s JSON type, for messages (nbformat's objects are dict subclasses)."""
    for kind, name in ((bool, "boolean"), ((int, float), "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    if isinstance(value, (list, tuple)):
        return "array"
    return "object" if isinstance(value, dict) else "null" if value is None else "value"


def record_problem(record: Any) -> str | None:
    """What makes `record` no run record (None: it is one). Only what replaying reads is
    checked, by type: a wrong value (a status no run has) is a difference the replay shows."""
    if not isinstance(record, dict):
        return f"the run record is not an object (a JSON {_json_type(record)})"
    for key in ("handler", "status"):
        if not isinstance(record.get(key), str):
            found = "missing" if key not in record else f"a JSON {_json_type(record[key])}"
            return f"its {key} is not a string ({found})"
    job = record.get("job")
    if not isinstance(job, dict):
        found = "missing" if "job" not in record else f"a JSON {_json_type(job)}"
        return f"its job is not an object ({found})"
    if "input" not in job:
        return "its job has no input"
    if record.get("stream") is not None and not isinstance(record["stream"], list):
        return f"its stream is neither null nor a list (a JSON {_json_type(record['stream'])})"
    return None


@dataclass
class Expected:
    """The runs one code cell of the stored notebook recorded, in order."""

    cell: int  # index in the stored notebook
    cell_id: str | None
    source: str
    records: list[dict[str, Any]]


@dataclass
class Outcome:
    """How one run compared with the run recorded for it."""

    cell: int | None  # index in the stored notebook (None: a run nothing was recorded for)
    cell_id: str | None
    case: int  # 1-based, among the runs of that cell
    handler: str
    result: str  # "passed", "failed", "skipped" (--no-compare), "new" (nothing recorded)
    differences: list[str] = field(default_factory=list)
    duration_ms: float | None = None  # of the new run

    def summary(self) -> str:
        where = "a new run" if self.cell is None else f"cell {self.cell} case {self.case}"
        head = f"replay of {where} ({self.handler}): {self.result}"
        if not self.differences:
            return head
        return head + "\n" + "\n".join(f"  {line}" for line in self.differences)

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "cell_id": self.cell_id,
            "case": self.case,
            "handler": self.handler,
            "result": self.result,
            "differences": list(self.differences),
            "duration_ms": self.duration_ms,
        }


# ------------------------------------------------------------------------ comparing


def compare_runs(
    got: Mapping[str, Any],
    recorded: Mapping[str, Any],
    *,
    rtol: float = DEFAULT_RTOL,
    ignore: Iterable[str] = (),
) -> list[str]:
    """The differences between a new run record and the recorded one ([] if the same),
    by `nbworker.compare`, the code the exported worker's tests compare with.

    `ignore` names dict keys left out of the output and stream chunks at any depth, or the
    whole `output`, `stream` or `error`.
    """
    ignored = frozenset(ignore)
    out: list[str] = []
    if got.get("handler") != recorded.get("handler"):
        out.append(f"handler: got {got.get('handler')!r}, recorded {recorded.get('handler')!r}")
    if got.get("status") != recorded.get("status"):
        error = got.get("error")
        detail = f", error {compare.short(compare.error_key(error))}" if error else ""
        out.append(f"status: got {got.get('status')}, recorded {recorded.get('status')}{detail}")
    for key in ("output", "stream"):
        out += compare.differences(got.get(key), recorded.get(key), key, ignored, rtol)
    if "stream" not in ignored and got.get("stream_total") != recorded.get("stream_total"):
        # a stream too long to record whole: its first chunks compared above, its length here
        out.append(
            f"stream: got {got.get('stream_total') or len(got.get('stream') or [])} chunks, "
            f"recorded {recorded.get('stream_total') or len(recorded.get('stream') or [])}"
        )
    out += compare.differences(
        compare.error_key(got.get("error")),
        compare.error_key(recorded.get("error")),
        "error",
        ignored,
        rtol,
    )
    if bool(got.get("refresh_worker")) != bool(recorded.get("refresh_worker")):
        out.append(
            f"refresh_worker: got {bool(got.get('refresh_worker'))}, "
            f"recorded {bool(recorded.get('refresh_worker'))}"
        )
    return out


# ------------------------------------------------------------------------ the replay


class Replay:
    """Matches the cells of a re-run to the stored ones, and checks each run in order."""

    def __init__(self, expected: Iterable[Expected], *, rtol: float = DEFAULT_RTOL) -> None:
        if not rtol >= 0:
            raise ValueError(f"rtol must be a number >= 0, not {rtol!r}")
        self.expected = list(expected)
        self.rtol = rtol
        self.outcomes: list[Outcome] = []
        # source -> the stored cells with that source not yet matched, the first last
        self._unmatched: dict[str, list[Expected]] = {}
        for cell in reversed(self.expected):
            self._unmatched.setdefault(cell.source, []).append(cell)
        self._cell: Expected | None = None
        self._runs = 0  # runs checked in the current cell
        self._lock = threading.Lock()

    def start_cell(self, source: str) -> None:
        """A cell is about to run: find the stored cell it is (the first unmatched one with
        the same source)."""
        with self._lock:
            self._cell, self._runs = None, 0
            waiting = self._unmatched.get(source)
            if waiting:
                self._cell = waiting.pop()

    def check(
        self, record: Mapping[str, Any], *, compare: bool = True, ignore: Iterable[str] = ()
    ) -> Outcome:
        """Compare a new run of the current cell with the run recorded in its place."""
        with self._lock:
            self._runs += 1
            cell = self._cell
            handler = str(record.get("handler"))
            if cell is None or self._runs > len(cell.records):
                outcome = Outcome(
                    None if cell is None else cell.cell,
                    None if cell is None else cell.cell_id,
                    self._runs,
                    handler,
                    "new",
                    ["no run was recorded here: nothing to compare with"],
                )
            elif not compare:
                outcome = Outcome(cell.cell, cell.cell_id, self._runs, handler, "skipped")
            else:
                differences = compare_runs(
                    record, cell.records[self._runs - 1], rtol=self.rtol, ignore=ignore
                )
                result = "failed" if differences else "passed"
                outcome = Outcome(cell.cell, cell.cell_id, self._runs, handler, result, differences)
            outcome.duration_ms = record.get("duration_ms")
            self.outcomes.append(outcome)
            return outcome


def expected_runs(notebook: Any) -> list[Expected]:
    """The recorded runs of a notebook (nbformat's, or its JSON dicts), cell by cell (cells
    with none left out).
    MalformedRecord names the first record that is no run record."""
    from nbworker.record import recorded_runs

    found = []
    for index, cell in enumerate(notebook["cells"]):
        if cell.get("cell_type") != "code":
            continue
        records = recorded_runs(cell)
        for number, record in enumerate(records, 1):
            problem = record_problem(record)
            if problem is not None:
                raise MalformedRecord(
                    cell=index, cell_id=cell.get("id"), record=number, problem=problem
                )
        if records:
            source = cell["source"]
            source = source if isinstance(source, str) else "".join(source)
            found.append(Expected(index, cell.get("id"), source, records))
    return found


_current: Replay | None = None


def current() -> Replay | None:
    """The replay this kernel is in, if `nbworker test` started one."""
    return _current


def start(expected: str | list[dict[str, Any]], *, rtol: float = DEFAULT_RTOL) -> Replay:
    """Turn on replay in this kernel: `expected` is a JSON file (or its content) listing
    `{"cell", "cell_id", "source", "records"}` per stored cell. Called by `nbworker test`
    in the cell it puts first."""
    global _current
    items = expected
    if isinstance(items, str):
        with open(items, encoding="utf-8") as file:
            items = json.load(file)
    _current = Replay((Expected(**item) for item in items), rtol=rtol)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: no cells to watch
        return _current
    shell = get_ipython()
    if shell is not None:
        shell.events.register("pre_run_cell", _pre_run_cell)
        _defer_history(shell)
    return _current


# A replay kernel runs a notebook once and is thrown away: IPython writes its history to
# SQLite after every cell (a thread woken per cell, a commit), a third of what a `%rp_test`
# cell costs there. Deferred, it is written once, as the kernel exits.
_DEFERRED_HISTORY = 1 << 30
_history_cache_size: int | None = None  # IPython's own, restored by stop()


def _defer_history(shell: Any) -> None:
    global _history_cache_size
    manager = getattr(shell, "history_manager", None)
    if manager is not None and _history_cache_size is None:
        _history_cache_size = manager.db_cache_size
        manager.db_cache_size = _DEFERRED_HISTORY


def stop() -> None:
    global _current, _history_cache_size
    _current = None
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        with contextlib.suppress(ValueError):  # not registered
            shell.events.unregister("pre_run_cell", _pre_run_cell)
        manager = getattr(shell, "history_manager", None)
        if manager is not None and _history_cache_size is not None:
            manager.db_cache_size = _history_cache_size
            _history_cache_size = None


def _pre_run_cell(info: Any) -> None:
    replay = _current
    if replay is not None:
        replay.start_cell(info.raw_cell)


def run_cells(sources: list[str], allowed: list[str], ledger: str | None = None) -> None:
    """Run cells one after the other in this kernel, each as a cell of its own (IPython's
    `run_cell`: its history entry, execution count, events and outputs), for `nbworker
    test` to send a run of `%rp_test` cells in one request. A display_data of
    `CELL_MIMETYPE` after each says how it ended (`{"index": i, "status",
    "execution_count", "ename", "evalue"}`); displaying flushes stdout and stderr first, so
    each cell's output comes before its mark and after the one before it (one mark a cell:
    each display costs two flushes, each a round trip to ipykernel's IOPub thread). The
    first cell that fails with an error not named in `allowed` ends the run, as it would
    end a run of the notebook.

    `ledger`, a file's path, gets the index of each cell as it starts (`LEDGER_WIDTH`
    digits at its start, one write each): a message still in ZeroMQ's queue dies with a
    kernel that a cell kills (`os._exit`, a crash), a write to a file does not, so the
    caller can name the cell that killed it."""
    import sys

    from IPython import get_ipython
    from IPython.display import publish_display_data

    from nbworker.record import safe_str

    shell = get_ipython()
    fd = None if ledger is None else os.open(ledger, os.O_WRONLY)
    try:
        for index, source in enumerate(sources):
            if fd is not None:
                os.pwrite(fd, b"%0*d" % (LEDGER_WIDTH, index), 0)
            result = shell.run_cell(source, store_history=True)
            error = result.error_before_exec or result.error_in_exec
            end: dict[str, Any] = {
                "index": index,
                "status": "ok" if error is None else "error",
                "execution_count": result.execution_count,
            }
            if error is not None:
                end.update(ename=type(error).__name__, evalue=safe_str(error))
            publish_display_data({CELL_MIMETYPE: end})
            # and wait until ipykernel's IOPub thread has handed it to ZeroMQ (a flush
            # waits for the thread, as a cell's reply does); the ledger names a cell that
            # kills the kernel before ZeroMQ has sent this
            sys.stdout.flush()
            if error is not None and end["ename"] not in allowed:
                return
    finally:
        if fd is not None:
            os.close(fd)
