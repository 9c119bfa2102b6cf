"""Handlers covering each kind and outcome RunPod distinguishes.

Run by the real SDK's job functions (tests/sdk_job_loop.py, in a subprocess) and by
nbworker (tests/test_conformance.py); both must give the same results.
"""

from __future__ import annotations

import asyncio
import functools

# (name, handler, job input, return_aggregate_stream)
CASES: list[tuple[str, object, object, bool]] = []


def case(job_input: object = None, *, aggregate: bool = False, name: str | None = None):
    def register(function):
        CASES.append((name or function.__name__, function, job_input, aggregate))
        return function

    return register


class Opaque:
    """A value json cannot encode, with a stable repr."""

    def __repr__(self) -> str:
        return "Opaque()"


# -- plain returns


@case({"text": "hello"})
def plain_string(job):
    return job["input"]["text"].upper()


@case({"n": 3})
def plain_number(job):
    return job["input"]["n"] * 2


@case({})
def plain_bool(job):
    return False


@case({"items": [1, 2]})
def plain_list(job):
    return [x * 10 for x in job["input"]["items"]]


@case({})
def returns_none(job):
    return None


@case({})
def empty_input(job):
    return {"keys": sorted(job["input"]), "id_given": "id" in job}


@case({"a": 1})
def returns_dict(job):
    return {"echo": job["input"], "ok": True}


@case({})
def returns_empty_dict(job):
    return {}


# -- the error and refresh_worker keys


@case({})
def error_dict(job):
    return {"error": "bad input"}


@case({})
def error_with_partial_output(job):
    return {"error": "e", "partial": 42}


@case({})
def falsy_error(job):
    return {"error": "", "value": 1}


@case({})
def error_not_a_string(job):
    return {"error": ["first problem", "second problem"]}


@case({})
def refresh_worker(job):
    return {"result": 1, "refresh_worker": True}


@case({})
def refresh_worker_only(job):
    return {"refresh_worker": True}


@case({"steps": "many"})
def validator_errors(job):
    from runpod.serverless.utils.rp_validator import validate

    schema = {
        "steps": {"type": int, "required": False, "default": 20},
        "prompt": {"type": str, "required": True},
    }
    validated = validate(job["input"], schema)
    if "errors" in validated:
        return {"error": validated["errors"]}
    return validated["validated_input"]


@case({"prompt": "a cat"})
def validator_ok(job):
    from runpod.serverless.utils.rp_validator import validate

    schema = {
        "steps": {"type": int, "required": False, "default": 20},
        "prompt": {"type": str, "required": True},
    }
    return validate(job["input"], schema)


# -- exceptions


def _inner(value):
    raise ValueError(f"cannot handle {value!r}")


@case({"x": 1})
def raises(job):
    return _inner(job["input"]["x"])


@case({})
def raises_chained(job):
    try:
        {}["missing"]
    except KeyError as err:
        raise RuntimeError("lookup failed") from err


# -- output json cannot encode


@case({})
def not_serialisable(job):
    return {"value": Opaque()}


@case({})
def not_serialisable_plain(job):
    return {1, 2}


# -- async


@case({"x": 2})
async def async_handler(job):
    await asyncio.sleep(0.01)
    return {"y": job["input"]["x"] + 1}


@case({})
async def async_raises(job):
    await asyncio.sleep(0)
    raise KeyError("nope")


@case({})
def sync_returning_awaitable(job):
    async def later():
        return "awaited"

    return later()


# -- generators


@case({"n": 3})
def generator(job):
    for i in range(job["input"]["n"]):
        yield {"token": i}


@case({"n": 3}, aggregate=True)
def generator_aggregated(job):
    for i in range(job["input"]["n"]):
        yield f"chunk-{i}"


@case({})
def generator_error_chunk(job):
    yield "first"
    yield {"error": "went wrong"}
    yield "never sent"


@case({})
def generator_raises(job):
    yield 1
    raise ValueError("broke mid-stream")


@case({}, aggregate=True)
def generator_not_serialisable_chunk(job):
    yield 1
    yield Opaque()
    yield 3


@case({"n": 2})
async def async_generator(job):
    for i in range(job["input"]["n"]):
        await asyncio.sleep(0)
        yield i


@case({"n": 2}, aggregate=True)
async def async_generator_aggregated(job):
    for i in range(job["input"]["n"]):
        yield {"i": i}


@case({})
async def async_generator_raises(job):
    yield "a"
    raise OSError("disk gone")


def _logged(function):
    @functools.wraps(function)
    def wrapper(job):
        return function(job)

    return wrapper


@case({})
@_logged
def generator_behind_decorator(job):
    yield "hidden"


# -- comparing results across processes


def comparable(value: object) -> object:
    """JSON-able form for comparison: values json cannot encode become `<TypeName>`."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(key): comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return f"<{type(value).__name__}>"


def _user_frames_only(text: str) -> str:
    """A traceback's text with only the frames of this file: the SDK's and nbworker's own
    frames (which differ by design) dropped, and every other line kept."""
    kept, keep = [], True
    for line in text.splitlines():
        if line.startswith('  File "'):
            keep = line.split('"')[1].endswith("conformance_cases.py")
        elif not line.startswith("    "):
            keep = True
        if keep:
            kept.append(line)
    return "\n".join(kept)


def normalise(result: object) -> object:
    """`comparable(result)` with the tracebacks inside RunPod's error strings reduced to the
    handler's own frames."""
    result = comparable(result)
    if not isinstance(result, dict) or not isinstance(result.get("error"), str):
        return result
    error = result["error"]
    if error.startswith("{"):
        import json

        info = json.loads(error)
        info["error_traceback"] = _user_frames_only(info["error_traceback"])
        error = info
    elif " \ntraceback: " in error:
        message, trace = error.split(" \ntraceback: ", 1)
        error = f"{message} \ntraceback: {_user_frames_only(trace)}"
    return {**result, "error": error}
