"""The errors nbworker raises, all under one root.

    NbworkerError
    ├── CellError         a cell cannot run as its magic asks (kernel)   (.line)
    ├── HandlerError      a function cannot be registered as a handler   (.name)
    ├── HandlerNotFound   no registered handler answers to a name        (.name, .available)
    ├── JobError          a job is not of the form RunPod takes          (.source, .position)
    ├── CacheMiss         no model cache entry of that name (cache); a KeyError too (.name)
    ├── LoadCycle         a model's load needs that model itself (cache)   (.name, .chain)
    ├── MalformedRecord   a run record %rp_test cannot have written (replay) (.cell, .problem)
    ├── ExportError       a notebook cannot be exported (export)         (.cell, .line)
    ├── ServeError        %rp_serve cannot start (serve)
    │   └── QueueFull         %rp_serve holds as many jobs as it may (serve); HTTP 429
    ├── EndpointError     a server or endpoint answered an error (client) (.status_code)
    │   └── EndpointTimeout   no answer by the deadline (client)  (.timeout, .job_id, .status)
    ├── JobFailed         a streamed job ended FAILED/CANCELLED/TIMED_OUT (client) (.result)
    └── DeployError       a deployment cannot be planned as asked (deploy)  (.option)
        ├── DeployRefused     RunPod's API refused or failed a call (deploy) (.call, .status_code)
        └── EndpointUnhealthy no worker ready by the end of the wait (deploy)
                              (.endpoint_id, .waited, .health)

`JobTimeout` (jobs) is not one either: a BaseException raised inside a handler whose time
is up, so that `except Exception` in the handler cannot swallow it.
`ReplayMismatch` (raised by replay, kept here with the others) is not one of them: it is the
test failure `nbworker test` reads, so `except NbworkerError` must not catch it.

Each message is one line a user can act on. The magics turn these into IPython
`UsageError`s, so a notebook shows that line and not a traceback into nbworker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CacheMiss",
    "CellError",
    "DeployError",
    "DeployRefused",
    "EndpointError",
    "EndpointTimeout",
    "EndpointUnhealthy",
    "ExportError",
    "HandlerError",
    "HandlerNotFound",
    "JobError",
    "JobFailed",
    "LoadCycle",
    "MalformedRecord",
    "NbworkerError",
    "QueueFull",
    "ReplayMismatch",
    "ServeError",
]


class NbworkerError(Exception):
    """Root of every error nbworker raises on purpose."""


class CellError(NbworkerError):
    """A cell cannot run as its magic asks (kernel): a syntax error, no function to register,
    a name that is not Python, top-level `await`. The magic shows it as one line."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


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


# --------------------------------------------------------------------- export


class ExportError(NbworkerError):
    """The notebook cannot be exported as it is; `cell` and `line` say where (if known)."""

    def __init__(self, message: str, *, cell: int | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.cell = cell
        self.line = line


# --------------------------------------------------------------------- the model cache


class CacheMiss(NbworkerError, KeyError):
    """No entry of that name is in the cache."""

    def __init__(self, name: str, available: tuple[str, ...]) -> None:
        listed = ", ".join(available) if available else "the cache is empty"
        super().__init__(f"no model named {name!r} is cached ({listed})")
        self.name = name
        self.available = available

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class LoadCycle(NbworkerError):
    """A load needs its own entry: `chain` is the loads, each needing the next
    (`("outer", "inner", "outer")`: outer's loader loaded inner, whose loader asked for outer)."""

    def __init__(self, name: str, chain: tuple[str, ...]) -> None:
        super().__init__(
            f"loading {name!r} needs {name!r} itself ({' -> '.join(chain)}): a model cell "
            "cannot load its own entry"
        )
        self.name = name
        self.chain = chain

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it: the line, not a traceback into nbworker."""
        return [f"{type(self).__name__}: {self}"]


# --------------------------------------------------------------------- %rp_serve (serve)


class ServeError(NbworkerError):
    """The server cannot start as asked (address in use, no token for a public address)."""


class QueueFull(ServeError):
    """`Server.submit` refused a job: too many wait already (HTTP 429)."""


# --------------------------------------------------------------------- replay (nbworker test)


class MalformedRecord(NbworkerError, ValueError):
    """A cell's output holds a run record `%rp_test` could not have written (a hand-edited
    or hostile notebook): `cell` is its index in the notebook, `record` its 1-based number
    among the cell's records, `problem` what is wrong with it."""

    def __init__(self, *, cell: int, cell_id: str | None, record: int, problem: str) -> None:
        where = f"cell {cell}" + (f" (id {cell_id})" if cell_id else "")
        super().__init__(
            f"{where}: run record {record} is malformed: {problem}; clear the cell's output or "
            "record the run again with %rp_test"
        )
        self.cell = cell
        self.cell_id = cell_id
        self.record = record
        self.problem = problem


class ReplayMismatch(Exception):
    """A `%rp_test` run differs from the run the notebook recorded. Not an NbworkerError:
    it is the test failure itself, which fails that cell and nothing else. `outcome` is the
    `replay.Outcome` (not imported here: errors.py imports nothing of nbworker)."""

    def __init__(self, outcome: Any) -> None:
        super().__init__(outcome.summary())
        self.outcome = outcome

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it: the differences, not a traceback into nbworker."""
        return [f"ReplayMismatch: {self}"]


# --------------------------------------------------------------------- endpoints (client)


class EndpointError(NbworkerError):
    """A request to an endpoint failed: HTTP `status_code` (None: no HTTP answer)."""

    def __init__(self, status_code: int | None, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.body = body


class EndpointTimeout(EndpointError):
    """No answer in time: a request's own timeout, or the deadline of `run_sync`/`stream`
    (`timeout`, in seconds). `job_id` and `status` are the job's as last seen, if any."""

    def __init__(
        self,
        message: str,
        *,
        timeout: float,
        job_id: str | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(None, message)
        self.timeout = timeout
        self.job_id = job_id
        self.status = status


class JobFailed(NbworkerError):
    """A streamed job ended in FAILED, CANCELLED or TIMED_OUT; `result` is the last answer."""

    def __init__(self, result: Mapping[str, Any]) -> None:
        self.result = dict(result)
        self.job_id = result.get("id")
        self.status = result.get("status")
        self.error = result.get("error")
        detail = " ".join(str(self.error).split()) if self.error else ""
        if len(detail) > MESSAGE_LIMIT:
            detail = detail[: MESSAGE_LIMIT - 3] + "..."
        detail = f": {detail}" if detail else ""
        super().__init__(f"job {self.job_id} ended {self.status}{detail}")


MESSAGE_LIMIT = 300  # characters of an endpoint's error kept in a message (client's too)


# --------------------------------------------------------------------- nbworker deploy (deploy)


class DeployError(NbworkerError):
    """A deployment cannot be planned as asked: a bad option or source, no API key. `option`
    names the option at fault (`--env`, `--image`), or None. Nothing was sent."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class DeployRefused(DeployError):
    """RunPod's API refused or failed the SDK call `call` (`create_template`...): a bad key,
    an error in the answer, no answer; `status_code` is the HTTP status, when known."""

    def __init__(self, message: str, *, call: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.call = call
        self.status_code = status_code


class EndpointUnhealthy(DeployError):
    """The endpoint had no worker ready after `waited` seconds; `health` is its last
    `/health` answer (None: none came)."""

    def __init__(
        self, message: str, *, endpoint_id: str, waited: float, health: Mapping[str, Any] | None
    ) -> None:
        super().__init__(message)
        self.endpoint_id = endpoint_id
        self.waited = waited
        self.health = dict(health) if health is not None else None
