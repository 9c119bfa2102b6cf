"""The errors nbworker raises, all under one root.

    NbworkerError
    ├── HandlerError      a function cannot be registered as a handler   (.name)
    ├── HandlerNotFound   no registered handler answers to a name        (.name, .available)
    ├── JobError          a job is not of the form RunPod takes          (.source, .position)
    ├── CacheMiss         no model cache entry of that name (cache); a KeyError too (.name)
    ├── LoadCycle         a model's load needs that model itself (cache)   (.name, .chain)
    ├── MalformedRecord   a run record %rp_test cannot have written (replay) (.cell, .problem)
    ├── ExportError       a notebook cannot be exported (export.select)  (.cell, .line)
    ├── ServeError        %rp_serve cannot start (serve)
    │   └── QueueFull         %rp_serve holds as many jobs as it may (serve); HTTP 429
    ├── EndpointError     a server or endpoint answered an error (client) (.status_code)
    │   └── EndpointTimeout   no answer by the deadline (client)  (.timeout, .job_id, .status)
    └── JobFailed         a streamed job ended FAILED/CANCELLED/TIMED_OUT (client) (.result)

`ReplayMismatch` (replay) is not one of them: it is the test failure `nbworker test` reads.

Each message is one line a user can act on. The magics turn these into IPython
`UsageError`s, so a notebook shows that line and not a traceback into nbworker.
"""

from __future__ import annotations

__all__ = ["HandlerError", "HandlerNotFound", "JobError", "NbworkerError"]


class NbworkerError(Exception):
    """Root of every error nbworker raises on purpose."""


class HandlerError(NbworkerError):
    """A function cannot be registered as a RunPod handler."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class HandlerNotFound(NbworkerError):
    """No registered handler answers to `name` (None: no default could be chosen)."""

    def __init__(self, message: str, *, name: str | None, available: tuple[str, ...]) -> None:
        super().__init__(message)
        self.name = name
        self.available = available


class JobError(NbworkerError):
    """A job is not `{"input": ...}` JSON; `position` is the character offset of a JSON error."""

    def __init__(
        self, message: str, *, source: str | None = None, position: int | None = None
    ) -> None:
        super().__init__(message)
        self.source = source
        self.position = position
