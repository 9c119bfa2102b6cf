"""`pytest --nbworker`: the runs recorded in notebooks as pytest items (nbworker.testing.plugin,
loaded through the `pytest11` entry point). The sub-pytests run in subprocesses and
find this environment's python3 kernel through JUPYTER_PATH (set by conftest.py)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbworker.testing import Case, NotebookReport, Result, verdict

pytest_plugins = ["pytester"]

DATA = Path(__file__).parent / "data"
RECORD = "application/vnd.nbworker.run+json"
SENTIMENT = ["e78a178b", "10b944a9", "a127ae21"]  # cells with a recorded run, in order
STREAMING = ["a0da6cc3", "955c59d0"]


def notebook(
    pytester: pytest.Pytester,
    name: str,
    as_: str | None = None,
    edit: Callable[[Any], None] | None = None,
) -> Path:
    """Copy tests/data/NAME.ipynb into the sub-pytest's folder, edited by `edit`."""
    stored = nbformat.read(DATA / f"{name}.ipynb", as_version=4)
    if edit is not None:
        edit(stored)
    path = pytester.path / f"{as_ or name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(stored, path)
    return path


def cell(stored: Any, starts: str) -> Any:
    return next(cell for cell in stored.cells if cell.source.startswith(starts))


def replace(stored: Any, starts: str, old: str, new: str) -> None:
    found = cell(stored, starts)
    assert old in found.source
    found.source = found.source.replace(old, new)


def insert(stored: Any, index: int, source: str) -> None:
    stored.cells.insert(index, nbformat.v4.new_code_cell(source))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--nbworker", "-p", "no:cacheprovider", *args, timeout=120)


def properties(junit: Path) -> dict[str, dict[str, str]]:
    """The nbworker_* properties of each test case, by `file::cell::case`."""
    found = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        values = {p.get("name"): p.get("value") for p in case.iter("property")}
        found[f"{case.get('classname')}::{case.get('name')}"] = values
    return found


# ------------------------------------------------------------------------ no kernel


@pytest.mark.parametrize(
    ("module", "loaded"),
    [
        ("nbworker.testing", "[]"),  # the API: not even pytest
        ("nbworker.testing.plugin", "['pytest']"),  # what every pytest run loads
    ],
)
def test_importing_the_plugin_stays_light(module: str, loaded: str) -> None:
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in ('papermill', 'nbformat', 'IPython', 'pytest') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == loaded


def test_the_entry_point_is_the_plugin_module() -> None:
    """pytest loads the plugin by this entry point (`pip install -e .` writes it)."""
    from importlib.metadata import entry_points

    (found,) = [point for point in entry_points(group="pytest11") if point.name == "nbworker"]
    assert found.value == "nbworker.testing.plugin"


def test_collects_every_recorded_case_with_readable_ids(pytester: pytest.Pytester) -> None:
    notebook(pytester, "sentiment", "notebooks/sentiment")
    notebook(pytester, "streaming", "notebooks/streaming")
    notebook(pytester, "sentiment", "notebooks/.ipynb_checkpoints/sentiment-checkpoint")
    nothing = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%load_ext nbworker")])
    nbformat.write(nothing, pytester.path / "notebooks" / "exploration.ipynb")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")

    # norecursedirs emptied: the plugin itself leaves Jupyter's checkpoints out
    result = run(pytester, "--collect-only", "-q", "-o", "norecursedirs=")

    assert result.ret == pytest.ExitCode.OK
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        *(f"notebooks/sentiment.ipynb::{cell_id}::case-1" for cell_id in SENTIMENT),
        *(f"notebooks/streaming.ipynb::{cell_id}::case-1" for cell_id in STREAMING),
        "test_plain.py::test_plain",
    ]
    assert "6 tests collected" in result.stdout.str()


def test_an_exported_workers_notebook_copy_is_collected_only_when_named(
    pytester: pytest.Pytester,
) -> None:
    from nbworker.export import export_notebook

    source = notebook(pytester, "streaming")
    export_notebook(source, pytester.path / "streaming-worker")
    copy_ = pytester.path / "streaming-worker" / "tests" / "streaming.ipynb"
    assert copy_.is_file()

    result = run(pytester, "--collect-only", "-q", ".")
    ids = [line for line in result.outlines if "::" in line and ".ipynb" in line]
    assert ids == [f"streaming.ipynb::{cell_id}::case-1" for cell_id in STREAMING]

    result = run(pytester, "--collect-only", "-q", "streaming-worker/tests/streaming.ipynb")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        f"streaming-worker/tests/streaming.ipynb::{cell_id}::case-1" for cell_id in STREAMING
    ]


def test_a_node_id_selects_one_case(pytester: pytest.Pytester) -> None:
    notebook(pytester, "sentiment")

    result = run(pytester, "--collect-only", "-q", f"sentiment.ipynb::{SENTIMENT[1]}::case-1")

    assert [line for line in result.outlines if "::" in line] == [
        f"sentiment.ipynb::{SENTIMENT[1]}::case-1"
    ]


def test_without_the_option_no_notebook_is_collected(pytester: pytest.Pytester) -> None:
    notebook(pytester, "sentiment")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert [line for line in result.outlines if "::" in line] == ["test_plain.py::test_plain"]
    assert "ipynb" not in result.stdout.str()

    # loaded all the same (so inert, not absent), with no replays registered
    pytester.makepyfile(
        test_plain="def test_plain(pytestconfig):\n"
        "    plugins = pytestconfig.pluginmanager\n"
        "    assert plugins.get_plugin('nbworker').__name__ == 'nbworker.testing.plugin'\n"
        "    assert plugins.get_plugin('nbworker-replays') is None\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)


@pytest.mark.slow  # a pytest process (collection only: no kernel)
def test_nothing_to_compare_is_pytests_exit_5(pytester: pytest.Pytester) -> None:
    """As `nbworker test` exits 5 when no case is compared, pytest --nbworker exits with
    pytest's own 5 when it collects no case (no run recorded) or -k deselects every one."""
    nothing = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%load_ext nbworker")])
    nbformat.write(nothing, pytester.path / "exploration.ipynb")

    result = run(pytester, "exploration.ipynb")

    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*no tests ran*"])

    notebook(pytester, "sentiment")
    result = run(pytester, "sentiment.ipynb", "-k", "nothing-like-this")

    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*3 deselected*"])


def test_notebook_only_and_worker_only_exclude_each_other(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--nbworker-notebook-only", "--nbworker-worker-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "exclude each other" in result.stderr.str()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--nbworker-rtol", "-1"), "--nbworker-rtol must be >= 0, not -1.0"),
        (("--nbworker-timeout", "0"), "--nbworker-timeout must be positive, not 0.0"),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, option: tuple[str, str], message: str
) -> None:
    result = run(pytester, *option)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def case(notebook_result: str = "passed", worker_result: str = "passed", **fields: Any) -> Case:
    found = Case("x.ipynb", 3, "abc", 1, "handler", "COMPLETED")
    found.notebook_result, found.worker_result = Result(notebook_result), Result(worker_result)
    for name, value in fields.items():
        setattr(found, name, value)
    return found


@pytest.mark.parametrize(
    ("replayed", "error", "expected"),
    [
        (case(), None, ("passed", "")),
        (case("passed", "-"), None, ("passed", "")),  # --nbworker-notebook-only
        (case("skipped", "passed"), None, ("passed", "")),  # --no-compare, the worker compared
        (
            case("failed", "passed", differences=["output: got 1, recorded 2"]),
            None,
            ("failed", "notebook: output: got 1, recorded 2\nexecuted notebook: out/x.ipynb"),
        ),
        (
            case("failed", "failed", differences=["a: got 1", "b: got 2"], worker_detail="a: 1"),
            None,
            (
                "failed",
                "notebook:\n    a: got 1\n    b: got 2\nworker: a: 1\nexecuted notebook: out/x.ipynb",
            ),
        ),
        (
            case("passed", "error", worker_detail="pytest did not run: boom\nline 2"),
            None,
            ("failed", "worker:\n    pytest did not run: boom\n    line 2"),
        ),
        (
            case("passed", "passed"),
            "cell 1 raised RuntimeError: no GPU",
            (
                "failed",
                "the notebook failed: cell 1 raised RuntimeError: no GPU\n"
                "executed notebook: out/x.ipynb",
            ),
        ),
        (
            case("not run", "-"),
            None,
            (
                "failed",
                "notebook: the recorded run was not replayed (did its cell's source change?)\n"
                "executed notebook: out/x.ipynb",
            ),
        ),
        (
            case("-", "-", worker_detail="not in the worker (it exports `handler`)"),
            None,
            (
                "skipped",
                "notebook: not replayed (--nbworker-worker-only); "
                "worker: not in the worker (it exports `handler`)",
            ),
        ),
        (
            case("skipped", "-"),
            None,
            (
                "skipped",
                "notebook: not compared (%rp_test --no-compare); "
                "worker: not replayed (--nbworker-notebook-only)",
            ),
        ),
    ],
)
def test_verdict(replayed: Case, error: str | None, expected: tuple[str, str]) -> None:
    report = NotebookReport("x.ipynb", [replayed], error=error, executed="out/x.ipynb")
    assert verdict(replayed, report) == expected


# ------------------------------------------------------------------------ kernels


@pytest.mark.slow
def test_recorded_notebooks_pass(pytester: pytest.Pytester) -> None:
    notebook(pytester, "sentiment")
    notebook(pytester, "streaming")

    result = run(pytester, "-v")

    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "*nbworker: replaying recorded runs in the notebook and the worker*",
            f"sentiment.ipynb::{SENTIMENT[0]}::case-1 PASSED*",
            f"streaming.ipynb::{STREAMING[1]}::case-1 PASSED*",
        ]
    )


@pytest.mark.slow
def test_a_handler_changed_since_recording_fails_its_cases(pytester: pytest.Pytester) -> None:
    flip = '"positive" if score > 0 else "negative"', '"negative" if score > 0 else "positive"'
    notebook(pytester, "sentiment", edit=lambda nb: replace(nb, "%%handler\n", *flip))
    # a float off by 3e-6 relative: beyond the default rtol, in both replays
    nudge = '"love": 2.0,', '"love": 2.00001,'
    notebook(pytester, "sentiment", "nudged", edit=lambda nb: replace(nb, "%%model", *nudge))

    result = run(pytester, "-ra")

    result.assert_outcomes(passed=3, failed=3)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            f"*_ nudged.ipynb::{SENTIMENT[0]}::case-1 (handler) _*",
            "notebook: output['score']: got 3.50001, recorded 3.5 (rtol 1e-06)",
            "worker: *3.50001*3.5*",
            f"*_ sentiment.ipynb::{SENTIMENT[0]}::case-1 (handler) _*",
            "notebook: output['label']: got 'negative', recorded 'positive'",
            "worker: output['label']: got 'negative', recorded 'positive'",
            "executed notebook: *sentiment.ipynb",
            f"*_ sentiment.ipynb::{SENTIMENT[1]}::case-1 (handler) _*",
            "notebook: output['label']: got 'positive', recorded 'negative'",
            "*short test summary info*",
            f"FAILED sentiment.ipynb::{SENTIMENT[0]}::case-1 - notebook: output*",  # one line
        ]
    )
    assert "Traceback" not in out and "nbworker/testing/" not in out


@pytest.mark.slow
def test_rtol_and_timeout_reach_the_replays(pytester: pytest.Pytester) -> None:
    nudge = '"love": 2.0,', '"love": 2.00001,'
    notebook(pytester, "sentiment", "nudged", edit=lambda nb: replace(nb, "%%model", *nudge))
    notebook(
        pytester, "streaming", "slow", edit=lambda nb: insert(nb, 1, "import time\ntime.sleep(60)")
    )

    # The timeout bounds each worker job too: a cold handler.py (the SDK's import alone
    # takes ~1.5 s) must fit in it on a machine busy with the other tests' processes.
    result = run(pytester, "--nbworker-rtol", "1e-4", "--nbworker-timeout", "10")

    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(
        [
            f"*_ slow.ipynb::{STREAMING[0]}::case-1 (handler) _*",
            "the notebook failed: *CellTimeoutError: A cell timed out*after 10 seconds*",
        ]
    )


@pytest.mark.slow
def test_a_setup_cell_that_raises_fails_every_case(pytester: pytest.Pytester) -> None:
    raises = 'raise RuntimeError("no GPU here")'
    notebook(pytester, "streaming", edit=lambda nb: insert(nb, 1, raises))

    result = run(pytester, "--nbworker-notebook-only")

    result.assert_outcomes(failed=2)
    for cell_id in STREAMING:
        result.stdout.fnmatch_lines(
            [
                f"*_ streaming.ipynb::{cell_id}::case-1 (handler) _*",
                "the notebook failed: cell 1 (id *) raised RuntimeError: no GPU here",
            ]
        )
    assert "INTERNALERROR" not in result.stdout.str()


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: notebooks run one at a time")
def test_notebooks_replay_in_parallel_processes(pytester: pytest.Pytester) -> None:
    def slow(nb: Any) -> None:  # each replay lasts at least 2 s
        insert(nb, 1, "import time\ntime.sleep(2)")

    notebook(pytester, "streaming", "one", edit=slow)
    notebook(pytester, "streaming", "two", edit=slow)

    result = run(pytester, "--nbworker-notebook-only", f"--junitxml={pytester.path / 'out.xml'}")

    result.assert_outcomes(passed=4)
    runs = properties(pytester.path / "out.xml")
    one, two = runs[f"one.ipynb.{STREAMING[0]}::case-1"], runs[f"two.ipynb.{STREAMING[0]}::case-1"]
    assert runs[f"one.ipynb.{STREAMING[1]}::case-1"] == one  # one replay for both cases
    assert one["nbworker_pid"] != two["nbworker_pid"]
    started = max(float(one["nbworker_started"]), float(two["nbworker_started"]))
    finished = min(float(one["nbworker_finished"]), float(two["nbworker_finished"]))
    assert started < finished, "the two replays did not overlap"


@pytest.mark.slow
def test_same_named_notebooks_in_two_folders_replay_apart(pytester: pytest.Pytester) -> None:
    """Executed notebooks go to one folder, named as pytest names the notebooks: two
    `streaming.ipynb` replayed at once must not share an executed notebook or its replay."""
    notebook(pytester, "streaming", "a/streaming")
    renamed = '"alpha", "beta"', '"ALPHA", "beta"'
    notebook(pytester, "streaming", "b/streaming", edit=lambda nb: replace(nb, "%%model", *renamed))

    result = run(pytester, "--nbworker-notebook-only", f"--junitxml={pytester.path / 'out.xml'}")

    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            f"*_ b/streaming.ipynb::{STREAMING[0]}::case-1 (handler) _*",
            "notebook:",
            "    output[0]['word']: got 'ALPHA', recorded 'alpha'",
        ]
    )
    runs = properties(pytester.path / "out.xml")  # keyed `a.streaming.ipynb.CELL::case-1`
    executed = {key.split(".", 1)[0]: run["nbworker_executed"] for key, run in runs.items()}
    assert executed["a"].endswith("/a/streaming.ipynb"), executed
    assert executed["b"].endswith("/b/streaming.ipynb"), executed


@pytest.mark.slow
def test_a_case_neither_side_compares_is_skipped(pytester: pytest.Pytester) -> None:
    def only_other(nb: Any) -> None:
        # the runs of `handler` forgotten, a run of `other` (not exported) recorded
        for found in nb.cells:
            if found.cell_type == "code":
                found.outputs = []
        recorded = copy.deepcopy(nbformat.read(DATA / "sentiment.ipynb", as_version=4).cells[9])
        record = recorded.outputs[0]["data"][RECORD]
        record.update(handler="other", output="not exported", job={"id": "t", "input": {}})
        recorded.id, recorded.source = "other-run", '%rp_test other {"input": {}}'
        recorded.outputs[0]["data"] = {RECORD: record}
        nb.cells.append(recorded)

    notebook(pytester, "sentiment", edit=only_other)

    result = run(pytester, "--nbworker-worker-only", "-rs")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [1] sentiment.ipynb: notebook: not replayed (--nbworker-worker-only); "
            "worker: not in the worker (it exports `handler`)"
        ]
    )
