"""A notebook's cells run top to bottom in a fresh kernel, over jupyter_client.

What `nbworker test` needs of papermill and nbclient, without them: both import nbformat,
whose import costs about a second (see `nbworker.export.ipynb`), and papermill adds its own
(boto3, tqdm, ...). As nbclient does, each code cell with code is one `execute_request`
(`store_history`, no stdin), its iopub messages become its outputs (streams joined,
`clear_output` and `update_display_data` honoured), its reply gives its execution count;
a cell that fails stops the run, unless its error is one `allowed` names (a replay
mismatch) or the cell is tagged `raises-exception`. A cell running past the timeout, or a
kernel that dies, stops it too. The cells are plain JSON dicts (`nbworker.export.ipynb`
writes them), changed in place.

The kernel starts while the caller prepares the notebook (`Kernel.start`, then `ready`),
and is told to shut down before the caller writes its report (`stop`, then `close`).
Consecutive cells of a kind the caller names can go several to a request (`Batch`): the
kernel then marks how each ended, and each gets what it would have got alone.

Kernels talk over Unix sockets in a private folder (`LocalKernelManager`; TCP elsewhere):
ipykernel warns at every start of a TCP kernel without CurveZMQ keys that it is
"susceptible to eavesdropping"; a socket in a folder only this user can open is not.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import zmq
from jupyter_client.connect import ConnectionFileMixin, localhost
from jupyter_client.manager import AsyncKernelManager, KernelManager
from traitlets import default

__all__ = [
    "BATCH_LIMIT",
    "AsyncLocalKernelManager",
    "Batch",
    "Kernel",
    "LocalKernelManager",
    "Run",
    "code_cells",
    "ready",
]

ALLOW_ERRORS_TAG = "raises-exception"  # nbclient's: the cell's error does not stop the run
STARTUP_TIMEOUT = 60.0  # seconds, nbclient's default
LIVENESS_POLL = 1.0  # seconds between checks that a quiet kernel is still alive
BATCH_LIMIT = 100  # cells in one request at most


@dataclass(frozen=True)
class Batch:
    """How cells go several to a request, for speed: a request costs the kernel about as
    much again as a short cell does. `accepts(cell)` says which cells may (consecutive
    ones go together); `code(sources, allowed)` is the request's code, which runs them one
    by one as cells of their own (`shell.run_cell`, history and execution count), marks how
    each ended with a display_data of the `marker` mimetype (`{"index": i, "status",
    "execution_count", "ename", "evalue"}`; streams are flushed before it, so what comes
    between two marks is the next cell's) and stops after a cell whose error is not
    `allowed`. A kernel that fails the request before any mark gets the cells one by one.
    `code(sources, allowed, ledger)` may also write the index of each cell as it starts to
    the file `ledger` (digits at its start): a kernel killed by a cell loses the marks
    ZeroMQ had not sent yet, not what it wrote to a file, so the cell is named right."""

    accepts: Callable[[dict[str, Any]], bool]
    code: Callable[[list[str], list[str], str], str]
    marker: str


@dataclass
class Run:
    """How a run of the cells went."""

    ran: set[int] = field(default_factory=set)  # indices of the cells that started
    stopped: int | None = None  # the cell that stopped the run (an error, a failure)
    error: tuple[str, str] | None = None  # (ename, evalue) of that cell's reply
    failure: str | None = None  # what broke the run: a timeout, a dead kernel


class _LocalTransport(ConnectionFileMixin):
    """A kernel's transport: `ipc` where ZeroMQ has it (POSIX), its sockets in a fresh
    0700 folder (jupyter_client's default `kernel-ipc` is relative to each side's working
    directory, which differ); TCP on 127.0.0.1 elsewhere."""

    folder_prefix = "nbworker-kernel-"

    @default("transport")
    def _local_transport(self) -> str:
        return "ipc" if os.name == "posix" and zmq.has("ipc") else "tcp"

    @default("ip")
    def _local_ip(self) -> str:
        if self.transport != "ipc":
            return localhost()
        return os.path.join(tempfile.mkdtemp(prefix=self.folder_prefix), "kernel")

    def cleanup_ipc_files(self) -> None:
        super().cleanup_ipc_files()
        folder = os.path.dirname(self.ip)
        if self.transport == "ipc" and os.path.basename(folder).startswith(self.folder_prefix):
            shutil.rmtree(folder, ignore_errors=True)


class LocalKernelManager(_LocalTransport, KernelManager):
    """jupyter_client's `KernelManager` on the local transport (`nbworker test`'s kernels)."""


class AsyncLocalKernelManager(_LocalTransport, AsyncKernelManager):
    """The same for nbclient and papermill (`kernel_manager_class=` takes its dotted name),
    whose clients are asynchronous."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class Kernel:
    """One kernel (a kernelspec's name, started in `cwd`) for one run of a notebook."""

    def __init__(self, kernel_name: str, cwd: str) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_core.paths import jupyter_path

        # jupyter_client's own kernel folders; it imports IPython (~0.1 s, before the
        # kernel is even launched) only to name the last one
        ipython_dir = os.environ.get("IPYTHONDIR") or os.path.expanduser("~/.ipython")
        folders = [*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")]
        self.manager = LocalKernelManager(
            kernel_name=kernel_name, kernel_spec_manager=KernelSpecManager(kernel_dirs=folders)
        )
        self.cwd = cwd
        self.client: Any = None
        self._closed = False
        self._displays: dict[str, list[tuple[list[Any], int]]] = {}  # display_id -> places
        self._ledger: str | None = None  # the file batches write their running cell to

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Launch the kernel's process; `ready` waits for it."""
        self.manager.start_kernel(cwd=self.cwd)
        self.client = self.manager.client()
        self.client.start_channels()

    def ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the kernel answers `kernel_info` on shell and its iopub messages
        arrive. RuntimeError if it dies first (`alive()` then says False) or stays silent."""
        deadline = time.monotonic() + timeout
        asked = {self.client.kernel_info()}
        answered = False
        while True:
            if not answered:
                try:
                    reply = self.client.get_shell_msg(timeout=0.2)
                except queue.Empty:
                    pass
                else:
                    answered = reply["parent_header"].get("msg_id") in asked
            else:
                try:
                    message = self.client.get_iopub_msg(timeout=0.2)
                except queue.Empty:  # iopub not connected when it published: ask again
                    asked.add(self.client.kernel_info())
                    answered = False
                else:
                    if message["parent_header"].get("msg_id") in asked:
                        return
                    continue
            if not self.alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    def alive(self) -> bool:
        return bool(self.manager.is_alive())

    def stop(self) -> None:
        """Ask the kernel to shut down (it may run its exit handlers); `close` waits."""
        if self.manager.has_kernel:
            with contextlib.suppress(Exception):  # a dead kernel's channel: close kills it
                self.manager.request_shutdown()

    def close(self) -> None:
        """Wait for the kernel to exit (kill it after jupyter_client's grace period) and
        free its ports and files; again, nothing."""
        if self._closed:
            return
        self._closed = True
        if self.client is not None:
            self.client.stop_channels()
        if self.manager.has_kernel:
            self.manager.finish_shutdown()
        self.manager.cleanup_resources()
        if self._ledger is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._ledger)

    # ------------------------------------------------------------------ cells

    def run(
        self,
        cells: list[dict[str, Any]],
        *,
        timeout: float | None = None,
        allowed: Iterable[str] = (),
        on_error: Callable[[int, dict[str, Any]], None] | None = None,
        on_cell: Callable[[int], None] | None = None,
        batch: Batch | None = None,
    ) -> Run:
        """Run the code cells in order, filling in their outputs and execution counts.
        `timeout` bounds each cell; `allowed` error names do not stop the run; `on_error`
        sees each failed cell's index and reply content, `on_cell` each cell's index as it
        ends (progress). Consecutive cells `batch` accepts go in one request (see `Batch`)."""
        allowed, ended = frozenset(allowed), on_cell or (lambda index: None)
        run, code = Run(), code_cells(cells)
        position = 0
        while position < len(code):
            group = [code[position]]
            if batch is not None and batch.accepts(cells[group[0]]):
                while position + len(group) < len(code) and len(group) < BATCH_LIMIT:
                    if not batch.accepts(cells[code[position + len(group)]]):
                        break
                    group.append(code[position + len(group)])
            position += len(group)
            replies: list[tuple[int, dict[str, Any]]] | None
            try:
                if len(group) == 1:
                    run.ran.add(group[0])
                    replies = [(group[0], self._execute(cells[group[0]], timeout))]
                    ended(group[0])
                else:
                    replies = self._execute_batch(cells, group, timeout, allowed, batch, run, ended)
            except _Stop as stop:
                run.stopped = group[0] if stop.cell is None else stop.cell
                run.failure = stop.reason
                return run
            if replies is None:  # the kernel cannot run batches (another nbworker there)
                batch, position = None, position - len(group)
                continue
            for index, reply in replies:
                if reply.get("status") != "error":
                    continue
                if on_error is not None:
                    on_error(index, reply)
                name = str(reply.get("ename"))
                tags = cells[index].get("metadata", {}).get("tags", [])
                if name in allowed or ALLOW_ERRORS_TAG in tags:
                    continue
                run.stopped, run.error = index, (name, str(reply.get("evalue")))
                return run
        return run

    def _execute(self, cell: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        output = _Outputs(self, cell)
        msg_id = self.client.execute(
            str(cell["source"]), store_history=True, allow_stdin=False, stop_on_error=False
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # iopub until the kernel is idle again: the last message of a request
            message = self._next(self.client.get_iopub_msg, deadline, timeout)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "status":
                if content.get("execution_state") == "idle":
                    break
            elif kind == "execute_input":
                output.timing["iopub.execute_input"] = _now()
            else:
                output.add(kind, content)
        output.timing["iopub.status.idle"] = _now()
        reply = self._reply(msg_id, deadline, timeout)
        output.timing["shell.execute_reply"] = _now()
        cell["execution_count"] = reply.get("execution_count")
        return reply

    def _execute_batch(
        self,
        cells: list[dict[str, Any]],
        group: list[int],
        timeout: float | None,
        allowed: frozenset[str],
        batch: Any,
        run: Run,
        ended: Callable[[int], None],
    ) -> list[tuple[int, dict[str, Any]]] | None:
        """The cells `group` names, in one request: the kernel marks how each ended (the
        next one starts then). Their replies (as an execute_reply's content) in order, up to
        the first failure the kernel stopped at; None when the kernel ran none of them."""
        ledger = self._fresh_ledger()
        msg_id = self.client.execute(
            batch.code([str(cells[index]["source"]) for index in group], sorted(allowed), ledger),
            store_history=False,
            allow_stdin=False,
            stop_on_error=False,
        )
        position = 0  # the cell of `group` running: the first that has not ended
        current: _Outputs | None = None
        replies: list[tuple[int, dict[str, Any]]] = []
        deadline = None if timeout is None else time.monotonic() + timeout

        def begin() -> _Outputs:
            run.ran.add(group[position])
            return _Outputs(self, cells[group[position]])

        while True:
            try:
                message = self._next(self.client.get_iopub_msg, deadline, timeout)
            except _Stop as stop:  # the cell running when the time was up, or the kernel died
                started = _read_ledger(ledger) if stop.dead else None
                if started is not None and position <= started < len(group):
                    for later in group[position : started + 1]:  # their marks were lost
                        run.ran.add(later)
                    position = started
                stop.cell = group[min(position, len(group) - 1)]
                raise
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "status":
                if content.get("execution_state") == "idle":
                    break
                continue
            if kind == "execute_input":  # the request began: so does its first cell
                current = begin()
                continue
            mark = content.get("data", {}).get(batch.marker) if kind == "display_data" else None
            if mark is None:
                if current is not None:
                    current.add(kind, content)
                continue
            if current is not None:
                current.timing["iopub.status.idle"] = _now()
                current.timing["shell.execute_reply"] = _now()
            cells[group[position]]["execution_count"] = mark.get("execution_count")
            replies.append((group[position], dict(mark)))
            ended(group[position])
            position += 1
            current = None
            failed = mark.get("status") == "error" and mark.get("ename") not in allowed
            if position < len(group) and not failed:
                current = begin()
                deadline = None if timeout is None else time.monotonic() + timeout
        reply = self._reply(msg_id, deadline, timeout)
        if reply.get("status") == "error" and not replies:
            return None  # no cell ended: the kernel's run_cells failed (an older nbworker)
        if current is not None and reply.get("status") == "error":  # run_cells itself broke
            replies.append((group[position], reply))
        return replies

    def _fresh_ledger(self) -> str:
        """The batches' ledger file, emptied (made at the first batch)."""
        if self._ledger is None:
            fd, self._ledger = tempfile.mkstemp(prefix="nbworker-cells-", suffix=".txt")
            os.close(fd)
        else:
            with open(self._ledger, "wb"):
                pass
        return self._ledger

    def _reply(self, msg_id: str, deadline: float | None, timeout: Any) -> dict[str, Any]:
        while True:  # a request's reply is sent before its idle status
            reply = self._next(self.client.get_shell_msg, deadline, timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return dict(reply["content"])

    def _next(self, receive: Callable[..., Any], deadline: float | None, timeout: Any) -> Any:
        """The next message of a channel; _Stop when the cell's time is up or the kernel
        died meanwhile."""
        while True:
            wait = LIVENESS_POLL
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            try:
                return receive(timeout=wait)
            except queue.Empty:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                raise _Stop(
                    "CellTimeoutError: A cell timed out while it was being executed, after "
                    f"{timeout:g} seconds."
                )
            if not self.alive():
                raise _Stop("DeadKernelError: Kernel died", dead=True)


def code_cells(cells: list[dict[str, Any]]) -> list[int]:
    """The cells `Kernel.run` runs: code cells with code (nbclient skips empty ones too)."""
    return [
        index
        for index, cell in enumerate(cells)
        if cell.get("cell_type") == "code" and str(cell.get("source", "")).strip()
    ]


class _Outputs:
    """One cell's outputs as its iopub messages come: nbformat's `output_from_msg`,
    consecutive streams of a name joined as a frontend shows them, `clear_output` (with
    `wait`) honoured, `update_display_data` reaching the display of any cell."""

    def __init__(self, kernel: Kernel, cell: dict[str, Any]) -> None:
        self.displays = kernel._displays
        self.cell = cell
        self.outputs: list[Any] = []
        cell["outputs"], cell["execution_count"] = self.outputs, None
        self.timing = cell.setdefault("metadata", {}).setdefault("execution", {})
        self.timing["iopub.status.busy"] = _now()
        self.clear_on_next = False

    def add(self, kind: str, content: dict[str, Any]) -> None:
        if kind == "clear_output":
            if content.get("wait"):
                self.clear_on_next = True
            else:
                self.outputs.clear()
            return
        if kind == "update_display_data":
            self._update(content)
            return
        if kind not in ("stream", "display_data", "execute_result", "error"):
            return
        if self.clear_on_next:
            self.outputs.clear()
            self.clear_on_next = False
        if kind == "stream":
            last = self.outputs[-1] if self.outputs else None
            same = last is not None and last["output_type"] == "stream"
            if same and last is not None and last["name"] == content.get("name"):
                last["text"] += str(content.get("text", ""))
                return
            self.outputs.append(
                {
                    "output_type": "stream",
                    "name": content.get("name", "stdout"),
                    "text": str(content.get("text", "")),
                }
            )
            return
        if kind == "error":
            self.outputs.append(
                {
                    "output_type": "error",
                    "ename": str(content.get("ename")),
                    "evalue": str(content.get("evalue")),
                    "traceback": list(content.get("traceback", [])),
                }
            )
            return
        output: dict[str, Any] = {
            "output_type": kind,
            "data": dict(content.get("data", {})),
            "metadata": dict(content.get("metadata", {})),
        }
        if kind == "execute_result":
            output["execution_count"] = content.get("execution_count")
        self.outputs.append(output)
        display_id = content.get("transient", {}).get("display_id")
        if display_id:
            self.displays.setdefault(display_id, []).append((self.outputs, len(self.outputs) - 1))

    def _update(self, content: dict[str, Any]) -> None:
        display_id = content.get("transient", {}).get("display_id")
        for outputs, position in self.displays.get(display_id, []):
            if position < len(outputs) and outputs[position]["output_type"] in (
                "display_data",
                "execute_result",
            ):
                outputs[position]["data"] = dict(content.get("data", {}))
                outputs[position]["metadata"] = dict(content.get("metadata", {}))


class _Stop(Exception):  # private: never leaves Kernel.run
    def __init__(self, reason: str, cell: int | None = None, *, dead: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.cell, self.dead = reason, cell, dead


def _read_ledger(path: str) -> int | None:
    """The index of the last cell a batch started, as its ledger says; None if unreadable."""
    try:
        with open(path, "rb") as ledger:
            return int(ledger.read().strip() or b"-1")
    except (OSError, ValueError):
        return None


def ready(kernel: Kernel, *, attempts: int, notes: list[str]) -> Kernel:
    """`kernel` (started) once it answers; started again, up to `attempts` starts in all,
    each noted, when it dies before its first reply (over TCP, most often because a port
    jupyter_client picked for it was taken meanwhile by another process). RuntimeError when
    it dies at every start, or answers nothing in time."""
    for attempt in range(1, attempts + 1):
        try:
            kernel.ready()
            return kernel
        except RuntimeError as err:
            died = not kernel.alive()
            kernel.close()
            if not died or attempt == attempts:
                raise
            notes.append(
                f"the kernel died while starting ({type(err).__name__}: {err}); started a new one"
            )
            kernel = Kernel(kernel.manager.kernel_name, kernel.cwd)
            try:
                kernel.start()
            except BaseException:
                kernel.close()
                raise
    raise AssertionError("unreachable")  # pragma: no cover
