"""Credentials in a cell's Python: string literals bound to a name that says it is a secret.

The cell is parsed (IPython syntax transformed away, lines mapped back): assignments,
`os.environ[...]`, `update`/`setdefault`/`putenv`, the default of `os.getenv` or of a
parameter, dict keys, keyword arguments (`login(token="...")`), `auth=("user", "pass")`,
and `.env` text in a string.
"""

from __future__ import annotations

import ast
import bisect
import difflib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeGuard

from nbworker.export.secrets.shapes import (
    AUTH_NAME,
    AWS_SECRET,
    AWS_SECRET_VALUE,
    LINE_BREAK,
    PATTERNS,
    SECRET_WORDS,
    env_variable,
    is_placeholder,
    secret_literal,
)
from nbworker.export.secrets.shell import assignment_lines


def scan_python(source: str) -> Iterator[tuple[int, str, str]]:
    """Secret-named literals in the cell's Python; nothing if it is not Python."""
    if not SECRET_WORDS.search(source):
        return  # no name any rule below takes: no need to parse
    lines = LINE_BREAK.split(source)
    first = next((n for n, line in enumerate(lines) if line.strip()), 0)
    offset = 0
    if lines[first].lstrip().startswith("%%"):  # a cell magic: its body may be Python
        offset = first + 1
        source = "\n".join(lines[offset:])
    parsed = _parse(source)
    if parsed is None:
        return
    tree, line_of = parsed
    near: list[int] | None = None  # the lines a rule could find something on, if known
    if parsed[1] is _same_line:
        near = [
            n for n, line in enumerate(LINE_BREAK.split(source), 1) if SECRET_WORDS.search(line)
        ]
    for name, value, lineno, variable in _literal_bindings(tree, near):
        line = line_of(lineno) + offset
        if any(pattern.search(value) for pattern, _, _ in PATTERNS):
            continue  # the line scan reports it as what it is
        lowered = name.lower()
        if variable[1] == "auth":
            if not is_placeholder(value):
                yield line, f"a user name and password given as {name}", ""
        elif "aws" in lowered and "secret" in lowered and AWS_SECRET_VALUE.fullmatch(value):
            if not is_placeholder(value):
                yield (line, *AWS_SECRET)
        elif secret_literal(name, value):
            yield line, f"a literal {variable[1]} {name}", variable[0]


def _parse(source: str) -> tuple[ast.AST, Callable[[int], int]] | None:
    """The AST of `source` with IPython syntax transformed, and a map back to its lines."""
    with warnings.catch_warnings():  # "\d" in a string: the notebook's business, not ours
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source), _same_line  # plain Python: as it is
        except Exception:
            pass
        try:
            from IPython.core.inputtransformer2 import TransformerManager

            python = TransformerManager().transform_cell(source)
            tree = ast.parse(python)
        except Exception:  # not Python (shell, %%writefile text, half-typed): lines only
            return None
    return tree, _LineMap(LINE_BREAK.split(python), LINE_BREAK.split(source))


def _same_line(lineno: int) -> int:
    return lineno


class _LineMap:
    """Transformed line -> source line: escaped commands continued with `\\` become one."""

    def __init__(self, transformed: list[str], original: list[str]) -> None:
        self._lines: dict[int, int] = {}
        matcher = difflib.SequenceMatcher(None, transformed, original, autojunk=False)
        for _, i1, i2, j1, j2 in matcher.get_opcodes():
            for i in range(i1, i2):
                self._lines[i + 1] = min(j1 + (i - i1), max(j1, j2 - 1)) + 1

    def __call__(self, lineno: int) -> int:
        return self._lines.get(lineno, lineno)


if TYPE_CHECKING:

    class _Str(ast.Constant):
        """A string literal, as `_is_str` tells the type checker."""

        value: str


_Binding = tuple[str, str, int, tuple[str, str]]  # (name, string, line, (variable, verb))
_DEFAULT_OF = "given as the default of"  # the verb of a default's finding


def _literal_bindings(tree: ast.AST, near: list[int] | None = None) -> Iterator[_Binding]:
    """(name, string, line, (variable, verb)) for each string literal bound to a name;
    `near`: the only lines (sorted) a name of a secret is written on, if known."""
    for node in _walk(tree, near):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                yield from _pairs(target, node.value)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            yield from _pairs(node.target, node.value)
        elif isinstance(node, ast.Dict):  # {"api_key": "..."}, os.environ.update({...})
            for key, value in zip(node.keys, node.values, strict=True):
                if key is not None and _is_str(key) and _is_str(value):
                    yield key.value, value.value, value.lineno, (env_variable(key.value), "keyed")
        elif isinstance(node, ast.Call):
            yield from _call_bindings(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _parameter_defaults(node.args)
        elif _is_str(node) and "=" in node.value and "\n" in node.value:  # .env text
            for offset, name, text in assignment_lines(node.value.split("\n")):
                line = min(node.lineno + offset, node.end_lineno or node.lineno)
                yield name, text, line, (env_variable(name), "assigned to")


def _parameter_defaults(arguments: ast.arguments) -> Iterator[_Binding]:
    """`def handler(job, token="...")`: a literal default of a secret-named parameter."""
    positional = [*arguments.posonlyargs, *arguments.args]
    pairs = [
        *zip(
            positional[len(positional) - len(arguments.defaults) :],
            arguments.defaults,
            strict=True,
        ),
        *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True),
    ]
    for parameter, default in pairs:
        if default is not None and _is_str(default):
            name = parameter.arg
            yield name, default.value, default.lineno, (env_variable(name), _DEFAULT_OF)


def _walk(tree: ast.AST, near: list[int] | None) -> Iterator[ast.AST]:
    """ast.walk, less the nodes whose lines hold none of `near` (a binding's node spans
    the line of its name): in a long cell, most of the tree."""
    if near is None:
        yield from ast.walk(tree)
        return
    pending = [tree]
    while pending:
        node = pending.pop()
        first = getattr(node, "lineno", None)
        if first is not None:
            last = getattr(node, "end_lineno", None) or first
            position = bisect.bisect_left(near, first)
            if position == len(near) or near[position] > last:
                continue
        yield node
        pending.extend(ast.iter_child_nodes(node))


def _call_bindings(node: ast.Call) -> Iterator[_Binding]:
    for keyword in node.keywords:
        if keyword.arg and _is_str(keyword.value):
            value = keyword.value
            yield keyword.arg, value.value, value.lineno, (keyword.arg.upper(), "passed as")
        elif keyword.arg and AUTH_NAME.search(keyword.arg):  # auth=("user", "pass")
            password = _password_of(keyword.value)
            if password is not None:
                yield keyword.arg, password.value, password.lineno, ("", "auth")
    func, args = node.func, node.args
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called in ("setdefault", "putenv") and len(args) >= 2:  # os.environ.setdefault("X", "...")
        if _is_str(args[0]) and _is_str(args[1]):
            yield args[0].value, args[1].value, args[1].lineno, (args[0].value, "assigned to")
    elif called in ("get", "getenv") and args and _is_str(args[0]):  # os.getenv("X", "...")
        default = args[1] if len(args) >= 2 else None
        default = default or next((k.value for k in node.keywords if k.arg == "default"), None)
        if default is not None and _is_str(default):
            name = args[0].value
            yield name, default.value, default.lineno, (env_variable(name), _DEFAULT_OF)
    elif called.endswith("Auth") and len(args) == 2:  # HTTPBasicAuth("user", "pass")
        password = _password_of(ast.Tuple(elts=args))
        if password is not None:
            yield called, password.value, password.lineno, ("", "auth")


def _password_of(value: ast.expr) -> _Str | None:
    """The password of a literal `("user", "password")` pair, else None."""
    if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == 2:
        user, password = value.elts
        if _is_str(user) and _is_str(password):
            return password
    return None


def _pairs(target: ast.expr, value: ast.expr) -> Iterator[_Binding]:
    named = getattr(target, "id", None) or getattr(target, "attr", None)
    if isinstance(named, str) and AUTH_NAME.search(named):  # AUTH = ("user", "pass")
        password = _password_of(value)
        if password is not None:
            yield named, password.value, password.lineno, ("", "auth")
            return
    if isinstance(target, (ast.Tuple, ast.List)):
        if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
            for one_target, one_value in zip(target.elts, value.elts, strict=True):
                yield from _pairs(one_target, one_value)
        return
    if not _is_str(value):
        return
    if isinstance(target, ast.Name):
        name, variable = target.id, target.id.upper()
    elif isinstance(target, ast.Attribute):
        name, variable = target.attr, target.attr.upper()
        if isinstance(target.value, ast.Name) and target.value.id == "runpod":
            variable = f"RUNPOD_{variable}"  # runpod.api_key: the SDK reads RUNPOD_API_KEY
    elif isinstance(target, ast.Subscript) and _is_str(target.slice):
        name = variable = target.slice.value  # os.environ["X"]: that very variable
    else:
        return
    yield name, value.value, value.lineno, (variable, "assigned to")


def _is_str(node: ast.AST) -> TypeGuard[_Str]:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)
