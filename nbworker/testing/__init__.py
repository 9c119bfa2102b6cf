"""`nbworker test`: the runs a notebook recorded are its test cases, replayed twice.

1. In the notebook (`notebook.py`): it runs top to bottom in a fresh kernel, with a
   first cell that turns on replay (`nbworker.replay`), so each `%rp_test` compares its new
   run with the recorded one. One kernel per notebook, whatever the number of cases.
2. In the worker (`worker.py`): the notebook is exported to a temporary folder and the
   exported `tests/test_handler.py` replays the same cases against `handler.py` under the
   real runpod SDK, so drift between notebook and worker shows.

Or, with `--url URL` / `--endpoint ID` (`Options.url` / `.endpoint`), neither: the cases
go to a running server (`remote.py`: the worker under `--rp_serve_api`, `%rp_serve`, a
deployed endpoint), and `replay_against(...)` (`against.py`) does that from a notebook cell.

This module reads the cases a notebook holds, runs both replays per notebook
(`test_notebook`) and notebooks in parallel processes (`test_notebooks`), and gives the exit
code. The data is in `model.py`, the summary and JUnit XML in `report.py`, the pytest plugin
(`pytest --nbworker notebooks/`) in `plugin.py`. pytest loads this package in every run in an
environment with nbworker, so jupyter_client and the kernel stay unimported until used (and
nbformat and papermill are not imported at all: `notebook.py`).

Exit codes: 0 all passed, 1 a case mismatched (or the worker could not be built), 2 usage,
3 a notebook failed outside a test (a cell raised, a UsageError included, the kernel died, a
timeout: any cell that stopped the run; or it could not be replayed at all: unreadable, or a
run record in it is malformed; or the server replayed against cannot be used), 5 no case
was compared at all (no run recorded, `-k` matching nothing, every case compared nowhere),
as pytest's 5 for no tests.

The functions are named `test_*` as the command is; pytest would collect them as tests from
a test module that imports them by name, so call them through the module
(`from nbworker import testing; testing.test_notebook(...)`), as nbworker's own tests do.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nbworker.compare import DEFAULT_REL_TOL
from nbworker.errors import MalformedRecord
from nbworker.testing.against import ServerReplay, replay_session
from nbworker.testing.model import (
    DEFAULT_CONCURRENCY,
    EXIT_MISMATCH,
    EXIT_NO_CASES,
    EXIT_NOTEBOOK,
    EXIT_OK,
    EXIT_USAGE,
    Case,
    NotebookReport,
    Options,
    Result,
    selected,
)
from nbworker.testing.notebook import NOT_VALID, replay_notebook
from nbworker.testing.remote import replay_remote
from nbworker.testing.report import Progress, Step, junit_xml, summary, verdict
from nbworker.testing.worker import replay_worker

__all__ = [
    "EXIT_MISMATCH",
    "EXIT_NOTEBOOK",
    "EXIT_NO_CASES",
    "EXIT_OK",
    "EXIT_USAGE",
    "Case",
    "NotebookReport",
    "Options",
    "Progress",
    "Result",
    "ServerReplay",
    "Step",
    "exit_code",
    "junit_xml",
    "notebooks_under",
    "nothing_compared",
    "recorded_cases",
    "replay_against",
    "replay_notebook",
    "replay_remote",
    "replay_worker",
    "report_names",
    "summary",
    "test_notebook",
    "test_notebooks",
    "verdict",
]


def exit_code(reports: Iterable[NotebookReport]) -> int:
    """3 if a notebook failed, else 1 if a case did not pass, else 5 if no case was compared
    in any notebook (as pytest, a notebook without cases among others is no failure), else 0."""
    reports = list(reports)
    codes = {report.exit_code for report in reports}
    for code in (EXIT_NOTEBOOK, EXIT_MISMATCH):
        if code in codes:
            return code
    return EXIT_NO_CASES if nothing_compared(reports) else EXIT_OK


def nothing_compared(reports: Iterable[NotebookReport], *, select: str | None = None) -> str | None:
    """Why no case was compared in any of the notebooks, in a line; None if one was.
    `select` is the -k pattern, for the message."""
    reports = list(reports)
    cases = [case for report in reports for case in report.cases]
    if any(case.compared for case in cases):
        return None
    if not reports:
        return "no notebook was given"
    where = reports[0].name if len(reports) == 1 else f"any of the {len(reports)} notebooks"
    recorded = len(cases) + sum(report.deselected for report in reports)
    if recorded == 0:
        return f"no %rp_test run is recorded in {where} (record runs in Jupyter, then save)"
    if not cases:
        pattern = f" {select!r}" if select else ""
        return f"-k{pattern} matches none of the {recorded} recorded case(s) in {where}"
    if any(report.remote is not None for report in reports):
        return (
            f"the {len(cases)} selected case(s) were sent to no server (see the table: "
            "%rp_test --no-compare, an input that is no object, another handler's run)"
        )
    return (
        f"the {len(cases)} selected case(s) were compared nowhere (see the table: "
        "%rp_test --no-compare, or a handler the worker does not export under --worker-only)"
    )


# ------------------------------------------------------------------------ cases


def recorded_cases(notebook: Any, name: str) -> list[Case]:
    """A case per recorded run; `MalformedRecord` for a record that is none. A panel's run
    is skipped in the notebook (a fresh run of it clicks no panel) and compared against the
    worker only."""
    from nbworker.record import PANEL_ORIGIN
    from nbworker.replay import expected_runs

    return [
        Case(
            name,
            expected.cell,
            expected.cell_id,
            index,
            record["handler"],
            record["status"],
            notebook_result=(
                Result.SKIPPED if record.get("origin") == PANEL_ORIGIN else Result.NOT_RUN
            ),
        )
        for expected in expected_runs(notebook)
        for index, record in enumerate(expected.records, 1)
    ]


_selected = selected  # -k (model.py)


# ------------------------------------------------------------------------ notebooks


class _Throttled:
    """`on_step` at most every `interval` seconds, and at once when the phase changes: a
    notebook of a thousand short cells ends cells far faster than a bar redraws."""

    def __init__(self, on_step: Callable[[Step], None], interval: float = 0.1) -> None:
        self.on_step, self.interval = on_step, interval
        self.last: Step | None = None
        self.sent = -interval

    def __call__(self, step: Step) -> None:
        now = time.monotonic()
        if self.last is None or self.last.phase != step.phase or now - self.sent >= self.interval:
            self.on_step(step)
            self.sent = now
        self.last = step


def test_notebook(
    path: str | os.PathLike[str],
    options: Options | None = None,
    *,
    name: str | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> NotebookReport:
    """Replay one notebook's recorded runs in a fresh kernel and against its worker (or,
    with `options.url` / `options.endpoint`, against that server only: `remote.py`).

    `name` is what case ids and the summary call it, and where under `output_dir` the
    executed notebook goes: a relative path (default: the file name). A notebook none of
    whose cases is selected (none recorded, or -k) is not run. `on_step` hears where the
    replay is (`Step`: cells run, cases replayed, the worker's tests), a few times a second.
    """
    from nbworker.export import ipynb

    options = options or Options()
    path = Path(path)
    name = name or path.name
    throttled = None if on_step is None else _Throttled(on_step)
    started = time.perf_counter()
    try:
        stored = ipynb.read(path)
    except (OSError, ValueError) as err:  # not JSON, not a notebook, unreadable: it failed
        problem = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        error = f"not a readable notebook: {' '.join(str(problem).split())}"
        return _failed(str(path), error[:500], name, options)
    try:
        cases = recorded_cases(stored, name)
    except MalformedRecord as err:  # hand-edited or hostile: nothing of it is replayed
        return _failed(str(path), str(err), name, options)
    except (AttributeError, KeyError, TypeError):  # outputs of a shape no notebook has
        problem = ipynb.schema_problem(stored) or "its cells are not what nbformat's schema allows"
        return _failed(str(path), f"{NOT_VALID}: {problem}"[:500], name, options)
    selected = [case for case in cases if _selected(case, options.select)]
    if not selected:
        report = NotebookReport(str(path), name=name, deselected=len(cases))
        report.notes.append(
            f"-k {options.select!r} selects none of its {len(cases)} recorded case(s): not run"
            if cases
            else "no %rp_test run is recorded in this notebook: nothing to replay"
        )
        return report
    if options.remote is not None:  # against a server: neither the kernel nor the worker
        return _test_remote(path, stored, cases, selected, options, name, throttled, started)
    if options.notebook and options.output_dir:
        out = Path(options.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = replay_notebook(path, stored, cases, options, out, name=name, on_step=throttled)
    elif options.notebook:  # the executed notebook is not kept
        with tempfile.TemporaryDirectory(prefix="nbworker-out-") as scratch:
            report = replay_notebook(
                path,
                stored,
                cases,
                options,
                Path(scratch),
                name=name,
                keep=False,
                on_step=throttled,
            )
    else:
        report = NotebookReport(str(path), cases, name=name)
        for case in cases:
            case.notebook_result = Result.NOT_REPLAYED
    report.seconds = time.perf_counter() - started
    if options.worker and report.error is None:
        if throttled is not None:
            last = throttled.last or Step(name, "worker", 0, 0, len(cases), len(cases))
            throttled(last._replace(phase="worker"))
        started = time.perf_counter()
        report.notes += replay_worker(path, stored, cases, options)
        report.worker_seconds = time.perf_counter() - started
    for case in cases:
        if not _selected(case, options.select):
            case.notebook_result = case.worker_result = Result.DESELECTED
    report.cases = selected
    report.deselected = len(cases) - len(selected)
    return report


def _test_remote(
    path: Path,
    stored: Any,
    cases: list[Case],
    selected: list[Case],
    options: Options,
    name: str,
    on_step: Callable[[Step], None] | None,
    started: float,
) -> NotebookReport:
    """`test_notebook` against the server of `options.url` / `options.endpoint`."""
    from nbworker.testing.remote import replay_remote

    report = NotebookReport(str(path), selected, name=name, deselected=len(cases) - len(selected))

    def on_case(done: int, total: int) -> None:
        if on_step is not None:
            on_step(Step(name, "server", done, total, done, total))

    report.notes += replay_remote(path, stored, selected, options, report=report, on_case=on_case)
    chosen = {id(case) for case in selected}
    for case in cases:
        if id(case) not in chosen:
            case.notebook_result = case.worker_result = Result.DESELECTED
            case.remote_result = Result.DESELECTED
    report.seconds = time.perf_counter() - started
    return report


def replay_against(
    notebook: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    endpoint: str | None = None,
    handler: str | None = None,
    select: str | None = None,
    timeout: float | None = None,
    rtol: float = DEFAULT_REL_TOL,
    concurrency: int = DEFAULT_CONCURRENCY,
    session: Any = None,
) -> ServerReplay:
    """Send recorded cases to a running server (`url`) or a deployed endpoint (`endpoint`,
    with RUNPOD_API_KEY) and compare, as `nbworker test --url/--endpoint` does, from a
    notebook cell (`against.py`): a report shown like `%rp_test`'s runs. `notebook`: a saved
    notebook's runs; None: the runs of this kernel's session (or `session`'s). ValueError
    (one line) for options that cannot be used."""
    if url is None and endpoint is None:
        raise ValueError("replay_against needs url= (a running server) or endpoint= (an id)")
    if endpoint is not None and not os.environ.get("RUNPOD_API_KEY"):
        raise ValueError("endpoint= needs RUNPOD_API_KEY set to your RunPod API key")
    options = Options(
        select=select,
        timeout=timeout,
        rtol=rtol,
        url=url,
        endpoint=endpoint,
        concurrency=concurrency,
        handler=handler,
    )
    if notebook is not None:
        return ServerReplay(test_notebook(notebook, options))
    return ServerReplay(replay_session(session, options))


def _failed(path: str, error: str, name: str, options: Options) -> NotebookReport:
    """The report of a notebook that could not be replayed at all (its table headed for the
    server under --url / --endpoint, as its cases would have been)."""
    report = NotebookReport(path, error=error, name=name)
    report.remote = options.remote
    return report


def _test_one(item: tuple[str, Options, str], steps: Any = None) -> NotebookReport:
    """One notebook of `test_notebooks`, in a pool process or not; its steps go to `steps`
    (a queue of the parent's) when given."""
    path, options, name = item
    return test_notebook(path, options, name=name, on_step=None if steps is None else steps.put)


def notebooks_under(folder: str | os.PathLike[str]) -> list[Path]:
    """Every `*.ipynb` under `folder`, at any depth, sorted; hidden folders and files
    (`.ipynb_checkpoints`, `.git`, `.venv`, ...) left out, and so are exported workers
    (a folder with nbworker's export manifest: its `tests/` holds a copy of a notebook)."""
    from nbworker.export.write import MANIFEST

    found = []
    for root, folders, files in os.walk(folder):
        if MANIFEST in files and Path(root) != Path(folder):
            folders[:] = []
            continue
        folders[:] = [name for name in folders if not name.startswith(".")]  # not walked
        found += [
            Path(root, name)
            for name in files
            if name.endswith(".ipynb") and not name.startswith(".")
        ]
    return sorted(found)


def report_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """What to call each notebook: its path from the folder all of them are in, so that the
    case ids and executed notebooks of `a/nb.ipynb` and `b/nb.ipynb` stay apart (a file
    name alone when all are in one folder)."""
    if not paths:
        return []
    absolute = [Path(os.path.abspath(path)) for path in paths]
    common = Path(os.path.commonpath([str(path.parent) for path in absolute]))
    return [path.relative_to(common).as_posix() for path in absolute]


@contextlib.contextmanager
def spawnable_main() -> Iterator[None]:
    """Let `spawn` start processes from IPython too: its `__main__` stand-in has no
    `__spec__`, which multiprocessing reads. Our workers need nothing of `__main__`."""
    main = sys.modules.get("__main__")
    if main is None or hasattr(main, "__spec__"):
        yield
        return
    bare = types.ModuleType("__main__")
    bare.__spec__ = None
    sys.modules["__main__"] = bare
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def test_notebooks(
    paths: Sequence[str | os.PathLike[str]],
    options: Options | None = None,
    *,
    jobs: int | None = None,
    on_done: Callable[[NotebookReport], None] | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[NotebookReport]:
    """Replay several notebooks, in parallel across cores (one process, and one kernel,
    per notebook at a time). Reports come back in the order of `paths`, each to `on_done`
    as it ends; `on_step` hears where each replay is (see `test_notebook`), on a thread of
    its own when the notebooks run in processes."""
    options = options or Options()
    items = [
        (str(path), options, name) for path, name in zip(paths, report_names(paths), strict=True)
    ]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(items)))
    if jobs == 1:
        reports = []
        for path, options, name in items:
            reports.append(test_notebook(path, options, name=name, on_step=on_step))
            if on_done:
                on_done(reports[-1])
        return reports
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: dict[int, NotebookReport] = {}
    context = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        steps = None if on_step is None else stack.enter_context(_relayed(context, on_step))
        pool = stack.enter_context(ProcessPoolExecutor(max_workers=jobs, mp_context=context))
        with spawnable_main():  # the processes start on submit
            futures = {
                pool.submit(_test_one, item, steps): index for index, item in enumerate(items)
            }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done:
                on_done(results[futures[future]])
    return [results[index] for index in range(len(items))]


@contextlib.contextmanager
def _relayed(context: Any, on_step: Callable[[Step], None]) -> Iterator[Any]:
    """A queue pool processes can put steps on (a manager's: it pickles as an argument),
    and a thread handing each to `on_step` until the pool is done. The manager's process
    ignores Ctrl-C, so that the pool and the command end first, in order."""
    import signal
    import threading
    from multiprocessing.managers import SyncManager

    manager = SyncManager(ctx=context)
    manager.start(signal.signal, (signal.SIGINT, signal.SIG_IGN))
    with manager:
        steps = manager.Queue()

        def relay() -> None:
            with contextlib.suppress(EOFError, OSError):  # the manager gone: no more steps
                while (step := steps.get()) is not None:
                    on_step(step)

        thread = threading.Thread(target=relay, name="nbworker-test-steps", daemon=True)
        thread.start()
        try:
            yield steps
        finally:
            steps.put(None)
            thread.join()
