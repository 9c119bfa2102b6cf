"""bench/common.py's harness: the rows every script's final table writes for
bench/run_all.sh, the combined summary of them, and the paired timing loop."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT

BENCH = ROOT / "bench"


def _load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


common = _load_common()
Row = common.Row


def _table(text: str) -> list[str]:
    """The lines of the last table in `text`, between its header rule and closing rule."""
    lines = text.splitlines()
    closing = max(i for i, line in enumerate(lines) if line.startswith("====="))
    rule = max(i for i, line in enumerate(lines[:closing]) if line.startswith("-----"))
    return [line for line in lines[rule + 1 : closing] if line.strip()]


def test_print_table_writes_its_rows_and_the_summary_shows_them(tmp_path, monkeypatch, capsys):
    rows_file = tmp_path / "rows.jsonl"
    monkeypatch.setenv(common.ROWS_VARIABLE, str(rows_file))
    monkeypatch.setenv(common.SCRIPT_VARIABLE, "bench_one")
    common.print_table(
        [
            Row("2", "a context figure", "3.0 ms", target="(context)"),
            Row("1", "the headline", "1.5x", "the SDK", "1.0x", "1.50x", ">= 1.5x", True),
            Row("1", "  its tail", "9 ms", result="p90", target="< 5 ms", ok=False),
        ],
        ["1", "2"],
        12.3,
    )
    own = capsys.readouterr().out
    # the script's own table is as before: rows in `order`, verdicts, the count
    assert [line.split()[0] for line in _table(own)] == ["1", "1", "2"]
    assert _table(own)[0].endswith("OK") and _table(own)[1].endswith("MISSED")
    assert "targets: 1 met, 1 missed; benchmark took 12 s" in own

    monkeypatch.setenv(common.SCRIPT_VARIABLE, "bench_two")
    common.print_table([Row("1", "all good", "1 ms", target="< 2 ms", ok=True)], ["1"], 1.0)
    log = tmp_path / "bench_three.log"
    log.write_text(
        "working\nBENCHMARK CHECK FAILED: the server died: Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\nValueError: bad port\n\n'
    )
    with rows_file.open("a") as file:  # what run_all.sh appends after each script
        for name, code, where in [
            ("bench_one", 0, ""),
            ("bench_two", 0, ""),
            ("bench_three", 2, str(log)),
        ]:
            file.write(json.dumps({"script": name, "exit": code, "log": where}) + "\n")
    capsys.readouterr()

    assert common.summary(rows_file) == 1  # a script failed
    out = capsys.readouterr().out
    table = _table(out)
    assert [line.split()[:2] for line in table] == [
        ["bench_one", "1"],
        ["bench_one", "1"],
        ["bench_one", "2"],
        ["bench_two", "1"],
        ["bench_three", "FAILED"],
    ]
    headline = table[0].split()
    assert headline[-1] == "OK" and "1.50x" in headline and ">=" in headline
    assert table[1].endswith("MISSED") and table[2].endswith("(context)")
    assert table[4].endswith("FAILED")
    assert "bench_one: 1 met, 1 missed (#1), 12 s" in out
    assert "bench_two: 1 met, 0 missed, 1 s" in out
    assert (
        "bench_three: 0 met, 0 missed; FAILED (exit 2): BENCHMARK CHECK FAILED: the server died: "
        "Traceback (most recent call last): ... ValueError: bad port\n" in out
    )
    assert "all: 2 met, 1 missed, 1 of 3 scripts FAILED (bench_three)" in out


def test_summary_is_0_when_every_script_ran(tmp_path, monkeypatch, capsys):
    rows_file = tmp_path / "rows.jsonl"
    monkeypatch.setenv(common.ROWS_VARIABLE, str(rows_file))
    monkeypatch.setenv(common.SCRIPT_VARIABLE, "bench_one")
    common.print_table(
        [Row("1", "missed, not failed", "3 ms", target="< 1 ms", ok=False)], ["1"], 1
    )
    with rows_file.open("a") as file:
        file.write(json.dumps({"script": "bench_one", "exit": 0, "log": ""}) + "\n")
    assert common.summary(rows_file) == 0
    assert "all: 0 met, 1 missed, 0 of 1 scripts FAILED" in capsys.readouterr().out


def test_a_script_that_exits_0_without_a_table_failed(tmp_path, capsys):
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text(json.dumps({"script": "quiet", "exit": 0, "log": ""}) + "\n")
    assert common.summary(rows_file) == 1
    assert "FAILED (exit 0 but no table)" in capsys.readouterr().out


def test_without_the_variable_print_table_writes_no_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(common.ROWS_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    common.print_table([Row("1", "x", "1")], ["1"], 1)
    assert list(tmp_path.iterdir()) == []


def test_a_line_that_is_no_row_is_an_error_naming_it(tmp_path):
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text(json.dumps({"script": "a", "exit": 0}) + "\nnot json\n")
    with pytest.raises(ValueError, match=r"rows.jsonl, line 2: not a row"):
        common.read_rows(rows_file)


def test_paired_interleaves_reverses_and_takes_the_median_of_per_round_ratios():
    calls: list[str] = []
    # per round (warm-up first): a is 10 each round, b is 20, 5, 40, 30
    figures = {"a": iter([99, 10, 10, 10, 10]), "b": iter([99, 20, 5, 40, 30])}

    def variant(name):
        def call():
            calls.append(name)
            return next(figures[name])

        return call

    result = common.paired({"a": variant("a"), "b": variant("b")}, rounds=4, warmup=1, timed=False)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    assert result.samples == {"a": [10, 10, 10, 10], "b": [20, 5, 40, 30]}
    assert result.medians == {"a": 10, "b": 25}
    assert result.ratio("b", "a") == 2.5  # median of 2, 0.5, 4, 3
    assert result.ratio("a", "b") == pytest.approx((0.5 + 1 / 3) / 2)  # not 1 / 2.5
    assert result.ratios == {"a": 1.0, "b": 2.5}


def test_paired_times_calls_and_checks_each_result():
    seen = []
    result = common.paired(
        {"fast": lambda: 1, "slow": lambda: sum(range(200_000))},
        rounds=3,
        warmup=2,
        checks={"fast": seen.append},
    )
    assert seen == [1] * 5  # warm-up rounds are checked too
    assert all(len(values) == 3 for values in result.samples.values())
    assert result.ratio("slow", "fast") > 1


@pytest.mark.slow
def test_run_all_runs_every_script_and_fails_at_the_end_if_one_failed(tmp_path):
    prelude = (
        f"import sys\nsys.path.insert(0, {str(BENCH)!r})\nfrom common import Row, print_table\n"
    )
    (tmp_path / "good.py").write_text(
        prelude
        + textwrap.dedent(
            """
            print("args:", sys.argv[1:])
            print_table([Row("1", "a figure", "1 ms", target="< 2 ms", ok=True)], ["1"], 1)
            """
        )
    )
    (tmp_path / "bad.py").write_text(prelude + 'print("BENCHMARK CHECK FAILED: no")\nsys.exit(2)\n')
    logs = tmp_path / "logs"
    proc = subprocess.run(
        ["bash", str(BENCH / "run_all.sh"), "--quick", str(tmp_path / "bad.py"), "good.py"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "NBWORKER_BENCH_LOGS": str(logs)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "args: ['--quick']" in out  # the good one ran after the bad one, with --quick
    assert [line.split()[:2] for line in _table(out)] == [["bad", "FAILED"], ["good", "1"]]
    assert "bad: 0 met, 0 missed; FAILED (exit 2): BENCHMARK CHECK FAILED: no" in out
    assert "all: 1 met, 0 missed, 1 of 2 scripts FAILED (bad)" in out
    assert (logs / "good.log").read_text().startswith("args: ['--quick']")
