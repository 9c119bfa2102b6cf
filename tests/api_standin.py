"""A local stand-in for RunPod's API on 127.0.0.1, for `nbworker deploy`'s tests.

A real HTTP server on a thread that records every request (method, path, headers, the
parsed body, the GraphQL operation and its input object) and answers as RunPod's API does,
in the shapes the runpod SDK parses:

- `POST /graphql` (runpod 1.12's `create_template`, `create_endpoint`,
  `update_endpoint_template`, `get_endpoints`): the query text is parsed (a small GraphQL
  value parser, so a query the SDK wrote wrongly fails here as it would there) and answered
  with `{"data": {"saveTemplate": {...}}}` and the like, or `{"errors": [{"message"}]}`.
- `POST /v2/templates`, `POST /v2/serverless`, `PATCH /v2/serverless/{id}`,
  `GET /v2/serverless` (runpod 2.0's REST calls for the same functions).
- the endpoint API under `/ep/{endpoint_id}` (RUNPOD_ENDPOINT_BASE_URL = `endpoint_base`):
  `GET /health` from `health(endpoint_id, polls)`; `/run`, `/runsync`, `/status/{job}`,
  `/stream/{job}` forwarded to a real worker server (`worker_url`: `python handler.py
  --rp_serve_api`, or `%rp_serve`), a job's final answer kept so that `/status` can be asked
  again as on RunPod; `/cancel/{job}`, `/purge-queue`.

Every route wants `Authorization: Bearer <key>` (401 otherwise). What it is not: RunPod.
It checks that nbworker makes the SDK calls it means to, with the fields it means to send;
whether RunPod accepts them is only known against RunPod.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
READY = {"idle": 1, "initializing": 0, "ready": 1, "running": 0, "throttled": 0, "unhealthy": 0}
NO_WORKER = {"idle": 0, "initializing": 1, "ready": 0, "running": 0, "throttled": 0, "unhealthy": 0}


def health_with(workers: dict[str, int]) -> dict[str, Any]:
    """A /health answer as RunPod gives it."""
    jobs = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}
    return {"jobs": jobs, "workers": dict(workers)}


@dataclass
class Recorded:
    """One request the stand-in got."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the JSON body, parsed (None: none)
    operation: str | None = None  # saveTemplate, saveEndpoint, ..., or "POST /v2/templates"
    fields: dict[str, Any] = field(default_factory=dict)  # the mutation's input / REST body
    query: str | None = None  # the GraphQL text, as the SDK wrote it


class ApiStandIn:
    """The server; use it as a context manager (started on entry, stopped on exit)."""

    def __init__(self, *, key: str, worker_url: str | None = None) -> None:
        self.key = key
        self.worker_url = worker_url
        self.requests: list[Recorded] = []
        self.templates: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {
            "existing1": {
                "id": "existing1",
                "name": "old",
                "templateId": "tpl-old",
                "workersMin": 0,
            }
        }
        self.fail_status: int | None = None  # answer every API call with this HTTP status
        self.graphql_errors: str | None = None  # answer every API call with this error
        self.refuse: dict[str, str] = {}  # operation (saveEndpoint...) -> the error it gets
        self.page: tuple[int, bytes] | None = None  # answer API calls with this (an HTML page)
        self.health: Callable[[str, int], dict[str, Any]] = lambda _id, _n: health_with(READY)
        self.polls: dict[str, int] = {}
        self.jobs: dict[str, dict[str, Any]] = {}  # job id -> its final answer
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def endpoint_base(self) -> str:
        return f"{self.url}/ep"

    def env(self) -> dict[str, str]:
        """The environment that points the SDK and nbworker's client here."""
        return {
            "RUNPOD_API_KEY": self.key,
            "RUNPOD_API_BASE_URL": self.url,
            "RUNPOD_ENDPOINT_BASE_URL": self.endpoint_base,
        }

    def api_calls(self) -> list[Recorded]:
        """The requests to the API proper (GraphQL and REST), not to endpoints."""
        return [r for r in self.requests if not r.path.startswith("/ep/")]

    def __enter__(self) -> ApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ answers
    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        recorded = Recorded(method, path, headers, body)
        with self._lock:
            self.requests.append(recorded)
        if headers.get("authorization") != f"Bearer {self.key}":
            return 401, {"error": "Unauthorized"}
        if path.startswith("/ep/"):
            return self._endpoint(method, path, body)
        if self.page is not None:
            return self.page
        if self.fail_status is not None:
            return self.fail_status, {"error": "stand-in told to fail"}
        if self.graphql_errors is not None:
            return 200, {"errors": [{"message": self.graphql_errors}]}
        if path == "/graphql" and method == "POST":
            return self._graphql(recorded, body)
        return self._rest(recorded, method, path, body)

    def _graphql(self, recorded: Recorded, body: Any) -> tuple[int, Any]:
        query = body.get("query", "") if isinstance(body, dict) else ""
        recorded.query = query
        if re.search(r"\bmyself\s*{\s*endpoints\b", query):
            recorded.operation = "myself"
            return 200, {"data": {"myself": {"endpoints": list(self.endpoints.values())}}}
        found = re.search(r"mutation\s*{\s*(\w+)\s*\(\s*input\s*:\s*", query)
        if found is None:
            return 200, {"errors": [{"message": "the stand-in does not know this query"}]}
        recorded.operation = found[1]
        try:
            fields, _ = parse_value(query, found.end())
        except ValueError as err:
            return 400, {"errors": [{"message": f"Syntax Error: {err}"}]}
        recorded.fields = fields
        if found[1] in self.refuse:
            return 200, {"errors": [{"message": self.refuse[found[1]]}]}
        made = self._make(found[1], fields)
        if isinstance(made, str):
            return 200, {"errors": [{"message": made}]}
        return 200, {"data": {found[1]: made}}

    def _rest(self, recorded: Recorded, method: str, path: str, body: Any) -> tuple[int, Any]:
        recorded.operation, recorded.fields = (
            f"{method} {path}",
            body if isinstance(body, dict) else {},
        )
        fields = recorded.fields
        if (method, path) == ("POST", "/v2/templates"):
            made = self._make(
                "saveTemplate",
                {"name": fields.get("name"), "imageName": fields.get("image"), **fields},
            )
        elif (method, path) == ("POST", "/v2/serverless"):
            made = self._make(
                "saveEndpoint", {**fields, "workersMin": (fields.get("workers") or {}).get("min")}
            )
        elif (method, path) == ("GET", "/v2/serverless"):
            return 200, {"endpoints": list(self.endpoints.values())}
        elif method == "PATCH" and path.startswith("/v2/serverless/"):
            fields = {"endpointId": path.rsplit("/", 1)[1], **fields}
            made = self._make("updateEndpointTemplate", fields)
        else:
            return 404, {"detail": f"no route {method} {path}"}
        return (404, {"detail": made}) if isinstance(made, str) else (200, made)

    def _make(self, operation: str, fields: dict[str, Any]) -> dict[str, Any] | str:
        """The object an operation makes, or the error message RunPod would give."""
        with self._lock:
            number = next(self._ids)
            if operation == "saveTemplate":
                if any(t["name"] == fields.get("name") for t in self.templates.values()):
                    return "Template name must be unique"
                template = {"id": f"tpl{number}", **fields}
                self.templates[template["id"]] = template
                return template
            if operation == "saveEndpoint":
                if fields.get("templateId") not in self.templates:
                    return "Template not found"
                endpoint = {"id": f"ep{number}", **fields}
                self.endpoints[endpoint["id"]] = endpoint
                return endpoint
            if operation == "updateEndpointTemplate":
                endpoint = self.endpoints.get(fields.get("endpointId"))
                if endpoint is None:
                    return "Endpoint not found"
                if fields.get("templateId") not in self.templates:
                    return "Template not found"
                endpoint["templateId"] = fields["templateId"]
                return {"id": endpoint["id"], "templateId": endpoint["templateId"]}
        return f"the stand-in does not know {operation}"

    def _endpoint(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.split("/")[2:]  # /ep/{id}/route[/job]
        endpoint_id, route = parts[0], "/".join(parts[1:])
        if endpoint_id not in self.endpoints:
            return 404, {"error": f"endpoint {endpoint_id} not found"}
        if route == "health" and method == "GET":
            with self._lock:
                polls = self.polls[endpoint_id] = self.polls.get(endpoint_id, 0) + 1
            return 200, self.health(endpoint_id, polls)
        if route == "purge-queue":
            return 200, {"removed": 0, "status": "completed"}
        if route.startswith("cancel/"):
            return 200, {"id": route.split("/", 1)[1], "status": "CANCELLED"}
        if route.startswith(("status/", "stream/")) and route.split("/", 1)[1] in self.jobs:
            return 200, self.jobs[route.split("/", 1)[1]]
        if self.worker_url is None:
            return 503, {"error": "the stand-in has no worker"}
        if route in ("run", "runsync") and method == "POST":
            answer = requests.post(f"{self.worker_url}/{route}", json=body, timeout=120)
        elif route.startswith(("status/", "stream/")):
            answer = requests.post(f"{self.worker_url}/{route}", timeout=120)  # the SDK's: POST
        else:
            return 404, {"error": f"no route {method} {route}"}
        value = answer.json() if answer.content else None
        if isinstance(value, dict) and value.get("status") in FINAL and value.get("id"):
            with self._lock:
                self.jobs[str(value["id"])] = value
        return answer.status_code, value


def _handler(standin: ApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = standin.answer(self.command, self.path, headers, body)
            page = isinstance(answer, bytes)
            data = answer if page else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if page else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# ---------------------------------------------------------------------- GraphQL values

_SPACE = re.compile(r"[\s,]*")
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def parse_value(text: str, at: int) -> tuple[Any, int]:
    """The GraphQL input value at `at` (object, list, string, number, boolean, null or an
    enum, as a string) and where it ends; ValueError for what GraphQL would refuse."""
    at = _SPACE.match(text, at).end()
    if at >= len(text):
        raise ValueError("unexpected end of the query")
    char = text[at]
    if char == "{":
        value: dict[str, Any] = {}
        at += 1
        while True:
            at = _SPACE.match(text, at).end()
            if text[at : at + 1] == "}":
                return value, at + 1
            name = _NAME.match(text, at)
            if name is None:
                raise ValueError(f"expected a field name at {at}: {text[at : at + 20]!r}")
            at = _SPACE.match(text, name.end()).end()
            if text[at : at + 1] != ":":
                raise ValueError(f"expected ':' after {name[0]} at {at}")
            if name[0] in value:
                raise ValueError(f"field {name[0]} given twice")
            value[name[0]], at = parse_value(text, at + 1)
    if char == "[":
        items: list[Any] = []
        at += 1
        while True:
            at = _SPACE.match(text, at).end()
            if text[at : at + 1] == "]":
                return items, at + 1
            item, at = parse_value(text, at)
            items.append(item)
    if char == '"':
        out, at = [], at + 1
        while at < len(text) and text[at] != '"':
            if text[at] == "\n":
                raise ValueError("a line break in a string")
            if text[at] == "\\":
                escaped = text[at + 1 : at + 2]
                if escaped not in _ESCAPES:
                    raise ValueError(f"bad escape \\{escaped}")
                out.append(_ESCAPES[escaped])
                at += 2
                continue
            out.append(text[at])
            at += 1
        if at >= len(text):
            raise ValueError("an unterminated string")
        return "".join(out), at + 1
    number = _NUMBER.match(text, at)
    if number is not None:
        return json.loads(number[0]), number.end()
    name = _NAME.match(text, at)
    if name is None:
        raise ValueError(f"unexpected {char!r} at {at}")
    return {"true": True, "false": False, "null": None}.get(name[0], name[0]), name.end()


# ---------------------------------------------------------------------- a real worker


@contextlib.contextmanager
def sdk_worker_server(folder: Path, *, python: str = sys.executable) -> Iterator[str]:
    """The exported worker in `folder` served by the runpod SDK (`python handler.py
    --rp_serve_api` on a free port of 127.0.0.1): its URL, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = folder / "server.log"
    args = ["--rp_serve_api", "--rp_api_port", str(port), "--rp_api_host", "127.0.0.1"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [python, "handler.py", *args, "--rp_log_level", "WARN"],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the worker's server did not start in 60s"
                    time.sleep(0.1)  # polling a port with a deadline, not a wait for an event
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
