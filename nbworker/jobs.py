"""Running a job against a handler with RunPod's envelope, in this process.

`JobRunner.run` follows what a deployed worker's job loop does (`rp_job.run_job`,
`run_job_generator` and `handle_job` in runpod 1.12): the same job dict, the same result
envelope, the same error JSON, the same stream rules. It adds what a notebook needs and
the SDK cannot give inside a kernel: chunks handed to a callback as they come, a timeout
that stops a pure-Python loop, Ctrl-C that ends the job and not the kernel, and warnings
about what would break only once deployed.

Everything runs on the calling thread, so prints, logs and display calls land in the
cell that runs the job. Async handlers are driven on a private event loop of the runner,
also on this thread, while the kernel's own loop waits (a deployed worker too runs the
handler inside an event loop, so `asyncio.run()` fails in both).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from nbworker import checks, sdk
from nbworker.envelope import (
    LOCAL_JOB_ID,
    NO_INPUT_MESSAGE,
    build_job,
    error_info,
    parse_job,
    result_from_return,
    user_traceback,
)
from nbworker.record import Run, is_plain, jsonable, safe_str
from nbworker.registry import HandlerSpec
from nbworker.stopping import NO_LIMIT, JobTimeout, deadline

__all__ = [
    "NO_INPUT_MESSAGE",
    "NO_LIMIT",
    "JobRunner",
    "JobTimeout",
    "build_job",
    "error_info",
    "parse_job",
    "result_from_return",
    "user_traceback",
]


class _CellLogHandler(logging.Handler):
    """Shows log records emitted during a run, RunPod-style, on the current stderr.

    Only the run's own thread is labelled with its job id. While it is installed, records
    of other threads (another served job, a library's background thread) are shown as
    logging's last-resort handler would show them: WARNING and above, unlabelled."""

    def __init__(self, job_id: str) -> None:
        super().__init__(logging.INFO)
        self.job_id = job_id
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.thread == self.thread:
                sys.stderr.write(f"{record.levelname:<6} | {self.job_id} | {message}\n")
            elif record.levelno >= logging.WARNING:
                sys.stderr.write(f"{message}\n")
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logs_to_cell(job_id: str, handlers: threading.local) -> Iterator[None]:
    """Let INFO and above reach the cell when logging is not configured (the usual case
    in a kernel). A root logger with handlers of its own is left alone. `handlers` keeps
    one handler per thread for the next runs (a logging.Handler costs a lock and a weak
    reference in logging's registry to make)."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = getattr(handlers, "handler", None)
    if handler is None:
        handler = handlers.handler = _CellLogHandler(str(job_id))
    handler.job_id = str(job_id)
    level = root.level
    root.addHandler(handler)
    if level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        if root.level != level:
            root.setLevel(level)


# --------------------------------------------------------------------------- running

ChunkCallback = Callable[[Any, int], None]
ProgressCallback = Callable[[Any, float], None]  # (value, seconds since the run started)

EXITS_WORKER = (
    "deployed, the job loop catches only Exception, so this {kind} ends the worker process "
    "and the job is lost (the platform may retry it on another worker)"
)


class _ProgressLog:
    """A run's `progress_update` calls, as the record keeps them: the last
    MAX_PROGRESS_KEPT, each value as JSON of at most MAX_PROGRESS_CHARS; warnings for a value
    the SDK could not send, and for what the record left out."""

    def __init__(self, run: Run, started: float, on_progress: ProgressCallback | None) -> None:
        self.run, self.started, self.on_progress = run, started, on_progress
        self.count = 0
        self.cut = False
        self.unsendable: str | None = None

    def add(self, value: Any) -> None:
        seconds = time.perf_counter() - self.started
        self.count += 1
        problem = checks.serialization_problem({"output": value})
        if problem and self.unsendable is None:
            self.unsendable = f"a progress_update value is {problem}: deployed, it is not sent"
        kept = jsonable(value)
        text = json.dumps(kept)
        if len(text) > MAX_PROGRESS_CHARS:
            kept, self.cut = text[:MAX_PROGRESS_CHARS] + "…", True
        entries = self.run.progress
        entries.append({"value": kept, "seconds": round(seconds, 4)})
        if len(entries) > MAX_PROGRESS_KEPT:
            del entries[0]
        if self.on_progress is not None:
            self.on_progress(value, seconds)

    def close(self) -> None:
        warnings = self.run.warnings
        if self.unsendable:
            warnings.append(self.unsendable)
        if self.cut:
            warnings.append(
                f"progress values over {MAX_PROGRESS_CHARS:,} characters of JSON are cut in the "
                "record"
            )
        if self.count > MAX_PROGRESS_KEPT:
            warnings.append(
                f"{self.count:,} progress updates: the record keeps the last {MAX_PROGRESS_KEPT:,}"
            )


MAX_PROGRESS_KEPT = 1000
MAX_PROGRESS_CHARS = 10_000


class JobRunner:
    """Runs jobs on the calling thread; owns the private loop async handlers run on."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log_handlers = threading.local()  # see _logs_to_cell

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        self._loop = None

    def _drive(self, awaitable: Any) -> Any:
        """Run `awaitable` to completion on the private loop, on this thread, even when this
        thread's own loop (the kernel's) is running: it is blocked in this call anyway."""
        __tracebackhide__ = True  # IPython shows the handler's frames only
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        loop = self._loop
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        task = loop.create_task(_as_coroutine(awaitable))
        try:
            return loop.run_until_complete(task)
        except BaseException as stop:
            if not task.done():  # stopped while the handler awaited: cancel it cleanly
                # Remember where it waited, for the traceback of the stop.
                stop._nbworker_where = _awaiting_stack(task.get_coro())  # type: ignore[attr-defined]
                task.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(asyncio.wait({task}, timeout=2.0))
            elif not task.cancelled():  # SystemExit, KeyboardInterrupt: raised, not retrieved,
                task.exception()  # so asyncio would log "Task exception was never retrieved"
            raise
        finally:
            asyncio.events._set_running_loop(outer)

    def run(
        self,
        spec: HandlerSpec,
        job: dict[str, Any],
        *,
        timeout: float | None = None,
        on_chunk: ChunkCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Run:
        """Run `job` (as `build_job` makes it) against `spec`; never raises for the
        handler's own failures, which become a FAILED run.

        `on_progress(value, seconds)` gets each `runpod.serverless.progress_update` of the
        job, from whichever thread the handler called it on."""
        __tracebackhide__ = True  # IPython shows the handler's frames only
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        run = Run(handler=spec.name, job=copy.deepcopy(job), status="COMPLETED")
        run.warnings.extend(spec.warnings)
        run.warnings.extend(checks.job_warnings(job))
        if checks.has_lone_surrogate(job):
            run.warnings.append(checks.SURROGATE_WARNING.format(where="job"))
        if spec.streams:
            run.stream = []
        sdk.prepare()
        started = time.perf_counter()

        progress = _ProgressLog(run, started, on_progress)

        stopped: BaseException | None = None
        called: tuple[Any, dict[str, Any]] | None = None
        job_id = job.get("id", LOCAL_JOB_ID)
        try:
            with (
                _logs_to_cell(job_id, self._log_handlers),
                deadline(timeout),
                sdk.progress_route(job, progress.add),
            ):
                failure = sdk.PRESTART.ensure(self._drive)
                if failure is not None:
                    self._finish(run, {"error": json.dumps(failure)})
                    run.warnings.append(
                        f"prestart hook {failure.get('hook', '')!r} failed: deployed, the worker "
                        "fails the jobs it holds with this error and exits 1. Re-run the cell "
                        "that registers the hook to run the hooks again."
                    )
                elif job.get("input") is None:  # what the SDK's local test does
                    self._finish(run, {"error": NO_INPUT_MESSAGE})
                    run.warnings.append(
                        'the job\'s "input" is null: `python handler.py --test_input` refuses it '
                        "(exit 1) and the handler never runs; send an object"
                    )
                elif spec.streams:
                    self._stream(spec, job, run, on_chunk)
                else:
                    called = self._call(spec, job, run)
        except JobTimeout as err:
            run.status, run.error, stopped = "TIMED_OUT", f"timed out after {timeout:g} s", err
            hooks = sdk.stopped_in_prestart(err)
            if hooks:
                run.error += f" in the prestart hooks ({', '.join(hooks)}), before the handler ran"
        except KeyboardInterrupt as err:
            run.status, run.error, stopped = "CANCELLED", "interrupted", err
            run.interrupt = err
        finally:
            run.duration_ms = (time.perf_counter() - started) * 1000
            sdk.after_job()
        if called is not None and stopped is None:  # after the clock and the deadline
            try:
                self._check(run, *called)
            except KeyboardInterrupt as err:  # while a big result was encoded
                run.status, run.error, stopped = "CANCELLED", "interrupted", err
                run.interrupt = err
        progress.close()
        if stopped is not None:  # where the handler was when it was stopped
            run.result, run.output, run.refresh_worker = None, None, False
            run.traceback = _stop_traceback(stopped)
        return run

    def _call(self, spec: HandlerSpec, job: dict[str, Any], run: Run) -> tuple[Any, dict[str, Any]]:
        """Call the handler; what it returned and the result RunPod makes of it."""
        __tracebackhide__ = True  # IPython shows the handler's frames only
        returned: Any = None
        with sdk.log_capture() as captured:
            try:
                returned = spec.function(job)
                if inspect.isawaitable(returned):
                    returned = self._drive(returned)
                result = result_from_return(returned)
            except (JobTimeout, KeyboardInterrupt):
                raise
            except BaseException as err:  # SystemExit, GeneratorExit too: a result
                info = error_info(err)
                logs = captured()
                if logs:
                    info["logs"] = logs
                result = {"error": json.dumps(info)}
                run.traceback = info["error_traceback"]
                run.warnings.extend(_failure_warnings(err))
        return returned, result

    def _check(self, run: Run, returned: Any, result: dict[str, Any]) -> None:
        """Fill in the run from a non-streaming handler's result, encoded once: the checks,
        the record and the views share that encoding (`Run.output_json`)."""
        sent = checks.encode_result(result)
        self._finish(run, result, sent.problem)
        if sent.output_json is not None and is_plain(run.output):
            run.output_json = sent.output_json
        run.warnings.extend(checks.result_warnings(returned, result, sent))

    def _stream(
        self, spec: HandlerSpec, job: dict[str, Any], run: Run, on_chunk: ChunkCallback | None
    ) -> None:
        __tracebackhide__ = True
        chunks: list[Any] = run.stream if run.stream is not None else []
        result: dict[str, Any] = {"output": []}

        def take(chunk: Any) -> bool:
            """Handle one chunk as `handle_job` does; False ends the stream."""
            nonlocal result
            if isinstance(chunk, dict) and chunk.get("error"):
                result = {"error": str(chunk["error"])}
                return False
            chunks.append(chunk)
            if spec.aggregate:
                result["output"].append(chunk)
            if on_chunk is not None:
                on_chunk(chunk, len(chunks) - 1)
            return True

        generator = None
        with sdk.log_capture() as captured:
            try:
                generator = spec.function(job)
                if spec.kind == "async_generator":
                    self._drive(_drain(generator, take))
                else:
                    for chunk in generator:
                        if not take(chunk):
                            break
            except (JobTimeout, KeyboardInterrupt):
                raise
            except BaseException as err:  # SystemExit, GeneratorExit too: a result
                run.traceback = user_traceback(err)
                result = {"error": f"handler: {safe_str(err)} \ntraceback: {run.traceback}"}
                logs = captured()
                if logs:
                    result["error"] += f"\nlogs:\n{logs}"
                run.warnings.extend(_failure_warnings(err))
            finally:
                self._close_generator(generator)
        self._finish(run, result)
        run.warnings.extend(checks.stream_warnings(chunks, result))

    def _close_generator(self, generator: Any) -> None:
        """Run the generator's `finally` blocks when it was left early."""
        with contextlib.suppress(Exception):
            if inspect.isasyncgen(generator):
                self._drive(generator.aclose())
            elif inspect.isgenerator(generator):
                generator.close()

    @staticmethod
    def _finish(run: Run, result: dict[str, Any], problem: str | bool | None = False) -> None:
        """Fill in the run from the result; `problem` is why it cannot be sent, when the
        caller has checked (False: check here)."""
        run.result = result
        run.output = result.get("output")
        run.error = result.get("error")
        run.refresh_worker = bool(result.get("stopPod"))
        run.status = "FAILED" if run.error else "COMPLETED"
        if problem is False:
            problem = checks.serialization_problem(result)
        run.delivered = problem is None


def _stop_traceback(err: BaseException) -> str:
    """Where the handler was when it was stopped. A timeout's last line names the stop as
    `JobTimeout: the job's 2 s were up`, not by nbworker's module: the user's frames are
    the story, the class is nbworker's own."""
    text = user_traceback(err)
    if isinstance(err, JobTimeout):
        qualified = f"{type(err).__module__}.{type(err).__qualname__}"
        text = re.sub(rf"^{re.escape(qualified)}\b", type(err).__name__, text, flags=re.M)
    return text


def _failure_warnings(err: BaseException) -> list[str]:
    """What a handler's failure means once deployed, beyond the FAILED job."""
    warnings = []
    if not isinstance(err, Exception):
        kind = f"{type(err).__name__}" + (" (sys.exit())" if isinstance(err, SystemExit) else "")
        warnings.append(EXITS_WORKER.format(kind=kind))
    if isinstance(err, RuntimeError) and checks.ASYNCIO_RUN_MESSAGE in safe_str(err):
        warnings.append(
            "asyncio.run() failed because the handler runs inside an event loop, as "
            "it does on a deployed worker: make the handler `async def` and await."
        )
    debugger = sdk.debugger_warning(err)
    if debugger:
        warnings.append(debugger)
    return warnings


def _awaiting_stack(coroutine: Any) -> traceback.StackSummary:
    """Where a suspended coroutine waits: its frame, then each one it awaits, innermost last."""
    frames: list[Any] = []
    while coroutine is not None and len(frames) < 100:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "ag_frame", None)
        frame = frame or getattr(coroutine, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        coroutine = (
            getattr(coroutine, "cr_await", None)
            or getattr(coroutine, "ag_await", None)
            or getattr(coroutine, "gi_yieldfrom", None)
        )
    return traceback.StackSummary.extract(frames)


async def _as_coroutine(awaitable: Any) -> Any:
    __tracebackhide__ = True
    return await awaitable


async def _drain(generator: Any, take: Callable[[Any], bool]) -> None:
    async for chunk in generator:
        if not take(chunk):
            break
