"""How runs look: text, HTML and the record; the live stream view."""

from __future__ import annotations

import json

from helpers import package_frames

from nbworker import Session
from nbworker.display import MAX_SHOWN, run_bundle
from nbworker.record import RECORD_MIMETYPE


def bundle_of(handler, job_input=None, **options):
    session = Session()
    try:
        return run_bundle(session.run_job({"input": job_input or {}}, handler, **options))
    finally:
        session.close()


def test_completed_run_views() -> None:
    bundle = bundle_of(lambda job: {"label": "positive"})
    assert bundle["text/plain"].splitlines()[0].startswith("✓ COMPLETED  handler  ")
    assert bundle["text/plain"].splitlines()[1] == 'output: {"label": "positive"}'
    assert "&quot;label&quot;: &quot;positive&quot;" in bundle["text/html"]
    assert bundle[RECORD_MIMETYPE]["output"] == {"label": "positive"}


def test_failed_run_shows_the_exception_and_the_users_frames() -> None:
    def handler(job):
        raise ValueError("no text")

    text = bundle_of(handler)["text/plain"]
    assert "error: ValueError: no text" in text
    assert 'raise ValueError("no text")' in text
    assert package_frames(text) == []  # none of nbworker's own frames


def test_output_is_escaped_and_long_values_are_cut_in_the_view_only() -> None:
    long_text = "<script>alert(1)</script>" + "x" * (2 * MAX_SHOWN)
    bundle = bundle_of(lambda job: long_text)
    assert "<script>" not in bundle["text/html"]
    assert "&lt;script&gt;" in bundle["text/html"]
    assert f"… (cut at {MAX_SHOWN:,} characters of " in bundle["text/plain"]
    assert bundle[RECORD_MIMETYPE]["output"] == long_text  # the record keeps all of it


def test_warnings_and_refresh_worker_are_shown() -> None:
    text = bundle_of(lambda job: {"value": {1, 2}, "refresh_worker": True})["text/plain"]
    assert "refresh_worker: RunPod would restart this worker after the job." in text
    assert "⚠ the result is not JSON-serialisable" in text


def test_stream_view_lists_the_chunks() -> None:
    def tokens(job):
        yield from ["a", "b"]

    bundle = bundle_of(tokens)
    assert 'stream (2 chunks):\n  [0] "a"\n  [1] "b"' in bundle["text/plain"]
    json.dumps(bundle[RECORD_MIMETYPE])
