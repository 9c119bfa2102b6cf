"""Load on nbworker's served endpoint: 2,000 `POST /run` jobs from 32 concurrent clients on
loopback, each polled on `/status/{id}` until it ends. None may be lost: 2,000 distinct ids,
every one COMPLETED with the output its input gives, and /health counts 2,000 completed."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from nbworker import serve
from nbworker.session import Session

JOBS = 2000
CLIENTS = 32
POLL = 0.005  # seconds between two polls of one job
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return {"n": job["input"]["n"] * 2}


def _client(url: str, inputs: list[int], deadline: float) -> list[tuple[int, str, dict]]:
    """Submit each input, poll it until it ends; (n, id, final answer) for each."""
    done = []
    with requests.Session() as http:
        for n in inputs:
            answer = http.post(f"{url}/run", json={"input": {"n": n}}, timeout=10)
            assert answer.status_code == 200, answer.text
            submitted = answer.json()
            assert submitted["status"] == "IN_QUEUE", submitted
            job_id = submitted["id"]
            while True:
                status = http.get(f"{url}/status/{job_id}", timeout=10).json()
                if status["status"] in FINAL:
                    break
                assert time.monotonic() < deadline, f"job {job_id} still {status['status']}"
                time.sleep(POLL)
            done.append((n, job_id, status))
    return done


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_2000_jobs_from_32_clients_none_lost(concurrency: int) -> None:
    session = Session()
    session.register_handler(handler, name="handler", concurrency=concurrency)
    server = serve.serve(session)
    try:
        deadline = time.monotonic() + 50
        shares = [list(range(i, JOBS, CLIENTS)) for i in range(CLIENTS)]
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(_client, server.url, share, deadline) for share in shares]
            results = [item for future in futures for item in future.result()]

        assert len(results) == JOBS
        assert sorted(n for n, _, _ in results) == list(range(JOBS))
        assert len({job_id for _, job_id, _ in results}) == JOBS
        wrong = [
            (n, answer)
            for n, job_id, answer in results
            if answer != {"id": job_id, "status": "COMPLETED", "output": {"n": 2 * n}}
        ]
        assert not wrong, wrong[:5]
        health = requests.get(f"{server.url}/health", timeout=5).json()
        assert health["jobs"] == {
            "completed": JOBS,
            "failed": 0,
            "inProgress": 0,
            "inQueue": 0,
            "retried": 0,
        }
        # No more worker threads than the handler's concurrency were started.
        workers = [
            t for t in threading.enumerate() if t.name.startswith(f"nbworker-job-{server.port}-")
        ]
        assert len(workers) == concurrency
    finally:
        server.stop(grace=0.5)
        session.close()
