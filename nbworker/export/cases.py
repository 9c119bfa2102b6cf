"""The test cases of an export: which recorded runs they are, and the JSON made of them.

Every `%rp_test` run of the exported handler that COMPLETED or FAILED is a test case: a job
and what the notebook's run gave (TIMED_OUT and CANCELLED runs say nothing of the handler).
From the cases come `test_input.json` (the example job `python handler.py` runs),
`.runpod/tests.json` (RunPod Hub's release tests) and `tests/cases.json` (what the worker's
tests replay; `testfiles` writes those tests). `nbworker test` selects the cases of a fresh
notebook run by the same rule, so notebook and worker are numbered alike.

Pure data: same records, byte-identical texts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nbworker.record import PANEL_ORIGIN

__all__ = [
    "CASES_FORMAT",
    "CASE_STATUSES",
    "DEFAULT_CUDA_VERSIONS",
    "DEFAULT_GPU_TYPE",
    "cases_by_place",
    "cases_json",
    "example_job",
    "hub_tests",
    "select_cases",
]

CASES_FORMAT = 1  # the "format" of tests/cases.json; bump when its shape changes
CASE_STATUSES = ("COMPLETED", "FAILED")  # TIMED_OUT and CANCELLED runs say nothing of the handler
DEFAULT_GPU_TYPE = "NVIDIA GeForce RTX 4090"
DEFAULT_CUDA_VERSIONS = ("12.7", "12.6", "12.5", "12.4", "12.3")


def _plain(value: Any, what: str) -> Any:
    """A strict-JSON copy of `value` (the cases must not share objects with the records)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not strict JSON ({err})") from None


def select_cases(records: Sequence[Mapping[str, Any]], *, handler: str) -> list[dict[str, Any]]:
    """The test cases among `%rp_test` records: the COMPLETED and FAILED runs of `handler`.

    Each case is `{"name": "case-N", "cell", "job", "status", "output", "error", "stream",
    "refresh_worker", "ignore", "compare"}`, numbered in the order of the records. `job` is
    the recorded job without its `id` (the SDK's local tools give their own). `cell` is the
    record's own `cell` key when the caller set one (where the run was recorded), else None;
    `ignore` and `compare` come from the record's keys of those names when set (the
    `%rp_test --ignore KEY,KEY` and `--no-compare` of its line), else [] and True.
    """
    cases: list[dict[str, Any]] = []
    for record in records:
        if record.get("handler") != handler or record.get("status") not in CASE_STATUSES:
            continue
        name = f"case-{len(cases) + 1}"
        cell = record.get("cell")
        where = f"{name} of {handler}" + (f" (cell {cell})" if cell is not None else "")
        try:
            cases.append(_case(record, name))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
    return cases


def cases_by_place(
    records: Sequence[Mapping[str, Any]], *, handler: str
) -> dict[tuple[Any, int], dict[str, Any]]:
    """`select_cases` of `records`, each case under the place of the run it was made of:
    `(record["cell"], record["_index"])`, the cell and the run's 1-based number in it (the
    caller sets both). How `nbworker test` matches a notebook's cases to the worker's."""
    kept = [
        record
        for record in records
        if record.get("handler") == handler and record.get("status") in CASE_STATUSES
    ]
    return {
        (record["cell"], record["_index"]): case
        for record, case in zip(kept, select_cases(kept, handler=handler), strict=True)
    }


def _case(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    job = record.get("job")
    if not isinstance(job, Mapping) or "input" not in job:
        raise ValueError(f"the record's job has no input: {_short_repr(job)}")
    cell = record.get("cell")
    if cell is not None and not isinstance(cell, (int, str)):
        raise ValueError(f"cell must be an int or a str, not {_short_repr(cell)}")
    stream = record.get("stream")
    if stream is not None and not isinstance(stream, list):
        raise ValueError(f"the record's stream is not a list: {_short_repr(stream)}")
    ignore = record.get("ignore") or ()
    if not isinstance(ignore, (list, tuple)):
        raise ValueError(f"the record's ignore is not a list: {_short_repr(ignore)}")
    return {
        "name": name,
        "cell": cell,
        "job": _plain({k: v for k, v in job.items() if k != "id"}, f"{name} job"),
        "status": record["status"],
        "output": _plain(record.get("output"), f"{name} output"),
        "error": _plain(record.get("error"), f"{name} error"),
        "stream": None if stream is None else _plain(list(stream), f"{name} stream"),
        **_stream_total(record, stream),
        "refresh_worker": bool(record.get("refresh_worker", False)),
        "ignore": sorted(str(key) for key in ignore),
        "compare": bool(record.get("compare", True)),
        **({"origin": PANEL_ORIGIN} if record.get("origin") == PANEL_ORIGIN else {}),
    }


def _stream_total(record: Mapping[str, Any], stream: Any) -> dict[str, int]:
    """`stream_total` of a record whose stream was too long to record whole (jobs.Run)."""
    total = record.get("stream_total")
    if total is None:
        return {}
    if not isinstance(total, int) or isinstance(total, bool) or total < len(stream or []):
        raise ValueError(f"the record's stream_total is not a chunk count: {_short_repr(total)}")
    return {"stream_total": total}


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _json_text(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"


def example_job(cases: Sequence[Mapping[str, Any]]) -> str:
    """The text of `test_input.json`: the job `python handler.py` runs when given none.

    It is the first COMPLETED case's job (the first case's if none completed): RunPod's
    local test exits 1 on a failed job, so a passing job makes the better default.
    """
    if not cases:
        raise ValueError("no test case: record a run of the handler with %rp_test first")
    chosen = next((case for case in cases if case["status"] == "COMPLETED"), cases[0])
    return _json_text(dict(chosen["job"]), sort_keys=True)


def hub_tests(
    cases: Sequence[Mapping[str, Any]],
    *,
    timeout_ms: int = 60000,
    gpu_type_id: str = DEFAULT_GPU_TYPE,
    gpu_count: int = 1,
    cuda_versions: Sequence[str] = DEFAULT_CUDA_VERSIONS,
    cpu_flavor: str | None = None,
) -> str:
    """The text of `.runpod/tests.json`, the tests RunPod's Hub runs on a release.

    One test per COMPLETED case whose input is an object (the Hub sends jobs through the
    API, which refuses any other input); its `input` is the job's `input`. The list may
    be empty: the caller decides whether to publish without Hub tests. With `cpu_flavor`
    (a CPU worker, as hub.json says) the tests run on that CPU instead of a GPU.
    """
    if timeout_ms <= 0:
        raise ValueError(f"timeout_ms must be positive, not {timeout_ms}")
    tests = [
        {"name": case["name"], "input": case["job"]["input"], "timeout": timeout_ms}
        for case in cases
        if case["status"] == "COMPLETED" and isinstance(case["job"].get("input"), dict)
    ]
    config: dict[str, Any] = {
        "gpuTypeId": gpu_type_id,
        "gpuCount": gpu_count,
        "allowedCudaVersions": list(cuda_versions),
    }
    if cpu_flavor is not None:
        config = {"cpuFlavor": cpu_flavor}
    return _json_text({"tests": tests, "config": config})


def cases_json(
    cases: Sequence[Mapping[str, Any]], *, handler: str, streaming: bool, notebook_name: str
) -> str:
    """The text of `tests/cases.json`: what the generated tests read."""
    document = {
        "format": CASES_FORMAT,
        "handler": handler,
        "streaming": streaming,
        "notebook": notebook_name,
        "cases": [dict(case) for case in cases],
    }
    return _json_text(document)
