"""The replay of `nbworker test --url URL` / `--endpoint ID`: the recorded cases sent to a
running server instead of a fresh kernel and the exported worker.

Any RunPod-style server: the exported worker under `python handler.py --rp_serve_api`,
`%rp_serve` in a kernel, or a deployed endpoint (RunPod's API, `RUNPOD_API_KEY`). The cases
are the ones export makes of the notebook (`select_cases`: the COMPLETED and FAILED runs of
the handler export would export, or of `--handler`), compared by the code the other replays
compare with (`nbworker.compare`):

- Each job is sent as `{"input": ...}` only (a recorded webhook or policy is not sent). An
  input that is not a JSON object is SKIPPED (RunPod's API and the SDK's server refuse it),
  and so is a `%rp_test --no-compare` case; runs of other handlers, TIMED_OUT and CANCELLED
  runs are not replayed.
- A handler that streams (export's rule: a `yield` in its body) goes through `/run` then
  `/stream/{id}` (the SDK's server runs the job on the POST of /stream), its chunks compared
  with the recorded stream and its end with the recorded status and error; any other through
  `/runsync` (polling /status while the job runs), by status, output and error.
- Each case has `options.timeout` (default 600 s) for all of its requests and polls; no
  answer by then fails it (`no answer in N s (job ID still IN_QUEUE)`), and a deployed
  endpoint's job is cancelled.
- The first case is sent alone: its wait is the cold start (the answer's `delayTime` where
  the server gives one, as a deployed endpoint does; otherwise its round trip beyond the
  median of the others). The rest go `options.concurrency` at a time. The job times in the
  report (median, max; the server's `executionTime` where given) leave the first one out.
- A server that cannot be reached, answers what is no JSON object, redirects, refuses the
  key or has no such route is the notebook's error, one line (exit 3); the cases not yet
  sent are not.
- The SDK's local server answers HTTP 500 where a FAILED job's error is not a string, a
  generator raised, or a handler returned `{}` (recorded as COMPLETED with no output): such
  a case is SKIPPED, saying so, as the worker's own tests do.
- Ctrl-C stops the sending at once: no new case goes out, the process does not wait for the
  jobs in flight, and a deployed endpoint's jobs in flight are cancelled (a few seconds at
  most). A URL's password is never shown (`http://user:***@host`).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbworker import compare
from nbworker.testing.answers import Answer, differences
from nbworker.testing.model import DEFAULT_REMOTE_TIMEOUT, Case, NotebookReport, Options, Result

__all__ = ["NOT_AN_OBJECT", "Planned", "plan_notebook", "replay_remote", "run_planned"]

NOT_AN_OBJECT = "its input is not a JSON object: RunPod's API and the SDK's local server refuse it"
NO_COMPARE = "%rp_test --no-compare"
# HTTP answers that say the server is no RunPod-style server we may use: every case would
# get the same (no key or a wrong one, no such route or method)
UNUSABLE = frozenset({401, 403, 404, 405})
CANCEL_SECONDS = 5.0  # for the cancel of a job that ran out of time, or of those Ctrl-C left


@dataclass
class Planned:
    """A case and the recorded case it replays (`select_cases`' dict; None: not sent)."""

    case: Case
    recorded: dict[str, Any] | None = None


class _Unusable(Exception):
    """The server cannot be used at all: its one line is the notebook's error."""


@dataclass
class _Run:
    """One remote replay's shared state: the first unusable answer stops the sending."""

    options: Options
    streaming: bool
    make_endpoint: Callable[[], Any]
    local: threading.local = field(default_factory=threading.local)
    broken: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)  # Ctrl-C: send no more
    running: set[str] = field(default_factory=set)  # ids of the jobs in flight

    def endpoint(self) -> Any:
        """An Endpoint per thread: a requests.Session is not shared across threads."""
        if getattr(self.local, "endpoint", None) is None:
            self.local.endpoint = self.make_endpoint()
        return self.local.endpoint

    def started(self, job_id: str) -> None:
        with self.lock:
            self.running.add(job_id)

    def ended(self, job_id: str) -> None:
        with self.lock:
            self.running.discard(job_id)

    def cancel_running(self) -> None:
        """Ctrl-C: cancel the deployed endpoint's jobs still in flight, within a few
        seconds in all (a job left running costs money); a local server's are left."""
        if self.options.endpoint is None:
            return
        with self.lock:
            ids = sorted(self.running)
        deadline = time.monotonic() + CANCEL_SECONDS
        for job_id in ids:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(Exception):
                self.endpoint().cancel(job_id, timeout=left)


# ------------------------------------------------------------------------ the cases


def plan_notebook(
    stored: Any, cases: list[Case], handler: str | None
) -> tuple[str, bool, list[Planned]]:
    """The handler whose cases are replayed (`handler`, or the one export would export),
    whether it streams, and a `Planned` per case; ExportError if no handler can be chosen."""
    from nbworker.export import handler_streams, records_with_options
    from nbworker.export.cases import cases_by_place
    from nbworker.export.cells import read_cells
    from nbworker.export.select import Selection, choose_handler

    cells = read_cells(stored)
    chosen, name = choose_handler(cells, handler)
    streaming = handler_streams(Selection(name=name, handler=chosen))
    records: list[dict[str, Any]] = []
    for cell in cells:
        for number, record in enumerate(records_with_options(cell), 1):
            if isinstance(record, dict):
                records.append(dict(record, _index=number))
    by_place = cases_by_place(records, handler=name)  # ValueError: a record no run could leave
    return name, streaming, [Planned(case, by_place.get((case.cell, case.index))) for case in cases]


def _not_sent(planned: list[Planned], handler: str) -> list[Planned]:
    """Settle the cases that are not sent; the ones to send, in order."""
    send = []
    for item in planned:
        case, recorded = item.case, item.recorded
        if recorded is None:
            case.remote_result = Result.NOT_REPLAYED
            case.remote_detail = (
                f"not the served handler's (`{handler}`; --handler NAME picks another)"
                if case.handler != handler
                else f"a {case.status} run is no case"
            )
        elif not recorded.get("compare", True):
            case.remote_result, case.remote_detail = Result.SKIPPED, NO_COMPARE
        elif not isinstance(recorded["job"].get("input"), dict):
            case.remote_result, case.remote_detail = Result.SKIPPED, NOT_AN_OBJECT
        else:
            send.append(item)
    return send


# ------------------------------------------------------------------------ sending


def _loopback(host: str) -> bool:
    """Whether a URL's host is this machine (127.0.0.0/8, ::1, localhost): no proxy for it."""
    import ipaddress

    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fresh_adapter() -> Any:
    """requests' adapter that drops its idle pooled connections before each request (each
    thread's session sends one request at a time, so none is in use then)."""
    from requests.adapters import HTTPAdapter

    class FreshConnections(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            self.poolmanager.clear()
            return super().send(request, *args, **kwargs)

    return FreshConnections()


def _endpoint_factory(options: Options, timeout: float) -> Callable[[], Any]:
    from nbworker.client import Endpoint

    def make() -> Any:
        import requests

        session = requests.Session()
        # A fresh connection per request: the SDK's server closes a connection after an
        # HTTP 500, and a job whose kept-alive connection broke must not be sent twice. The
        # header alone is not enough: urllib3 pools the connection unless the *answer* says
        # close, and a server that closes it (as asked) just after answering races the next
        # request onto a dead socket ("closed the connection without answering").
        session.headers["Connection"] = "close"
        for scheme in ("http://", "https://"):
            session.mount(scheme, _fresh_adapter())
        if options.url is not None:
            session.trust_env = not _loopback(urlsplit(options.url).hostname or "")  # no proxy
            return Endpoint(options.url, timeout=timeout, retries=1, backoff=0.25, session=session)
        return Endpoint(
            endpoint_id=options.endpoint, timeout=timeout, retries=1, backoff=0.25, session=session
        )

    return make


def _seconds(answer: Mapping[str, Any], key: str) -> float | None:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value) / 1000


def _send(run: _Run, job: dict[str, Any], timeout: float) -> Answer:
    """One job to the server: its answer; EndpointError / EndpointTimeout as the client
    raises them."""
    from nbworker.client import EndpointTimeout, JobFailed

    endpoint = run.endpoint()
    started = time.perf_counter()
    if not run.streaming:
        heard: list[str] = []

        def on_job(job_id: str) -> None:
            heard.append(job_id)
            run.started(job_id)

        try:
            answer = endpoint.run_sync(job, timeout=timeout, on_job=on_job)
        finally:
            for job_id in heard:
                run.ended(job_id)
        return Answer(
            answer.get("status"),
            answer.get("output"),
            answer.get("error"),
            seconds=time.perf_counter() - started,
            delay=_seconds(answer, "delayTime"),
            execution=_seconds(answer, "executionTime"),
        )
    queued = endpoint.run(job, timeout=timeout)  # a slow-drip answer meets the deadline too
    chunks: list[Any] = []
    left = max(0.001, timeout - (time.perf_counter() - started))
    result = Answer("COMPLETED", chunks=chunks, delay=_seconds(queued, "delayTime"))
    run.started(queued["id"])
    try:
        for chunk in endpoint.stream(queued["id"], timeout=left):
            chunks.append(chunk)
    except JobFailed as err:
        result.status, result.error = err.status, err.error
    except EndpointTimeout as err:
        err.job_id = err.job_id or queued["id"]  # a deadline mid-poll knows no job
        raise
    finally:
        run.ended(queued["id"])
    result.seconds = time.perf_counter() - started
    return result


def _timed_out(run: _Run, err: Any, timeout: float) -> str:
    """The case's detail for a job with no answer in time; a deployed job is cancelled."""
    job_id, status = getattr(err, "job_id", None), getattr(err, "status", None) or "IN_QUEUE"
    if job_id is None:
        return f"no answer in {timeout:g} s (the server sent none)"
    if run.options.endpoint is not None:
        try:
            run.endpoint().cancel(job_id, timeout=CANCEL_SECONDS)
            status += ", cancelled"
        except Exception as problem:
            status += f", not cancelled: {problem}"
    return f"no answer in {timeout:g} s (job {job_id} still {status})"


def _unusable(err: Any) -> bool:
    """Whether an EndpointError says the server cannot be used at all (not this case): a
    redirect too (not followed, so every case would get it: http:// for https://, a login)."""
    code = err.status_code
    return code is None or 200 <= code < 400 or code in UNUSABLE


def _replay(run: _Run, item: Planned, timeout: float) -> Answer | None:
    """Send one case and settle it; its answer (None when none came). `_Unusable` for a
    server that cannot be used."""
    from nbworker.client import EndpointError, EndpointTimeout

    case, recorded = item.case, item.recorded
    assert recorded is not None
    if run.broken is not None:
        case.remote_result = Result.NOT_REPLAYED
        case.remote_detail = "not sent: the server failed (see the notebook's error)"
        return None
    started = time.perf_counter()
    try:
        answer = _send(run, {"input": recorded["job"]["input"]}, timeout)
    except EndpointTimeout as err:
        case.remote_result, case.remote_detail = Result.FAILED, _timed_out(run, err, timeout)
        case.remote_seconds = time.perf_counter() - started
        return None
    except EndpointError as err:
        if _unusable(err):
            case.remote_result = Result.NOT_REPLAYED
            case.remote_detail = "no answer: see the notebook's error"
            with run.lock:
                run.broken = run.broken or str(err)
            raise _Unusable(str(err)) from None
        case.remote_seconds = time.perf_counter() - started
        skipped = _local_500(run, err, recorded)
        if skipped:
            case.remote_result, case.remote_detail = Result.SKIPPED, skipped
        else:
            case.remote_result, case.remote_detail = Result.FAILED, str(err)
        return None
    case.remote_seconds = answer.seconds
    found = differences(answer, recorded, run.options.rtol, streaming=run.streaming)
    case.remote_result = Result.FAILED if found else Result.PASSED
    case.remote_detail = "\n".join(found)
    return answer


def _local_500(run: _Run, err: Any, recorded: dict[str, Any]) -> str | None:
    """Why an HTTP 500 of the SDK's local server is no verdict for a case, or None: a FAILED
    case whose error is not a string or whose generator raised, or a COMPLETED case with no
    output (a handler that returns `{}`: RunPod drops the empty output, the local server
    fails to answer)."""
    if err.status_code != 500 or run.options.url is None:
        return None
    if recorded["status"] == "COMPLETED" and recorded.get("output") is None:
        return "the SDK's local server answers HTTP 500 for a handler that returns {}"
    if recorded["status"] != "FAILED":
        return None
    error = recorded["error"]
    if compare.streamed_exception(error) is not None:
        return "the SDK's local server answers HTTP 500 for a generator that raised"
    if not isinstance(error, str):
        return "the SDK's local server answers HTTP 500 for an error that is not a string"
    return None


# ------------------------------------------------------------------------ the replay


def run_planned(
    planned: list[Planned],
    options: Options,
    *,
    handler: str,
    streaming: bool,
    report: NotebookReport,
    on_case: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Send the planned cases to the server of `options`; fill each case and the report's
    server, error and times. Returns notes. `on_case(done, total)` hears each case end."""
    report.remote = options.remote
    started = time.perf_counter()
    timeout = options.timeout or DEFAULT_REMOTE_TIMEOUT
    send = _not_sent(planned, handler)
    notes: list[str] = []
    if any(set(item.recorded["job"]) - {"input"} for item in send if item.recorded):
        notes.append('jobs are sent as {"input": ...} only: a recorded webhook or policy is not')
    if not send:
        others = sorted({item.case.handler for item in planned} - {handler})
        notes.append(
            f"every recorded case of `{handler}` is skipped: none was sent to the server"
            if any(item.recorded is not None for item in planned)
            else f"no recorded case of `{handler}` to send to the server"
            + (
                f" (recorded: runs of {', '.join(others)}; --handler NAME sends them)"
                if others
                else ""
            )
        )
        return notes
    run = _Run(options, streaming, _endpoint_factory(options, timeout))
    try:
        run.endpoint()  # RUNPOD_ENDPOINT_BASE_URL may be no http(s) URL
    except ValueError as err:
        where = " (RUNPOD_ENDPOINT_BASE_URL)" if options.endpoint is not None else ""
        report.error = f"cannot replay against {options.remote}: {err}{where}"
        for item in send:
            item.case.remote_detail = "not sent: see the notebook's error"
        return notes
    answers: list[Answer | None] = [None] * len(send)
    done = 0

    def one(position: int) -> None:
        nonlocal done
        with contextlib.suppress(_Unusable):
            answers[position] = _replay(run, send[position], timeout)
        with run.lock:
            done += 1
            if on_case is not None:
                on_case(done, len(send))

    try:
        one(0)  # alone: its wait is the cold start
        if run.broken is None and len(send) > 1:
            _in_threads(run, one, range(1, len(send)))
    except KeyboardInterrupt:
        run.stopped.set()  # the threads take no new case; theirs end with the process
        run.cancel_running()
        raise
    if run.broken is not None:
        for item in send:  # cases a pool thread had not reached
            if item.case.remote_result == Result.NOT_REPLAYED and not item.case.remote_detail:
                item.case.remote_detail = "not sent: the server failed (see the notebook's error)"
        report.error = f"cannot replay against {options.remote}: {run.broken}"
    _times(report, answers)
    report.remote_seconds = time.perf_counter() - started
    return notes


def _in_threads(run: _Run, one: Callable[[int], None], positions: range) -> None:
    """`one(position)` for each position, `run.options.concurrency` at a time. Daemon
    threads, not a ThreadPoolExecutor: after Ctrl-C, the process must not wait (as an
    executor's exit does) for jobs in flight that may take minutes; the first error of a
    thread is raised here."""
    pending = iter(positions)
    failures: list[BaseException] = []

    def work() -> None:
        while not run.stopped.is_set():
            with run.lock:
                position = next(pending, None)
            if position is None:
                return
            try:
                one(position)
            except BaseException as err:  # a bug: raised in the caller's thread below
                with run.lock:
                    failures.append(err)
                run.stopped.set()
                return

    threads = [
        threading.Thread(target=work, name=f"nbworker-remote-{number}", daemon=True)
        for number in range(min(run.options.concurrency, len(positions)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _times(report: NotebookReport, answers: list[Answer | None]) -> None:
    """The cold start and the job times of the answers (the first one sent alone)."""
    first, rest = answers[0], [answer for answer in answers[1:] if answer is not None]
    report.job_seconds = [answer.seconds for answer in rest]
    report.execution_seconds = [
        answer.execution
        for answer in answers
        if answer is not None and answer.execution is not None
    ]
    if first is None:
        return
    if first.delay is not None:
        report.cold_start_seconds = first.delay
    elif rest:
        report.cold_start_seconds = max(0.0, first.seconds - statistics.median(report.job_seconds))
    if not rest:
        report.job_seconds = [first.seconds]


def replay_remote(
    path: Path,
    stored: Any,
    cases: list[Case],
    options: Options,
    *,
    report: NotebookReport | None = None,
    on_case: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Replay a notebook's cases against the server of `options` (`url` or `endpoint`);
    fill in each case's remote result, and `report`'s server, error and times when given.
    Returns notes."""
    from nbworker.errors import ExportError

    report = report if report is not None else NotebookReport(str(path), cases)
    for case in cases:
        case.notebook_result = case.worker_result = Result.NOT_REPLAYED
    try:
        handler, streaming, planned = plan_notebook(stored, cases, options.handler)
    except (ExportError, ValueError) as err:
        report.remote = options.remote
        report.error = f"cannot tell which cases to send: {err}"
        return []
    return run_planned(
        planned, options, handler=handler, streaming=streaming, report=report, on_case=on_case
    )
