"""SDK features real workers use, in a real InteractiveShell with the real runpod SDK:
rp_debugger timers, progress_update, {"input": null}, handlers that exit, lone surrogates,
prestart hooks and log capture (runpod 2). Where the SDK's own local test decides the
outcome (`python handler.py --test_input`), the same handler runs under it too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from importlib import metadata
from pathlib import Path

import pytest
from shell import Shell

from nbworker import display
from nbworker.jobs import NO_INPUT_MESSAGE, JobRunner, build_job
from nbworker.registry import Registry

SDK_MAJOR = int(metadata.version("runpod").split(".", 1)[0])
needs_sdk2 = pytest.mark.skipif(SDK_MAJOR < 2, reason="prestart hooks and log capture are runpod 2")


def record(shell: Shell, cell: str) -> dict:
    result = shell.ok(cell)
    records = shell.records(result)
    assert len(records) == 1, result.captured.stdout + result.captured.stderr
    return records[0]


def under_sdk(tmp_path: Path, source: str, job: object) -> subprocess.CompletedProcess[str]:
    """`python handler.py --test_input JOB` with the real SDK, as a deployed image runs it."""
    (tmp_path / "handler.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps(job)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- rp_debugger

DEBUGGED = """
import runpod
from runpod.serverless.utils import rp_debugger

@rp_debugger.FunctionTimer
def handler(job):
    with rp_debugger.LineTimer("prepare"):
        words = job["input"]["text"].split()
    return {"words": len(words)}
"""


def test_rp_debugger_handler_runs_every_time(shell: Shell) -> None:
    result = shell.ok("%%handler\n" + DEBUGGED)
    assert "registered `handler` (sync)" in result.captured.stdout
    for text in ("a b", "c d e", "f"):
        got = record(shell, f'%rp_test {{"input": {{"text": "{text}"}}}}')
        assert got["status"] == "COMPLETED", got["error"]
        assert got["output"] == {"words": len(text.split())}


def test_a_function_timer_registers_under_the_name_it_wraps() -> None:
    from runpod.serverless.utils import rp_debugger

    def embed(job):
        return job["input"]

    spec = Registry().register(rp_debugger.FunctionTimer(embed))
    assert spec.name == "embed"
    runner = JobRunner()
    try:
        runs = [runner.run(spec, build_job({"input": {"n": n}})) for n in range(3)]
    finally:
        runner.close()
    assert [run.output for run in runs] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_checkpoint_left_outside_a_job_fails_as_deployed_and_says_why(shell: Shell) -> None:
    shell.ok("%%handler\n" + DEBUGGED)
    shell.ok('handler({"input": {"text": "direct call"}})')  # a checkpoint outside any job
    first = record(shell, '%rp_test {"input": {"text": "x"}}')
    assert first["status"] == "FAILED"
    assert "already exists" in json.loads(first["error"])["error_message"]
    assert any("clears rp_debugger after every job" in w for w in first["warnings"])
    second = record(shell, '%rp_test {"input": {"text": "x"}}')  # cleared after the job
    assert second["status"] == "COMPLETED"


@pytest.mark.slow
def test_rp_debugger_handler_under_the_sdk(tmp_path: Path) -> None:
    done = under_sdk(
        tmp_path,
        DEBUGGED + '\nrunpod.serverless.start({"handler": handler})\n',
        {"input": {"text": "a b"}},
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Job result: {'output': {'words': 2}}" in done.stdout


# --------------------------------------------------------------------------- progress

PROGRESS = """
import threading
import runpod
from runpod.serverless import progress_update as early_bound

def handler(job):
    runpod.serverless.progress_update(job, "loading")
    runpod.serverless.progress_update(job, "3/10")
    runpod.serverless.progress_update(job, {"percent": 60, "stage": "denoise"})
    worker = threading.Thread(target=runpod.serverless.progress_update, args=(job, 0.9))
    worker.start()
    worker.join()
    early_bound(job, "100%")
    return {"done": True}
"""


def test_progress_updates_are_recorded_in_order_with_their_times(shell: Shell) -> None:
    shell.ok("%%handler\n" + PROGRESS)
    result = shell.run('%rp_test {"input": {}}')
    got = shell.records(result)[0]
    assert got["status"] == "COMPLETED"
    values = [update["value"] for update in got["progress"]]
    assert values == ["loading", "3/10", {"percent": 60, "stage": "denoise"}, 0.9, "100%"]
    seconds = [update["seconds"] for update in got["progress"]]
    assert seconds == sorted(seconds) and seconds[0] >= 0
    shown = result.captured.stdout + result.captured.stderr
    assert "Failed to return job results" not in shown
    text = [o.data["text/plain"] for o in result.captured.outputs if "text/plain" in o.data]
    assert any("progress (" in t for t in text), text


def test_progress_reaches_the_callback_of_its_run_only() -> None:
    import runpod

    def handler(job):
        for _ in range(5):
            runpod.serverless.progress_update(job, job["input"]["step"])
        return job["input"]["step"]

    spec = Registry().register(handler)
    seen: dict[str, list] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        runner = JobRunner()
        try:
            barrier.wait(timeout=10)
            runner.run(  # the same job id for both, as every %rp_test run has
                spec,
                build_job({"input": {"step": name}}),
                on_progress=lambda value, seconds: seen[name].append(value),
            )
        finally:
            runner.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen == {"a": ["a"] * 5, "b": ["b"] * 5}


def test_a_late_update_from_an_earlier_jobs_thread_is_not_the_next_runs() -> None:
    import runpod

    late, sent = threading.Event(), threading.Event()

    def first(job):
        def later():
            late.wait(10)
            runpod.serverless.progress_update(job, "from the first job")
            sent.set()

        threading.Thread(target=later, daemon=True).start()
        return 1

    def second(job):
        late.set()
        sent.wait(10)
        return 2

    runner = JobRunner()
    try:
        runner.run(Registry().register(first), build_job({"input": {}}))
        run = runner.run(Registry().register(second), build_job({"input": {}}))
    finally:
        runner.close()
    assert sent.is_set()
    assert run.progress == []


def test_a_job_that_is_no_job_fails_progress_update_as_in_the_sdk() -> None:
    import runpod

    def handler(job):
        runpod.serverless.progress_update(None, 5)
        return 1

    run = JobRunner().run(Registry().register(handler), build_job({"input": {}}))
    assert run.status == "FAILED"
    assert "TypeError" in json.loads(run.error)["error_type"]


def test_the_record_keeps_the_last_updates_and_warns_of_what_cannot_be_sent() -> None:
    import numpy
    import runpod

    def handler(job):
        for step in range(1500):
            runpod.serverless.progress_update(job, {"step": step, "total": 1500})
        runpod.serverless.progress_update(job, {"preview": "x" * 50_000})
        runpod.serverless.progress_update(job, numpy.zeros(3))
        return 1

    run = JobRunner().run(Registry().register(handler), build_job({"input": {}}))
    assert run.status == "COMPLETED"
    assert len(run.progress) == 1000
    assert run.progress[0]["value"] == {"step": 502, "total": 1500}
    assert isinstance(run.progress[-2]["value"], str) and len(run.progress[-2]["value"]) < 10_010
    assert any("the record keeps the last 1,000" in w for w in run.warnings)
    assert any("are cut in the record" in w for w in run.warnings)
    assert any("not JSON-serialisable" in w and "not sent" in w for w in run.warnings)
    assert len(json.dumps(run.to_record())) < 2_000_000


@pytest.mark.slow
def test_a_handler_importing_runpod_in_its_body_is_heard_from_its_first_run() -> None:
    script = textwrap.dedent(
        """
        import sys
        from nbworker.session import Session

        def handler(job):
            import runpod
            runpod.serverless.progress_update(job, "1/2")
            return 1

        assert "runpod" not in sys.modules
        session = Session()
        print([session.run_job({"input": {}}, handler).progress[0]["value"] for _ in range(2)])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['1/2', '1/2']"
    assert "Failed to return job results" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("value", "fraction"),
    [
        (0.25, 0.25),
        (40, 0.4),
        ("3/10", 0.3),
        ("step 7 / 14", 0.5),
        ("40%", 0.4),
        ({"progress": 0.5}, 0.5),
        ({"step": 2, "total": 8}, 0.25),
        ("loading weights", None),
        (True, None),
        (float("nan"), None),
        ("1/0", None),
        (250, 1.0),
    ],
)
def test_progress_values_that_say_how_far(value: object, fraction: float | None) -> None:
    assert display.progress_fraction(value) == fraction
    line = display.progress_line(value)
    assert ("%" in line and "[" in line) == (fraction is not None)


def test_progress_is_no_difference_in_a_replay() -> None:
    from nbworker import replay

    recorded = {"handler": "h", "status": "COMPLETED", "output": 1, "error": None}
    got = dict(recorded, progress=[{"value": "1/2", "seconds": 0.1}])
    assert replay.compare_runs(got, recorded) == []
    assert replay.compare_runs(recorded, got) == []


# --------------------------------------------------------------------------- bad jobs

ECHO = """
def handler(job):
    return job["input"]
"""


def test_input_null_is_a_failed_run_and_the_notebook_goes_on(shell: Shell) -> None:
    shell.ok("%%handler\n" + ECHO)
    got = record(shell, '%rp_test {"input": null}')
    assert got["status"] == "FAILED"
    assert got["error"] == NO_INPUT_MESSAGE
    assert record(shell, '%rp_test {"input": {"a": 1}}')["output"] == {"a": 1}
    # a forgotten wrapper keeps its one-line usage error
    assert 'has no "input"' in shell.usage_error('%rp_test {"text": "hi"}')


@pytest.mark.slow
def test_input_null_under_the_sdk(tmp_path: Path) -> None:
    done = under_sdk(
        tmp_path,
        "import runpod\n" + ECHO + '\nrunpod.serverless.start({"handler": handler})\n',
        {"input": None},
    )
    assert done.returncode == 1
    assert NO_INPUT_MESSAGE in done.stdout


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("import sys\n    sys.exit()", "SystemExit"),
        ("raise SystemExit(3)", "SystemExit"),
        ("raise GeneratorExit('closed')", "GeneratorExit"),
        ("raise Stop('mine')", "Stop"),
    ],
)
def test_a_handler_that_exits_is_a_failed_run(shell: Shell, body: str, kind: str) -> None:
    shell.ok("class Stop(BaseException):\n    pass")
    shell.ok(f"%%handler\ndef handler(job):\n    {body}")
    got = record(shell, '%rp_test {"input": {}}')
    assert got["status"] == "FAILED"
    info = json.loads(got["error"])
    assert kind in info["error_type"]
    assert set(info) >= {"error_type", "error_message", "error_traceback", "runpod_version"}
    assert any("ends the worker process" in w for w in got["warnings"])
    assert shell.ok("1 + 1").result == 2  # the shell lives on


def test_a_streaming_handler_that_exits_is_a_failed_run(shell: Shell) -> None:
    shell.ok("%%handler\ndef handler(job):\n    yield 1\n    raise SystemExit(2)")
    got = record(shell, '%rp_test {"input": {}}')
    assert got["status"] == "FAILED"
    assert got["stream"] == [1]
    assert got["error"].startswith("handler: 2 \ntraceback: ")
    assert any("ends the worker process" in w for w in got["warnings"])


def test_lone_surrogates_give_a_result_not_a_traceback(shell: Shell) -> None:
    shell.ok('%%handler\ndef handler(job):\n    return {"echo": job["input"]["t"], "x": "\\udfff"}')
    result = shell.ok('%rp_test {"input": {"t": "a\\ud800b"}}')
    got = shell.records(result)[0]
    assert got["status"] == "COMPLETED"
    assert got["output"] == {"echo": "a\ufffdb", "x": "\ufffd"}
    assert any("lone surrogate" in w for w in got["warnings"])
    for output in result.captured.outputs:  # what Jupyter sends must be UTF-8
        json.dumps(output.data, ensure_ascii=False).encode("utf-8")
    assert "\\ud800" in result.captured.outputs[-1].data["text/plain"]


# --------------------------------------------------------------------------- runpod 2


@needs_sdk2
def test_prestart_hooks_run_once_before_the_first_job(shell: Shell) -> None:
    shell.ok(
        """
        import runpod
        from runpod.serverless.modules import rp_prestart
        rp_prestart.clear_prestart_hooks()
        calls = []

        @runpod.serverless.register_prestart_hook
        def warm():
            calls.append("warm")
        """
    )
    shell.ok("%%handler\ndef handler(job):\n    return len(calls)")
    assert record(shell, '%rp_test {"input": {}}')["output"] == 1
    assert record(shell, '%rp_test {"input": {}}')["output"] == 1
    assert shell.ok("calls").result == ["warm"]
    shell.ok("rp_prestart.clear_prestart_hooks()")


@needs_sdk2
def test_a_failing_prestart_hook_fails_every_job_as_deployed(shell: Shell) -> None:
    shell.ok(
        """
        import runpod
        from runpod.serverless.modules import rp_prestart
        rp_prestart.clear_prestart_hooks()

        def download():
            print("fetching weights")
            raise OSError("disk full")

        runpod.serverless.register_prestart_hook(download)
        """
    )
    shell.ok("%%handler\ndef handler(job):\n    return 'ran'")
    for _ in range(2):
        got = record(shell, '%rp_test {"input": {}}')
        assert got["status"] == "FAILED"
        payload = json.loads(got["error"])
        assert payload["event"] == "prestart_failed"
        assert payload["error_type"] == "OSError"
        assert payload["error_message"] == "disk full"
        assert payload["hook"] == "download"
        assert "fetching weights" in payload.get("logs", "")
        assert any("exits 1" in w for w in got["warnings"])
    shell.ok("rp_prestart.clear_prestart_hooks()")
    assert record(shell, '%rp_test {"input": {}}')["output"] == "ran"


@needs_sdk2
def test_a_hanging_prestart_hook_times_out_naming_it(shell: Shell) -> None:
    shell.ok(
        """
        import threading
        import runpod
        from runpod.serverless.modules import rp_prestart
        rp_prestart.clear_prestart_hooks()
        never = threading.Event()

        def fetch_weights():
            never.wait(30)

        runpod.serverless.register_prestart_hook(fetch_weights)
        """
    )
    shell.ok("%%handler\ndef handler(job):\n    return 'ran'")
    got = record(shell, '%rp_test {"input": {}} --timeout 0.5')
    assert got["status"] == "TIMED_OUT"
    assert "in the prestart hooks (fetch_weights)" in got["error"]
    shell.ok("never.set(); rp_prestart.clear_prestart_hooks()")


@needs_sdk2
def test_log_capture_all_adds_logs_to_the_error(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_LOG_CAPTURE", "all")
    shell.ok('%%handler\ndef handler(job):\n    print("step one")\n    raise ValueError("bad")')
    got = record(shell, '%rp_test {"input": {}}')
    assert "step one" in json.loads(got["error"])["logs"]


# --------------------------------------------------------------------------- the worker


@pytest.mark.slow
def test_the_recorded_runs_hold_in_a_fresh_kernel_and_in_the_exported_worker(
    tmp_path: Path,
) -> None:
    """tests/data/sdk_features.ipynb: an rp_debugger handler reporting progress, and a job
    whose input is null, replayed in a fresh kernel and against its worker under the SDK."""
    notebook = Path(__file__).parent / "data" / "sdk_features.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "test", str(notebook)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 passed, 0 failed, 0 notebook error(s)" in done.stdout


def _notebook_with_failure(error: str):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from nbworker.record import RECORD_MIMETYPE

    record = {
        "handler": "handler",
        "job": {"id": "local_test", "input": {}},
        "status": "FAILED",
        "output": None,
        "error": error,
        "stream": None,
        "refresh_worker": False,
        "duration_ms": 0.1,
        "warnings": [],
    }
    test = new_code_cell('%rp_test {"input": {}}')
    test.outputs = [new_output("display_data", data={RECORD_MIMETYPE: record})]
    cells = [new_code_cell("%%handler\ndef handler(job):\n    raise ValueError('bad')"), test]
    return nbformat.from_dict(new_notebook(cells=cells))


def test_runs_recorded_with_log_capture_export_a_worker_that_captures() -> None:
    from nbworker.export import build_worker

    info = {"error_type": "<class 'ValueError'>", "error_message": "bad", "logs": "step one\n"}
    report = build_worker(_notebook_with_failure(json.dumps(info)), notebook_name="nb.ipynb")
    assert "ENV RUNPOD_LOG_CAPTURE=all\n" in report.files["Dockerfile"]
    assert any("RUNPOD_LOG_CAPTURE=all" in note for note in report.notes)

    del info["logs"]
    report = build_worker(_notebook_with_failure(json.dumps(info)), notebook_name="nb.ipynb")
    assert "RUNPOD_LOG_CAPTURE" not in report.files["Dockerfile"]
