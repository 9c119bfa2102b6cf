"""Load on nbworker's served endpoint: 2,000 `POST /run` jobs from 32 concurrent clients on
loopback, each polled on `/status/{id}` until it ends. None may be lost: 2,000 distinct ids,
every one COMPLETED with the output its input gives, and /health counts 2,000 completed.

The clients run in a process of their own (tests/load_driver.py, which bench/bench_serve.py
drives its load with too), as a deployed endpoint's callers do. Clients in the server's own process share its GIL: every
time a worker thread waits for a lock it then queues for the GIL behind 64 busy threads, and
throughput swings between runs (from ~400 down to ~35 jobs/s on 2 cores), which made a time
bound on that setting flaky. A smaller round keeps those clients in-process anyway, since
their thread switching is the harshest test of the server's locking."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from nbworker import serve
from nbworker.record import FINAL_STATUSES
from nbworker.session import Session

JOBS = 2000
CLIENTS = 32
IN_PROCESS_JOBS = 320
POLL = 0.005  # seconds between two polls of one job
DRIVER = Path(__file__).resolve().parent / "load_driver.py"


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return {"n": job["input"]["n"] * 2}


@pytest.fixture(params=[1, 4], ids=["concurrency-1", "concurrency-4"])
def server(request):
    session = Session()
    session.register_handler(handler, name="handler", concurrency=request.param)
    served = serve.serve(session)
    yield served
    served.stop(grace=0.5)
    session.close()


def _check_none_lost(server: serve.Server, results: list[tuple[int, str, dict]], jobs: int):
    assert sorted(n for n, _, _ in results) == list(range(jobs))
    assert len({job_id for _, job_id, _ in results}) == jobs
    wrong = [
        (n, answer)
        for n, job_id, answer in results
        if answer != {"id": job_id, "status": "COMPLETED", "output": {"n": 2 * n}}
    ]
    assert not wrong, wrong[:5]
    health = requests.get(f"{server.url}/health", timeout=5).json()
    assert health["jobs"] == {
        "completed": jobs,
        "failed": 0,
        "inProgress": 0,
        "inQueue": 0,
        "retried": 0,
    }
    # No more worker threads than the handler's concurrency were started.
    concurrency = server.session.registry.get("handler").concurrency
    workers = [
        t for t in threading.enumerate() if t.name.startswith(f"nbworker-job-{server.port}-")
    ]
    assert len(workers) == concurrency


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_2000_jobs_from_32_clients_none_lost(server: serve.Server) -> None:
    driver = subprocess.run(
        [sys.executable, str(DRIVER), server.url, "--jobs", str(JOBS), "--clients", str(CLIENTS)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    load = json.loads(driver.stdout)
    assert not load["errors"], load["errors"][:5]  # a failed request or a job left unfinished
    _check_none_lost(server, [(n, job_id, answer) for n, job_id, answer, _ in load["done"]], JOBS)


def _client(url: str, inputs: list[int], deadline: float) -> list[tuple[int, str, dict]]:
    """Submit each input, poll it until it ends; (n, id, final answer) for each."""
    done = []
    with requests.Session() as http:
        for n in inputs:
            answer = http.post(f"{url}/run", json={"input": {"n": n}}, timeout=30)
            assert answer.status_code == 200, answer.text
            submitted = answer.json()
            assert submitted["status"] == "IN_QUEUE", submitted
            job_id = submitted["id"]
            while True:
                status = http.get(f"{url}/status/{job_id}", timeout=30).json()
                if status["status"] in FINAL_STATUSES:
                    break
                assert time.monotonic() < deadline, f"job {job_id} still {status['status']}"
                time.sleep(POLL)
            done.append((n, job_id, status))
    return done


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_clients_in_the_servers_own_process_lose_nothing(server: serve.Server) -> None:
    deadline = time.monotonic() + 120
    shares = [list(range(i, IN_PROCESS_JOBS, CLIENTS)) for i in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(_client, server.url, share, deadline) for share in shares]
        results = [item for future in futures for item in future.result()]
    _check_none_lost(server, results, IN_PROCESS_JOBS)
