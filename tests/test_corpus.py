"""The corpus: small workers of our own (tests/corpus/*_worker.py), each using SDK features
that public RunPod workers use (tests/corpus/README.md), run under the real runpod SDK and
under nbworker, and compared.

The SDK's side (tests/corpus/harness.py, one subprocess of this interpreter, so a second
venv runs it under another SDK line): every case as `python WORKER.py --test_input JOB`
runs it, and every worker's cases through the deployed job loop (`rp_job.handle_job`)
posting to a stand-in platform; generator workers also behind their own
`python WORKER.py --rp_serve_api` (one server per worker). nbworker's side: each worker
file run as `__main__` with `runpod.serverless.start` captured, its handler registered
with the start config's options on a `Session`, its cases run in order; for some workers
also pasted into a `%%handler` cell of a real InteractiveShell and run with `%rp_test`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from conformance_cases import comparable
from corpus import harness
from helpers import free_port
from shell import Shell

import nbworker
from nbworker import Session
from nbworker.record import Run

WORKERS = {path.stem: path for path in harness.WORKERS}
DECLARED = {name: harness.constants(path) for name, path in WORKERS.items()}
CASES = [(name, number) for name in WORKERS for number in range(len(DECLARED[name]["CASES"]))]
CASE_IDS = [f"{name}-{number}" for name, number in CASES]
# pasted into a %%handler cell and run with %rp_test, as a user would
SHELL_WORKERS = [
    "concurrency_worker",
    "debugger_worker",
    "exit_worker",
    "input_worker",
    "progress_worker",
    "stream_aggregate_worker",
    "validator_worker",
]
EXITS_WORKER = "ends the worker process"  # what nbworker warns of a handler's sys.exit()


# ------------------------------------------------------------------ comparing


def _corpus_frames_only(text: str) -> str:
    """A traceback's text with only the frames of the corpus workers: the SDK's and
    nbworker's own frames (which differ by design) dropped, every other line kept."""
    kept, keep = [], True
    for line in text.splitlines():
        if line.startswith('  File "'):
            keep = Path(line.split('"')[1]).parent == harness.HERE
        elif not line.startswith("    "):
            keep = True
        if keep:
            kept.append(line)
    return "\n".join(kept)


def normalise_error(error: object, *, frames: bool = True) -> object:
    """An error as the SDK logs or posts it, comparable across processes: RunPod's error
    JSON parsed, its traceback reduced to the workers' frames (or dropped, `frames=False`,
    for code run from a cell), a prestart failure's random worker id dropped."""
    if not isinstance(error, str):
        return comparable(error)
    if error.startswith("{") and error.endswith("}"):
        try:
            info = json.loads(error)
        except ValueError:
            return error
        if "error_traceback" in info:
            info["error_traceback"] = (
                _corpus_frames_only(info["error_traceback"]) if frames else None
            )
        if info.get("event") == "prestart_failed":
            info.pop("worker_id", None)
        return info
    if " \ntraceback: " in error:
        message, trace = error.split(" \ntraceback: ", 1)
        return {"message": message, "traceback": _corpus_frames_only(trace) if frames else None}
    return error


def normalise(result: object, *, frames: bool = True) -> object:
    """A result envelope (`{"output", "error", "stopPod"}`) comparable across processes."""
    result = comparable(result)
    if isinstance(result, dict) and "error" in result:
        return {**result, "error": normalise_error(result["error"], frames=frames)}
    return result


def assert_exits_the_process(run: Run) -> None:
    """A handler that ended the SDK's process (sys.exit): in the kernel a FAILED run with
    RunPod's error JSON and a warning that deployed, it ends the worker."""
    assert run.status == "FAILED", run
    assert json.loads(run.error)["error_type"] == "<class 'SystemExit'>", run.error
    assert any(EXITS_WORKER in warning for warning in run.warnings), run.warnings


def assert_same_as_test_input(run: Run, sdk: dict[str, Any], *, frames: bool = True) -> None:
    """`run` gives what `python WORKER.py --test_input JOB` gave."""
    if sdk["status"] == "EXITED":
        assert_exits_the_process(run)
        return
    assert run.status == sdk["status"], (run, sdk["log"])
    if sdk["status"] == "COMPLETED":
        assert normalise(run.result, frames=frames) == normalise(sdk["result"], frames=frames)
    else:  # the SDK logs `str(error)`; the rest of a FAILED result is not shown
        assert normalise_error(str(run.error), frames=frames) == normalise_error(
            sdk["error"], frames=frames
        )


def progress_values(values: list[Any]) -> list[str]:
    """Progress updates in a stable order: the SDK posts each from a thread of its own,
    so they reach the platform in any order."""
    return sorted(json.dumps(value, sort_keys=True) for value in values)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def files_url(tmp_path_factory) -> Iterator[str]:
    """A file server on 127.0.0.1 serving every worker's FILES (download_worker's)."""
    root = tmp_path_factory.mktemp("files")
    for declared in DECLARED.values():
        for name, text in declared["FILES"].items():
            (root / name).write_text(text, encoding="utf-8")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def extra_env(files_url: str) -> dict[str, str]:
    """Environment every run gets, beside the worker's own ENV."""
    return {"FILES_URL": files_url}


@pytest.fixture(scope="module")
def sdk(tmp_path_factory, extra_env: dict[str, str]) -> dict[str, Any]:
    """What the real SDK gave for every case: `test_input` and `job_loop` per worker."""
    out = tmp_path_factory.mktemp("sdk") / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(harness.HERE / "harness.py"),
            str(out),
            "--env",
            json.dumps(extra_env),
            *map(str, WORKERS.values()),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@contextlib.contextmanager
def worker_environment(name: str, extra_env: dict[str, str], folder: Path) -> Iterator[None]:
    """The worker's ENV set, a folder of its own as the working directory, and what the
    SDK's modules keep per process (prestart hooks, the root logger that runpod 1.12's
    rp_upload configures at import) put back afterwards."""
    env = {**DECLARED[name]["ENV"], **extra_env}
    handlers, level = logging.root.handlers[:], logging.root.level
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        folder.mkdir(parents=True, exist_ok=True)
        patch.chdir(folder)
        _clear_prestart_hooks()
        try:
            yield
        finally:
            _clear_prestart_hooks()
            logging.root.handlers[:], logging.root.level = handlers, level


def _clear_prestart_hooks() -> None:
    prestart = sys.modules.get("runpod.serverless.modules.rp_prestart")
    if prestart is not None:
        prestart.clear_prestart_hooks()


def _skip_without_needs(name: str) -> None:
    missing = harness.missing_needs(WORKERS[name])
    if missing:
        import runpod

        pytest.skip(
            f"{name} needs runpod.serverless.{', '.join(missing)} (runpod 2.0); "
            f"this is runpod {runpod.__version__}"
        )


@pytest.fixture(scope="module")
def nbworker_runs(tmp_path_factory, extra_env: dict[str, str]) -> Iterator[Any]:
    """nbworker's runs of each worker's cases, in order, on a Session of the worker's own;
    per worker, the runs, or what failed on the way (raised in that worker's tests)."""
    made: dict[str, Any] = {}
    sessions: list[Session] = []
    root = tmp_path_factory.mktemp("nbworker")

    def runs(name: str) -> dict[str, Any]:
        if name not in made:
            try:
                with worker_environment(name, extra_env, root / name):
                    _, config = harness.run_worker(WORKERS[name])
                    session = Session()
                    sessions.append(session)
                    options = {"aggregate": config.get("return_aggregate_stream", False)}
                    if "concurrency_modifier" in config:
                        options["concurrency_modifier"] = config["concurrency_modifier"]
                    spec = session.register_handler(config["handler"], **options)
                    made[name] = {
                        "spec": spec,
                        "config": config,
                        "runs": [session.run_job(case, spec) for case in DECLARED[name]["CASES"]],
                    }
            except Exception as err:  # shown by each test of this worker
                made[name] = err
        if isinstance(made[name], Exception):
            raise made[name]
        return made[name]

    try:
        yield runs
    finally:
        for session in sessions:
            session.close()


def _is_generator(name: str) -> bool:
    """Whether the worker streams: its source has a `yield` (each worker has one handler)."""
    tree = ast.parse(WORKERS[name].read_text(encoding="utf-8"))
    return any(isinstance(node, (ast.Yield, ast.YieldFrom)) for node in ast.walk(tree))


GENERATOR_WORKERS = [name for name in WORKERS if _is_generator(name)]


@pytest.fixture(scope="module")
def served(tmp_path_factory, extra_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Each generator worker behind its own `python WORKER.py --rp_serve_api` (started
    together), every case sent to `/runsync` and to `/run` then `/stream/{id}`."""
    root = tmp_path_factory.mktemp("served")
    servers: dict[str, tuple[subprocess.Popen, str, Any]] = {}
    try:
        for name in GENERATOR_WORKERS:
            port = free_port()
            folder = root / name
            folder.mkdir()
            log = (folder / "server.log").open("wb")
            args = ["--rp_serve_api", "--rp_api_port", str(port), "--rp_api_host", "127.0.0.1"]
            proc = subprocess.Popen(
                [sys.executable, str(WORKERS[name]), *args, "--rp_log_level", "WARN"],
                cwd=folder,
                env={**os.environ, **DECLARED[name]["ENV"], **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            servers[name] = (proc, f"http://127.0.0.1:{port}", log)
        answers: dict[str, Any] = {}
        for name, (proc, url, _) in servers.items():
            _wait_for_port(proc, url, root / name / "server.log")
            answers[name] = [_ask(url, case) for case in DECLARED[name]["CASES"]]
        yield answers
    finally:
        for proc, _, log in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            log.close()


def _wait_for_port(proc: subprocess.Popen, url: str, log: Path) -> None:
    host, port = url.rsplit("/", 1)[1].split(":")
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not start in 60s: {log.read_text()}"
            time.sleep(0.05)


def _ask(url: str, case: dict[str, Any]) -> dict[str, Any]:
    """A case through /runsync, and through /run then /stream (a fresh connection each:
    the SDK's server resets a kept-alive one after an HTTP 500)."""

    def post(path: str, body: Any = None) -> dict[str, Any]:
        answer = requests.post(f"{url}{path}", json=body, timeout=30)
        if answer.status_code != 200:
            return {"http": answer.status_code}
        return answer.json()

    runsync = post("/runsync", case)
    queued = post("/run", case)
    stream = post(f"/stream/{queued['id']}") if "id" in queued else queued
    return {"runsync": runsync, "stream": stream}


# ------------------------------------------------------------------ the tests


def test_every_worker_declares_cases_and_starts_the_sdk() -> None:
    assert len(WORKERS) >= 12
    for name, declared in DECLARED.items():
        assert declared["CASES"], name
        assert all(set(case) == {"input"} for case in declared["CASES"]), name
        source = WORKERS[name].read_text(encoding="utf-8")
        assert "runpod.serverless.start(" in source, name


@pytest.mark.slow
def test_every_worker_ran_under_the_sdk(sdk: dict[str, Any]) -> None:
    assert sorted(sdk) == sorted(WORKERS)
    for name, entry in sdk.items():
        if "skipped" not in entry:
            assert len(entry["test_input"]) == len(DECLARED[name]["CASES"]), name


@pytest.mark.slow
@pytest.mark.parametrize(("name", "number"), CASES, ids=CASE_IDS)
def test_same_as_test_input(sdk: dict[str, Any], nbworker_runs, name: str, number: int) -> None:
    """What `python WORKER.py --test_input JOB` gives, nbworker gives; except that the SDK
    never iterates a generator (it prints the generator object), which nbworker streams."""
    _skip_without_needs(name)
    expected = sdk[name]["test_input"][number]
    made = nbworker_runs(name)
    run = made["runs"][number]
    if made["spec"].streams:
        assert expected["status"] == "COMPLETED", expected["log"]
        assert "generator object" in expected["result_repr"], expected
        assert isinstance(run.stream, list), run
        return
    assert_same_as_test_input(run, expected)


JOB_LOOP_CASES = [
    (name, number)
    for name, number in CASES
    if DECLARED[name]["CASES"][number]["input"] is not None and not DECLARED[name]["NEEDS"]
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "number"), JOB_LOOP_CASES, ids=[f"{n}-{i}" for n, i in JOB_LOOP_CASES]
)
def test_same_as_the_deployed_job_loop(
    sdk: dict[str, Any], nbworker_runs, name: str, number: int
) -> None:
    """What a deployed worker's job loop sends and posts, nbworker's run holds: the result,
    the stream chunks, the progress updates, and whether the result could be sent at all."""
    loop = sdk[name]["job_loop"]
    outcome = loop[f"{name}-{number}"]
    run = nbworker_runs(name)["runs"][number]
    if "not_run" in outcome:
        pytest.skip(outcome["not_run"])
    if "ended_process" in outcome:
        assert outcome["posted_result"] == [], outcome
        assert_exits_the_process(run)
        return
    assert normalise(run.result) == normalise(outcome["sent_result"]), loop["log"]
    chunks = [] if run.stream is None else [{"output": chunk} for chunk in run.stream]
    assert comparable(chunks) == outcome["posted_stream"]
    assert ([normalise(run.result)] if run.delivered else []) == [
        normalise(posted) for posted in outcome["posted_result"]
    ], outcome.get("raised")
    assert progress_values([p["value"] for p in run.progress]) == progress_values(
        outcome["posted_progress"]
    )
    assert run.refresh_worker == bool((outcome["sent_result"] or {}).get("stopPod"))


STREAM_CASES = [(name, number) for name, number in CASES if name in GENERATOR_WORKERS]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "number"), STREAM_CASES, ids=[f"{n}-{i}" for n, i in STREAM_CASES]
)
def test_streams_as_the_local_api_server(
    served: dict[str, Any], nbworker_runs, name: str, number: int
) -> None:
    """The chunks of the SDK's `--rp_serve_api` (`/stream`, and `/runsync`'s list) are
    nbworker's stream, up to a yielded error. There the local server differs from a
    deployed worker (tests/corpus/yielded_error_worker.py): it lists the error chunk as
    output and goes on, or answers HTTP 500 for a generator that raised, where the job
    loop, and nbworker, end the stream and fail the job."""
    answer = served[name][number]
    made = nbworker_runs(name)
    run = made["runs"][number]
    if answer["runsync"].get("http") == 500:  # a generator that raised
        assert answer["stream"] == {"http": 500}, answer
        assert run.status == "FAILED" and run.error.startswith("handler: "), run
        return
    assert answer["runsync"]["status"] == "COMPLETED", answer
    chunks = answer["runsync"]["output"]
    assert answer["stream"] == {
        "id": answer["stream"]["id"],
        "status": "COMPLETED",
        "stream": [{"output": chunk} for chunk in chunks],
    }
    errors = [i for i, c in enumerate(chunks) if isinstance(c, dict) and c.get("error")]
    before_error = chunks[: errors[0]] if errors else chunks
    assert comparable(run.stream) == before_error
    if errors:
        assert run.status == "FAILED" and run.error == str(chunks[errors[0]]["error"]), run
    else:
        assert run.status == "COMPLETED", run
        assert comparable(run.output) == (
            chunks if made["config"].get("return_aggregate_stream") else []
        )


def paste_and_run(shell: Any, sdk: dict[str, Any], name: str) -> None:
    """The worker file pasted into a `%%handler` cell (its main block left out, the
    handler's name given only when it is not `handler`) and each case run with `%rp_test`,
    as a user would: the SDK's results, recorded in the cell. The caller sets the
    worker's environment."""
    path = WORKERS[name]
    _, config = harness.run_worker(path)  # the start config: handler and options
    handler = config["handler"]
    handler_name = getattr(handler, "__name__", None) or handler.function.__name__
    line = "%%handler" + ("" if handler_name == "handler" else f" {handler_name}")
    line += " --aggregate" if config.get("return_aggregate_stream") else ""
    shell.ok(f"{line}\n" + harness.without_main(path.read_text(encoding="utf-8")))
    spec = shell.session.registry.get(handler_name)
    if "concurrency_modifier" in config:
        assert spec.concurrency_modifier is not None, spec
        assert spec.concurrency_modifier(1) == sdk[name]["job_loop"]["concurrency_modifier(1)"]
    for number, case in enumerate(DECLARED[name]["CASES"]):
        shell.ipython.user_ns["corpus_job"] = case
        # assigned, as a user keeps a run: a bare `%rp_test` line shows the run, returns None
        result = shell.ok(f"corpus_run = %rp_test {handler_name} --var corpus_job")
        run = shell.ipython.user_ns.pop("corpus_run")
        (record,) = shell.records(result)
        assert (record["status"], record["handler"]) == (run.status, handler_name)
        loop = sdk[name]["job_loop"].get(f"{name}-{number}", {})
        if spec.streams:
            assert comparable(run.stream) == [c["output"] for c in loop["posted_stream"]]
            assert normalise(run.result, frames=False) == normalise(
                loop["sent_result"], frames=False
            )
        else:
            assert_same_as_test_input(run, sdk[name]["test_input"][number], frames=False)
        if loop.get("posted_progress"):
            values = [p["value"] for p in record.get("progress", [])]
            assert progress_values(values) == progress_values(loop["posted_progress"])


@pytest.mark.slow
@pytest.mark.parametrize("name", SHELL_WORKERS)
def test_pasted_into_a_handler_cell(
    sdk: dict[str, Any], shell, tmp_path, extra_env: dict[str, str], name: str
) -> None:
    with worker_environment(name, extra_env, tmp_path):
        paste_and_run(shell, sdk, name)


@pytest.mark.slow
def test_pasted_after_load_ext(sdk: dict[str, Any], ipython, tmp_path, extra_env) -> None:
    """The same through `%load_ext nbworker` and its default session: a timed handler's
    every job works (rp_debugger is cleared after each, as deployed)."""

    class LoadedShell(Shell):
        def __init__(self, ipython: Any) -> None:  # the extension's own session
            self.ipython = ipython
            self.session = nbworker.default_session()
            self.ok("%load_ext nbworker")

    shell = LoadedShell(ipython)
    try:
        with worker_environment("debugger_worker", extra_env, tmp_path):
            paste_and_run(shell, sdk, "debugger_worker")
    finally:
        if "handler" in shell.session.registry:
            shell.session.registry.unregister("handler")
        shell.ok("%unload_ext nbworker")


LITERAL_CASES = [("errors_worker", 4), ("exit_worker", 0)]


@pytest.mark.slow
def test_the_harness_runs_test_input_as_a_fresh_process_does(
    sdk: dict[str, Any], tmp_path, extra_env: dict[str, str]
) -> None:
    """The harness forks after importing runpod once; `python WORKER.py --test_input`
    itself, run for a few cases, says the same."""
    procs = []
    for name, number in LITERAL_CASES:
        job = json.dumps(DECLARED[name]["CASES"][number])
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKERS[name]), "--test_input", job, "--rp_log_level", "INFO"],
                cwd=tmp_path,
                env={**os.environ, **DECLARED[name]["ENV"], **extra_env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for (name, number), proc in zip(LITERAL_CASES, procs, strict=True):
        output, _ = proc.communicate(timeout=120)
        literal = harness.read_test_input(output, proc.returncode)
        forked = sdk[name]["test_input"][number]
        assert literal["status"] == forked["status"], output
        assert normalise_error(literal.get("error")) == normalise_error(forked.get("error"))
        assert literal.get("result") == forked.get("result")
        assert proc.returncode == forked["returncode"]
