"""The client's HTTP below RunPod's API: the API key added per request (never kept in the
session's headers or a repr), a deadline over a whole call, URLs shown without their
password; and reading what came back: how a request failed (never connected, timed out,
dropped mid-answer: each told apart, because only some may be retried), the server's
Retry-After, the useful words of an error body or an HTML error page, and one line of at
most `MESSAGE_LIMIT` characters for a message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from nbworker.errors import MESSAGE_LIMIT

__all__ = [
    "Bearer",
    "Deadline",
    "causes",
    "detail",
    "dropped",
    "html_page",
    "not_sent",
    "one_line",
    "refused",
    "retry_after",
    "timed_out",
    "without_password",
]

_CHUNK = 64 * 1024  # characters of an HTML page read for its title


class Deadline:
    """A wall-clock bound on a whole call, `seconds` long from now."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()


class Bearer(requests.auth.AuthBase):
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


def without_password(url: str) -> str:
    """The URL with the password of its `user:password@` part (if any) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: causes, urllib3's `reason`, exceptions in args."""
    found: list[BaseException] = []
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        pending += [item.__cause__, getattr(item, "reason", None), *item.args]
    return found


def refused(exc: BaseException) -> bool:
    """The connection was never made (refused, DNS)."""
    return any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in causes(exc))


def timed_out(exc: BaseException) -> bool:
    if refused(exc):  # NewConnectionError is a ConnectTimeoutError in urllib3 >= 2
        return False
    timeouts = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    return any(isinstance(e, timeouts) for e in causes(exc))


def dropped(exc: BaseException) -> str | None:
    """How the server dropped a connection that was made, if it did."""
    found = causes(exc)
    if any(isinstance(e, http.client.RemoteDisconnected) for e in found):
        return "closed the connection without answering"
    broken = (http.client.IncompleteRead, requests.exceptions.ChunkedEncodingError)
    if any(isinstance(e, broken) for e in found):
        return "closed the connection in the middle of its answer"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in found):
        return "reset the connection"
    if any(isinstance(e, urllib3.exceptions.ProtocolError) for e in found):
        return "broke the connection off"
    return None


def not_sent(exc: requests.RequestException) -> bool:
    """True when the request never reached the server (safe to retry anything)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    return refused(exc) or any(
        isinstance(e, urllib3.exceptions.ConnectTimeoutError) for e in causes(exc)
    )


def retry_after(response: requests.Response) -> float | None:
    """The server's Retry-After in seconds: a number or an HTTP date (a past one is 0);
    None when absent, negative or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)
    return None if math.isnan(seconds) or seconds < 0 else seconds


class _Title(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.title: str | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "title" and self.title is None:
            self.title, self._inside = "", True

    def handle_endtag(self, tag: str) -> None:
        self._inside = self._inside and tag != "title"

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.title = (self.title or "") + data


def html_page(response: requests.Response, text: str) -> str | None:
    """An HTML answer (a proxy's error page, a login page) said in a few words: its title."""
    start = text.lstrip()[:15].lower()
    html = "html" in response.headers.get("Content-Type", "")
    if not (html or start.startswith(("<!doctype html", "<html"))):
        return None
    parser = _Title()
    parser.feed(text[:_CHUNK])
    title = " ".join((parser.title or "").split())
    return f"an HTML page ({title})" if title else "an HTML page"


def detail(body: Any) -> str:
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


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."
