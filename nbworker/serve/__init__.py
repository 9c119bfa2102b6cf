"""RunPod's endpoint API served from the kernel's own process, for a session's handler.

`serve(session)` starts a `ThreadingHTTPServer` on a background thread with the routes of
the SDK's `--rp_serve_api` server and of a deployed endpoint (`https://api.runpod.ai/v2/ID`):

    POST /run            {"input": {...}} -> {"id", "status": "IN_QUEUE"}; runs in the background
    POST /runsync        runs and waits -> {"id", "status": "COMPLETED", "output"} or FAILED + error
    GET|POST /status/ID  {"id", "status", "output"?, "error"?}
    GET|POST /stream/ID  {"id", "status", "stream": [{"output": chunk}, ...]}: the chunks
                         produced since the previous /stream call, as the deployed API does
    POST /cancel/ID      {"id", "status": "CANCELLED"}
    GET /health          {"jobs": {...counts}, "workers": {"idle", "running"}}

This module is the lifecycle: a `Server` ties a job queue to an HTTP server, starts them,
stops them in order (no new requests, queued jobs cancelled, running ones given a grace,
answers in flight sent) and is stopped at exit. The parts, each of one concern:

    queue.py   the jobs and the worker threads: submit, take, run, cancel, status,
               stream, forgetting old jobs, worker survival; nothing of HTTP
    inline.py  a /runsync job run on its request's own thread: its slot, and the answer
               sent when RunPod's wait runs out before the job ends
    job.py     one job as the server holds it, how a run ends it (settle), and how
               /status and /stream word it
    sizing.py  how many jobs run at once: `concurrency`, or the JobScaler's modifier rule
    http.py    the HTTP side: bodies and their limits, JSON checks, Host/Origin refusal,
               the token, routes to the queue, the error answers
    wire.py    HTTP/1.1 framing: a request's head read without the email parser, an
               answer written in one piece

The arrows run one way: http -> (wire, inline, queue), queue -> (inline, job, sizing),
inline -> job; none of them imports this module.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from nbworker.errors import NbworkerError, QueueFull, ServeError
from nbworker.registry import function_name
from nbworker.serve.http import DRAIN_LIMIT as DRAIN_LIMIT
from nbworker.serve.http import MAX_BODY, READ_TIMEOUT, HTTPServer
from nbworker.serve.http import MAX_DEPTH as MAX_DEPTH
from nbworker.serve.http import TOO_DEEP as TOO_DEEP
from nbworker.serve.http import is_loopback as is_loopback
from nbworker.serve.job import IN_PROGRESS as IN_PROGRESS
from nbworker.serve.job import IN_QUEUE as IN_QUEUE
from nbworker.serve.job import MAX_EXECUTION_TIMEOUT_MS as MAX_EXECUTION_TIMEOUT_MS
from nbworker.serve.job import NOT_FOUND as NOT_FOUND
from nbworker.serve.job import NOT_STREAMING as NOT_STREAMING
from nbworker.serve.job import Job
from nbworker.serve.queue import KEEP_FINISHED, MAX_QUEUED, RUNSYNC_WAIT, JobQueue
from nbworker.serve.queue import MAX_QUEUED_BYTES as MAX_QUEUED_BYTES
from nbworker.serve.queue import log as log
from nbworker.serve.sizing import MAX_WORKERS as MAX_WORKERS
from nbworker.session import Session

__all__ = [
    "MAX_BODY",
    "QueueFull",
    "ServeError",
    "Server",
    "restart",
    "running",
    "serve",
    "stop_all",
]
# The `NAME as NAME` imports keep the other names of the module this package replaced
# importable from here (`is_loopback`: the magics check a host before they serve).

STOP_GRACE = 2.0  # seconds stop() lets running jobs finish before cancelling them


class Server:
    """One running server. `url`, `host`, `port`, `name` (None: the default handler) and
    `session`; `stop()` shuts it down. Made by `serve()`."""

    def __init__(
        self,
        session: Session,
        name: str | None,
        host: str,
        port: int,
        token: str | None,
        *,
        max_body: int = MAX_BODY,
        max_queued: int = MAX_QUEUED,
        runsync_wait: float = RUNSYNC_WAIT,
        read_timeout: float = READ_TIMEOUT,
        keep_finished: int = KEEP_FINISHED,
    ) -> None:
        self.session, self.name, self.host = session, name, host
        self._queue = JobQueue(
            session,
            name,
            max_queued=max_queued,
            runsync_wait=runsync_wait,
            keep_finished=keep_finished,
        )
        self._httpd = HTTPServer(
            self._queue, host, port, token, max_body=max_body, read_timeout=read_timeout
        )
        self.port: int = self._httpd.port
        self.url = self._httpd.url
        self._queue.port = self.port  # in its worker threads' names
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"nbworker-serve-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._queue.start()

    def __repr__(self) -> str:
        state = "stopped" if self._queue.closing else "serving"
        return f"<nbworker Server {self.name or 'default handler'} {state} at {self.url}>"

    @property
    def serving(self) -> bool:
        return not self._queue.closing

    @property
    def requires_token(self) -> bool:
        return self._httpd.requires_token

    @property
    def concurrency(self) -> int:
        """The jobs this server runs at once for its handler (with a concurrency modifier,
        its latest answer)."""
        return self._queue.concurrency

    # The options, kept by the part that uses them; changing one here applies to the next
    # request or job, as before the split.

    @property
    def max_body(self) -> int:
        return self._httpd.max_body

    @max_body.setter
    def max_body(self, value: int) -> None:
        self._httpd.max_body = value

    @property
    def read_timeout(self) -> float:
        return self._httpd.read_timeout

    @read_timeout.setter
    def read_timeout(self, value: float) -> None:
        self._httpd.read_timeout = value

    @property
    def max_queued(self) -> int:
        return self._queue.max_queued

    @max_queued.setter
    def max_queued(self, value: int) -> None:
        self._queue.max_queued = value

    @property
    def runsync_wait(self) -> float:
        return self._queue.runsync_wait

    @runsync_wait.setter
    def runsync_wait(self, value: float) -> None:
        self._queue.runsync_wait = value

    # ------------------------------------------------------------- what the routes call

    def submit(self, body: dict[str, Any], *, prefix: str = "", size: int = 0) -> Job:
        """Queue a job made of a request body (already checked) of `size` bytes. Raises
        QueueFull when the queue holds `max_queued` jobs or MAX_QUEUED_BYTES of bodies."""
        return self._queue.submit(body, prefix=prefix, size=size)

    def run_sync(self, body: dict[str, Any], *, size: int = 0) -> dict[str, Any]:
        return self._queue.run_sync(body, size=size)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._queue.status(job_id)

    def stream(self, job_id: str) -> dict[str, Any]:
        return self._queue.stream(job_id)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._queue.cancel(job_id)

    def health(self) -> dict[str, Any]:
        return self._queue.health()

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token (see `HTTPServer.authorized`)."""
        return self._httpd.authorized(header)

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request is refused for its Host or Origin header, or None (see
        `HTTPServer.refusal`)."""
        return self._httpd.refusal(host, origin)

    # ------------------------------------------------------------- shutdown

    def describe(self) -> list[str]:
        """What `%rp_serve` says of it: the handler and its sizing, the URL, the routes."""
        try:
            spec = self.session.registry.get(self.name)
            sizing = f"concurrency {self.concurrency}"
            if spec.concurrency_modifier is not None:
                modifier = function_name(spec.concurrency_modifier) or "concurrency_modifier"
                sizing += f" from {modifier}()"
            what = f"handler {spec.name} ({sizing})"
        except NbworkerError as err:
            what = f"{self.name or 'the default handler'} (not registered yet: {err})"
        lines = [f"serving {what} at {self.url}"]
        lines.append(
            "routes: POST /run, /runsync; /status/ID, /stream/ID; POST /cancel/ID, /health"
        )
        if self.requires_token:
            lines.append("requests must send Authorization: Bearer <token>")
        return lines

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting requests, cancel queued jobs, let running ones finish for up to
        `grace` seconds and cancel the rest, then close every connection and join threads."""
        if not self._queue.close():
            return
        self._httpd.shutdown()  # the listening loop ends; the port is free after server_close
        self._httpd.server_close()
        self._thread.join()
        self._queue.finish(grace)
        self._httpd.hang_up()
        with _servers_lock:
            _servers.discard(self)


# ----------------------------------------------------------------- module API

_servers: set[Server] = set()
_servers_lock = threading.Lock()


def serve(
    session: Session,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    *,
    max_body: int = MAX_BODY,
    max_queued: int = MAX_QUEUED,
    runsync_wait: float = RUNSYNC_WAIT,
    read_timeout: float = READ_TIMEOUT,
    keep_finished: int = KEEP_FINISHED,
) -> Server:
    """Serve `session`'s handler `name` (None: `handler`, else the only one, looked up at
    each job) on `host:port` (0: a free port). A non-loopback host needs a `token`.
    `max_queued` jobs may wait (more are answered 429); a socket read waits `read_timeout`
    seconds at most; the newest `keep_finished` finished jobs answer /status. Raises
    ServeError when the address cannot be used."""
    server = Server(
        session,
        name,
        host,
        port,
        token,
        max_body=max_body,
        max_queued=max_queued,
        runsync_wait=runsync_wait,
        read_timeout=read_timeout,
        keep_finished=keep_finished,
    )
    with _servers_lock:
        _servers.add(server)
    return server


def restart(
    session: Session,
    name: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
) -> Server:
    """`%rp_serve`: serve `session`'s handler in place of what it served before. Checks
    what `serve` would refuse later or never (a name that is not Python, a port out of
    range, a network host without a token) as a ServeError; the old servers stop once the
    new one listens (first, the one holding the port asked for)."""
    if name is not None and not name.isidentifier():
        raise ServeError(f"{name!r} is not a Python name")
    if not 0 <= port <= 65535:
        raise ServeError(f"--port must be 0 to 65535, not {port}")
    if token is None and not is_loopback(host):
        raise ServeError(
            f"binding {host} opens the handler to the network: "
            "give --token TOKEN (clients send Authorization: Bearer TOKEN)"
        )
    current = running(session)
    for old in current:  # the port it holds may be the one asked for
        if port and old.port == port:
            old.stop()
    server = serve(session, name, host=host, port=port, token=token)
    for old in current:
        if old.serving:
            old.stop()
    return server


def running(session: Session | None = None) -> list[Server]:
    """The servers still serving (those of `session` only, if given)."""
    with _servers_lock:
        found = [s for s in _servers if session is None or s.session is session]
    return sorted(found, key=lambda s: s.port)


def stop_all() -> None:
    """Stop every server of this process (run at exit)."""
    for server in running():
        server.stop(grace=0.5)


atexit.register(stop_all)
