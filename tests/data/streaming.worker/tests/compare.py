"""How a result of the worker or of the re-run notebook is compared with the record.

Values compare as JSON: floats within WORKER_TEST_REL_TOL (default 1e-6), everything else
exactly; a failed job by its error (for an exception: its type and message).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

REL_TOL = float(os.environ.get("WORKER_TEST_REL_TOL", "1e-6"))
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


def assert_same(
    actual: Any, recorded: Any, where: str, ignore: frozenset[str] = frozenset()
) -> None:
    """Equal as JSON values, floats within REL_TOL, the keys in `ignore` left out at any
    depth (all of `where` when it is one of them); the message names the first difference."""
    if where.partition(" ")[0] in ignore:
        return
    if isinstance(actual, bool) or isinstance(recorded, bool):
        assert actual is recorded, f"{where}: got {short(actual)}, recorded {short(recorded)}"
    elif isinstance(actual, (int, float)) and isinstance(recorded, (int, float)):
        if isinstance(actual, int) and isinstance(recorded, int):
            assert actual == recorded, f"{where}: got {actual}, recorded {recorded}"
        else:
            assert math.isclose(actual, recorded, rel_tol=REL_TOL, abs_tol=ABS_TOL), (
                f"{where}: got {actual!r}, recorded {recorded!r} (rel_tol {REL_TOL:g})"
            )
    elif isinstance(actual, dict) and isinstance(recorded, dict):
        missing = [key for key in recorded if key not in actual and key not in ignore]
        extra = [key for key in actual if key not in recorded and key not in ignore]
        assert not missing and not extra, (
            f"{where}: keys differ: missing {missing}, unexpected {extra}; "
            f"got {short(actual)}, recorded {short(recorded)}"
        )
        for key, item in recorded.items():
            if key not in ignore:
                assert_same(actual[key], item, f"{where}[{key!r}]", ignore)
    elif isinstance(actual, list) and isinstance(recorded, list):
        assert len(actual) == len(recorded), (
            f"{where}: {len(actual)} items, recorded {len(recorded)}; "
            f"got {short(actual)}, recorded {short(recorded)}"
        )
        for index, (item, expected) in enumerate(zip(actual, recorded, strict=True)):
            assert_same(item, expected, f"{where}[{index}]", ignore)
    else:
        assert actual == recorded, f"{where}: got {short(actual)}, recorded {short(recorded)}"


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
        got = streamed_exception(actual)
        assert got == message, f"error: got {short(actual)}, recorded a raise of {message!r}"
        return
    assert_same(plain(actual), recorded, "error")
