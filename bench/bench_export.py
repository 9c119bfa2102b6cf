#!/usr/bin/env python
"""Benchmark of `nbworker export` and of the command line's start-up, each figure next to
its floor or to what it would cost otherwise.

    python bench/bench_export.py           # full run, about 2 min on 2 cores
    python bench/bench_export.py --quick   # fewer repetitions, about 1 min
    python bench/bench_export.py --profile # also cProfile build_worker on the largest
                                           # notebook (done anyway when the growth from
                                           # the second largest is clearly super-linear)
    python bench/bench_export.py --sizes 10,100,1000,3000   # other notebook sizes (the
                                           # 1000-cell one is made anyway: the CLI's)

1. Export time of generated notebooks of 10, 100 and 1000 cells (a realistic mix: imports,
   helper functions calling earlier helpers, exploration cells the handler does not need,
   markdown, a `%%model` cell, a `%%handler` cell and `%rp_test` cells with their recorded
   runs): `nbworker.export.build_worker(nb)` (pure, nothing written) and
   `nbworker.export_notebook(path, dir)` (reads the file, writes the worker), median per
   export, per cell, and the growth from one size to the next (t ~ n^k). Next to them the
   stages of the export timed alone (reading and validating the file, reading the cells,
   the secrets scan, tracing the cells the handler needs, writing the notebook copy), to
   say which one grows how, and `nbformat.read(path)`, what reading it with nbformat costs.
2. Start-up of the command line: a whole `nbworker export` of the 1000-cell notebook in a
   subprocess (target: < 0.5 s), next to the same export in-process (warm) and `python -c
   pass` (the interpreter's floor), split in phases in a fresh process; `nbworker --help`
   and `--version`, next to `python -c "import IPython"` and `"import nbformat"` (what
   eager imports would cost). Checked: `--help` imports none of IPython, nbformat, runpod,
   ipykernel, jupyter_client, papermill or nbworker.export; the export none of nbformat,
   jsonschema, rfc3987_syntax, papermill or runpod.

Every ratio compares figures measured in this same run. Nothing touches the network;
files go to a temporary directory, removed at exit.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    RECORD_MIMETYPE,
    BenchFailure,
    Row,
    check,
    fmt_s,
    log,
    log_banner,
    median,
    paired,
    pct,
    print_table,
    sample,
    setup_workdir,
    stats_text,
    timed_run,
)

TABLE_SIZE = 20
# Modules `nbworker --help` must not import: each costs tens of ms to seconds.
HEAVY_MODULES = (
    "IPython",
    "nbformat",
    "runpod",
    "ipykernel",
    "jupyter_client",
    "papermill",
    "nbworker.export",
)


# ----------------------------------------------------------------------------- helpers


def exponent(n1: int, t1: float, n2: int, t2: float) -> float:
    """k in t ~ n^k between two sizes."""
    return math.log(t2 / t1) / math.log(n2 / n1)


def growth_verdict(k: float) -> str:
    if k < 0.85:
        return "sub-linear (fixed costs weigh at the smaller size)"
    if k < 1.15:
        return "~linear"
    if k < 1.5:
        return "somewhat super-linear"
    return "super-linear (k = 2 is quadratic)"


ROWS: list[Row] = []


# ----------------------------------------------------------------------------- notebooks


@dataclass
class Generated:
    """A generated notebook and what its export must give."""

    cells: int
    notebook: Any
    taken: set[int]  # cell indices handler.py must hold
    helpers: int
    recorded: int  # %rp_test cells with a recorded run
    completed: list[tuple[dict[str, Any], Any]]  # (job, output) of the COMPLETED runs


def helper_cell(i: int) -> str:
    """`helper_i`: the first two stand alone; the others call helper_{i-2}, so the helpers
    form two chains (even and odd) and the handler needs only part of them."""
    if i < 2:
        body = f"    return x + {i + 1}"
    elif i % 5 == 3:
        body = f"    y = helper_{i - 2}(x)\n    return len(json.dumps([y])) + y"
    elif i % 5 == 4:
        body = f"    return math.isqrt(abs(helper_{i - 2}(x))) + {i % 7}"
    else:
        body = f"    return helper_{i - 2}(x) + {i % 7}"
    return f'def helper_{i}(x):\n    """Step {i} of the pipeline."""\n{body}'


def make_notebook(n_cells: int) -> Generated:
    """A notebook of exactly `n_cells` cells, in the order a user would write them:

    markdown title, `%load_ext nbworker`, imports (`import json`, `import math`), the
    `%%model m` cell (binds TABLE and SCALE), then a repeating mix of helper cells (2 in
    5), exploration cells the handler does not need (2 in 5: a bare expression, or a
    `probe_k = [...]` binding nothing else uses) and markdown (1 in 5), then the `%%handler`
    cell (uses TABLE, SCALE, the last even helper and helper_1) and `%rp_test` cells (1 in
    20 of all cells, at least 2) whose runs are recorded as nbworker records them: each
    job really run by the handler through `nbworker.Session.run_job` and shown with
    `nbworker.display.run_bundle`; the last one FAILS (bad input).
    """
    from nbformat import v4

    import nbworker
    from nbworker import display

    recorded = max(2, n_cells // 20)
    filler = n_cells - 5 - recorded
    check(filler >= 3, f"{n_cells} cells is too few for the mix")
    table = "{" + ", ".join(f'"k{j}": {j * j}' for j in range(TABLE_SIZE)) + "}"
    model_body = f"TABLE = {table}\nSCALE = math.isqrt(len(TABLE))"
    cells = [
        v4.new_markdown_cell(f"# Generated worker ({n_cells} cells)\n\nFor the benchmark."),
        v4.new_code_cell("%load_ext nbworker"),
        v4.new_code_cell("import json\nimport math"),
        v4.new_code_cell(f"%%model m\n{model_body}"),
    ]
    code = ["import json\nimport math", model_body]  # what the notebook runs, as Python
    helper_index: dict[int, int] = {}  # helper number -> cell index
    pattern = ("helper", "explore", "helper", "markdown", "explore")
    helpers = probes = 0
    for k in range(filler):
        kind = pattern[k % len(pattern)]
        if kind == "helper":
            source = helper_cell(helpers)
            helper_index[helpers] = len(cells)
            cells.append(v4.new_code_cell(source))
            code.append(source)
            helpers += 1
        elif kind == "explore":
            latest = max(helpers - 1, 0)
            if probes % 2:
                source = f"probe_{probes} = [helper_{latest}(x) for x in range(3)]\nprobe_{probes}"
            else:
                source = f'helper_{latest}(3) + TABLE["k2"] * SCALE'
            cells.append(v4.new_code_cell(source))
            probes += 1
        else:
            cells.append(v4.new_markdown_cell(f"## Part {k // len(pattern) + 1}\n\nNotes."))
    last_even = helpers - 1 if (helpers - 1) % 2 == 0 else helpers - 2
    handler_body = (
        "def handler(job):\n"
        '    x = int(job["input"]["x"])\n'
        '    key = job["input"].get("key", "k1")\n'
        f'    return {{"y": helper_{last_even}(x) + helper_1(x) + TABLE[key] * SCALE}}'
    )
    handler_index = len(cells)
    cells.append(v4.new_code_cell(f"%%handler\n{handler_body}"))
    code.append(handler_body)

    namespace: dict[str, Any] = {}
    exec(compile("\n\n".join(code), "<generated notebook>", "exec"), namespace)
    session = nbworker.Session()
    session.register_handler(namespace["handler"])
    completed = []
    try:
        for j in range(recorded):
            job_input: dict[str, Any] = (
                {"x": j, "key": f"k{j % TABLE_SIZE}"} if j < recorded - 1 else {"x": "oops"}
            )
            cell = v4.new_code_cell(f"%rp_test {json.dumps({'input': job_input})}")
            run = session.run_job({"input": job_input})
            expected = "COMPLETED" if j < recorded - 1 else "FAILED"
            check(run.status == expected, f"recording run {j}: {run!r}")
            if run.status == "COMPLETED":
                completed.append(({"input": job_input}, run.output))
            bundle = display.run_bundle(run)
            check(RECORD_MIMETYPE in bundle, f"no {RECORD_MIMETYPE} in {list(bundle)}")
            cell.outputs = [v4.new_output("display_data", data=bundle)]
            cell.execution_count = len(cells) + 1
            cells.append(cell)
    finally:
        session.close()
    notebook = v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    check(len(notebook.cells) == n_cells, f"{len(notebook.cells)} cells, wanted {n_cells}")

    # The cells handler.py must hold: imports, model, handler, and the helpers on the
    # even chain from the last even helper down, plus helper_1 (the odd chain's start).
    needed = {1} | set(range(last_even, -1, -2))
    taken = {2, 3, handler_index} | {helper_index[i] for i in needed}
    return Generated(n_cells, notebook, taken, helpers, recorded, completed)


EXPECTED_FILES = {
    "handler.py",
    "requirements.txt",
    "Dockerfile",
    "test_input.json",
    ".runpod/tests.json",
    "tests/cases.json",
    "tests/compare.py",
    "tests/test_handler.py",
    "tests/test_notebook.py",
    "tests/requirements.txt",
    ".runpod/hub.json",  # issue 16: what RunPod builds and the Hub lists, as it is
    "README.md",
    ".github/workflows/test.yml",
    ".gitignore",
}


def check_report(report: Any, gen: Generated, notebook_name: str) -> None:
    """The export of `gen` is what it must be: its files, the cells taken, and a handler.py
    that gives the recorded outputs."""
    files = set(report.files)
    wanted = EXPECTED_FILES | {f"tests/{notebook_name}"}
    check(files == wanted, f"files {sorted(files)}, expected {sorted(wanted)}")
    check(report.handler == "handler", f"exported handler {report.handler!r}")
    taken = {index for index, _, is_taken, _ in report.cells if is_taken}
    check(
        taken == gen.taken,
        f"{gen.cells} cells: took {sorted(taken - gen.taken)} too many, "
        f"missed {sorted(gen.taken - taken)}",
    )
    cases = json.loads(report.files["tests/cases.json"])["cases"]
    check(len(cases) == gen.recorded, f"{len(cases)} cases for {gen.recorded} recorded runs")
    namespace: dict[str, Any] = {"__name__": "exported_handler"}
    exec(compile(report.files["handler.py"], "handler.py", "exec"), namespace)
    for job, output in gen.completed:
        got = namespace["handler"](dict(job, id="check"))
        check(got == output, f"handler.py gave {got!r} for {job}, the notebook {output!r}")


# ----------------------------------------------------------------------------- 1. export


def files_written(count: int) -> Callable[[Any], None]:
    """A check of an export_notebook report: it wrote `count` files."""

    def verify(done: Any) -> None:
        written = done.written.written
        check(len(written) == count, f"wrote {written}, expected {count} files")

    return verify


def bench_export(
    generated: dict[int, Generated], paths: dict[int, Path], workdir: Path, quick: bool
) -> dict[int, float]:
    import nbformat

    from nbworker.export import build_worker, export_notebook, ipynb
    from nbworker.export.cells import RECORD_MIMETYPE as NBWORKER_MIMETYPE
    from nbworker.export.cells import read_cells
    from nbworker.export.secrets import find_secrets
    from nbworker.export.select import select_cells

    check(NBWORKER_MIMETYPE == RECORD_MIMETYPE, f"nbworker records {NBWORKER_MIMETYPE}")
    log("[1] export time of generated notebooks (median per export; gc enabled)")
    sizes = sorted(generated)
    build: dict[int, float] = {}
    export: dict[int, float] = {}
    results: dict[int, dict[str, list[float]]] = {}
    stages: dict[int, dict[str, Callable[[], Any]]] = {}
    for n in sizes:
        gen, path = generated[n], paths[n]
        nb = gen.notebook
        check_report(build_worker(nb), gen, "notebook.ipynb")  # build_worker's default name
        target = workdir / f"check-{n}"
        report = export_notebook(path, target)
        check_report(report, gen, path.name)
        on_disk = {
            str(p.relative_to(target)): p.read_text(encoding="utf-8")
            for p in target.rglob("*")
            if p.is_file() and p.name != ".nbworker-export.json"
        }
        check(on_disk == report.files, f"export_notebook wrote {sorted(on_disk)}")

        fresh = workdir / f"fresh-{n}"
        counter = iter(range(1_000_000))
        again = workdir / f"again-{n}"
        export_notebook(path, again)
        cells = read_cells(nb)
        sources = [(cell.index, cell.source) for cell in cells]

        def new_dir(fresh: Path = fresh, counter: Any = counter, path: Path = path) -> Any:
            return export_notebook(path, fresh / str(next(counter)))

        def same_dir(again: Path = again, path: Path = path) -> Any:
            return export_notebook(path, again)

        # Sizes: about the same total time per size, at least 5 rounds.
        rounds = {10: 40, 100: 15}.get(n, 5 if n <= 1000 else 3)
        if quick:
            rounds = max(3, rounds // 3)
        data = path.read_bytes()
        stages[n] = {
            # what export does to read the file: JSON, lines joined, nbformat's schema
            "ipynb.loads + schema": lambda data=data: ipynb.schema_problem(ipynb.loads(data)),
            "read_cells": lambda nb=nb: read_cells(nb),
            "find_secrets": lambda sources=sources: find_secrets(sources),
            "select_cells": lambda cells=cells: select_cells(cells),
            "ipynb.dumps": lambda nb=nb: ipynb.dumps(nb),  # as the copy in tests/ is written
        }
        times = sample(
            {
                "build_worker": lambda nb=nb: build_worker(nb),
                "export_notebook": new_dir,
                "export_notebook again": same_dir,
                "nbformat.read": lambda path=path: nbformat.read(path, as_version=4),
                **stages[n],
            },
            rounds=rounds,
            per_round=1,
            warmup=1,
            gc_off=False,  # an export allocates: collecting is part of its cost
            checks={
                "build_worker": lambda r: check(r.handler == "handler", "wrong handler"),
                # 11 worker files + the manifest, then nothing (all unchanged).
                "export_notebook": files_written(len(EXPECTED_FILES) + 1),
                "export_notebook again": files_written(0),
            },
        )
        shutil.rmtree(fresh, ignore_errors=True)
        results[n] = times
        build[n] = median(times["build_worker"])
        export[n] = median(times["export_notebook"])
        size_kb = path.stat().st_size / 1024
        log(
            f"  {n} cells ({gen.helpers} helpers, {len(gen.taken)} cells taken, "
            f"{gen.recorded} recorded runs; {size_kb:,.0f} KiB on disk), {rounds} rounds:"
        )
        for name, values in times.items():
            per_cell = median(values) / n
            log(
                f"    {name:<24} median {fmt_s(median(values)):>11}  "
                f"p90 {fmt_s(pct(values, 90)):>11}  per cell {fmt_s(per_cell):>10}"
            )

    log("  growth (t ~ n^k):")
    for smaller, larger in itertools.pairwise(sizes):
        for name in results[smaller]:
            t1, t2 = median(results[smaller][name]), median(results[larger][name])
            k = exponent(smaller, t1, larger, t2)
            log(
                f"    {name:<24} {larger}/{smaller}: {t2 / t1:6.1f}x  k = {k:4.2f}  "
                f"{growth_verdict(k)}"
            )
    if len(sizes) > 1:
        # A stage that grows clearly faster than the cells, at the largest sizes: where?
        smaller, larger = sizes[-2], sizes[-1]
        for name, function in stages[larger].items():
            t1, t2 = median(results[smaller][name]), median(results[larger][name])
            if exponent(smaller, t1, larger, t2) >= 1.5:
                label = f"{name} on the {larger}-cell notebook"
                profile_calls(label, function, 5, (("tottime", 8),))

    for n in sizes:
        prev = sizes[sizes.index(n) - 1] if sizes.index(n) > 0 else None
        for name, medians in (("build_worker(nb)", build), ("export_notebook(path, dir)", export)):
            row = Row(
                "1",
                f"{name}, {n} cells, median",
                fmt_s(medians[n]),
                "per cell",
                fmt_s(medians[n] / n),
            )
            if prev is not None:
                k = exponent(prev, medians[prev], n, medians[n])
                row.result = f"{n}/{prev}: {medians[n] / medians[prev]:.1f}x, k = {k:.2f}"
                if n == sizes[-1] and name.startswith("build"):
                    row.target = "~linear: k < 1.15"
                    row.ok = k < 1.15
            ROWS.append(row)
        times = results[n]
        read, again = median(times["nbformat.read"]), median(times["export_notebook again"])
        ours = median(times["ipynb.loads + schema"])
        ROWS.append(
            Row(
                "1",
                "  same dir again (files unchanged)",
                fmt_s(again),
                "new dir - build_worker (read + write)",
                fmt_s(export[n] - build[n]),
                f"reading: {fmt_s(ours)} (nbformat.read would: {fmt_s(read)})",
            )
        )
    big = sizes[-1]
    for name in stages[big]:
        value = median(results[big][name])
        row = Row(
            "1s",
            f"{name}, {big} cells, median",
            fmt_s(value),
            "build_worker, same size",
            fmt_s(build[big]),
            f"{value / build[big]:.0%} of it",
        )
        if len(sizes) > 1:
            prev = sizes[-2]
            k = exponent(prev, median(results[prev][name]), big, value)
            row.result += f"; {big}/{prev}: k = {k:.2f}"
        ROWS.append(row)
    return build


def profile_calls(
    label: str,
    function: Callable[[], Any],
    n: int,
    orders: tuple[tuple[str, int], ...] = (("cumulative", 30), ("tottime", 15)),
) -> None:
    """Print a cProfile of `n` calls of `function`, sorted by each of `orders`."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        function()
    profiler.disable()
    for order, count in orders:
        log(f"    cProfile of {n} x {label}, by {order} time:")
        log(stats_text(profiler, order, count))


# ----------------------------------------------------------------------------- 2. start-up

CLI_CELLS = 1000  # the notebook the whole command exports
CLI_TARGET = 0.5  # seconds, the issue's goal for `nbworker export` of CLI_CELLS cells
# `import nbformat` took ~0.9 s where the issue measured the CLI at 1.31-1.41 s (it compiles
# 38 lark grammars: CPU work that scales with the machine): a yardstick for a busy machine
ISSUE_NBFORMAT_IMPORT = 0.9
# What `nbworker export` must not import: nbformat pulls in jsonschema, which (with
# jsonschema's format extras, as JupyterLab installs them) compiles 38 lark grammars.
EXPORT_UNIMPORTED = ("nbformat", "jsonschema", "rfc3987_syntax", "papermill", "runpod")

HELP_PROBE = """\
import contextlib, io, json, sys, time
t0 = time.perf_counter()
from nbworker.cli import main
t1 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(["--help"])
    except SystemExit:
        pass
t2 = time.perf_counter()
print(json.dumps({
    "heavy": [m for m in %r if m in sys.modules],
    "modules": len(sys.modules),
    "import": t1 - t0,
    "main": t2 - t1,
    "usage": out.getvalue().startswith("usage: nbworker"),
}))
"""

# Where the time of a whole `nbworker export` goes, in a fresh process: the same work as
# the command, in phases. The imports and the validators compiled from nbformat's schema
# are paid once per process.
PHASES_PROBE = """\
import json, sys, time
t0 = time.perf_counter()
from nbworker.export import export_notebook
t1 = time.perf_counter()
import IPython.core.inputtransformer2
from nbworker.export import docker, handler, ipynb, requirements, secrets, testfiles
from nbworker.export.secrets import plugins
plugins._detectors()
t2 = time.perf_counter()
export_notebook(sys.argv[1], sys.argv[2] + "-first")
t3 = time.perf_counter()
export_notebook(sys.argv[1], sys.argv[2] + "-second")
t4 = time.perf_counter()
print(json.dumps({"phases": [t1 - t0, t2 - t1, t3 - t2, t4 - t3],
                  "imported": [m for m in %r if m in sys.modules]}))
"""
IMPORT_NBWORKER = "python -c 'import nbworker'"
PHASES = (
    "import nbworker.export",
    "import what export uses (IPython, detect-secrets, packaging...)",
    "first export_notebook in the process (its validators compiled)",
    "second export_notebook (warm)",
)


def bench_startup(workdir: Path, notebook: Path, in_process: float, quick: bool) -> None:
    import nbworker

    log("[2] start-up of the command line: wall time of a subprocess, paired rounds")
    python = sys.executable
    script = Path(python).parent / "nbworker"
    check(script.is_file(), f"no console script {script}: install the package in the venv")
    version = f"nbworker {nbworker.__version__}"
    exports = workdir / "cli-exports"
    counter = iter(range(1_000_000))
    # Every subprocess gets a bytecode cache of its own (written by the warm-up round), as
    # an installed package has its .pyc files: without it, PYTHONDONTWRITEBYTECODE (or a
    # read-only checkout) would make each run compile nbworker's sources again; and the
    # repository gets no __pycache__.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    phases: list[list[float]] = []
    helps: list[dict[str, Any]] = []

    def command(
        argv: Callable[[], list[str]], needle: str, keep: Callable[[str], None] | None = None
    ) -> Callable[[], None]:
        def run() -> None:
            _, proc = timed_run(argv(), workdir, env, timeout=120)
            check(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}")
            check(needle in proc.stdout, f"{needle!r} not in stdout: {proc.stdout[-2000:]}")
            if keep is not None:
                keep(proc.stdout)

        return run

    def keep_phases(stdout: str) -> None:
        probe = json.loads(stdout)
        check(probe["imported"] == [], f"`nbworker export` imports {probe['imported']}")
        phases.append(probe["phases"])

    def keep_help(stdout: str) -> None:
        probe = json.loads(stdout)
        check(probe["usage"], "main(['--help']) printed no usage")
        check(probe["heavy"] == [], f"`nbworker --help` imports {probe['heavy']}")
        helps.append(probe)

    def fresh_dir() -> str:
        return str(exports / str(next(counter)))

    cli_export = f"nbworker export ({notebook.stem}) -o DIR"
    commands = {
        "python -c pass": command(lambda: [python, "-c", "pass"], ""),
        "python -c 'import argparse'": command(lambda: [python, "-c", "import argparse"], ""),
        IMPORT_NBWORKER: command(lambda: [python, "-c", "import nbworker"], ""),
        "nbworker --help": command(lambda: [str(script), "--help"], "usage: nbworker"),
        "nbworker --version": command(lambda: [str(script), "--version"], version),
        "python -c 'import IPython'": command(lambda: [python, "-c", "import IPython"], ""),
        "python -c 'import nbformat'": command(lambda: [python, "-c", "import nbformat"], ""),
        cli_export: command(
            lambda: [str(script), "export", str(notebook), "-o", fresh_dir()], "wrote to"
        ),
        "--help phases (probe)": command(
            lambda: [python, "-c", HELP_PROBE % (HEAVY_MODULES,)], "{", keep_help
        ),
        "export phases (probe)": command(
            lambda: [python, "-c", PHASES_PROBE % (EXPORT_UNIMPORTED,), str(notebook), fresh_dir()],
            "{",
            keep_phases,
        ),
    }
    runs = 5 if quick else 10
    # the warm-up round writes the bytecode caches and fills the page cache; not kept
    times = paired(commands, rounds=runs, warmup=1).samples
    del phases[0], helps[0]  # the warm-up round's
    shutil.rmtree(exports, ignore_errors=True)
    floor_modules = subprocess.run(
        [python, "-c", "import sys; print(len(sys.modules))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()

    log(f"    {runs} runs each, paired (every command each round, the order reversed every")
    log("    other round), after one warm-up round; bytecode cached")
    base = median(times["python -c pass"])
    for name, values in times.items():
        if name.endswith("(probe)"):
            continue
        value = median(values)
        log(
            f"    {name:<44} median {fmt_s(value):>11}  min {fmt_s(min(values)):>11}  "
            f"{value / base:5.1f}x `python -c pass` ({fmt_s(value - base, signed=True)})"
        )
    help_import = median([probe["import"] for probe in helps])
    help_main = median([probe["main"] for probe in helps])
    log(
        f"    `nbworker --help` in-process (median of {runs}): import nbworker.cli "
        f"{fmt_s(help_import)}, main(['--help']) {fmt_s(help_main)} (build the parser, format)"
    )
    log(
        f"    modules loaded by `nbworker --help`: {helps[0]['modules']} (`python -c pass`: "
        f"{floor_modules}); none of {', '.join(HEAVY_MODULES)}"
    )
    log(f"    {cli_export} in a fresh process, by phase (median of {runs}); it imports none of")
    log(f"    {', '.join(EXPORT_UNIMPORTED)}:")
    phase_medians = [median([run[i] for run in phases]) for i in range(len(PHASES))]
    for label, value in zip(PHASES, phase_medians, strict=True):
        log(f"      {label:<64} {fmt_s(value):>11}")

    help_, version_ = median(times["nbworker --help"]), median(times["nbworker --version"])
    ipython = median(times["python -c 'import IPython'"])
    nbformat_ = median(times["python -c 'import nbformat'"])
    whole = median(times[cli_export])
    ROWS.extend(
        [
            Row(
                "2",
                f"{cli_export}, median of {runs}",
                fmt_s(whole),
                "export_notebook in-process (warm), same notebook",
                fmt_s(in_process),
                f"{whole / in_process:.1f}x ({fmt_s(whole - in_process, signed=True)})",
                f"< {fmt_s(CLI_TARGET)}",
                whole < CLI_TARGET,
            ),
            Row(
                "2",
                "  of which the interpreter",
                fmt_s(base),
                "python -c pass (the floor)",
                fmt_s(base),
                f"the rest: {fmt_s(whole - base)}",
            ),
            Row(
                "2",
                "  of which imports, fresh process",
                fmt_s(sum(phase_medians[:2])),
                "first export_notebook in a fresh process",
                fmt_s(phase_medians[2]),
                f"second one {fmt_s(phase_medians[3])}",
            ),
            Row(
                "2",
                "",
                "",
                "python -c 'import nbformat' (not imported)",
                fmt_s(nbformat_),
                f"{fmt_s(nbformat_ - base, signed=True)} over pass",
            ),
            Row(
                "2",
                "  estimate at the issue's speed (context)",
                fmt_s(whole * ISSUE_NBFORMAT_IMPORT / nbformat_),
                "import nbformat there / here",
                f"{ISSUE_NBFORMAT_IMPORT:g} s / {fmt_s(nbformat_)}",
                "the CLI scaled by that yardstick (pure-Python CPU work)",
            ),
            Row(
                "2",
                f"nbworker --help, subprocess, median of {runs}",
                fmt_s(help_),
                "python -c pass (interpreter floor)",
                fmt_s(base),
                f"{help_ / base:.2f}x ({fmt_s(help_ - base, signed=True)})",
            ),
            Row(
                "2",
                "  of which import nbworker.cli; main(['--help'])",
                f"{fmt_s(help_import)}; {fmt_s(help_main)}",
                "python -c 'import nbworker'",
                fmt_s(median(times[IMPORT_NBWORKER])),
                f"{fmt_s(median(times[IMPORT_NBWORKER]) - base, signed=True)} over pass",
            ),
            Row(
                "2",
                f"nbworker --version, median of {runs}",
                fmt_s(version_),
                "python -c pass",
                fmt_s(base),
                f"{version_ / base:.2f}x ({fmt_s(version_ - base, signed=True)})",
            ),
            Row(
                "2",
                "",
                "",
                "python -c 'import IPython'",
                fmt_s(ipython),
                f"{ipython / help_:.1f}x --help (were it imported eagerly)",
            ),
        ]
    )


# ----------------------------------------------------------------------------- table


ORDER = ["1", "1s", "2"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~1 min)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile build_worker on the largest notebook"
    )
    parser.add_argument(
        "--sizes",
        default="10,100,1000",
        help="notebook sizes in cells, comma-separated (default: 10,100,1000; at least 10)",
    )
    args = parser.parse_args()
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    if sizes[0] < 10:
        parser.error("--sizes: at least 10 cells")

    started = time.perf_counter()
    # Nothing here needs an IPython profile, but the user's ~/.ipython stays out of reach.
    workdir = setup_workdir()
    from importlib import metadata

    import IPython
    import nbformat

    import nbworker

    log_banner(
        {
            "nbworker": nbworker.__version__,
            "IPython": IPython.__version__,
            "nbformat": nbformat.__version__,
            "runpod": metadata.version("runpod"),
        },
        args.quick,
    )
    try:
        generated: dict[int, Generated] = {}
        paths: dict[int, Path] = {}
        for n in sorted({*sizes, CLI_CELLS}):  # CLI_CELLS cells: also the CLI's notebook
            start = time.perf_counter()
            gen = make_notebook(n)
            path = workdir / f"generated-{n}.ipynb"
            nbformat.write(gen.notebook, path)
            paths[n] = path
            if n in sizes:
                generated[n] = gen
            log(f"    generated {path.name} in {fmt_s(time.perf_counter() - start)}")
        build = bench_export(generated, paths, workdir, args.quick)
        if len(sizes) > 1:
            k = exponent(sizes[-2], build[sizes[-2]], sizes[-1], build[sizes[-1]])
        else:
            k = 1.0
        if args.profile or k >= 1.5:
            from nbworker.export import build_worker

            largest = generated[sizes[-1]].notebook
            profile_calls(f"build_worker, {sizes[-1]} cells", lambda: build_worker(largest), 3)
        # The in-process figure to put next to the CLI's: export_notebook (warm, a new
        # folder each time) of the same notebook.
        from nbworker.export import export_notebook

        in_process = []
        export_notebook(paths[CLI_CELLS], workdir / "in-process-warm-up")
        for i in range(5):
            start = time.perf_counter()
            export_notebook(paths[CLI_CELLS], workdir / f"in-process-{i}")
            in_process.append(time.perf_counter() - start)
        bench_startup(workdir, paths[CLI_CELLS], median(in_process), args.quick)
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    print_table(ROWS, ORDER, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
