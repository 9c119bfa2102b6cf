#!/usr/bin/env python
"""Benchmark of `%rp_serve` as a user meets it, side by side with the RunPod SDK's server.

    python bench/bench_serve.py            # full run: about 3.5 min on 2 cores
    python bench/bench_serve.py --quick    # CI-sized: about 1 min
    python bench/bench_serve.py --profile  # also a cProfile of the server's threads
    python bench/bench_serve.py --sections 1,3   # only those sections

nbworker's server is `%rp_serve` in a real Jupyter kernel (jupyter_client, the nbworker
extension loaded; the handler defined in a `%%handler` cell), so it shares its process and
GIL with the kernel as in a notebook. The SDK's is `python handler.py --rp_serve_api`
(FastAPI on uvicorn) with the same handler. The clients run in one separate load process
(tests/load_driver.py --commands), which writes and reads HTTP/1.1 with bare sockets on
keep-alive connections (a few µs of client per request), and checks every answer:
COMPLETED, the output its input gives, ids distinct.

1. `POST /runsync`, trivial sync handler (`{"n": 2 * n}`), 1 and 8 concurrent clients:
   requests/s. Rounds (7; --quick: 5) interleave the servers (order alternating), each
   measurement after a warm-up of its own; figures are medians over rounds, ratios the
   median of the per-round ratios (paired). The headline: the SDK's /runsync runs a sync
   handler inside its async endpoint, which is the comparable route. `%rp_serve` is
   restarted each round (section 3 measures how a server ages).
2. `POST /run` + polling `/status` (context only: the SDK's /run stores the job and its
   /status runs it, so the two servers do different work).
3. 100k jobs (--quick: 20k) of /runsync from 8 clients on a freshly started `%rp_serve`,
   bounded at 120 s (--quick: 40 s): the rate in each tenth of the run (the median of its
   ten sub-windows), against the first tenth. The server keeps the newest 10,000 finished
   jobs for /status, so the run passes that point early. One run's windows drift with the
   machine's load, so the verdict on "flat" is paired: the aged server against a fresh one
   in the same kernel, interleaved rounds (7 of 2,000 jobs; --quick: 5 of 1,000), median
   ratio >= 0.9 (the aged one may be faster: it reuses the memory of forgotten jobs).
4. A blocking handler (`time.sleep(0.01)`), `%%handler --concurrency 4` against the SDK
   with the same handler (and a `concurrency_modifier` of 4, which --rp_serve_api does not
   read: its /runsync is measured, not assumed), 8 clients.
5. Context: the cost of the job runner alone (`JobRunner.run` of the trivial handler, in
   the kernel) against nbworker's 1-client /runsync latency.

Every ratio compares figures measured in this same run. Nothing leaves 127.0.0.1; files go
to a temporary directory, removed at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
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
    print_table,
    setup_workdir,
)
from helpers import free_port

LOAD_DRIVER = TESTS / "load_driver.py"
TRIVIAL_CELL = """\
%%handler
def handler(job):
    return {"n": job["input"]["n"] * 2}
"""
BLOCKING_CELL = """\
%%handler --concurrency 4
import time

def handler(job):
    time.sleep(0.01)
    return {"n": job["input"]["n"] * 2}
"""
SDK_TRIVIAL = """\
import runpod


def handler(job):
    return {"n": job["input"]["n"] * 2}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
"""
SDK_BLOCKING = """\
import time

import runpod


def handler(job):
    time.sleep(0.01)
    return {"n": job["input"]["n"] * 2}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 4})
"""
BLOCKING_IDEAL = 4 / 0.01  # jobs/s of 4 at once, 10 ms each

ROWS: list[Row] = []
ORDER = ["1", "2", "3", "4", "5"]


# ----------------------------------------------------------------------------- processes


class LoadProcess:
    """tests/load_driver.py --commands: one process for every load of the run."""

    def __init__(self, workdir: Path) -> None:
        self._err = (workdir / "load-driver.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(LOAD_DRIVER), "--commands"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )

    def run(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        check(bool(line), f"the load driver exited ({self.proc.poll()})")
        return json.loads(line)

    def runsync(self, url: str, *, jobs: int, clients: int, warmup: int, **options: Any):
        """A warm-up, then the timed load; every answer must be right."""
        if warmup:
            checked(self.run(load="runsync", url=url, jobs=warmup, clients=clients), warmup)
        result = self.run(load="runsync", url=url, jobs=jobs, clients=clients, **options)
        return checked(result, jobs, may_stop=bool(options.get("seconds")))

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._err.close()


def checked(result: dict[str, Any], jobs: int, *, may_stop: bool = False) -> dict[str, Any]:
    """A /runsync load result, or BenchFailure if any answer was wrong or missing."""
    check(not result["wrong"] and not result["errors"], f"wrong answers: {result['errors'][:5]}")
    check(result["distinct_ids"] == result["answered"], "job ids answered twice")
    check(may_stop or result["answered"] == jobs, f"{result['answered']} of {jobs} answered")
    return result


class SdkServer:
    """`python handler.py --rp_serve_api` on a free port of 127.0.0.1."""

    def __init__(self, workdir: Path, name: str, source: str) -> None:
        folder = workdir / name
        folder.mkdir()
        (folder / "handler.py").write_text(source)
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
                time.sleep(0.1)  # polling a port another process opens

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


class ServingKernel:
    """A real kernel with the nbworker extension, its handler and `%rp_serve`."""

    def __init__(self, workdir: Path) -> None:
        from kernel_client import Kernel

        self.log_path = workdir / "kernel.log"
        self._log = self.log_path.open("wb")
        self.kernel = Kernel(workdir, stdout=self._log, stderr=self._log)
        self.url = ""

    def ok(self, code: str, timeout: float = 60) -> str:
        """Run a cell; its stdout, or BenchFailure with what went wrong."""
        execution = self.kernel.execute(code, timeout=timeout)
        if execution.status != "ok" or execution.of_type("error"):
            raise BenchFailure(f"the kernel failed {code[:60]!r}:\n{execution.describe()}")
        return execution.stdout

    def serve(self) -> str:
        """`%rp_serve --port 0` (a fresh server in place of any before); its URL."""
        shown = self.ok("%rp_serve --port 0")
        found = re.search(r"http://127\.0\.0\.1:\d+", shown)
        check(found is not None, f"%rp_serve said {shown!r}")
        assert found is not None
        self.url = found.group(0)
        return self.url

    def evaluate(self, expression: str) -> Any:
        return self.kernel.evaluate(expression)

    def close(self) -> None:
        self.kernel.shutdown()
        self._log.close()


# ----------------------------------------------------------------------------- sections


def ratio_text(values: list[float]) -> str:
    return f"{median(values):.2f}x (rounds {min(values):.2f}-{max(values):.2f})"


def bench_runsync(kernel: ServingKernel, sdk: SdkServer, load: LoadProcess, quick: bool) -> float:
    """Section 1; nbworker's median 1-client latency."""
    rounds = 5 if quick else 7
    sizes = {1: 400 if quick else 1500, 8: 800 if quick else 3000}
    warmup = 100 if quick else 200
    log(f"1. /runsync, trivial handler: {rounds} paired rounds, 1 and 8 clients")
    rates: dict[tuple[str, int], list[float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    ratios: dict[int, list[float]] = {1: [], 8: []}
    for r in range(rounds):
        kernel.serve()  # a fresh server each round: section 3 measures how it ages
        for clients, jobs in sizes.items():
            order = [("nbworker", kernel.url), ("sdk", sdk.url)]
            if r % 2:
                order.reverse()
            got = {}
            for name, url in order:
                result = load.runsync(url, jobs=jobs, clients=clients, warmup=warmup)
                got[name] = result["rate"]
                rates.setdefault((name, clients), []).append(result["rate"])
                latencies.setdefault((name, clients), []).append(result["latency"]["median"])
            ratios[clients].append(got["nbworker"] / got["sdk"])
            log(
                f"    round {r + 1}, {clients} client(s): nbworker {got['nbworker']:.0f}/s, "
                f"SDK {got['sdk']:.0f}/s, {ratios[clients][-1]:.2f}x"
            )
    for clients in sizes:
        nb, sdk_rate = median(rates["nbworker", clients]), median(rates["sdk", clients])
        ok = median(ratios[clients]) >= 1.5
        ROWS.append(
            Row(
                "1",
                f"/runsync req/s, trivial handler, {clients} client{'s' if clients > 1 else ''}",
                f"{nb:.0f}/s",
                "SDK --rp_serve_api",
                f"{sdk_rate:.0f}/s",
                ratio_text(ratios[clients]),
                ">= 1.5x",
                ok,
            )
        )
        nb_lat = median(latencies["nbworker", clients])
        sdk_lat = median(latencies["sdk", clients])
        ROWS.append(
            Row(
                "1",
                "  latency median",
                fmt_s(nb_lat),
                "SDK",
                fmt_s(sdk_lat),
                f"{nb_lat / sdk_lat:.2f}x",
                "(context)",
            )
        )
    return median(latencies["nbworker", 1])


def bench_run_poll(kernel: ServingKernel, sdk: SdkServer, load: LoadProcess, quick: bool) -> None:
    rounds, jobs = (1, 500) if quick else (3, 1000)
    log(f"2. /run + poll /status (context), {jobs} jobs x 32 clients, {rounds} round(s)")
    rates: dict[str, list[float]] = {"nbworker": [], "sdk": []}
    for r in range(rounds):
        order = [("nbworker", kernel.url, "GET"), ("sdk", sdk.url, "POST")]
        for name, url, method in order if r % 2 == 0 else order[::-1]:
            result = load.run(load="run", url=url, jobs=jobs, poll_method=method)
            check(not result["errors"], f"{name}: {result['errors'][:5]}")
            bad = [d for d in result["done"] if d[2].get("output") != {"n": 2 * d[0]}]
            check(not bad and len(result["done"]) == jobs, f"{name}: wrong answers {bad[:3]}")
            rates[name].append(jobs / result["elapsed"])
            polls = result["polls"] / jobs
            log(f"    round {r + 1} {name:8}: {rates[name][-1]:.0f} jobs/s, {polls:.2f} polls/job")
    nb, sdk_rate = median(rates["nbworker"]), median(rates["sdk"])
    ROWS.append(
        Row(
            "2",
            "/run + poll jobs/s, 32 clients (SDK: /status runs the job)",
            f"{nb:.0f}/s",
            "SDK --rp_serve_api",
            f"{sdk_rate:.0f}/s",
            f"{nb / sdk_rate:.2f}x",
            "(context)",
        )
    )


def bench_many(kernel: ServingKernel, load: LoadProcess, quick: bool) -> None:
    jobs, seconds = (20_000, 40.0) if quick else (100_000, 120.0)
    tenth = jobs // 10
    log(f"3. {jobs:,} /runsync jobs from 8 clients on a fresh %rp_serve (at most {seconds:.0f} s)")
    url = kernel.serve()
    rss_before = kernel_rss(kernel)
    result = load.runsync(
        url, jobs=jobs, clients=8, warmup=200, seconds=seconds, window=tenth // 10
    )
    rss_after = kernel_rss(kernel)
    stored = int(
        kernel.evaluate("len(__import__('nbworker.serve').serve.running()[0]._queue._jobs)")
    )
    windows = result["windows"]  # the rate of each tenth of a tenth, in order
    blocks = [median(windows[i : i + 10]) for i in range(0, len(windows), 10)]
    stopped = " (stopped at the time bound)" if result["stopped_early"] else ""
    log(
        f"    {result['answered']:,} answered in {result['elapsed']:.1f} s "
        f"({result['rate']:.0f}/s){stopped}"
    )
    log(
        "    rate per tenth: "
        + ", ".join(f"{i * tenth // 1000}k-: {b:.0f}/s" for i, b in enumerate(blocks))
    )
    log(
        f"    kernel RSS {rss_before / 1e6:.0f} MB before, {rss_after / 1e6:.0f} MB after; "
        f"{stored:,} jobs kept"
    )
    complete = result["answered"] == jobs
    ROWS.append(
        Row(
            "3",
            f"/runsync {jobs:,} jobs, 8 clients: answered within {seconds:.0f} s",
            f"{result['answered']:,}",
            "",
            "",
            f"{result['rate']:.0f}/s overall",
            f"all {jobs:,}",
            complete,
        )
    )
    # The tenths holding the 1,000th, 10,000th (where forgetting begins), 50,000th and
    # last job, each against the first tenth. One run's windows drift with the machine's
    # load (other processes come and go), so they are context; the verdict on flatness is
    # the paired comparison below, and the slowest tenth only has to show no collapse
    # (before: 0.1x past the 10,000th job).
    first = blocks[0] if blocks else float("nan")
    marks = sorted({min(mark // tenth, 9) for mark in (1000, 10_000, 50_000, jobs) if mark <= jobs})
    for index in marks:
        reached = index < len(blocks)
        rate = blocks[index] if reached else 0.0
        ROWS.append(
            Row(
                "3",
                f"  rate, jobs {index * tenth:,}-{(index + 1) * tenth:,}",
                f"{rate:.0f}/s" if reached else "not reached",
                "jobs 0-" + f"{tenth:,}",
                f"{first:.0f}/s",
                f"{rate / first:.2f}x",
                "(context)",
            )
        )
    slowest = min(blocks) if len(blocks) == 10 else 0.0
    ROWS.append(
        Row(
            "3",
            "  slowest tenth (all ten reached?)",
            f"{slowest:.0f}/s",
            "jobs 0-" + f"{tenth:,}",
            f"{first:.0f}/s",
            f"{slowest / first:.2f}x",
            ">= 0.5x (no collapse)",
            slowest / first >= 0.5,
        )
    )
    bench_aged_vs_fresh(kernel, load, url, quick)
    ROWS.append(
        Row(
            "3",
            "  jobs kept for /status after the run; kernel RSS growth",
            f"{stored:,}",
            "",
            "",
            f"{(rss_after - rss_before) / 1e6:+.0f} MB",
            "(context)",
        )
    )


FRESH_SERVER = """\
from nbworker import serve as _serve
_nb_fresh = _serve.serve(_nb_aged.session)
"""


def bench_aged_vs_fresh(
    kernel: ServingKernel, load: LoadProcess, aged_url: str, quick: bool
) -> None:
    """The server that ran section 3's jobs against a fresh one in the same kernel, paired
    rounds: the verdict on flatness that the machine's drift does not sway. The aged one
    may come out faster: it reuses the memory of the jobs it forgets, while the fresh one
    still grows its store (new memory, page faults); what flat rules out is slower."""
    rounds, jobs = (5, 1000) if quick else (7, 2000)
    log(f"    aged vs fresh server, {rounds} paired rounds of {jobs:,} jobs, 8 clients")
    kernel.ok("from nbworker import serve as _serve\n_nb_aged = _serve.running()[0]")
    ratios = []
    for r in range(rounds):
        kernel.ok(FRESH_SERVER)
        fresh_url = kernel.evaluate("_nb_fresh.url").strip("'")
        got = {}
        order = [("aged", aged_url), ("fresh", fresh_url)]
        for name, url in order if r % 2 == 0 else order[::-1]:
            result = load.runsync(url, jobs=jobs, clients=8, warmup=100, seconds=10.0)
            got[name] = result["rate"]
        kernel.ok("_nb_fresh.stop(grace=0.5)")
        ratios.append(got["aged"] / got["fresh"])
        log(f"    round {r + 1}: aged {got['aged']:.0f}/s, fresh {got['fresh']:.0f}/s")
    ROWS.append(
        Row(
            "3",
            "  flat: the aged server's req/s vs a fresh one's, paired",
            "",
            "",
            "",
            ratio_text(ratios),
            ">= 0.9x",
            median(ratios) >= 0.9,
        )
    )


def kernel_rss(kernel: ServingKernel) -> int:
    text = kernel.evaluate("open('/proc/self/statm').read().split()[1]")
    return int(text.strip("'")) * os.sysconf("SC_PAGE_SIZE")


def bench_blocking(kernel: ServingKernel, sdk: SdkServer, load: LoadProcess, quick: bool) -> None:
    rounds, jobs = (2, 200) if quick else (5, 400)
    log(f"4. blocking handler (sleep 10 ms), concurrency 4, 8 clients, {rounds} rounds")
    kernel.ok(BLOCKING_CELL)
    kernel.serve()  # fresh: section 3 left 10,000 jobs kept
    rates: dict[str, list[float]] = {"nbworker": [], "sdk": []}
    for r in range(rounds):
        order = [("nbworker", kernel.url), ("sdk", sdk.url)]
        for name, url in order if r % 2 == 0 else order[::-1]:
            result = load.runsync(url, jobs=jobs, clients=8, warmup=40)
            rates[name].append(result["rate"])
        nb, sdk_rate = rates["nbworker"][-1], rates["sdk"][-1]
        log(f"    round {r + 1}: nbworker {nb:.0f}/s, SDK {sdk_rate:.0f}/s")
    nb, sdk_rate = median(rates["nbworker"]), median(rates["sdk"])
    serial = "one job at a time" if sdk_rate < 1.5 / 0.01 else "jobs overlap"
    ROWS.append(
        Row(
            "4",
            "/runsync req/s, sleep(0.01) handler, concurrency 4, 8 clients",
            f"{nb:.0f}/s",
            "ideal (4 x 100/s)",
            f"{BLOCKING_IDEAL:.0f}/s",
            f"{nb / BLOCKING_IDEAL:.2f} of ideal",
            ">= 0.8 of ideal",
            nb >= 0.8 * BLOCKING_IDEAL,
        )
    )
    ROWS.append(
        Row(
            "4",
            "  the SDK's --rp_serve_api, same handler and modifier 4",
            f"{nb:.0f}/s",
            "SDK",
            f"{sdk_rate:.0f}/s",
            f"{nb / sdk_rate:.2f}x (SDK: {serial})",
            "(context)",
        )
    )


RUNNER_TIMING = """\
import statistics as _st, time as _t
from nbworker import serve as _serve
from nbworker.jobs import JobRunner as _JobRunner
_spec = _serve.running()[0].session.registry.get(None)
_runner, _times = _JobRunner(), []
for _i in range(3000):
    _start = _t.perf_counter()
    _run = _runner.run(_spec, {"id": "bench", "input": {"n": _i}})
    _times.append(_t.perf_counter() - _start)
    assert _run.output == {"n": 2 * _i}, _run
_runner.close()
_nb_runner_median = _st.median(_times[500:])
"""


def bench_floor(kernel: ServingKernel, one_client_latency: float) -> None:
    log("5. the job runner alone, in the kernel (JobRunner.run, trivial handler)")
    kernel.ok(TRIVIAL_CELL)
    kernel.ok(RUNNER_TIMING)
    runner = float(kernel.evaluate("_nb_runner_median"))
    ROWS.append(
        Row(
            "5",
            "JobRunner.run per job vs nbworker's 1-client /runsync latency",
            fmt_s(runner),
            "/runsync latency",
            fmt_s(one_client_latency),
            f"{runner / one_client_latency:.0%} of it",
            "(context)",
        )
    )


PROFILE_START = """\
import cProfile as _cp, functools as _ft, socketserver as _ss
from nbworker.serve.queue import JobQueue as _JobQueue
_nb_profiles = []
def _nb_profiled(function):
    @_ft.wraps(function)
    def run(*args, **kwargs):
        profile = _cp.Profile()
        _nb_profiles.append(profile)
        return profile.runcall(function, *args, **kwargs)
    return run
_nb_originals = (_ss.ThreadingMixIn.process_request_thread, _JobQueue._work_loop)
_ss.ThreadingMixIn.process_request_thread = _nb_profiled(_nb_originals[0])
_JobQueue._work_loop = _nb_profiled(_nb_originals[1])
"""
PROFILE_ROWS = 40
PROFILE_STOP = f"""\
import io as _io, pstats as _ps
%rp_serve --stop
_ss.ThreadingMixIn.process_request_thread, _JobQueue._work_loop = _nb_originals
_out = _io.StringIO()
_stats = _ps.Stats(_nb_profiles[0], stream=_out)
for _p in _nb_profiles[1:]:
    _stats.add(_p)
_stats.sort_stats("tottime").print_stats({PROFILE_ROWS})
print(_out.getvalue())
"""


def profile_server(kernel: ServingKernel, load: LoadProcess, clients: int) -> None:
    """cProfile of the server's threads (each connection's and each worker's, wrapped in
    `Profile.runcall` on a fresh server) during a /runsync load. A deterministic profile
    slows calls down; the shares are what it is for."""
    log(f"profile: cProfile of the server's threads, /runsync from {clients} client(s)")
    kernel.ok(TRIVIAL_CELL)
    kernel.ok(PROFILE_START)
    url = kernel.serve()
    load.runsync(url, jobs=3000, clients=clients, warmup=0)
    text = kernel.ok(PROFILE_STOP)
    log("    " + text.strip().replace("\n", "\n    "))
    kernel.serve()


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized rounds (~1.5 min)")
    parser.add_argument("--profile", action="store_true", help="sample the server's stacks")
    parser.add_argument(
        "--sections", default="1,2,3,4,5", help="which sections to run (default: all)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    workdir = setup_workdir()
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(Path(sys.prefix, "share", "jupyter")), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )
    from importlib import metadata

    import nbworker

    log_banner(
        {
            "nbworker": nbworker.__version__,
            "runpod": metadata.version("runpod"),
            "uvicorn": metadata.version("uvicorn"),
            "ipykernel": metadata.version("ipykernel"),
        },
        args.quick,
    )
    kernel = sdk = sdk_blocking = load = None
    try:
        kernel = ServingKernel(workdir)
        kernel.ok(TRIVIAL_CELL)
        kernel.serve()
        sdk = SdkServer(workdir, "sdk", SDK_TRIVIAL)
        sdk_blocking = SdkServer(workdir, "sdk-blocking", SDK_BLOCKING)
        load = LoadProcess(workdir)
        log(f"    nbworker: %rp_serve in a kernel at {kernel.url}; SDK at {sdk.url}")
        sections = set(args.sections.split(","))
        one_client_latency = float("nan")
        if "1" in sections:
            one_client_latency = bench_runsync(kernel, sdk, load, args.quick)
        if "2" in sections:
            bench_run_poll(kernel, sdk, load, args.quick)
        if "3" in sections:
            bench_many(kernel, load, args.quick)
        if "4" in sections:
            bench_blocking(kernel, sdk_blocking, load, args.quick)
        if "5" in sections:
            bench_floor(kernel, one_client_latency)
        if args.profile:
            profile_server(kernel, load, 1)
            profile_server(kernel, load, 8)
        for server in (sdk, sdk_blocking):
            check(server.proc.poll() is None, f"the SDK's server died: {server.log_tail()}")
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    finally:
        for server in (sdk, sdk_blocking):
            if server is not None:
                server.stop()
        if load is not None:
            load.stop()
        if kernel is not None:
            kernel.close()
    print_table(ROWS, ORDER, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
