"""`nbworker export`, `nbworker test` and `nbworker deploy`: the command line. Imports stay
lazy so that `nbworker --help` is quick; tqdm is imported only when a progress bar shows (on a
terminal).

Every error is one line, `nbworker COMMAND: error: ...`, and an exit code: 2 a usage error
(every command); `export` 1 when the export failed; `test` 1 a case mismatched, 3 a
notebook failed outside a test, 5 no case was compared; `deploy` 1 and 3 as `test` for its
replay, 4 RunPod's API refused or failed a call, 6 no healthy endpoint by --wait; 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import keyword
import sys
import time
from typing import Any, NoReturn

__all__ = ["main"]

EXIT_INTERRUPTED = 130  # as a shell reports a command that SIGINT ended
EXIT_BROKEN_PIPE = 141  # as a shell reports a command that SIGPIPE ended (`| head`)
EXPORT_BAR_DELAY = 0.5  # seconds: an export done sooner shows no bar (nor imports tqdm)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors one line (`nbworker test: error: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from nbworker import __version__
    from nbworker.compare import DEFAULT_REL_TOL  # standard library only: --help stays quick

    parser = _Parser(
        prog="nbworker",
        description="Write, test and ship RunPod serverless workers from a Jupyter notebook.",
    )
    parser.add_argument("--version", action="version", version=f"nbworker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="turn a notebook into a RunPod worker directory",
        description="Write handler.py, requirements.txt, Dockerfile, test_input.json, "
        ".runpod/tests.json, .runpod/hub.json, tests/, README.md, a GitHub workflow running "
        "the tests and .gitignore for the notebook's handler; a new folder also becomes a git "
        "repository with a first commit (--no-git: not).",
    )
    export.add_argument("notebook", metavar="NOTEBOOK.ipynb")
    export.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="the worker directory (default: NOTEBOOK-worker beside the notebook)",
    )
    export.add_argument(
        "--handler",
        metavar="NAME",
        help="the handler to export (default: `handler`, or the only one)",
    )
    export.add_argument(
        "--force", action="store_true", help="overwrite files edited since the last export"
    )
    export.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it shows on a terminal only, for an export over 0.5 s)",
    )
    export.add_argument(
        "--git",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make the folder a git repository with a first commit (default: when export "
        "makes the folder; never in a repository or inside one; nothing is pushed)",
    )
    export.add_argument(
        "--category",
        choices=("audio", "embedding", "language", "video", "image"),
        help="RunPod Hub's category in .runpod/hub.json (default: what the imports say, "
        "else language)",
    )
    test = commands.add_parser(
        "test",
        help="replay the runs recorded in notebooks, in a fresh kernel and against the worker",
        description="Every %rp_test run recorded in a notebook is a test case. The notebook "
        "runs top to bottom in a fresh kernel, each %rp_test comparing its run "
        "with the recorded one; then the notebook is exported and the same cases run against "
        "handler.py under the runpod SDK. With --url or --endpoint the cases go to a running "
        "server instead (neither the kernel nor the worker runs). A folder stands for every "
        "notebook under it. "
        "Exit codes: 0 all passed, 1 a case mismatched, 2 usage error, 3 a notebook failed "
        "outside a test (a cell raised or stopped the run), 5 no case was compared.",
    )
    test.add_argument(
        "notebooks",
        nargs="+",
        metavar="NOTEBOOK.ipynb|DIR",
        help="notebooks, or folders: every *.ipynb under them (hidden folders left out)",
    )
    side = test.add_mutually_exclusive_group()
    side.add_argument("--notebook-only", action="store_true", help="skip the worker replay")
    side.add_argument("--worker-only", action="store_true", help="skip the notebook replay")
    side.add_argument(
        "--url",
        metavar="URL",
        help="replay against this running server instead of the kernel and the worker: "
        "`python handler.py --rp_serve_api`, %%rp_serve, any RunPod-style server",
    )
    side.add_argument(
        "--endpoint",
        metavar="ID",
        help="replay against this deployed endpoint instead of the kernel and the worker "
        "(RUNPOD_API_KEY; RUNPOD_ENDPOINT_BASE_URL overrides https://api.runpod.ai/v2)",
    )
    test.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="with --url/--endpoint: jobs sent at once, after the first alone (default 4)",
    )
    test.add_argument(
        "--handler",
        metavar="NAME",
        help="whose recorded cases are replayed (default: the handler export exports)",
    )
    test.add_argument("--junit-xml", metavar="FILE", help="write the results as JUnit XML")
    test.add_argument(
        "-k", dest="select", metavar="PATTERN", help="only cases whose id or handler matches"
    )
    test.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="per cell, and per worker job (with --url/--endpoint: per job, default 600)",
    )
    test.add_argument(
        "--rtol",
        type=float,
        default=DEFAULT_REL_TOL,
        metavar="X",
        help=f"relative tolerance for floats (default {DEFAULT_REL_TOL:g})",
    )
    test.add_argument(
        "--output-dir",
        metavar="DIR",
        help="keep the executed notebooks there (default: a temporary folder)",
    )
    test.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter, as papermill's -p: set in a cell after the one tagged `parameters` "
        "(VALUE read as YAML: 3, 0.5, true, text)",
    )
    test.add_argument("-j", "--jobs", type=int, metavar="N", help="notebooks run at once")
    test.add_argument("--kernel", metavar="NAME", help="kernel name (default: the notebook's)")
    test.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (a bar of cells and cases on a terminal, else a line "
        "per notebook)",
    )
    _deploy_parser(commands)
    return parser


class _UsageError(Exception):
    """A bad argument: `nbworker test: error: ...` on one line, exit 2."""


def _notebooks(arguments: list[str]) -> list[str]:
    """The notebooks the arguments name, a folder standing for every notebook under it;
    each once, in the order given. Anything else is a usage error."""
    import os
    from pathlib import Path

    from nbworker.testing import notebooks_under

    found: dict[str, str] = {}  # absolute path -> as given
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            inside = notebooks_under(path)
            if not inside:
                raise _UsageError(_no_notebook_under(path, argument))
        elif path.is_file():
            if path.suffix != ".ipynb":
                raise _UsageError(f"not a notebook (*.ipynb): {argument}")
            inside = [path]
        else:
            raise _UsageError(f"no such notebook or folder: {argument}")
        for notebook in inside:
            problem = _not_a_notebook(notebook)
            if problem:
                raise _UsageError(f"not a notebook: {notebook} ({problem})")
            found.setdefault(os.path.abspath(notebook), str(notebook))
    return list(found.values())


def _no_notebook_under(folder: Any, argument: str) -> str:
    """What is wrong with a folder argument that stands for no notebook."""
    left_out = sum(1 for _ in folder.rglob("*.ipynb"))
    if not left_out:
        return f"{argument} is a folder with no notebook (*.ipynb) in it or under it"
    return (
        f"{argument} is a folder with no notebook to test: its {left_out} *.ipynb file(s) are "
        "hidden (a dot-name, .ipynb_checkpoints) or in exported workers; name one to test it"
    )


def _not_a_notebook(path: Any) -> str | None:
    """Why a `.ipynb` file is no notebook at all (not JSON, not a notebook's object), or
    None; a notebook that fails nbformat's schema is the replay's to report."""
    import json

    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as err:
        return f"not JSON: {err.msg} at line {err.lineno} column {err.colno}"
    except OSError as err:
        return err.strerror or "unreadable"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not a notebook object"
    if not isinstance(value.get("cells"), list):
        return 'no "cells" list'
    return None


def _test(args: argparse.Namespace) -> int:
    from nbworker import testing

    try:
        return _run_tests(args)
    except _UsageError as err:
        print(f"nbworker test: error: {err}", file=sys.stderr)
        return testing.EXIT_USAGE


def _check_remote(args: argparse.Namespace) -> None:
    """--url / --endpoint and what goes with them: usage errors before anything runs."""
    import os

    remote = "--url" if args.url is not None else "--endpoint" if args.endpoint else None
    if remote is None:
        return
    kernel_only = [
        name
        for name, given in (
            ("-p", bool(args.parameter)),
            ("--kernel", args.kernel is not None),
            ("--output-dir", args.output_dir is not None),
        )
        if given
    ]
    if kernel_only:
        raise _UsageError(f"{kernel_only[0]} is for the kernel replay, not with {remote}")
    if args.endpoint is not None and not os.environ.get("RUNPOD_API_KEY"):
        raise _UsageError("--endpoint needs RUNPOD_API_KEY set to your RunPod API key")
    base = os.environ.get("RUNPOD_ENDPOINT_BASE_URL")
    if args.endpoint is not None and base and not base.startswith(("http://", "https://")):
        raise _UsageError(f"RUNPOD_ENDPOINT_BASE_URL must be an http(s) URL, not {base!r}")


def _run_tests(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nbworker import testing

    notebooks = _notebooks(args.notebooks)
    _check_remote(args)
    if args.jobs is not None and args.jobs < 1:
        raise _UsageError(f"--jobs must be at least 1, not {args.jobs}")
    parameters = {}
    for name, value in args.parameter:
        import yaml  # papermill's own way of reading -p values (imported only for them)

        if not name.isidentifier() or keyword.iskeyword(name):  # papermill writes it as code
            raise _UsageError(f"-p {name!r}: a parameter is a Python name")
        try:
            parameters[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:  # safe_load: a `!!python/...` tag is an error too
            problem = getattr(err, "problem", None) or type(err).__name__
            raise _UsageError(f"-p {name}: {value!r} is not a YAML value ({problem})") from None
    if args.output_dir is not None:
        out = Path(args.output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file of that name (FileExistsError), no permission
            why = "is a file" if out.exists() and not out.is_dir() else err.strerror or str(err)
            raise _UsageError(f"--output-dir {out}: {why}") from None
    junit = Path(args.junit_xml) if args.junit_xml else None
    if junit is not None:  # before the run, not after it: pytest's --junit-xml makes the folder
        if junit.is_dir():
            raise _UsageError(f"--junit-xml {junit}: is a folder; give a file name")
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _UsageError(
                f"--junit-xml {junit}: cannot make its folder: {err.strerror or err}"
            ) from None
    try:
        options = testing.Options(
            notebook=not args.worker_only,
            worker=not args.notebook_only,
            select=args.select,
            timeout=args.timeout,
            rtol=args.rtol,
            output_dir=args.output_dir,
            parameters=parameters,
            kernel_name=args.kernel,
            url=args.url,
            endpoint=args.endpoint,
            concurrency=args.concurrency,
            handler=args.handler,
        )
    except ValueError as err:
        raise _UsageError(f"--{err}") from None
    progress = testing.Progress(len(notebooks), quiet=args.no_progress, remote=options.remote)
    try:
        reports = testing.test_notebooks(
            notebooks,
            options,
            jobs=args.jobs,
            on_done=progress.done,
            on_step=progress.step if progress.interactive else None,
        )
    finally:
        progress.close()
    print(testing.summary(reports))
    code = testing.exit_code(reports)
    if junit is not None:
        try:
            junit.write_text(testing.junit_xml(reports), encoding="utf-8")
        except OSError as err:
            print(
                f"nbworker test: error: --junit-xml {junit}: {err.strerror or err}",
                file=sys.stderr,
                flush=True,
            )
            return code or testing.EXIT_MISMATCH
    if code == testing.EXIT_NO_CASES:
        reason = testing.nothing_compared(reports, select=args.select)
        print(f"nbworker test: error: no case was compared: {reason}", file=sys.stderr, flush=True)
    return code


class _ExportBar:
    """`nbworker export`'s steps as a tqdm bar on stderr, from the first step that begins
    `EXPORT_BAR_DELAY` seconds after the start: a quick export shows nothing and imports
    nothing more. Only on a terminal."""

    def __init__(self, steps: tuple[str, ...]) -> None:
        self.steps = steps
        self.started = time.monotonic()
        self.done = 0
        self.bar: Any = None

    def step(self, name: str) -> None:
        if self.bar is None and time.monotonic() - self.started >= EXPORT_BAR_DELAY:
            from tqdm.std import tqdm

            self.bar = tqdm(
                total=len(self.steps), initial=self.done, desc="nbworker export", file=sys.stderr
            )
        self.done = self.steps.index(name)
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)
            self.bar.update(self.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(len(self.steps) - self.bar.n)
            self.bar.close()


def _export(args: argparse.Namespace) -> int:
    import os

    from nbworker.export import STEPS, ExportError, default_directory, export_notebook

    bar = _ExportBar(STEPS) if sys.stderr.isatty() and not args.no_progress else None
    git = args.git
    if git is None:  # on for a folder export makes; no notebook there: export says why
        notebook_file = os.path.isfile(args.notebook)
        folder = args.output or (default_directory(args.notebook) if notebook_file else None)
        git = folder is not None and not os.path.lexists(folder)
    try:
        report = export_notebook(
            args.notebook,
            args.output,
            handler=args.handler,
            force=args.force,
            category=args.category,
            git=git,
            on_step=(lambda step: None) if bar is None else bar.step,
        )
    except ExportError as err:
        print(f"nbworker export: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # what write_files did not foresee (a full disk): one line too
        where = f": {err.filename}" if err.filename else ""
        print(f"nbworker export: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(report)
    return 0


def _deploy_parser(commands: Any) -> None:
    """`nbworker deploy`'s options: SOURCE, then those `%rp_deploy` takes too (deploy.OPTIONS)."""
    from nbworker.deploy.plan import OPTIONS  # standard library only: --help stays quick

    deploy = commands.add_parser(
        "deploy",
        help="make a RunPod template and queue endpoint for a worker's image, then test it",
        description="Create a template for IMAGE and a queue endpoint (or, with --endpoint, "
        "point that endpoint at the new template) with the runpod SDK's create_template, "
        "create_endpoint and update_endpoint_template (RUNPOD_API_KEY; RUNPOD_API_BASE_URL "
        "overrides https://api.runpod.io); wait for its /health; replay the notebook's "
        "recorded cases against it. --dry-run prints each call and sends nothing. Secrets go "
        "as RunPod secret references (--secret KEY=NAME), never as values. Exit codes: 0 "
        "deployed (and the replay passed, or had no case), 1 a case mismatched, 2 usage error, "
        "3 the notebook failed outside a test (as `nbworker test`), 4 RunPod's API refused or "
        "failed a call, 6 not healthy by --wait.",
    )
    deploy.add_argument(
        "source",
        metavar="NOTEBOOK.ipynb|WORKER_DIR",
        help="the notebook (its cases; hub.json from its exported -worker folder) or the worker",
    )
    for names, options in OPTIONS:
        deploy.add_argument(*names, **options)


def _deploy(args: argparse.Namespace) -> int:
    from nbworker import deploy
    from nbworker.errors import DeployError, DeployRefused, EndpointUnhealthy

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        plan = deploy.plan_from_args(args.source, args)
        print(deploy.describe(plan, dry_run=args.dry_run), flush=True)
        if args.dry_run:
            return 0
        result = deploy.deploy(plan, on_progress=say)
    except DeployError as err:
        say(f"nbworker deploy: error: {err}")
        if isinstance(err, DeployRefused):
            return deploy.EXIT_REFUSED
        return deploy.EXIT_UNHEALTHY if isinstance(err, EndpointUnhealthy) else 2
    print(result.summary())
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    """The `nbworker` command: its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy":
            return _deploy(args)
        return _test(args) if args.command == "test" else _export(args)
    except KeyboardInterrupt:
        print(f"nbworker {args.command}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `nbworker ... | head` closed the pipe: nothing more to say
        import os

        # Python flushes stdout again at exit: point it at /dev/null so that no second
        # BrokenPipeError is printed then (the way Python's own docs end such a program).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
