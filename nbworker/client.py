"""A client for RunPod-style endpoints: a deployed endpoint, the SDK's local server, `%rp_serve`.

    ep = Endpoint(endpoint_id="abc123")            # https://api.runpod.ai/v2/abc123, RUNPOD_API_KEY
    ep = Endpoint("http://127.0.0.1:8000")         # python handler.py --rp_serve_api, or %rp_serve
    ep.run_sync({"input": {"prompt": "hi"}})       # {"id", "status": "COMPLETED", "output": ...}
    job = ep.run({"prompt": "hi"})                 # a bare input is wrapped: {"input": {...}}
    ep.status(job["id"]); list(ep.stream(job["id"])); ep.cancel(job["id"]); ep.health()

Every method returns the server's JSON answer as a dict (`stream` yields each chunk's
`output`). Choices worth knowing:

- **Jobs.** `run`/`run_sync` take a job `{"input": ..., "webhook"?, "policy"?, "s3Config"?}`
  (a dict with an `input` key and only those keys) and send it as is; anything else is a
  bare input and is sent as `{"input": value}`. To send an input that itself looks like a
  job, wrap it: `{"input": {"input": ...}}`.
- **The API key** is read from `RUNPOD_API_KEY` only for `endpoint_id=` (RunPod's API): a
  `url=` endpoint gets a key only when one is passed, so the RunPod key is never sent to an
  arbitrary server by accident. It goes out as `Authorization: Bearer <key>` and is kept out
  of reprs, logs, exception messages and `session.headers`; any echo of it in an answer
  (an error body, a job's output or error) is replaced by `***`. Exceptions are raised
  `from None`, so no request object holding the header rides along in a traceback.
- **Retries** (`retries` extra attempts, delays `backoff * 2**n` capped at 30 s, or the
  server's `Retry-After`, seconds or an HTTP date; one over 60 s is not waited for: the
  error is raised) on connection errors, timeouts and HTTP 429/502/503/504
  for idempotent calls (GET /status, /stream, /health; POST /cancel). Calls that create or
  consume a job (POST /run, /runsync, and the POST form of /status and /stream that the
  SDK's server uses, which runs the stored job and forgets it) are retried only when the
  request never left (connection refused, DNS failure, connect timeout) or on 429 (the
  server refused it): retrying after a 5xx or a read timeout could run the job twice.
- **GET or POST.** RunPod's API polls with GET /status and /stream; the SDK's
  `--rp_serve_api` server only accepts POST there. With `poll_method=None` the client tries
  GET and, on HTTP 405, switches to POST for the rest of its life. Pass "GET" or "POST" to fix it.
- **Deadlines.** `run_sync(timeout=)`, `stream(timeout=)`, `run(timeout=)` and
  `cancel(timeout=)` bound the whole call: the
  first request, every poll, retry and backoff fit in it (a request gets what is left of
  it as its own timeout), and running out raises `EndpointTimeout`.
- **What is read.** Redirects are not followed (a 3xx is an error naming its `Location`),
  so the key never goes to another host. An answer over `max_answer_bytes` (100 MiB) is
  refused unread; body reads meet the deadline even when the server sends a byte at a time.
- **Errors.** HTTP errors raise `EndpointError(status_code, message)`, one line:
  `POST /runsync: HTTP 422: body.input: Input should be a valid dictionary`. Transport
  failures raise it with `status_code=None`, saying which: cannot connect, or the server
  closed (or reset) the connection. A timeout is an `EndpointTimeout` (an EndpointError
  with `timeout`, and the `job_id` and `status` last seen). A 2xx answer that is not a JSON
  object, a `/run` answer without a string `id`, or a job status that is not a string is
  an EndpointError too. A stream whose job ends FAILED, CANCELLED or TIMED_OUT raises
  `JobFailed` with the final answer.

    EndpointError             (.status_code, .message, .body)
    └── EndpointTimeout       (.timeout, .job_id, .status)
    JobFailed                 (.result, .job_id, .status, .error)
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal
from urllib.parse import quote

import requests
import urllib3.exceptions

from nbworker import transport
from nbworker.errors import EndpointError, EndpointTimeout, JobFailed
from nbworker.record import FINAL_STATUSES, Run

__all__ = [
    "DEFAULT_BASE_URL",
    "FINAL_STATUSES",
    "MAX_ANSWER_BYTES",
    "Endpoint",
    "EndpointError",
    "EndpointTimeout",
    "JobFailed",
    "run_remote",
]

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
JOB_KEYS = frozenset({"input", "webhook", "policy", "s3Config"})
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0
MAX_ANSWER_BYTES = 100 * 2**20
_CHUNK = 64 * 1024
_ENDPOINT_ID = re.compile(r"[A-Za-z0-9_-]+")

log = logging.getLogger(__name__)
_sleep = time.sleep  # replaced by tests to record the backoff delays


class Endpoint:
    """A RunPod-style endpoint: `url=` (any server) or `endpoint_id=` (RunPod's API)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        endpoint_id: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        session: requests.Session | None = None,
        poll_method: Literal["GET", "POST"] | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        if (url is None) == (endpoint_id is None):
            raise ValueError("Endpoint needs exactly one of url= or endpoint_id=")
        if endpoint_id is not None:
            if not isinstance(endpoint_id, str) or not _ENDPOINT_ID.fullmatch(endpoint_id):
                raise ValueError(f"not an endpoint id: {endpoint_id!r}")
            base = os.environ.get("RUNPOD_ENDPOINT_BASE_URL") or DEFAULT_BASE_URL
            url = f"{base.rstrip('/')}/{endpoint_id}"
            if api_key is None:
                api_key = os.environ.get("RUNPOD_API_KEY") or None
        assert url is not None
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {transport.without_password(url)!r}")
        if retries < 0 or backoff < 0 or timeout <= 0 or max_answer_bytes <= 0:
            raise ValueError("retries and backoff must be >= 0, timeout and max_answer_bytes > 0")
        if poll_method not in (None, "GET", "POST"):
            raise ValueError(f"poll_method must be 'GET', 'POST' or None, not {poll_method!r}")
        self.url = url.rstrip("/")
        self.endpoint_id = endpoint_id
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session if session is not None else requests.Session()
        self.poll_method = poll_method
        self.max_answer_bytes = max_answer_bytes
        self._auth = transport.Bearer(api_key) if api_key else None
        # the URL as messages and reprs say it
        self._shown_url = transport.without_password(self.url)

    def __repr__(self) -> str:
        key = "set" if self._auth else "none"
        return f"Endpoint({self._shown_url!r}, api_key={key})"

    @property
    def has_api_key(self) -> bool:
        return self._auth is not None

    # ----------------------------------------------------------------- the API routes
    def run(self, job: Any, *, timeout: float | None = None) -> dict[str, Any]:
        """POST /run: queue a job; the answer is `{"id", "status"}` (no string `id`: an
        EndpointError, as there is no job to poll). `timeout`: a deadline, as run_sync's."""
        deadline = None if timeout is None else transport.Deadline(timeout)
        status_code, answer = self._request(
            "POST", "/run", json=as_job(job), idempotent=False, deadline=deadline
        )
        self._job_id(answer, "POST /run", status_code)
        return answer

    def run_sync(
        self,
        job: Any,
        timeout: float | None = None,
        *,
        poll_interval: float = 0.25,
        on_job: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """POST /runsync, then poll /status while the answer is IN_QUEUE/IN_PROGRESS.

        `timeout` is a deadline for the whole call: requests, polls and retries end by it,
        and EndpointTimeout is raised when it runs out (None: each request has the
        endpoint's timeout and polling goes on until the job ends). `on_job` hears the job's
        id once when an answer leaves it running (so that a caller can cancel it).
        """
        deadline = None if timeout is None else transport.Deadline(timeout)
        status_code, result = self._request(
            "POST",
            "/runsync",
            json=as_job(job),
            idempotent=False,
            timeout=max(self.timeout, timeout or 0),
            deadline=deadline,
        )
        heard = None
        while (status := _status(result, "POST /runsync", status_code)) not in FINAL_STATUSES:
            job_id = self._job_id(result, "POST /runsync", status_code)
            if on_job is not None and job_id != heard:
                heard = job_id
                on_job(job_id)
            if deadline is not None and deadline.left() <= 0:
                raise EndpointTimeout(
                    f"job {job_id} still {status} after {deadline.seconds:g}s",
                    timeout=deadline.seconds,
                    job_id=job_id,
                    status=status,
                )
            _sleep(poll_interval if deadline is None else min(poll_interval, deadline.left()))
            try:
                status_code, result = self._poll("status", job_id, deadline=deadline)
            except EndpointTimeout:
                if deadline is None or deadline.left() > 0:
                    raise
                result = {"id": job_id, "status": status}  # the deadline came mid-poll
        return result

    def status(self, job_id: str) -> dict[str, Any]:
        """GET (or POST, see `poll_method`) /status/{id}."""
        return self._poll("status", job_id)[1]

    def stream(
        self, job_id: str, poll_interval: float = 0.1, *, timeout: float | None = None
    ) -> Iterator[Any]:
        """Poll /stream/{id}; yield each chunk's `output` until the job ends.

        Raises JobFailed if it ends FAILED, CANCELLED or TIMED_OUT (after yielding the
        chunks of that last answer); EndpointTimeout if `timeout` seconds (None: no bound)
        pass first.
        """
        deadline = None if timeout is None else transport.Deadline(timeout)
        status = None
        while True:
            if deadline is not None and deadline.left() <= 0:
                raise EndpointTimeout(
                    f"stream of job {job_id} still {status} after {deadline.seconds:g}s",
                    timeout=deadline.seconds,
                    job_id=job_id,
                    status=status,
                )
            try:
                status_code, answer = self._poll("stream", job_id, deadline=deadline)
            except EndpointTimeout:
                if deadline is None or deadline.left() > 0 or status is None:
                    raise
                continue  # the deadline came mid-poll: said above as the job's state
            what = f"{self.poll_method or 'GET'} /stream/{_job_path(job_id)}"
            status = _status(answer, what, status_code)
            chunks = answer.get("stream")
            if not isinstance(chunks, list | None):
                detail = f"HTTP {status_code}: the answer's stream is not a list: {chunks!r}"
                raise EndpointError(status_code, self._message(what, detail))
            for chunk in chunks or []:
                yield chunk.get("output") if isinstance(chunk, Mapping) else chunk
            if status == "COMPLETED":
                return
            if status in FINAL_STATUSES:
                raise JobFailed(self._scrub_body(answer))
            _sleep(poll_interval if deadline is None else min(poll_interval, deadline.left()))

    def cancel(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """POST /cancel/{id}; `timeout`: a deadline, as run_sync's."""
        deadline = None if timeout is None else transport.Deadline(timeout)
        path = f"/cancel/{_job_path(job_id)}"
        return self._request("POST", path, idempotent=True, deadline=deadline)[1]

    def health(self) -> dict[str, Any]:
        """GET /health: RunPod answers `{"jobs": {...}, "workers": {...}}`."""
        return self.request("GET", "/health")

    # -------------------------------------------------------------------- plumbing
    def _poll(
        self, route: str, job_id: str, *, deadline: transport.Deadline | None = None
    ) -> tuple[int, dict[str, Any]]:
        path = f"/{route}/{_job_path(job_id)}"
        if self.poll_method is not None:
            idempotent = self.poll_method == "GET"
            return self._request(self.poll_method, path, idempotent=idempotent, deadline=deadline)
        try:
            return self._request("GET", path, deadline=deadline)
        except EndpointError as exc:
            if exc.status_code != 405:
                raise
        log.debug("%s: GET not allowed, polling with POST from now on", self._shown_url)
        self.poll_method = "POST"
        return self._request("POST", path, idempotent=False, deadline=deadline)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one request with the retry policy above; return the JSON answer.

        `idempotent` defaults to True for GET and False otherwise.
        """
        return self._request(method, path, json=json, idempotent=idempotent, timeout=timeout)[1]

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
        deadline: transport.Deadline | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """`request`, with the HTTP status; every attempt and wait ends by `deadline`."""
        if idempotent is None:
            idempotent = method.upper() == "GET"
        what = f"{method.upper()} {path}"
        timeout = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            delay = min(self.backoff * 2**attempt, MAX_BACKOFF)
            limit, cut = timeout, False  # this attempt's timeout; cut: the deadline's
            if deadline is not None:
                if deadline.left() <= 0.001:
                    detail = f"no answer within {deadline.seconds:g}s"
                    raise EndpointTimeout(self._message(what, detail), timeout=deadline.seconds)
                limit, cut = min(timeout, deadline.left()), deadline.left() < timeout
            try:
                response, data = self._send(
                    method, path, json=json, timeout=limit, deadline=deadline
                )
            except _TooLarge as exc:
                message = self._message(what, f"HTTP {exc.status_code}: {exc} (not read)")
                raise EndpointError(exc.status_code, message) from None
            except requests.RequestException as exc:
                fits = deadline is None or delay < deadline.left()
                reason = self._scrub_text(self._transport_reason(exc, limit))
                if attempt < self.retries and (idempotent or transport.not_sent(exc)) and fits:
                    log.info("%s: %s; retry %d in %.2fs", what, reason, attempt + 1, delay)
                    _sleep(delay)
                    attempt += 1
                    continue
                if transport.timed_out(exc):
                    seconds = deadline.seconds if cut and deadline is not None else limit
                    detail = f"no answer within {seconds:g}s" if cut else reason
                    raise EndpointTimeout(self._message(what, detail), timeout=seconds) from None
                raise EndpointError(None, self._message(what, reason)) from None
            log.debug("%s: HTTP %d", what, response.status_code)
            retry = idempotent or response.status_code == 429
            if response.status_code in RETRY_STATUSES and attempt < self.retries and retry:
                asked = transport.retry_after(response)
                if asked is not None and asked > MAX_RETRY_AFTER:
                    note = f"the server asks to wait {asked:g}s before a retry, too long to wait"
                    return response.status_code, self._answer(what, response, data, note=note)
                delay = delay if asked is None else asked
                if deadline is None or delay < deadline.left():
                    log.info(
                        "%s: HTTP %d; retry %d in %.2fs",
                        what,
                        response.status_code,
                        attempt + 1,
                        delay,
                    )
                    _sleep(delay)
                    attempt += 1
                    continue
            return response.status_code, self._answer(what, response, data)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        timeout: float,
        deadline: transport.Deadline | None,
    ) -> tuple[requests.Response, bytes]:
        """One request and its whole body, read as it arrives (so that a trickle of bytes
        meets the deadline), up to `max_answer_bytes`."""
        response = self.session.request(
            method,
            self.url + path,
            json=json,
            auth=self._auth,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
        with response:
            declared = response.headers.get("Content-Length", "")
            limit = f"the answer is over max_answer_bytes={self.max_answer_bytes}"
            if declared.isdigit() and int(declared) > self.max_answer_bytes:
                raise _TooLarge(response.status_code, f"{limit} (Content-Length {declared})")
            body = bytearray()
            try:
                while chunk := response.raw.read1(_CHUNK, decode_content=True):
                    body += chunk
                    if len(body) > self.max_answer_bytes:
                        raise _TooLarge(response.status_code, limit)
                    if deadline is not None and deadline.left() <= 0:
                        raise requests.ReadTimeout(f"the answer was not over in {timeout:g}s")
            except urllib3.exceptions.HTTPError as exc:  # what raw reads raise
                if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                    raise requests.ReadTimeout(exc) from exc
                raise requests.ConnectionError(exc) from exc
        return response, bytes(body)

    def _answer(
        self, what: str, response: requests.Response, data: bytes, *, note: str = ""
    ) -> dict[str, Any]:
        try:
            body = json.loads(data) if data.strip() else None
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            body = None
        text = data[:_CHUNK].decode("utf-8", errors="replace")  # enough for any message
        if not 200 <= response.status_code < 300:
            if 300 <= response.status_code < 400 and "Location" in response.headers:
                detail = f"redirected to {response.headers['Location']} (not followed)"
            else:
                detail = (
                    transport.detail(body)
                    if body is not None
                    else transport.html_page(response, text) or text
                )
                detail = detail.strip() or response.reason or ""
            detail += f" ({note})" if note else ""
            message = self._message(what, f"HTTP {response.status_code}: {detail}")
            raise EndpointError(response.status_code, message, body=self._scrub_body(body))
        raw = data.decode("utf-8", errors="replace") if self._auth and body is not None else ""
        if self._auth is not None and self._auth.scrub(raw) != raw:  # the key echoed back
            body = self._scrub_body(body)
        if not isinstance(body, dict):
            got = transport.html_page(response, text) or repr(
                text if body is None else json.dumps(body)
            )
            message = self._message(
                what, f"HTTP {response.status_code}: expected a JSON object, got {got}"
            )
            raise EndpointError(response.status_code, message)
        return body

    def _job_id(self, answer: dict[str, Any], what: str, status_code: int) -> str:
        """The answer's job id, which must be a string a path can hold."""
        job_id = answer.get("id")
        if isinstance(job_id, str) and job_id and job_id not in (".", ".."):
            return job_id
        detail = "has no job id" if job_id is None else f"has a job id that is no id: {job_id!r}"
        message = self._message(
            what, f"HTTP {status_code}: the answer {detail}: {json.dumps(answer)}"
        )
        raise EndpointError(status_code, message, body=self._scrub_body(answer))

    def _transport_reason(self, exc: requests.RequestException, timeout: float) -> str:
        name = type(exc).__name__
        if transport.timed_out(exc):
            return f"no answer within {timeout:g}s ({name})"
        if transport.refused(exc):
            return f"cannot connect to {self._shown_url} ({name})"
        dropped = transport.dropped(exc)
        if dropped is not None:
            return f"the server {dropped} ({name})"
        if isinstance(exc, requests.ConnectionError):
            return f"cannot connect to {self._shown_url} ({name})"
        return f"{name}: {exc}"

    def _message(self, what: str, detail: str) -> str:
        return transport.one_line(self._scrub_text(f"{what}: {detail}"))

    def _scrub_text(self, text: str) -> str:
        text = text.replace(self.url, self._shown_url)
        return self._auth.scrub(text) if self._auth else text

    def _scrub_body(self, body: Any) -> Any:
        if self._auth is None or body is None:
            return body
        return json.loads(self._auth.scrub(json.dumps(body)))


def run_remote(
    endpoint: Endpoint, job: Mapping[str, Any], *, timeout: float | None = None, handler: str
) -> Run:
    """Send `job` to `endpoint` with `run_sync` and make its answer a `Run`, shown and
    recorded like a run in the kernel (`handler` names the server). No answer by the
    deadline is a TIMED_OUT run, as is an answer still IN_QUEUE or IN_PROGRESS; an
    EndpointError other than a timeout is raised."""
    body = {key: job[key] for key in ("input", "webhook", "policy", "s3Config") if key in job}
    started = time.perf_counter()
    try:
        answer = endpoint.run_sync(body, timeout=timeout)
    except EndpointTimeout as err:  # no answer by the deadline: the run timed out
        answer = {"status": "TIMED_OUT", "error": str(err), "id": err.job_id}
    status: Any = answer.get("status")
    if status not in FINAL_STATUSES:
        status, answer = "TIMED_OUT", dict(answer, error=f"the job is still {status}")
    return Run(
        handler=handler,
        job={"id": answer.get("id"), "input": job.get("input")},
        status=status,
        output=answer.get("output"),
        error=answer.get("error"),
        duration_ms=(time.perf_counter() - started) * 1000,
    )


class _TooLarge(Exception):
    """An answer over `max_answer_bytes`: refused, and never retried."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def as_job(job: Any) -> dict[str, Any]:
    """A job as RunPod's API takes it: a job dict as is, anything else wrapped as its input."""
    if isinstance(job, Mapping) and "input" in job and set(job) <= JOB_KEYS:
        return dict(job)
    return {"input": job}


def _job_path(job_id: str) -> str:
    """The id as one path segment: quoted, and never `.` or `..` (which a URL resolves)."""
    if not isinstance(job_id, str) or not job_id or job_id in (".", ".."):
        raise ValueError(f"not a job id: {job_id!r}")
    return quote(job_id, safe="")


def _status(answer: dict[str, Any], what: str, status_code: int) -> str | None:
    status = answer.get("status")
    if status is None or isinstance(status, str):
        return status
    raise EndpointError(
        status_code, transport.one_line(f"{what}: HTTP {status_code}: not a job status: {status!r}")
    )
