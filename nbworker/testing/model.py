"""What `nbworker test` works on and gives back: its options, a case per recorded run, the
result of each side's replay, a report per notebook, and the exit codes.

Plain data, no I/O: the replays (`notebook.py`, `worker.py`), the report (`report.py`) and
the pytest plugin all read and fill these, and they cross the process pool pickled. Kept
apart from the package's `__init__` so that those modules import the data without
importing the orchestration that imports them (no import circle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from nbworker.compare import DEFAULT_REL_TOL

__all__ = [
    "EXIT_MISMATCH",
    "EXIT_NOTEBOOK",
    "EXIT_NO_CASES",
    "EXIT_OK",
    "EXIT_USAGE",
    "Case",
    "NotebookReport",
    "Options",
    "Result",
]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_NOTEBOOK, EXIT_NO_CASES = 0, 1, 2, 3, 5


class Result(str, Enum):
    """What one side (the notebook or the worker) made of a case. A `str`: its value is
    what the summary, the JUnit XML and pytest show, and it equals its plain string."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # notebook: %rp_test --no-compare; worker: the worker's test skipped
    ERROR = "error"  # worker only: the export or the worker's pytest failed to run it
    NOT_RUN = "not run"  # notebook only: the replay never reached the recorded run
    NOT_REPLAYED = "-"  # that side was not replayed (--notebook-only, not in the worker)
    DESELECTED = "deselected"  # -k left the case out

    def __str__(self) -> str:  # the value, on every Python (3.11 changed Enum's str/format)
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


# A case passes when neither side gives anything but these ...
PASSING = frozenset({Result.PASSED, Result.SKIPPED, Result.NOT_REPLAYED, Result.DESELECTED})
# ... and it counts as compared when a side gives one of these (a recorded run the notebook
# never reached was due to be compared: it fails, it is not "compared nowhere").
COMPARING = frozenset({Result.PASSED, Result.FAILED, Result.NOT_RUN, Result.ERROR})


@dataclass
class Options:
    """How to replay (the command line's options)."""

    notebook: bool = True  # replay in a fresh kernel
    worker: bool = True  # replay against the exported worker
    select: str | None = None  # -k: only cases whose id matches
    timeout: float | None = None  # seconds per cell / per worker job
    rtol: float = DEFAULT_REL_TOL
    output_dir: str | None = None  # executed notebooks (the report) go there
    parameters: dict[str, Any] = field(default_factory=dict)  # papermill -p
    kernel_name: str | None = None

    def __post_init__(self) -> None:
        """ValueError naming the option (as `rtol ...`), for each front end to prefix."""
        if not self.rtol >= 0:
            raise ValueError(f"rtol must be >= 0, not {self.rtol}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")


@dataclass
class Case:
    """One recorded `%rp_test` run, and what replaying it gave."""

    notebook: str  # the notebook's file name
    cell: int  # index in the stored notebook
    cell_id: str | None
    index: int  # 1-based among the runs recorded in that cell
    handler: str
    status: str  # recorded status
    notebook_result: Result = Result.NOT_RUN
    differences: list[str] = field(default_factory=list)
    notebook_ms: float | None = None
    worker_result: Result = Result.NOT_REPLAYED
    worker_detail: str = ""
    worker_seconds: float | None = None

    @property
    def id(self) -> str:
        """`notebook.ipynb::cell-id::case-n`, as pytest shows it."""
        return f"{self.notebook}::{self.cell_id or f'cell-{self.cell}'}::case-{self.index}"

    @property
    def compared(self) -> bool:
        """Whether either side compared this case with its record."""
        return self.notebook_result in COMPARING or self.worker_result in COMPARING

    @property
    def passed(self) -> bool:
        return self.notebook_result in PASSING and self.worker_result in PASSING


@dataclass
class NotebookReport:
    """What replaying one notebook gave."""

    path: str
    cases: list[Case] = field(default_factory=list)  # the cases -k selected
    error: str | None = None  # the notebook failed outside a test
    notes: list[str] = field(default_factory=list)
    executed: str | None = None  # the executed notebook (the report)
    seconds: float = 0.0
    worker_seconds: float = 0.0
    name: str = ""  # in case ids and the summary: the file name, or a path where names clash
    deselected: int = 0  # recorded cases -k left out

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.path).name

    @property
    def exit_code(self) -> int:
        """3 the notebook failed, 1 a case did not pass, 5 no case was compared, else 0."""
        if self.error is not None:
            return EXIT_NOTEBOOK
        if not all(case.passed for case in self.cases):
            return EXIT_MISMATCH
        return EXIT_OK if any(case.compared for case in self.cases) else EXIT_NO_CASES
