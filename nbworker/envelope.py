"""RunPod's job and result shapes, as a deployed worker's job loop makes them (runpod
1.12's `rp_job.run_job`, `rp_local.run_local`): the job dict a handler receives, the result
envelope of what it returned, and the error JSON of what it raised (with the user's own
frames only). Pure functions; nothing here runs a handler.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import traceback
from typing import Any

from nbworker.errors import JobError
from nbworker.record import safe_str

__all__ = [
    "LOCAL_JOB_ID",
    "NO_INPUT_MESSAGE",
    "build_job",
    "error_info",
    "parse_job",
    "result_from_return",
    "user_traceback",
]

LOCAL_JOB_ID = "local_test"  # the id `python handler.py --test_input` gives a job
# What the SDK says of a job whose "input" is null (`rp_local.run_local`); the handler never runs.
NO_INPUT_MESSAGE = "Job has no input parameter. Unable to run."

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # nbworker's frames are not the user's
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__))


@functools.cache
def _runpod_version() -> str:
    # Read from the installed distribution (once): importing runpod costs ~1.6 s.
    from importlib import metadata

    try:
        return metadata.version("runpod")
    except metadata.PackageNotFoundError:
        return "unknown"


def parse_job(text: str, *, source: str = "JOB_JSON") -> dict[str, Any]:
    """Parse job JSON of the form `--test_input` and `test_input.json` take."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise JobError(
            f"{source} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno} "
            f"(char {err.pos})",
            source=source,
            position=err.pos,
        ) from None
    except RecursionError:  # "[[[[...": deeper than Python's parser goes
        raise JobError(f"{source} is nested too deeply to be read as JSON", source=source) from None
    except ValueError as err:  # a number of more digits than int() takes (4300)
        raise JobError(f"{source} cannot be read: {err}", source=source) from None
    return build_job(value, source=source)


def build_job(value: Any, *, source: str = "job") -> dict[str, Any]:
    """The job dict a handler receives: `{"id": ..., "input": ...}` plus any other keys given."""
    if not isinstance(value, dict):
        raise JobError(
            f'{source} must be a JSON object like {{"input": {{...}}}}, not {type(value).__name__}',
            source=source,
        )
    if "input" not in value:  # nearly always a forgotten {"input": ...} wrapper
        given = ", ".join(map(repr, value)) or "none"
        raise JobError(
            f'{source} has no "input": a RunPod job looks like {{"input": {{...}}}} '
            f"(keys given: {given})",
            source=source,
        )
    job_id = value.get("id", LOCAL_JOB_ID)
    return {"id": job_id, **{key: item for key, item in value.items() if key != "id"}}


def result_from_return(returned: Any) -> dict[str, Any]:
    """The result `rp_job.run_job` makes of what a handler returned."""
    if isinstance(returned, dict):
        output = dict(returned)  # the SDK pops from the handler's own dict; we copy
        error = output.pop("error", None)
        refresh_worker = output.pop("refresh_worker", None)
        result: dict[str, Any] = {"output": output}
        if error:
            result["error"] = error
        if refresh_worker:
            result["stopPod"] = True
    else:
        result = {"output": returned}
    if result.get("output") == {}:
        result.pop("output")
    return result


def user_traceback(err: BaseException) -> str:
    """The traceback of `err` without nbworker's and asyncio's frames, chained causes kept."""

    def keep(frame: traceback.FrameSummary) -> bool:
        filename = os.path.abspath(frame.filename) if frame.filename[:1] != "<" else ""
        return not filename.startswith((_PACKAGE_DIR, _ASYNCIO_DIR))

    summary = traceback.TracebackException.from_exception(err)
    where = getattr(err, "_nbworker_where", None)  # a stop that came while the handler awaited
    if where is not None:
        summary.stack = where
    seen: set[int] = set()
    pending = [summary]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        item.stack = traceback.StackSummary.from_list([f for f in item.stack if keep(f)])
        pending.extend(e for e in (item.__cause__, item.__context__) if e is not None)
    return "".join(summary.format())


def error_info(err: BaseException) -> dict[str, str]:
    """The fields of RunPod's error JSON for a handler that raised."""
    return {
        "error_type": str(type(err)),
        "error_message": safe_str(err),
        "error_traceback": user_traceback(err),
        "hostname": os.environ.get("RUNPOD_POD_HOSTNAME", "unknown"),
        "worker_id": os.environ.get("RUNPOD_POD_ID", "unknown"),
        "runpod_version": _runpod_version(),
    }
