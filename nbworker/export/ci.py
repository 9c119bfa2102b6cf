"""The files that make a worker folder a repository: the GitHub workflow that runs its tests
on every push (`.github/workflows/test.yml`) and its `.gitignore`.

Both are real files in `templates/` (the workflow is checked against GitHub's schema in the
tests); the workflow gets two values put in, the kernel's Python version and whether
`test_input.json` holds a job that completed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from nbworker.export.testfiles import template

__all__ = ["WORKFLOW", "gitignore", "kernel_python", "workflow"]

WORKFLOW = ".github/workflows/test.yml"
_VERSION = re.compile(r"(\d+)\.(\d+)")


def kernel_python(notebook: Mapping[str, Any]) -> str:
    """`3.11` for a notebook whose kernel ran Python 3.11.7; this Python's when it says none."""
    info = notebook.get("metadata", {}).get("language_info", {})
    version = info.get("version") if isinstance(info, Mapping) else None
    match = _VERSION.match(version) if isinstance(version, str) else None
    if match and info.get("name", "python") == "python":
        return f"{match.group(1)}.{match.group(2)}"
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def workflow(*, python_version: str, test_input_completes: bool) -> str:
    """The text of `.github/workflows/test.yml`."""
    if not _VERSION.fullmatch(python_version):
        raise ValueError(f"python_version must be X.Y, not {python_version!r}")
    text = template("worker_tests.yml")
    text = text.replace("__PYTHON_VERSION__", python_version)
    return text.replace("__TEST_INPUT_COMPLETES__", "true" if test_input_completes else "false")


def gitignore() -> str:
    """The text of the worker's `.gitignore`."""
    return template("worker.gitignore")
