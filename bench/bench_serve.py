#!/usr/bin/env python
"""Benchmark of `%rp_serve` under load, side by side with the RunPod SDK's local server.

    python bench/bench_serve.py           # full run, about 1.5 min on 2 cores
    python bench/bench_serve.py --quick   # 500 jobs a load round, fewer /runsync calls

The handler is the same on both servers: `def handler(job): return {"n": job["input"]["n"]
* 2}` (sync, concurrency 1).

1. Load: 2,000 `POST /run` jobs (--quick: 500) from 32 concurrent clients on loopback, each
   client submitting a job then polling `/status/{id}` until it ends (every 5 ms), against
   (a) nbworker's server, started in this process by `nbworker.serve.serve(session)` as
   `%rp_serve` does in a kernel, and (b) the SDK's `python handler.py --rp_serve_api`
   (a subprocess). The clients run in a subprocess of their own (tests/load_driver.py,
   which tests/test_serve_load.py runs too), so that nbworker's in-process server does not
   share its GIL with them; context rows also drive nbworker's server from 32 threads of
   this process, with the handler at concurrency 1 and 4 (each contended lock there costs
   a GIL hand-over). Figures:
   jobs/s end to end (first submit to last result), per-job latency median/p90, polls per
   job; every job must end COMPLETED with its right output, with 2,000 distinct ids.
2. `/runsync` latency of single sequential requests on each server (keep-alive
   connection), interleaved, median and p90; next to `session.run_job` called directly
   (what the HTTP layer and the server's thread hand-off add).

Every ratio compares figures measured in this same run. Nothing leaves 127.0.0.1; files go
to a temporary directory, removed at exit.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    TESTS,
    BenchFailure,
    Row,
    check,
    fmt_s,
    log,
    log_banner,
    median,
    pct,
    print_table,
    sample,
    setup_workdir,
)
from helpers import free_port
from load_driver import CLIENTS, drive

LOAD_DRIVER = TESTS / "load_driver.py"
HANDLER_SOURCE = """\
import runpod


def handler(job):
    return {"n": job["input"]["n"] * 2}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
"""

ROWS: list[Row] = []
ORDER = ["0", "1", "1c", "2", "3", "p"]


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return {"n": job["input"]["n"] * 2}


# ----------------------------------------------------------------------------- the load


def drive_subprocess(url: str, jobs: int, poll_method: str) -> dict[str, Any]:
    """The load from a process of its own (tests/load_driver.py): no GIL shared with the
    server."""
    argv = [sys.executable, str(LOAD_DRIVER), url, "--jobs", str(jobs), "--clients", str(CLIENTS)]
    argv += ["--poll-method", poll_method]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    check(proc.returncode == 0, f"the load driver failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def lost_jobs(result: dict[str, Any], jobs: int) -> list[str]:
    """What went wrong with a load run: requests that failed, jobs that did not end
    COMPLETED, duplicate ids. A COMPLETED job with a wrong output fails the benchmark."""
    problems = list(result["errors"])
    for n, job_id, answer, _ in result["done"]:
        if answer.get("status") != "COMPLETED":
            problems.append(f"n={n} {job_id}: {answer}")
        else:
            check(
                answer == {"id": job_id, "status": "COMPLETED", "output": {"n": 2 * n}},
                f"job n={n} COMPLETED with a wrong answer: {answer}",
            )
    ids = {d[1] for d in result["done"]}
    if len(ids) != len(result["done"]):
        problems.append(f"{len(result['done']) - len(ids)} duplicate ids")
    if sorted(d[0] for d in result["done"]) != list(range(jobs)) and not result["errors"]:
        problems.append("the inputs answered are not 0..jobs-1")
    return problems


# ----------------------------------------------------------------------------- servers


class SdkServer:
    """`python handler.py --rp_serve_api` on a free port of 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        folder = workdir / "sdk"
        folder.mkdir()
        (folder / "handler.py").write_text(HANDLER_SOURCE)
        port = free_port()
        self.log_path = folder / "server.log"
        self._log = self.log_path.open("wb")
        args = ["--rp_serve_api", "--rp_api_port", str(port), "--rp_api_host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [sys.executable, "handler.py", *args, "--rp_log_level", "ERROR"],
            cwd=folder,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            check(self.proc.poll() is None, f"the SDK's server exited: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                check(time.monotonic() < deadline, "the SDK's server did not start in 30 s")
                time.sleep(0.1)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


# ----------------------------------------------------------------------------- sections


def summary(result: dict[str, Any]) -> tuple[float, list[float], float]:
    """jobs/s, per-job latencies, polls per job."""
    done = result["done"]
    latencies = [d[3] for d in done]
    return len(done) / result["elapsed"], latencies, result["polls"] / max(len(done), 1)


def bench_load(nb_url: str, sdk_url: str, jobs: int, rounds: int, nb_health, session: Any) -> None:
    log(f"1. load: {jobs} /run jobs from {CLIENTS} clients, {rounds} round(s) each, interleaved")
    runs: dict[str, list[dict[str, Any]]] = {"nbworker": [], "sdk": [], "nbworker in-process": []}
    problems: dict[str, list[str]] = {name: [] for name in runs}
    submitted = 0
    for r in range(rounds):
        for name, url, method in (("nbworker", nb_url, "GET"), ("sdk", sdk_url, "POST")):
            result = drive_subprocess(url, jobs, method)
            if name == "nbworker":
                submitted += jobs
            runs[name].append(result)
            problems[name] += lost_jobs(result, jobs)
            rate, lat, polls = summary(result)
            log(
                f"    round {r + 1} {name:8}: {result['elapsed']:.2f} s, {rate:.0f} jobs/s, "
                f"latency median {fmt_s(median(lat))} p90 {fmt_s(pct(lat, 90))}, "
                f"{polls:.2f} polls/job, {len(result['done'])} answered, "
                f"{len(result['errors'])} request errors"
            )
    result = drive(nb_url, jobs, clients=CLIENTS)
    submitted += jobs
    runs["nbworker in-process"].append(result)
    problems["nbworker in-process"] += lost_jobs(result, jobs)
    rate, lat, polls = summary(result)
    log(
        f"    clients in this process (GIL shared with the server): {rate:.0f} jobs/s, "
        f"latency median {fmt_s(median(lat))}, {polls:.2f} polls/job"
    )
    session.register_handler(handler, name="handler", concurrency=4)  # as %%handler --concurrency 4
    try:
        result = drive(nb_url, jobs, clients=CLIENTS)
    finally:
        session.register_handler(handler, name="handler")
    submitted += jobs
    problems["nbworker in-process"] += lost_jobs(result, jobs)
    rate4, lat, polls = summary(result)
    log(
        f"    the same, handler concurrency 4: {rate4:.0f} jobs/s, "
        f"latency median {fmt_s(median(lat))}, {polls:.2f} polls/job"
    )
    health = nb_health()["jobs"]
    log(f"    nbworker /health after the load: {health}")
    if health["completed"] != submitted:
        problems["nbworker"].append(f"/health counts {health['completed']} of {submitted}")
    for name, found in problems.items():
        for line in found[:10]:
            log(f"    LOST ({name}): {line}")

    def best(name: str) -> tuple[float, list[float], float]:
        return max((summary(r) for r in runs[name]), key=lambda s: s[0])

    nb_rate, nb_lat, nb_polls = best("nbworker")
    sdk_rate, sdk_lat, sdk_polls = best("sdk")
    ok = not problems["nbworker"] and not problems["sdk"] and not problems["nbworker in-process"]
    total = rounds * jobs
    ROWS.append(
        Row(
            "0",
            "no job lost (ids distinct, all COMPLETED, right output)",
            f"{total - len(problems['nbworker'])}/{total}",
            "SDK --rp_serve_api",
            f"{total - len(problems['sdk'])}/{total}",
            f"+ {2 * jobs - len(problems['nbworker in-process'])}/{2 * jobs} in-process; /health "
            f"{health['completed']}/{submitted}",
            "none lost, both",
            ok,
        )
    )
    ROWS.append(
        Row(
            "1",
            f"/run + poll /status, {jobs} jobs x {CLIENTS} clients (best round)",
            f"{nb_rate:.0f} jobs/s",
            "SDK --rp_serve_api",
            f"{sdk_rate:.0f} jobs/s",
            f"{nb_rate / sdk_rate:.2f}x",
            "(context)",
        )
    )
    ROWS.append(
        Row(
            "1",
            "  per-job latency median / p90",
            f"{fmt_s(median(nb_lat), ms_digits=1)} / {fmt_s(pct(nb_lat, 90), ms_digits=1)}",
            "SDK",
            f"{fmt_s(median(sdk_lat), ms_digits=1)} / {fmt_s(pct(sdk_lat, 90), ms_digits=1)}",
            f"{median(nb_lat) / median(sdk_lat):.2f}x (median)",
        )
    )
    ROWS.append(
        Row(
            "1",
            "  requests per job (1 /run + polls)",
            f"{1 + nb_polls:.2f}",
            "SDK",
            f"{1 + sdk_polls:.2f}",
            "SDK: /status runs the job",
        )
    )
    ip_rate, _, _ = summary(runs["nbworker in-process"][0])
    ROWS.append(
        Row(
            "1c",
            f"nbworker, the {CLIENTS} clients in the server's process",
            f"{ip_rate:.0f} jobs/s",
            "clients in a subprocess",
            f"{nb_rate:.0f} jobs/s",
            f"{ip_rate / nb_rate:.2f}x",
            "(context)",
        )
    )
    ROWS.append(
        Row(
            "1c",
            "  the same, handler --concurrency 4",
            f"{rate4:.0f} jobs/s",
            "concurrency 1, in-process",
            f"{ip_rate:.0f} jobs/s",
            f"{rate4 / ip_rate:.2f}x",
            "(context)",
        )
    )


def bench_runsync(nb_url: str, sdk_url: str, session: Any, quick: bool) -> None:
    import requests

    log("2. /runsync latency, single sequential requests; session.run_job directly")
    counter = iter(range(10**9))
    nb_http, sdk_http = requests.Session(), requests.Session()

    def runsync(http: requests.Session, url: str):
        def call() -> tuple[int, dict[str, Any]]:
            n = next(counter)
            return n, http.post(f"{url}/runsync", json={"input": {"n": n}}, timeout=30).json()

        return call

    def direct() -> tuple[int, Any]:
        n = next(counter)
        return n, session.run_job({"input": {"n": n}})

    def check_http(result: tuple[int, dict[str, Any]]) -> None:
        n, answer = result
        check(
            answer.get("status") == "COMPLETED" and answer.get("output") == {"n": 2 * n},
            f"/runsync n={n}: {answer}",
        )

    def check_direct(result: tuple[int, Any]) -> None:
        n, run = result
        check(run.status == "COMPLETED" and run.output == {"n": 2 * n}, f"run_job n={n}: {run}")

    times = sample(
        {
            "nbworker": runsync(nb_http, nb_url),
            "sdk": runsync(sdk_http, sdk_url),
            "direct": direct,
        },
        rounds=10 if quick else 20,
        per_round=10 if quick else 25,
        warmup=20,
        gc_off=False,
        checks={"nbworker": check_http, "sdk": check_http, "direct": check_direct},
    )
    nb_http.close()
    sdk_http.close()
    for name, values in times.items():
        log(
            f"    {name:8}: median {fmt_s(median(values))}, p90 {fmt_s(pct(values, 90))}, "
            f"min {fmt_s(min(values))} ({len(values)} calls)"
        )
    nb, sdk, direct_t = times["nbworker"], times["sdk"], times["direct"]

    def m_p90(values: list[float]) -> str:
        return f"{fmt_s(median(values))} / {fmt_s(pct(values, 90))}"

    ROWS.append(
        Row(
            "2",
            "/runsync latency median / p90 (1 request at a time)",
            m_p90(nb),
            "SDK --rp_serve_api",
            m_p90(sdk),
            f"{median(nb) / median(sdk):.2f}x (median), {pct(nb, 90) / pct(sdk, 90):.2f}x (p90)",
            "(context)",
        )
    )
    ROWS.append(
        Row(
            "3",
            "nbworker /runsync vs session.run_job (HTTP overhead)",
            fmt_s(median(nb)),
            "session.run_job",
            fmt_s(median(direct_t)),
            f"{fmt_s(median(nb) - median(direct_t), signed=True)} "
            f"({median(nb) / median(direct_t):.0f}x)",
            "(context)",
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 jobs a round (~40 s)")
    args = parser.parse_args()

    started = time.perf_counter()
    workdir = setup_workdir()
    from importlib import metadata

    import requests

    import nbworker
    from nbworker.serve import serve
    from nbworker.session import Session

    log_banner(
        {
            "nbworker": nbworker.__version__,
            "runpod": metadata.version("runpod"),
            "requests": requests.__version__,
        },
        args.quick,
    )
    jobs, rounds = (500, 1) if args.quick else (2000, 2)
    session = Session()
    session.register_handler(handler, name="handler")
    nb_server = serve(session)
    sdk = None
    try:
        sdk = SdkServer(workdir)
        log(f"    nbworker at {nb_server.url} (this process), SDK at {sdk.url} (subprocess)")
        warm = requests.post(f"{sdk.url}/runsync", json={"input": {"n": 1}}, timeout=30).json()
        check(warm.get("output") == {"n": 2}, f"the SDK's server answered {warm}")

        def nb_health() -> dict[str, Any]:
            return requests.get(f"{nb_server.url}/health", timeout=10).json()

        bench_load(nb_server.url, sdk.url, jobs, rounds, nb_health, session)
        bench_runsync(nb_server.url, sdk.url, session, args.quick)
        check(sdk.proc.poll() is None, f"the SDK's server died: {sdk.log_tail()}")
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    finally:
        nb_server.stop(grace=0.5)
        session.close()
        if sdk is not None:
            sdk.stop()
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("nbworker-")]
    if leftover:
        log(f"    threads left after stop(): {leftover}")
    print_table(ROWS, ORDER, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
