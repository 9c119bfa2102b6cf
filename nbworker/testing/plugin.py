"""The pytest plugin: `pytest --nbworker notebooks/` makes every run recorded in a .ipynb a
test item, `NOTEBOOK.ipynb::CELL-ID::case-N`.

Collection only reads the stored notebook. When the tests start, every collected notebook is
replayed (`test_notebook`: one kernel, then the worker) in a pool of processes, notebooks in
parallel across cores; each item waits for its notebook's report and reads its case from it.

pytest loads this module in every run in an environment with nbworker (entry point
`pytest11`), so it imports pytest and nothing heavy, and its hooks do nothing without
--nbworker: no option given, no notebook collected, no pool started.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from nbworker.compare import DEFAULT_REL_TOL
from nbworker.errors import MalformedRecord
from nbworker.testing import recorded_cases, spawnable_main, test_notebook
from nbworker.testing.model import DEFAULT_CONCURRENCY, Case, NotebookReport, Options, Result
from nbworker.testing.report import verdict

PYTEST_PLUGIN = "nbworker-replays"  # the per-run state (`Replays`), registered with --nbworker


# ------------------------------------------------------------------------ hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nbworker", "nbworker: replay the runs recorded in notebooks")
    group.addoption(
        "--nbworker",
        action="store_true",
        help="collect .ipynb files: each %%rp_test run they recorded is a test, replayed in "
        "a fresh kernel and against the exported worker",
    )
    group.addoption("--nbworker-notebook-only", action="store_true", help="skip the worker replay")
    group.addoption("--nbworker-worker-only", action="store_true", help="skip the notebook replay")
    group.addoption(
        "--nbworker-rtol",
        type=float,
        default=DEFAULT_REL_TOL,
        metavar="X",
        help=f"relative tolerance for floats (default {DEFAULT_REL_TOL:g})",
    )
    group.addoption(
        "--nbworker-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per notebook cell, and per worker job (per server job: default 600)",
    )
    group.addoption(
        "--nbworker-url",
        metavar="URL",
        help="replay against this running server instead of the kernel and the worker "
        "(python handler.py --rp_serve_api, %%rp_serve, any RunPod-style server)",
    )
    group.addoption(
        "--nbworker-endpoint",
        metavar="ID",
        help="replay against this deployed endpoint instead of the kernel and the worker "
        "(RUNPOD_API_KEY; RUNPOD_ENDPOINT_BASE_URL overrides the base URL)",
    )
    group.addoption(
        "--nbworker-concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"jobs sent to the server at once (default {DEFAULT_CONCURRENCY})",
    )
    group.addoption(
        "--nbworker-handler",
        metavar="NAME",
        help="whose recorded cases the worker or server replays (default: the one exported)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("nbworker", False):
        return
    notebook_only = config.getoption("nbworker_notebook_only")
    worker_only = config.getoption("nbworker_worker_only")
    rtol, timeout = config.getoption("nbworker_rtol"), config.getoption("nbworker_timeout")
    if notebook_only and worker_only:
        raise pytest.UsageError(
            "--nbworker-notebook-only and --nbworker-worker-only exclude each other"
        )
    url, endpoint = config.getoption("nbworker_url"), config.getoption("nbworker_endpoint")
    remote = "--nbworker-url" if url else "--nbworker-endpoint" if endpoint else None
    side = "--nbworker-notebook-only" if notebook_only else "--nbworker-worker-only"
    if remote and (notebook_only or worker_only):
        raise pytest.UsageError(f"{remote} replays against the server only: not with {side}")
    if endpoint and not os.environ.get("RUNPOD_API_KEY"):
        raise pytest.UsageError("--nbworker-endpoint needs RUNPOD_API_KEY set")
    try:
        options = Options(
            notebook=not worker_only,
            worker=not notebook_only,
            timeout=timeout,
            rtol=rtol,
            url=url,
            endpoint=endpoint,
            concurrency=config.getoption("nbworker_concurrency"),
            handler=config.getoption("nbworker_handler"),
        )
    except ValueError as err:
        raise pytest.UsageError(f"--nbworker-{err}") from None
    config.pluginmanager.register(Replays(config, options), PYTEST_PLUGIN)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Notebook | None:
    if file_path.suffix != ".ipynb" or not parent.config.getoption("nbworker", False):
        return None
    if ".ipynb_checkpoints" in file_path.parts:  # Jupyter's autosaves
        return None
    if _in_exported_worker(file_path) and not _named(file_path, parent.config):
        return None  # the copy an export ships in tests/: found by a folder, not a test
    return Notebook.from_parent(parent, path=file_path)


def _in_exported_worker(path: Path) -> bool:
    """Whether `path` is the notebook copy in an exported worker's `tests/` folder."""
    from nbworker.export.write import MANIFEST

    return path.parent.name == "tests" and (path.parent.parent / MANIFEST).is_file()


def _named(path: Path, config: pytest.Config) -> bool:
    """Whether the pytest command line named this file itself (not a folder above it)."""
    root = Path(str(config.invocation_params.dir))
    for argument in config.invocation_params.args:
        named = Path(str(argument).split("::", 1)[0])
        named = named if named.is_absolute() else root / named
        if named.suffix == ".ipynb" and os.path.abspath(named) == os.path.abspath(path):
            return True
    return False


def _pytest_name(path: str | os.PathLike[str], config: pytest.Config) -> str:
    """A notebook's name in case ids and in the output folder: its path from pytest's
    rootdir, as pytest names it, so that a/nb.ipynb and b/nb.ipynb stay apart."""
    name = Path(os.path.relpath(path, config.rootpath)).as_posix()
    return Path(path).name if name.startswith("../") else name


# ------------------------------------------------------------------------ the nodes


class _CaseFailed(Exception):
    """A case's replay failed: its message is all pytest shows."""


class Notebook(pytest.File):
    """A .ipynb file: a `Cell` per code cell with recorded runs."""

    def collect(self) -> Iterable[Cell]:
        from nbworker.export import ipynb

        try:
            stored = ipynb.read(self.path)
        except (OSError, ValueError) as err:
            raise self.CollectError(f"{self.path.name}: not a readable notebook: {err}") from err
        try:
            cases = recorded_cases(stored, _pytest_name(self.path, self.config))
        except MalformedRecord as err:
            raise self.CollectError(f"{self.path.name}: {err}") from None
        cells: dict[int, list[Case]] = {}
        for case in cases:
            cells.setdefault(case.cell, []).append(case)
        for in_cell in cells.values():
            name = in_cell[0].cell_id or f"cell-{in_cell[0].cell}"
            yield Cell.from_parent(self, name=name, cases=in_cell)


class Cell(pytest.Collector):
    """A code cell with recorded runs: a `CaseItem` per run. (A collector rather than items
    named `CELL-ID::case-N`, so that the node id given on the command line selects an
    item, or every case of a cell.)"""

    def __init__(self, *, cases: list[Case], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cases = cases

    def collect(self) -> Iterable[CaseItem]:
        for case in self.cases:
            yield CaseItem.from_parent(self, name=f"case-{case.index}", case=case)


class CaseItem(pytest.Item):
    """One recorded run, passed when its replays gave what was recorded."""

    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        # registered by pytest_configure, as every CaseItem is collected with --nbworker
        replays = cast(Replays, self.config.pluginmanager.get_plugin(PYTEST_PLUGIN))
        try:
            report, run = replays.result(self.path)
        except Exception as err:  # the pool process died, or nbworker has a bug
            cause = getattr(err.__cause__, "tb", "")  # the traceback in the pool process
            raise _CaseFailed(
                f"{self.case.id}: replaying {self.path.name} raised "
                f"{type(err).__name__}: {err}{cause}"
            ) from None
        self.user_properties += [(f"nbworker_{key}", value) for key, value in run.items()]
        if report.executed:
            self.user_properties.append(("nbworker_executed", report.executed))
        case = next(
            (
                found
                for found in report.cases
                if (found.cell, found.index) == (self.case.cell, self.case.index)
            ),
            None,
        )
        if case is None:
            raise _CaseFailed(
                f"{self.case.id}: not in the replay's report (was the notebook changed "
                "during the test run?)"
            )
        outcome, text = verdict(case, report)
        if outcome == Result.FAILED:
            raise _CaseFailed(text)
        if outcome == Result.SKIPPED:
            pytest.skip(text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, _CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # Not the bare id: pytest -v would show a name that ends the node id with its
        # dots as `::` (`sentiment::ipynb::...`), as it does for `Class.method`.
        return self.path, None, f"{self.case.id} ({self.case.handler})"


# ------------------------------------------------------------------------ the replays


def _quiet_worker() -> None:
    """In a pool process: kernels' warnings go nowhere (pytest would show them under
    whichever test happened to be running)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def _replay_for_pytest(
    path: str, options: Options, name: str
) -> tuple[NotebookReport, dict[str, Any]]:
    """`test_notebook` in a pool process, with where and when it ran."""
    started = time.time()
    report = test_notebook(path, options, name=name)
    return report, {"pid": os.getpid(), "started": started, "finished": time.time()}


class Replays:
    """The replays of one pytest run: a future per notebook, in a process pool."""

    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.config = config
        self.options = options
        self.pool: ProcessPoolExecutor | None = None
        self.futures: dict[str, Future[tuple[NotebookReport, dict[str, Any]]]] = {}

    def start(self, paths: Iterable[Path]) -> None:
        """Submit the notebooks not yet submitted; the pool is sized for the first batch
        (every collected notebook, or one at a time under pytest-xdist)."""
        new = [path for path in dict.fromkeys(map(str, paths)) if path not in self.futures]
        if not new:
            return
        if (
            self.options.notebook
            and self.options.remote is None
            and self.options.output_dir is None
        ):
            # executed notebooks, the reports, go where pytest keeps its temporary files
            factory = getattr(self.config, "_tmp_path_factory", None)
            if factory is not None:
                self.options.output_dir = str(factory.mktemp("nbworker", numbered=True))
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=max(1, min(len(new), os.cpu_count() or 1)),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_quiet_worker,
            )
        with spawnable_main():  # the processes start on submit
            for path in new:
                name = _pytest_name(path, self.config)
                self.futures[path] = self.pool.submit(_replay_for_pytest, path, self.options, name)

    def result(self, path: Path) -> tuple[NotebookReport, dict[str, Any]]:
        self.start([path])  # not started with the others (--setup-only, xdist, ...)
        return self.futures[str(path)].result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        option = session.config.option
        try:
            blocked = session.testsfailed and not option.continue_on_collection_errors
            if not (
                blocked
                or option.collectonly
                or getattr(option, "setuponly", False)
                or getattr(option, "setupplan", False)
                or hasattr(session.config, "workerinput")  # an xdist worker: run on demand
            ):
                self.start(item.path for item in session.items if isinstance(item, CaseItem))
            return (yield)
        finally:
            self.close()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if isinstance(item, CaseItem) and report.skipped and isinstance(report.longrepr, tuple):
            # at the notebook, not at the pytest.skip above: no line (pytest then shows
            # `SKIPPED [1] nb.ipynb: why`), which pytest's type for it does not foresee
            report.longrepr = (item.location[0], None, report.longrepr[2])  # type: ignore[assignment]
        return report

    def pytest_report_header(self, config: pytest.Config) -> str:
        if self.options.remote is not None:
            return (
                f"nbworker: replaying recorded runs against {self.options.remote} "
                f"(rtol {self.options.rtol:g}, timeout {self.options.timeout or 600:g} s a job, "
                f"{self.options.concurrency} at once)"
            )
        sides = [
            side
            for side, on in (
                ("the notebook", self.options.notebook),
                ("the worker", self.options.worker),
            )
            if on
        ]
        return (
            f"nbworker: replaying recorded runs in {' and '.join(sides)} "
            f"(rtol {self.options.rtol:g}, timeout {self.options.timeout or 'none'})"
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        notes = []
        for future in self.futures.values():
            if future.done() and not future.cancelled() and future.exception() is None:
                report = future.result()[0]
                notes += [f"{report.name}: {note}" for note in report.notes]
                times = report.job_times()
                if times is not None:
                    notes.append(f"{report.name}: server {report.remote}: {times}")
        if notes:
            terminalreporter.write_sep("-", "nbworker notes")
            for note in notes:
                terminalreporter.write_line(note)
