"""HTTP/1.1 on the wire for `%rp_serve`: a request's head read without the email parser,
and an answer written in one piece.

Apart from `http.py` (what a request must be to reach a job) because this is framing
only: the bytes of a request line and its header fields, and those of an answer.
`http.server` parses header fields with the `email` package, which costs more than the
rest of a /runsync request together; here they are read line by line, and anything the
email parser would have taken in a way a proxy may not (a line without a colon, a space
before the colon, a folded line) is refused with 400 rather than guessed at: two parsers
that frame a request differently are how requests are smuggled.

The rest is `http.server`'s behaviour, kept: its refusals of a request line (400, 414,
505), of header fields (431 for a line over 64 KiB or more than 100 of them), HTTP/0.9 and
HTTP/1.0 closing the connection, `Connection: close` and `keep-alive`, `Expect:
100-continue`, and `//path` taken as `/path`.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

__all__ = ["Date", "Headers", "LeanRequestParsing", "answer_bytes"]

MAX_LINE = 65536  # bytes of the request line or of one header line, as http.server
MAX_HEADERS = 100  # header fields of one request, as http.client
REASONS = {status.value: status.phrase for status in HTTPStatus}


class Headers:
    """A request's header fields in the order sent: names matched in any case, values
    without the whitespace around them. What `http.server` handlers read of theirs
    (`get`, `get_all`, `in`)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields  # (lower-case name, value)

    def get(self, name: str, default: Any = None) -> Any:
        name = name.lower()
        for key, value in self._fields:
            if key == name:
                return value
        return default

    def get_all(self, name: str, default: Any = None) -> Any:
        name = name.lower()
        found = [value for key, value in self._fields if key == name]
        return found or default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self._fields)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read_fields(rfile: Any) -> Headers:
    """The header fields up to the blank line; _Refused for what is not plainly one."""
    fields: list[tuple[str, str]] = []
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise _Refused(431, "Line too long")
        if line in (b"\r\n", b"\n", b""):
            return Headers(fields)
        if len(fields) >= MAX_HEADERS:
            raise _Refused(431, "Too many headers")
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            raise _Refused(400, "a folded header line (obsolete line folding) is not taken")
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip():
            raise _Refused(400, f"malformed header line {text.rstrip()[:100]!r}")
        fields.append((name.lower(), value.strip()))


class LeanRequestParsing:
    """`parse_request` for a `BaseHTTPRequestHandler`, with `_read_fields` in place of
    `http.client.parse_headers`; put before it in the bases."""

    # What BaseHTTPRequestHandler has (see its parse_request, which this follows)
    raw_requestline: bytes
    requestline: str
    request_version: str
    default_request_version: str
    protocol_version: str
    close_connection: bool
    command: str
    path: str
    rfile: Any
    send_error: Any
    handle_expect_100: Any

    def parse_request(self) -> bool:
        self.command = None  # type: ignore[assignment]  # as http.server: no request line yet
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:  # enough to tell the protocol version
            version = words[-1]
            number = _version(version)
            if number is None:
                self.send_error(400, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({version.split('/', 1)[1]})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(400, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(400, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):  # gh-87389: no open redirect through //host/path
            self.path = "/" + self.path.lstrip("/")
        try:
            self.headers = _read_fields(self.rfile)
        except _Refused as err:
            self.send_error(err.code, str(err))
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "").lower()
        if (
            expect == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
        ):
            return bool(self.handle_expect_100())
        return True


def _version(text: str) -> tuple[int, int] | None:
    """(major, minor) of `HTTP/x.y`, or None when it is not one (as http.server reads it)."""
    if text == "HTTP/1.1":
        return 1, 1
    if not text.startswith("HTTP/"):
        return None
    parts = text[5:].split(".")
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 10 for p in parts):
        return None
    return int(parts[0]), int(parts[1])


class Date:
    """The Date header's value, made once a second (a server keeps one)."""

    def __init__(self) -> None:
        self.second, self.text = -1, ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:  # two threads may both remake it: the same text
            self.text, self.second = formatdate(second, usegmt=True), second
        return self.text


def answer_bytes(
    code: int, body: bytes, headers: dict[str, str], *, server: str, date: str
) -> bytes:
    """The head of an HTTP/1.1 answer with a JSON body of `body`'s length, and the body:
    one piece, written at once (with TCP_NODELAY two writes are two packets, and in the
    kernel's process each write is a GIL hand-over)."""
    lines = [
        f"HTTP/1.1 {code} {REASONS.get(code, '')}",
        f"Server: {server}",
        f"Date: {date}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
