"""The options of the cell magics, declared once: the magics parse them in the kernel (and
show them in `%%handler?`), the exporter parses them from a notebook's cells."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from nbworker.registry import DEFAULT_NAME

__all__ = [
    "CONVENTIONAL_MODIFIER",
    "HANDLER",
    "MODEL",
    "Arguments",
    "handler_function",
    "modifier_name",
    "parse",
    "sizing_conflict",
]

Arguments = list[tuple[tuple[str, ...], dict[str, Any]]]

HANDLER: Arguments = [
    (
        ("name",),
        {
            "nargs": "?",
            "help": "the function to register; default: the one named `handler`, else the "
            "cell's only function",
        },
    ),
    (
        ("--aggregate",),
        {
            "action": "store_true",
            "help": "return_aggregate_stream: a streaming handler's output is the list of its "
            "chunks",
        },
    ),
    (
        ("--concurrency",),
        {
            "type": int,
            "default": 1,
            "metavar": "N",
            "help": "jobs a worker runs at once (kept for export and serving)",
        },
    ),
    (
        ("--concurrency-modifier",),
        {
            "dest": "concurrency_modifier",
            "metavar": "NAME",
            "help": "the function `current -> int` that sizes the worker (RunPod's "
            "concurrency_modifier), defined in this cell or another; default: the cell's "
            "function named `concurrency_modifier`, if any. Not with --concurrency N",
        },
    ),
]

CONVENTIONAL_MODIFIER = "concurrency_modifier"  # picked up from a %%handler cell by name

MODEL: Arguments = [
    (
        ("name",),
        {"help": "the cache entry: re-running the cell with the same code is a hit"},
    ),
    (
        ("--reload",),
        {"action": "store_true", "help": "release the entry and run the cell again"},
    ),
]


def modifier_name(options: argparse.Namespace, bound: set[str]) -> str | None:
    """The concurrency modifier a `%%handler` cell declares (the magic's rule and export's):
    the function named by --concurrency-modifier, else the cell's own
    `concurrency_modifier`, else None."""
    named = getattr(options, "concurrency_modifier", None)
    if named:
        return str(named)
    return CONVENTIONAL_MODIFIER if CONVENTIONAL_MODIFIER in bound else None


def handler_function(
    named: str | None, functions: list[str], bound: set[str], modifier: str | None
) -> str | None:
    """The function a `%%handler` cell registers (the magic's rule and export's): the one
    named on its line, else the one named `handler`, else the cell's only function, the
    concurrency modifier aside; None when the cell does not say."""
    if named:
        return named
    if DEFAULT_NAME in bound:
        return DEFAULT_NAME
    candidates = [function for function in functions if function != modifier]
    return candidates[0] if len(candidates) == 1 else None


def sizing_conflict(concurrency: int, modifier: str | None) -> str | None:
    """Why `--concurrency N` and a concurrency modifier cannot go together, or None: the
    start config holds one `concurrency_modifier`, so one of them would be dropped."""
    if modifier is None or concurrency == 1:
        return None
    return (
        f"--concurrency {concurrency} and concurrency_modifier {modifier} both size the worker: "
        "keep one"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ValueError(message)


def parse(arguments: Arguments, line: str, *, prog: str) -> argparse.Namespace:
    """Parse a magic's line outside IPython; ValueError with argparse's message."""
    parser = _Parser(prog=prog, add_help=False)
    for names, options in arguments:
        parser.add_argument(*names, **options)
    return parser.parse_args(shlex.split(line))
