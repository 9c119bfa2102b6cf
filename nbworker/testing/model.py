"""What `nbworker test` works on and gives back: its options, a case per recorded run, the
result of each side's replay, a report per notebook, and the exit codes.

Plain data, no I/O: the replays (`notebook.py`, `worker.py`), the report (`report.py`) and
the pytest plugin all read and fill these, and they cross the process pool pickled. Kept
apart from the package's `__init__` so that those modules import the data without
importing the orchestration that imports them (no import circle).
"""

from __future__ import annotations

import fnmatch
import re
import statistics
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from nbworker.compare import DEFAULT_REL_TOL

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_REMOTE_TIMEOUT",
    "EXIT_MISMATCH",
    "EXIT_NOTEBOOK",
    "EXIT_NO_CASES",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_TIMEOUT",
    "Case",
    "NotebookReport",
    "Options",
    "Result",
    "selected",
]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_NOTEBOOK, EXIT_NO_CASES = 0, 1, 2, 3, 5
DEFAULT_CONCURRENCY = 4  # jobs in flight at once against a server (--concurrency)
DEFAULT_REMOTE_TIMEOUT = 600.0  # seconds a case may take on a server without --timeout
MAX_TIMEOUT = 7 * 24 * 3600.0  # a socket's timeout overflows past ~1e10 s; inf is no number
_URL = re.compile(r"https?://[^/\s?#]+(?:[/?#]\S*)?")  # http(s)://host[:port][/path]
_ENDPOINT_ID = re.compile(r"[A-Za-z0-9_-]+")  # as nbworker.client takes it


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
    # A running server to replay against instead of the kernel and the worker (remote.py):
    # any RunPod-style server (`url`), or a deployed endpoint's id (`endpoint`).
    url: str | None = None
    endpoint: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY  # jobs sent at once to the server
    handler: str | None = None  # whose cases: default the one export exports

    def __post_init__(self) -> None:
        """ValueError naming the option (as `rtol ...`), for each front end to prefix."""
        if not self.rtol >= 0:
            raise ValueError(f"rtol must be >= 0, not {self.rtol}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")
        if self.timeout is not None and not self.timeout <= MAX_TIMEOUT:  # inf, 1e12
            raise ValueError(
                f"timeout must be at most {MAX_TIMEOUT:g} (a week), not {self.timeout}"
            )
        if self.url is not None and self.endpoint is not None:
            raise ValueError("url and endpoint exclude each other: give one")
        if self.url is not None and not _URL.fullmatch(self.url):
            raise ValueError(f"url must be http(s)://HOST[:PORT], not {self.url!r}")
        if self.endpoint is not None and not _ENDPOINT_ID.fullmatch(self.endpoint):
            raise ValueError(
                f"endpoint must be an endpoint id (letters, digits, - and _), not {self.endpoint!r}"
            )
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise ValueError(f"concurrency must be a whole number, not {self.concurrency!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")

    @property
    def remote(self) -> str | None:
        """The server replayed against, as the report names it (None: kernel and worker)."""
        if self.url is not None:
            from nbworker.transport import without_password

            return without_password(self.url)  # the report is printed, kept in CI logs
        return None if self.endpoint is None else f"endpoint {self.endpoint}"


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
    # against a running server (`--url` / `--endpoint`): differences one a line
    remote_result: Result = Result.NOT_REPLAYED
    remote_detail: str = ""
    remote_seconds: float | None = None  # the job's round trip

    @property
    def id(self) -> str:
        """`notebook.ipynb::cell-id::case-n`, as pytest shows it."""
        return f"{self.notebook}::{self.cell_id or f'cell-{self.cell}'}::case-{self.index}"

    @property
    def compared(self) -> bool:
        """Whether any side compared this case with its record."""
        return any(
            result in COMPARING
            for result in (self.notebook_result, self.worker_result, self.remote_result)
        )

    @property
    def passed(self) -> bool:
        return (
            self.notebook_result in PASSING
            and self.worker_result in PASSING
            and self.remote_result in PASSING
        )


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
    # a replay against a server (remote.py): which one, and its times in seconds
    remote: str | None = None  # the URL, or `endpoint ID`
    remote_seconds: float = 0.0  # the whole remote replay
    cold_start_seconds: float | None = None  # see remote.py: the first job's extra wait
    job_seconds: list[float] = field(default_factory=list)  # round trips after the first
    execution_seconds: list[float] = field(default_factory=list)  # the server's executionTime

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.path).name

    def job_times(self) -> str | None:
        """The remote replay's times in a line (None when nothing was sent)."""
        if self.remote is None or (not self.job_seconds and self.cold_start_seconds is None):
            return None
        words = []
        if self.cold_start_seconds is not None:
            words.append(f"cold start {self.cold_start_seconds:.2f} s")
        if self.job_seconds:
            times = self.job_seconds
            words.append(
                f"jobs: median {statistics.median(times):.2f} s, max {max(times):.2f} s "
                f"over {len(times)}"
            )
        if self.execution_seconds:
            times = self.execution_seconds
            words.append(
                f"executionTime: median {statistics.median(times):.2f} s, max {max(times):.2f} s"
            )
        return "; ".join(words)

    @property
    def exit_code(self) -> int:
        """3 the notebook failed, 1 a case did not pass, 5 no case was compared, else 0."""
        if self.error is not None:
            return EXIT_NOTEBOOK
        if not all(case.passed for case in self.cases):
            return EXIT_MISMATCH
        return EXIT_OK if any(case.compared for case in self.cases) else EXIT_NO_CASES


def selected(case: Case, pattern: str | None) -> bool:
    """-k: a substring of the case id or its handler, or a glob of the id."""
    if not pattern:
        return True
    text = f"{case.id} {case.handler}".lower()
    return pattern.lower() in text or fnmatch.fnmatch(case.id.lower(), pattern.lower())
