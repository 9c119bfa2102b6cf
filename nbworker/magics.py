"""The IPython magics: parse arguments, call the plain functions, display.

Each magic parses its line (`IPython.core.magic_arguments`, so `%rp_test?` prints real
help; the words split as a shell splits them, a trailing `# comment` dropped:
`arguments.words`), calls a plain function that anyone can call from Python (`kernel`,
`session`, `client`, `serve`, `export`), and prints or displays what it returns. Misuse
raises `UsageError` (one line in the notebook, after the magic's name); a handler that
fails is a result, shown and recorded, never an error of the cell.

`install` also hooks IPython in three places: a `Run` shown as a cell's value
(`display_run`); an interrupted `%rp_test`, whose CANCELLED card is its only output
(`CancelledRuns`); a bare `%rp_test` line, whose Run is not the cell's value (no empty
`Out[n]:` in a terminal; `kernel.QuietRuns`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from nbworker import arguments, deploy, kernel, live, memory, replay
from nbworker import display as views
from nbworker.cache import Entry
from nbworker.errors import CellError, HandlerError, LoadCycle, NbworkerError
from nbworker.record import Run
from nbworker.session import Session

__all__ = ["CancelledRuns", "NbworkerMagics", "install", "uninstall"]


def _usage(magic: str, err: NbworkerError) -> UsageError:
    return UsageError(f"{magic}: {err}")


def _arguments(declared: arguments.Arguments, *, cell: bool = False) -> Callable[[Any], Any]:
    """IPython's magic_arguments decorators for options declared in nbworker.arguments
    (`cell`: a cell magic, whose usage line starts `%%`)."""

    def decorate(function: Any) -> Any:
        for names, options in reversed(declared):
            function = argument(*names, **options)(function)
        # IPython's help writes `%` before the parser's name: `%handler` is `%%handler`
        return magic_arguments(f"%{function.__name__}" if cell else None)(function)

    return decorate


def _prog(magic: Any) -> str:
    """How a magic is written: `%%handler`, `%rp_test`."""
    return f"%{magic.parser.prog}"


@magics_class
class NbworkerMagics(Magics):
    """`%%handler`, `%rp_test`, `%%model` and `%rp_models`, bound to one nbworker `Session`."""

    shell: Any  # IPython types it Optional; a magic always runs in its shell

    def __init__(self, shell: Any, *, session: Session) -> None:
        super().__init__(shell)
        self.session = session
        self._cell_id: str | None = None
        self._shown: tuple[int, int] | None = None  # (execution count, id) of the last run shown
        self.remove_hook: Callable[[], None] = lambda: None  # set by install()
        self.tidy = views.traceback_tidier(shell)  # kernel file names -> `Cell In[n]`
        self._parsed: dict[tuple[str, str], argparse.Namespace] = {}
        self.ticker = live.Ticker()  # draws the live views of running jobs
        self.cancelled = CancelledRuns(shell)
        self.quiet = kernel.QuietRuns()

    def _args(self, magic: Any, line: str) -> argparse.Namespace:
        """`magic`'s arguments in `line` (`arguments.words`), kept for the next cell with
        the same line (a cell re-run as it is, `%rp_test` without options): argparse costs
        more than the rest of a cache hit. Each call gets a copy. A bad line is a
        UsageError after the magic's name."""
        key = (magic.__name__, line)
        parsed = self._parsed.get(key)
        if parsed is None:
            try:
                parsed = magic.parser.parse_args(arguments.words(line))
            except (UsageError, ValueError) as err:  # argparse's error, an unclosed quote
                raise UsageError(f"{_prog(magic)}: {err}") from None
            if len(self._parsed) >= 64:
                self._parsed.clear()
            self._parsed[key] = parsed
        return argparse.Namespace(**vars(parsed))

    # ----------------------------------------------------------------- plumbing

    def pre_run_cell(self, info: Any) -> None:
        self._cell_id = getattr(info, "cell_id", None)
        self.cancelled.forget()
        # The AST transformer only for a cell that may hold `%rp_test`: with any
        # transformer, IPython walks every cell's whole tree once more.
        transformers = self.shell.ast_transformers
        if "rp_test" in (getattr(info, "raw_cell", None) or ""):
            if self.quiet not in transformers:
                transformers.append(self.quiet)
        elif self.quiet in transformers:
            transformers.remove(self.quiet)

    def display_run(self, run: Run) -> None:
        """Displays a Run with `display(run)` or as a cell's value, unless `%rp_test` has
        just shown that same run in this cell."""
        if self._shown == (self.shell.execution_count, id(run)):
            return
        bundle = views.run_bundle(run, tidy=self.tidy)
        with kernel.sharing_output(self.shell, bundle, run):
            display(bundle, raw=True)

    # ----------------------------------------------------------------- %%handler

    @_arguments(arguments.HANDLER, cell=True)
    @no_var_expand
    @cell_magic
    def handler(self, line: str, cell: str) -> None:
        """Run the cell and register the function it defines as a RunPod handler.

        Sync, async, generator and async generator functions are accepted. Re-running the
        cell replaces the registration.
        """
        __tracebackhide__ = True
        args = self._args(self.handler, line)
        try:
            registered = kernel.register_cell(
                self.shell, self.session, cell, args, cell_id=self._cell_id
            )
        except (CellError, HandlerError) as err:  # not what the cell's own code raised
            raise _usage("%%handler", err) from None
        spec, modifier_name, replaced = registered.spec, registered.modifier, registered.replaced
        options = [spec.kind.replace("_", " ")]
        if spec.aggregate:
            options.append("aggregate")
        if spec.concurrency != 1:
            options.append(f"concurrency {spec.concurrency}")
        if modifier_name is not None:
            options.append(f"concurrency_modifier {modifier_name}")
        lines = [f"registered `{spec.name}` ({', '.join(options)})"]
        lines += [f"replaces `{old}`" for old in replaced]
        lines += [f"⚠ {warning}" for warning in spec.warnings]
        print("\n".join(lines))

    # ----------------------------------------------------------------- %rp_test

    @_arguments(arguments.RP_TEST)
    @no_var_expand
    @line_magic
    def rp_test(self, line: str) -> Run:
        """Run a job against a registered handler in this kernel, with RunPod's semantics.

        Shows the run live as it goes (time, chunks, progress), then the result in its
        place, and records the run in the cell (mimetype application/vnd.nbworker.run+json).
        A FAILED or TIMED_OUT job is a result, not an error of the cell; an interrupted one
        shows its CANCELLED card and stops the rest of a "Run all". Returns the Run.
        """
        __tracebackhide__ = True
        options, job_text = arguments.split_job_json(line)
        args = self._args(self.rp_test, options)
        words = [word for word in (args.name, args.job) if word is not None]
        try:
            name, job = kernel.job_from(
                self.shell.user_ns, words, job_text=job_text, file=args.file, var=args.var
            )
        except NbworkerError as err:
            raise _usage("%rp_test", err) from None
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError(f"%rp_test: --timeout must be positive, not {args.timeout:g}")
        if args.url or args.endpoint:
            return self._remote_test(args, name, job)
        try:
            spec = self.session.registry.get(name)
        except NbworkerError as err:
            raise _usage("%rp_test", err) from None

        view = live.LiveRun(spec.name, _open_view, streams=spec.streams, ticker=self.ticker)
        try:
            run = self.session.run_job(
                job,
                spec,
                timeout=args.timeout,
                on_chunk=view.chunk if spec.streams else None,
                on_progress=view.progress,
            )
        except BaseException:
            view.close({"text/plain": ""})  # nbworker's own failure: no live card left
            raise
        bundle = views.run_bundle(run, tidy=self.tidy)
        with kernel.sharing_output(self.shell, bundle, run):
            if not view.close(bundle):
                display(bundle, raw=True)
        self._shown = (self.shell.execution_count, id(run))
        if run.interrupt is not None:
            # Stop the rest of a "Run all" as any interrupted cell does; the card is the
            # cell's only output (CancelledRuns); the kernel, the handlers and the loaded
            # models live on.
            interrupt, run.interrupt = run.interrupt, None
            raise self.cancelled.shown(interrupt)
        active = replay.current()
        if active is not None:  # under `nbworker test`: compare with the recorded run
            compared = arguments.comparison(args)
            outcome = active.check(
                run.to_record(), compare=compared.compare, ignore=compared.ignore
            )
            display(
                {"text/plain": outcome.summary(), replay.REPLAY_MIMETYPE: outcome.to_json()},
                raw=True,
            )
            if outcome.result == "failed":
                raise replay.ReplayMismatch(outcome)
        return run

    def _remote_test(self, args: Any, name: str | None, job: dict[str, Any]) -> Run:
        """`%rp_test --url URL` / `--endpoint ID`: the job goes to a server; its answer is
        shown and recorded like a run in this kernel (the handler field names the server)."""
        from nbworker.client import Endpoint, EndpointError, run_remote

        if args.url and args.endpoint:
            raise UsageError("%rp_test: give --url or --endpoint, not both")
        try:
            endpoint = Endpoint(args.url) if args.url else Endpoint(endpoint_id=args.endpoint)
        except ValueError as err:
            raise UsageError(f"%rp_test: {err}") from None
        where = f"{'url' if args.url else 'endpoint'}:{args.url or args.endpoint}"
        try:
            run = run_remote(endpoint, job, timeout=args.timeout, handler=name or where)
        except EndpointError as err:
            raise UsageError(f"%rp_test: {err}") from None
        display(views.run_bundle(run, tidy=self.tidy), raw=True)
        self._shown = (self.shell.execution_count, id(run))
        return run

    # ----------------------------------------------------------------- %%model

    @_arguments(arguments.MODEL, cell=True)
    @no_var_expand
    @cell_magic
    def model(self, line: str, cell: str) -> None:
        """Run the cell once and keep what it binds (e.g. a loaded model) in nbworker's cache.

        Re-running the cell with the same code runs nothing: its names are bound again
        from the cache. The code is compared by meaning (`source.code_key`): a change of
        comments, blank lines or layout only is a hit too. Changed code (or --reload)
        releases the old objects first, then runs the cell. The cache survives %reset -f
        and del.
        """
        __tracebackhide__ = True
        args = self._args(self.model, line)
        try:
            loaded = kernel.load_model(
                self.shell, self.session, args.name, cell, reload=args.reload, cell_id=self._cell_id
            )
        except (CellError, LoadCycle) as err:  # a bad name or cell, a load needing itself
            raise _usage("%%model", err) from None
        entry = loaded.entry
        lines = [f"{views.released_line(r)}" for r in loaded.released]
        summary = views.entry_line(entry, hit=loaded.hit)
        if loaded.hit and entry.source != cell:  # the text changed, not what it means
            summary = summary.replace(": cache hit", ": unchanged code, cache hit", 1)
        lines.append(summary)
        lines += [f"⚠ {warning}" for warning in loaded.warnings]
        print("\n".join(lines))

    def unbind(self, entry: Entry) -> None:
        """Free a released entry's objects from the notebook (`kernel.unbind`)."""
        kernel.unbind(self.shell, entry)

    # ----------------------------------------------------------------- %rp_models

    @magic_arguments()
    @argument("--evict", metavar="NAME", help="release one entry and free its memory")
    @argument("--clear", action="store_true", help="release every entry")
    @argument(
        "--budget",
        metavar="SIZE",
        help="cap the cache (e.g. 8GiB; 'none' removes the cap): loads past it evict the "
        "least recently used entries",
    )
    @no_var_expand
    @line_magic
    def rp_models(self, line: str) -> None:
        """Show what the model cache holds (bytes per device, load time, hits), or evict."""
        args = self._args(self.rp_models, line)
        cache = self.session.cache
        lines = []
        try:
            if args.budget is not None:
                budget = memory.parse_budget(args.budget)
                released = cache.set_budget(budget)
                lines.append(f"budget: {'none' if budget is None else args.budget}")
                lines += [views.released_line(r) for r in released]
            if args.evict is not None:
                lines.append(views.released_line(cache.evict(args.evict)))
            if args.clear:
                lines += [views.released_line(r) for r in cache.clear()] or ["the cache is empty"]
        except (NbworkerError, ValueError) as err:
            raise UsageError(f"%rp_models: {err}") from None
        if lines:
            print("\n".join(lines))
        else:
            display(views.cache_bundle(cache.info(), budget=cache.budget), raw=True)

    # ----------------------------------------------------------------- %rp_export

    @magic_arguments()
    @argument(
        "notebook",
        nargs="?",
        metavar="NOTEBOOK.ipynb",
        help="the notebook to export; default: the one this kernel runs, when Jupyter says",
    )
    @argument("-o", "--output", metavar="DIR", help="default: NOTEBOOK-worker beside it")
    @argument("--handler", metavar="NAME", help="default: `handler`, or the only one")
    @argument("--force", action="store_true", help="overwrite files edited since last export")
    @no_var_expand
    @line_magic
    def rp_export(self, line: str) -> None:
        """Export the notebook, as last saved, to a RunPod worker directory (handler.py,
        requirements.txt, Dockerfile, test_input.json, .runpod/tests.json, tests/).

        The same as `nbworker export NOTEBOOK.ipynb -o DIR` on the command line.
        """
        from nbworker.export import ExportError, export_notebook

        args = self._args(self.rp_export, line)
        path = args.notebook or kernel.this_notebook(self.shell.user_ns)
        if path is None:
            raise UsageError(
                "%rp_export: this kernel does not know its notebook's path; "
                "give it: %rp_export NOTEBOOK.ipynb"
            )
        try:
            report = export_notebook(path, args.output, handler=args.handler, force=args.force)
        except ExportError as err:
            raise UsageError(f"%rp_export: {err}") from None
        age = views.ago(time.time() - os.path.getmtime(path)) + " ago"
        print(f"{report}\n(from {path} as saved {age}: edits not saved since are not in it)")

    # ----------------------------------------------------------------- %rp_deploy

    @_arguments([(("source",), {"nargs": "?", "help": "default: this notebook"}), *deploy.OPTIONS])
    @no_var_expand
    @line_magic
    def rp_deploy(self, line: str) -> None:
        """Make a RunPod template and queue endpoint for the worker's image (or, with
        --endpoint, point that endpoint at the new template), wait for its health, replay the
        recorded cases on it. --dry-run prints each SDK call and sends nothing. The same as
        `nbworker deploy SOURCE --image IMAGE` on the command line (RUNPOD_API_KEY)."""
        args = self._args(self.rp_deploy, line)
        source = args.source or kernel.this_notebook(self.shell.user_ns)
        if source is None:
            raise UsageError("%rp_deploy: give the notebook or worker folder to deploy")
        try:
            plan = deploy.plan_from_args(source, args)
            print(deploy.describe(plan, dry_run=args.dry_run), flush=True)
            if args.dry_run:
                return
            result = deploy.deploy(plan, on_progress=lambda text: print(text, flush=True))
        except NbworkerError as err:
            raise _usage("%rp_deploy", err) from None
        print(result.summary())
        if result.exit_code:  # the cell fails, as `nbworker deploy` exits non-zero
            raise UsageError(f"%rp_deploy: the replay on {result.endpoint_id} did not pass")

    # ----------------------------------------------------------------- %rp_serve

    @magic_arguments()
    @argument("name", nargs="?", help="the handler to serve; default: `handler`, else the only one")
    @argument("--port", type=int, default=8000, metavar="N", help="default: 8000 (0: any free)")
    @argument("--host", default="127.0.0.1", help="default: 127.0.0.1; others need --token")
    @argument("--token", metavar="TOKEN", help="require Authorization: Bearer TOKEN")
    @argument("--stop", action="store_true", help="stop serving")
    @no_var_expand
    @line_magic
    def rp_serve(self, line: str) -> None:
        """Serve the handler over HTTP from this kernel, with RunPod's endpoint API: POST /run,
        /runsync, GET|POST /status/ID and /stream/ID, POST /cancel/ID, GET /health.

        The handler is looked up at each job, so re-running its %%handler cell serves the new
        one; jobs run on background threads (up to its --concurrency at once, or what its
        concurrency_modifier answers) while the kernel stays free. While a job runs,
        /status/ID gives its latest progress_update value. Running %rp_serve again restarts
        the server.
        """
        from nbworker import serve

        args = self._args(self.rp_serve, line)
        current = serve.running(self.session)
        if args.stop:
            for server in current:
                server.stop()
                print(f"stopped serving at {server.url}")
            if not current:
                print("not serving")
            return
        try:
            server = serve.restart(
                self.session, args.name, host=args.host, port=args.port, token=args.token
            )
        except NbworkerError as err:
            raise _usage("%rp_serve", err) from None
        lines = server.describe()
        print("\n".join(lines))

    # ----------------------------------------------------------------- %rp_panel

    @no_var_expand
    @line_magic
    def rp_panel(self, line: str) -> Any:
        """Show the nbworker panel: pick a handler, edit the job JSON (checked as you type),
        Run (streams live), status, duration and memory, a history to re-run, and the model
        cache with an Evict button. It runs jobs as %rp_test does. Returns the panel."""
        line = arguments.without_comment(line).strip()
        if line:
            raise UsageError(f"%rp_panel: takes no arguments, not {line!r}")
        from nbworker.widgets import Panel

        return Panel(self.session, tidy=self.tidy)


class CancelledRuns:
    """IPython's handler of the KeyboardInterrupt that `%rp_test` raises after showing a
    CANCELLED card: the cell fails (ipykernel's reply is an error, so the rest of a "Run
    all" is aborted, and nbclient and papermill stop) with no traceback under the card.

    IPython runs a cell's exceptions of `shell.custom_exceptions` through `CustomTB`
    instead of showing them, so `install` adds KeyboardInterrupt there. Any other
    KeyboardInterrupt is shown as IPython shows it; an exception the handler installed
    before this one handled goes to it still; `uninstall` puts that one back."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._previous: tuple[tuple[type[BaseException], ...], Any] | None = None
        self._mine: Any = None  # shell.CustomTB as set_custom_exc made it from `handle`
        self._shown: KeyboardInterrupt | None = None

    def shown(self, interrupt: KeyboardInterrupt) -> KeyboardInterrupt:
        """`interrupt`, marked as one whose run's card is shown: raise it."""
        self._shown = interrupt
        return interrupt

    def forget(self) -> None:
        """Forget a marked interrupt that the cell caught itself (and the frames it holds)."""
        self._shown = None

    def install(self) -> None:
        """Make this the shell's custom exception handler, after the one it had."""
        previous = (tuple(self.shell.custom_exceptions), self.shell.CustomTB)
        self.shell.set_custom_exc((*previous[0], KeyboardInterrupt), self.handle)
        self._previous, self._mine = previous, self.shell.CustomTB

    def uninstall(self) -> None:
        """Give the shell back its handler from before, unless another replaced this one."""
        if self._previous is not None and self.shell.CustomTB is self._mine:
            self.shell.custom_exceptions, self.shell.CustomTB = self._previous
        self._previous = self._mine = self._shown = None

    def handle(
        self, shell: Any, etype: Any, value: Any, tb: Any, tb_offset: int | None = None
    ) -> list[str]:
        """IPython's CustomTB: nothing for the marked interrupt, else what would have been."""
        if value is self._shown:
            self._shown = None  # no frames kept past the cell
            return []
        if self._previous is not None and isinstance(value, self._previous[0]):
            return list(self._previous[1](etype, value, tb, tb_offset=tb_offset))
        shell.showtraceback((etype, value, tb), running_compiled_code=True)
        return []


def _open_view(bundle: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Display `bundle` with a display id; the function that updates it in place."""
    handle = display(bundle, raw=True, display_id=True)
    return lambda update: handle.update(update, raw=True)


def install(shell: Any, session: Session) -> NbworkerMagics:
    """Register the magics on `shell`, bound to `session` (replacing any installed before)."""
    uninstall(shell)
    magics = NbworkerMagics(shell, session=session)
    shell.register_magics(magics)
    shell.events.register("pre_run_cell", magics.pre_run_cell)
    shell.display_formatter.ipython_display_formatter.for_type(Run, magics.display_run)
    magics.cancelled.install()
    magics.remove_hook = session.cache.on_release(magics.unbind)
    return magics


def uninstall(shell: Any) -> None:
    """Remove the magics from `shell`; the session keeps its handlers."""
    manager = shell.magics_manager
    magics = manager.registry.pop(NbworkerMagics.__name__, None)
    if magics is None:
        return
    for kind, names in magics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    shell.events.unregister("pre_run_cell", magics.pre_run_cell)
    shell.display_formatter.ipython_display_formatter.pop(Run, None)
    if magics.quiet in shell.ast_transformers:
        shell.ast_transformers.remove(magics.quiet)
    magics.cancelled.uninstall()
    magics.ticker.close()
    magics.remove_hook()
