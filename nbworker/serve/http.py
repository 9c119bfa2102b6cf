"""The HTTP side of `%rp_serve`: a `ThreadingHTTPServer` that reads, checks and routes
requests to a `JobQueue`, and answers every refusal as JSON.

Apart from the queue because this is where the bytes of strangers arrive: everything that
decides whether a request may reach a job (body framing and limits, JSON checks, Host and
Origin, the token) is here, before any job exists, and the queue never sees a request.

Only 127.0.0.1 (or another loopback address) may be bound without a token; with a token,
every request must carry `Authorization: Bearer <token>`. Web pages are refused (see
`HTTPServer.refusal`): a foreign `Origin`, a `Host` that is none of the server's names (DNS
rebinding) and a POST body that is not `application/json` never run a job, and no CORS
preflight is granted. Bodies are capped (413) and nested at most MAX_DEPTH deep, the queue
too (429); a socket read waits READ_TIMEOUT at most, and a client that hangs up is no
traceback in the notebook.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nbworker.errors import QueueFull, ServeError
from nbworker.record import jsonable
from nbworker.serve.inline import Pending, Waits
from nbworker.serve.job import IN_QUEUE
from nbworker.serve.queue import JobQueue
from nbworker.serve.wire import Date, Headers, LeanRequestParsing, answer_bytes

__all__ = ["HTTPServer", "RequestHandler", "is_loopback"]

MAX_BODY = 10 * 1024 * 1024  # bytes of a request body
MAX_DEPTH = 100  # levels of nesting in a request body (Python's json recurses, ~1,000 at most)
# Seconds a socket read may wait: a client that goes silent mid-request, or an idle
# keep-alive connection, frees its thread then.
READ_TIMEOUT = 60.0
DRAIN_LIMIT = 64 * 1024 * 1024  # a refused body up to this size is read before answering
TOO_DEEP = f"the body nests lists and objects over {MAX_DEPTH} levels deep"
_STRICT = json.JSONEncoder(allow_nan=False)  # made once: json.dumps(allow_nan=...) makes one a call

# The name users and tests filter on; the package's modules share it.
log = logging.getLogger("nbworker.serve")


def is_loopback(host: str) -> bool:
    """Whether `host` is reached from this machine only (`localhost`, a loopback address):
    only such a host is served without a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HTTPServer(ThreadingHTTPServer):
    """The listening socket on `host:port` (0: a free one) for `jobs`, and what a request
    must be to reach them. Raises ServeError when the address cannot be used, or a token is
    needed (a non-loopback host) or empty."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: bursts of clients connecting at once
    allow_reuse_address = True

    def __init__(
        self,
        jobs: JobQueue,
        host: str,
        port: int,
        token: str | None,
        *,
        max_body: int = MAX_BODY,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        if token is not None and not token:
            raise ServeError("the token must not be empty")
        if token is None and not is_loopback(host):
            raise ServeError(
                f"binding {host} opens the handler to the network: give a token "
                "(clients then send Authorization: Bearer <token>)"
            )
        self.jobs, self.max_body, self.read_timeout = jobs, max_body, read_timeout
        self._token = token
        # Changed by each request's thread without a lock (set operations are atomic): see
        # the queue's lock for why requests take none.
        self.connections: set[socket.socket] = set()
        self.answering: set[object] = set()  # request handlers answering now
        self._connections_started = 0  # for the names of their threads
        self.date = Date()
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), RequestHandler)
        except OSError as err:
            if err.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise ServeError(f"port {port} on {host} is in use: pick another --port") from None
            raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        self.port: int = self.server_address[1]
        self.waits = Waits(lambda: jobs.runsync_wait, name=f"nbworker-runsync-wait-{self.port}")
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        # The Host names of this server (see `refusal`); port 80 may go without its number.
        names = {"127.0.0.1", "localhost", "[::1]", shown.lower()}
        self._hosts = {f"{name}:{self.port}" for name in names}
        if self.port == 80:
            self._hosts |= names
        self._loopback = is_loopback(host)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection (ThreadingMixIn's), named for this server: a /runsync
        job may run on it."""
        self._connections_started += 1
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"nbworker-request-{self.port}-{self._connections_started}",
            daemon=True,
        )
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a request's thread: a client that hung up or went silent is one debug
        line; nothing is printed into the notebook as a traceback (socketserver's default)."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.debug("%%rp_serve: client %s went away: %r", client_address, err)
        else:
            log.warning("%%rp_serve: a request from %s failed: %r", client_address, err)

    @property
    def requires_token(self) -> bool:
        return self._token is not None

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token: `Bearer <token>`, the scheme in
        any case (RFC 9110), compared in constant time. A token in the URL is not read."""
        if self._token is None:
            return True
        scheme, _, credentials = (header or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token.encode()
        )

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request is refused for its Host or Origin header, or None.

        Any web page the user visits may send requests to 127.0.0.1 (a form, or fetch() with
        a text/plain body, needs no preflight), and with DNS rebinding under a name of its
        own, so that it reads the answers too. Such requests carry an Origin that is not this
        server's, or a Host that is none of its names, and are refused before anything runs.
        No Origin (curl, requests, the SDK) and this server's own origins are allowed; no
        Host (HTTP/1.0) too, as no browser sends that. A server bound to a non-loopback
        address is reached under any of the machine's names and addresses, so its Host is
        not checked; it needs a token, which a page can neither read nor make a browser send.
        """
        host = host.strip().lower() if host is not None else None
        if host is not None and self._loopback and host not in self._hosts:
            names = ", ".join(sorted(self._hosts))
            return (
                f"refused: Host {host!r} is not this server (it answers as {names}); "
                "a web page reaching 127.0.0.1 under its own name (DNS rebinding) looks like this"
            )
        if origin is not None:
            allowed = {f"http://{name}" for name in self._hosts}
            if not self._loopback and host:
                allowed.add(f"http://{host}")
            if origin.strip().lower() not in allowed:
                return f"refused: cross-origin request (Origin {origin.strip()[:200]!r})"
        return None

    def hang_up(self) -> None:
        """After the listening loop ended: let answers in flight (e.g. /runsync) go out for
        up to 0.5 s, then end every connection (idle keep-alive ones too)."""
        self.waits.stop()
        deadline = time.monotonic() + 0.5
        while self.answering and time.monotonic() < deadline:
            time.sleep(0.01)
        connections = self.connections.copy()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _BadRequest(Exception):
    """A request answered with an error; `close`: the connection cannot be reused (a body
    left unread)."""

    def __init__(
        self, code: int, message: str, *, close: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.close, self.headers = code, close, headers or {}


class _HungUp(Exception):
    """The client closed the connection before its body was all sent: nothing to answer."""


def _is_json(content_type: str | None) -> bool:
    """application/json, with parameters (`; charset=utf-8`) or as a `+json` type, which the
    SDK's FastAPI server reads as JSON too (it answers 422 to anything else)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests lists and objects more than `limit` deep (without recursing)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class RequestHandler(LeanRequestParsing, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    # TCP_NODELAY: an answer goes out at once (with Nagle's algorithm, an answer written in
    # two parts waited for the client's delayed ACK, ~40 ms a request on a kept-open one)
    disable_nagle_algorithm = True
    server_version = "nbworker"
    server: HTTPServer
    headers: Headers  # type: ignore[assignment]  # wire.py's, read as http.server's
    _must_close = False  # this request's body was left unread: close after answering

    def setup(self) -> None:
        # Each read and write of the socket; this server's own (typeshed types it a ClassVar).
        self.timeout = self.server.read_timeout  # type: ignore[misc]
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a kernel's stderr is the notebook: no access log there

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, a URI or headers over its limits,
        an unknown method) as JSON, as every other answer."""
        self._answer(code, {"error": message or self.responses.get(code, ("error",))[0]}, True)

    def _send(
        self,
        code: int,
        body: dict[str, Any],
        *,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            data = _STRICT.encode(body).encode()
        except (TypeError, ValueError):  # NaN and Infinity as null (as the SDK), objects
            data = json.dumps(jsonable(body)).encode()
        headers = dict(headers or {})
        if close or self._must_close:
            headers["Connection"] = "close"
            self.close_connection = True
        answer = answer_bytes(
            code, data, headers, server=self.version_string(), date=self.server.date.now()
        )
        if self.request_version == "HTTP/0.9":  # no head, as http.server answers it
            answer = data
        elif self.command == "HEAD":
            answer = answer[: len(answer) - len(data)]
        self.wfile.write(answer)

    def _answer(
        self, code: int, body: dict[str, Any], close: bool = False, headers: Any = None
    ) -> None:
        """`_send` to a client that may have gone: then the connection just closes."""
        try:
            self._send(code, body, close=close, headers=headers)
        except OSError:
            self.close_connection = True

    def _read(self, length: int) -> bytes:
        """`length` bytes of the body. A client that closes first has sent part of a job,
        which must not run; one that goes silent gets 408."""
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise _BadRequest(
                408, f"the body did not come within {self.timeout:g} s", close=True
            ) from None
        if len(raw) < length:
            raise _HungUp
        return raw

    def _discard_body(self) -> bool:
        """Read and drop a body this request does not use; False when it is not read (too
        large, chunked, no length), so the connection closes after the answer."""
        length = self.headers.get("Content-Length", "0").strip()
        if "Transfer-Encoding" in self.headers or not length.isdigit():
            return False
        if int(length) > self.server.max_body:
            return False
        self._read(int(length))
        return True

    def _body(self) -> tuple[dict[str, Any], int]:
        """The checked body of /run or /runsync, and its size in bytes."""
        max_body = self.server.max_body
        if "Transfer-Encoding" in self.headers:
            # Not decoded, nor guessed at: a body framed one way here and another way by a
            # proxy in front is how requests are smuggled.
            raise _BadRequest(
                411, "send the body with a Content-Length (no Transfer-Encoding)", close=True
            )
        lengths = self.headers.get_all("Content-Length") or ["0"]
        try:
            (length,) = {int(value) for value in lengths}
        except ValueError:
            raise _BadRequest(400, "Content-Length is not one number", close=True) from None
        if length < 0:
            raise _BadRequest(400, "Content-Length is negative", close=True)
        if length > max_body:
            if length <= DRAIN_LIMIT:  # read it, so the client sees the answer, not a reset
                with contextlib.suppress(OSError):
                    left = length
                    while left > 0 and (chunk := self.rfile.read(min(left, 1 << 20))):
                        left -= len(chunk)
            raise _BadRequest(
                413,
                f"the body is {length} bytes; this server takes at most {max_body}",
                close=True,
            )
        raw = self._read(length)
        kind = self.headers.get("Content-Type")
        if not _is_json(kind):
            # A web page can POST text/plain (or a form) to 127.0.0.1 without asking first;
            # application/json needs a CORS preflight, which this server never grants.
            given = f"Content-Type {kind!r}" if kind else "no Content-Type"
            raise _BadRequest(
                415, f"send the body as JSON with Content-Type: application/json, not {given}"
            )
        if not raw.strip():
            raise _BadRequest(400, 'the body must be JSON like {"input": {...}}')
        try:
            body = json.loads(raw)
        except UnicodeDecodeError as err:
            raise _BadRequest(400, f"the body is not UTF-8: {err}") from None
        except json.JSONDecodeError as err:
            raise _BadRequest(
                400,
                f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno} "
                f"(char {err.pos})",
            ) from None
        except RecursionError:  # too deep for Python's parser
            raise _BadRequest(400, TOO_DEEP) from None
        # Nesting needs an opening bracket a level: a body with fewer is not walked.
        if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(body, MAX_DEPTH):
            raise _BadRequest(400, TOO_DEEP)
        if not isinstance(body, dict):
            raise _BadRequest(400, f"the body must be a JSON object, not {_kind(body)}")
        if "input" not in body:
            raise _BadRequest(400, 'the body has no "input": send {"input": {...}}')
        if not isinstance(body["input"], dict):
            raise _BadRequest(400, f'"input" must be a JSON object, not {_kind(body["input"])}')
        return body, length

    def _handle(self, method: str) -> None:
        answering = self.server.answering
        answering.add(self)
        self._must_close = False
        try:
            self._route(method)
        except _HungUp:
            self.close_connection = True
        except (ConnectionError, TimeoutError) as err:  # the client left, or went silent
            log.debug("%%rp_serve: client %s went away: %r", self.client_address, err)
            self.close_connection = True
        except _BadRequest as err:
            self._answer(err.code, {"error": str(err)}, err.close, err.headers)
        except QueueFull as err:
            self._answer(429, {"error": f"the queue is full: {err}"}, headers={"Retry-After": "1"})
        except ServeError as err:
            self._answer(503, {"error": str(err)}, True)
        except Exception as err:  # nbworker's own fault: one line here, the error there
            log.warning("%%rp_serve: %s %.200s failed: %r", method, self.path, err)
            self._answer(500, {"error": f"nbworker: {type(err).__name__}: {err}"}, True)
        finally:
            answering.discard(self)

    def _run_sync(self, body: dict[str, Any], size: int) -> None:
        """/runsync: answered here when the job ends, unless its wait ran out first and
        the server's `Waits` answered (inline.py): then the connection closes."""
        waits = self.server.waits
        pending = Pending(lambda answer: self._answer(200, answer, True))
        answer = self.server.jobs.run_sync(
            body, size=size, started=lambda job: waits.started(pending, job)
        )
        if waits.ended(pending):
            self._send(200, answer)
        else:
            self.close_connection = True

    def _route(self, method: str) -> None:
        server, jobs = self.server, self.server.jobs
        if jobs.closing:
            raise ServeError("the server is stopping")
        hosts = self.headers.get_all("Host") or []
        refusal = "more than one Host header" if len(hosts) > 1 else None
        refusal = refusal or server.refusal(hosts[0] if hosts else None, self.headers.get("Origin"))
        if refusal is not None:  # before the token, the body and any job
            raise _BadRequest(403, refusal, close=not self._discard_body())
        if not server.authorized(self.headers.get("Authorization")):
            message = "unauthorized: send Authorization: Bearer <token>"
            raise _BadRequest(401, message, close=not self._discard_body())
        path = self.path.split("?", 1)[0].rstrip("/")
        parts = path.lstrip("/").split("/")
        route, job_id = parts[0], "/".join(parts[1:])
        if method == "POST" and route in ("run", "runsync") and not job_id:
            body, size = self._body()
            if route == "run":
                job = jobs.submit(body, size=size)
                self._send(200, {"id": job.id, "status": IN_QUEUE})
            else:
                self._run_sync(body, size)
            return
        self._must_close = not self._discard_body()  # a body other routes get is not used
        if method == "OPTIONS":  # a CORS preflight: granted to no origin
            message = "no cross-origin requests: this server answers no CORS preflight"
            raise _BadRequest(405, message, headers={"Allow": "GET, POST"})
        if route in ("status", "stream") and job_id:
            self._send(200, jobs.status(job_id) if route == "status" else jobs.stream(job_id))
        elif route == "cancel" and job_id and method == "POST":
            self._send(200, jobs.cancel(job_id))
        elif route == "health" and not job_id:
            self._send(200, jobs.health())
        else:
            self._send(404, {"error": f"no route {method} {path or '/'}"})
