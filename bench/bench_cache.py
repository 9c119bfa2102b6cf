#!/usr/bin/env python
"""Benchmark of nbworker's model cache, each figure next to what it replaces or what a user
would do instead.

    python bench/bench_cache.py           # full run, about 25 s on 2 cores
    python bench/bench_cache.py --quick   # CI-sized: fewer repetitions (the 2 s loads stay)
    python bench/bench_cache.py --profile # also cProfile the cache-hit cell (done anyway
                                          # when its median is over 0.5 ms)

1. A cache hit against the load it replaces: a `%%model encoder` cell whose load takes 2 s
   (time.sleep(2.0) + a 64 MiB torch.nn.Linear), run once, then re-run a few hundred times
   in a real IPython InteractiveShell, next to the same cell under a no-op cell magic
   (what IPython alone costs for such a cell) and a `pass` cell (target: the hit adds
   under 0.2 ms to the no-op magic, the median of paired differences); the same through
   the Python API (`ModelCache.load(name, loader, key=k)`); and in a real Jupyter kernel,
   as a user meets it (execute round trips; target: the hit cell adds under 1 ms to a
   `pass` cell, the median of paired differences).
2. Memory given back: RSS (/proc/self/statm) before a load, after it and after
   `%rp_models --evict`, for a 512 MiB numpy array and a 256 MiB torch model, with and
   without the object having been shown as a cell's value (Out[n], _n, _); against `del`
   of the same object, loaded the same way by a plain cell, in the same shell. Also the
   bytes nbworker accounted for each entry, next to the true size.
3. The cost of that accounting: `nbworker.memory.bytes_by_device` on a torch module with
   200 parameter tensors and on a list of 10,000 small numpy arrays, against summing the
   sizes by hand.

Every ratio compares figures measured in this same run. Only 127.0.0.1 is used (the
kernel's ZMQ sockets).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_core import TIMER, Inside  # each cell's time inside a kernel
from common import (
    BenchFailure,
    Kernel,
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
)

MIB = 1024**2
MODEL_SECONDS = 2.0
MODEL_BODY = (
    "import time, torch\n"
    f"time.sleep({MODEL_SECONDS})  # stands for loading weights\n"
    "encoder = torch.nn.Linear(4096, 4096)\n"
)
MODEL_CELL = f"%%model encoder\n{MODEL_BODY}"
# The floor for a hit: a cell magic that does nothing with the same body but print a line
# like the hit's. The cell costs IPython the same (transform, history, magic dispatch,
# one line of stdout), so `hit - noop` is what nbworker's %%model adds.
HIT_LINE = "encoder: cache hit, loaded 1 s ago in 2.00 s, 64.0 MiB on cpu (encoder)"
NOOP_DEFINITION = (
    "get_ipython().register_magic_function(\n"
    f"    lambda line, cell: print({HIT_LINE!r}), 'cell', 'bench_noop'\n"
    ")"
)
NOOP_CELL = f"%%bench_noop encoder\n{MODEL_BODY}"
ENCODER_BYTES = (4096 * 4096 + 4096) * 4  # float32 weight + bias: 64.0 MiB

# Section 2's objects: the same body is run by a %%model cell and by a plain cell.
ARRAY_BYTES = 512 * MIB
BIG_OBJECTS = {
    # name: (label, body, true size in bytes)
    "weights": (
        "numpy array, 512 MiB",
        f"weights = np.ones({ARRAY_BYTES // 8})",
        ARRAY_BYTES,
    ),
    "net": (
        "torch model, 4 x Linear(4096, 4096)",
        "net = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(4)])",
        4 * ENCODER_BYTES,
    ),
}


# ----------------------------------------------------------------------------- helpers


def fmt_frac(fraction: float) -> str:
    """A share in percent; rounding noise around zero (a few pages) reads 0%."""
    return f"{fraction:.0%}" if abs(fraction) >= 0.005 else "0%"


def fmt_mib(size: float, *, signed: bool = False) -> str:
    return f"{size / MIB:{'+' if signed else ''}.1f} MiB"


def paired_extra(cells: list[float], base: list[float]) -> float:
    """The median over rounds of `cells - base`, each pair measured in the same round."""
    return median([c - b for c, b in zip(cells, base, strict=True)])


def rss() -> int:
    """This process's resident set size in bytes (/proc/self/statm: pages * page size)."""
    with open("/proc/self/statm", encoding="ascii") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


ROWS: list[Row] = []


# ----------------------------------------------------------------------------- the shell


class Captured:
    """Where the shell's stdout/stderr go while the benchmark runs cells (the terminal is
    not flooded); `take()` returns what was written since the last call."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text

    @contextlib.contextmanager
    def active(self) -> Iterator[Captured]:
        with contextlib.redirect_stdout(self.buffer), contextlib.redirect_stderr(self.buffer):
            yield self


def make_shell(out: Captured) -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    with out.active():
        run_ok(shell, "%load_ext nbworker")
        run_ok(shell, "import time\nimport numpy as np\nimport torch")
        run_ok(shell, NOOP_DEFINITION)
    out.take()
    return shell


def run_ok(shell: Any, code: str) -> None:
    """Run a cell as a kernel does (store_history=True); fail the benchmark if it fails.
    Returns nothing: the ExecutionResult (which may hold the cell's value) is dropped."""
    result = shell.run_cell(code, store_history=True)
    cell_ok(result)


def session_of(shell: Any) -> Any:
    from nbworker.magics import NbworkerMagics

    magics = shell.magics_manager.registry.get(NbworkerMagics.__name__)
    check(magics is not None, "nbworker's magics are not installed")
    return magics.session


def profile_hits(shell: Any, out: Captured, n: int) -> None:
    log(f"    cProfile of {n} cache-hit cells, by cumulative time:")
    profiler = cProfile.Profile()
    with out.active():
        profiler.enable()
        for _ in range(n):
            shell.run_cell(MODEL_CELL, store_history=True)
        profiler.disable()
    out.take()
    stats = pstats.Stats(profiler)
    total = max(stats.total_tt, 1e-12)
    mine = 0.0
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        if function == "model" and filename.endswith(os.path.join("nbworker", "magics.py")):
            mine = cumulative
    log(
        f"    under the profiler: {fmt_s(total / n)} per cell, of which nbworker's %%model "
        f"magic {fmt_s(mine / n)} ({mine / total:.0%}); the rest is IPython's cell machinery"
    )
    log(stats_text(profiler, "cumulative", 24))
    log("    nbworker's own functions in those cells, by cumulative time:")
    lines = stats_text(profiler, "cumulative", r"/nbworker/", 12).splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    log("\n".join(lines[start:]))


# ----------------------------------------------------------------------------- 1. hits


def bench_hit_shell(shell: Any, out: Captured, quick: bool, profile: bool) -> float:
    import torch

    log("[1] %%model cell: first run (the load) vs re-runs (cache hits), IPython InteractiveShell")
    session = session_of(shell)
    check(session.cache.peek("encoder") is None, "the cache already holds 'encoder'")
    with out.active():
        start = time.perf_counter()
        result = shell.run_cell(MODEL_CELL, store_history=True)
        load = time.perf_counter() - start
    cell_ok(result)
    del result
    text = out.take()
    check(text.startswith("encoder: loaded in "), f"first run printed {text!r}")
    entry = session.cache.peek("encoder")
    check(entry is not None and entry.load_seconds >= MODEL_SECONDS, f"bad entry {entry!r}")
    # The entry holds what the cell bound: `encoder` and (by nbworker's version) the modules
    # it imports, which are not data.
    check(entry.names == ["encoder"], f"the cell bound {list(entry.objects)}")
    encoder = shell.user_ns["encoder"]
    check(isinstance(encoder, torch.nn.Linear), f"encoder is a {type(encoder).__name__}")
    check(entry.memory == {"cpu": ENCODER_BYTES}, f"accounted {entry.memory}")
    log(f"    first run: {fmt_s(load)} ({text.strip()})")

    def hit_ok(result: Any) -> None:
        if result is not None:  # run_cell's ExecutionResult; the direct magic returns None
            cell_ok(result)
        printed = out.take()
        if not (printed.startswith("encoder: cache hit, loaded ") and printed.count("\n") == 1):
            raise BenchFailure(f"a re-run printed {printed!r}, not one 'cache hit' line")
        # The hit must bind the name again: unbind it (outside the timed region) each time.
        if shell.user_ns.pop("encoder", None) is not encoder:
            raise BenchFailure("a cache hit did not bind `encoder` to the cached model")

    def pass_ok(result: Any) -> None:
        cell_ok(result)
        printed = out.take()
        if printed:
            raise BenchFailure(f"`pass` printed {printed!r}")

    def noop_ok(result: Any) -> None:
        cell_ok(result)
        printed = out.take()
        if printed != HIT_LINE + "\n":
            raise BenchFailure(f"the no-op cell magic printed {printed!r}")

    shell.user_ns.pop("encoder")
    # Interleaved cell by cell: the tails (history writer, gc) then fall on all alike. The
    # magic alone is timed apart: IPython's history thread writes each cell to SQLite after
    # it ran, and a cell run right after a 40 µs call would wait for the previous cell's
    # write, which one run after another cell has mostly finished.
    n = 100 if quick else 200
    hits_before = entry.hits
    with out.active():
        times = sample(
            {
                "hit": lambda: shell.run_cell(MODEL_CELL, store_history=True),
                "noop": lambda: shell.run_cell(NOOP_CELL, store_history=True),
                "pass": lambda: shell.run_cell("pass", store_history=True),
            },
            rounds=n,
            per_round=1,
            warmup=10,
            gc_off=False,
            checks={"hit": hit_ok, "pass": pass_ok, "noop": noop_ok},
        )
        times.update(
            sample(
                {"magic": lambda: shell.run_cell_magic("model", "encoder", MODEL_BODY)},
                rounds=1,
                per_round=n,
                warmup=10,
                gc_off=False,
                checks={"magic": hit_ok},
            )
        )
    check(entry.hits - hits_before == 2 * (n + 10), f"{entry.hits - hits_before} hits counted")
    check(session.cache.peek("encoder") is entry, "the entry was replaced during the hits")
    shell.user_ns["encoder"] = encoder
    hit, hit90 = median(times["hit"]), pct(times["hit"], 90)
    noop, floor, magic = median(times["noop"]), median(times["pass"]), median(times["magic"])
    log(f"    {n} re-runs, store_history=True, gc enabled, stdout captured, interleaved cell by")
    log("    cell with the same cell under a no-op cell magic printing one line (%%bench_noop)")
    log("    and a `pass` cell (IPython's floor); then the %%model magic alone, n times")
    for key, label in (
        ("hit", "%%model cell (hit)"),
        ("noop", "%%bench_noop cell"),
        ("pass", "`pass` cell"),
        ("magic", "run_cell_magic('model')"),
    ):
        log(
            f"    {label:<24} median {fmt_s(median(times[key]))}  p90 "
            f"{fmt_s(pct(times[key], 90))}  p99 {fmt_s(pct(times[key], 99))}"
        )
    log(
        f"    load {fmt_s(load)}, load/hit {load / hit:,.0f}x; the hit cell costs "
        f"{fmt_s(hit - noop, signed=True)} over the no-op cell magic, "
        f"{fmt_s(hit - floor, signed=True)} over `pass`"
    )
    over_noop = paired_extra(times["hit"], times["noop"])
    over_pass = paired_extra(times["hit"], times["pass"])
    ROWS.extend(
        [
            Row(
                "1",
                f"%%model cell, cache hit, median of {n}",
                fmt_s(hit),
                "no-op cell magic, same body, median",
                fmt_s(noop),
                f"nbworker adds {fmt_s(over_noop, signed=True)} (paired median)",
                "adds < 0.2 ms",
                over_noop < 0.2e-3,
            ),
            Row(
                "1",
                "  same, p90",
                fmt_s(hit90),
                "no-op cell magic, same body, p90",
                fmt_s(pct(times["noop"], 90)),
                f"load/p90 {load / hit90:,.0f}x",
            ),
            Row(
                "1",
                "  the %%model magic alone (run_cell_magic), median",
                fmt_s(magic),
                "first run: the 2 s load it replaces",
                fmt_s(load),
                f"load/hit {load / hit:,.0f}x",
            ),
            Row(
                "1",
                "",
                "",
                "cell `pass` (IPython's floor), median",
                fmt_s(floor),
                f"hit - pass {fmt_s(over_pass, signed=True)} (paired)",
            ),
        ]
    )
    if profile or hit > 0.5e-3:
        profile_hits(shell, out, 100 if quick else 300)
    return load


def bench_hit_api(quick: bool) -> None:
    import torch

    from nbworker.cache import ModelCache

    log("[1a] Python API: ModelCache.load(name, loader, key=k), first call vs hits")
    cache = ModelCache()
    key = "sha256-of-the-weights"

    def loader() -> Any:
        time.sleep(MODEL_SECONDS)  # stands for loading weights
        return torch.nn.Linear(4096, 4096)

    start = time.perf_counter()
    encoder = cache.load("encoder", loader, key=key)
    load = time.perf_counter() - start
    check(isinstance(encoder, torch.nn.Linear), f"load returned {encoder!r}")
    check(cache.peek("encoder").memory == {"cpu": ENCODER_BYTES}, "wrong accounting")
    namespace: dict[str, Any] = {"encoder": encoder}

    def guarded() -> Any:
        # What a script does without a cache: keep it in a global, load if missing.
        model = namespace.get("encoder")
        if model is None:
            model = namespace["encoder"] = loader()
        return model

    def same(result: Any) -> None:
        if result is not encoder:
            raise BenchFailure(f"got {result!r}, not the cached model")

    rounds, per_round = (5, 1000) if quick else (10, 2000)
    n = rounds * per_round
    times = sample(
        {
            "load": lambda: cache.load("encoder", loader, key=key),
            "get": lambda: cache.get("encoder"),
            "guard": guarded,
        },
        rounds=rounds,
        per_round=per_round,
        warmup=500,
        gc_off=True,
        checks={"load": same, "get": same, "guard": same},
    )
    check(cache.peek("encoder").hits == 2 * (n + 500), "hits were not all hits")
    hit, guard, get = median(times["load"]), median(times["guard"]), median(times["get"])
    log(f"    {n} calls each, gc disabled while timing")
    log(
        f"    first load {fmt_s(load)} | ModelCache.load hit median {fmt_s(hit)} p90 "
        f"{fmt_s(pct(times['load'], 90))} | ModelCache.get median {fmt_s(get)} | "
        f"`if 'encoder' not in globals()` guard median {fmt_s(guard)}"
    )
    ROWS.extend(
        [
            Row(
                "1a",
                f"ModelCache.load(name, loader, key=k) hit, median of {n}",
                fmt_s(hit),
                "first call: the 2 s load",
                fmt_s(load),
                f"load/hit {load / hit:,.0f}x",
            ),
            Row(
                "1a",
                "  ModelCache.get(name), median",
                fmt_s(get),
                "a global + `if missing: load()`",
                fmt_s(guard),
                f"load hit/guard {hit / guard:,.0f}x",
            ),
        ]
    )
    cache.clear()


def execute(kernel: Kernel, code: str, timeout: float = 60) -> tuple[float, str]:
    """A timed execute round trip in `kernel`: seconds, and the text the cell wrote to
    stdout."""
    elapsed, _, outputs = kernel.execute(code, timeout)
    stdout = [
        m["content"]["text"]
        for m in outputs
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    ]
    return elapsed, "".join(stdout)


def bench_hit_kernel(workdir: Path, quick: bool) -> None:
    log("[1k] the same %%model cell in a real Jupyter kernel (execute round trips)")
    with started_kernel(workdir / "kernel.log") as kernel:
        execute(kernel, "%load_ext nbworker")
        execute(kernel, NOOP_DEFINITION)
        imported, _ = execute(kernel, "import time, torch", timeout=120)
        load, text = execute(kernel, MODEL_CELL, timeout=120)
        check(text.startswith("encoder: loaded in "), f"first run printed {text!r} in the kernel")
        log(
            f"    kernel started in {fmt_s(kernel.startup)}; `import time, torch` "
            f"{fmt_s(imported)} (a cell of its own, not part of the load)"
        )
        n, warmup = (30, 5) if quick else (80, 10)
        hits: list[float] = []
        noops: list[float] = []
        floors: list[float] = []
        cells = [("hit", MODEL_CELL, hits), ("noop", NOOP_CELL, noops), ("pass", "pass", floors)]
        execute(kernel, "import json\n" + TIMER)  # each cell's CPU time in the kernel
        timed = Inside(kernel)
        # Interleaved cell by cell, so a burst of load on the machine hits all three alike;
        # the order rotates, so that none always runs first or after the same one.
        for i in range(warmup + n):
            for name, code, times in cells[i % 3 :] + cells[: i % 3]:
                elapsed, _, outputs = timed.execute(name, code)
                text = "".join(
                    m["content"]["text"]
                    for m in outputs
                    if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
                )
                if code is MODEL_CELL and not text.startswith("encoder: cache hit, loaded "):
                    raise BenchFailure(f"a re-run printed {text!r} in the kernel")
                if code is NOOP_CELL and text != HIT_LINE + "\n":
                    raise BenchFailure(f"the no-op magic printed {text!r} in the kernel")
                if code == "pass" and text:
                    raise BenchFailure(f"`pass` printed {text!r} in the kernel")
                if i >= warmup:
                    times.append(elapsed)
        cpu = {name: values[warmup:] for name, values in timed.by_variant(cpu=True).items()}
        _, text = execute(kernel, "print(encoder.weight.shape)")
        check("torch.Size([4096, 4096])" in text, f"the kernel's encoder: {text!r}")
    hit, noop, floor = median(hits), median(noops), median(floors)
    cpu_over_pass = paired_extra(cpu["hit"], cpu["pass"])
    cpu_over_noop = paired_extra(cpu["hit"], cpu["noop"])
    log(
        f"    CPU of the kernel's main thread (pre_run_cell to post_run_cell): hit "
        f"{fmt_s(median(cpu['hit']))}, no-op {fmt_s(median(cpu['noop']))}, pass "
        f"{fmt_s(median(cpu['pass']))}"
    )
    log(
        f"    {n} round trips each, interleaved cell by cell after {warmup} warm-up rounds; "
        "kernel shut down"
    )
    for label, times in (
        ("%%model cell (hit)", hits),
        ("%%bench_noop cell", noops),
        ("`pass` cell", floors),
    ):
        log(f"    {label:<24} median {fmt_s(median(times))}  p90 {fmt_s(pct(times, 90))}")
    log(f"    first run (the load) {fmt_s(load)}, load/hit {load / hit:,.0f}x")
    over_pass, over_noop = paired_extra(hits, floors), paired_extra(hits, noops)
    ROWS.extend(
        [
            Row(
                "1k",
                f"%%model cell hit, Jupyter kernel round trip, median of {n}",
                fmt_s(hit),
                "cell `pass` round trip (floor), median",
                fmt_s(floor),
                f"nbworker adds {fmt_s(over_pass, signed=True)} (paired median)",
                "adds < 1 ms",
                over_pass < 1e-3,
            ),
            Row(
                "1k",
                "  same, p90",
                fmt_s(pct(hits, 90)),
                "no-op cell magic, same body, median",
                fmt_s(noop),
                f"hit - no-op {fmt_s(over_noop, signed=True)} (paired)",
            ),
            Row(
                "1k",
                "  CPU of the kernel's main thread in the hit cell",
                fmt_s(median(cpu["hit"])),
                "`pass`; no-op cell magic, same body",
                f"{fmt_s(median(cpu['pass']))}; {fmt_s(median(cpu['noop']))}",
                f"adds {fmt_s(cpu_over_pass, signed=True)}; {fmt_s(cpu_over_noop, signed=True)}",
            ),
            Row(
                "1k",
                "",
                "",
                "first run in the kernel (the load)",
                fmt_s(load),
                f"load/hit {load / hit:,.0f}x",
            ),
        ]
    )


# ----------------------------------------------------------------------------- 2. memory


def true_size(shell: Any, name: str) -> int:
    """Bytes of the object `name` in the user namespace: array.nbytes, or the parameters
    and buffers of a torch module (numel * element_size)."""
    obj = shell.user_ns[name]
    if hasattr(obj, "parameters"):
        tensors = [*obj.parameters(), *obj.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)
    return int(obj.nbytes)


@dataclass
class Trace:
    """RSS at each step of one scenario."""

    label: str
    steps: list[tuple[str, int]]

    def at(self, step: str) -> int:
        return dict(self.steps)[step]

    def returned(self, step: str, loaded: str = "loaded") -> float:
        """Fraction of the load's RSS growth given back by `step`."""
        grown = self.at(loaded) - self.at("before")
        return (self.at(loaded) - self.at(step)) / grown if grown > 0 else float("nan")

    def line(self) -> str:
        base = self.at("before")
        parts = [f"before {fmt_mib(base)}"]
        parts += [f"{step} {fmt_mib(value - base, signed=True)}" for step, value in self.steps[1:]]
        return f"    {self.label:<50} " + ", ".join(parts)


def bench_memory(shell: Any, out: Captured) -> None:
    log("[2] memory given back: RSS of this process (/proc/self/statm), same InteractiveShell")
    session = session_of(shell)
    cache = session.cache
    traces: list[tuple[str, Trace, Trace, Trace, Trace, int, int]] = []
    for name, (label, body, expected) in BIG_OBJECTS.items():
        model_cell = f"%%model {name}\n{body}\n"
        evict_cell = f"%rp_models --evict {name}"
        with out.active():
            # a. nbworker: load with %%model, evict; the object was never a cell's value.
            a = Trace("%%model, then --evict", [("before", rss())])
            run_ok(shell, model_cell)
            a.steps.append(("loaded", rss()))
            loaded_line = out.take().strip()
            entry = cache.peek(name)
            check(entry is not None and entry.names == [name], f"entry {entry!r}")
            accounted = entry.total_bytes
            actual = true_size(shell, name)
            del entry
            check(actual == expected, f"{name} holds {actual} bytes, expected {expected}")
            run_ok(shell, evict_cell)
            a.steps.append(("evicted", rss()))
            evict_a = out.take().strip()

            # b. nbworker: load, show it as a cell's value (Out[n], _n, _), then evict.
            b = Trace("%%model, cell `NAME` (Out[n]), then --evict", [("before", rss())])
            run_ok(shell, model_cell)
            b.steps.append(("loaded", rss()))
            out.take()
            run_ok(shell, name)
            check(shell.user_ns["_"] is shell.user_ns[name], f"`{name}` was not shown as Out")
            shown = out.take()
            check(shown.startswith("Out["), f"the value cell printed {shown[:80]!r}")
            run_ok(shell, evict_cell)
            b.steps.append(("evicted", rss()))
            evict_b = out.take().strip()

            # c. the naive way: a plain cell, then `del`; never shown.
            c = Trace("plain cell, then `del NAME`", [("before", rss())])
            run_ok(shell, body)
            c.steps.append(("loaded", rss()))
            run_ok(shell, f"del {name}")
            c.steps.append(("del", rss()))

            # d. the naive way after showing it: `del` leaves Out[n], _n, _ holding it.
            d = Trace("plain cell, cell `NAME` (Out[n]), then `del NAME`", [("before", rss())])
            run_ok(shell, body)
            d.steps.append(("loaded", rss()))
            run_ok(shell, name)
            check(shell.user_ns["_"] is shell.user_ns[name], f"`{name}` was not shown as Out")
            run_ok(shell, f"del {name}")
            d.steps.append(("del", rss()))
            run_ok(shell, "%reset -f out")  # what a user who knows about Out would try next
            d.steps.append(("%reset -f out", rss()))
            run_ok(shell, "%reset -f")  # everything goes (the nbworker cache stays)
            run_ok(shell, "import time\nimport numpy as np\nimport torch")
            d.steps.append(("%reset -f", rss()))
            out.take()
        check(cache.peek(name) is None, f"{name} is still cached after --evict")
        check(
            d.at("before") - d.at("%reset -f") > -0.1 * expected,
            f"RSS did not come back after %reset -f ({label}): later figures would be wrong",
        )
        for trace in (a, b, c, d):
            grown = trace.at("loaded") - trace.at("before")
            check(grown > 0.9 * expected, f"{trace.label}: RSS grew by {grown} for {expected}")
        log(
            f"  {label} ({name}): true size {fmt_mib(actual)}, nbworker accounted "
            f"{fmt_mib(accounted)}"
        )
        log(f"    load: {loaded_line}")
        log(f"    evict (never shown): {evict_a}")
        log(f"    evict (shown as Out): {evict_b}")
        for trace in (a, b, c, d):
            log(trace.line())
        traces.append((label, a, b, c, d, accounted, actual))

    for label, a, b, c, d, accounted, actual in traces:
        short = label.split(",")[0]

        def freed(trace: Trace, step: str) -> str:
            gone = trace.at("loaded") - trace.at(step)
            return f"{fmt_frac(trace.returned(step))} ({fmt_mib(gone)})"

        more = (b.at("loaded") - b.at("evicted")) - (d.at("loaded") - d.at("del"))
        ROWS.extend(
            [
                Row(
                    "2",
                    f"{short}: evict after shown as Out[n], RSS returned",
                    freed(b, "evicted"),
                    "`del NAME` after shown as Out[n]",
                    freed(d, "del"),
                    f"evict returns {fmt_mib(more)} more",
                    ">= 90% returned",
                    b.returned("evicted") >= 0.9,
                ),
                Row(
                    "2",
                    "",
                    "",
                    "  then `%reset -f out`; then `%reset -f`",
                    f"{fmt_frac(d.returned('%reset -f out'))}; {fmt_frac(d.returned('%reset -f'))}",
                    "only a full reset frees it",
                ),
                Row(
                    "2",
                    f"{short}: evict, never shown, RSS returned",
                    freed(a, "evicted"),
                    "`del NAME`, never shown",
                    freed(c, "del"),
                    "",
                    ">= 90% returned",
                    a.returned("evicted") >= 0.9,
                ),
                Row(
                    "2",
                    f"{short}: bytes nbworker accounted for the entry",
                    fmt_mib(accounted),
                    "true size",
                    fmt_mib(actual),
                    "exact" if accounted == actual else f"{accounted / actual - 1:+.2%}",
                    "= true size",
                    accounted == actual,
                ),
            ]
        )


# ----------------------------------------------------------------------------- 3. accounting


def bench_accounting(quick: bool) -> None:
    import numpy as np
    import torch

    from nbworker.memory import bytes_by_device

    log("[3] accounting speed: nbworker.memory.bytes_by_device([obj])")
    module = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(100)])
    parameters = list(module.parameters())
    check(len(parameters) == 200, f"{len(parameters)} parameter tensors")
    arrays = [np.ones(16) for _ in range(10_000)]

    def module_by_hand() -> int:
        tensors = [*module.parameters(), *module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def arrays_by_hand() -> int:
        return sum(a.nbytes for a in arrays)

    module_bytes, array_bytes = module_by_hand(), arrays_by_hand()
    check(bytes_by_device([module]) == {"cpu": module_bytes}, "module accounted wrongly")
    check(bytes_by_device([arrays]) == {"cpu": array_bytes}, "arrays accounted wrongly")

    def expect(value: Any) -> Callable[[Any], None]:
        def verify(result: Any) -> None:
            if result != value:
                raise BenchFailure(f"got {result!r}, expected {value!r}")

        return verify

    rounds, per_round = (3, 10) if quick else (5, 20)
    n = rounds * per_round
    times = sample(
        {
            "module": lambda: bytes_by_device([module]),
            "module by hand": module_by_hand,
            "arrays": lambda: bytes_by_device([arrays]),
            "arrays by hand": arrays_by_hand,
        },
        rounds=rounds,
        per_round=per_round,
        warmup=3,
        gc_off=True,
        checks={
            "module": expect({"cpu": module_bytes}),
            "module by hand": expect(module_bytes),
            "arrays": expect({"cpu": array_bytes}),
            "arrays by hand": expect(array_bytes),
        },
    )
    log(f"    {n} calls each, gc disabled while timing")
    for key, label, hand_label in (
        ("module", "torch module, 200 parameter tensors", "sum(p.numel() * p.element_size())"),
        ("arrays", "list of 10,000 numpy arrays (16 floats)", "sum(a.nbytes for a in arrays)"),
    ):
        med, hand = median(times[key]), median(times[f"{key} by hand"])
        log(
            f"    {label:<42} bytes_by_device median {fmt_s(med)} p90 "
            f"{fmt_s(pct(times[key], 90))} | by hand median {fmt_s(hand)}"
        )
        ROWS.append(
            Row(
                "3",
                f"bytes_by_device: {label}, median",
                fmt_s(med),
                hand_label,
                fmt_s(hand),
                f"{med / hand:,.1f}x; {med / MODEL_SECONDS:.3%} of a 2 s load",
            )
        )


# ----------------------------------------------------------------------------- table


ORDER = ["1", "1a", "1k", "2", "3"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--profile", action="store_true", help="cProfile the cache-hit cell")
    args = parser.parse_args()

    started = time.perf_counter()
    # A fresh IPython profile (history database) for the shell and the kernel alike.
    workdir = setup_workdir()
    from importlib import metadata

    import IPython
    import numpy
    import torch

    import nbworker

    log_banner(
        {
            "nbworker": nbworker.__version__,
            "IPython": IPython.__version__,
            "ipykernel": metadata.version("ipykernel"),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        },
        args.quick,
    )
    out = Captured()
    try:
        shell = make_shell(out)
        bench_hit_shell(shell, out, args.quick, args.profile)
        bench_hit_api(args.quick)
        bench_hit_kernel(workdir, args.quick)
        bench_memory(shell, out)
        bench_accounting(args.quick)
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    print_table(ROWS, ORDER, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
