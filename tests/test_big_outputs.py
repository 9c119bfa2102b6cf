"""A run's output is encoded once (C encoder) and shared by the checks, the record, the
views and the kernel's message; the views of a big output are bounded; the record stays
exact; the checks catch what they caught before."""

from __future__ import annotations

import enum
import json
import math

import pytest
from ipykernel.zmqshell import ZMQDisplayPublisher
from jupyter_client.session import Session as MessageSession
from jupyter_client.session import json_packer

from nbworker import Session, checks
from nbworker.display import MAX_SHOWN, run_bundle
from nbworker.jobs import build_job
from nbworker.kernel import SHARED_OVER
from nbworker.magics import install, uninstall
from nbworker.record import RECORD_MIMETYPE, dumps_sharing, is_plain, jsonable


def run_of(value, job_input=None):
    session = Session()
    try:
        return session.run_job({"input": job_input or {}}, lambda job: value)
    finally:
        session.close()


def output_view(text: str) -> str:
    """The output section of a run's text view, without its two-space indent."""
    if "\noutput:\n" not in text:  # one line
        return next(line for line in text.splitlines() if line.startswith("output: "))[8:]
    lines = text.split("\noutput:\n", 1)[1].splitlines()
    return "\n".join(line[2:] for line in lines if line.startswith("  "))


# --------------------------------------------------------------------------- the views


def without_spaces(text: str) -> str:
    return "".join(text.split())


def test_a_big_outputs_views_are_bounded_and_start_as_its_json() -> None:
    output = {"vec": [i / 7 for i in range(200_000)], "name": "<b>big</b>"}
    run = run_of(output)
    bundle = run_bundle(run)
    compact = json.dumps(output, ensure_ascii=False)
    shown = output_view(bundle["text/plain"])
    # The rule: the view is the start of the value's JSON, laid out to read (short values
    # packed on a line), at most MAX_SHOWN characters, then a line saying where it was cut
    # and how long the one-line JSON is.
    view, note = shown.rsplit("\n", 1)
    assert len(view) <= MAX_SHOWN and view.count("\n") > 10
    assert without_spaces(compact).startswith(without_spaces(view))
    assert note == f"… (cut at {MAX_SHOWN:,} characters of {len(compact):,} in one line of JSON)"
    assert len(bundle["text/plain"]) < MAX_SHOWN + 1000
    assert len(bundle["text/html"]) < 2 * MAX_SHOWN + 2000  # escaping may grow it
    # The record keeps all of it, exactly.
    record = bundle[RECORD_MIMETYPE]
    assert record["output"] == output
    assert json.loads(json.dumps(record))["output"] == output


@pytest.mark.parametrize(
    "output",
    [{"a": 1}, {"text": "x" * 150}, list(range(300)), "é" * 120, [[1, 2], {"k": None}] * 20],
    ids=["short", "long-line", "list", "unicode", "nested"],
)
def test_an_output_under_the_cut_is_shown_whole_as_before(output) -> None:
    text = run_bundle(run_of(output))["text/plain"]
    compact = json.dumps(output, ensure_ascii=False)
    if len(compact) <= 100:
        assert f"output: {compact}" in text.splitlines()
    else:  # laid out on lines, and still exactly the value's JSON
        assert json.loads(output_view(text)) == output


def test_a_value_json_cannot_encode_is_shown_by_its_repr_and_cut() -> None:
    output = {"values": set(range(3000))}
    text = run_bundle(run_of(output))["text/plain"]
    assert f"… (cut at {MAX_SHOWN:,} characters of " in text
    assert "{'values': {0, 1, 2" in text


# --------------------------------------------------------------------------- the record


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


class Colour(enum.IntEnum):
    RED = 1


class Label(str):
    pass


TRICKY = {
    "plain": {"a": [1, 2.5, "é", None, True, {"b": []}]},
    "tuple": (1, (2, 3)),
    "int keys": {1: "a", "1": "b"},
    "bool and None keys": {True: 1, None: 2, 1.5: 3},
    "nan": [1.0, math.nan, math.inf],
    "surrogate": {"text": "\ud800"},
    "huge int": 10**5000,
    "deep": nested(100),  # as deep as the record keeps
    "too deep": nested(102),  # past that, the record holds a repr
    "set": {1, 2},
    "int enum": [Colour.RED],
    "str subclass": {"label": Label("x")},
    "float subclass": [type("F", (float,), {})(1.5)],
    "shared": [[1, 2]] * 3,
    "empty dict output": [{}],
}


@pytest.mark.parametrize("name", list(TRICKY))
def test_the_record_of_any_output_is_what_jsonable_makes_of_it(name: str) -> None:
    value = TRICKY[name]
    run = run_of(value)
    record = run.to_record()
    expected = jsonable(value)
    assert json.dumps(record["output"]) == json.dumps(expected)  # the same text, types too
    if run.output_json is not None:  # shared: the text is the record's output, exactly
        assert is_plain(value)
        assert json.loads(run.output_json) == expected
        assert run.output_json == json.dumps(value, ensure_ascii=False, allow_nan=False)


def test_plain_values_are_shared_others_are_copied() -> None:
    assert run_of({"vec": [0.5] * 10}).output_json == json.dumps({"vec": [0.5] * 10})
    for name in ("tuple", "int keys", "nan", "surrogate", "huge int", "too deep", "set"):
        assert run_of(TRICKY[name]).output_json is None, name


# --------------------------------------------------------------------------- the checks

RESULTS = [
    {"output": 1},
    {},
    {"output": {"a": [1, 2.5, "é", None]}, "error": "x", "stopPod": True},
    {"output": math.nan},
    {"error": {"deep": [math.inf]}},
    {"output": [1, {2}]},
    {"output": "\ud800"},
    {"output": 10**5000},
    {"output": ("t", 1)},
    {"output": {1: 2}},
    {"output": "日本"},
]


@pytest.mark.parametrize("result", RESULTS, ids=range(len(RESULTS)))
def test_one_encoding_finds_what_the_whole_result_encoded_found(result) -> None:
    sent = checks.encode_result(result)
    data, problem = checks.encoded(result)
    assert sent.problem == problem
    assert sent.size == (len(data) if data is not None else 0)
    if problem is None:
        lenient = json.dumps(result, ensure_ascii=False)
        assert sent.non_finite == ("NaN" in lenient or "Infinity" in lenient)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ({"x": math.nan}, "the output holds NaN or Infinity"),
        ({"x": {1, 2}}, "the result is not JSON-serialisable"),
        ("\ud800", "the result is not valid UTF-8"),
        ("x" * 21_000_000, "the result is 21.0 MB, over RunPod's 20 MB limit"),
        ({"deep": 10**5000}, "the result is not JSON-serialisable"),
    ],
    ids=["nan", "set", "surrogate", "over 20 MB", "huge int"],
)
def test_the_result_warnings_still_catch_what_cannot_be_sent(output, expected) -> None:
    run = run_of(output)
    assert any(warning.startswith(expected) for warning in run.warnings), run.warnings


# --------------------------------------------------------------------------- the kernel's message


def test_dumps_sharing_is_what_jupyter_would_send() -> None:
    output = {"vec": [1.5, 2.5], "text": "é\u2028"}
    text = json.dumps(output, ensure_ascii=False, allow_nan=False)
    content = {
        "data": {"text/plain": "…", RECORD_MIMETYPE: {"job": {"input": {}}, "output": output}},
        "metadata": {},
        "transient": {"display_id": "abc"},
    }
    expected = json_packer(content)
    assert dumps_sharing(content, output, text).encode() == expected
    assert dumps_sharing(content, object(), "unused").encode() == expected  # nothing shared


class Frames:
    """Stands in for a kernel's IOPub socket: keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames, *args, **kwargs) -> None:
        self.sent.append([bytes(frame) for frame in frames])


@pytest.mark.parametrize("size", [10, 50_000], ids=["small", "big"])
def test_the_kernels_display_message_holds_the_record_encoded_once(ipython, size) -> None:
    """ipykernel's own display publisher and a signed jupyter_client session: the message
    %rp_test sends is the one the kernel would have encoded itself, byte for byte (a big
    output's JSON spliced in, not encoded again), and the hook is gone afterwards."""
    session = Session()
    install(ipython, session)
    signer = MessageSession(key=b"test-key")
    packed: list[object] = []  # what the session itself encoded

    def pack(value: object) -> bytes:
        packed.append(value)
        return json_packer(value)

    signer.pack = pack
    socket = Frames()
    publisher = ZMQDisplayPublisher(shell=ipython, session=signer, pub_socket=socket)
    saved = ipython.display_pub
    ipython.display_pub = publisher
    ipython.user_ns["BIG"] = [i / 3 for i in range(size)]
    try:
        ipython.run_cell('%%handler\ndef handler(job):\n    return {"vec": list(BIG)}\n')
        ipython.run_cell('run = %rp_test {"input": {}}', store_history=True)
    finally:
        ipython.display_pub = saved
        uninstall(ipython)
        session.close()
    run = ipython.user_ns["run"]
    assert run.status == "COMPLETED"
    assert (len(run.output_json) >= SHARED_OVER) == (size > 10)
    shown = []
    for frames in socket.sent:
        _, parts = signer.feed_identities(frames)
        message = signer.deserialize(parts)  # checks the signature
        if message["msg_type"] == "display_data":
            shown.append((message, parts))
    ((message, parts),) = shown
    record = message["content"]["data"][RECORD_MIMETYPE]
    assert record["output"] == {"vec": [i / 3 for i in range(size)]}
    content = {"data": run_bundle(run), "metadata": {}, "transient": {}}
    assert parts[4] == json_packer(content)  # what the kernel itself would have sent
    encoded_by_session = [v for v in packed if isinstance(v, dict) and "data" in v]
    assert len(encoded_by_session) == (0 if size > 10 else 1)  # a big one was not encoded again
    assert publisher._hooks == []


def test_a_job_is_still_copied_for_the_record() -> None:
    session = Session()

    def handler(job):
        job["input"]["seen"] = True
        return 1

    run = session.run_job(build_job({"input": {"a": [1]}}), handler)
    assert run.job == {"id": "local_test", "input": {"a": [1]}}
    session.close()


@pytest.mark.slow
def test_the_checks_do_not_count_against_the_jobs_timeout() -> None:
    """Encoding a million floats takes longer than this timeout on a slow machine; the
    handler returns at once, so the run is COMPLETED: nbworker's checks run after the
    deadline, and the duration is the handler's."""
    vector = [i / 7 for i in range(1_000_000)]
    session = Session()
    run = session.run_job({"input": {}}, lambda job: {"vec": vector}, timeout=0.2)
    session.close()
    assert run.status == "COMPLETED", run.error
    assert run.duration_ms < 200
    assert run.to_record()["output"]["vec"] is vector
