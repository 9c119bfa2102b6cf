#!/usr/bin/env python
"""A load driver for a RunPod-style endpoint, run as a process of its own so that the
clients do not share the server's GIL. Nothing is judged here: the answers, the errors met
and the figures are handed back for the caller to check.

Two loads:

- `drive`: `jobs` `POST /run` jobs from `clients` threads (requests, one keep-alive
  connection each), each submitting a job and then polling `/status/{id}` (every 5 ms)
  until it ends.
- `drive_runsync`: `POST /runsync` from `clients` threads, each on one keep-alive
  connection written and read with bare sockets (a few µs of client per request, so the
  figure is the server's), until `jobs` are answered or `seconds` have passed. Each answer
  is checked (COMPLETED, the output its input gives, an id not seen before) and counted;
  the rates of consecutive windows of `window` jobs show whether the server slows down as
  jobs pile up.

    python tests/load_driver.py URL --jobs 2000 [--clients 32] [--poll-method POST]
    python tests/load_driver.py URL --runsync --jobs 5000 [--clients 8] [--seconds 60]
    python tests/load_driver.py --commands     # one JSON command a line on stdin

print the result as JSON on stdout; with `--commands`, each line read is
`{"load": "runsync" | "run", "url": ..., options}` and answered with one line, so a
benchmark keeps one load process for all its rounds. tests/test_serve_load.py runs the
first form, bench/bench_serve.py the last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from nbworker.record import FINAL_STATUSES

CLIENTS = 32
POLL = 0.005  # seconds between two polls of one job
DEADLINE = 120  # seconds for the whole load; a job still running then is an error


# ----------------------------------------------------------------------------- /run + poll


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
    """The whole /run load: inputs 0..jobs-1 shared out among `clients` threads. Returns the
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


# ----------------------------------------------------------------------------- /runsync


class _Connection:
    """One keep-alive HTTP/1.1 connection, written and read with bare socket calls."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = f"POST /runsync HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
        self.buffer = b""

    def runsync(self, body: bytes) -> tuple[int, bytes]:
        """The status code and body of one /runsync answer."""
        self.sock.sendall(
            self.head
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._recv()
        head = buffer[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        start = end + 4
        while len(buffer) < start + length:
            buffer += self._recv()
        self.buffer = buffer[start + length :]
        return int(head.split(" ", 2)[1]), buffer[start : start + length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def _runsync_client(
    host: str,
    port: int,
    numbers: Any,
    stop: float,
    sink: dict[str, Any],
    lock: threading.Lock,
) -> None:
    """Send /runsync jobs with the numbers taken from `numbers` until it runs out or
    perf_counter passes `stop`; put the answers' figures into `sink`."""
    ends: list[float] = []
    latencies: list[float] = []
    ids: list[str] = []
    errors: list[str] = []
    wrong = 0
    clock = time.perf_counter
    connection = None
    try:
        connection = _Connection(host, port, timeout=60)
        for n in numbers:
            start = clock()
            if start > stop:
                break
            code, raw = connection.runsync(b'{"input": {"n": %d}}' % n)
            end = clock()
            answer = json.loads(raw)
            output = answer.get("output")
            if (
                code != 200
                or answer.get("status") != "COMPLETED"
                or not isinstance(output, dict)
                or output.get("n") != 2 * n
            ):
                wrong += 1
                if len(errors) < 20:
                    errors.append(f"n={n}: HTTP {code} {raw[:300]!r}")
                continue
            ends.append(end)
            latencies.append(end - start)
            ids.append(answer.get("id"))
    except Exception as err:  # handed back: the caller sees it
        errors.append(f"{type(err).__name__}: {err}")
    finally:
        if connection is not None:
            connection.close()
    with lock:
        sink["ends"] += ends
        sink["latencies"] += latencies
        sink["ids"] += ids
        sink["errors"] += errors
        sink["wrong"] += wrong


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def drive_runsync(
    url: str,
    *,
    jobs: int,
    clients: int = 8,
    seconds: float = DEADLINE,
    window: int = 0,
    first: int = 0,
) -> dict[str, Any]:
    """`jobs` /runsync requests (inputs first..first+jobs-1) from `clients` connections,
    stopping early after `seconds`. Returns `answered` (right answers), `elapsed` (first
    send to last answer), `rate` (answered per second), `latency` {median, p90, p99} in
    seconds, `distinct_ids`, `wrong` (answers not COMPLETED with the right output),
    `errors` (the first few), `stopped_early`, and with `window`, `windows`: the rate of
    each consecutive `window` answers, in the order they were answered."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    numbers = iter(range(first, first + jobs))  # shared: next() on it is atomic
    sink: dict[str, Any] = {"ends": [], "latencies": [], "ids": [], "errors": [], "wrong": 0}
    lock = threading.Lock()
    start = time.perf_counter()
    threads = [
        threading.Thread(
            target=_runsync_client, args=(host, port, numbers, start + seconds, sink, lock)
        )
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ends = sorted(sink["ends"])
    elapsed = (ends[-1] - start) if ends else float("nan")
    latencies = sorted(sink["latencies"])
    result: dict[str, Any] = {
        "answered": len(ends),
        "elapsed": elapsed,
        "rate": len(ends) / elapsed if ends else 0.0,
        "latency": {
            q: _percentile(latencies, p) for q, p in (("median", 50), ("p90", 90), ("p99", 99))
        },
        "distinct_ids": len(set(sink["ids"])),
        "wrong": sink["wrong"],
        "errors": sink["errors"],
        "stopped_early": len(ends) + sink["wrong"] < jobs,
    }
    if window:
        marks = [start, *ends[window - 1 :: window]]
        result["windows"] = [window / (b - a) for a, b in itertools.pairwise(marks)]
    return result


# ----------------------------------------------------------------------------- the process


def run_command(command: dict[str, Any]) -> dict[str, Any]:
    """One load, as `--commands` reads it: {"load": "runsync" | "run", "url", options}."""
    options = dict(command)
    load, url = options.pop("load"), options.pop("url")
    if load == "runsync":
        return drive_runsync(url, **options)
    if load == "run":
        return drive(url, **options)
    raise ValueError(f"no load {load!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "url", nargs="?", help="the endpoint's base URL, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--poll-method", default="GET", help="GET (nbworker) or POST (the SDK)")
    parser.add_argument("--runsync", action="store_true", help="POST /runsync instead of /run")
    parser.add_argument("--seconds", type=float, default=DEADLINE, help="/runsync: stop after")
    parser.add_argument("--window", type=int, default=0, help="/runsync: jobs per rate window")
    parser.add_argument("--commands", action="store_true", help="read JSON commands on stdin")
    args = parser.parse_args()
    if args.commands:
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(run_command(json.loads(line))), flush=True)
        return 0
    if args.url is None or args.jobs is None:
        parser.error("give URL and --jobs (or --commands)")
    if args.runsync:
        result = drive_runsync(
            args.url,
            jobs=args.jobs,
            clients=args.clients or 8,
            seconds=args.seconds,
            window=args.window,
        )
    else:
        result = drive(
            args.url, args.jobs, clients=args.clients or CLIENTS, poll_method=args.poll_method
        )
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
