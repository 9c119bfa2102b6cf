#!/usr/bin/env python
"""A load driver for a RunPod-style endpoint: `jobs` `POST /run` jobs from `clients`
threads, each with its own keep-alive connection, submitting a job and then polling
`/status/{id}` (every 5 ms) until it ends. Nothing is judged here: the answers, the
errors met and the polls made are handed back for the caller to check.

Run it as a process of its own, so that the clients do not share the server's GIL:

    python tests/load_driver.py URL --jobs 2000 [--clients 32] [--poll-method POST]

prints the result as JSON on stdout. tests/test_serve_load.py runs it so, and
bench/bench_serve.py both so and in-process (`drive`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbworker.record import FINAL_STATUSES

CLIENTS = 32
POLL = 0.005  # seconds between two polls of one job
DEADLINE = 120  # seconds for the whole load; a job still running then is an error


def _client(url: str, inputs: list[int], poll_method: str, deadline: float) -> dict[str, Any]:
    """Submit each input and poll it until it ends: [n, id, answer, seconds] for each, the
    number of polls, and the errors met (a job whose request failed is lost)."""
    import requests

    done: list[list[Any]] = []
    errors: list[str] = []
    polls = 0
    with requests.Session() as http:
        for n in inputs:
            start = time.perf_counter()
            try:
                submitted = http.post(f"{url}/run", json={"input": {"n": n}}, timeout=30)
                submitted.raise_for_status()
                job_id = submitted.json()["id"]
                while True:
                    polls += 1
                    answer = http.request(poll_method, f"{url}/status/{job_id}", timeout=30)
                    answer.raise_for_status()
                    status = answer.json()
                    if status.get("status") in FINAL_STATUSES:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id} still {status.get('status')}")
                    time.sleep(POLL)  # a client's pace, not a synchronisation
            except Exception as err:  # handed back: the caller counts lost jobs
                errors.append(f"n={n}: {type(err).__name__}: {err}")
                continue
            done.append([n, job_id, status, time.perf_counter() - start])
    return {"done": done, "errors": errors, "polls": polls}


def drive(
    url: str, jobs: int, *, clients: int = CLIENTS, poll_method: str = "GET"
) -> dict[str, Any]:
    """The whole load: inputs 0..jobs-1 shared out among `clients` threads. Returns the
    seconds from the first submit to the last answer (`elapsed`), `done` ([n, id, final
    answer, seconds] per job that ended), `errors` and `polls`."""
    deadline = time.monotonic() + DEADLINE
    shares = [list(range(i, jobs, clients)) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(_client, url, s, poll_method, deadline) for s in shares]
        parts = [f.result() for f in futures]
    elapsed = time.perf_counter() - start
    return {
        "elapsed": elapsed,
        "done": [d for p in parts for d in p["done"]],
        "errors": [e for p in parts for e in p["errors"]],
        "polls": sum(p["polls"] for p in parts),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the endpoint's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--poll-method", default="GET", help="GET (nbworker) or POST (the SDK)")
    args = parser.parse_args()
    result = drive(args.url, args.jobs, clients=args.clients, poll_method=args.poll_method)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
