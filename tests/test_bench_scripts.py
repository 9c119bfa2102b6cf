"""The in-kernel benchmarks still run against today's nbworker: `--quick`, each check they
make of what they time passing (a run's status and output, the record a kernel sends, what
a cell printed). Their timing targets are not judged here (CI's load moves them): only
that every figure was measured and none says BENCHMARK CHECK FAILED."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

BENCH = ROOT / "bench"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_core.py", "bench_cache.py", "bench_export.py"])
def test_a_benchmark_runs_its_checks_through(script: str, tmp_path) -> None:
    rows = tmp_path / "rows.jsonl"
    env = dict(os.environ, NBWORKER_BENCH_ROWS=str(rows))
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "BENCHMARK CHECK FAILED" not in out
    assert "targets:" in out, out[-2000:]  # the final table was printed
    assert rows.exists() and rows.read_text(encoding="utf-8").strip(), "no rows written"
