"""The plain-Python API: jobs, runs, timeouts, interrupts, logs, with no IPython."""

from __future__ import annotations

import _thread
import ast
import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from helpers import run_python

import nbworker
from nbworker import HandlerError, HandlerNotFound, JobError, Session
from nbworker.jobs import build_job, parse_job


@pytest.fixture
def session():
    session = Session()
    yield session
    session.close()


def test_import_is_light() -> None:
    code = (
        "import sys, nbworker\n"
        "run = nbworker.run_job({'input': {'x': 1}}, lambda job: job['input']['x'] + 1)\n"
        "assert run.output == 2, run\n"
        "heavy = [m for m in ('IPython', 'runpod', 'papermill', 'ipywidgets', 'torch') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_public_api_is_sorted_and_complete() -> None:
    """Sorted; every name in it resolves; and complete: every public name the package
    offers, defined or imported in it (for type checkers too, under TYPE_CHECKING) or
    loaded lazily on first use, is in `__all__`."""
    assert nbworker.__all__ == sorted(nbworker.__all__)
    for name in nbworker.__all__:
        assert getattr(nbworker, name) is not None, name
    # What the module holds once every name is resolved: its own functions and classes,
    # the ones it imports from nbworker, the lazy ones (modules imported meanwhile aside).
    offered = {
        name
        for name, value in vars(nbworker).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").partition(".")[0] == "nbworker"
    }
    # What a type checker sees: the names imported under `if TYPE_CHECKING:`.
    tree = ast.parse(Path(nbworker.__file__).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in ast.walk(node):
                if isinstance(statement, ast.ImportFrom | ast.Import):
                    offered |= {alias.asname or alias.name for alias in statement.names}
    assert offered <= set(nbworker.__all__), offered - set(nbworker.__all__)
    assert offered >= set(nbworker.__all__) - {"__version__"}


# ---------------------------------------------------------------- jobs


def test_job_gets_the_local_test_id_and_keeps_other_keys() -> None:
    assert build_job({"input": {"a": 1}}) == {"id": "local_test", "input": {"a": 1}}
    job = build_job({"input": {}, "id": "mine", "webhook": "http://127.0.0.1/hook"})
    assert job == {"id": "mine", "input": {}, "webhook": "http://127.0.0.1/hook"}


def test_job_errors_carry_the_position() -> None:
    with pytest.raises(JobError) as caught:
        parse_job('{"input": {"a": 1,}}', source="test_input.json")
    assert caught.value.position == 18
    assert str(caught.value) == (
        "test_input.json is not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1 column 19 (char 18)"
    )


def test_record_keeps_the_job_as_given_and_is_json(session: Session) -> None:
    def handler(job):
        job["input"]["mutated"] = True
        return {"score": float("nan"), "items": (1, 2)}

    run = session.run_job({"input": {"a": 1}}, handler)
    record = run.to_record()
    assert record["job"] == {"id": "local_test", "input": {"a": 1}}
    assert record["output"] == {"score": None, "items": [1, 2]}
    json.dumps(record, allow_nan=False)
    assert any("NaN" in warning for warning in run.warnings)


def test_run_job_takes_json_text_names_and_functions(session: Session) -> None:
    session.register_handler(lambda job: job["input"], name="echo")
    assert session.run_job('{"input": [1]}').output == [1]
    assert session.run_job({"input": 2}, "echo").output == 2
    assert session.run_job({"input": 3}, lambda job: -job["input"]).output == -3
    assert [run.output for run in session.history] == [[1], 2, -3]
    assert "<lambda>" not in session.registry  # a function run directly is not registered


def test_history_is_bounded() -> None:
    session = Session(history=3)
    for value in range(5):
        session.run_job({"input": value}, lambda job: job["input"])
    assert [run.output for run in session.history] == [2, 3, 4]


def test_registry_errors(session: Session) -> None:
    with pytest.raises(HandlerNotFound, match="no handler is registered"):
        session.run_job({"input": {}})
    with pytest.raises(HandlerError, match="without a name"):
        session.register_handler(lambda job: 1)
    with pytest.raises(HandlerError, match="is not callable"):
        session.register_handler(42, name="answer")
    session.register_handler(lambda job: 1, name="a")
    with pytest.raises(HandlerNotFound) as caught:
        session.run_job({"input": {}}, "b")
    assert (caught.value.name, caught.value.available) == ("b", ("a",))


# ---------------------------------------------------------------- stopping runaway handlers


def spin(job):
    while True:
        pass


def swallow_everything(job):
    while True:
        try:  # noqa: SIM105  (the point: a handler that catches every Exception)
            time.sleep(10)
        except Exception:
            pass


async def async_sleep(job):
    await asyncio.sleep(100)


async def async_spin(job):
    while True:
        pass


@pytest.mark.parametrize("handler", [spin, swallow_everything, async_sleep, async_spin])
def test_timeout_stops_runaway_handlers(session: Session, handler) -> None:
    started = time.perf_counter()
    run = session.run_job({"input": {}}, handler, timeout=0.2)
    assert time.perf_counter() - started < 3
    assert (run.status, run.output, run.result) == ("TIMED_OUT", None, None)
    assert run.error == "timed out after 0.2 s"
    assert f"in {handler.__name__}" in run.traceback  # where it was when stopped
    # The runner, and its private event loop, still work afterwards.
    assert session.run_job({"input": 1}, lambda job: job["input"]).output == 1
    assert session.run_job({"input": 1}, _async_echo).output == 1


async def _async_echo(job):
    await asyncio.sleep(0)
    return job["input"]


def test_timeout_keeps_the_chunks_streamed_so_far(session: Session) -> None:
    closed = []

    def tokens(job):
        try:
            for i in range(1000):
                yield i
                time.sleep(0.05)
        finally:
            closed.append(True)

    run = session.run_job({"input": {}}, tokens, timeout=0.3)
    assert run.status == "TIMED_OUT"
    assert 2 <= len(run.stream) < 20 and run.stream == list(range(len(run.stream)))
    assert closed == [True]


def test_timeout_off_the_main_thread(session: Session) -> None:
    runs = []
    worker = threading.Thread(
        target=lambda: runs.append(session.run_job({"input": {}}, spin, timeout=0.2))
    )
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert runs[0].status == "TIMED_OUT"


def test_no_timeout_leaks_after_a_run(session: Session) -> None:
    run = session.run_job({"input": {}}, lambda job: "quick", timeout=0.1)
    assert run.status == "COMPLETED"
    time.sleep(0.2)  # an alarm left armed would raise here


def test_interrupt_cancels_the_run_not_the_process(session: Session) -> None:
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    run = session.run_job({"input": {}}, spin)
    timer.join()
    assert run.status == "CANCELLED"
    assert isinstance(run.interrupt, KeyboardInterrupt)
    assert session.run_job({"input": 5}, lambda job: job["input"]).output == 5


# ---------------------------------------------------------------- what the handler says


def test_logs_reach_the_output_and_logging_is_restored(
    session: Session, capsys, monkeypatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # unconfigured, as in a fresh kernel (not pytest)
    level, handlers = root.level, list(root.handlers)

    def chatty(job):
        logging.getLogger("model").info("loaded %d layers", 12)
        print("printed")
        return 1

    session.run_job({"input": {}, "id": "job-7"}, chatty)
    out = capsys.readouterr()
    assert "printed" in out.out
    assert "INFO   | job-7 | loaded 12 layers" in out.err
    assert (root.level, root.handlers) == (level, handlers)


def test_log_records_of_other_threads_are_not_labelled_with_the_job(
    session: Session, capsys, monkeypatch
) -> None:
    """Two jobs served at once share the root logger: each job's id labels its own records
    only; another thread's INFO stays hidden (as unconfigured logging hides it), its WARNING
    shows unlabelled."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    inside, release = threading.Event(), threading.Event()

    def slow(job):
        logging.getLogger("a").info("from job a")
        inside.set()
        release.wait(10)
        return 1

    first = threading.Thread(target=session.run_job, args=({"input": {}, "id": "job-a"}, slow))
    first.start()
    assert inside.wait(10)
    other = threading.Thread(
        target=lambda: (
            logging.getLogger("b").info("info of another thread"),
            logging.getLogger("b").warning("warning of another thread"),
        )
    )
    other.start()
    other.join()
    release.set()
    first.join()
    err = capsys.readouterr().err
    assert "INFO   | job-a | from job a" in err
    assert "info of another thread" not in err
    assert "warning of another thread" in err
    assert "job-a | warning of another thread" not in err


def test_async_handlers_see_a_running_loop_like_a_deployed_worker(session: Session) -> None:
    async def handler(job):
        return asyncio.get_running_loop() is not None

    async def nested(job):
        pending = asyncio.sleep(0)
        try:
            return asyncio.run(pending)
        finally:
            pending.close()  # asyncio.run refused it before awaiting it

    assert session.run_job({"input": {}}, handler).output is True
    run = session.run_job({"input": {}}, nested)
    assert run.status == "FAILED"
    assert json.loads(run.error)["error_message"] == (
        "asyncio.run() cannot be called from a running event loop"
    )
    assert any("asyncio.run() failed" in warning for warning in run.warnings)


def test_a_stream_too_long_to_record_is_cut_the_same_way_each_time(session) -> None:
    """An endless generator under a timeout must not write gigabytes into the notebook: the
    record keeps the chunks up to RECORD_STREAM_LIMIT characters and says how many there were."""
    from nbworker.record import RECORD_STREAM_LIMIT

    def handler(job):
        yield from ("x" * 1000 for _ in range(2000))  # about 2 MB of JSON

    first = nbworker.run_job({"input": {}}, handler).to_record()
    again = nbworker.run_job({"input": {}}, handler).to_record()
    assert first["stream_total"] == 2000 and 0 < len(first["stream"]) < 2000
    assert len(json.dumps(first["stream"])) <= RECORD_STREAM_LIMIT
    assert first["stream"] == again["stream"]
    assert any("first" in warning and "2,000 chunks" in warning for warning in first["warnings"])
    short = nbworker.run_job({"input": {}}, lambda job: (yield 1)).to_record()
    assert short["stream"] == [1] and "stream_total" not in short


def test_exceptions_and_outputs_whose_own_str_or_repr_raise(session) -> None:
    """A handler's exception whose __str__ raises, and an output whose __repr__ raises, are
    a FAILED run and a recorded run: never an error out of nbworker."""

    class Nasty(Exception):
        def __str__(self):
            raise RuntimeError("str bomb")

    class Opaque:
        def __repr__(self):
            raise RuntimeError("repr bomb")

    def raises(job):
        raise Nasty()

    failed = nbworker.run_job({"input": {}}, raises)
    assert failed.status == "FAILED"
    assert json.loads(failed.error)["error_message"].startswith("<Nasty object: str() failed")
    returned = nbworker.run_job({"input": {}}, lambda job: Opaque())
    assert returned.to_record()["output"].startswith("<Opaque object: repr() failed")
    assert "repr() failed" in repr(returned)


def test_json_nested_past_the_parser_is_a_job_error() -> None:
    with pytest.raises(JobError, match="nested too deeply"):
        parse_job('{"input": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_an_endless_timeout_is_no_timeout_and_a_lost_alarm_still_stops_the_job(session) -> None:
    """`timeout=inf` (or 1e300, past what setitimer takes) runs unbounded; a handler that
    ignores SIGALRM on the main thread is still stopped, by the watchdog, a second later."""
    import signal

    assert nbworker.run_job({"input": {}}, lambda job: 1, timeout=float("inf")).output == 1
    assert nbworker.run_job({"input": {}}, lambda job: 1, timeout=1e300).output == 1

    def deaf(job):
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        while True:
            pass

    previous = signal.getsignal(signal.SIGALRM)
    try:
        started = time.monotonic()
        run = nbworker.run_job({"input": {}}, deaf, timeout=0.2)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert run.status == "TIMED_OUT" and time.monotonic() - started < 3


PROFILED_AFTER_TIMEOUTS = """
import cProfile, sys, threading
from nbworker.stopping import JobTimeout, watchdog

def spin():
    with watchdog(0.05):
        while True:
            pass

def finish_in_time():
    with watchdog(30):
        return 1

outcomes = []
def work():
    try:
        spin()
    except JobTimeout:
        outcomes.append("timed out")
    outcomes.append(finish_in_time())

thread = threading.Thread(target=work)
thread.start()
thread.join()
assert outcomes == ["timed out", 1], outcomes
cProfile.Profile().runcall(lambda: sum(range(10)))
sys.settrace(lambda *args: None)
(lambda: None)()
sys.settrace(None)
print("profiled and traced after a timeout")
"""


def test_a_profiler_or_tracer_after_a_thread_timed_out_does_not_hang_the_process() -> None:
    """Held: after a watchdog stopped a handler on a thread, cProfile and sys.settrace run
    (before: the watchdog cleared its fired timeout with PyThreadState_SetAsyncExc(id, NULL),
    which leaves CPython 3.11's eval breaker armed, and the first profiled call spun)."""
    done = run_python(PROFILED_AFTER_TIMEOUTS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "profiled and traced after a timeout" in done.stdout
