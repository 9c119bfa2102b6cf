"""What a server answered for one job of `nbworker test --url/--endpoint` (`remote.py`), and
how it differs from the recorded case: by the code the other replays compare with
(`nbworker.compare`), with the SDK's local server's ways of ending a stream allowed for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbworker import compare

__all__ = ["TOO_DEEP", "Answer", "differences"]

TOO_DEEP = "the answer is nested too deep to compare"


@dataclass
class Answer:
    """What the server gave for one job."""

    status: Any = None
    output: Any = None
    error: Any = None
    chunks: list[Any] | None = None
    seconds: float = 0.0
    delay: float | None = None  # seconds the job waited (delayTime)
    execution: float | None = None  # seconds it ran (executionTime)


def differences(
    answer: Answer, recorded: dict[str, Any], rtol: float, *, streaming: bool
) -> list[str]:
    """The differences of an answer from its recorded case, one a line ([]: it passes)."""
    try:
        if streaming:
            return _stream_differences(answer, recorded, rtol)
        return _job_differences(answer, recorded, rtol)
    except RecursionError:  # JSON nested hundreds deep: the comparison recurses per level
        return [TOO_DEEP]


def _status_line(got: Any, recorded: str, error: Any) -> str:
    detail = f", error {compare.short(compare.error_key(error))}" if error else ""
    return f"status: got {got}, recorded {recorded}{detail}"


def _error_differences(got: Any, recorded: dict[str, Any], rtol: float) -> list[str]:
    return compare.differences(
        compare.error_key(compare.plain(got)),
        compare.error_key(recorded["error"]),
        "error",
        compare.ignored(recorded),
        rtol,
    )


def _job_differences(answer: Answer, recorded: dict[str, Any], rtol: float) -> list[str]:
    """A /runsync answer against the recorded case: status, then output or error."""
    if answer.status != recorded["status"]:
        return [_status_line(answer.status, recorded["status"], answer.error)]
    if recorded["status"] == "COMPLETED":
        return compare.differences(
            compare.plain(answer.output),
            recorded["output"],
            "output",
            compare.ignored(recorded),
            rtol,
        )
    return _error_differences(answer.error, recorded, rtol)


def _stream_differences(answer: Answer, recorded: dict[str, Any], rtol: float) -> list[str]:
    """A stream against the recorded one (its first chunks and count for a stream too long
    to record whole), then how it ended."""
    chunks = compare.plain(answer.chunks or [])
    expected = recorded["stream"] or []
    status, error = answer.status, answer.error
    if recorded["status"] == "FAILED" and status == "COMPLETED" and len(chunks) > len(expected):
        stopper = chunks[len(expected)]
        if isinstance(stopper, dict) and stopper.get("error"):
            # the SDK's local server passes a yielded {"error": ...} on as a chunk and goes
            # on, where a deployed worker ends the stream and fails the job with it
            status, error, chunks = "FAILED", stopper["error"], chunks[: len(expected)]
    found: list[str] = []
    if status != recorded["status"]:
        found.append(_status_line(status, recorded["status"], error))
    total = recorded.get("stream_total")
    if total is not None:
        if len(chunks) != total:
            found.append(f"stream: got {len(chunks)} chunks, recorded {total}")
        chunks = chunks[: len(expected)]
    found += compare.differences(chunks, expected, "stream", compare.ignored(recorded), rtol)
    if status == recorded["status"] == "FAILED":
        found += _error_differences(error, recorded, rtol)
    return found
