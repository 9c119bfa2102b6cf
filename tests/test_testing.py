"""`nbworker test` end to end: notebooks recorded in a real kernel, replayed in a fresh one
(papermill) and against the exported worker under the runpod SDK, through the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbworker import testing
from nbworker.testing import Options

pytestmark = pytest.mark.slow

CALC = [
    "%load_ext nbworker",
    "import time\nSCALE = 2",
    '%%handler\ndef handler(job):\n    x = job["input"]["x"]\n'
    '    return {"y": x * SCALE, "third": x / 3, "at": time.time_ns()}',
    '%rp_test {"input": {"x": 1}} --ignore at',
    '%rp_test {"input": {"x": 2}} --ignore at',
    '%%handler --aggregate\ndef words(job):\n    for word in job["input"]["text"].split():\n'
    '        yield {"word": word, "n": len(word)}',
    '%rp_test words {"input": {"text": "a bb ccc"}}',
]


def record(tmp_path: Path, sources: list[str], name: str = "calc.ipynb") -> Path:
    """Write the notebook and run it once in a real kernel, as its author would: the saved
    notebook then holds its %rp_test records."""
    import papermill as pm

    source = tmp_path / f"source-{name}"
    nbformat.write(new_notebook(cells=[new_code_cell(text) for text in sources]), source)
    recorded = tmp_path / name
    pm.execute_notebook(
        str(source), str(recorded), kernel_name="python3", cwd=str(tmp_path), progress_bar=False
    )
    return recorded


def edit(path: Path, old: str, new: str) -> None:
    """Change a cell's source in the stored notebook, keeping its recorded outputs."""
    nb = nbformat.read(path, 4)
    (cell,) = [cell for cell in nb.cells if old in cell.source]
    cell.source = cell.source.replace(old, new)
    nbformat.write(nb, path)


def set_record(path: Path, cell_index: int, **changes) -> None:
    """Change what a stored cell recorded (as if the run had given something else)."""
    from nbworker.record import RECORD_MIMETYPE

    nb = nbformat.read(path, 4)
    for output in nb.cells[cell_index].outputs:
        if RECORD_MIMETYPE in output.get("data", {}):
            output["data"][RECORD_MIMETYPE].update(changes)
    nbformat.write(nb, path)


def nbworker_test(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbworker.cli", "test", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=280,
    )


@pytest.fixture(scope="module")
def calc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("calc"), CALC)


@pytest.fixture
def copy(calc: Path, tmp_path: Path) -> Path:
    target = tmp_path / calc.name
    target.write_bytes(calc.read_bytes())
    return target


def test_every_case_passes_in_the_notebook_and_the_worker(copy: Path, tmp_path: Path) -> None:
    done = nbworker_test(
        copy.name, "--output-dir", "out", "--junit-xml", "results.xml", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "case",
        "handler",
        "notebook",
        "worker",
        "time",
        "(notebook",
        "run",
        "/",
        "worker",
        "test)",
    ]
    ids = [line.split()[0] for line in lines[2:5]]
    nb = nbformat.read(copy, 4)
    assert ids == [f"calc.ipynb::{nb.cells[i].id}::case-1" for i in (3, 4, 6)]
    assert [line.split()[2:4] for line in lines[2:5]] == [
        ["passed", "passed"],
        ["passed", "passed"],
        ["passed", "-"],
    ]
    assert "3 passed, 0 failed, 0 notebook error(s), 1 notebook(s)" in done.stdout
    # the executed notebook is the report, run in one kernel: counts 1, 2, 3, ... in order
    executed = nbformat.read(tmp_path / "out" / "calc.ipynb", 4)
    counts = [cell.execution_count for cell in executed.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    assert "nbworker-replay" in executed.cells[0].metadata.tags
    assert (tmp_path / "out" / "calc.replay.json").is_file()  # the report runs again
    suites = ElementTree.parse(tmp_path / "results.xml").getroot()
    (suite,) = suites.iter("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "0", "0")
    assert {case.get("name") for case in suite.iter("testcase")} >= {
        f"{ids[0]} [notebook]",
        f"{ids[0]} [worker]",
    }


def test_a_handler_changed_after_recording_fails_with_a_diff_naming_the_case(
    copy: Path, tmp_path: Path
) -> None:
    edit(copy, "x * SCALE", "x * SCALE + 1")
    done = nbworker_test(copy.name, "--junit-xml", "results.xml", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    nb = nbformat.read(copy, 4)
    first = f"calc.ipynb::{nb.cells[3].id}::case-1"
    assert f"{first} (notebook):\n    output['y']: got 3, recorded 2" in done.stdout
    assert f"{first} (worker): output['y']: got 3, recorded 2" in done.stdout
    assert "1 passed, 2 failed, 0 notebook error(s)" in done.stdout  # the stream still holds
    failures = [
        c
        for c in ElementTree.parse(tmp_path / "results.xml").iter("testcase")
        if c.find("failure") is not None
    ]
    assert len(failures) == 4  # two cases, each in the notebook and in the worker


def test_a_setup_cell_that_raises_exits_3(copy: Path, tmp_path: Path) -> None:
    edit(copy, "SCALE = 2", "SCALE = 2\nraise RuntimeError('no GPU here')")
    done = nbworker_test(copy.name, cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert re.search(
        r"ERROR: calc.ipynb: cell 1 \(id \w+\) raised RuntimeError: no GPU here", done.stdout
    )


def test_a_stream_is_compared_chunk_by_chunk(copy: Path, tmp_path: Path) -> None:
    chunks = [{"word": "a", "n": 1}, {"word": "bb", "n": 2}, {"word": "ccc", "n": 4}]
    set_record(copy, 6, stream=chunks, output=chunks)
    done = nbworker_test(copy.name, "--notebook-only", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "    stream[2]['n']: got 3, recorded 4\n    output[2]['n']: got 3, recorded 4"
        not in done.stdout
    )
    assert "stream[2]['n']: got 3, recorded 4" in done.stdout
    assert "output[2]['n']: got 3, recorded 4" in done.stdout
    assert done.stdout.count("output[") == 1 and done.stdout.count("stream[") == 1


def test_rtol_and_ignore_do_what_they_say(copy: Path, tmp_path: Path) -> None:
    set_record(copy, 3, output={"y": 2, "third": 1 / 3 * (1 + 1e-4), "at": 0})
    strict = nbworker_test(copy.name, "--notebook-only", cwd=tmp_path)
    assert (
        strict.returncode == 1
        and "output['third']: got 0.3333333333333333, recorded 0.33336666666666664 (rtol 1e-06)"
        in strict.stdout
    )
    loose = nbworker_test(copy.name, "--rtol", "1e-3", cwd=tmp_path)
    assert loose.returncode == 0, loose.stdout + loose.stderr  # worker replay too (rtol passed on)
    # without --ignore, the timestamp differs
    edit(copy, '%rp_test {"input": {"x": 2}} --ignore at', '%rp_test {"input": {"x": 2}}')
    done = nbworker_test(copy.name, "--notebook-only", "--rtol", "1e-3", cwd=tmp_path)
    assert done.returncode == 1 and "output['at']: got " in done.stdout


def test_select_with_k_and_usage_errors(copy: Path, tmp_path: Path) -> None:
    done = nbworker_test(copy.name, "-k", "words", "--notebook-only", cwd=tmp_path)
    assert done.returncode == 0 and "1 passed, 0 failed" in done.stdout
    # the words handler is not the exported one: with --worker-only nothing compares it,
    # which is no success (pytest's 5: no tests)
    done = nbworker_test(copy.name, "-k", "words", "--worker-only", cwd=tmp_path)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "0 passed, 0 failed, 1 compared nowhere" in done.stdout
    assert done.stderr.splitlines()[-1].startswith(
        "nbworker test: error: no case was compared: the 1 selected case(s) were compared nowhere"
    )
    for args, message in [
        (["missing.ipynb"], "nbworker test: error: no such notebook or folder: missing.ipynb"),
        ([copy.name, "--rtol", "-1"], "nbworker test: error: --rtol must be >= 0"),
        ([copy.name, "--notebook-only", "--worker-only"], "not allowed with argument"),
    ]:
        done = nbworker_test(*args, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_usage_error_in_a_cell_stops_the_notebook_and_exits_3_naming_it(
    calc: Path, tmp_path: Path
) -> None:
    """A `%rp_test` misused (here a handler that does not exist) raises a UsageError, which
    IPython shows on stderr, not as an error output; papermill stops there. As if the author
    had run it in Jupyter (it records nothing) and gone on."""
    misuse = '%rp_test nosuch {"input": {}}'
    folder = tmp_path / "notebooks"
    folder.mkdir()
    middle = nbformat.read(calc, 4)  # recorded runs below it never run
    middle.cells.insert(4, new_code_cell(misuse))
    nbformat.write(middle, folder / "middle.ipynb")
    last = nbformat.read(calc, 4)  # every recorded run before it: it used to exit 0
    last.cells += [new_code_cell(misuse), new_code_cell("print('never runs')")]
    nbformat.write(last, folder / "last.ipynb")

    done = nbworker_test("notebooks", "--notebook-only", "--output-dir", "out", cwd=tmp_path)

    assert done.returncode == 3, done.stdout + done.stderr
    for name, index, cell in (("middle", 4, middle.cells[4]), ("last", 7, last.cells[7])):
        assert (
            f"ERROR: {name}.ipynb: cell {index} (id {cell.id}) raised UsageError: "
            "%rp_test: no handler named 'nosuch'; registered: handler" in done.stdout
        )
    columns = [re.split(r"\s{2,}", line) for line in done.stdout.splitlines() if "::" in line]
    rows = {case: result for case, _handler, result, *_ in columns}
    assert rows == {
        f"last.ipynb::{last.cells[3].id}::case-1": "passed",
        f"last.ipynb::{last.cells[4].id}::case-1": "passed",
        f"last.ipynb::{last.cells[6].id}::case-1": "passed",
        f"middle.ipynb::{middle.cells[3].id}::case-1": "passed",
        f"middle.ipynb::{middle.cells[5].id}::case-1": "not run",  # never reported as passed
        f"middle.ipynb::{middle.cells[7].id}::case-1": "not run",
    }
    executed = nbformat.read(tmp_path / "out" / "last.ipynb", 4)
    stopped = next(cell for cell in executed.cells if cell.get("id") == last.cells[7].id)
    assert stopped.metadata["nbworker"]["ename"] == "UsageError"  # in the report too


def test_a_malformed_record_fails_its_notebook_in_one_line_naming_the_cell(
    calc: Path, tmp_path: Path
) -> None:
    """A hand-edited record (here a status that is a number, in cell 4) fails that notebook,
    exit 3, before any kernel starts; the other notebooks are replayed all the same. The
    pytest plugin refuses to collect it, with the same line."""
    from nbworker.record import RECORD_MIMETYPE

    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "good.ipynb").write_bytes(calc.read_bytes())
    edited = folder / "edited.ipynb"
    edited.write_bytes(calc.read_bytes())
    set_record(edited, 4, status=200)
    stored = nbformat.read(edited, 4)
    expected = (
        f"ERROR: edited.ipynb: cell 4 (id {stored.cells[4].id}): run record 1 is malformed: "
        "its status is not a string (a JSON number); clear the cell's output or record the "
        "run again with %rp_test"
    )

    done = nbworker_test("notebooks", "--notebook-only", cwd=tmp_path)

    assert done.returncode == 3, done.stdout + done.stderr
    assert expected in done.stdout.splitlines() and "Traceback" not in done.stderr
    assert "3 passed, 0 failed, 1 notebook error(s), 2 notebook(s)" in done.stdout

    (output,) = [o for o in stored.cells[4].outputs if RECORD_MIMETYPE in o.get("data", {})]
    output["data"][RECORD_MIMETYPE] = ["a", "list"]
    nbformat.write(stored, edited)
    report = testing.test_notebook(edited)  # in process: it returns before any kernel
    assert report.exit_code == testing.EXIT_NOTEBOOK and report.cases == []
    assert report.error is not None and report.error.endswith(
        "run record 1 is malformed: the run record is not an object (a JSON array); clear "
        "the cell's output or record the run again with %rp_test"
    )
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbworker", "--collect-only", "-q", str(edited)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 2, collected.stdout + collected.stderr
    assert f"edited.ipynb: {report.error}" in collected.stdout, collected.stdout


def test_the_worker_replay_catches_what_export_does_not_carry(tmp_path: Path) -> None:
    # SCALE changes after the handler's cell; export takes the definition above the handler
    sources = [*CALC[:3], "SCALE = 3", *CALC[3:5]]
    recorded = record(tmp_path, sources)
    notebook_only = nbworker_test(recorded.name, "--notebook-only", cwd=tmp_path)
    assert notebook_only.returncode == 0, notebook_only.stdout
    done = nbworker_test(recorded.name, "--worker-only", cwd=tmp_path)
    assert done.returncode == 1
    assert "(worker): output['y']: got 2, recorded 3" in done.stdout


def test_parameters_pass_through_to_papermill(tmp_path: Path) -> None:
    sources = [
        'MODEL_SIZE = "tiny"',
        "%load_ext nbworker",
        'assert MODEL_SIZE in ("tiny", "base"), MODEL_SIZE\nDIM = {"tiny": 2, "base": 4}[MODEL_SIZE]',
        '%%handler\ndef handler(job):\n    return {"dim": DIM}',
        '%rp_test {"input": {}}',
    ]
    recorded = record(tmp_path, sources)
    nb = nbformat.read(recorded, 4)
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, recorded)
    assert nbworker_test(recorded.name, "--notebook-only", cwd=tmp_path).returncode == 0
    base = nbworker_test(recorded.name, "--notebook-only", "-p", "MODEL_SIZE", "base", cwd=tmp_path)
    assert base.returncode == 1 and "output['dim']: got 4, recorded 2" in base.stdout
    huge = nbworker_test(recorded.name, "--notebook-only", "-p", "MODEL_SIZE", "huge", cwd=tmp_path)
    assert huge.returncode == 3 and "AssertionError: huge" in huge.stdout


def test_notebooks_run_in_parallel_and_report_in_order(calc: Path, tmp_path: Path) -> None:
    paths = []
    for name in ("one.ipynb", "two.ipynb"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(calc.read_bytes())
    edit(paths[1], "x * SCALE", "x * SCALE * 10")
    reports = testing.test_notebooks(paths, Options(worker=False), jobs=2)
    assert [Path(report.path).name for report in reports] == ["one.ipynb", "two.ipynb"]
    assert [report.exit_code for report in reports] == [0, 1]
    assert testing.exit_code(reports) == 1
    assert [case.notebook_result for case in reports[1].cases] == ["failed", "failed", "passed"]


def test_same_named_notebooks_in_subfolders_stay_apart(calc: Path, tmp_path: Path) -> None:
    """A folder argument: every notebook under it, not Jupyter's checkpoints; two `calc.ipynb`
    in two folders get their own case ids and executed notebooks, replayed in parallel."""
    for folder in ("a", "b", "b/.ipynb_checkpoints"):
        (tmp_path / "nbs" / folder).mkdir(parents=True)
    (tmp_path / "nbs" / "a" / "calc.ipynb").write_bytes(calc.read_bytes())
    (tmp_path / "nbs" / "b" / "calc.ipynb").write_bytes(calc.read_bytes())
    edit(tmp_path / "nbs" / "b" / "calc.ipynb", "x * SCALE", "x * SCALE * 10")
    (tmp_path / "nbs" / "b" / ".ipynb_checkpoints" / "calc-checkpoint.ipynb").write_text("{")

    done = nbworker_test("nbs", "--notebook-only", "-j", "2", "--output-dir", "out", cwd=tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr
    table = [re.split(r"\s{2,}", line) for line in done.stdout.splitlines()]
    rows = [row for row in table if re.fullmatch(r"\S+::case-\d+", row[0])]  # not the diffs
    results = [(row[0].split("::")[0], row[2]) for row in rows]
    assert results == [
        ("a/calc.ipynb", "passed"),
        ("a/calc.ipynb", "passed"),
        ("a/calc.ipynb", "passed"),
        ("b/calc.ipynb", "failed"),
        ("b/calc.ipynb", "failed"),
        ("b/calc.ipynb", "passed"),
    ]
    for folder in ("a", "b"):
        assert (tmp_path / "out" / folder / "calc.ipynb").is_file()
        assert (tmp_path / "out" / folder / "calc.replay.json").is_file()
    assert "checkpoint" not in done.stdout + done.stderr


def test_a_cell_past_the_timeout_exits_3_naming_it(copy: Path, tmp_path: Path) -> None:
    edit(copy, "SCALE = 2", "SCALE = 2\ntime.sleep(60)")
    done = nbworker_test(copy.name, "--timeout", "2", "--notebook-only", cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert re.search(r"ERROR: calc.ipynb: cell 1 \(id \w+\): CellTimeoutError: ", done.stdout)
    assert "KeyboardInterrupt" not in done.stdout


FLAKY_KERNEL = """\
import sys
from pathlib import Path

starts = Path(sys.argv[1])
starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
if len(starts.read_text()) < 3:  # the first two starts die, as when a port was taken
    sys.exit(1)
from ipykernel.kernelapp import launch_new_instance

sys.argv = [sys.argv[0], *sys.argv[2:]]
launch_new_instance()
"""


def test_a_kernel_that_dies_while_starting_is_started_again(copy: Path, tmp_path: Path) -> None:
    import os

    spec = tmp_path / "jupyter" / "kernels" / "flaky"
    spec.mkdir(parents=True)
    (tmp_path / "flaky_kernel.py").write_text(FLAKY_KERNEL)
    argv = [sys.executable, str(tmp_path / "flaky_kernel.py"), str(tmp_path / "starts")]
    argv += ["-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "flaky", "language": "python"})
    )
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.pathsep.join(
        [str(tmp_path / "jupyter"), *filter(None, [env.get("JUPYTER_PATH")])]
    )
    command = [sys.executable, "-m", "nbworker.cli", "test", copy.name, "--kernel", "flaky"]
    done = subprocess.run(
        [*command, "--notebook-only"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "starts").read_text() == "xxx"
    assert done.stdout.count("the kernel died while starting") == 2, done.stdout
