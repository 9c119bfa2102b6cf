"""The `tests/` folder an exported worker ships with: its cases and the pytest files replaying them.

The worker gets its cases (`cases.py`) as `tests/cases.json`, plus `tests/test_handler.py`,
which replays each job against `handler.py` under the real RunPod SDK (`--test_input`, or the
SDK's local API server for streaming handlers), and `tests/test_notebook.py`, which re-runs
the notebook copy with papermill and checks that its runs still give the same. Both compare
with `tests/compare.py`, nbworker's own compare module, which `nbworker test` uses in the
notebook too. The generated files are plain pytest and never import nbworker (except
test_notebook.py, which needs it to run the notebook and skips without it).

The test files are real Python files in `templates/`, linted and type-checked with the rest
of nbworker and copied byte for byte (as compare.py is): whatever they need to know of the
notebook (the handler's name, the notebook copy's name, the cases) they read from
`tests/cases.json` at import. Same input, byte-identical files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbworker import __version__, compare
from nbworker.export.cases import (
    CASE_STATUSES,
    CASES_FORMAT,
    DEFAULT_CUDA_VERSIONS,
    DEFAULT_GPU_TYPE,
    cases_json,
    example_job,
    hub_tests,
    select_cases,
)

__all__ = [
    "CASES_FORMAT",
    "CASE_STATUSES",
    "DEFAULT_CUDA_VERSIONS",
    "DEFAULT_GPU_TYPE",
    "FIXED",
    "TEMPLATES",
    "cases_json",
    "example_job",
    "hub_tests",
    "select_cases",
    "template",
    "worker_tests",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The files of `tests/` that are the same in every worker (nbworker's own text, nothing of
# the notebook in them); tests/test_export_security.py scans them once for all workers.
FIXED = frozenset(
    {
        "tests/compare.py",
        "tests/test_handler.py",
        "tests/test_notebook.py",
        "tests/requirements.txt",
    }
)
# the worker's test file -> its template, for a plain handler and for a generator
_HANDLER_TESTS = {False: "handler_tests.py", True: "stream_handler_tests.py"}
_NOTEBOOK_TESTS = "notebook_tests.py"


def template(name: str) -> str:
    """The text of `templates/NAME`, as the worker gets it."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


def worker_tests(
    *, cases: Sequence[Mapping[str, Any]], handler: str, streaming: bool, notebook_name: str
) -> dict[str, str]:
    """The worker's `tests/` folder: relative path -> text.

    `cases` come from `select_cases`; `notebook_name` is the file name of the notebook
    copy in `tests/` (the caller writes the copy).
    """
    if not handler.isidentifier():
        raise ValueError(f"handler must be a Python name, not {handler!r}")
    if "/" in notebook_name or "\\" in notebook_name or not notebook_name.endswith(".ipynb"):
        raise ValueError(f"notebook_name must be a file name ending in .ipynb: {notebook_name!r}")
    names = [case["name"] for case in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique: {names}")
    return {
        "tests/cases.json": cases_json(
            cases, handler=handler, streaming=streaming, notebook_name=notebook_name
        ),
        "tests/compare.py": Path(compare.__file__).read_text(encoding="utf-8"),
        "tests/test_handler.py": template(_HANDLER_TESTS[streaming]),
        "tests/test_notebook.py": template(_NOTEBOOK_TESTS),
        "tests/requirements.txt": _requirements(),
    }


def _requirements() -> str:
    """`tests/requirements.txt` (not Python: the one text with a value put in)."""
    return (
        "# What tests/ needs beyond the worker's requirements.txt; the worker itself does not "
        "need these.\n"
        "pytest>=8\n"
        "requests>=2.31\n"
        "# tests/test_notebook.py only (it is skipped without them):\n"
        "papermill>=2.5\n"
        "nbformat>=5.9\n"
        f"nbworker>={__version__}\n"
    )
