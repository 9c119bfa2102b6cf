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
  of reprs, logs, exception messages and `session.headers`; any echo of it in an error body
  is replaced by `***`. Exceptions are raised `from None`, so no request object holding
  the header rides along in a traceback.
- **Retries** (`retries` extra attempts, delays `backoff * 2**n` capped at 30 s, or the
  server's `Retry-After` up to 60 s) on connection errors, timeouts and HTTP 429/502/503/504
  for idempotent calls (GET /status, /stream, /health; POST /cancel). Calls that create or
  consume a job (POST /run, /runsync, and the POST form of /status and /stream that the
  SDK's server uses, which runs the stored job and forgets it) are retried only when the
  request never left (connection refused, DNS failure, connect timeout) or on 429 (the
  server refused it): retrying after a 5xx or a read timeout could run the job twice.
- **GET or POST.** RunPod's API polls with GET /status and /stream; the SDK's
  `--rp_serve_api` server only accepts POST there. With `poll_method=None` the client tries
  GET and, on HTTP 405, switches to POST for the rest of its life. Pass "GET" or "POST" to fix it.
- **Errors.** HTTP errors raise `EndpointError(status_code, message)`, one line:
  `POST /runsync: HTTP 422: body.input: Input should be a valid dictionary`. Transport
  failures raise it with `status_code=None`. A stream whose job ends FAILED, CANCELLED or
  TIMED_OUT raises `JobFailed` with the final answer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import quote

import requests
import urllib3.exceptions

from nbworker.errors import NbworkerError

__all__ = [
    "DEFAULT_BASE_URL",
    "FINAL_STATUSES",
    "Endpoint",
    "EndpointError",
    "JobFailed",
]

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
JOB_KEYS = frozenset({"input", "webhook", "policy", "s3Config"})
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0
_MESSAGE_LIMIT = 300

log = logging.getLogger(__name__)
_sleep = time.sleep  # replaced by tests to record the backoff delays


class EndpointError(NbworkerError):
    """A request to an endpoint failed: HTTP `status_code` (None: no HTTP answer)."""

    def __init__(self, status_code: int | None, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.body = body


class JobFailed(NbworkerError):
    """A streamed job ended in FAILED, CANCELLED or TIMED_OUT; `result` is the last answer."""

    def __init__(self, result: Mapping[str, Any]) -> None:
        self.result = dict(result)
        self.job_id = result.get("id")
        self.status = result.get("status")
        self.error = result.get("error")
        detail = f": {_one_line(str(self.error))}" if self.error else ""
        super().__init__(f"job {self.job_id} ended {self.status}{detail}")


class _Bearer(requests.auth.AuthBase):
    """Adds the key per request, so it never sits in `session.headers` or a repr."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._key}"
        return request

    def __repr__(self) -> str:
        return "<Bearer ***>"

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


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
    ) -> None:
        if (url is None) == (endpoint_id is None):
            raise ValueError("Endpoint needs exactly one of url= or endpoint_id=")
        if endpoint_id is not None:
            if not endpoint_id or "/" in endpoint_id:
                raise ValueError(f"not an endpoint id: {endpoint_id!r}")
            base = os.environ.get("RUNPOD_ENDPOINT_BASE_URL") or DEFAULT_BASE_URL
            url = f"{base.rstrip('/')}/{endpoint_id}"
            if api_key is None:
                api_key = os.environ.get("RUNPOD_API_KEY") or None
        assert url is not None
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r}")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        if poll_method not in (None, "GET", "POST"):
            raise ValueError(f"poll_method must be 'GET', 'POST' or None, not {poll_method!r}")
        self.url = url.rstrip("/")
        self.endpoint_id = endpoint_id
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session if session is not None else requests.Session()
        self.poll_method = poll_method
        self._auth = _Bearer(api_key) if api_key else None

    def __repr__(self) -> str:
        key = "set" if self._auth else "none"
        return f"Endpoint({self.url!r}, api_key={key})"

    @property
    def has_api_key(self) -> bool:
        return self._auth is not None

    # ----------------------------------------------------------------- the API routes
    def run(self, job: Any) -> dict[str, Any]:
        """POST /run: queue a job; the answer is `{"id", "status"}`."""
        return self.request("POST", "/run", json=as_job(job), idempotent=False)

    def run_sync(
        self, job: Any, timeout: float | None = None, *, poll_interval: float = 0.25
    ) -> dict[str, Any]:
        """POST /runsync, then poll /status while the answer is IN_QUEUE/IN_PROGRESS.

        `timeout` bounds the whole wait (None: each request has the endpoint's timeout and
        polling goes on until the job ends). Raises EndpointError(None, ...) when it runs out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        result = self.request(
            "POST",
            "/runsync",
            json=as_job(job),
            idempotent=False,
            timeout=max(self.timeout, timeout or 0),
        )
        job_id = result.get("id")
        while result.get("status") not in FINAL_STATUSES and job_id:
            if deadline is not None and time.monotonic() >= deadline:
                raise EndpointError(
                    None, f"job {job_id} still {result.get('status')} after {timeout:g}s"
                )
            _sleep(poll_interval)
            result = self.status(job_id)
        return result

    def status(self, job_id: str) -> dict[str, Any]:
        """GET (or POST, see `poll_method`) /status/{id}."""
        return self._poll("status", job_id)

    def stream(self, job_id: str, poll_interval: float = 0.1) -> Iterator[Any]:
        """Poll /stream/{id}; yield each chunk's `output` until the job ends.

        Raises JobFailed if it ends FAILED, CANCELLED or TIMED_OUT (after yielding the
        chunks of that last answer).
        """
        while True:
            answer = self._poll("stream", job_id)
            for chunk in answer.get("stream") or []:
                yield chunk.get("output") if isinstance(chunk, Mapping) else chunk
            status = answer.get("status")
            if status == "COMPLETED":
                return
            if status in FINAL_STATUSES:
                raise JobFailed(self._scrub_body(answer))
            _sleep(poll_interval)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """POST /cancel/{id}."""
        return self.request("POST", f"/cancel/{_job_path(job_id)}", idempotent=True)

    def health(self) -> dict[str, Any]:
        """GET /health: RunPod answers `{"jobs": {...}, "workers": {...}}`."""
        return self.request("GET", "/health")

    # -------------------------------------------------------------------- plumbing
    def _poll(self, route: str, job_id: str) -> dict[str, Any]:
        path = f"/{route}/{_job_path(job_id)}"
        if self.poll_method is not None:
            return self.request(self.poll_method, path, idempotent=self.poll_method == "GET")
        try:
            return self.request("GET", path)
        except EndpointError as exc:
            if exc.status_code != 405:
                raise
        log.debug("%s: GET not allowed, polling with POST from now on", self.url)
        self.poll_method = "POST"
        return self.request("POST", path, idempotent=False)

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
        if idempotent is None:
            idempotent = method.upper() == "GET"
        what = f"{method.upper()} {path}"
        timeout = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            delay = min(self.backoff * 2**attempt, MAX_BACKOFF)
            try:
                response = self.session.request(
                    method,
                    self.url + path,
                    json=json,
                    auth=self._auth,
                    timeout=timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                reason = self._transport_reason(exc, timeout)
                if attempt < self.retries and (idempotent or _not_sent(exc)):
                    log.info("%s: %s; retry %d in %.2fs", what, reason, attempt + 1, delay)
                    _sleep(delay)
                    attempt += 1
                    continue
                raise EndpointError(None, self._message(what, reason)) from None
            log.debug("%s: HTTP %d", what, response.status_code)
            retry = idempotent or response.status_code == 429
            if response.status_code in RETRY_STATUSES and attempt < self.retries and retry:
                delay = _retry_after(response) or delay
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
            return self._answer(what, response)

    def _answer(self, what: str, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not 200 <= response.status_code < 300:
            detail = _detail(body) if body is not None else response.text
            detail = detail.strip() or response.reason or ""
            message = self._message(what, f"HTTP {response.status_code}: {detail}")
            raise EndpointError(response.status_code, message, body=self._scrub_body(body))
        if not isinstance(body, dict):
            got = response.text if body is None else json.dumps(body)
            message = self._message(
                what, f"HTTP {response.status_code}: expected a JSON object, got {got!r}"
            )
            raise EndpointError(response.status_code, message)
        return body

    def _transport_reason(self, exc: requests.RequestException, timeout: float) -> str:
        if isinstance(exc, requests.Timeout):
            return f"no answer within {timeout:g}s ({type(exc).__name__})"
        if isinstance(exc, requests.ConnectionError):
            return f"cannot connect to {self.url} ({type(exc).__name__})"
        return f"{type(exc).__name__}: {exc}"

    def _message(self, what: str, detail: str) -> str:
        return _one_line(self._scrub_text(f"{what}: {detail}"))

    def _scrub_text(self, text: str) -> str:
        return self._auth.scrub(text) if self._auth else text

    def _scrub_body(self, body: Any) -> Any:
        if self._auth is None or body is None:
            return body
        return json.loads(self._auth.scrub(json.dumps(body)))


def as_job(job: Any) -> dict[str, Any]:
    """A job as RunPod's API takes it: a job dict as is, anything else wrapped as its input."""
    if isinstance(job, Mapping) and "input" in job and set(job) <= JOB_KEYS:
        return dict(job)
    return {"input": job}


def _job_path(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"not a job id: {job_id!r}")
    return quote(job_id, safe="")


def _not_sent(exc: requests.RequestException) -> bool:
    """True when the request never reached the server (safe to retry anything)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    # NewConnectionError (refused, DNS) is a ConnectTimeoutError in urllib3 >= 2.
    return isinstance(
        reason, urllib3.exceptions.ConnectTimeoutError | urllib3.exceptions.NewConnectionError
    )


def _retry_after(response: requests.Response) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER else None


def _detail(body: Any) -> str:
    """The useful part of an error body: RunPod's `error`, FastAPI's `detail`, or the JSON."""
    if isinstance(body, Mapping):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                return "; ".join(_validation_item(v) for v in value)
    return json.dumps(body)


def _validation_item(item: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in item.get("loc") or ())
    msg = str(item.get("msg", item))
    return f"{loc}: {msg}" if loc else msg


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
