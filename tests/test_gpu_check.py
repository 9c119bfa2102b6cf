"""bench/gpu_check.py runs where CI runs, without a GPU: the CUDA figures skipped with one
line, the same checks on the CPU, all met, exit 0; `--require-cuda` fails there instead."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import ROOT

SCRIPT = ROOT / "bench" / "gpu_check.py"
SKIP_LINE = "no CUDA device: skipped (a) the allocator's delta"
CUDA = torch.cuda.is_available()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )


def _table(text: str) -> list[str]:
    lines = text.splitlines()
    closing = max(i for i, line in enumerate(lines) if line.startswith("====="))
    rule = max(i for i, line in enumerate(lines[:closing]) if line.startswith("-----"))
    return [line for line in lines[rule + 1 : closing] if line.strip()]


@pytest.mark.slow
def test_gpu_check_runs_and_meets_its_goals_on_this_machine():
    proc = _run()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"kernel's torch {torch.__version__}" in out
    rows = _table(out)
    assert {row.split()[0] for row in rows} == {"a", "b", "c", "d", "e"}
    verdicts = [row.split()[-1] for row in rows]
    assert "MISSED" not in verdicts, "\n".join(rows)
    assert "targets: " in out and " met, 0 missed" in out
    if CUDA:
        assert SKIP_LINE not in out
        assert "skipped (no CUDA)" not in out
    else:
        assert out.count("no CUDA device: skipped") == 1, out
        assert SKIP_LINE in out
        skipped = [row for row in rows if "skipped (no CUDA)" in row]
        assert len(skipped) == 6, "\n".join(rows)
        # what runs on the CPU: the accounting, the objects freed, the budget, the handler,
        # the exported Dockerfile for a CPU build of torch
        ran = [row for row in rows if row.endswith("OK")]
        assert len(ran) == 9, "\n".join(rows)
        assert any("bytes the cache counts on cpu" in row and "equal" in row for row in ran)
        assert any("COMPLETED on cpu" in row for row in ran)
        assert any("runpod/base:" in row for row in ran)


@pytest.mark.slow
@pytest.mark.skipif(CUDA, reason="a CUDA device is there: --require-cuda passes")
def test_require_cuda_fails_without_a_device():
    proc = _run("--require-cuda")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "and --require-cuda given: exit 3" in proc.stdout
    assert proc.stdout.count("no CUDA device") == 1
    assert "=====" not in proc.stdout  # no checks ran, no table
