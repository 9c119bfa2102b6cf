"""What many test modules need and nothing of nbworker gives them: the run records of a
notebook, a notebook written with records, a free port on 127.0.0.1, and the frames of a
traceback that come from nbworker's own package.

Plain functions, no pytest import at module level: the benchmarks (bench/common.py) use
them too. Fixtures live in conftest.py.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbworker
from nbworker.record import RECORD_MIMETYPE, recorded_runs

ROOT = Path(__file__).resolve().parent.parent  # the checkout, whatever its folder is named
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = Path(nbworker.__file__).resolve().parent  # nbworker's own source files

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


# ----------------------------------------------------------------------------- records


def notebook_records(notebook: Any) -> list[tuple[int, dict[str, Any]]]:
    """The run records of a notebook (an nbformat notebook or its JSON), each with the
    index of its cell, in order."""
    return [
        (index, record)
        for index, cell in enumerate(notebook["cells"])
        for record in recorded_runs(cell)
    ]


def records_of(path: str | Path) -> list[dict[str, Any]]:
    """The run records of the notebook file at `path`, in order."""
    import nbformat

    return [record for _, record in notebook_records(nbformat.read(path, as_version=4))]


def record_output(record: Any) -> Any:
    """A display_data output that holds `record` as the run record."""
    from nbformat.v4 import new_output

    return new_output("display_data", data={RECORD_MIMETYPE: record})


def write_notebook(
    path: Path, sources: Iterable[str], *, records: dict[int, list[Any]] | None = None
) -> Path:
    """A notebook of code cells with the python3 kernelspec, written to `path`;
    `records` maps a cell's index to the run records its outputs hold."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    for index, held in (records or {}).items():
        notebook.cells[index].outputs = [record_output(record) for record in held]
    nbformat.write(notebook, str(path))
    return path


# ----------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (the OS's choice of port 0). A
    server started on it later may still lose it to another program: servers that can
    should bind port 0 themselves."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- tracebacks

# A frame's file in Python's traceback (`File "PATH", line N`) and in IPython's
# (`File PATH:N, in NAME`, PATH perhaps with ~ for the home folder).
_FRAME_FILE = re.compile(r'^\s*File (?:"([^"]+)", line \d+|(\S+?):\d+, in )', re.MULTILINE)


def package_frames(traceback_text: str) -> list[str]:
    """The files of nbworker's own package that a traceback's frames name. Told apart by
    path, not by the word "nbworker": a checkout folder of that name (what `git clone`
    gives) holds the tests' own files too."""
    frames = []
    for quoted, bare in _FRAME_FILE.findall(traceback_text):
        name = quoted or bare
        if Path(name).expanduser().resolve().is_relative_to(PACKAGE):
            frames.append(name)
    return frames


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`code` run by this interpreter in a process of its own (text output captured); a
    hang fails the caller with subprocess.TimeoutExpired."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
