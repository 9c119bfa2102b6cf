"""A real IPython InteractiveShell with nbworker installed on a fresh session."""

from __future__ import annotations

import textwrap
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbworker.magics import install
from nbworker.record import RECORD_MIMETYPE
from nbworker.session import Session

RECORD_KEYS = {
    "handler",
    "job",
    "status",
    "output",
    "error",
    "stream",
    "refresh_worker",
    "duration_ms",
    "warnings",
}


class Shell:
    """A real InteractiveShell with nbworker installed on a fresh session."""

    def __init__(self, ipython: InteractiveShell) -> None:
        self.ipython = ipython
        self.session = Session()
        install(ipython, self.session)

    def run(self, cell: str, **kwargs: Any):
        with capture_output() as captured:
            # store_history: each cell gets its own execution count, as in a kernel
            result = self.ipython.run_cell(
                textwrap.dedent(cell).strip("\n"), store_history=True, **kwargs
            )
        result.captured = captured
        return result

    def ok(self, cell: str, **kwargs: Any):
        result = self.run(cell, **kwargs)
        error = result.error_before_exec or result.error_in_exec
        assert error is None, f"{type(error).__name__}: {error}\n{result.captured.stderr}"
        return result

    def usage_error(self, cell: str) -> str:
        result = self.run(cell)
        assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
        return str(result.error_in_exec)

    def records(self, result) -> list[dict]:
        return [
            o.data[RECORD_MIMETYPE] for o in result.captured.outputs if RECORD_MIMETYPE in o.data
        ]

    def record(self, cell: str) -> dict:
        (record,) = self.records(self.ok(cell))
        return record
