#!/usr/bin/env python
"""Benchmark of nbworker's core loop in a real Jupyter kernel, as a user meets it.

    python bench/bench_core.py           # full run, about 2 min on 2 cores
    python bench/bench_core.py --quick   # CI-sized run, about 1 min
    python bench/bench_core.py --profile # also cProfile the cells (shell and kernel)

1. `Session.run_job` and `JobRunner.run` on a trivial sync handler, against calling the
   handler directly: the overhead nbworker adds (target: under 0.2 ms).
2. Context: the edit->result cells in an IPython InteractiveShell whose display goes
   through ipykernel's own publisher (messages built, signed and serialised, not sent),
   against two `pass` cells: nbworker + IPython without the kernel's messaging noise.
3. The headline, edit->result in a real Jupyter kernel: re-run an edited `%%handler` cell,
   then `%rp_test`; against the floor of two `pass` cells, interleaved iteration by
   iteration (target: nbworker adds under 1 ms, the median of the paired differences).
   Context: the cold loop (`python handler.py --test_input` under the RunPod SDK, with a
   model that takes 2 s to load).
4. A big output in the same kernel: `%rp_test` of a handler returning 1M floats (~10.9 MB
   of JSON), against one C `json.dumps` of that output timed in the same kernel, rounds
   interleaved (target: the %rp_test round trip under 2x the dumps). Context: the handler
   alone, the kernel's own cost of sending a display_data of that size, and what the
   client pays to parse it.

Every ratio compares figures measured in this same run. Only 127.0.0.1 is used (the
kernel's ZMQ sockets).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import cProfile
import io
import json
import random
import sys
import textwrap
import time
from collections.abc import Iterator
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

ROWS: list[Row] = []
MODEL_SECONDS = 2.0
MODEL_CELL = f"import time\ntime.sleep({MODEL_SECONDS})\nMODEL = {{'w': 3}}"
RP_TEST_X = '%rp_test {"input": {"x": 2}}'


def handler_cell(k: int) -> str:
    """The edited handler cell: the multiplier alternates so each re-run is a real edit."""
    return (
        f'%%handler\ndef handler(job):\n    return {{"y": {k} * MODEL["w"] * job["input"]["x"]}}\n'
    )


def paired_row(key: str, what: str, cells: list[float], floors: list[float], n: int) -> Row:
    """The row of a target `cells - floors < 1 ms`, on the median of the paired differences."""
    extra = median([c - f for c, f in zip(cells, floors, strict=True)])
    return Row(
        key=key,
        what=f"{what}, median of {n}",
        value=fmt_s(median(cells)),
        versus="2 x `pass` cell (the floor), median",
        versus_value=fmt_s(median(floors)),
        result=f"nbworker adds {fmt_s(extra, signed=True)} (paired median)",
        target="adds < 1 ms",
        ok=extra < 1e-3,
    )


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
    for run in (
        session.run_job({"input": {"text": "hello"}}, "handler"),
        session.runner.run(spec, job),
    ):
        check(run.status == "COMPLETED" and run.output == {"n": 5}, f"a run gave {run!r}")
        check(not run.warnings, f"unexpected warnings: {run.warnings}")
    rounds, per_round = (5, 400) if quick else (10, 2000)
    times = sample(
        {
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
    log(f"    {rounds * per_round} calls each, gc disabled while timing; direct {fmt_s(base)}")
    for name, label in (
        ("run_job", 'Session().run_job({"input": ...}, "handler")'),
        ("runner.run", "session.runner.run(spec, job)"),
    ):
        med, p90 = median(times[name]), pct(times[name], 90)
        log(f"    {name:<12} median {fmt_s(med)}  p90 {fmt_s(p90)}")
        ROWS.append(
            Row(
                key="1",
                what=f"{label}, median (p90 {fmt_s(p90)})",
                value=fmt_s(med),
                versus="handler(job) called directly, median",
                versus_value=fmt_s(base),
                result=f"overhead {fmt_s(med - base)}",
                target="overhead < 0.2 ms",
                ok=med - base < 200e-6,
            )
        )


# ----------------------------------------------------------------------------- 2. shell


class SinkSocket:
    """Stands in for a kernel's IOPub socket: counts the serialised frames it is sent."""

    def __init__(self) -> None:
        self.messages = 0

    def send_multipart(self, frames: list[bytes], *args: Any, **kwargs: Any) -> None:
        self.messages += 1


@contextlib.contextmanager
def kernel_like_output(shell: Any) -> Iterator[SinkSocket]:
    """Display as ipykernel does, up to the socket: its own ZMQDisplayPublisher and
    ZMQShellDisplayHook with a signed jupyter_client Session build and serialise every
    message; the frames go to a sink. stdout and stderr go to a StringIO."""
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


def bench_shell(quick: bool, profile: bool) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    import nbworker

    log("[2] edit->result in an InteractiveShell, ipykernel's publisher (context)")
    # History in memory: IPython's SQLite writer thread (a kernel's) waits for the GIL
    # while it holds the lock the next cell's store_inputs takes, which in a tight loop of
    # busy cells adds milliseconds that are IPython's, not nbworker's. Section 3 has it all.
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    cell_ok(shell.run_cell("%load_ext nbworker", store_history=True))
    iterations, warmup = (40, 5) if quick else (150, 10)
    # Wall and CPU (this thread's: time the OS gives to other processes is not in it).
    wall: dict[str, list[float]] = {"edit": [], "floor": [], "%%handler": [], "%rp_test": []}
    cpu: dict[str, list[float]] = {"edit": [], "floor": []}
    with kernel_like_output(shell) as sink:
        cell_ok(shell.run_cell("MODEL = {'w': 3}", store_history=True))
        for i in range(warmup + iterations):
            k = 1 + i % 2
            order = ("edit", "floor") if i % 2 else ("floor", "edit")  # no position bias
            for part in order:
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                if part == "edit":
                    edited = shell.run_cell(handler_cell(k), store_history=True)
                    t1 = time.perf_counter_ns()
                    tested = shell.run_cell(RP_TEST_X, store_history=True)
                else:
                    first = shell.run_cell("pass", store_history=True)
                    t1 = time.perf_counter_ns()
                    second = shell.run_cell("pass", store_history=True)
                t2, c2 = time.perf_counter_ns(), time.thread_time_ns()
                if i >= warmup:
                    wall[part].append((t2 - t0) / 1e9)
                    cpu[part].append((c2 - c0) / 1e9)
                    if part == "edit":
                        wall["%%handler"].append((t1 - t0) / 1e9)
                        wall["%rp_test"].append((t2 - t1) / 1e9)
            for result in (edited, tested, first, second):
                cell_ok(result)
            # a bare %rp_test line shows its run and returns None: the run is the session's last
            run = nbworker.default_session().history[-1]
            check(run.output == {"y": 6 * k}, f"%rp_test gave {run!r}")
        check(sink.messages == warmup + iterations, f"{sink.messages} display messages")
        profiler = cProfile.Profile()
        if profile:
            profiler.enable()
            for i in range(100 if quick else 300):
                shell.run_cell(handler_cell(1 + i % 2), store_history=True)
                shell.run_cell(RP_TEST_X, store_history=True)
            profiler.disable()
    log(
        f"    {iterations} iterations, wall: %%handler {fmt_s(median(wall['%%handler']))}, "
        f"%rp_test {fmt_s(median(wall['%rp_test']))}, both {fmt_s(median(wall['edit']))}; "
        f"2 x pass {fmt_s(median(wall['floor']))}; CPU: both {fmt_s(median(cpu['edit']))}, "
        f"2 x pass {fmt_s(median(cpu['floor']))}"
    )

    def extra(figures: dict[str, list[float]]) -> float:
        pairs = zip(figures["edit"], figures["floor"], strict=True)
        return median([edit - floor for edit, floor in pairs])

    ROWS.extend(
        [
            Row(
                key="2",
                what=f"shell: %%handler + %rp_test cells, wall, median of {iterations}",
                value=fmt_s(median(wall["edit"])),
                versus="2 x `pass` cell, median",
                versus_value=fmt_s(median(wall["floor"])),
                result=f"adds {fmt_s(extra(wall), signed=True)} (paired)",
            ),
            Row(
                key="2",
                what="  the same, CPU time of the shell's thread",
                value=fmt_s(median(cpu["edit"])),
                versus="2 x `pass` cell, median",
                versus_value=fmt_s(median(cpu["floor"])),
                result=f"adds {fmt_s(extra(cpu), signed=True)} (paired)",
            ),
        ]
    )
    if profile:
        log("    cProfile of the edit+test iterations (kernel-like output), by own time:")
        log(stats_text(profiler, "tottime", 25))
        log(stats_text(profiler, "cumulative", r"/nbworker/", 25))


# ----------------------------------------------------------------------------- 3. edit->result

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
    log("[3a] cold: python handler.py --test_input ... under the RunPod SDK (context)")
    (workdir / "handler.py").write_text(HANDLER_PY, encoding="utf-8")
    command = [sys.executable, "handler.py", "--test_input", '{"input": {"x": 2}}']
    times = []
    for _ in range(1 if quick else 3):
        elapsed, proc = timed_run(command, workdir, timeout=120)
        times.append(elapsed)
        check(proc.returncode == 0, f"handler.py exited {proc.returncode}: {proc.stderr[-2000:]}")
        check("{'output': {'y': 6}}" in proc.stdout, f"wrong result: {proc.stdout[-2000:]}")
    cold = median(times)
    log(f"    runs: {', '.join(fmt_s(t) for t in times)} (model load alone: {MODEL_SECONDS:g} s)")
    ROWS.append(
        Row(
            key="3a",
            what=f"cold: python handler.py --test_input, median of {len(times)}",
            value=fmt_s(cold),
            result=f"of which {MODEL_SECONDS:g} s model load",
        )
    )
    return cold


DISPLAYS = ("display_data", "update_display_data")


def kernel_record(outputs: list[Any]) -> dict[str, Any]:
    """The one run record %rp_test displayed in the kernel (a run that outlasts a live
    view's first tick turns that view into its result: an update_display_data)."""
    records = [
        m["content"]["data"][RECORD_MIMETYPE]
        for m in outputs
        if m["msg_type"] in DISPLAYS and RECORD_MIMETYPE in m["content"]["data"]
    ]
    if len(records) != 1:
        kinds = [(m["msg_type"], list(m["content"].get("data", {}))) for m in outputs]
        raise BenchFailure(f"expected one run record from %rp_test, got {len(records)}: {kinds}")
    return records[0]


# What the two cells show, without nbworker: a cell magic that prints %%handler's line, and a
# cell displaying the bundle %rp_test displays (made once from a real run in the kernel).
SHOWN_SETUP = """\
from IPython.display import display as _bench_display
from nbworker.display import run_bundle as _bench_run_bundle
_bench_bundle = _bench_run_bundle(get_ipython().run_line_magic("rp_test", '{"input": {"x": 2}}'))
get_ipython().register_magic_function(
    lambda line, cell: print("registered `handler` (sync)"), "cell", "bench_noop"
)
"""
NOOP_CELL = handler_cell(1).replace("%%handler", "%%bench_noop", 1)
DISPLAY_CELL = "_bench_display(_bench_bundle, raw=True)"
# Each cell's time inside the kernel, from pre_run_cell to post_run_cell (what the kernel
# does before its messages leave; a display_data is serialised in the cell's thread): wall
# time, and the CPU time of the kernel's main thread (which a busy machine taking the CPU
# away from the kernel, or the kernel waiting on its IOPub thread, does not count).
TIMER = """\
import time as _bench_time
_bench_cells = []
_bench_started = [0.0, 0.0]
def _bench_pre(info):
    _bench_started[:] = [_bench_time.perf_counter(), _bench_time.thread_time()]
def _bench_post(result):
    wall = _bench_time.perf_counter() - _bench_started[0]
    cpu = _bench_time.thread_time() - _bench_started[1]
    _bench_cells.append((result.info.raw_cell, wall, cpu))
get_ipython().events.register("pre_run_cell", _bench_pre)
get_ipython().events.register("post_run_cell", _bench_post)
"""


class Inside:
    """The in-kernel seconds of the cells a benchmark runs (TIMER's list in the kernel),
    matched with the cells it sent, in order."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.start = int(kernel.kernel.evaluate("len(_bench_cells)"))
        self.sent: list[tuple[str, str]] = []  # (variant, code) in the order sent

    def execute(self, variant: str, code: str, timeout: float = 60) -> Any:
        self.sent.append((variant, code))
        return self.kernel.execute(code, timeout)

    def by_variant(self, *, cpu: bool = False) -> dict[str, list[float]]:
        """Each variant's in-kernel seconds (wall, or with `cpu` the main thread's CPU),
        in the order it ran."""
        text = ast.literal_eval(
            self.kernel.kernel.evaluate(f"json.dumps(_bench_cells[{self.start}:])")
        )
        cells = json.loads(text)[: len(self.sent)]
        sent = [textwrap.dedent(code).strip("\n") for _, code in self.sent]  # as the client sends
        check([cell[0] for cell in cells] == sent, "the kernel's timed cells are not those sent")
        found: dict[str, list[float]] = {}
        for (variant, _), (_, wall, thread) in zip(self.sent, cells, strict=True):
            found.setdefault(variant, []).append(thread if cpu else wall)
        return found


def bench_kernel_loop(kernel: Any, cold: float, quick: bool) -> None:
    log("[3] edit->result in a real Jupyter kernel: %%handler cell + %rp_test cell vs 2 x pass")
    load, _, _ = kernel.execute(MODEL_CELL)
    kernel.execute(handler_cell(1))
    kernel.execute(SHOWN_SETUP)
    kernel.execute("import json\n" + TIMER)
    iterations, warmup = (30, 5) if quick else (100, 10)
    timed = Inside(kernel)
    pairs = {  # variant: its two cells (the handler cell's text changes every iteration)
        "edit": ("handler", "test"),
        "floor": ("pass1", "pass2"),
        "shown": ("noop", "display"),
    }
    round_trips: dict[str, list[float]] = {cell: [] for both in pairs.values() for cell in both}
    orders = [("edit", "floor", "shown"), ("floor", "shown", "edit"), ("shown", "edit", "floor")]
    for i in range(warmup + iterations):
        k = 1 + i % 2
        codes = {
            "handler": handler_cell(k),
            "test": RP_TEST_X,
            "pass1": "pass",
            "pass2": "pass",
            "noop": NOOP_CELL,
            "display": DISPLAY_CELL,
        }
        outputs = {}
        for variant in orders[i % 3]:  # each variant first, second and third in turn
            for cell in pairs[variant]:
                elapsed, _, outputs[cell] = timed.execute(cell, codes[cell])
                if i >= warmup:
                    round_trips[cell].append(elapsed)
        record = kernel_record(outputs["test"])
        if record["status"] != "COMPLETED" or record["output"] != {"y": 6 * k}:
            raise BenchFailure(f"%rp_test in the kernel gave {record}")
        for cell in ("handler", "noop"):
            printed = "".join(m["content"].get("text", "") for m in outputs[cell])
            if "registered `handler`" not in printed:
                raise BenchFailure(
                    f"the {cell} cell printed nothing in the kernel: {outputs[cell]}"
                )
        check(kernel_record(outputs["display"])["status"] == "COMPLETED", "no run displayed")
    inside = {cell: values[warmup:] for cell, values in timed.by_variant().items()}
    cpu = {cell: values[warmup:] for cell, values in timed.by_variant(cpu=True).items()}

    def both(figures: dict[str, list[float]], variant: str) -> list[float]:
        first, second = pairs[variant]
        return [a + b for a, b in zip(figures[first], figures[second], strict=True)]

    def extra(figures: dict[str, list[float]], variant: str, base: str) -> float:
        """The median over iterations of variant - base, each pair from the same iteration."""
        return median(
            [a - b for a, b in zip(both(figures, variant), both(figures, base), strict=True)]
        )

    edits, floors, shown = (both(round_trips, v) for v in ("edit", "floor", "shown"))
    log(
        f"    model cell once {fmt_s(load)}; {iterations} iterations after {warmup} warm-up, "
        "the order of the three pairs rotating"
    )
    log(
        f"    round trips: %%handler {fmt_s(median(round_trips['handler']))}, %rp_test "
        f"{fmt_s(median(round_trips['test']))}, both {fmt_s(median(edits))} (p90 "
        f"{fmt_s(pct(edits, 90))}); 2 x pass {fmt_s(median(floors))} (p90 {fmt_s(pct(floors, 90))})"
        f"; the same outputs without nbworker {fmt_s(median(shown))}"
    )
    log(
        "    in the kernel (pre_run_cell to post_run_cell): both "
        f"{fmt_s(median(both(inside, 'edit')))}, 2 x pass {fmt_s(median(both(inside, 'floor')))}"
        f", the same outputs without nbworker {fmt_s(median(both(inside, 'shown')))}"
    )
    log(
        f"    CPU of the kernel's main thread: both {fmt_s(median(both(cpu, 'edit')))}, 2 x pass "
        f"{fmt_s(median(both(cpu, 'floor')))}, the same outputs without nbworker "
        f"{fmt_s(median(both(cpu, 'shown')))}"
    )
    ROWS.append(paired_row("3", "kernel: %%handler + %rp_test cells", edits, floors, iterations))
    ROWS.extend(
        [
            Row(
                key="3",
                what="  the same outputs without nbworker (a magic printing the line, display())",
                value=fmt_s(median(shown)),
                versus="2 x `pass` cell, median",
                versus_value=fmt_s(median(floors)),
                result="showing them adds "
                + fmt_s(extra(round_trips, "shown", "floor"), signed=True),
            ),
            Row(
                key="3",
                what="  nbworker's own share: the two cells over those outputs",
                value=fmt_s(median(edits)),
                versus="the same outputs without nbworker",
                versus_value=fmt_s(median(shown)),
                result=f"adds {fmt_s(extra(round_trips, 'edit', 'shown'), signed=True)}",
            ),
            Row(
                key="3",
                what="  in the kernel (pre_run_cell to post_run_cell): the two cells",
                value=fmt_s(median(both(inside, "edit"))),
                versus="2 x `pass`; the same outputs w/o nbworker",
                versus_value=f"{fmt_s(median(both(inside, 'floor')))}; "
                f"{fmt_s(median(both(inside, 'shown')))}",
                result=f"adds {fmt_s(extra(inside, 'edit', 'floor'), signed=True)}; "
                f"{fmt_s(extra(inside, 'edit', 'shown'), signed=True)}",
            ),
            Row(
                key="3",
                what="  CPU of the kernel's main thread in them",
                value=fmt_s(median(both(cpu, "edit"))),
                versus="2 x `pass`; the same outputs w/o nbworker",
                versus_value=f"{fmt_s(median(both(cpu, 'floor')))}; "
                f"{fmt_s(median(both(cpu, 'shown')))}",
                result=f"adds {fmt_s(extra(cpu, 'edit', 'floor'), signed=True)}; "
                f"{fmt_s(extra(cpu, 'edit', 'shown'), signed=True)}",
            ),
        ]
    )
    warm = median(edits)
    ROWS.append(
        Row(
            key="3a",
            what="  warm (3), the same loop in the kernel",
            value=fmt_s(warm),
            versus="3a cold run",
            versus_value=fmt_s(cold),
            result=f"cold/warm {cold / warm:,.0f}x (floor: {cold / median(floors):,.0f}x)",
        )
    )


# ----------------------------------------------------------------------------- 4. big output

BIG_N = 1_000_000
BIG_SETUP = f"""\
import json, random
random.seed(0)
BIG = [round(random.random(), 7) for _ in range({BIG_N})]
"""
BIG_HANDLER = '%%handler big\ndef big(job):\n    return {"vec": list(BIG)}\n'
BIG_TEST = '%rp_test big {"input": {}}'
BIG_DUMPS = 'json.dumps({"vec": BIG}) and None'
BIG_DISPLAY = (
    "from IPython.display import display\n"
    'display({"application/vnd.nbworker.bench+json": {"output": {"vec": BIG}}}, raw=True)'
)
PROFILE_BIG = f"""\
import cProfile as _cp, pstats as _ps, io as _io
_prof = _cp.Profile()
_prof.enable()
get_ipython().run_line_magic("rp_test", {BIG_TEST.split(" ", 1)[1]!r})
_prof.disable()
_text = _io.StringIO()
_ps.Stats(_prof, stream=_text).sort_stats("cumulative").print_stats(30)
print(_text.getvalue())
"""


def bench_big(kernel: Any, quick: bool, profile: bool) -> None:
    log(f"[4] %rp_test of a handler returning {BIG_N:,} floats, in the same kernel")
    random.seed(0)
    expected = [round(random.random(), 7) for _ in range(BIG_N)]
    size = len(json.dumps({"vec": expected}))
    kernel.execute(BIG_SETUP, timeout=120)
    kernel.execute(BIG_HANDLER)
    rounds, warmup = (2, 1) if quick else (5, 1)
    times: dict[str, list[float]] = {"test": [], "dumps": [], "display": [], "pass": []}
    durations: list[float] = []
    timed = Inside(kernel)
    cells = [("test", BIG_TEST), ("dumps", BIG_DUMPS), ("display", BIG_DISPLAY), ("pass", "pass")]
    for r in range(warmup + rounds):
        for key, code in cells if r % 2 == 0 else reversed(cells):
            elapsed, _, outputs = timed.execute(key, code, timeout=300)
            if key == "test":
                record = kernel_record(outputs)
                check(record["status"] == "COMPLETED", f"big run: {record['status']}")
                check(record["output"] == {"vec": expected}, "the record's output is not exact")
                shown = [m for m in outputs if m["msg_type"] in DISPLAYS][-1]["content"]
                check(len(shown["data"]["text/plain"]) < 10_000, "the text view is not bounded")
                check(len(shown["data"]["text/html"]) < 20_000, "the HTML view is not bounded")
                durations.append(record["duration_ms"] / 1000)
            if r >= warmup:
                times[key].append(elapsed)
    inside = {key: values[warmup:] for key, values in timed.by_variant().items()}
    text = json.dumps({"vec": expected})
    start = time.perf_counter()
    json.loads(text)
    parse = time.perf_counter() - start
    dumps = median(inside["dumps"])
    test, test_in = median(times["test"]), median(inside["test"])
    display_rt, display_in = median(times["display"]), median(inside["display"])
    floor = median(times["pass"])
    # The headline ratio: each round's %rp_test round trip over that round's dumps.
    ratio = median([a / b for a, b in zip(times["test"], inside["dumps"], strict=True)])
    log(
        f"    output {size / 1e6:.1f} MB of JSON; {rounds} rounds after {warmup} warm-up, "
        "interleaved: %rp_test, json.dumps, display of the same size, pass"
    )
    log(
        f"    json.dumps in the kernel {fmt_s(dumps)}; %rp_test round trip {fmt_s(test)} "
        f"({ratio:.2f}x, per round), in the kernel {fmt_s(test_in)} ({test_in / dumps:.2f}x); "
        f"the handler {fmt_s(median(durations))}"
    )
    log(
        f"    display() of a bundle that size: round trip {fmt_s(display_rt)}, in the kernel "
        f"{fmt_s(display_in)}; json.loads of it here (the client) {fmt_s(parse)}; "
        f"pass {fmt_s(floor)}"
    )
    ROWS.extend(
        [
            Row(
                key="4",
                what=f"%rp_test, {BIG_N:,} floats ({size / 1e6:.1f} MB of JSON), round trip",
                value=fmt_s(test),
                versus="one json.dumps of the output, in the kernel",
                versus_value=fmt_s(dumps),
                result=f"{ratio:.2f}x (median of per-round ratios)",
                target="< 2x",
                ok=ratio < 2,
            ),
            Row(
                key="4",
                what="  of which in the kernel (pre_run_cell to post_run_cell)",
                value=fmt_s(test_in),
                versus="  the handler alone (the record's duration)",
                versus_value=fmt_s(median(durations)),
                result=f"{test_in / dumps:.2f}x the dumps",
            ),
            Row(
                key="4",
                what="  the kernel sending a display_data of that size",
                value=fmt_s(display_rt),
                versus="  of which in the kernel (its json.dumps)",
                versus_value=fmt_s(display_in),
                result=f"{display_rt / dumps:.2f}x the dumps",
            ),
            Row(
                key="4",
                what="  the client parsing it (json.loads, this process)",
                value=fmt_s(parse),
                versus="  `pass` round trip",
                versus_value=fmt_s(floor),
                result=f"{parse / dumps:.2f}x the dumps",
            ),
        ]
    )
    if profile:
        _, _, outputs = kernel.execute(PROFILE_BIG, timeout=300)
        printed = "".join(
            m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream"
        )
        log("    cProfile of one big %rp_test in the kernel, by cumulative time:")
        log("\n".join("    " + line for line in printed.splitlines()[:60]))


# ----------------------------------------------------------------------------- main

ORDER = ["1", "2", "3", "3a", "4"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (~1 min)")
    parser.add_argument("--profile", action="store_true", help="cProfile the cells")
    args = parser.parse_args()

    started = time.perf_counter()
    workdir = setup_workdir()  # a fresh IPython profile for the shell and the kernel alike
    from importlib import metadata

    import IPython

    import nbworker

    log_banner(
        {
            "nbworker": nbworker.__version__,
            "IPython": IPython.__version__,
            "ipykernel": metadata.version("ipykernel"),
            "runpod": metadata.version("runpod"),
        },
        args.quick,
    )
    try:
        bench_run_job(args.quick)
        bench_shell(args.quick, args.profile)
        cold = bench_cold(workdir, args.quick)
        with started_kernel(workdir / "kernel.log") as kernel:
            log(f"    kernel started in {fmt_s(kernel.startup)}")
            kernel.execute("%load_ext nbworker")
            bench_kernel_loop(kernel, cold, args.quick)
            bench_big(kernel, args.quick, args.profile)
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    print_table(ROWS, ORDER, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
