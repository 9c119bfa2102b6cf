"""The corpus workers under the real runpod SDK, and reading what the SDK said.

As a library (tests/test_corpus.py): a worker file's declared constants (`CASES`, `ENV`,
`FILES`, `NEEDS`, read without running it), its start config (the file run as `__main__`
with `runpod.serverless.start` captured), and the outcome of a `--test_input` run read from
the SDK's log lines.

As a script, `python harness.py OUT.json [--env JSON] WORKER.py ...` imports runpod once,
then, in forked children so that each starts from that import (1.5 s under runpod 1.12)
instead of paying it again:

- `test_input`: each case run as `python WORKER.py --test_input JOB` runs it: the worker
  file as `__main__`, that argv, the SDK's own `start()`; its output and exit code kept.
- `job_loop`: all of a worker's cases, one after the other in one child (a deployed worker
  serves many jobs in one process), through the deployed job loop's `rp_job.handle_job`,
  posting to a stand-in platform on 127.0.0.1 (tests/sdk_job_loop.py's `Platform`).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import copy
import itertools
import json
import os
import re
import runpy
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONSTANTS = ("CASES", "ENV", "FILES", "NEEDS")
WORKERS = sorted(HERE.glob("*_worker.py"))


# ----------------------------------------------------------------- reading a worker


def constants(path: Path) -> dict[str, Any]:
    """The worker's data constants, read from its source: CASES (job dicts), ENV (the
    environment its cases assume), FILES (what its download server serves), NEEDS (names
    `runpod.serverless` must have)."""
    found: dict[str, Any] = {"CASES": [], "ENV": {}, "FILES": {}, "NEEDS": []}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in CONSTANTS:
                found[target.id] = ast.literal_eval(node.value)
    return found


def missing_needs(path: Path) -> list[str]:
    """What the worker needs from `runpod.serverless` that the installed SDK lacks."""
    import runpod.serverless

    return [name for name in constants(path)["NEEDS"] if not hasattr(runpod.serverless, name)]


def without_main(source: str) -> str:
    """The worker's source without its `if __name__ == "__main__":` block: what a user
    pastes into a `%%handler` cell (in a kernel `__name__` is `"__main__"` too)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for node in reversed(tree.body):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
        ):
            del lines[node.lineno - 1 : node.end_lineno]
    return "".join(lines).rstrip() + "\n"


def run_worker(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the worker file as `__main__` with `runpod.serverless.start` captured: its
    namespace and the config it starts with. The caller sets the worker's ENV first."""
    import runpod.serverless

    captured: dict[str, Any] = {}
    real_start = runpod.serverless.start
    runpod.serverless.start = captured.update
    try:
        namespace = runpy.run_path(str(path), run_name="__main__")
    finally:
        runpod.serverless.start = real_start
    assert "handler" in captured, f"{path.name} never called runpod.serverless.start"
    return namespace, captured


# ------------------------------------------------------------- what --test_input said

_LOG_LINE = re.compile(r"(DEBUG|INFO|WARN|WARNING|ERROR) +\| ")
RESULT_PREFIX = "INFO   | Job result: "
FAILED_PREFIX = "ERROR  | Job local_test failed with error: "
NO_INPUT_LINE = "ERROR  | Job has no input parameter. Unable to run."
PRESTART_PREFIX = "ERROR  | prestart_failed | "


def read_test_input(output: str, returncode: int) -> dict[str, Any]:
    """The outcome of one `--test_input` run from its log lines and exit code:
    COMPLETED with the result (its Python repr read back), FAILED with the error as the
    SDK logged it (text: `str(error)`), or EXITED (no result at all).

    A log line of another thread (progress_update's) may follow on the same line: each
    `print` writes its text, then its newline."""
    lines = [piece for line in output.splitlines() for piece in _split_log_lines(line)]
    for number, line in enumerate(lines):
        if line.startswith(RESULT_PREFIX) and returncode == 0:
            text = line[len(RESULT_PREFIX) :]
            try:
                return {"status": "COMPLETED", "result": ast.literal_eval(text)}
            except (ValueError, SyntaxError):  # a repr Python cannot read back (a generator)
                return {"status": "COMPLETED", "result_repr": text}
        if line == NO_INPUT_LINE:
            return {"status": "FAILED", "error": "Job has no input parameter. Unable to run."}
        for prefix in (FAILED_PREFIX, PRESTART_PREFIX):
            if line.startswith(prefix):
                # an error text may span lines: up to the next log line
                rest = [line[len(prefix) :]]
                for later in lines[number + 1 :]:
                    if _LOG_LINE.match(later):
                        break
                    rest.append(later)
                return {"status": "FAILED", "error": "\n".join(rest)}
    return {"status": "EXITED", "returncode": returncode}


def _split_log_lines(line: str) -> list[str]:
    """A line cut where another log line starts inside it."""
    starts = [match.start() for match in _LOG_LINE.finditer(line) if match.start() > 0]
    cuts = [0, *starts, len(line)]
    return [line[a:b] for a, b in itertools.pairwise(cuts) if line[a:b]] or [line]


# ------------------------------------------------------------------- the script


def _exit_code(code: object) -> int:
    """What the interpreter exits with for `SystemExit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _in_child(work: Any, out_path: Path, env: dict[str, str]) -> int:
    """Fork; in the child, in a fresh folder beside `out_path`, with `env` added and its
    output going to `out_path`, call `work()` and exit as the interpreter would. The
    child's exit code."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    code = 1
    try:
        os.environ.update(env)
        os.chdir(tempfile.mkdtemp(prefix=f"{out_path.stem}-", dir=out_path.parent))
        with open(out_path, "wb") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
        try:
            work()
            code = 0
        except SystemExit as stop:
            code = _exit_code(stop.code)
        except BaseException:
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _test_input(path: Path, job: dict[str, Any]) -> None:
    sys.argv = [str(path), "--test_input", json.dumps(job), "--rp_log_level", "INFO"]
    runpy.run_path(str(path), run_name="__main__")


def _progress_threads_done(deadline: float) -> None:
    """Wait for the SDK's progress_update threads (`_thread_target`) to have posted."""
    while any("_thread_target" in thread.name for thread in threading.enumerate()):
        if time.monotonic() > deadline:
            raise TimeoutError("progress_update threads still running")
        time.sleep(0.01)


def _job_loop(path: Path, jobs: list[dict[str, Any]], platform: str, record: Path) -> None:
    """All `jobs` through `rp_job.handle_job`, as one deployed worker process runs them."""
    from conformance_cases import comparable
    from runpod.http_client import AsyncClientSession
    from runpod.serverless.modules import rp_http, rp_job

    rp_http.JOB_DONE_URL = f"{platform}/done/$ID?worker=corpus"
    rp_http.JOB_STREAM_URL = f"{platform}/stream/$ID?worker=corpus"
    _, config = run_worker(path)
    sent: list[dict[str, Any]] = []
    send_result = rp_job.send_result

    async def record_send(session, job_data, job, is_stream=False):
        sent.append({"job_id": job["id"], "result": comparable(job_data)})
        await send_result(session, job_data, job, is_stream=is_stream)

    rp_job.send_result = record_send
    outcomes: dict[str, Any] = {}
    modifier = config.get("concurrency_modifier")
    if modifier is not None:
        outcomes["concurrency_modifier(1)"] = modifier(1)

    async def serve() -> None:
        async with AsyncClientSession() as session:
            for number, job in enumerate(jobs):
                outcome: dict[str, Any] = {}
                outcomes[job["id"]] = outcome
                try:
                    await rp_job.handle_job(session, config, copy.deepcopy(job))
                except Exception as err:  # the loop's task would die with it
                    outcome["raised"] = f"{type(err).__name__}: {err}"
                except BaseException as err:  # SystemExit: the worker process ends
                    outcome["ended_process"] = f"{type(err).__name__}: {err}"
                    for later in jobs[number + 1 :]:
                        outcomes[later["id"]] = {"not_run": f"{job['id']} ended the process"}
                    break
                finally:
                    _progress_threads_done(time.monotonic() + 10)

    try:
        asyncio.run(serve())
    finally:
        for item in sent:
            outcomes.setdefault(item["job_id"], {}).setdefault("sent_result", item["result"])
        record.write_text(json.dumps(outcomes))


def main(argv: list[str]) -> None:
    out_path, argv = Path(argv[0]), argv[1:]
    extra_env: dict[str, str] = {}
    if argv[:1] == ["--env"]:
        extra_env, argv = json.loads(argv[1]), argv[2:]
    workers = [Path(arg).resolve() for arg in argv]

    sys.path.insert(0, str(HERE.parent))  # tests/: sdk_job_loop, conformance_cases
    for variable in ("RUNPOD_POD_ID", "RUNPOD_POD_HOSTNAME", "RUNPOD_WEBHOOK_GET_JOB"):
        os.environ.pop(variable, None)
    from http.server import ThreadingHTTPServer

    import runpod.serverless  # once, for every child
    from sdk_job_loop import POSTS, Platform

    server = ThreadingHTTPServer(("127.0.0.1", 0), Platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    platform = f"http://127.0.0.1:{server.server_address[1]}"
    scratch = Path(tempfile.mkdtemp(prefix="harness-", dir=out_path.parent))
    results: dict[str, Any] = {}
    for path in workers:
        found = constants(path)
        env = {**found["ENV"], **extra_env}
        entry: dict[str, Any] = {"test_input": [], "job_loop": {}}
        results[path.stem] = entry
        if any(not hasattr(runpod.serverless, name) for name in found["NEEDS"]):
            entry["skipped"] = f"runpod {runpod.__version__} lacks {found['NEEDS']}"
            continue
        for number, job in enumerate(found["CASES"]):
            log = scratch / f"{path.stem}-{number}.log"
            code = _in_child(lambda path=path, job=job: _test_input(path, job), log, env)
            output = log.read_text(encoding="utf-8", errors="backslashreplace")
            entry["test_input"].append(
                {**read_test_input(output, code), "returncode": code, "log": output[-4000:]}
            )
        if found["NEEDS"]:  # prestart hooks: the job loop is not where they run
            continue
        jobs = [
            {"id": f"{path.stem}-{number}", "input": job["input"]}
            for number, job in enumerate(found["CASES"])
            if job.get("input") is not None  # the platform never sends a null input
        ]
        log, record = scratch / f"{path.stem}-loop.log", scratch / f"{path.stem}-loop.json"
        code = _in_child(lambda p=path, j=jobs, r=record: _job_loop(p, j, platform, r), log, env)
        loop = json.loads(record.read_text()) if record.exists() else {}
        loop["returncode"] = code
        loop["log"] = log.read_text(encoding="utf-8", errors="backslashreplace")[-4000:]
        for job in jobs:
            posts = [post for post in POSTS if post["job_id"] == job["id"]]
            done = [post["body"] for post in posts if post["kind"] == "done"]
            outcome = loop.setdefault(job["id"], {})
            outcome["posted_result"] = [
                body for body in done if body.get("status") != "IN_PROGRESS"
            ]
            outcome["posted_progress"] = [
                b["output"] for b in done if b.get("status") == "IN_PROGRESS"
            ]
            outcome["posted_stream"] = [post["body"] for post in posts if post["kind"] == "stream"]
        entry["job_loop"] = loop
    server.shutdown()
    out_path.write_text(json.dumps(results, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
