"""How a result of the worker or of the re-run notebook is compared with the record.

Values compare as JSON: floats within WORKER_TEST_REL_TOL (default 1e-6), everything else
exactly; a failed job by its error (for an exception: its type and message).

This file is nbworker's `nbworker/compare.py`, copied as it is into each exported worker
(standard library only): `nbworker test` in the notebook and the worker's tests compare
with the same code.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

DEFAULT_REL_TOL = 1e-6  # nbworker test --rtol, and this without WORKER_TEST_REL_TOL
REL_TOL = float(os.environ.get("WORKER_TEST_REL_TOL", DEFAULT_REL_TOL))
ABS_TOL = 1e-9  # for floats near zero


def case_id(case: dict[str, Any]) -> str:
    """The case's name, and the notebook cell that recorded it when known."""
    cell = case.get("cell")
    return case["name"] if cell is None else f"{case['name']} (cell {cell})"


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}...{text[-30:]} ({len(text)} chars)"


def plain(value: Any) -> Any:
    """A value as the notebook recorded it: JSON, NaN and infinities as null, tuples as
    lists, anything else JSON has no type for as its repr."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return repr(value)


def ignored(case: dict[str, Any]) -> frozenset[str]:
    """The keys the notebook leaves out of this case's comparison (`%rp_test --ignore`)."""
    return frozenset(case.get("ignore") or ())


def differences(
    actual: Any,
    recorded: Any,
    where: str,
    ignore: frozenset[str] = frozenset(),
    rel_tol: float | None = None,
) -> list[str]:
    """Every difference between two JSON values, [] if none: floats within `rel_tol`
    (default REL_TOL), the keys in `ignore` left out at any depth (all of `where` when it
    is one of them)."""
    found: list[str] = []
    if where.partition(" ")[0] not in ignore:
        _collect(actual, recorded, where, ignore, REL_TOL if rel_tol is None else rel_tol, found)
    return found


def _collect(
    actual: Any, recorded: Any, where: str, ignore: frozenset[str], rel_tol: float, found: list
) -> None:
    if isinstance(actual, bool) or isinstance(recorded, bool):
        if actual is not recorded:
            found.append(f"{where}: got {short(actual)}, recorded {short(recorded)}")
    elif isinstance(actual, (int, float)) and isinstance(recorded, (int, float)):
        if isinstance(actual, int) and isinstance(recorded, int):
            if actual != recorded:
                found.append(f"{where}: got {actual}, recorded {recorded}")
        elif not math.isclose(actual, recorded, rel_tol=rel_tol, abs_tol=ABS_TOL):
            found.append(f"{where}: got {actual!r}, recorded {recorded!r} (rtol {rel_tol:g})")
    elif isinstance(actual, dict) and isinstance(recorded, dict):
        missing = [key for key in recorded if key not in actual and key not in ignore]
        extra = [key for key in actual if key not in recorded and key not in ignore]
        if missing:
            found.append(f"{where}: missing keys {missing}")
        if extra:
            found.append(f"{where}: unexpected keys {extra}")
        for key, item in recorded.items():
            if key in actual and key not in ignore:
                _collect(actual[key], item, f"{where}[{key!r}]", ignore, rel_tol, found)
    elif isinstance(actual, list) and isinstance(recorded, list):
        if len(actual) != len(recorded):
            found.append(f"{where}: {len(actual)} items, recorded {len(recorded)}")
        for index, (item, expected) in enumerate(zip(actual, recorded, strict=False)):
            _collect(item, expected, f"{where}[{index}]", ignore, rel_tol, found)
    elif actual != recorded:
        found.append(f"{where}: got {short(actual)}, recorded {short(recorded)}")


def assert_same(
    actual: Any, recorded: Any, where: str, ignore: frozenset[str] = frozenset()
) -> None:
    """`differences` as an assertion; the message lists the first few."""
    found = differences(actual, recorded, where, ignore)
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    assert not found, "; ".join(found[:5]) + more


def recorded_part(chunks: list[Any], case: dict[str, Any]) -> list[Any]:
    """The chunks of a new run that its recorded case can be compared with: all of them,
    or, for a stream too long to record whole (`stream_total` chunks, the first ones
    kept), its first ones once their count is checked."""
    total = case.get("stream_total")
    if total is None:
        return chunks
    assert len(chunks) == total, f"stream: got {len(chunks)} chunks, recorded {total}"
    return chunks[: len(case["stream"] or [])]


LEADING_FIELDS = re.compile(  # the start of RunPod's error JSON
    r'\{"error_type": ("(?:[^"\\]|\\.)*"), "error_message": ("(?:[^"\\]|\\.)*")'
)


def exception_fields(error: Any) -> dict[str, str] | None:
    """error_type and error_message of RunPod's error JSON for a handler that raised, else
    None. Read from the start of the text too, should a log have cut the rest."""
    if not isinstance(error, str) or not error.startswith("{"):
        return None
    try:
        fields = json.loads(error)
    except ValueError:
        found = LEADING_FIELDS.match(error)
        if found is None:
            return None
        fields = {"error_type": json.loads(found[1]), "error_message": json.loads(found[2])}
    if not isinstance(fields, dict) or not {"error_type", "error_message"} <= fields.keys():
        return None
    return {"error_type": fields["error_type"], "error_message": fields["error_message"]}


def streamed_exception(error: Any) -> str | None:
    """The message of a generator handler that raised (RunPod reports
    `handler: <message> \\ntraceback: ...`), else None."""
    if isinstance(error, str) and error.startswith("handler: ") and " \ntraceback: " in error:
        return error[len("handler: ") : error.index(" \ntraceback: ")]
    return None


def error_key(error: Any) -> Any:
    """What identifies a failure across runs: an exception's type and message (its
    traceback, host and worker id vary), a generator's raise by its message, else the
    error itself."""
    fields = exception_fields(error)
    if fields is not None:
        return fields
    message = streamed_exception(error)
    return error if message is None else {"raised": message}


def check_error(actual: Any, recorded: Any) -> None:
    """The same failure: for an exception the same type and message, else the same error."""
    expected = exception_fields(recorded)
    if expected is not None:
        got = exception_fields(actual)
        assert got is not None, (
            f"error: expected the handler to raise {expected['error_type']} "
            f"{expected['error_message']!r}, got the error {short(actual)}"
        )
        assert got == expected, f"error: got {got}, recorded {expected}"
        return
    message = streamed_exception(recorded)
    if message is not None:
        raised = streamed_exception(actual)
        assert raised == message, f"error: got {short(actual)}, recorded a raise of {message!r}"
        return
    assert_same(plain(actual), recorded, "error")
