"""A real Jupyter kernel driven over jupyter_client, for tests and benchmarks.

`Kernel` starts one from the `python3` kernelspec with the nbworker extension loaded;
`execute()` sends one execute_request and collects, with their arrival times, every iopub
message that request produced until the kernel is idle again, plus the execute_reply
(an `Execution`). The fixtures `kernel` (one per test module) and `fresh_kernel` (one per
test) in conftest.py start them; bench/common.py times round trips with them.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.manager import start_new_kernel

from nbworker.record import RECORD_MIMETYPE

OUTPUT_TYPES = ("stream", "display_data", "update_display_data", "execute_result", "error")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


@dataclass
class Message:
    """One iopub message of a request: seconds after the request was sent, type, content."""

    t: float
    msg_type: str
    content: dict[str, Any]


@dataclass
class Execution:
    """What one execute_request produced."""

    code: str
    reply: dict[str, Any] = field(default_factory=dict)  # execute_reply content
    messages: list[Message] = field(default_factory=list)  # output messages only
    reply_t: float = 0.0
    idle_t: float = 0.0
    actions: dict[str, float] = field(default_factory=dict)  # action name -> time it was taken

    @property
    def status(self) -> str:
        return self.reply.get("status", "")

    def of_type(self, *types: str) -> list[Message]:
        return [m for m in self.messages if m.msg_type in types]

    def stream_text(self, name: str) -> str:
        return "".join(
            m.content["text"] for m in self.of_type("stream") if m.content["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self.stream_text("stdout")

    @property
    def stderr(self) -> str:
        return self.stream_text("stderr")

    def outputs(self) -> list[dict[str, Any]]:
        """The cell's outputs as a frontend (or nbclient) ends up showing them: each
        update_display_data replaces the data of the display with the same display_id."""
        outputs: list[dict[str, Any]] = []
        for message in self.messages:
            content = message.content
            if message.msg_type == "update_display_data":
                display_id = content.get("transient", {}).get("display_id")
                for output in outputs:
                    if output.get("display_id") == display_id:
                        output["data"] = content["data"]
                        output["metadata"] = content.get("metadata", {})
                continue
            output = {"output_type": message.msg_type, **content}
            if message.msg_type == "display_data":
                output["display_id"] = content.get("transient", {}).get("display_id")
            outputs.append(output)
        return outputs

    def records(self) -> list[dict[str, Any]]:
        """The run records in the cell's final outputs."""
        return [
            output["data"][RECORD_MIMETYPE]
            for output in self.outputs()
            if output["output_type"] in ("display_data", "execute_result")
            and RECORD_MIMETYPE in output.get("data", {})
        ]

    def record(self) -> dict[str, Any]:
        records = self.records()
        assert len(records) == 1, f"expected one run record\n{self.describe()}"
        return records[0]

    def describe(self) -> str:
        """A readable account of the execution, for assertion messages."""
        lines = [f"code: {self.code!r}", f"reply: {self.status} {self.reply.get('ename', '')}"]
        for message in self.messages:
            content = message.content
            if message.msg_type == "stream":
                detail = f"{content['name']}: {content['text']!r}"
            elif message.msg_type == "error":
                detail = strip_ansi("\n".join(content["traceback"]))
            else:
                data = content.get("data", {})
                detail = repr(data.get(RECORD_MIMETYPE) or data.get("text/plain", ""))[:500]
            lines.append(f"  {message.t:7.3f} {message.msg_type}: {detail}")
        return "\n".join(lines)


class Kernel:
    """A real kernel from the `python3` kernelspec (the environment's own: conftest.py puts
    it first on JUPYTER_PATH), with the nbworker extension loaded."""

    def __init__(
        self, cwd: str | Path | None = None, *, extension: bool = True, **popen: Any
    ) -> None:
        """Start the kernel in `cwd` (default: this process's), with `%load_ext nbworker`
        run unless `extension` is false; `popen` goes to the kernel's process (`stdout`,
        `stderr`: where its own output goes)."""
        if cwd is not None:
            popen["cwd"] = str(cwd)
        started = time.monotonic()
        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=60, **popen)
        self.startup = time.monotonic() - started  # seconds until the kernel answered
        if extension:
            try:
                loaded = self.execute("%load_ext nbworker")
                if loaded.status != "ok":
                    raise RuntimeError(f"%load_ext nbworker failed\n{loaded.describe()}")
            except BaseException:
                self.shutdown()
                raise

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def execute(
        self,
        code: str,
        *,
        timeout: float = 30.0,
        user_expressions: dict[str, str] | None = None,
        action: tuple[str, Callable[[Execution, float], bool], Callable[[], None]] | None = None,
    ) -> Execution:
        """Run `code`; collect its output messages (with arrival times) until the kernel is
        idle and the reply has come. `action` = (name, when(execution, elapsed), do): `do`
        is called once, as soon as `when` is true (checked at least every 20 ms)."""
        code = textwrap.dedent(code).strip("\n")
        kc = self.kc
        iopub, shell = kc.iopub_channel.socket, kc.shell_channel.socket
        poller = zmq.Poller()
        poller.register(iopub, zmq.POLLIN)
        poller.register(shell, zmq.POLLIN)

        result = Execution(code)
        started = time.monotonic()
        msg_id = kc.execute(code, user_expressions=user_expressions or {})
        idle = replied = False
        while not (idle and replied):
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise TimeoutError(f"no idle/reply after {timeout} s\n{result.describe()}")
            if action is not None and action[0] not in result.actions:
                name, when, do = action
                if when(result, elapsed):
                    do()
                    result.actions[name] = time.monotonic() - started
            ready = dict(poller.poll(20))
            if iopub in ready:
                message = kc.get_iopub_msg(timeout=0)
                t = time.monotonic() - started
                if message["parent_header"].get("msg_id") != msg_id:
                    continue  # left over from an earlier request
                kind = message["msg_type"]
                if kind == "status" and message["content"]["execution_state"] == "idle":
                    idle, result.idle_t = True, t
                elif kind in OUTPUT_TYPES:
                    result.messages.append(Message(t, kind, message["content"]))
            if shell in ready:
                message = kc.get_shell_msg(timeout=0)
                if message["parent_header"].get("msg_id") == msg_id:
                    replied, result.reply = True, message["content"]
                    result.reply_t = time.monotonic() - started
        return result

    def ok(self, code: str, **options: Any) -> Execution:
        """Run `code` and require that the cell succeeds."""
        result = self.execute(code, **options)
        assert result.status == "ok", result.describe()
        assert not result.of_type("error"), result.describe()
        return result

    def evaluate(self, expression: str) -> str:
        """The repr of `expression` in the kernel (through user_expressions)."""
        result = self.ok("pass", user_expressions={"value": expression})
        value = result.reply["user_expressions"]["value"]
        assert value["status"] == "ok", value
        return value["data"]["text/plain"]
