"""`nbworker test`'s exit codes and arguments where no kernel starts: what counts as nothing
compared (exit 5), usage errors (exit 2, one line), a notebook that cannot be read (exit 3),
and which notebooks a folder stands for. The replays themselves are in test_testing.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbworker import cli, testing
from nbworker.testing import Case, NotebookReport, Options, Result

RECORD = "application/vnd.nbworker.run+json"


def nbworker_test(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`nbworker test ARGS` as a process: its real exit status."""
    return subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "test", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def main(
    capsys: pytest.CaptureFixture[str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`nbworker test ARGS` in this process (quicker, where nothing starts a kernel)."""
    here = Path.cwd()
    os.chdir(cwd)
    try:
        code = cli.main(["test", *args])
    finally:
        os.chdir(here)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def write(path: Path, *sources: str, record: bool = False) -> Path:
    """A notebook of code cells; with `record`, the last one holds a recorded run."""
    cells = [new_code_cell(source) for source in sources]
    if record:
        run = {"handler": "handler", "job": {"id": "local_test", "input": {}}}
        run.update(status="COMPLETED", output=1, error=None, stream=None)
        cells[-1].outputs = [nbformat.v4.new_output("display_data", data={RECORD: run})]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), path)
    return path


def case(notebook: str = "passed", worker: str = "passed") -> Case:
    found = Case("x.ipynb", 3, "abc", 1, "handler", "COMPLETED")
    found.notebook_result, found.worker_result = Result(notebook), Result(worker)
    return found


def report(*cases: Case, error: str | None = None, deselected: int = 0) -> NotebookReport:
    return NotebookReport("nb/x.ipynb", list(cases), error=error, deselected=deselected)


# ------------------------------------------------------------------------ exit codes


@pytest.mark.parametrize(
    ("reports", "code"),
    [
        ([report(case())], 0),
        ([report(case("passed", "-"))], 0),  # --notebook-only
        ([report(case("skipped", "passed"))], 0),  # --no-compare, the worker compared
        ([report(case(), case("failed"))], 1),
        ([report(case("not run", "-"))], 1),  # a recorded run the replay never reached
        ([report(case(), error="cell 4 raised UsageError: x")], 3),
        ([report(case("failed")), report(error="kernel died")], 3),  # 3 over 1
        ([report()], 5),  # no run recorded
        ([report(deselected=3)], 5),  # -k matched nothing
        ([report(case("skipped", "skipped"))], 5),  # compared nowhere
        ([report(case("-", "-"))], 5),  # --worker-only, a handler the worker does not export
        ([report(), report(case())], 0),  # as pytest: one notebook without cases is no failure
        ([report(), report(case("failed"))], 1),
        ([], 5),
    ],
)
def test_exit_code(reports: list[NotebookReport], code: int) -> None:
    assert testing.exit_code(reports) == code
    if len(reports) == 1:
        assert reports[0].exit_code == code
    assert (testing.nothing_compared(reports) is None) == (code != 5)


def test_the_codes_are_distinct_and_five_is_pytests_no_tests() -> None:
    codes = [testing.EXIT_OK, testing.EXIT_MISMATCH, testing.EXIT_USAGE, testing.EXIT_NOTEBOOK]
    assert [*codes, testing.EXIT_NO_CASES] == [0, 1, 2, 3, 5]
    assert testing.EXIT_NO_CASES == pytest.ExitCode.NO_TESTS_COLLECTED


def test_nothing_compared_says_why_in_a_line() -> None:
    assert testing.nothing_compared([report()]) == (
        "no %rp_test run is recorded in x.ipynb (record runs in Jupyter, then save)"
    )
    assert testing.nothing_compared([report(), report()]).startswith(
        "no %rp_test run is recorded in any of the 2 notebooks"
    )
    assert testing.nothing_compared([report(deselected=3)], select="zzz") == (
        "-k 'zzz' matches none of the 3 recorded case(s) in x.ipynb"
    )
    assert testing.nothing_compared([report(case("skipped", "-"))]).startswith(
        "the 1 selected case(s) were compared nowhere"
    )


# ------------------------------------------------------------------------ the command line


@pytest.mark.slow  # a process
def test_a_notebook_without_records_exits_5_without_starting_a_kernel(tmp_path: Path) -> None:
    write(tmp_path / "empty.ipynb", "raise RuntimeError('never run: nothing to replay')")

    done = nbworker_test("empty.ipynb", cwd=tmp_path)

    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "nbworker test: error: no case was compared: no %rp_test run is recorded in "
        "empty.ipynb (record runs in Jupyter, then save)"
    )
    assert "note: empty.ipynb: no %rp_test run is recorded in this notebook" in done.stdout
    assert "RuntimeError" not in done.stdout + done.stderr  # not run at all


def test_k_matching_nothing_exits_5_naming_the_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "one.ipynb", "%rp_test {}", record=True)

    done = main(capsys, tmp_path, "one.ipynb", "-k", "nothing-like-this")

    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "nbworker test: error: no case was compared: -k 'nothing-like-this' matches none of "
        "the 1 recorded case(s) in one.ipynb"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ipynb"], "no such notebook or folder: missing.ipynb"),
        (["notes.txt"], "not a notebook (*.ipynb): notes.txt"),
        (["empty"], "empty is a folder with no notebook (*.ipynb) in it or under it"),
        (
            ["only-hidden"],
            "only-hidden is a folder with no notebook to test: its 1 *.ipynb file(s) are hidden "
            "(a dot-name, .ipynb_checkpoints) or in exported workers; name one to test it",
        ),
        (["empty.ipynb", "--rtol", "-1"], "--rtol must be >= 0, not -1.0"),
        (["empty.ipynb", "--timeout", "0"], "--timeout must be positive, not 0.0"),
        (["empty.ipynb", "-j", "0"], "--jobs must be at least 1, not 0"),
    ],
)
def test_usage_errors_exit_2_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    write(tmp_path / "empty.ipynb", "x = 1")
    (tmp_path / "notes.txt").write_text("not a notebook")
    (tmp_path / "empty").mkdir()
    write(tmp_path / "only-hidden" / ".ipynb_checkpoints" / "nb-checkpoint.ipynb", "x = 1")

    done = main(capsys, tmp_path, *args)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == f"nbworker test: error: {message}\n"
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON: Expecting property name enclosed in double quotes"),
        (b"[]", "a JSON list, not a notebook object"),
        (b'{"metadata": {}}', 'no "cells" list'),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_a_file_that_is_no_notebook_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    (tmp_path / "broken.ipynb").write_bytes(content)

    done = main(capsys, tmp_path, "broken.ipynb")

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"nbworker test: error: not a notebook: broken.ipynb ({why}")
    assert "Traceback" not in done.stderr


def test_a_notebook_that_fails_the_schema_is_a_notebook_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "odd.ipynb").write_text('{"cells": [{"cell_type": "nope"}]}', encoding="utf-8")

    done = main(capsys, tmp_path, "odd.ipynb")

    assert done.returncode == 3, done.stdout + done.stderr
    assert "ERROR: odd.ipynb: not a readable notebook: " in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # a kernel starts: the notebook is checked against the schema as it boots
def test_a_notebook_the_schema_refuses_is_a_notebook_error_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "odd.ipynb", "x = 1", '%rp_test {"input": {}}', record=True)
    nb = nbformat.read(path, as_version=4)
    nb.cells[0]["unexpected"] = True  # what nbformat's schema allows no cell
    path.write_text(nbformat.writes(nb), encoding="utf-8")

    done = main(capsys, tmp_path, "odd.ipynb", "--notebook-only")

    assert done.returncode == 3, done.stdout + done.stderr
    assert (
        "ERROR: odd.ipynb: not a valid notebook (nbformat's schema): cells[0] must not "
        "contain {'unexpected'} properties" in done.stdout
    )
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------ folders


def test_a_folder_stands_for_its_notebooks_sorted_without_hidden_ones(tmp_path: Path) -> None:
    for name in [
        "b.ipynb",
        "a.ipynb",
        "sub/deeper/c.ipynb",
        "sub/a.ipynb",
        ".ipynb_checkpoints/a-checkpoint.ipynb",
        "sub/.ipynb_checkpoints/a-checkpoint.ipynb",
        ".venv/share/x.ipynb",
        ".hidden.ipynb",
    ]:
        write(tmp_path / name, "x = 1")
    (tmp_path / "notes.txt").write_text("not a notebook")

    found = testing.notebooks_under(tmp_path)

    assert [path.relative_to(tmp_path).as_posix() for path in found] == [
        "a.ipynb",
        "b.ipynb",
        "sub/a.ipynb",
        "sub/deeper/c.ipynb",
    ]
    assert testing.notebooks_under(tmp_path / "sub" / ".ipynb_checkpoints") == [
        tmp_path / "sub" / ".ipynb_checkpoints" / "a-checkpoint.ipynb"  # named: searched
    ]


def test_a_folder_walk_leaves_exported_workers_out(tmp_path: Path) -> None:
    (tmp_path / "nb.ipynb").write_text("{}", encoding="utf-8")
    worker = tmp_path / "nb-worker"
    (worker / "tests").mkdir(parents=True)
    (worker / ".nbworker-export.json").write_text("{}", encoding="utf-8")
    (worker / "tests" / "nb.ipynb").write_text("{}", encoding="utf-8")  # the shipped copy

    assert testing.notebooks_under(tmp_path) == [tmp_path / "nb.ipynb"]
    assert testing.notebooks_under(worker) == [worker / "tests" / "nb.ipynb"]  # named: searched


def test_report_names_keep_same_named_notebooks_apart() -> None:
    assert testing.report_names(["nb/x.ipynb", "nb/y.ipynb"]) == ["x.ipynb", "y.ipynb"]
    assert testing.report_names(["nb/x.ipynb"]) == ["x.ipynb"]
    assert testing.report_names(["nb/a/x.ipynb", "nb/b/x.ipynb", "nb/x.ipynb"]) == [
        "a/x.ipynb",
        "b/x.ipynb",
        "x.ipynb",
    ]
    assert testing.report_names([]) == []


def test_a_folder_and_a_notebook_in_it_run_it_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "nb" / "one.ipynb", "x = 1")
    write(tmp_path / "nb" / "sub" / "two.ipynb", "x = 1")

    done = main(capsys, tmp_path, "nb/one.ipynb", "nb", "./nb/sub/two.ipynb", "-j", "1")

    assert done.returncode == 5, done.stdout + done.stderr
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: ")]
    assert [line.split(":")[1].strip() for line in notes] == ["one.ipynb", "sub/two.ipynb"]
    assert "in any of the 2 notebooks" in done.stderr


def test_test_notebook_does_not_run_a_notebook_with_nothing_selected(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.ipynb", "x = 1")
    found = testing.test_notebook(path, Options(worker=False))
    assert (found.exit_code, found.cases, found.executed) == (5, [], None)
    assert found.notes == ["no %rp_test run is recorded in this notebook: nothing to replay"]
    one = write(tmp_path / "one.ipynb", "%rp_test {}", record=True)
    found = testing.test_notebook(one, Options(select="zzz"))
    assert (found.exit_code, found.deselected, found.seconds) == (5, 1, 0.0)
    assert found.notes == ["-k 'zzz' selects none of its 1 recorded case(s): not run"]


# ------------------------------------------------------------------------ the report


def suites(xml: str) -> list[tuple[str | None, dict[str, str | None], list[tuple[str, ...]]]]:
    """Each testsuite's name, counts and testcases (name, then the tag and message of a
    failure, error or skip), as CI reads them."""
    found = []
    for suite in ElementTree.fromstring(xml).iter("testsuite"):
        counts = {key: suite.get(key) for key in ("tests", "failures", "errors")}
        cases = [
            (str(case.get("name")), *(f"{child.tag}: {child.get('message')}" for child in case))
            for case in suite.iter("testcase")
        ]
        found.append((suite.get("name"), counts, cases))
    return found


def test_junit_xml_of_a_notebook_with_nothing_to_replay_is_an_empty_suite(
    tmp_path: Path,
) -> None:
    """As `--junit-xml` writes it when a notebook records nothing: well-formed, one empty
    suite, so CI shows the notebook rather than choking on the file."""
    empty = testing.test_notebook(write(tmp_path / "empty.ipynb", "x = 1"), Options(worker=False))
    xml = testing.junit_xml([empty])
    assert xml.startswith(
        "<?xml version='1.0' encoding='utf-8'?>\n<testsuites name=\"nbworker test\">"
    )
    zeros = {"tests": "0", "failures": "0", "errors": "0"}
    assert suites(xml) == [("empty.ipynb", zeros, [])]


def test_junit_xml_has_a_testcase_per_case_and_side_that_ran() -> None:
    failed = case("failed", "error")
    failed.differences, failed.worker_detail = ["output: got 1, recorded 2"], "export failed: x"
    reports = [
        report(case("passed", "-"), case("skipped", "skipped"), case("deselected", "deselected")),
        report(failed, case("not run", "-")),
        report(error="cell 1 raised RuntimeError: no GPU"),
    ]
    found = suites(testing.junit_xml(reports))
    assert [counts for _, counts, _ in found] == [
        {"tests": "3", "failures": "0", "errors": "0"},  # "-" and deselected: no testcase
        {"tests": "3", "failures": "2", "errors": "1"},
        {"tests": "1", "failures": "0", "errors": "1"},
    ]
    assert found[1][2] == [
        ("x.ipynb::abc::case-1 [notebook]", "failure: output: got 1, recorded 2"),
        ("x.ipynb::abc::case-1 [worker]", "error: export failed: x"),
        ("x.ipynb::abc::case-1 [notebook]", "failure: not run"),  # the result, as plain text
    ]
    assert found[0][2][1:] == [
        ("x.ipynb::abc::case-1 [notebook]", "skipped: --no-compare"),
        ("x.ipynb::abc::case-1 [worker]", "skipped: --no-compare"),
    ]
    assert found[2][2] == [("run the notebook", "error: cell 1 raised RuntimeError: no GPU")]


def test_results_read_as_their_plain_strings() -> None:
    """The results are an enum whose text is what the table and pytest showed as strings."""
    assert [str(result) for result in Result] == [
        "passed",
        "failed",
        "skipped",
        "error",
        "not run",
        "-",
        "deselected",
    ]
    assert f"{Result.NOT_RUN:>8}|" == " not run|" and Result("-") is Result.NOT_REPLAYED
    table = testing.summary([report(case("not run", "-"), case("passed", "deselected"))])
    rows = [re.split(r"\s{2,}", line) for line in table.splitlines()[2:4]]
    assert [row[2:] for row in rows] == [["not run", "-"], ["passed", "deselected"]]
    assert "Result." not in table
