"""The second replay of `nbworker test`: the same cases against the exported worker.

The notebook is exported to a temporary folder, and the worker's own
`tests/test_handler.py` runs there under pytest in a subprocess: `handler.py` under the real
runpod SDK, compared with the recorded runs by the code the notebook replay compares with.
Its JUnit XML gives each case's result, matched to the notebook's cases by the numbering
export gives them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nbworker.testing.model import Case, Options, Result

__all__ = ["WORKER_CASE", "replay_worker"]

WORKER_CASE = re.compile(r"\[(case-\d+)")  # a case's name in the worker's pytest ids


def replay_worker(path: Path, stored: Any, cases: list[Case], options: Options) -> list[str]:
    """Export the notebook and run the exported tests/test_handler.py; fill in each case's
    worker result. Returns notes."""
    from nbworker.export import ExportError, export_notebook
    from nbworker.export.cases import cases_by_place
    from nbworker.replay import expected_runs

    with tempfile.TemporaryDirectory(prefix="nbworker-worker-") as folder:
        try:
            report = export_notebook(path, folder, handler=options.handler)
        except ExportError as err:
            for case in cases:
                case.worker_result, case.worker_detail = Result.ERROR, f"export failed: {err}"
            return [f"the worker could not be exported: {err}"]
        records = [
            dict(record, cell=expected.cell, _index=index)
            for expected in expected_runs(stored)
            for index, record in enumerate(expected.records, 1)
        ]
        exported = cases_by_place(records, handler=report.handler)  # numbered as export does
        names = {place: case["name"] for place, case in exported.items()}
        wanted = {names[(c.cell, c.index)]: c for c in cases if (c.cell, c.index) in names}
        for case in cases:
            if (case.cell, case.index) not in names:
                case.worker_result = Result.NOT_REPLAYED
                case.worker_detail = (
                    f"not in the worker (it exports `{report.handler}`)"
                    if case.handler != report.handler
                    else f"a {case.status} run is no worker case"
                )
        if not wanted:
            return [f"no recorded case of `{report.handler}` to replay against the worker"]
        Path(folder, "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not ours
        junit = Path(folder, "junit.xml")
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}  # not for this run
        env["WORKER_TEST_REL_TOL"] = repr(options.rtol)
        if options.timeout:
            env["WORKER_TEST_TIMEOUT"] = repr(options.timeout)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/test_handler.py",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                "-o",
                "junit_family=xunit2",
            ],
            cwd=folder,
            capture_output=True,
            text=True,
            env=env,
        )
        if not junit.exists():
            for case in wanted.values():
                case.worker_result = Result.ERROR
                case.worker_detail = "pytest did not run: " + done.stderr[-500:].strip()
            return [f"the worker's tests did not run (exit {done.returncode})"]
        _read_results(junit, wanted)
    return []


def _read_results(junit: Path, wanted: dict[str, Case]) -> None:
    """Fill in each wanted case's worker result from the worker's JUnit XML, where a test's
    name holds its case's (`[case-N`)."""
    import xml.etree.ElementTree as ElementTree

    for testcase in ElementTree.parse(junit).getroot().iter("testcase"):
        found = WORKER_CASE.search(testcase.get("name", ""))
        case = wanted.get(found[1]) if found else None
        if case is None:
            continue
        case.worker_seconds = float(testcase.get("time") or 0.0)
        problem = testcase.find("failure")
        if problem is None:
            problem = testcase.find("error")
        skipped = testcase.find("skipped")
        if problem is not None:
            case.worker_result = Result.FAILED
            case.worker_detail = _first_assertion(problem.get("message") or problem.text)
        elif skipped is not None:
            case.worker_result = Result.SKIPPED
            case.worker_detail = skipped.get("message") or ""
        else:
            case.worker_result = Result.PASSED


def _first_assertion(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("AssertionError: "):
            return line[len("AssertionError: ") :]
    return lines[0] if lines else "failed"
