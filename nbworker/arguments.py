"""The options of the magics, declared once: the magics parse them in the kernel (and show
them in `%%handler?`, `%rp_test?`), the exporter parses them from a notebook's cells (a
`%%handler` line; a `%rp_test` line's comparison options for the worker's tests)."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any, NamedTuple

from nbworker.registry import DEFAULT_NAME, default_choice

__all__ = [
    "CONVENTIONAL_MODIFIER",
    "HANDLER",
    "MODEL",
    "RP_TEST",
    "Arguments",
    "Comparison",
    "comparison",
    "handler_function",
    "modifier_name",
    "parse",
    "rp_test_comparison",
    "sizing_conflict",
    "split_job_json",
    "without_comment",
    "words",
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

RP_TEST: Arguments = [
    (
        ("name",),
        {"nargs": "?", "help": "the handler to run; default: `handler`, else the only one"},
    ),
    (("job",), {"nargs": "?", "help": 'the job, as --test_input takes it: {"input": {...}}'}),
    (("-f", "--file"), {"metavar": "FILE.json", "help": "read the job from a JSON file"}),
    (("--var",), {"metavar": "NAME", "help": "take the job from a variable (a dict or JSON text)"}),
    (
        ("--timeout",),
        {
            "type": float,
            "metavar": "SECONDS",
            "help": "stop the handler after this long; the run is TIMED_OUT and the kernel "
            "lives on",
        },
    ),
    (
        ("--url",),
        {
            "metavar": "URL",
            "help": "send the job to a RunPod-style server instead (%%rp_serve, python "
            "handler.py --rp_serve_api) and record its answer",
        },
    ),
    (
        ("--endpoint",),
        {
            "metavar": "ID",
            "help": "send the job to a deployed RunPod endpoint (key from RUNPOD_API_KEY)",
        },
    ),
    (
        ("--no-compare",),
        {
            "action": "store_true",
            "help": "under `nbworker test`, do not compare this run with the recorded one",
        },
    ),
    (
        ("--ignore",),
        {
            "metavar": "KEY[,KEY]",
            "help": "under `nbworker test`, leave these keys (at any depth of the output and "
            "stream, or all of output, stream, error) out of the comparison",
        },
    ),
]


_DECODER = json.JSONDecoder()


def _json_end(line: str, index: int) -> int | None:
    """Where the JSON value that starts at `line[index]` ends, or None if none does."""
    try:
        _, end = _DECODER.raw_decode(line, index)
    except (ValueError, RecursionError):  # JSONDecodeError, an int of 5000 digits
        return None
    return int(end)


def _scan(line: str) -> tuple[int, int | None, int | None]:
    """(where the line's comment starts, else its length; where its first `{` or `[` that
    begins a word is, before the comment; where the JSON value that starts there ends, or
    None when none does).

    A comment starts at a `#` that begins a word outside quotes (as the shell reads them:
    `'...'` literal, `"..."` and a bare backslash escaping one character) and outside a
    JSON value that begins a word (`{...}` or `[...]`, a word of its own)."""
    quote = ""
    at_word = True  # the next character would begin a word
    json_start = json_end = None
    index, length = 0, len(line)
    while index < length:
        char = line[index]
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                index += 1
        elif char.isspace():
            at_word = True
        elif at_word and char == "#":
            return index, json_start, json_end
        elif at_word and char in "{[" and (end := _json_end(line, index)) is not None:
            if json_start is None:
                json_start, json_end = index, end
            index = end
            continue
        else:
            if at_word and char in "{[" and json_start is None:  # JSON that does not parse
                json_start = index
            at_word = False
            if char in "'\"":
                quote = char
            elif char == "\\":
                index += 1
        index += 1
    return length, json_start, json_end


def without_comment(line: str) -> str:
    """A magic's line without its trailing comment, which starts at a `#` that begins a
    word outside quotes and outside JSON (`encoder  # loads once` -> `encoder`)."""
    end, _, _ = _scan(line)
    return line[:end].rstrip() if end < len(line) else line


def words(line: str) -> list[str]:
    """The words of a magic's line as a shell splits them (`'a b'` and `"a b"` one word,
    their quotes gone), without its trailing comment; ValueError for an unclosed quote."""
    try:
        return shlex.split(without_comment(line))
    except ValueError as err:  # shlex: "No closing quotation", "No escaped character"
        raise ValueError(f"{str(err)[0].lower()}{str(err)[1:]}: {line.strip()}") from None


def split_job_json(line: str) -> tuple[str, str | None]:
    """Split `%rp_test` arguments into options and the job JSON, which starts at the first
    `{` or `[` that begins a word, and drop a trailing comment (`without_comment`).
    Options may stand before and after the JSON. JSON that does not parse runs to the
    comment, or to the end of the line (`parse_job` names the position of its error)."""
    end, start, stop = _scan(line)
    if start is None:
        return line[:end].rstrip(), None
    if stop is None:
        return line[:start], line[start:end]
    return f"{line[:start]} {line[stop:end]}".rstrip(), line[start:stop]


class Comparison(NamedTuple):
    """How `nbworker test` compares a replayed run with its record (a `%rp_test` line's
    `--ignore KEY,KEY` and `--no-compare`)."""

    ignore: list[str]
    compare: bool


def comparison(options: argparse.Namespace) -> Comparison:
    """The comparison options of a parsed `%rp_test` line (`RP_TEST`)."""
    ignore = [key.strip() for key in (options.ignore or "").split(",") if key.strip()]
    return Comparison(ignore, not options.no_compare)


def rp_test_comparison(line: str) -> Comparison:
    """The comparison options of a `%rp_test` line's arguments, as the magic parses them;
    the defaults (compare everything) for a line the magic would refuse."""
    options, _ = split_job_json(line)
    try:
        return comparison(parse(RP_TEST, options, prog="%rp_test"))
    except ValueError:
        return Comparison([], True)


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
    if DEFAULT_NAME in bound:  # `handler = make_handler()` names it too
        return DEFAULT_NAME
    return default_choice(function for function in functions if function != modifier)


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


# (id of the declaration, prog) -> (the declaration, its parser): built once, as a notebook
# of a thousand `%rp_test` cells is read line by line (parse_args leaves a parser as it is)
_parsers: dict[tuple[int, str], tuple[Arguments, _Parser]] = {}


def parse(arguments: Arguments, line: str, *, prog: str) -> argparse.Namespace:
    """Parse a magic's line outside IPython, as the magic does (a trailing comment
    dropped); ValueError with argparse's message."""
    declared, parser = _parsers.get((id(arguments), prog), (None, None))
    if declared is not arguments or parser is None:
        parser = _Parser(prog=prog, add_help=False)
        for names, options in arguments:
            parser.add_argument(*names, **options)
        _parsers[(id(arguments), prog)] = (arguments, parser)
    return parser.parse_args(words(line))
