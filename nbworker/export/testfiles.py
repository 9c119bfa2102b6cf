"""The tests an exported worker ships with: its recorded cases and the pytest files replaying them.

Every `%rp_test` run of the exported handler that COMPLETED or FAILED is a test case: a job
and what the notebook's run gave. The exported worker gets them as `tests/cases.json`, plus
`tests/test_handler.py`, which replays each job against `handler.py` under the real RunPod
SDK (`--test_input`, or the SDK's local API server for streaming handlers), and
`tests/test_notebook.py`, which re-runs the notebook copy with papermill and checks that
its runs still give the same. The generated files are plain pytest and never import
nbworker (except test_notebook.py, which needs it to run the notebook and skips without it).

Everything here is pure text generation: same input, byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbworker import __version__, compare

__all__ = [
    "CASES_FORMAT",
    "DEFAULT_CUDA_VERSIONS",
    "DEFAULT_GPU_TYPE",
    "cases_json",
    "hub_tests",
    "select_cases",
    "test_files",
    "test_input",
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


def test_input(cases: Sequence[Mapping[str, Any]]) -> str:
    """The text of `test_input.json`: the job `python handler.py` runs when given none.

    It is the first COMPLETED case's job (the first case's if none completed): RunPod's
    local test exits 1 on a failed job, so a passing job makes the better default.
    """
    if not cases:
        raise ValueError("no test case: record a run of the handler with %rp_test first")
    chosen = next((case for case in cases if case["status"] == "COMPLETED"), cases[0])
    return _json_text(dict(chosen["job"]), sort_keys=True)


test_input.__test__ = False  # type: ignore[attr-defined]  # not a test, when imported in one


def hub_tests(
    cases: Sequence[Mapping[str, Any]],
    *,
    timeout_ms: int = 60000,
    gpu_type_id: str = DEFAULT_GPU_TYPE,
    gpu_count: int = 1,
    cuda_versions: Sequence[str] = DEFAULT_CUDA_VERSIONS,
) -> str:
    """The text of `.runpod/tests.json`, the tests RunPod's Hub runs on a release.

    One test per COMPLETED case whose input is an object (the Hub sends jobs through the
    API, which refuses any other input); its `input` is the job's `input`. The list may
    be empty: the caller decides whether to publish without Hub tests.
    """
    if timeout_ms <= 0:
        raise ValueError(f"timeout_ms must be positive, not {timeout_ms}")
    tests = [
        {"name": case["name"], "input": case["job"]["input"], "timeout": timeout_ms}
        for case in cases
        if case["status"] == "COMPLETED" and isinstance(case["job"].get("input"), dict)
    ]
    config = {
        "gpuTypeId": gpu_type_id,
        "gpuCount": gpu_count,
        "allowedCudaVersions": list(cuda_versions),
    }
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


def test_files(
    *, cases: Sequence[Mapping[str, Any]], handler: str, streaming: bool, notebook_name: str
) -> dict[str, str]:
    """The worker's `tests/` folder: relative path -> text.

    `cases` come from `select_cases`; `notebook_name` is the file name of the notebook
    copy in `tests/` (the caller writes the copy).
    """
    if not handler.isidentifier():
        raise ValueError(f"handler must be a Python name, not {handler!r}")
    if "/" in notebook_name or "\\" in notebook_name or not notebook_name.endswith(".ipynb"):
        raise ValueError(f"notebook_name must be a file name ending in .ipynb: {notebook_name!r}")
    names = [case["name"] for case in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique: {names}")
    runner = _STREAM_TESTS if streaming else _CLI_TESTS
    handler_tests = (
        (_STREAM_DOC if streaming else _CLI_DOC).replace("{handler}", handler)
        + _IMPORTS.replace("{compare}", _STREAM_COMPARE if streaming else _CLI_COMPARE)
        + _SETTINGS
        + (_PARSE_STREAM_LOG if streaming else _PARSE_TEST_INPUT)
        + _LOCAL_API
        + runner
    )
    notebook_tests = _NOTEBOOK_DOC.replace("{handler}", handler) + _NOTEBOOK_HEAD
    return {
        "tests/cases.json": cases_json(
            cases, handler=handler, streaming=streaming, notebook_name=notebook_name
        ),
        # how a result is compared with the record, for both test files: nbworker's own
        # compare module, which `nbworker test` uses in the notebook too
        "tests/compare.py": Path(compare.__file__).read_text(encoding="utf-8"),
        "tests/test_handler.py": handler_tests,
        "tests/test_notebook.py": notebook_tests + _NOTEBOOK_TESTS,
        "tests/requirements.txt": _REQUIREMENTS.replace("{version}", __version__),
    }


test_files.__test__ = False  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------
# The generated files, in pieces. Placeholders are replaced with str.replace, not format():
# the code is full of braces.

_CLI_DOC = '''\
"""Replay the notebook's recorded runs against handler.py, under the real RunPod SDK.

Each case in tests/cases.json is a job run in the notebook (`%rp_test`) with what it gave,
for the handler `{handler}`.
Here each job runs as RunPod's own local test runs it, `python handler.py --test_input JOB`
in the worker folder, and must give the same: COMPLETED with the same output (floats within
WORKER_TEST_REL_TOL, default 1e-6), or FAILED with the same error (for an exception: the
same type and message). The SDK's logger cuts messages over 4096 characters, so a result
too long for its log line is fetched from the SDK's local API server instead.

Run from the worker folder: `python -m pytest tests`. WORKER_TEST_TIMEOUT (seconds, default
600) bounds each job, the worker's start (model loading) included.
"""

'''

_STREAM_DOC = '''\
"""Replay the notebook's recorded runs against handler.py, under the real RunPod SDK.

Each case in tests/cases.json is a job run in the notebook (`%rp_test`) with what it gave.
The handler `{handler}` is a generator, which `python handler.py --test_input` does not
iterate, so the jobs go to the SDK's local API server (`python handler.py --rp_serve_api`,
started once for this module on a free port of 127.0.0.1): its `/runsync` answers the list
of all chunks, which must be the recorded stream (floats within WORKER_TEST_REL_TOL,
default 1e-6). A FAILED case is checked as far as the local server can show it.

Run from the worker folder: `python -m pytest tests`. WORKER_TEST_TIMEOUT (seconds, default
600) bounds each job, and the server's start (model loading) too.
"""

'''

_CLI_COMPARE = "assert_same, case_id, check_error, exception_fields, ignored, plain, short"
_STREAM_COMPARE = "assert_same, case_id, ignored, plain, recorded_part, short, streamed_exception"

_IMPORTS = """from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from compare import {compare}

"""

_SETTINGS = """TESTS = Path(__file__).resolve().parent
WORKER = TESTS.parent  # handler.py's folder: the worker runs there, as in its container
CASES = json.loads((TESTS / "cases.json").read_text(encoding="utf-8"))["cases"]
TIMEOUT = float(os.environ.get("WORKER_TEST_TIMEOUT", "600"))
# Set on a deployed worker only: they would switch the SDK to another mode or log format.
DEPLOYED_ONLY = (
    "RUNPOD_ENDPOINT_ID",
    "RUNPOD_REALTIME_PORT",
    "RUNPOD_WEBHOOK_GET_JOB",
    "RUNPOD_WEBHOOK_PING",
)


def worker_env(log_level: str) -> dict[str, str]:
    \"\"\"This environment, as on a development machine, with the SDK's log level set.\"\"\"
    env = {key: value for key, value in os.environ.items() if key not in DEPLOYED_ONLY}
    env.update(RUNPOD_LOG_LEVEL=log_level, PYTHONIOENCODING="utf-8")
    return env


def tail(text: str, lines: int = 40) -> str:
    return "\\n".join(text.splitlines()[-lines:])

"""


_PYTHON_VALUE = '''
class _Floats(ast.NodeTransformer):
    """`nan` and `inf` as repr() prints floats, for literal_eval."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("nan", "inf"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


# A log line that another thread (the SDK's progress sender) wrote into the end of this one.
GLUED = re.compile(r"(?:TRACE|DEBUG|INFO|WARN|ERROR|TIP)\\s*\\| ")


def python_value(text: str) -> Any:
    """A value the SDK logged with repr(): a Python literal (NaN and infinities included).
    A log line glued onto its end by another thread is cut off."""
    cuts = [len(text)] + [found.start() for found in GLUED.finditer(text)]
    problem: Exception | None = None
    for cut in cuts:
        try:
            tree = _Floats().visit(ast.parse(text[:cut].strip(), mode="eval"))
            return ast.literal_eval(tree)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as err:
            problem = problem or err
    pytest.fail(f"the SDK logged a value that is not a Python literal ({problem}): {short(text)}")

'''

_TRUNCATED = """
TRUNCATED = re.compile(r"\\n\\.\\.\\.TRUNCATED \\d+ CHARACTERS\\.\\.\\.\\n")  # the SDK logger's cut
"""

_PARSE_TEST_INPUT = (
    _PYTHON_VALUE
    + _TRUNCATED
    + '''ARG_LIMIT = 100_000  # longer jobs do not fit on a command line


def run_test_input(job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`python handler.py --test_input JOB` in the worker folder."""
    try:
        return subprocess.run(
            [sys.executable, "handler.py", "--test_input", json.dumps(job)],
            cwd=WORKER,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=TIMEOUT,
            env=worker_env("INFO"),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"handler.py did not finish the job in {TIMEOUT:g} s (WORKER_TEST_TIMEOUT)")


def logged(stdout: str, marker: str) -> str | None:
    """What the SDK's last log line starting with `marker` says, to the end of the output."""
    index = stdout.rfind(marker)
    if index < 0:
        return None
    text = stdout[index + len(marker) :]
    return text[:-1] if text.endswith("\\n") else text

'''
)

_PARSE_STREAM_LOG = (
    _PYTHON_VALUE
    + _TRUNCATED
    + '''CHUNK_LINE = re.compile(  # a chunk, as the server logs it at DEBUG
    r"^DEBUG\\s*\\| \\S+ \\| (?:Async )?Generator output: (.*)$", re.MULTILINE
)


SDK_LINE = re.compile(r"^(?:TRACE|DEBUG|INFO|WARN|ERROR|TIP)\\s*\\| .*$", re.MULTILINE)


def sdk_lines(log: str) -> str:
    """The SDK's own log lines (not uvicorn's tracebacks), the last 40."""
    return tail("\\n".join(SDK_LINE.findall(log)))


def logged_chunks(log: str) -> list[Any] | int:
    """The chunks the server logged (at DEBUG) for one job; their count alone when a line
    is not a Python literal or was cut by the logger."""
    lines = CHUNK_LINE.findall(log)
    chunks = []
    for line in lines:
        try:
            tree = _Floats().visit(ast.parse(line, mode="eval"))
            chunks.append(plain(ast.literal_eval(tree)))
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            return len(lines)
    return chunks

'''
)

_LOCAL_API = '''
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalAPI:
    """`python handler.py --rp_serve_api`: the SDK's local API server on 127.0.0.1, started
    on first use (again if it died), logging to a file, stopped by its PID."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy between the tests and 127.0.0.1
        # A fresh connection per request. After answering HTTP 500 for a handler that
        # raised, the server closes the connection, so a kept-alive one could be reset
        # under the next case's request. Retrying that would be wrong: a POST /runsync
        # whose connection broke may have run its job, and a job must not run twice.
        self.http.headers["Connection"] = "close"
        self.failure: str | None = None

    def log(self, start: int = 0) -> str:
        with self.log_path.open("rb") as file:
            file.seek(start)
            return file.read().decode("utf-8", "replace")

    def start(self) -> None:
        for _attempt in range(3):  # another program may take the free port first
            port = free_port()
            start = self.log_path.stat().st_size if self.log_path.exists() else 0
            command = ["handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1"]
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, *command, "--rp_api_port", str(port)],
                    cwd=WORKER,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=worker_env("DEBUG"),  # the chunks are logged at DEBUG
                )
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    self.http.get(f"{self.url}/openapi.json", timeout=5)
                    return
                except (requests.ConnectionError, requests.Timeout):
                    time.sleep(0.1)
            if self.process.poll() is None:
                self.stop()
                self.failure = f"the local API server did not answer in {TIMEOUT:g} s"
                break
            if "address already in use" not in self.log(start).lower():
                self.failure = f"the local API server exited with code {self.process.returncode}"
                break
        self.failure = self.failure or "the local API server found no free port"
        pytest.fail(f"{self.failure}:\\n{tail(self.log())}")

    def runsync(self, job: dict[str, Any]) -> tuple[requests.Response, str]:
        """POST the job's input to /runsync: the answer, and what the server logged meanwhile."""
        if self.failure is not None:
            pytest.fail(self.failure)
        if self.process is None or self.process.poll() is not None:
            self.start()
        start = self.log_path.stat().st_size
        body = {"input": job["input"]}
        response = self.http.post(f"{self.url}/runsync", json=body, timeout=TIMEOUT)
        return response, self.log(start)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPI]:
    server = LocalAPI(tmp_path_factory.mktemp("api") / "server.log")
    yield server
    server.stop()


def skip_unless_servable(case: dict[str, Any]) -> None:
    """Skip a job the local API server cannot run as it was recorded."""
    others = sorted(key for key in case["job"] if key != "input")
    if others:
        pytest.skip(f"the local API server passes the handler the input only, not {others}")
    if not isinstance(case["job"]["input"], dict):
        pytest.skip("the local API server takes only an object as input (HTTP 422 otherwise)")

'''

_CLI_TESTS = '''
def check_via_api(case: dict[str, Any], api: LocalAPI, why: str) -> None:
    """Replay the case through the local API server's /runsync instead (`why`)."""
    skip_unless_servable(case)
    response, log = api.runsync(case["job"])
    if response.status_code == 500 and case["status"] == "FAILED":
        pytest.skip(f"{why}, and the local API server answers HTTP 500 for a non-string error")
    assert response.status_code == 200, (
        f"{why}; /runsync: HTTP {response.status_code}: {response.text[:500]}\\n{tail(log)}"
    )
    body = response.json()
    assert body.get("status") == case["status"], f"{why}; /runsync: {short(body)}"
    if case["status"] == "COMPLETED":
        output = plain(body.get("output"))
        assert_same(output, case["output"], "output (from /runsync)", ignored(case))
    else:
        check_error(body.get("error"), case["error"])


# BaseExceptions a handler may raise: deployed, each ends the worker process.
PROCESS_ENDERS = {
    f"<class '{name}'>"
    for name in (
        "SystemExit",
        "GeneratorExit",
        "KeyboardInterrupt",
        "asyncio.exceptions.CancelledError",
    )
}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case(case: dict[str, Any], api: LocalAPI) -> None:
    if not case.get("compare", True):
        pytest.skip("the notebook runs this case with %rp_test --no-compare")
    job = case["job"]
    if len(json.dumps(job)) > ARG_LIMIT:
        check_via_api(case, api, why=f"the job is too long for --test_input (> {ARG_LIMIT})")
        return
    done = run_test_input(job)
    output = tail(done.stdout + done.stderr)
    where = f"python handler.py --test_input exited with code {done.returncode}:\\n{output}"
    if case["status"] == "COMPLETED":
        assert done.returncode == 0, where
        result = logged(done.stdout, "| Job result: ")
        assert result is not None, f"no 'Job result:' line; {where}"
        if TRUNCATED.search(result):
            check_via_api(case, api, why="the SDK's logger cut the Job result line")
            return
        result = python_value(result.split("\\n", 1)[0])
        assert isinstance(result, dict), f"Job result is not a dict: {short(result)}"
        assert_same(plain(result.get("output")), case["output"], "output", ignored(case))
        assert bool(result.get("stopPod")) == case["refresh_worker"], (
            f"refresh_worker: got {bool(result.get('stopPod'))}, recorded {case['refresh_worker']}"
        )
        return
    fields = exception_fields(case["error"])
    if fields is not None and fields["error_type"] in PROCESS_ENDERS:
        # The job loop catches only Exception: the worker process ends, no result is sent.
        assert "| Job result: " not in done.stdout, where
        assert "| Job local_test failed with error: " not in done.stdout, where
        return
    assert done.returncode == 1, where
    if job.get("input") is None:  # the SDK refuses the job before the handler runs
        said = [line.rpartition("| ")[2].strip() for line in done.stdout.splitlines()]
        assert case["error"] in said, f"no line saying {case['error']!r}; {where}"
        return
    error = logged(done.stdout, "| Job local_test failed with error: ")
    assert error is not None, f"no 'Job ... failed with error:' line; {where}"
    recorded = case["error"]
    if exception_fields(recorded) is not None:
        check_error(error.split("\\n", 1)[0], recorded)  # its start, even if the log cut it
    elif TRUNCATED.search(error):
        check_via_api(case, api, why="the SDK's logger cut the error line")
    elif isinstance(recorded, str):
        glued = error.startswith(recorded) and GLUED.match(error[len(recorded) :])
        assert error == recorded or glued, f"error: got {short(error)}, recorded {short(recorded)}"
    else:  # an error that is not a string is logged with repr()
        check_error(python_value(error), recorded)
'''

_STREAM_TESTS = """
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case(case: dict[str, Any], api: LocalAPI) -> None:
    if not case.get("compare", True):
        pytest.skip("the notebook runs this case with %rp_test --no-compare")
    skip_unless_servable(case)
    response, log = api.runsync(case["job"])
    recorded = case["stream"]
    raised = streamed_exception(case["error"]) if case["status"] == "FAILED" else None
    if raised is not None:
        # The server answers a generator that raised with HTTP 500 and no detail; what it
        # streamed and the error are in its log.
        assert response.status_code == 500, (
            f"expected HTTP 500 for a raise of {raised!r}, got {response.status_code}: "
            f"{response.text[:500]}"
        )
        error_line = re.compile(r"^ERROR\\s*\\| \\S+ \\| " + re.escape(raised) + "$", re.MULTILINE)
        assert error_line.search(log), (
            f"the server did not log the error {raised!r}:\\n{sdk_lines(log)}"
        )
        chunks = logged_chunks(log)
        if isinstance(chunks, int):
            assert chunks == len(recorded), (
                f"stream: {chunks} chunks before the raise, recorded {len(recorded)}"
            )
        else:
            assert_same(chunks, recorded, "stream", ignored(case))
        return
    assert response.status_code == 200, (
        f"/runsync: HTTP {response.status_code}: {response.text[:500]}\\n{tail(log)}"
    )
    body = response.json()
    assert body.get("status") == "COMPLETED", f"/runsync: {short(body)}"
    chunks = plain(body.get("output", []))
    if case["status"] == "COMPLETED":
        assert_same(recorded_part(chunks, case), recorded, "stream", ignored(case))
        return
    # A yielded {"error": ...} ends the stream of a deployed worker and fails its job; the
    # local server passes it on as a chunk and goes on. Compare up to it, and it.
    assert_same(chunks[: len(recorded)], recorded, "stream", ignored(case))
    stopper = chunks[len(recorded)] if len(chunks) > len(recorded) else None
    assert isinstance(stopper, dict) and stopper.get("error"), (
        f"expected chunk {len(recorded)} to be an error, {case['error']!r}; got {short(stopper)}"
    )
    assert str(stopper["error"]) == case["error"], (
        f"error: got {short(stopper['error'])}, recorded {short(case['error'])}"
    )
"""

_NOTEBOOK_DOC = '''\
"""Run the notebook copy in a fresh kernel: its runs must still give what tests/cases.json says.

The notebook in tests/ is where the handler was written and tested. Running it again, top to
bottom with papermill, checks that the `%rp_test` runs of `{handler}` it records still give
what cases.json says: the same status, output, stream and error, in the same order. It needs
papermill, nbformat and nbworker (tests/requirements.txt) and is skipped without them.
WORKER_TEST_TIMEOUT (seconds, default 600) bounds each cell.
"""

'''

_NOTEBOOK_HEAD = """from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from compare import assert_same, case_id, check_error, ignored, short

TESTS = Path(__file__).resolve().parent
SPEC = json.loads((TESTS / "cases.json").read_text(encoding="utf-8"))
CASES = SPEC["cases"]
NOTEBOOK = TESTS / SPEC["notebook"]
RECORD = "application/vnd.nbworker.run+json"  # where nbworker records each %rp_test run
TIMEOUT = float(os.environ.get("WORKER_TEST_TIMEOUT", "600"))

"""

_NOTEBOOK_TESTS = '''
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The COMPLETED and FAILED runs of the handler recorded by a fresh run of the notebook."""
    papermill = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbworker")  # the notebook's kernel runs this interpreter
    if not NOTEBOOK.is_file():
        pytest.skip(f"the notebook copy tests/{NOTEBOOK.name} is missing")
    executed = tmp_path_factory.mktemp("notebook") / NOTEBOOK.name
    kernels = Path(sys.prefix, "share", "jupyter")
    with pytest.MonkeyPatch.context() as patch:
        if kernels.is_dir():  # the python3 kernel of this environment, which has nbworker
            paths = [str(kernels), *filter(None, [os.environ.get("JUPYTER_PATH")])]
            patch.setenv("JUPYTER_PATH", os.pathsep.join(paths))
        papermill.execute_notebook(
            str(NOTEBOOK),
            str(executed),
            kernel_name="python3",
            cwd=str(TESTS),
            progress_bar=False,
            execution_timeout=TIMEOUT,
        )
    notebook = nbformat.read(str(executed), as_version=4)
    return [
        record
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if (record := output.get("data", {}).get(RECORD))
        and record.get("handler") == SPEC["handler"]
        and record.get("status") in ("COMPLETED", "FAILED")
    ]


def test_the_notebook_records_a_run_per_case(runs: list[dict[str, Any]]) -> None:
    got = [run["status"] for run in runs]
    assert got == [case["status"] for case in CASES], f"runs of {SPEC['handler']}: {got}"


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[case_id(c) for c in CASES])
def test_case_still_holds(runs: list[dict[str, Any]], index: int, case: dict[str, Any]) -> None:
    if not case.get("compare", True):
        pytest.skip("the notebook runs this case with %rp_test --no-compare")
    assert index < len(runs), f"the notebook recorded {len(runs)} runs of {SPEC['handler']}"
    run = runs[index]
    assert run["status"] == case["status"], (
        f"status: got {run['status']}, error {short(run['error'])}"
    )
    assert_same(run["output"], case["output"], "output", ignored(case))
    assert_same(run["stream"], case["stream"], "stream", ignored(case))
    assert run.get("stream_total") == case.get("stream_total"), "stream: chunk count"
    if case["status"] == "FAILED":
        check_error(run["error"], case["error"])
    assert run["refresh_worker"] == case["refresh_worker"], "refresh_worker"
'''

_REQUIREMENTS = """\
# What tests/ needs beyond the worker's requirements.txt; the worker itself does not need these.
pytest>=8
requests>=2.31
# tests/test_notebook.py only (it is skipped without them):
papermill>=2.5
nbformat>=5.9
nbworker>={version}
"""
