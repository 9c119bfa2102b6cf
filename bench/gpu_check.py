#!/usr/bin/env python
"""GPU checks of nbworker's model cache, handlers and export, in a real Jupyter kernel.

    python bench/gpu_check.py                 # CUDA checks where the kernel's torch sees a
                                              # GPU; without one they are skipped (one line)
                                              # and the same checks run on the CPU
    python bench/gpu_check.py --require-cuda  # exit 3 if the kernel's torch sees no GPU
    python bench/gpu_check.py --quick         # a 64 MiB model on the GPU instead of 256 MiB

On a GPU machine: `bash scripts/setup.sh && .venv/bin/python bench/gpu_check.py
--require-cuda`. The script installs nothing: it prints which torch the kernel has (a CPU
build from a CPU-only index sees no GPU; PyPI's torch wheels for Linux are CUDA builds).

A kernel from this environment's `python3` kernelspec, `%load_ext nbworker`, then a
notebook's cells: torch, a deterministic MLP (`build_net`, seeded on the CPU, moved to the
device) loaded by a `%%model net` cell on `cuda` (else `cpu`), a `%%handler` running it,
`%rp_test`. Around them:

(a) accounting: the bytes the cache counts for the entry (`nbworker.cache.info()`, what
    `%rp_models` shows) against `torch.cuda.memory_allocated()` before and after the load
    (goal: within 1%), and against the parameters' and buffers' `numel * element_size`;
(b) memory back: `%rp_models --evict net`, then `memory_allocated` against before the load
    (goal: within 1% of the model); `%%model net --reload`: allocated afterwards against
    before (the old copy freed) and the peak during the reload (goal: one model, not two).
    nbworker's release calls `torch.cuda.empty_cache()`; this script calls it nowhere;
(c) a budget of 1.5 models (`%rp_models --budget`): loading a second model evicts the
    first on its CUDA bytes, and `memory_allocated` shows one model left;
(d) `%rp_test` of the handler: COMPLETED on the device, the output against the same net
    built on the CPU (goal: max error <= 1e-3 of the largest value);
(e) the notebook, saved with its outputs and exported in the kernel (`%rp_export`): the
    Dockerfile's FROM against the kernel's torch.version.cuda (a CPU build: the default
    base; a CUDA build: the same CUDA major, not newer), torch pinned in requirements.txt
    at the kernel's version, and (GPU) the driver's CUDA at least the image's.

Without CUDA the CUDA-only figures are rows marked "skipped (no CUDA)". Only 127.0.0.1 is
used (the kernel's sockets).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BenchFailure,
    Kernel,
    Row,
    check,
    log,
    log_banner,
    print_table,
    setup_workdir,
    started_kernel,
)

ROWS: list[Row] = []
ORDER = ["a", "b", "c", "d", "e"]
MARK = "GPU_CHECK_JSON "
WITHIN = 0.01  # the 1% goals
NO_CUDA = "skipped (no CUDA)"

# The notebook's cells (what is exported); the model is a few MiB on the CPU.
SETUP_CELL = """\
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WIDTH, DEPTH = ({cuda_width} if DEVICE == "cuda" else 1024), 4


def build_net(width, depth):
    \"\"\"A deterministic MLP: seeded on the CPU, so the weights are the same everywhere.\"\"\"
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).eval()
"""
MODEL_CELL = "%%model net\nnet = build_net(WIDTH, DEPTH).to(DEVICE)"
HANDLER_CELL = '''\
%%handler
def handler(job):
    """net's output for a fixed input scaled by job["input"]["scale"]."""
    scale = float(job["input"]["scale"])
    x = scale * torch.linspace(-1.0, 1.0, WIDTH, device=DEVICE)
    with torch.no_grad():
        y = net(x.unsqueeze(0))[0]
    return {"device": str(y.device), "y": y.tolist()}
'''
TEST_CELL = '%rp_test {"input": {"scale": 0.5}}'

# The script's own helpers in the kernel (not in the notebook); they hold no reference to
# a model after they return, and the cells that call them print (no Out[n] keeps a value).
HELPERS = '''\
import json as _gc_json
import weakref as _gc_weakref

from nbworker import cache as _gc_cache


def _gc_emit(value):
    print("GPU_CHECK_JSON " + _gc_json.dumps(value))  # MARK


def _gc_allocator():
    """The CUDA allocator's figures now, after a synchronize ({} without CUDA)."""
    if not torch.cuda.is_available():
        return {}
    torch.cuda.synchronize()
    return {
        "allocated": torch.cuda.memory_allocated(),
        "reserved": torch.cuda.memory_reserved(),
        "peak": torch.cuda.max_memory_allocated(),
    }


def _gc_entry(name):
    entry = next((entry for entry in _gc_cache.info() if entry.name == name), None)
    if entry is None:
        return None
    return {"memory": entry.memory, "before": entry.cuda_before, "after": entry.cuda_after}


def _gc_tensor_bytes(module):
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _gc_torch():
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": False}
    if torch.cuda.is_available():
        driver = getattr(torch._C, "_cuda_getDriverVersion", lambda: 0)()
        info.update(
            available=True,
            name=torch.cuda.get_device_name(0),
            count=torch.cuda.device_count(),
            driver=f"{driver // 1000}.{driver % 1000 // 10}" if driver else None,
            total=torch.cuda.get_device_properties(0).total_memory,
        )
    return info


def _gc_warm():
    """cuBLAS's handle and workspace come from the caching allocator on the first matmul:
    made here, before the figures, so that no delta below counts them."""
    if torch.cuda.is_available():
        warm = torch.ones(256, 256, device="cuda")
        (warm @ warm).sum().item()
        del warm
        torch.cuda.synchronize()


def _gc_reference(scale):
    """The handler's output computed on the CPU from a fresh build_net."""
    with torch.no_grad():
        x = scale * torch.linspace(-1.0, 1.0, WIDTH)
        return build_net(WIDTH, DEPTH)(x.unsqueeze(0))[0].tolist()
'''


def mib(size: float) -> str:
    return f"{size / 1024**2:.1f} MiB"


def signed_bytes(size: int) -> str:
    return f"{size:+,} B" if abs(size) < 1024**2 else f"{size / 1024**2:+.2f} MiB"


def figure(row: Row) -> None:
    """Keep `row` for the table and print it now, its goal beside it."""
    ROWS.append(row)
    versus = f" vs {row.versus} {row.versus_value}".rstrip() if row.versus else ""
    result = f": {row.result}" if row.result else ""
    verdict = "" if row.ok is None else ("  OK" if row.ok else "  MISSED")
    log(f"    ({row.key}) {row.what}: {row.value}{versus}{result}  [goal: {row.target}]{verdict}")


def skipped(key: str, what: str, target: str) -> None:
    ROWS.append(Row(key, what, NO_CUDA, target=target))


def within(measured: int, expected: int) -> tuple[str, bool]:
    """(the relative difference as text, whether it is within WITHIN)."""
    if expected == 0:
        return ("equal" if measured == 0 else "expected 0"), measured == 0
    diff = (measured - expected) / expected
    return f"{diff:+.3%}", abs(diff) <= WITHIN


class Notebook:
    """The kernel, and the cells of the notebook that (e) exports, with their outputs."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.cells: list[tuple[str, list[dict[str, Any]]]] = []

    def run(self, code: str, *, keep: bool = False, timeout: float = 120) -> str:
        """Run a cell; what it printed and showed (stdout, stderr, text/plain)."""
        _, _, outputs = self.kernel.execute(code, timeout)
        if keep:
            self.cells.append((code, outputs))
        return "".join(
            o["content"].get("text", "") or o["content"].get("data", {}).get("text/plain", "")
            for o in outputs
        )

    def value(self, expression: str) -> Any:
        """`expression` evaluated in the kernel, through JSON."""
        printed = self.run(f"_gc_emit({expression})")
        lines = [line for line in printed.splitlines() if line.startswith(MARK)]
        check(len(lines) == 1, f"{expression} printed {printed!r}")
        return json.loads(lines[0][len(MARK) :])

    def save(self, path: Path) -> None:
        """The kept cells and their outputs as an nbformat 4.5 notebook. Written as JSON
        here: importing nbformat costs this process seconds (its schema's format checkers);
        the export in the kernel reads and validates it with nbformat."""
        cells = []
        for count, (code, outputs) in enumerate(self.cells, 1):
            cells.append(
                {
                    "cell_type": "code",
                    "id": f"cell-{count}",
                    "metadata": {},
                    "execution_count": count,
                    "source": code,
                    "outputs": [notebook_output(o, count) for o in outputs],
                }
            )
        notebook = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "cells": cells,
        }
        path.write_text(json.dumps(notebook, indent=1) + "\n", encoding="utf-8")


def notebook_output(message: dict[str, Any], count: int) -> dict[str, Any]:
    """An iopub output message as a notebook output (what nbformat's output_from_msg does)."""
    kind, content = message["msg_type"], message["content"]
    if kind == "stream":
        return {"output_type": "stream", "name": content["name"], "text": content["text"]}
    if kind == "error":
        return {"output_type": "error", **{k: content[k] for k in ("ename", "evalue", "traceback")}}
    output = {"output_type": kind, "data": content["data"], "metadata": content.get("metadata", {})}
    if kind == "execute_result":
        output["execution_count"] = count
    return output


@dataclass
class Context:
    """What the checks share: the kernel's notebook, whether CUDA is there, the allocator
    before the first load, the kernel's torch; (a) sets the model's device and bytes."""

    nb: Notebook
    cuda: bool
    base: dict[str, int]
    torch_info: dict[str, Any]
    workdir: Path
    device: str = ""
    model: int = 0


def check_accounting(c: Context) -> None:
    """(a): the entry's bytes against the allocator's delta and the parameters' bytes."""
    nb, cuda, base = c.nb, c.cuda, c.base
    printed = nb.run(MODEL_CELL, keep=True)
    check("net: loaded" in printed, f"%%model net printed {printed!r}")
    after = nb.value("_gc_allocator()")
    entry = nb.value("_gc_entry('net')")
    device = nb.value("str(next(net.parameters()).device)")
    params = nb.value("_gc_tensor_bytes(net)")
    table = nb.run("%rp_models")
    check(device in table and "net" in table, f"%rp_models shows no {device} column: {table!r}")
    accounted = entry["memory"].get(device, 0)
    check(set(entry["memory"]) == {device}, f"the entry's memory is {entry['memory']}")
    if cuda:
        delta = after["allocated"] - base["allocated"]
        text, ok = within(accounted, delta)
        figure(
            Row(
                "a",
                "%%model net: bytes the cache counts on " + device,
                mib(accounted),
                "memory_allocated delta",
                mib(delta),
                text,
                "within 1%",
                ok,
            )
        )
        own = entry["after"].get(device, 0) - entry["before"].get(device, 0)
        figure(
            Row(
                "a",
                "  the entry's own allocator figures (cuda_after - cuda_before)",
                mib(own),
                "delta around the cell",
                mib(delta),
                within(own, delta)[0],
                "(context)",
            )
        )
    else:
        skipped("a", "%%model net: bytes the cache counts vs memory_allocated delta", "within 1%")
    figure(
        Row(
            "a",
            f"%%model net: bytes the cache counts on {device}",
            f"{accounted:,} B",
            "parameters + buffers",
            f"{params:,} B",
            "equal" if accounted == params else signed_bytes(accounted - params),
            "equal",
            accounted == params,
        )
    )
    c.device, c.model = device, params


def check_release(c: Context) -> None:
    """(b): evict, then --reload: memory back, the old objects collected."""
    nb, cuda, base, model = c.nb, c.cuda, c.base, c.model
    nb.run("_gc_ref = _gc_weakref.ref(net)")
    printed = nb.run("%rp_models --evict net")
    check("released (evicted)" in printed, f"--evict printed {printed!r}")
    check("still referenced" not in printed, f"--evict: {printed!r}")
    evicted = nb.value("_gc_allocator()")
    collected = nb.value("_gc_ref() is None")
    figure(
        Row(
            "b",
            "%rp_models --evict net: the model object collected",
            "yes" if collected else "no",
            target="yes",
            ok=collected,
        )
    )
    if cuda:
        residual = evicted["allocated"] - base["allocated"]
        figure(
            Row(
                "b",
                "  memory_allocated after evict - before the load",
                signed_bytes(residual),
                "the model",
                mib(model),
                f"{residual / model:+.3%} of it",
                "within 1%",
                abs(residual) <= WITHIN * model,
            )
        )
        figure(
            Row(
                "b",
                "  memory_reserved after evict - before (nbworker calls empty_cache)",
                signed_bytes(evicted["reserved"] - base["reserved"]),
                "reserved before",
                mib(base["reserved"]),
                target="(context)",
            )
        )
    else:
        skipped("b", "  memory_allocated after evict - before the load", "within 1%")

    printed = nb.run(MODEL_CELL)
    check("net: loaded" in printed, f"loading net again printed {printed!r}")
    loaded = nb.value("_gc_allocator()")
    nb.run("_gc_ref = _gc_weakref.ref(net)")
    if cuda:
        nb.run("torch.cuda.reset_peak_memory_stats()")
    printed = nb.run(MODEL_CELL.replace("%%model net", "%%model net --reload"))
    check("released (reload)" in printed and "net: loaded" in printed, f"--reload: {printed!r}")
    check("still referenced" not in printed, f"--reload: {printed!r}")
    reloaded = nb.value("_gc_allocator()")
    collected = nb.value("_gc_ref() is None and net is not None")
    figure(
        Row(
            "b",
            "%%model net --reload: the old model collected",
            "yes" if collected else "no",
            target="yes",
            ok=collected,
        )
    )
    if cuda:
        left = reloaded["allocated"] - loaded["allocated"]
        figure(
            Row(
                "b",
                "  memory_allocated after --reload - before it",
                signed_bytes(left),
                "the model",
                mib(model),
                f"{left / model:+.3%} of it",
                "within 1%",
                abs(left) <= WITHIN * model,
            )
        )
        peak = reloaded["peak"] - base["allocated"]
        figure(
            Row(
                "b",
                "  peak during --reload (old copy freed before the load)",
                mib(peak),
                "the model",
                mib(model),
                f"{peak / model:.3f}x",
                "<= 1.01x",
                peak <= (1 + WITHIN) * model,
            )
        )
    else:
        skipped("b", "  memory_allocated after --reload - before it", "within 1%")
        skipped("b", "  peak during --reload (old copy freed before the load)", "<= 1.01x")


def check_budget(c: Context) -> None:
    """(c): a budget of 1.5 models; the second load evicts the first."""
    nb, cuda, device, model = c.nb, c.cuda, c.device, c.model
    nb.run("%rp_models --clear")
    base = nb.value("_gc_allocator()")
    budget = int(1.5 * model)
    printed = nb.run(f"%rp_models --budget {budget}")
    check("budget" in printed, f"--budget printed {printed!r}")
    try:
        for name in ("net_a", "net_b"):
            printed = nb.run(f"%%model {name}\n{name} = build_net(WIDTH, DEPTH).to(DEVICE)")
        check("net_a: released (over budget)" in printed, f"loading net_b printed {printed!r}")
        names = nb.value("[entry.name for entry in _gc_cache.info()]")
        entry = nb.value("_gc_entry('net_b')")
        after = nb.value("_gc_allocator()")
    finally:
        nb.run("%rp_models --budget none")
    figure(
        Row(
            "c",
            f"budget {mib(budget)}, net_a then net_b loaded: cached",
            ", ".join(names),
            target="net_b only",
            ok=names == ["net_b"],
        )
    )
    figure(
        Row(
            "c",
            "  net_b's bytes counted against the budget",
            ", ".join(f"{mib(n)} on {d}" for d, n in entry["memory"].items()),
            target=f"all on {device}",
            ok=set(entry["memory"]) == {device},
        )
    )
    if cuda:
        text, ok = within(after["allocated"] - base["allocated"], model)
        figure(
            Row(
                "c",
                "  memory_allocated after the eviction - before both loads",
                mib(after["allocated"] - base["allocated"]),
                "one model",
                mib(model),
                text,
                "within 1%",
                ok,
            )
        )
    else:
        skipped("c", "  memory_allocated after the eviction - before both loads", "within 1%")
    nb.run("%rp_models --clear")


def check_handler(c: Context) -> None:
    """(d): %rp_test of the handler on the device, against the CPU."""
    nb, device = c.nb, c.device
    from nbworker.record import RECORD_MIMETYPE

    printed = nb.run(MODEL_CELL)  # (c) cleared the cache; the notebook has this cell from (a)
    check("net: loaded" in printed, f"%%model net printed {printed!r}")
    printed = nb.run(HANDLER_CELL, keep=True)
    check("registered `handler`" in printed, f"%%handler printed {printed!r}")
    _, _, outputs = nb.kernel.execute(TEST_CELL, 300)
    nb.cells.append((TEST_CELL, outputs))
    records = [
        o["content"]["data"][RECORD_MIMETYPE]
        for o in outputs
        if RECORD_MIMETYPE in o["content"].get("data", {})
    ]
    check(len(records) == 1, f"%rp_test showed {outputs}")
    record = records[0]
    output = record.get("output") or {}
    done = record["status"] == "COMPLETED" and output.get("device") == device
    figure(
        Row(
            "d",
            "%rp_test of the handler: status, output's device",
            f"{record['status']} on {output.get('device')}",
            target=f"COMPLETED on {device}",
            ok=done,
        )
    )
    check(record["status"] == "COMPLETED", f"%rp_test: {record}")
    got = output["y"]
    expected = nb.value("_gc_reference(0.5)")
    check(len(got) == len(expected), f"the handler returned {len(got)} values")
    largest = max(abs(v) for v in expected) or 1.0
    error = max(abs(a - b) for a, b in zip(got, expected, strict=True)) / largest
    figure(
        Row(
            "d",
            f"  output ({len(got)} floats) vs the same net on the CPU",
            f"{error:.2e}",
            result="max error / max |value|",
            target="<= 1e-3",
            ok=error <= 1e-3,
        )
    )
    figure(Row("d", "  the run's duration", f"{record['duration_ms']:.3f} ms", target="(context)"))


def check_export(c: Context) -> None:
    """(e): export the notebook in the kernel; its Dockerfile and requirements."""
    nb, workdir, torch_info = c.nb, c.workdir, c.torch_info
    from nbworker.export import docker

    path, worker = workdir / "gpu_check.ipynb", workdir / "gpu_check-worker"
    nb.save(path)
    printed = nb.run(f"%rp_export {path} -o {worker}", timeout=300)
    check((worker / "Dockerfile").is_file(), f"%rp_export printed {printed!r}")
    froms = re.findall(r"^FROM (\S+)", (worker / "Dockerfile").read_text(), re.MULTILINE)
    check(len(froms) == 1, f"the Dockerfile has FROM lines {froms}")
    image = froms[0]
    cuda = torch_info["cuda"]
    tag = re.search(r"cuda(\d+)\.(\d+)", image)
    image_cuda = (int(tag[1]), int(tag[2])) if tag else None
    if cuda is None:
        figure(
            Row(
                "e",
                "Dockerfile FROM (the kernel's torch is a CPU build)",
                image,
                "nbworker's default",
                docker.DEFAULT_BASE,
                target="the default base",
                ok=image == docker.DEFAULT_BASE,
            )
        )
    else:
        wanted = tuple(int(part) for part in cuda.split(".")[:2])
        ok = image_cuda is not None and image_cuda[0] == wanted[0] and image_cuda <= wanted
        figure(
            Row(
                "e",
                "Dockerfile FROM vs the kernel's torch.version.cuda",
                image,
                "torch CUDA",
                cuda,
                target="same CUDA major, not newer",
                ok=ok,
            )
        )
    version = torch_info["torch"]  # with its build label (+cpu, +cu124): export pins the build
    pins = re.findall(r"^torch==(\S+)", (worker / "requirements.txt").read_text(), re.MULTILINE)
    figure(
        Row(
            "e",
            "  requirements.txt pins torch",
            ", ".join(pins) or "none",
            "kernel's torch",
            torch_info["torch"],
            target=f"=={version}",
            ok=pins == [version],
        )
    )
    hub = json.loads((worker / ".runpod" / "tests.json").read_text())
    allowed = hub.get("config", {}).get("allowedCudaVersions") or hub.get("allowedCudaVersions")
    figure(
        Row(
            "e",
            "  .runpod/tests.json allowedCudaVersions",
            f"{allowed[-1]}..{allowed[0]}" if allowed else "none",
            target="(context)",
        )
    )
    driver = torch_info.get("driver")
    if torch_info["available"] and driver and image_cuda is not None:
        have = tuple(int(part) for part in driver.split("."))
        figure(
            Row(
                "e",
                "  this host's driver CUDA vs the image's",
                driver,
                "image CUDA",
                f"{image_cuda[0]}.{image_cuda[1]}",
                target=">= the image's",
                ok=have >= image_cuda,
            )
        )
    elif not torch_info["available"]:
        skipped("e", "  this host's driver CUDA vs the image's", ">= the image's")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--require-cuda", action="store_true", help="exit 3 without CUDA")
    parser.add_argument("--quick", action="store_true", help="a 64 MiB model on the GPU")
    args = parser.parse_args()

    started = time.perf_counter()
    workdir = setup_workdir()
    # Kernels run this interpreter: this environment's python3 kernelspec comes first.
    kernels = Path(sys.prefix, "share", "jupyter")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(kernels), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )
    from importlib import metadata

    import nbworker

    versions = {"nbworker": nbworker.__version__, "ipykernel": metadata.version("ipykernel")}
    log_banner(versions, args.quick)
    setup = SETUP_CELL.format(cuda_width=2048 if args.quick else 4096)
    try:
        with started_kernel(workdir / "kernel.log") as kernel:
            nb = Notebook(kernel)
            nb.run("%load_ext nbworker", keep=True)
            nb.run(setup, keep=True, timeout=300)  # import torch: seconds on a cold disk
            nb.run(HELPERS)
            torch_info = nb.value("_gc_torch()")
            cuda = bool(torch_info["available"])
            log(
                f"kernel's torch {torch_info['torch']} (CUDA build: {torch_info['cuda']}), "
                + (
                    f"{torch_info['count']} GPU(s), {torch_info['name']}, "
                    f"{mib(torch_info['total'])}, driver CUDA {torch_info['driver']}"
                    if cuda
                    else "torch.cuda.is_available() False"
                )
            )
            if not cuda:
                why = (
                    "the kernel's torch is a CPU build"
                    if torch_info["cuda"] is None
                    else f"torch is built for CUDA {torch_info['cuda']} but sees no GPU"
                )
                if args.require_cuda:
                    log(f"no CUDA device ({why}) and --require-cuda given: exit 3")
                    return 3
                log(
                    "no CUDA device: skipped (a) the allocator's delta, (b) memory_allocated "
                    "after --evict and --reload, (c) the CUDA bytes the budget frees, (e) the "
                    f"driver's CUDA; (a)-(e) run on the CPU ({why})"
                )
            nb.run("_gc_warm()")
            base = nb.value("_gc_allocator()")
            phases = [
                ("(a) accounting of a model loaded by %%model", check_accounting),
                ("(b) memory given back by --evict and --reload", check_release),
                ("(c) a budget of 1.5 models", check_budget),
                ("(d) %rp_test of a handler on the device", check_handler),
                ("(e) the exported Dockerfile against the kernel's torch", check_export),
            ]
            context = Context(nb, cuda, base, torch_info, workdir)
            for title, phase in phases:
                log(f"{title} [{time.perf_counter() - started:.1f} s]")
                phase(context)
    except BenchFailure as err:
        log(f"BENCHMARK CHECK FAILED: {err}")
        return 2
    print_table(ROWS, ORDER, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
