"""Exported workers that use SDK features beyond the handler, run under the real SDK: the
author's `concurrency_modifier` (carried into `start()` as it is, and called by the SDK's
own job loop) and runpod 2.0's prestart hooks (registered at module level before `start()`).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from urllib.parse import parse_qs

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbworker.export import export_notebook

ROOT = Path(__file__).resolve().parents[1]

MODIFIER_NOTEBOOK = [
    "import os",
    "import asyncio\nimport urllib.request",
    # what the modifier uses is traced like any name: `import os` above goes in
    "def concurrency_modifier(current: int) -> int:\n"
    '    return int(os.environ.get("MAX_CONCURRENCY", 1))',
    "%%handler --concurrency-modifier concurrency_modifier\n"
    "async def handler(job):\n"
    '    gate = os.environ.get("GATE_URL")\n'
    "    if gate:  # returns once as many jobs as the gate waits for are there\n"
    "        await asyncio.to_thread(urllib.request.urlopen, gate, timeout=60)\n"
    '    return {"n": job["input"]["n"]}',
]


def export(tmp_path: Path, sources: list[str]) -> Path:
    notebook = tmp_path / "worker.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), notebook)
    folder = tmp_path / "worker"
    export_notebook(notebook, folder)
    return folder


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.pop("MAX_CONCURRENCY", None)
    return {**env, **extra}


def job_result(stdout: str) -> dict:
    line = [x for x in stdout.splitlines() if "Job result: " in x][-1]
    return ast.literal_eval(line.split("Job result: ", 1)[1])


def test_the_modifier_goes_into_start_unchanged(tmp_path: Path) -> None:
    text = (export(tmp_path, MODIFIER_NOTEBOOK) / "handler.py").read_text()
    assert text.endswith(
        '    runpod.serverless.start({"handler": handler, '
        '"concurrency_modifier": concurrency_modifier})\n'
    )
    assert "# --- cell 0\nimport os\n" in text
    assert 'return int(os.environ.get("MAX_CONCURRENCY", 1))' in text
    compile(text, "handler.py", "exec")


@pytest.mark.slow
def test_the_exported_worker_runs_its_test_input_under_the_sdk(tmp_path: Path) -> None:
    folder = export(tmp_path, MODIFIER_NOTEBOOK)
    done = subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps({"input": {"n": 7}})],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=worker_env(MAX_CONCURRENCY="3"),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert job_result(done.stdout) == {"output": {"n": 7}}


class _Platform(BaseHTTPRequestHandler):
    """A stand-in for RunPod's job API: hands out the jobs in one batch as large as the
    worker asks for, holds later takes open (a long poll), records results, and holds each
    job at /gate until `gate` jobs wait there together."""

    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        if path.startswith("/job-take"):
            batch = int(parse_qs(query).get("batch_size", ["1"])[0])
            with state["lock"]:
                state["takes"].append(batch)
                jobs, state["jobs"] = state["jobs"][:batch], state["jobs"][batch:]
            if not jobs:
                state["finished"].wait(60)  # nothing more: hold the take, as the platform
                return self._answer(204)
            return self._answer(200, jobs if "batch" in path else jobs[0])
        if path == "/gate":
            state["gate"].wait()
            return self._answer(200, {})
        self._answer(204)  # the stop channel: no job to stop

    def do_POST(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        job_id = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        with state["lock"]:
            state["results"][job_id] = body
            if len(state["results"]) == 3:
                state["finished"].set()
        self._answer(200, {})

    def _answer(self, code: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_the_sdk_job_loop_sizes_the_exported_worker_with_the_modifier(tmp_path: Path) -> None:
    """Deployed (the SDK's JobScaler against a stand-in platform), MAX_CONCURRENCY=3: the
    worker takes a batch of three and runs them at once (each waits at the gate for the
    other two; with one at a time the gate would break)."""
    folder = export(tmp_path, MODIFIER_NOTEBOOK)
    platform = ThreadingHTTPServer(("127.0.0.1", 0), _Platform)
    platform.daemon_threads = True
    platform.state = {  # type: ignore[attr-defined]
        "lock": threading.Lock(),
        "jobs": [{"id": f"job-{n}", "input": {"n": n}} for n in range(3)],
        "takes": [],
        "results": {},
        "gate": threading.Barrier(3, timeout=60),
        "finished": threading.Event(),
    }
    threading.Thread(target=platform.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{platform.server_address[1]}"
    env = worker_env(
        MAX_CONCURRENCY="3",
        GATE_URL=f"{base}/gate",
        RUNPOD_WEBHOOK_GET_JOB=f"{base}/job-take/$ID?worker=test",
        RUNPOD_WEBHOOK_POST_OUTPUT=f"{base}/done/$ID?worker=test",
        RUNPOD_POD_ID="test-pod",
    )
    worker = subprocess.Popen(
        [sys.executable, "handler.py"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        finished = platform.state["finished"].wait(90)  # type: ignore[attr-defined]
    finally:
        worker.terminate()  # the SDK shuts down on SIGTERM
        try:
            log, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            log, _ = worker.communicate()
        platform.shutdown()
        platform.server_close()
    state = platform.state  # type: ignore[attr-defined]
    assert finished, log[-3000:]
    assert state["takes"][0] == 3  # the SDK asked the modifier, then for three jobs
    assert {job_id: body.get("output") for job_id, body in state["results"].items()} == {
        f"job-{n}": {"n": n} for n in range(3)
    }


# ------------------------------------------------------------- runpod 2.0 prestart hooks


def _sdk2_python() -> str | None:
    """An interpreter with runpod 2: this one, or the checkout's .venv-rp2."""
    try:
        if int(metadata.version("runpod").split(".", 1)[0]) >= 2:
            return sys.executable
    except (metadata.PackageNotFoundError, ValueError):
        pass
    candidate = ROOT / ".venv-rp2" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


SDK2 = _sdk2_python()
needs_sdk2 = pytest.mark.skipif(
    SDK2 is None, reason="prestart hooks need runpod 2 (this venv has 1.x and no .venv-rp2)"
)

PRESTART_NOTEBOOK = [
    "import runpod",
    "STATE = {'warm': False}",
    # the handler never names the hook: its cell goes in because it registers one
    "@runpod.serverless.register_prestart_hook\ndef warm():\n    STATE['warm'] = True",
    "%%handler\ndef handler(job):\n    return {'warm': STATE['warm'], 'x': job['input']['x']}",
]


def test_the_prestart_cell_is_exported_before_the_start_block(tmp_path: Path) -> None:
    text = (export(tmp_path, PRESTART_NOTEBOOK) / "handler.py").read_text()
    hook = text.index("@runpod.serverless.register_prestart_hook\ndef warm():")
    assert text.index("STATE = {'warm': False}") < hook < text.index('if __name__ == "__main__":')
    compile(text, "handler.py", "exec")


@pytest.mark.slow
@needs_sdk2
@pytest.mark.parametrize("fails", [False, True], ids=["hook-runs", "hook-fails"])
def test_the_exported_prestart_hook_runs_under_runpod_2(tmp_path: Path, fails: bool) -> None:
    sources = list(PRESTART_NOTEBOOK)
    if fails:
        sources[2] = (
            "from runpod.serverless import register_prestart_hook\n"
            "def warm():\n    raise RuntimeError('no weights')\n"
            "register_prestart_hook(warm)"
        )
    folder = export(tmp_path, sources)
    done = subprocess.run(
        [str(SDK2), "handler.py", "--test_input", json.dumps({"input": {"x": 1}})],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=worker_env(),
    )
    output = done.stdout + done.stderr
    if fails:  # the SDK runs the hook before the job and exits 1 without running it
        assert done.returncode == 1, output[-3000:]
        assert "no weights" in output and "Job result" not in output
    else:
        assert done.returncode == 0, output[-3000:]
        assert job_result(done.stdout) == {"output": {"warm": True, "x": 1}}
