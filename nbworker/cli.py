"""`nbworker export` and `nbworker test`: the command line. Imports stay lazy so that
`nbworker --help` is quick."""

from __future__ import annotations

import argparse
import keyword
import sys
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from nbworker import __version__
    from nbworker.compare import DEFAULT_REL_TOL  # standard library only: --help stays quick

    parser = argparse.ArgumentParser(
        prog="nbworker",
        description="Write, test and ship RunPod serverless workers from a Jupyter notebook.",
    )
    parser.add_argument("--version", action="version", version=f"nbworker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="turn a notebook into a RunPod worker directory",
        description="Write handler.py, requirements.txt, Dockerfile, test_input.json, "
        ".runpod/tests.json and tests/ for the notebook's handler.",
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
    test = commands.add_parser(
        "test",
        help="replay the runs recorded in notebooks, in a fresh kernel and against the worker",
        description="Every %%rp_test run recorded in a notebook is a test case. The notebook "
        "runs top to bottom in a fresh kernel, each %%rp_test comparing its run "
        "with the recorded one; then the notebook is exported and the same cases run against "
        "handler.py under the runpod SDK. A folder stands for every notebook under it. "
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
    test.add_argument("--junit-xml", metavar="FILE", help="write the results as JUnit XML")
    test.add_argument(
        "-k", dest="select", metavar="PATTERN", help="only cases whose id or handler matches"
    )
    test.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="per cell, and per worker job"
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
                raise _UsageError(f"no notebook (*.ipynb) under {argument} (hidden ones skipped)")
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


def _run_tests(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nbworker import testing

    notebooks = _notebooks(args.notebooks)
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
        )
    except ValueError as err:
        raise _UsageError(f"--{err}") from None
    progress = testing.Progress(len(notebooks))
    reports = testing.test_notebooks(notebooks, options, jobs=args.jobs, on_done=progress.done)
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


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "test":
        return _test(args)
    if args.command == "export":
        from nbworker.export import ExportError, export_notebook

        try:
            report = export_notebook(
                args.notebook, args.output, handler=args.handler, force=args.force
            )
        except ExportError as err:
            print(f"nbworker export: error: {err}", file=sys.stderr)
            return 1
        except OSError as err:  # what write_files did not foresee (a full disk): one line too
            where = f": {err.filename}" if err.filename else ""
            print(f"nbworker export: error: {err.strerror or err}{where}", file=sys.stderr)
            return 1
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
