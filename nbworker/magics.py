"""The IPython magics: parse arguments, call the plain functions, display.

`%%handler` and `%rp_test` live here; what they do lives in registry, jobs and display.
Misuse raises `UsageError` (one line in the notebook); a handler that fails is a result,
shown and recorded, never an error of the cell.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from nbworker import arguments, memory, replay, source
from nbworker import display as views
from nbworker.cache import Entry, LoadCycle
from nbworker.errors import NbworkerError
from nbworker.jobs import build_job, parse_job
from nbworker.record import Run
from nbworker.registry import DEFAULT_NAME, function_name
from nbworker.session import Session

__all__ = ["NbworkerMagics", "install", "uninstall"]

_FRAME_LINE = re.compile(r'^(\s*)File "([^"]+)", line (\d+)', re.MULTILINE)


def _usage(magic: str, err: NbworkerError) -> UsageError:
    return UsageError(f"{magic}: {err}")


def _arguments(declared: arguments.Arguments) -> Callable[[Any], Any]:
    """IPython's magic_arguments decorators for options declared in nbworker.arguments."""

    def decorate(function: Any) -> Any:
        for names, options in reversed(declared):
            function = argument(*names, **options)(function)
        return magic_arguments()(function)

    return decorate


def _split_job_json(line: str) -> tuple[str, str | None]:
    """Split `%rp_test` arguments into options and the job JSON, which starts at the first
    `{` or `[` that begins a word. Options may stand before and after the JSON."""
    for index, char in enumerate(line):
        if char in "{[" and (index == 0 or line[index - 1].isspace()):
            text = line[index:]
            try:
                _, end = json.JSONDecoder().raw_decode(text)
            except (ValueError, RecursionError):  # JSONDecodeError, an int of 5000 digits
                return line[:index], text  # parse_job names the position of the error
            return f"{line[:index]} {text[end:]}", text[:end]
    return line, None


@magics_class
class NbworkerMagics(Magics):
    """`%%handler`, `%rp_test`, `%%model` and `%rp_models`, bound to one nbworker `Session`."""

    def __init__(self, shell: Any, *, session: Session) -> None:
        super().__init__(shell)
        self.session = session
        self._cell_id: str | None = None
        self._shown: tuple[int, int] | None = None  # (execution count, id) of the last run shown
        self.remove_hook: Callable[[], None] = lambda: None  # set by install()

    # ----------------------------------------------------------------- plumbing

    def pre_run_cell(self, info: Any) -> None:
        self._cell_id = getattr(info, "cell_id", None)

    def display_run(self, run: Run) -> None:
        """Displays a Run with `display(run)` or as a cell's value, unless `%rp_test` has
        just shown that same run in this cell."""
        if self._shown == (self.shell.execution_count, id(run)):
            return
        display(views.run_bundle(run, tidy=self._tidy), raw=True)

    def _tidy(self, text: str) -> str:
        """`File "/tmp/ipykernel_1/123.py", line 4` -> `Cell In[3], line 4`, as IPython says."""
        compiler = self.shell.compile

        def name(match: re.Match[str]) -> str:
            label = (
                compiler.format_code_name(match[2])
                if hasattr(compiler, "format_code_name")
                else None
            )
            if not label:
                return match[0]
            return f"{match[1]}{label[0]} {label[1]}, line {match[3]}"

        return _FRAME_LINE.sub(name, text)

    def _parse(self, cell: str, magic: str = "%%handler") -> tuple[str, ast.Module]:
        """The cell's body as Python (IPython syntax transformed) and its tree. A syntax
        error is a one-line UsageError naming the line of the cell."""
        try:
            code = "\n" + self.shell.transform_cell(cell)  # line numbers as in the cell
            tree = self.shell.compile.ast_parse(code)
        except SyntaxError as err:
            line = (err.lineno or 0) + (0 if err.filename != "<tokenize>" else 1)
            text = f": {err.text.strip()}" if err.text and err.text.strip() else ""
            raise UsageError(
                f"{magic}: {type(err).__name__} at line {line} of the cell: {err.msg}{text}"
            ) from None
        awaits = source.top_level_awaits(tree)
        if awaits:  # IPython's autoawait runs such a cell; handler.py is a module and cannot
            where = "an `async def handler(job)`" if magic == "%%handler" else "asyncio.run(...)"
            raise UsageError(
                f"{magic}: `await` outside a function at line {awaits[0]} of the cell: "
                f"handler.py runs this code at import, where it cannot await; await inside {where}"
            )
        return code, tree

    def _execute(self, code: str, tree: ast.Module, raw_cell: str) -> None:
        """Run a cell's body in the user namespace, as IPython would: its source is kept
        for tracebacks and `inspect.getsource`, and what it raises fails the cell."""
        __tracebackhide__ = True
        shell = self.shell
        filename = shell.compile.cache(code, self._cell_number(), raw_code=raw_cell)
        exec(shell.compile(tree, filename, "exec"), shell.user_ns)

    def _cell_number(self) -> int:
        """The In[n] of the running cell: the number IPython filed the calling cell's code
        under (IPython 9 has already counted the next cell by the time a magic runs)."""
        numbers = getattr(self.shell.compile, "_filename_map", {})
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename in numbers:
                return numbers[frame.f_code.co_filename]
            frame = frame.f_back
        return self.shell.execution_count

    # ----------------------------------------------------------------- %%handler

    @_arguments(arguments.HANDLER)
    @no_var_expand
    @cell_magic
    def handler(self, line: str, cell: str) -> None:
        """Run the cell and register the function it defines as a RunPod handler.

        Sync, async, generator and async generator functions are accepted. Re-running the
        cell replaces the registration.
        """
        __tracebackhide__ = True
        args = parse_argstring(self.handler, line)
        for given in (args.name, args.concurrency_modifier):
            if given is not None and not given.isidentifier():
                raise UsageError(f"%%handler: {given!r} is not a Python name")
        code, tree = self._parse(cell)
        modifier_name = arguments.modifier_name(args, source.bound_names(tree))
        name = self._choose_function(tree, args.name, modifier_name)
        conflict = arguments.sizing_conflict(args.concurrency, modifier_name)
        if conflict:
            raise UsageError(f"%%handler: {conflict}")
        self._execute(code, tree, cell)
        namespace = self.shell.user_ns
        if name not in namespace:
            raise UsageError(f"%%handler: the cell did not define {name!r}")
        modifier = None
        if modifier_name is not None:
            if modifier_name not in namespace:
                raise UsageError(
                    f"%%handler: --concurrency-modifier {modifier_name}: no cell has defined "
                    f"{modifier_name!r}"
                )
            modifier = namespace[modifier_name]
        try:
            replaced = [
                spec.name
                for spec in self.session.registry
                if self._cell_id and spec.cell_id == self._cell_id and spec.name != name
            ]
            for old in replaced:
                self.session.registry.unregister(old)
            spec = self.session.register_handler(
                namespace[name],
                name=name,
                aggregate=args.aggregate,
                concurrency=args.concurrency,
                concurrency_modifier=modifier,
                source=cell,
                cell_id=self._cell_id,
            )
        except NbworkerError as err:
            raise _usage("%%handler", err) from None
        options = [spec.kind.replace("_", " ")]
        if spec.aggregate:
            options.append("aggregate")
        if spec.concurrency != 1:
            options.append(f"concurrency {spec.concurrency}")
        if modifier_name is not None:
            options.append(f"concurrency_modifier {modifier_name}")
        lines = [f"registered handler {spec.name} ({', '.join(options)})"]
        lines += [f"replaces {old}" for old in replaced]
        lines += [f"⚠ {warning}" for warning in spec.warnings]
        print("\n".join(lines))

    @staticmethod
    def _choose_function(tree: ast.Module, name: str | None, modifier: str | None) -> str:
        """The handler's name by the rule export follows too (`arguments.handler_function`),
        or a UsageError saying why the cell does not tell."""
        functions = source.functions(tree)
        chosen = arguments.handler_function(name, functions, source.bound_names(tree), modifier)
        if chosen is not None:
            return chosen
        functions = [f for f in functions if f != modifier]
        if not functions:
            raise UsageError(
                "%%handler: the cell defines no function; write `def handler(job): ...`"
            )
        raise UsageError(
            f"%%handler: the cell defines {len(functions)} functions ({', '.join(functions)}) "
            f"and none is named {DEFAULT_NAME!r}; name the one to register: "
            f"%%handler {functions[0]}"
        )

    # ----------------------------------------------------------------- %rp_test

    @magic_arguments()
    @argument("name", nargs="?", help="the handler to run; default: `handler`, else the only one")
    @argument("job", nargs="?", help='the job, as --test_input takes it: {"input": {...}}')
    @argument("-f", "--file", metavar="FILE.json", help="read the job from a JSON file")
    @argument("--var", metavar="NAME", help="take the job from a variable (a dict or JSON text)")
    @argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop the handler after this long; the run is TIMED_OUT and the kernel lives on",
    )
    @argument(
        "--url",
        metavar="URL",
        help="send the job to a RunPod-style server instead (%%rp_serve, python handler.py "
        "--rp_serve_api) and record its answer",
    )
    @argument(
        "--endpoint",
        metavar="ID",
        help="send the job to a deployed RunPod endpoint (key from RUNPOD_API_KEY)",
    )
    @argument(
        "--no-compare",
        action="store_true",
        help="under `nbworker test`, do not compare this run with the recorded one",
    )
    @argument(
        "--ignore",
        metavar="KEY[,KEY]",
        help="under `nbworker test`, leave these keys (at any depth of the output and stream, "
        "or all of output, stream, error) out of the comparison",
    )
    @no_var_expand
    @line_magic
    def rp_test(self, line: str) -> Run:
        """Run a job against a registered handler in this kernel, with RunPod's semantics.

        Shows streamed chunks as they come, then the result, and records the run in the
        cell (mimetype application/vnd.nbworker.run+json). A FAILED or TIMED_OUT job is a
        result, not an error of the cell. Returns the Run.
        """
        __tracebackhide__ = True
        options, job_text = _split_job_json(line)
        args = parse_argstring(self.rp_test, options)
        name, job = self._job_from(args, job_text)
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError(f"%rp_test: --timeout must be positive, not {args.timeout:g}")
        if args.url or args.endpoint:
            return self._remote_test(args, name, job)
        try:
            spec = self.session.registry.get(name)
        except NbworkerError as err:
            raise _usage("%rp_test", err) from None

        live = views.LiveRun(spec.name, _open_view, streams=spec.streams)
        run = self.session.run_job(
            job,
            spec,
            timeout=args.timeout,
            on_chunk=live.chunk if spec.streams else None,
            on_progress=live.progress,
        )
        bundle = views.run_bundle(run, tidy=self._tidy)
        if not live.close(bundle):
            display(bundle, raw=True)
        self._shown = (self.shell.execution_count, id(run))
        if run.interrupt is not None:
            # Stop the rest of a "Run all" as any interrupted cell does, showing where the
            # handler was; the kernel, the handlers and the loaded models live on.
            interrupt, run.interrupt = run.interrupt, None
            raise interrupt
        active = replay.current()
        if active is not None:  # under `nbworker test`: compare with the recorded run
            ignore = [key.strip() for key in (args.ignore or "").split(",") if key.strip()]
            outcome = active.check(run.to_record(), compare=not args.no_compare, ignore=ignore)
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
        from nbworker.client import Endpoint, EndpointError, EndpointTimeout

        if args.url and args.endpoint:
            raise UsageError("%rp_test: give --url or --endpoint, not both")
        try:
            endpoint = Endpoint(args.url) if args.url else Endpoint(endpoint_id=args.endpoint)
        except ValueError as err:
            raise UsageError(f"%rp_test: {err}") from None
        where = f"{'url' if args.url else 'endpoint'}:{args.url or args.endpoint}"
        body = {key: job[key] for key in ("input", "webhook", "policy", "s3Config") if key in job}
        started = time.perf_counter()
        try:
            answer = endpoint.run_sync(body, timeout=args.timeout)
        except EndpointTimeout as err:  # no answer by the deadline: the run timed out
            answer = {"status": "TIMED_OUT", "error": str(err), "id": err.job_id}
        except EndpointError as err:
            raise UsageError(f"%rp_test: {err}") from None
        status = answer.get("status")
        if status not in ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"):
            status, answer = "TIMED_OUT", dict(answer, error=f"the job is still {status}")
        run = Run(
            handler=name or where,
            job={"id": answer.get("id"), "input": job.get("input")},
            status=status,
            output=answer.get("output"),
            error=answer.get("error"),
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        display(views.run_bundle(run, tidy=self._tidy), raw=True)
        self._shown = (self.shell.execution_count, id(run))
        return run

    def _job_from(self, args: Any, job_text: str | None) -> tuple[str | None, dict[str, Any]]:
        """The handler name and the job, from JSON, `-f FILE` or `--var NAME`."""
        words = [word for word in (args.name, args.job) if word is not None]
        name = None
        if (
            words
            and words[0].isidentifier()
            and (len(words) == 2 or job_text or args.file or args.var)
        ):
            name = words.pop(0)
        if words:
            if job_text is not None or len(words) > 1:
                raise UsageError(f"%rp_test: unexpected argument {words[-1]!r}")
            job_text = words[0]  # a JSON value that is not an object, or a stray word
        sources = [s for s in (job_text, args.file, args.var) if s is not None]
        if len(sources) != 1:
            raise UsageError(
                "%rp_test: give the job once: as JSON "
                '(%rp_test {"input": {...}}), -f FILE.json or --var NAME'
                + ("" if sources else ', e.g. %rp_test {"input": {"text": "hi"}}')
            )
        try:
            if job_text is not None:
                return name, parse_job(job_text)
            if args.file is not None:
                path = os.path.expanduser(args.file)
                try:
                    with open(path, encoding="utf-8") as file:
                        text = file.read()
                except OSError as err:
                    raise UsageError(f"%rp_test: cannot read {args.file}: {err.strerror}") from None
                except UnicodeDecodeError as err:
                    raise UsageError(
                        f"%rp_test: {args.file} is not UTF-8 text (byte {err.start}); "
                        "job JSON is UTF-8"
                    ) from None
                return name, parse_job(text, source=args.file)
            if args.var not in self.shell.user_ns:
                raise UsageError(f"%rp_test: no variable named {args.var!r}")
            value = self.shell.user_ns[args.var]
            if isinstance(value, str):
                return name, parse_job(value, source=args.var)
            return name, build_job(value, source=args.var)
        except NbworkerError as err:
            raise _usage("%rp_test", err) from None

    # ----------------------------------------------------------------- %%model

    @_arguments(arguments.MODEL)
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
        args = parse_argstring(self.model, line)
        if not args.name.isidentifier():
            raise UsageError(f"%%model: {args.name!r} is not a Python name")
        cache = self.session.cache
        # Parsed on a hit too (the key is the tree's), and before anything is released.
        code, tree = self._parse(cell, "%%model")
        key = source.code_key(tree)

        def run_cell() -> dict[str, Any]:
            __tracebackhide__ = True
            namespace = self.shell.user_ns
            before = dict(namespace)
            try:
                self._execute(code, tree, cell)
            except BaseException:
                # A failed load leaves nothing half-loaded behind: undo what the cell bound.
                for name in [n for n in namespace if n not in before]:
                    del namespace[name]
                namespace.update(before)
                before.clear()  # the traceback keeps this frame: it must not keep the objects
                raise
            # What the cell binds: every name its code assigns at top level (even to the
            # object it held before, e.g. a repeated import), and anything else it changed.
            names = source.bound_names(tree)
            return {
                name: value
                for name, value in namespace.items()
                if name in names or (name not in before or before[name] is not value)
                if name != "__builtins__"
            }

        try:
            loaded = cache.fetch(
                args.name,
                run_cell,
                key=key,
                reload=args.reload,
                bound=True,
                source=cell,
                cell_id=self._cell_id,
            )
        except LoadCycle as err:  # the cell (or one it runs) loads this very model again
            raise UsageError(f"%%model: {err}") from None
        entry = loaded.entry
        if loaded.hit:
            self.shell.user_ns.update(entry.objects)
        lines = [f"{views.released_line(r)}" for r in loaded.released]
        summary = views.entry_line(entry, hit=loaded.hit)
        if loaded.hit and entry.source != cell:  # the text changed, not what it means
            summary = summary.replace(": cache hit", ": unchanged code, cache hit", 1)
        lines.append(summary)
        lines += [f"⚠ {warning}" for warning in loaded.warnings]
        print("\n".join(lines))

    def unbind(self, entry: Entry) -> None:
        """Drop the notebook's references to a released entry's objects so that their
        memory can be freed: the names the entry bound, and IPython's output history
        (`Out[n]`, `_n`, `_`). A name of the user's own that still holds one is left alone
        (the release then says the object is still referenced)."""
        namespace = self.shell.user_ns
        ids = {id(obj) for obj in entry.objects.values()}
        for space in (namespace, self.shell.user_ns_hidden):  # the displayhook writes both
            for name in list(space):
                if id(space[name]) not in ids:
                    continue
                if name in entry.objects or (name[:1] == "_" and name.strip("_").isdigit()):
                    del space[name]
                elif name in ("_", "__", "___"):
                    space[name] = None
        history = namespace.get("Out")
        if isinstance(history, dict):
            for number in [n for n, value in history.items() if id(value) in ids]:
                del history[number]
        hook = self.shell.displayhook  # it keeps the last three outputs itself
        for attribute in ("_", "__", "___"):
            if id(getattr(hook, attribute, None)) in ids:
                setattr(hook, attribute, None)
        last = getattr(self.shell, "last_execution_result", None)  # the previous cell's value
        if last is not None and id(getattr(last, "result", None)) in ids:
            last.result = None

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
        args = parse_argstring(self.rp_models, line)
        cache = self.session.cache
        lines = []
        try:
            if args.budget is not None:
                off = args.budget.strip().lower() in ("none", "off", "0")
                budget = None if off else memory.parse_size(args.budget)
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

        args = parse_argstring(self.rp_export, line)
        path = args.notebook or this_notebook(self.shell.user_ns)
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

        args = parse_argstring(self.rp_serve, line)
        current = serve.running(self.session)
        if args.stop:
            for server in current:
                server.stop()
                print(f"stopped serving at {server.url}")
            if not current:
                print("not serving")
            return
        if args.name is not None and not args.name.isidentifier():
            raise UsageError(f"%rp_serve: {args.name!r} is not a Python name")
        if not 0 <= args.port <= 65535:
            raise UsageError(f"%rp_serve: --port must be 0 to 65535, not {args.port}")
        if args.token is None and not serve.is_loopback(args.host):
            raise UsageError(
                f"%rp_serve: binding {args.host} opens the handler to the network: "
                "give --token TOKEN (clients send Authorization: Bearer TOKEN)"
            )
        for server in current:  # the port it holds may be the one asked for
            if args.port and server.port == args.port:
                server.stop()
        try:
            server = serve.serve(
                self.session, args.name, host=args.host, port=args.port, token=args.token
            )
        except NbworkerError as err:
            raise _usage("%rp_serve", err) from None
        for old in current:
            if old.serving:
                old.stop()
        try:
            spec = self.session.registry.get(args.name)
            sizing = f"concurrency {server.concurrency}"
            if spec.concurrency_modifier is not None:
                modifier = function_name(spec.concurrency_modifier) or "concurrency_modifier"
                sizing += f" from {modifier}()"
            what = f"handler {spec.name} ({sizing})"
        except NbworkerError as err:
            what = f"{args.name or 'the default handler'} (not registered yet: {err})"
        lines = [f"serving {what} at {server.url}"]
        lines.append(
            "routes: POST /run, /runsync; /status/ID, /stream/ID; POST /cancel/ID, /health"
        )
        if server.requires_token:
            lines.append("requests must send Authorization: Bearer <token>")
        print("\n".join(lines))

    # ----------------------------------------------------------------- %rp_panel

    @no_var_expand
    @line_magic
    def rp_panel(self, line: str) -> Any:
        """Show the nbworker panel: pick a handler, edit the job JSON (checked as you type),
        Run (streams live), status, duration and memory, a history to re-run, and the model
        cache with an Evict button. It runs jobs as %rp_test does. Returns the panel."""
        if line.strip():
            raise UsageError(f"%rp_panel: takes no arguments, not {line.strip()!r}")
        from nbworker.widgets import Panel

        return Panel(self.session, tidy=self._tidy)


def _open_view(bundle: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Display `bundle` with a display id; the function that updates it in place."""
    handle = display(bundle, raw=True, display_id=True)
    return lambda update: handle.update(update, raw=True)


def this_notebook(user_ns: dict[str, Any]) -> str | None:
    """The path of the notebook this kernel runs, where the front end tells: VS Code's
    `__vsc_ipynb_file__`, Jupyter server's JPY_SESSION_NAME (ipykernel's `__session__`)."""
    for candidate in (
        user_ns.get("__vsc_ipynb_file__"),
        os.environ.get("JPY_SESSION_NAME"),
        user_ns.get("__session__"),
    ):
        if not isinstance(candidate, str) or not candidate.endswith(".ipynb"):
            continue
        for path in (candidate, os.path.basename(candidate)):  # the kernel runs in its folder
            if os.path.isfile(path):
                return path
    return None


def install(shell: Any, session: Session) -> NbworkerMagics:
    """Register the magics on `shell`, bound to `session` (replacing any installed before)."""
    uninstall(shell)
    magics = NbworkerMagics(shell, session=session)
    shell.register_magics(magics)
    shell.events.register("pre_run_cell", magics.pre_run_cell)
    shell.display_formatter.ipython_display_formatter.for_type(Run, magics.display_run)
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
    magics.remove_hook()
