"""What works in the notebook but breaks once deployed on RunPod (see RUNPOD.md).

Each check returns plain sentences: what was found, what the deployed worker would do,
and what to do instead. They are warnings, never errors: the run itself follows prod.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ASYNCIO_RUN_MESSAGE",
    "Sent",
    "encode_result",
    "encoded",
    "job_warnings",
    "registration_warnings",
    "result_warnings",
    "serialization_problem",
    "stream_warnings",
]

# The RuntimeError asyncio raises when asyncio.run() is called inside a running loop.
ASYNCIO_RUN_MESSAGE = "asyncio.run() cannot be called from a running event loop"
SIZE_LIMIT_BYTES = 20_000_000  # the SDK's tip: larger results should go to object storage


def _calls_asyncio_run(
    function: Callable[..., Any], definition: ast.AST | None = None, source: str | None = None
) -> bool:
    if definition is not None and source is not None and "asyncio" not in source:
        return False  # the tree holds no name asyncio: no need to walk it
    if definition is None:
        try:
            definition = ast.parse(textwrap.dedent(inspect.getsource(function)))
        except (OSError, TypeError, SyntaxError, IndentationError):
            return False
    for node in ast.walk(definition):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "run"
            and isinstance(func.value, ast.Name)
            and func.value.id == "asyncio"
        ):
            return True
    return False


def registration_warnings(
    function: Callable[..., Any],
    *,
    name: str,
    kind: str,
    definition: ast.AST | None = None,
    source: str | None = None,
) -> list[str]:
    """Warnings about the function itself, found once when it is registered. `definition`
    is the syntax tree of the function's `def` where the caller has it (from a %%handler
    cell's tree), and `source` the text it was parsed from: the function's source is then
    not read and parsed again."""
    found = []
    inner = inspect.unwrap(function)
    if kind in ("sync", "async") and (
        inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner)
    ):
        found.append(
            f"{name} is a generator hidden behind a decorator: RunPod checks "
            "inspect.isgeneratorfunction() on the function it is given, so the deployed worker "
            "will not stream; it returns the generator object, which cannot be sent, and the "
            "job hangs. Register the generator itself, or make the decorator a generator."
        )
    if _calls_asyncio_run(function, definition, source):
        found.append(
            f"{name} calls asyncio.run(): a deployed worker calls handlers inside its running "
            "event loop, where asyncio.run() fails. Make the handler `async def` and await."
        )
    return found


def job_warnings(job: dict[str, Any]) -> list[str]:
    if job.get("input") is not None and not isinstance(job.get("input"), dict):
        return [
            f"input is {type(job.get('input')).__name__}, not an object: RunPod's API "
            "rejects such a job (HTTP 422); only `python handler.py --test_input` accepts it."
        ]
    return []


def encoded(value: Any) -> tuple[bytes | None, str | None]:
    """`value` as RunPod's job loop sends it (JSON, as UTF-8), or None and why it cannot be
    sent. One C-encoder pass, shared by the checks that need it."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as err:
        return None, f"not JSON-serialisable ({err})"
    try:
        return text.encode("utf-8"), None  # the SDK posts that text as UTF-8 (aiohttp)
    except UnicodeEncodeError:
        return None, (
            "not valid UTF-8 (it holds a lone surrogate; shown and recorded here as U+FFFD)"
        )


@dataclass(frozen=True)
class Sent:
    """A result as RunPod's job loop would send it, encoded once (C encoder) for every
    check, the record and the views that need it."""

    size: int  # bytes of its UTF-8 JSON (0 when it cannot be sent)
    problem: str | None = None  # why it cannot be sent
    non_finite: bool = False  # it holds NaN or Infinity (invalid JSON)
    # The output's own JSON when it is valid JSON (finite, UTF-8): the text the record and
    # the views reuse.
    output_json: str | None = None


def _dumps(value: Any, *, allow_nan: bool) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=allow_nan)


def encode_result(result: dict[str, Any]) -> Sent:
    """`result` as `encoded` sends it (the same size and problems), each of its values
    encoded once: NaN or Infinity is found by the strict encoder failing (then the lenient
    one tells whether it can be sent at all), not by a walk in Python."""
    if not all(type(key) is str for key in result):  # never the runner's: the slow way
        data, problem = encoded(result)
        size = 0 if data is None else len(data)
        return Sent(size, problem, problem is None and _has_non_finite(result))
    size, non_finite, output_json = 2 * max(len(result) - 1, 0) + 2, False, None  # {, }
    for key, value in result.items():
        try:
            try:
                text, strict = _dumps(value, allow_nan=False), True
            except ValueError:  # NaN or Infinity, or what the lenient encoder refuses too
                text, strict = _dumps(value, allow_nan=True), False
            size += len(text) if text.isascii() else len(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate (a ValueError too: first)
            return Sent(0, encoded(result)[1])
        except (TypeError, ValueError, RecursionError) as err:
            return Sent(0, f"not JSON-serialisable ({err})")
        size += len(_dumps(key, allow_nan=False).encode("utf-8")) + 2  # "key": value
        non_finite = non_finite or not strict
        if key == "output" and strict:
            output_json = text
    return Sent(size, None, non_finite, output_json)


def serialization_problem(value: Any) -> str | None:
    """Why `value` cannot be sent as RunPod's job loop sends it, or None if it can."""
    return encoded(value)[1]


SURROGATE_WARNING = (
    'the {where} holds a lone surrogate (e.g. "\\ud800"): valid JSON, but no valid UTF-8, '
    "so a notebook cannot keep it: the handler got it as it is; shown and recorded here as "
    "U+FFFD"
)


def _walk_for_surrogate(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if depth > 100:
        return False
    if isinstance(value, dict):
        return any(
            _walk_for_surrogate(key, depth + 1) or _walk_for_surrogate(item, depth + 1)
            for key, item in value.items()
        )
    if isinstance(value, (list, tuple)):
        return any(_walk_for_surrogate(item, depth + 1) for item in value)
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether a JSON-like value (a job: small, as a rule) holds a lone surrogate in any
    string or key."""
    return _walk_for_surrogate(value)


def _has_non_finite(value: Any, depth: int = 0) -> bool:
    if depth > 50:
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v, depth + 1) for v in value)
    return False


def result_warnings(returned: Any, result: dict[str, Any], sent: Sent | None = None) -> list[str]:
    """Warnings about what a non-streaming handler returned and the result RunPod makes of it.
    `sent` is `encode_result(result)` when the caller has it."""
    sent = sent if sent is not None else encode_result(result)
    found = []
    if isinstance(returned, dict) and not returned:
        found.append(
            "the handler returned {}: RunPod drops the empty output (the job has no output) "
            "and the SDK's local API server answers HTTP 500."
        )
    if inspect.isgenerator(returned) or inspect.isasyncgen(returned):
        found.append(
            "the handler returned a generator object: RunPod streams only handlers that are "
            "generator functions themselves, so nothing is streamed and the object cannot be sent."
        )
    error = result.get("error")
    if error and not isinstance(error, str):
        found.append(
            f"error is a {type(error).__name__}, not a string: the SDK's local API server "
            "answers HTTP 500 and clients expect text. Join or json.dumps it."
        )
    if sent.problem:
        found.append(
            f"the result is {sent.problem}: deployed, the worker logs an error and sends "
            "nothing, so the job never finishes (it hangs until the endpoint's execution timeout)."
        )
    elif sent.non_finite:
        found.append(
            "the output holds NaN or Infinity, which is not valid JSON: RunPod's API turns "
            "them into null and strict JSON clients reject them."
        )
    else:
        size = sent.size
        if size > SIZE_LIMIT_BYTES:
            found.append(
                f"the result is {size / 1e6:.1f} MB, over RunPod's 20 MB limit: upload large "
                "outputs to object storage and return a URL."
            )
    return found


def stream_warnings(chunks: list[Any], result: dict[str, Any]) -> list[str]:
    """Warnings about a streaming run: chunks that cannot be sent, an unsendable aggregate."""
    found = []
    for index, chunk in enumerate(chunks):
        problem = serialization_problem({"output": chunk})
        if problem:
            found.append(
                f"stream chunk {index} is {problem}: deployed, it is dropped from the stream."
            )
            break
    if serialization_problem(result):
        found.append("the aggregated result cannot be sent: the job never finishes once deployed.")
    return found
