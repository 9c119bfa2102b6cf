"""`nbworker export`: the command line. Imports stay lazy so that `nbworker --help` is quick."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from nbworker import __version__

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "export":
        from nbworker.export import ExportError, export_notebook

        try:
            report = export_notebook(
                args.notebook, args.output, handler=args.handler, force=args.force
            )
        except ExportError as err:
            print(f"nbworker export: error: {err}", file=sys.stderr)
            return 1
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
