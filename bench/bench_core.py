#!/usr/bin/env python
"""Benchmark of nbworker's core loop, each figure next to what a user would do instead.

    python bench/bench_core.py           # full run, about 25 s on 2 cores
    python bench/bench_core.py --quick   # fewer repetitions, about 12 s
    python bench/bench_core.py --profile # also cProfile the %rp_test cell

1. `Session.run_job` and `JobRunner.run` on a trivial sync handler, against calling the
   handler directly: the overhead nbworker adds (target: under 0.2 ms).
2. `%rp_test` with its display in a real IPython InteractiveShell, against a cell that
   calls the handler directly (target: under 2 ms). Also, as context, the same two cells
   sent to a real Jupyter kernel (round trip).
3. The edit->result loop of a handler whose model takes 2 s to load: cold
   (`python handler.py --test_input ...` under the RunPod SDK) against warm (re-run the
   `%%handler` cell and `%rp_test`) in an InteractiveShell and in a real Jupyter kernel
   (target: cold/warm at least 1000x).

Every ratio compares figures measured in this same run. Only 127.0.0.1 is used (the
kernel's ZMQ sockets).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import (
    RECORD_MIMETYPE,
    BenchFailure,
    Row,
    cell_ok,
    check,
    fmt_s,
    log,
    log_banner,
    median,
    pct,
    print_table,
    sample,
    setup_workdir,
    started_kernel,
    stats_text,
    timed_run,
)

# ----------------------------------------------------------------------------- the cells

MODEL_SECONDS = 2.0
MODEL_CELL = f"import time\ntime.sleep({MODEL_SECONDS})\nMODEL = {{'w': 3}}"


def handler_cell(k: int) -> str:
    """The edited handler cell: the multiplier alternates so each re-run is a real edit."""
    return (
        f'%%handler\ndef handler(job):\n    return {{"y": {k} * MODEL["w"] * job["input"]["x"]}}\n'
    )


RP_TEST_X = '%rp_test {"input": {"x": 2}}'

ROWS: list[Row] = []
WARM_SHELL: list[float] = []  # 3b's median, for the 3c breakdown


# ----------------------------------------------------------------------------- 1. run_job


def bench_run_job(quick: bool) -> None:
    import nbworker
    from nbworker.jobs import build_job

    log("[1] run_job overhead on a trivial sync handler")
    session = nbworker.Session()

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        return {"n": len(job["input"]["text"])}

    session.register_handler(handler)
    spec = session.registry.get("handler")
    job = build_job({"input": {"text": "hello"}})
    run = session.run_job({"input": {"text": "hello"}}, "handler")
    check(run.status == "COMPLETED" and run.output == {"n": 5}, f"run_job gave {run!r}")
    run = session.runner.run(spec, job)
    check(run.status == "COMPLETED" and run.output == {"n": 5}, f"runner.run gave {run!r}")
    check(not run.warnings, f"unexpected warnings: {run.warnings}")

    rounds, per_round = (5, 400) if quick else (10, 2000)
    times = sample(
        {
            # The same job dict the runner hands the handler, built in the call like run_job's.
            "direct": lambda: handler({"id": "local_test", "input": {"text": "hello"}}),
            "run_job": lambda: session.run_job({"input": {"text": "hello"}}, "handler"),
            "runner.run": lambda: session.runner.run(spec, job),
        },
        rounds=rounds,
        per_round=per_round,
        warmup=500,
        gc_off=True,
    )
    session.close()
    base = median(times["direct"])
    log(f"    {rounds * per_round} calls each, gc disabled while timing")
    log(
        f"    direct handler(job)        median {fmt_s(base)}  "
        f"p90 {fmt_s(pct(times['direct'], 90))}"
    )
    for name, label in (
        ("run_job", 'Session().run_job({"input": ...}, "handler")'),
        ("runner.run", "session.runner.run(spec, job)"),
    ):
        med, p90 = median(times[name]), pct(times[name], 90)
        log(f"    {name:<26} median {fmt_s(med)}  p90 {fmt_s(p90)}")
        for stat, value in (("median", med), ("p90", p90)):
            overhead = value - base
            ROWS.append(
                Row(
                    key="1",
                    what=f"{label}, {stat}",
                    value=fmt_s(value),
                    versus="handler(job) called directly, median",
                    versus_value=fmt_s(base),
                    result=f"overhead {fmt_s(overhead)}",
                    target="overhead < 0.2 ms" if stat == "median" else "",
                    ok=(overhead < 200e-6) if stat == "median" else None,
                )
            )


# ----------------------------------------------------------------------------- 2. the magic


class SinkSocket:
    """Stands in for a kernel's IOPub socket: counts the serialised frames it is sent."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def send_multipart(self, frames: list[bytes], *args: Any, **kwargs: Any) -> None:
        self.messages += 1
        self.bytes += sum(len(frame) for frame in frames)


@contextlib.contextmanager
def kernel_like_output(shell: Any) -> Iterator[SinkSocket]:
    """Display as ipykernel does, up to the socket: ipykernel's own ZMQDisplayPublisher and
    ZMQShellDisplayHook, with a signed jupyter_client Session, build and serialise every
    display_data / execute_result message (JSON + HMAC); the frames go to a sink. stdout and
    stderr (e.g. %%handler's "registered handler ...") go to a StringIO, as a kernel's
    OutStream buffers them."""
    from ipykernel.displayhook import ZMQShellDisplayHook
    from ipykernel.zmqshell import ZMQDisplayPublisher
    from jupyter_client.session import Session

    sink = SinkSocket()
    session = Session(key=b"nbworker-bench", username="bench")
    publisher = ZMQDisplayPublisher(shell=shell, session=session, pub_socket=sink)
    hook = ZMQShellDisplayHook(shell=shell, session=session, pub_socket=sink)
    saved = shell.display_pub, shell.displayhook, shell.display_trap.hook
    shell.display_pub, shell.displayhook, shell.display_trap.hook = publisher, hook, hook
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            yield sink
    finally:
        shell.display_pub, shell.displayhook, shell.display_trap.hook = saved


@contextlib.contextmanager
def captured_output(shell: Any) -> Iterator[Any]:
    """IPython's capture_output(): display calls stored as RichOutput dicts, the terminal
    displayhook printing to a StringIO."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        yield captured


def make_shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell("%load_ext nbworker", store_history=True)
    check(result.success, f"%load_ext nbworker failed: {result.error_in_exec!r}")
    return shell


def run_ok(expected_output: Any) -> Callable[[Any], None]:
    def verify(result: Any) -> None:
        cell_ok(result)
        run = result.result
        if getattr(run, "status", None) != "COMPLETED" or run.output != expected_output:
            raise BenchFailure(f"%rp_test gave {run!r}, expected output {expected_output!r}")

    return verify


def bench_magic(shell: Any, quick: bool, profile: bool) -> None:
    from nbworker.record import RECORD_MIMETYPE as record_mimetype

    check(record_mimetype == RECORD_MIMETYPE, "the record mimetype changed")
    log("[2] %rp_test with its display, in an IPython InteractiveShell")
    define = '%%handler\ndef handler(job):\n    return {"n": len(job["input"]["text"])}\n'
    magic = '%rp_test {"input": {"text": "hello"}}'
    direct = 'handler({"id": "x", "input": {"text": "hello"}})'
    with captured_output(shell) as captured:
        cell_ok(shell.run_cell(define, store_history=True))
        result = shell.run_cell(magic, store_history=True)
    run_ok({"n": 5})(result)
    shown = [o for o in captured.outputs if RECORD_MIMETYPE in o.data]
    check(len(shown) == 1, f"%rp_test displayed {len(captured.outputs)} outputs, expected 1 run")
    check(shown[0].data[RECORD_MIMETYPE]["status"] == "COMPLETED", "the record is not COMPLETED")

    rounds, per_round = (4, 25) if quick else (8, 50)
    n = rounds * per_round
    checks = {"magic": run_ok({"n": 5}), "direct": cell_ok, "empty": cell_ok}
    variants = {
        "magic": lambda: shell.run_cell(magic, store_history=True),
        "direct": lambda: shell.run_cell(direct, store_history=True),
        "empty": lambda: shell.run_cell("pass", store_history=True),
    }
    results: dict[str, dict[str, list[float]]] = {}
    for mode, output in (("kernel-like", kernel_like_output), ("capture_output", captured_output)):
        with output(shell) as sink:
            results[mode] = sample(
                variants,
                rounds=rounds,
                per_round=per_round,
                warmup=20,
                gc_off=False,
                checks=checks,
            )
        if mode == "kernel-like":
            # Each %rp_test and each handler(...) cell sends one message; `pass` sends none.
            expected = (rounds * per_round + 20) * 2
            check(sink.messages == expected, f"{sink.messages} messages sent, expected {expected}")
            log(
                f"    kernel-like output: {sink.messages} messages, "
                f"{sink.bytes / 1e6:.1f} MB serialised"
            )
    log(f"    {n} cells each, store_history=True, gc enabled")
    log(
        "    headline: kernel-like (ipykernel's ZMQDisplayPublisher + ZMQShellDisplayHook build, "
        "sign and serialise\n    each message as a kernel does, then drop it); capture_output "
        "is cheaper but only stores the bundles"
    )
    for mode, times in results.items():
        log(
            f"    {mode:<15} %rp_test median {fmt_s(median(times['magic']))} "
            f"p90 {fmt_s(pct(times['magic'], 90))} | handler(...) cell median "
            f"{fmt_s(median(times['direct']))} | `pass` cell median {fmt_s(median(times['empty']))}"
        )
    for mode, times in results.items():
        med, base = median(times["magic"]), median(times["direct"])
        ROWS.append(
            Row(
                key="2",
                what=f"%rp_test cell + display, median ({mode})",
                value=fmt_s(med),
                versus="cell `handler({...})`, median",
                versus_value=fmt_s(base),
                result=f"{fmt_s(med - base, signed=True)} ({med / base:.2f}x)",
                target="< 2 ms",
                ok=med < 2e-3,
            )
        )
        ROWS.append(
            Row(
                key="2",
                what=f"%rp_test cell + display, p90 ({mode})",
                value=fmt_s(pct(times["magic"], 90)),
                versus="cell `pass` (floor), median",
                versus_value=fmt_s(median(times["empty"])),
            )
        )
    if profile or median(results["kernel-like"]["magic"]) > 2e-3:
        profile_cell(shell, magic, 300 if not quick else 100)


def profile_cell(shell: Any, code: str, n: int) -> None:
    log(f"    cProfile of {n} runs of {code!r} (kernel-like output), by cumulative time:")
    profiler = cProfile.Profile()
    with kernel_like_output(shell):
        profiler.enable()
        for _ in range(n):
            shell.run_cell(code, store_history=True)
        profiler.disable()
    log(stats_text(profiler, "cumulative", 30))


# ----------------------------------------------------------------------------- 3. edit -> result

HANDLER_PY = f"""\
import time

time.sleep({MODEL_SECONDS})  # stands for loading a model
MODEL = {{"w": 3}}


def handler(job):
    return {{"y": MODEL["w"] * job["input"]["x"]}}


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({{"handler": handler}})
"""


def bench_cold(workdir: Path, quick: bool) -> float:
    log("[3a] cold: python handler.py --test_input ... under the RunPod SDK")
    with open(os.path.join(workdir, "handler.py"), "w", encoding="utf-8") as file:
        file.write(HANDLER_PY)
    command = [sys.executable, "handler.py", "--test_input", '{"input": {"x": 2}}']
    times = []
    for _ in range(1 if quick else 3):
        elapsed, proc = timed_run(command, workdir, timeout=120)
        times.append(elapsed)
        check(proc.returncode == 0, f"handler.py exited {proc.returncode}: {proc.stderr[-2000:]}")
        check("Job result" in proc.stdout, f"no 'Job result' in stdout: {proc.stdout[-2000:]}")
        check("{'output': {'y': 6}}" in proc.stdout, f"wrong result: {proc.stdout[-2000:]}")
    log(f"    runs: {', '.join(fmt_s(t) for t in times)} (model load alone: {MODEL_SECONDS:g} s)")
    cold = median(times)
    ROWS.append(
        Row(
            key="3a",
            what=f"cold: python handler.py --test_input, median of {len(times)}",
            value=fmt_s(cold),
            versus="",
            result=f"of which {MODEL_SECONDS:g} s model load",
        )
    )
    return cold


def bench_warm_shell(shell: Any, cold: float, quick: bool) -> None:
    log("[3b] warm, in-process: re-run the %%handler cell, then %rp_test (InteractiveShell)")
    iterations = 15 if quick else 50
    with kernel_like_output(shell):
        start = time.perf_counter()
        cell_ok(shell.run_cell(MODEL_CELL, store_history=True))
        load = time.perf_counter() - start
        edits, tests, totals = [], [], []
        for i in range(iterations + 3):
            k = 1 + i % 2
            t0 = time.perf_counter_ns()
            edited = shell.run_cell(handler_cell(k), store_history=True)
            t1 = time.perf_counter_ns()
            tested = shell.run_cell(RP_TEST_X, store_history=True)
            t2 = time.perf_counter_ns()
            cell_ok(edited)
            run_ok({"y": 6 * k})(tested)
            if i >= 3:  # the first few warm up
                edits.append((t1 - t0) / 1e9)
                tests.append((t2 - t1) / 1e9)
                totals.append((t2 - t0) / 1e9)
    warm = median(totals)
    WARM_SHELL.append(warm)
    log(
        f"    model cell once: {fmt_s(load)}; {iterations} edit+test iterations "
        "(kernel-like output)"
    )
    log(
        f"    %%handler cell median {fmt_s(median(edits))}, %rp_test cell median "
        f"{fmt_s(median(tests))}, both median {fmt_s(warm)} p90 {fmt_s(pct(totals, 90))}"
    )
    ROWS.append(
        Row(
            key="3b",
            what=f"warm, InteractiveShell: %%handler + %rp_test, median of {iterations}",
            value=fmt_s(warm),
            versus="3a cold run",
            versus_value=fmt_s(cold),
            result=f"cold/warm {cold / warm:,.0f}x",
            target=">= 1000x",
            ok=cold / warm >= 1000,
        )
    )


def kernel_run(outputs: list[Any]) -> dict[str, Any]:
    """The run record %rp_test displayed in the kernel."""
    records = [
        m["content"]["data"][RECORD_MIMETYPE]
        for m in outputs
        if m["msg_type"] == "display_data" and RECORD_MIMETYPE in m["content"]["data"]
    ]
    if len(records) != 1:
        raise BenchFailure(f"expected one run record from %rp_test, got {outputs}")
    return records[0]


def bench_kernel(workdir: Path, cold: float, quick: bool) -> None:
    log("[3c] warm, in a real Jupyter kernel: execute %%handler cell, then %rp_test cell")
    with started_kernel(workdir / "kernel.log") as kernel:
        log(f"    kernel started in {fmt_s(kernel.startup)}")
        kernel.execute("%load_ext nbworker")
        load, _, _ = kernel.execute(MODEL_CELL)
        iterations = 10 if quick else 30
        edits, tests, totals, floors = [], [], [], []
        for i in range(iterations + 3):
            k = 1 + i % 2
            edit, _, edit_out = kernel.execute(handler_cell(k))
            test, _, test_out = kernel.execute(RP_TEST_X)
            # The kernel's own round trip, measured alongside so that both see the same load.
            floor, _, _ = kernel.execute("pass")
            record = kernel_run(test_out)
            if record["status"] != "COMPLETED" or record["output"] != {"y": 6 * k}:
                raise BenchFailure(f"%rp_test in the kernel gave {record}")
            if not any("registered handler" in m["content"].get("text", "") for m in edit_out):
                raise BenchFailure(f"%%handler printed nothing in the kernel: {edit_out}")
            if i >= 3:
                edits.append(edit)
                tests.append(test)
                totals.append(edit + test)
                floors.append(floor)
        warm = median(totals)
        floor = 2 * median(floors)
        log(f"    model cell once: {fmt_s(load)}; {iterations} edit+test iterations")
        log(
            f"    %%handler round trip median {fmt_s(median(edits))}, %rp_test round trip median "
            f"{fmt_s(median(tests))}, both median {fmt_s(warm)} p90 {fmt_s(pct(totals, 90))}; "
            f"`pass` round trip median {fmt_s(median(floors))}"
        )
        ROWS.append(
            Row(
                key="3c",
                what=f"warm, Jupyter kernel: %%handler + %rp_test cells, median of {iterations}",
                value=fmt_s(warm),
                versus="3a cold run",
                versus_value=fmt_s(cold),
                result=f"cold/warm {cold / warm:,.0f}x",
                target=">= 1000x",
                ok=cold / warm >= 1000,
            )
        )

        # Context for 2: the magic alone and the plain call, as a notebook front end sees them.
        rounds = 3 if quick else 6
        per_round = 10 if quick else 20
        magic, direct, empty = [], [], []
        for r in range(rounds + 1):
            for code, out in (
                (RP_TEST_X, magic),
                ('handler({"id": "x", "input": {"x": 2}})', direct),
                ("pass", empty),
            ):
                for _ in range(per_round):
                    elapsed, _, outputs = kernel.execute(code)
                    if code is RP_TEST_X:
                        check(kernel_run(outputs)["status"] == "COMPLETED", "run not COMPLETED")
                    if r > 0:  # the first round warms up
                        out.append(elapsed)
        n = rounds * per_round
        log(
            f"    round trips ({n} each): %rp_test median {fmt_s(median(magic))}, "
            f"handler(...) median {fmt_s(median(direct))}, pass median {fmt_s(median(empty))}"
        )
        ROWS.append(
            Row(
                key="2k",
                what=f"%rp_test cell, Jupyter kernel round trip, median of {n}",
                value=fmt_s(median(magic)),
                versus="cell `handler({...})` round trip",
                versus_value=fmt_s(median(direct)),
                result=f"{fmt_s(median(magic) - median(direct), signed=True)}",
            )
        )
        ROWS.append(
            Row(
                key="2k",
                what="`pass` cell, Jupyter kernel round trip (floor), median",
                value=fmt_s(median(empty)),
            )
        )
        # What the kernel's messaging alone allows: two cells cost at least two round trips.
        ROWS.append(
            Row(
                key="3c",
                what="  of which the kernel's floor: 2 x `pass` round trip",
                value=fmt_s(floor),
                versus="3a cold run",
                versus_value=fmt_s(cold),
                result=f"cold/floor {cold / floor:,.0f}x (best possible)",
            )
        )
        ROWS.append(
            Row(
                key="3c",
                what="  the rest (nbworker + IPython + output messages)",
                value=fmt_s(warm - floor),
                versus="3b in-process warm",
                versus_value=fmt_s(WARM_SHELL[0]) if WARM_SHELL else "",
            )
        )


# ----------------------------------------------------------------------------- table


ORDER = ["1", "2", "2k", "3a", "3b", "3c"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~12 s)")
    parser.add_argument("--profile", action="store_true", help="cProfile the %%rp_test cell")
    args = parser.parse_args()

    started = time.perf_counter()
    # A fresh IPython profile (history database) for the shell and the kernel alike.
    workdir = setup_workdir()
    import IPython

    import nbworker

    try:
        from importlib import metadata

        log_banner(
            {
                "nbworker": nbworker.__version__,
                "IPython": IPython.__version__,
                "ipykernel": metadata.version("ipykernel"),
                "runpod": metadata.version("runpod"),
            },
            args.quick,
        )
        bench_run_job(args.quick)
        shell = make_shell()
        bench_magic(shell, args.quick, args.profile)
        cold = bench_cold(workdir, args.quick)
        bench_warm_shell(shell, cold, args.quick)
        bench_kernel(workdir, cold, args.quick)
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    # 2 and 2k, 3a to 3c: one group each.
    print_table(ROWS, ORDER, time.perf_counter() - started, group=lambda key: key[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
