"""Replay in a real InteractiveShell: each %rp_test compares its run with the recorded one."""

from __future__ import annotations

import json
from importlib import metadata

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from nbworker import replay
from nbworker.replay import REPLAY_MIMETYPE, ReplayMismatch, compare_runs

RECORD = "application/vnd.nbworker.run+json"


def record(**fields):
    base = {
        "handler": "handler",
        "job": {"id": "local_test", "input": {}},
        "status": "COMPLETED",
        "output": None,
        "error": None,
        "stream": None,
        "refresh_worker": False,
        "duration_ms": 1.0,
    }
    return dict(base, **fields)


def exception_error(kind: str, message: str, host: str = "pod-1") -> str:
    return json.dumps(
        {
            "error_type": kind,
            "error_message": message,
            "error_traceback": f"Traceback ... on {host}",
            "hostname": host,
            "worker_id": host,
            "runpod_version": metadata.version("runpod"),
        }
    )


# ------------------------------------------------------------------------ compare_runs


def test_the_same_run_has_no_differences_and_floats_compare_within_rtol() -> None:
    recorded = record(output={"score": 1.0, "n": 3, "ok": True, "words": ["a", "b"]})
    assert (
        compare_runs(
            record(output={"score": 1.0 + 1e-9, "n": 3, "ok": True, "words": ["a", "b"]}), recorded
        )
        == []
    )
    assert compare_runs(
        record(output={"score": 1.001, "n": 3, "ok": True, "words": ["a", "b"]}), recorded
    ) == ["output['score']: got 1.001, recorded 1.0 (rtol 1e-06)"]
    assert (
        compare_runs(
            record(output={"score": 1.001, "n": 3, "ok": True, "words": ["a", "b"]}),
            recorded,
            rtol=0.01,
        )
        == []
    )


def test_each_difference_is_named_where_it_is() -> None:
    recorded = record(output={"label": "positive", "n": 3, "ok": True, "words": ["a", "b"]})
    got = record(output={"label": "negative", "n": 4, "ok": 1, "words": ["a"], "extra": 0})
    assert compare_runs(got, recorded) == [
        "output: unexpected keys ['extra']",
        "output['label']: got 'negative', recorded 'positive'",
        "output['n']: got 4, recorded 3",
        "output['ok']: got 1, recorded True",
        "output['words']: 1 items, recorded 2",
    ]


def test_a_stream_is_compared_chunk_by_chunk() -> None:
    recorded = record(stream=[{"word": "a"}, {"word": "b"}, {"word": "c"}], output=None)
    got = record(stream=[{"word": "a"}, {"word": "B"}, {"word": "c"}], output=None)
    assert compare_runs(got, recorded) == [
        "stream[1]['word']: got 'B', recorded 'b'",
    ]


def test_ignored_keys_leave_the_comparison_at_any_depth() -> None:
    recorded = record(output={"at": 1.0, "items": [{"id": 1, "at": 5}]}, stream=[{"at": 1}])
    got = record(output={"at": 2.0, "items": [{"id": 1, "at": 6}]}, stream=[{"at": 2}])
    assert len(compare_runs(got, recorded)) == 3
    assert compare_runs(got, recorded, ignore=["at"]) == []
    assert compare_runs(got, recorded, ignore=["output", "stream"]) == []


def test_an_exception_compares_by_type_and_message_not_traceback_or_host() -> None:
    recorded = record(status="FAILED", error=exception_error("<class 'ValueError'>", "bad text"))
    same = record(
        status="FAILED", error=exception_error("<class 'ValueError'>", "bad text", "pod-2")
    )
    other = record(status="FAILED", error=exception_error("<class 'KeyError'>", "'text'"))
    assert compare_runs(same, recorded) == []
    assert compare_runs(other, recorded) == [
        "error['error_type']: got \"<class 'KeyError'>\", recorded \"<class 'ValueError'>\"",
        "error['error_message']: got \"'text'\", recorded 'bad text'",
    ]


def test_status_and_refresh_worker_differences() -> None:
    recorded = record(output={"n": 1})
    got = record(status="FAILED", output=None, error="text is required", refresh_worker=True)
    assert compare_runs(got, recorded) == [
        "status: got FAILED, recorded COMPLETED, error 'text is required'",
        "output: got None, recorded {'n': 1}",
        "error: got 'text is required', recorded None",
        "refresh_worker: got True, recorded False",
    ]


def test_a_generator_error_compares_by_its_message() -> None:
    recorded = record(status="FAILED", error="handler: boom \ntraceback: File a.py line 3")
    assert (
        compare_runs(record(status="FAILED", error="handler: boom \ntraceback: other"), recorded)
        == []
    )


# ------------------------------------------------------------------------ in a shell


@pytest.fixture
def replaying(shell):
    yield shell
    replay.stop()


HANDLER = """
%%handler
def handler(job):
    return {"n": len(job["input"]["text"]) * SCALE}
"""
TEST = '%rp_test {"input": {"text": "abc"}}'


def outcomes(result) -> list[dict]:
    return [o.data[REPLAY_MIMETYPE] for o in result.captured.outputs if REPLAY_MIMETYPE in o.data]


def start_with_recorded(shell, source: str = TEST) -> None:
    """Record a run as the notebook would, then start replay with it as expected."""
    shell.ok("SCALE = 1")
    shell.ok(HANDLER)
    recorded = shell.record(source)
    replay.start([{"cell": 7, "cell_id": "abc", "source": source, "records": [recorded]}])


def test_a_run_that_still_gives_the_recorded_result_passes(replaying) -> None:
    start_with_recorded(replaying)
    result = replaying.ok(TEST)
    assert outcomes(result) == [
        {
            "cell": 7,
            "cell_id": "abc",
            "case": 1,
            "handler": "handler",
            "result": "passed",
            "differences": [],
            "duration_ms": outcomes(result)[0]["duration_ms"],
        }
    ]
    assert "replay of cell 7 case 1 (handler): passed" in str(result.captured.outputs[-1].data)


def test_a_changed_handler_fails_the_cell_with_the_difference_only(replaying) -> None:
    start_with_recorded(replaying)
    replaying.ok("SCALE = 2")
    result = replaying.run(TEST)
    assert isinstance(result.error_in_exec, ReplayMismatch)
    assert outcomes(result)[0]["differences"] == ["output['n']: got 6, recorded 3"]
    shown = result.captured.stdout + result.captured.stderr
    assert "ReplayMismatch: replay of cell 7 case 1 (handler): failed" in shown
    assert "output['n']: got 6, recorded 3" in shown
    assert "Traceback" not in shown and "nbworker/magics.py" not in shown


def test_no_compare_and_ignore_exempt_a_run(replaying) -> None:
    start_with_recorded(replaying, TEST + " --ignore n")
    replaying.ok("SCALE = 2")
    assert outcomes(replaying.ok(TEST + " --ignore n"))[0]["result"] == "passed"
    replay.start(
        [
            {
                "cell": 7,
                "cell_id": "abc",
                "source": TEST + " --no-compare",
                "records": [record(output={"n": 3})],
            }
        ]
    )
    assert outcomes(replaying.ok(TEST + " --no-compare"))[0]["result"] == "skipped"


def test_a_cell_nothing_was_recorded_for_is_new_not_a_failure(replaying) -> None:
    start_with_recorded(replaying)
    result = replaying.ok('%rp_test {"input": {"text": "a new case"}}')
    assert outcomes(result)[0]["result"] == "new"
    # the same source twice: the second run of the cell has no recorded counterpart
    replaying.ok(TEST)
    assert outcomes(replaying.ok(TEST))[0]["result"] == "new"


def test_without_replay_the_options_change_nothing(shell) -> None:
    shell.ok("SCALE = 1")
    shell.ok(HANDLER)
    result = shell.ok(TEST + " --ignore n --no-compare")
    assert outcomes(result) == []
    assert shell.records(result)[0]["output"] == {"n": 3}


def test_a_bad_rtol_is_refused() -> None:
    with pytest.raises(ValueError, match="rtol must be a number >= 0"):
        replay.Replay([], rtol=-1)


def test_a_stream_cut_in_its_record_compares_its_count_too() -> None:
    cut = record(stream=[1, 2], stream_total=5)
    assert compare_runs(cut, cut) == []
    assert compare_runs(record(stream=[1, 2], stream_total=6), cut) == [
        "stream: got 6 chunks, recorded 5"
    ]
    assert compare_runs(record(stream=[1, 2]), cut) == ["stream: got 2 chunks, recorded 5"]
    assert compare_runs(record(stream=[1, 2]), cut, ignore=["stream"]) == []


# ------------------------------------------------------------------------ stored records


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ("not a record", "the run record is not an object (a JSON string)"),
        (["a", "list"], "the run record is not an object (a JSON array)"),
        (record(status=200), "its status is not a string (a JSON number)"),
        (record(handler=None), "its handler is not a string (a JSON null)"),
        ({"status": "COMPLETED"}, "its handler is not a string (missing)"),
        (record(job="no dict"), "its job is not an object (a JSON string)"),
        (record(job={"id": "local_test"}), "its job has no input"),
        (record(stream="chunk"), "its stream is neither null nor a list (a JSON string)"),
    ],
)
def test_a_malformed_record_is_named_by_cell_and_number(stored: object, problem: str) -> None:
    notebook = new_notebook(cells=[new_code_cell("%load_ext nbworker"), new_code_cell("x")])
    notebook.cells[1].outputs = [
        new_output("display_data", data={RECORD: record()}),
        new_output("display_data", data={RECORD: stored}),
    ]
    notebook = nbformat.reads(nbformat.writes(notebook), as_version=4)  # as stored
    with pytest.raises(replay.MalformedRecord) as raised:
        replay.expected_runs(notebook)
    error = raised.value
    assert (error.cell, error.cell_id, error.record, error.problem) == (
        1,
        notebook.cells[1].id,
        2,
        problem,
    )
    assert str(error).startswith(f"cell 1 (id {error.cell_id}): run record 2 is malformed: ")
    assert "\n" not in str(error)


def test_what_a_run_records_is_a_record() -> None:
    assert replay.record_problem(record()) is None
    assert replay.record_problem(record(job={"input": None}, stream=[1], status="ODD")) is None
