"""End-to-end tests of the magics in a real Jupyter kernel (no mocks).

Kernels come from tests/kernel_client.py (`Kernel`, `Execution`). Tests that only define
handlers and run jobs share one kernel per module (the `kernel` fixture of conftest.py);
tests that stop a run (timeout, interrupt) get a fresh kernel (`fresh_kernel`), so that a
kernel left spinning cannot take the other tests down with it.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from helpers import notebook_records, write_notebook
from kernel_client import OUTPUT_TYPES, Execution, Kernel, Message, strip_ansi

from nbworker.record import RECORD_MIMETYPE as RECORD

# --------------------------------------------------------------------------- helpers


LIVE_HEAD = re.compile(r"IN_PROGRESS\s+\S+\s+([\d.]+) (µs|ms|s)\s+(\d+) chunks?")


def live_head(update: Message) -> tuple[float, int]:
    """(ms since the run started, chunks shown) of a live view update."""
    head = update.content["data"]["text/plain"].splitlines()[0]
    match = LIVE_HEAD.search(head)
    assert match, head
    scale = {"µs": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
    return float(match[1]) * scale, int(match[3])


def error_json(record: dict[str, Any]) -> dict[str, Any]:
    """RunPod's error JSON of a FAILED run of a non-streaming handler."""
    assert isinstance(record["error"], str), record
    return json.loads(record["error"])


# --------------------------------------------------------------------------- 1. sync handler


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sync_handler_records_run_and_shows_prints_and_logs(kernel: Kernel) -> None:
    defined = kernel.ok(
        """
        %%handler
        import logging

        def handler(job):
            print("hello from the handler")
            logging.getLogger("x").info("info from logger x")
            return {"double": 2 * job["input"]["x"]}
        """
    )
    assert "registered `handler` (sync)" in defined.stdout

    run = kernel.ok('%rp_test handler {"input": {"x": 21}}')

    displays = [m for m in run.of_type("display_data") if RECORD in m.content["data"]]
    assert len(displays) == 1, run.describe()
    data = displays[0].content["data"]
    assert {"text/plain", "text/html", RECORD} <= set(data)
    record = data[RECORD]
    assert record["status"] == "COMPLETED"
    assert record["handler"] == "handler"
    assert record["output"] == {"double": 42}
    assert record["error"] is None
    assert record["stream"] is None
    assert record["job"] == {"id": "local_test", "input": {"x": 21}}
    assert set(record) >= {
        "handler", "job", "status", "output", "error", "stream",
        "refresh_worker", "duration_ms", "warnings",
    }  # fmt: skip
    assert record["warnings"] == []

    # What the handler printed and logged is in this cell, before the result.
    assert "hello from the handler" in run.stdout, run.describe()
    assert "info from logger x" in run.stderr, run.describe()
    record_t = displays[0].t
    for needle in ("hello from the handler", "info from logger x"):
        (message,) = [m for m in run.of_type("stream") if needle in m.content["text"]]
        assert message.t <= record_t

    # The run's logging set-up is undone: the root logger is as it was.
    assert kernel.evaluate("__import__('logging').getLogger().handlers") == "[]"


# --------------------------------------------------------------------------- 2. async


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_async_handler_completes_inside_the_running_kernel_loop(kernel: Kernel) -> None:
    kernel.ok(
        """
        %%handler sleeper
        import asyncio

        async def sleeper(job):
            loop = asyncio.get_running_loop()
            await asyncio.sleep(0.05)
            return {"slept": job["input"]["seconds"], "loop_running": loop.is_running()}
        """
    )
    # The kernel's own event loop is running while the cell runs the job.
    run = kernel.ok(
        """
        import asyncio
        kernel_loop = asyncio.get_running_loop()
        assert kernel_loop.is_running()
        %rp_test sleeper {"input": {"seconds": 0.05}}
        """
    )
    record = run.record()
    assert record["status"] == "COMPLETED", run.describe()
    assert record["output"] == {"slept": 0.05, "loop_running": True}
    assert record["duration_ms"] >= 45
    assert record["warnings"] == []

    # The kernel's loop is still the running loop of the main thread, and top-level
    # await still works.
    after = kernel.ok(
        """
        assert asyncio.get_running_loop() is kernel_loop
        await asyncio.sleep(0.01)
        print("top-level await ok")
        """
    )
    assert "top-level await ok" in after.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_async_handler_calling_asyncio_run_fails_as_deployed(kernel: Kernel) -> None:
    defined = kernel.ok(
        """
        %%handler nested
        import asyncio

        async def nested(job):
            coro = asyncio.sleep(0)
            try:
                return asyncio.run(coro)
            finally:
                coro.close()  # no "never awaited" warning in a later cell
        """
    )
    assert "asyncio.run" in defined.stdout  # warned when registered
    run = kernel.ok('%rp_test nested {"input": {}}')  # a FAILED run does not fail the cell
    record = run.record()
    assert record["status"] == "FAILED", run.describe()
    assert record["output"] is None
    info = error_json(record)
    assert info["error_type"] == "<class 'RuntimeError'>"
    assert "running event loop" in info["error_message"]
    assert any("asyncio.run" in warning for warning in record["warnings"]), record["warnings"]

    # Called in a way the check at registration cannot see, it is still explained.
    defined = kernel.ok(
        """
        %%handler hidden
        import asyncio

        async def hidden(job):
            run_it = asyncio.run
            coro = asyncio.sleep(0)
            try:
                return run_it(coro)
            finally:
                coro.close()
        """
    )
    assert "asyncio.run" not in defined.stdout
    record = kernel.ok('%rp_test hidden {"input": {}}').record()
    assert record["status"] == "FAILED"
    assert any("asyncio.run" in warning for warning in record["warnings"]), record["warnings"]


# --------------------------------------------------------------------------- 3. streaming

GENERATORS = {
    "generator": """
        %%handler {name}{flags}
        import time

        def {name}(job):
            for chunk in job["input"]["chunks"]:
                yield chunk
                time.sleep(0.4)  # more than a tick of the live view (0.25 s)
        """,
    "async_generator": """
        %%handler {name}{flags}
        import asyncio

        async def {name}(job):
            for chunk in job["input"]["chunks"]:
                yield chunk
                await asyncio.sleep(0.4)
        """,
}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
@pytest.mark.parametrize("kind", ["generator", "async_generator"])
def test_streaming_is_live(kernel: Kernel, kind: str, aggregate: bool) -> None:
    name = f"live_{kind}_{'agg' if aggregate else 'plain'}"
    flags = " --aggregate" if aggregate else ""
    defined = kernel.ok(GENERATORS[kind].format(name=name, flags=flags))
    expected_kind = kind.replace("_", " ") + (", aggregate" if aggregate else "")
    assert f"registered `{name}` ({expected_kind})" in defined.stdout

    chunks = ["chunk-alpha", "chunk-bravo", "chunk-charlie"]
    run = kernel.ok(f"%rp_test {name} {json.dumps({'input': {'chunks': chunks}})}")

    # A live view with a display_id comes first, then updates of that same display.
    first = run.of_type("display_data")[0]
    display_id = first.content.get("transient", {}).get("display_id")
    assert display_id, run.describe()
    assert RECORD not in first.content["data"]
    updates = run.of_type("update_display_data")
    assert updates and all(u.content["transient"]["display_id"] == display_id for u in updates), (
        run.describe()
    )
    live = [first] + [u for u in updates if RECORD not in u.content["data"]]

    def arrival(chunk: str) -> float:
        """When the first live update showing `chunk` arrived."""
        times = [u.t for u in live if chunk in u.content["data"]["text/plain"]]
        assert times, f"no live update showed {chunk}\n{run.describe()}"
        return times[0]

    t_alpha, t_bravo, t_charlie = (arrival(chunk) for chunk in chunks)
    # Chunks reach the frontend while the handler still runs, spaced as they were yielded.
    assert t_alpha <= run.idle_t - 0.4, run.describe()
    assert t_alpha <= run.reply_t - 0.4, run.describe()
    assert t_bravo - t_alpha >= 0.15, run.describe()
    assert t_charlie - t_bravo >= 0.15, run.describe()

    # The last update turns the live view into the result, with the record.
    final = updates[-1].content["data"]
    assert RECORD in final, run.describe()
    record = final[RECORD]
    assert record["status"] == "COMPLETED"
    assert record["stream"] == chunks
    # RunPod's job loop: with return_aggregate_stream the output is the list of chunks,
    # else the empty list it starts from.
    assert record["output"] == (chunks if aggregate else [])
    assert record["duration_ms"] >= 1150
    # The cell ends with exactly one display: the live view, now the result.
    assert [o["output_type"] for o in run.outputs() if o["output_type"] != "stream"] == [
        "display_data"
    ]
    assert run.records() == [record]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_live_updates_are_throttled_but_every_chunk_is_recorded(kernel: Kernel) -> None:
    kernel.ok(
        """
        %%handler burst
        import time

        def burst(job):
            for index in range(job["input"]["n"]):
                time.sleep(0.002)
                yield index
        """
    )
    run = kernel.ok('%rp_test burst {"input": {"n": 400}}')
    record = run.record()
    assert record["status"] == "COMPLETED"
    assert record["stream"] == list(range(400))
    live = [m for m in run.of_type("display_data", "update_display_data")]
    live = [m for m in live if RECORD not in m.content["data"]]
    shown = [live_head(u)[1] for u in live]
    assert len(live) >= 2, run.describe()
    assert shown == sorted(shown), shown  # the view only grows
    # One update per 0.25 s (at most), not one per chunk; the exact spacing is checked by
    # test_live_updates_are_at_least_the_interval_apart.
    assert len(live) <= record["duration_ms"] / 250 + 1, (len(live), record["duration_ms"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_held_back_chunk_is_shown_during_a_pause(kernel: Kernel) -> None:
    """Two quick chunks are shown by the live view's timer (another thread) during the
    pause that follows: that view must reach this cell."""
    kernel.ok(
        """
        %%handler pause
        import time

        def pause(job):
            yield "quick-1"
            yield "quick-2"
            time.sleep(0.8)
            yield "late"
        """
    )
    run = kernel.ok('%rp_test pause {"input": {}}')
    live = [m for m in run.of_type("display_data", "update_display_data")]
    live = [m for m in live if RECORD not in m.content["data"]]
    with_second = [u.t for u in live if "quick-2" in u.content["data"]["text/plain"]]
    assert with_second, run.describe()
    assert with_second[0] <= run.idle_t - 0.3, run.describe()
    assert run.record()["stream"] == ["quick-1", "quick-2", "late"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_live_updates_are_at_least_the_interval_apart(kernel: Kernel) -> None:
    """At most one live update per TICK_SECONDS (0.25 s), however the chunks come, also when
    the handler holds the GIL past the due time of a tick (as a long call into a C
    extension does; a 1 s switch interval stands in for it)."""
    kernel.ok(
        """
        %%handler gil_hog
        import sys
        import time

        def gil_hog(job):
            end = time.perf_counter() + 0.6
            while time.perf_counter() < end:  # a chunk every 1 ms
                time.sleep(0.001)
                yield 0
            previous = sys.getswitchinterval()
            sys.setswitchinterval(1.0)
            try:
                end = time.perf_counter() + 0.4
                while time.perf_counter() < end:  # holds the GIL past a tick's due time
                    pass
                yield 1
            finally:
                sys.setswitchinterval(previous)
            time.sleep(0.6)
        """
    )
    run = kernel.ok('%rp_test gil_hog {"input": {}}')
    assert run.record()["stream"][-1] == 1
    live = [m for m in run.of_type("display_data", "update_display_data")]
    live = [m for m in live if RECORD not in m.content["data"]]
    # When each update was made, in the kernel: the elapsed time its view shows (to 10 ms
    # past 1 s).
    made = [live_head(u)[0] for u in live]
    gaps = [round(later - earlier) for earlier, later in itertools.pairwise(made)]
    assert len(gaps) >= 2 and min(gaps) >= 240, f"ms between live updates: {gaps}\n{run.describe()}"


# --------------------------------------------------------------------------- 4. timeout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_timeout_stops_a_pure_python_loop_and_the_kernel_lives_on(fresh_kernel: Kernel) -> None:
    k = fresh_kernel
    k.ok('model = {"weights": [0.25, 0.5]}  # stands in for a loaded model')
    k.ok(
        """
        %%handler spin
        def spin(job):
            while True:
                pass
        """
    )
    k.ok(
        """
        %%handler echo
        def echo(job):
            return {"echo": job["input"]}
        """
    )

    run = k.execute('%rp_test spin {"input": {}} --timeout 1')
    assert run.status == "ok", run.describe()  # a TIMED_OUT run does not fail the cell
    assert not run.of_type("error"), run.describe()
    assert 0.9 <= run.reply_t < 5, run.describe()
    record = run.record()
    assert record["status"] == "TIMED_OUT"
    assert record["output"] is None
    assert "timed out after 1 s" in record["error"]
    assert 900 <= record["duration_ms"] < 5000

    # The kernel answers; the handlers, the model and the signal set-up are as they were.
    again = k.ok('%rp_test echo {"input": {"x": 1}}')
    assert again.record()["status"] == "COMPLETED"
    assert again.record()["output"] == {"echo": {"x": 1}}
    names = k.evaluate("__import__('nbworker').default_session().registry.names()")
    assert names == "['echo', 'spin']"
    assert k.evaluate("model") == "{'weights': [0.25, 0.5]}"
    # No alarm left armed, SIGALRM's handler given back.
    k.ok("import signal")
    assert k.evaluate("signal.getitimer(signal.ITIMER_REAL)") == "(0.0, 0.0)"
    assert k.evaluate("signal.getsignal(signal.SIGALRM)") == "<Handlers.SIG_DFL: 0>"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_timeout_of_an_async_handler_leaves_the_kernel_loop_working(fresh_kernel: Kernel) -> None:
    k = fresh_kernel
    k.ok(
        """
        %%handler stuck
        import asyncio

        async def stuck(job):
            await asyncio.sleep(3600)
        """
    )
    run = k.execute('%rp_test stuck {"input": {}} --timeout 0.5')
    assert run.status == "ok", run.describe()
    assert run.reply_t < 5, run.describe()
    assert run.record()["status"] == "TIMED_OUT"
    after = k.ok(
        """
        import asyncio
        await asyncio.sleep(0.01)
        print(asyncio.get_running_loop().is_running())
        """
    )
    assert after.stdout.strip() == "True"


# --------------------------------------------------------------------------- 5. interrupt


def execute_and_queue(
    k: Kernel,
    code: str,
    queued: str,
    *,
    interrupt_when: Callable[[Execution], bool],
    timeout: float = 30.0,
) -> tuple[Execution, Execution]:
    """Send `code`, then `queued` behind it (as "Run all" does); interrupt the kernel once
    `interrupt_when(what code produced so far)`. What each request produced, once both have
    their reply and `code` its idle status."""
    kc = k.kc
    results = {kc.execute(code): Execution(code), kc.execute(queued): Execution(queued)}
    first = next(iter(results))
    started, interrupted, idle = time.monotonic(), False, False
    while not (idle and all(result.reply for result in results.values())):
        elapsed = time.monotonic() - started
        assert elapsed < timeout, "\n".join(r.describe() for r in results.values())
        if not interrupted and interrupt_when(results[first]):
            k.km.interrupt_kernel()
            interrupted = True
            results[first].actions["interrupt"] = elapsed
        for get in (kc.get_iopub_msg, kc.get_shell_msg):
            try:
                message = get(timeout=0.01)
            except queue.Empty:
                continue
            result = results.get(message["parent_header"].get("msg_id"))
            kind, content = message["msg_type"], message["content"]
            if result is None:
                continue
            if kind == "execute_reply":
                result.reply, result.reply_t = content, elapsed
            elif (
                kind == "status"
                and content["execution_state"] == "idle"
                and result is results[first]
            ):
                idle, result.idle_t = True, elapsed
            elif kind in OUTPUT_TYPES:
                result.messages.append(Message(elapsed, kind, content))
    return results[first], results[next(k for k in results if k != first)]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_interrupt_shows_the_cancelled_card_alone_and_stops_run_all(fresh_kernel: Kernel) -> None:
    """Kernel > Interrupt while %rp_test runs: the CANCELLED card is the cell's one output
    (the live view, turned into the card in place; no traceback), the reply is an error so
    the queued cell is aborted, and the kernel, its handlers and its model cache live on."""
    k = fresh_kernel
    k.ok('%%model weights\nweights = {"w": [1, 2, 3]}')
    k.ok(
        """
        %%handler spin
        def spin(job):
            print("spinning", flush=True)
            while True:
                pass
        """
    )
    k.ok(
        """
        %%handler echo
        def echo(job):
            return {"echo": job["input"], "weights": weights["w"]}
        """
    )
    run, queued = execute_and_queue(
        k,
        '%rp_test spin {"input": {}}',
        'print("the queued cell ran")',
        interrupt_when=lambda execution: bool(execution.of_type("update_display_data")),
    )
    assert run.status == "error" and run.reply["ename"] == "KeyboardInterrupt", run.describe()
    assert run.reply["traceback"] == [] and not run.of_type("error"), run.describe()
    outputs = [o for o in run.outputs() if o["output_type"] != "stream"]
    assert [o["output_type"] for o in outputs] == ["display_data"], run.describe()
    assert run.of_type("update_display_data"), run.describe()  # it was live first
    assert outputs[0]["data"]["text/plain"].startswith("■ CANCELLED"), run.describe()
    assert run.record()["status"] == "CANCELLED" and run.record()["output"] is None
    assert run.reply_t - run.actions["interrupt"] < 5, run.describe()
    assert queued.status == "aborted" and not queued.messages, queued.describe()

    # The kernel keeps working, with its handlers, variables and model cache.
    names = k.evaluate("__import__('nbworker').default_session().registry.names()")
    assert names == "['echo', 'spin']"
    again = k.ok('%rp_test echo {"input": {"after": "interrupt"}}')
    assert again.record()["output"] == {"echo": {"after": "interrupt"}, "weights": [1, 2, 3]}
    hit = k.ok('%%model weights\nweights = {"w": [1, 2, 3]}')
    assert hit.stdout.startswith("weights: cache hit"), hit.describe()
    # an interrupt of the user's own code still shows its traceback
    own = k.execute("raise KeyboardInterrupt('mine')")
    assert own.status == "error" and [e.content["evalue"] for e in own.of_type("error")] == ["mine"]


# --------------------------------------------------------------------------- 6. usage errors


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param('%rp_test {"input": ', "(char 9)", id="bad-json"),
        pytest.param('%rp_test {"inputs": {}}', 'has no "input"', id="no-input"),
        pytest.param('%rp_test no_such_handler {"input": {}}', "no handler named", id="unknown"),
        pytest.param('%rp_test {"input": {}} --timeout 0', "must be positive", id="timeout"),
        pytest.param("%rp_test", "give the job once", id="no-job"),
        pytest.param("%%handler\ndef handler(job:\n", "SyntaxError at line 2", id="syntax"),
        pytest.param("%%handler\nx = 1\n", "defines no function", id="no-function"),
        pytest.param("%%handler\ndef f(): pass\n", "cannot take one positional", id="signature"),
    ],
)
def test_usage_errors_are_one_line(kernel: Kernel, code: str, expected: str) -> None:
    if "no_such_handler" in code or code == "%rp_test":
        kernel.ok("%%handler\ndef handler(job):\n    return 1")  # something is registered
    result = kernel.execute(code)
    assert result.status == "error", result.describe()
    assert result.reply["ename"] == "UsageError", result.describe()
    evalue = result.reply["evalue"]
    assert expected in evalue
    assert "\n" not in evalue.strip()
    # Short: at most a few lines, none of them in nbworker's code.
    shown = [strip_ansi(line) for line in result.reply.get("traceback", [])]
    for message in result.of_type("error"):
        shown += [strip_ansi(line) for line in message.content["traceback"]]
    shown += result.stderr.splitlines()
    assert not any("nbworker/" in line for line in shown), shown
    assert len("\n".join(shown).strip().splitlines()) <= 3, shown
    assert not result.records()


# --------------------------------------------------------------------------- 7. papermill

HANDLER_CELL = """\
%%handler
def handler(job):
    x = job["input"]["x"]
    if not isinstance(x, int):
        raise ValueError(f"bad input: {x!r}")
    return {"double": 2 * x}"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_papermill_run_records_completed_and_failed_runs(tmp_path: Path) -> None:
    source, output = tmp_path / "worker.ipynb", tmp_path / "worker.out.ipynb"
    write_notebook(
        source,
        [
            "%load_ext nbworker",
            HANDLER_CELL,
            '%rp_test {"input": {"x": 21}}',
            '%rp_test {"input": {"x": "oops"}}',  # fails on purpose
            '%%handler chunks --aggregate\ndef chunks(job):\n    yield "a"\n    yield "b"',
            '%rp_test chunks {"input": {}}',
            'print("reached the end")',
        ],
    )
    papermill.execute_notebook(
        str(source), str(output), kernel_name="python3", progress_bar=False, cwd=str(tmp_path)
    )

    notebook = nbformat.read(str(output), as_version=4)
    records = notebook_records(notebook)
    assert [(index, record["status"]) for index, record in records] == [
        (2, "COMPLETED"),
        (3, "FAILED"),
        (5, "COMPLETED"),
    ]
    assert records[0][1]["output"] == {"double": 42}
    info = error_json(records[1][1])
    assert info["error_type"] == "<class 'ValueError'>"
    assert info["error_message"] == "bad input: 'oops'"
    # The streamed run's display was updated in place: the saved output is the result.
    assert records[2][1]["stream"] == ["a", "b"]
    assert records[2][1]["output"] == ["a", "b"]
    assert len(notebook.cells[5].outputs) == 1
    last = notebook.cells[6].outputs
    assert [o.get("text") for o in last] == ["reached the end\n"]
    assert not any(o["output_type"] == "error" for cell in notebook.cells for o in cell.outputs)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_papermill_fails_when_a_handler_cell_raises(tmp_path: Path) -> None:
    source, output = tmp_path / "broken.ipynb", tmp_path / "broken.out.ipynb"
    write_notebook(
        source,
        [
            "%load_ext nbworker",
            '%%handler\nraise ValueError("cannot load the model")\ndef handler(job):\n    return 1',
            '%rp_test {"input": {}}',
        ],
    )
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        papermill.execute_notebook(
            str(source), str(output), kernel_name="python3", progress_bar=False, cwd=str(tmp_path)
        )
    assert caught.value.ename == "ValueError"
    assert "cannot load the model" in caught.value.evalue
    assert caught.value.cell_index == 1
    notebook = nbformat.read(str(output), as_version=4)
    assert not notebook_records(notebook)  # the %rp_test cell did not run


# --------------------------------------------------------------------------- tracebacks


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_tracebacks_name_the_cell_that_defined_the_handler(kernel: Kernel) -> None:
    defined = kernel.ok(
        """
        %%handler failing
        def failing(job):
            raise ValueError("nope")
        """
    )
    cell = defined.reply["execution_count"]
    kernel.ok("pass")  # the %rp_test cell is not the next one
    run = kernel.ok('%rp_test failing {"input": {}}')
    assert run.record()["status"] == "FAILED"
    problems = []
    view = run.of_type("display_data")[0].content["data"]["text/plain"]
    if f"Cell In[{cell}], line 3, in failing" not in view:
        problems.append(f"run view, handler defined in In[{cell}]:\n{view}")

    broken = kernel.execute('%%handler\nraise ValueError("cell body fails")\ndef handler(job): 1')
    assert broken.reply["ename"] == "ValueError"
    shown = strip_ansi("\n".join(broken.reply["traceback"]))
    if f"Cell In[{broken.reply['execution_count']}], line 2" not in shown:
        problems.append(f"cell error in In[{broken.reply['execution_count']}]:\n{shown}")
    assert not problems, "\n\n".join(problems)


# --------------------------------------------------------------------------- big outputs


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_big_output_is_recorded_exactly_and_shown_cut_in_a_kernel(kernel: Kernel) -> None:
    """Past kernel.SHARED_OVER characters, the kernel's message carries the output's JSON
    as the runner encoded it: the record a front end gets is exact, the views bounded, and
    the display hook is gone afterwards."""
    kernel.ok(
        """
        %%handler big_output
        VECTOR = [i / 7 for i in range(60_000)]

        def big_output(job):
            return {"vec": VECTOR, "n": len(VECTOR)}
        """
    )
    tested = kernel.ok('%rp_test big_output {"input": {}}')
    record = tested.record()
    assert record["status"] == "COMPLETED"
    assert record["output"] == {"vec": [i / 7 for i in range(60_000)], "n": 60_000}
    (shown,) = [m for m in tested.of_type("display_data") if RECORD in m.content["data"]]
    assert len(shown.content["data"]["text/plain"]) < 6_000
    assert "… (cut at 4,000 characters of " in shown.content["data"]["text/plain"]
    assert kernel.evaluate("len(get_ipython().display_pub._hooks)") == "0"
