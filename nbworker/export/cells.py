"""A notebook's cells as the exporter sees them: kind, options, the Python to export (IPython
syntax removed by rule), what each binds, uses and imports, and the runs recorded in it.

IPython syntax is found by parsing, not by pattern: a cell is transformed with IPython's
own input transformers, and the `get_ipython()` calls they produce are read from the tree.
"""

from __future__ import annotations

import argparse
import ast
import functools
import keyword
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

from nbworker import arguments, source
from nbworker.record import RECORD_MIMETYPE, recorded_runs

__all__ = ["DISPLAY_ONLY", "RECORD_MIMETYPE", "Cell", "read_cells"]

EXPORT_TAG = "nbworker:export"
SKIP_TAG = "nbworker:skip"

# Line magics that only change how the notebook shows things, or are nbworker's own
# notebook tools: dropped from the export.
DISPLAY_ONLY = frozenset(
    {
        "matplotlib",
        "config",
        "load_ext",
        "reload_ext",
        "unload_ext",
        "autoreload",
        "aimport",
        "pinfo",
        "pinfo2",
        "pdoc",
        "psource",
        "who",
        "whos",
        "lsmagic",
        "rp_test",
        "rp_models",
        "rp_export",
        "rp_serve",
        "rp_panel",
    }
)
# Cell magics that only wrap their body in something for people: the body is exported.
TRANSPARENT_CELL_MAGICS = frozenset({"time", "capture"})

Kind = Literal["handler", "model", "code", "markdown", "raw"]


@dataclass
class Cell:
    """One notebook cell, read for export."""

    index: int
    id: str | None
    kind: Kind
    source: str
    tags: frozenset[str] = frozenset()
    options: argparse.Namespace | None = None  # of %%handler / %%model
    code: str = ""  # the Python to export: the body with IPython lines removed
    binds: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)
    functions: list[str] = field(default_factory=list)
    imports: set[str] = field(default_factory=set)
    pip: list[str] = field(default_factory=list)  # words after `pip install`
    prestart_hooks: list[str] = field(default_factory=list)  # runpod 2.0 hooks it registers
    dropped: list[tuple[int, str]] = field(default_factory=list)  # display-only lines
    problems: list[tuple[int, str]] = field(default_factory=list)  # cannot be exported
    error: str | None = None  # why the cell cannot be read at all (syntax, bad options)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How the report and the errors name the cell: `cell 5 (%%handler)`."""
        first = (self.source.splitlines() or [""])[0].strip()
        if self.kind in ("handler", "model"):
            return f"cell {self.index} ({first})"
        return f"cell {self.index}"

    @property
    def forced(self) -> bool:
        return EXPORT_TAG in self.tags

    @property
    def skipped(self) -> bool:
        return SKIP_TAG in self.tags


def _ipython_call(node: ast.AST) -> tuple[str, str, str] | None:
    """('line'|'cell'|'system', name, argument) for `get_ipython().run_line_magic(n, a)`,
    `.run_cell_magic(n, a, body)`, `.system(cmd)` or `.getoutput(cmd)`; else None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    receiver = node.func.value
    if not (
        isinstance(receiver, ast.Call)
        and isinstance(receiver.func, ast.Name)
        and receiver.func.id == "get_ipython"
    ):
        return None
    texts = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
    method = node.func.attr
    if method == "run_line_magic" and len(texts) >= 2:
        return "line", str(texts[0]), str(texts[1])
    if method == "run_cell_magic" and texts:
        return "cell", str(texts[0]), str(texts[1]) if len(texts) > 1 else ""
    if method in ("system", "getoutput") and texts:
        return "system", "!", str(texts[0])
    return "other", method, ""


def _pip_install(kind: str, name: str, argument: str) -> list[str] | None:
    """The words after `install` of a `%pip install` / `!pip install` line, else None."""
    if kind == "line" and name == "pip":
        words = argument.split()
    elif kind == "system":
        try:
            words = shlex.split(argument)
        except ValueError:  # an unclosed quote: not a pip line shlex can read
            words = argument.split()
        for prefix in (["pip"], ["pip3"], ["python", "-m", "pip"], ["python3", "-m", "pip"]):
            if words[: len(prefix)] == prefix:
                words = words[len(prefix) :]
                break
        else:
            return None
    else:
        return None
    if not words or words[0] != "install":
        return None
    return words[1:]


def _split_cell_magic(text: str) -> tuple[str | None, str, str]:
    """(cell magic name, its line, body) of a cell; (None, "", text) without one."""
    first, _, body = text.partition("\n")
    stripped = first.strip()
    if not stripped.startswith("%%"):
        return None, "", text
    name, _, line = stripped[2:].partition(" ")
    return name, line.strip(), body


@functools.cache
def _transformer() -> Any:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


# What IPython's clean-up transforms act on even in text that is Python: prompts (`>>>`
# anywhere, `In [1]: ` and `...: ` on the first two lines: `In [1]: x` is an annotation,
# `    ...: 1,` a dict's line) and lines of spaces only (`textwrap.dedent` empties them,
# inside a string too).
_CLEANED_UP = re.compile(r">>>|In \[|\.\.\.:|^[ \t]+$", re.MULTILINE)


def as_python(text: str) -> tuple[str, ast.Module]:
    """A cell's text as the kernel runs it (IPython's own transformers) and its tree.

    Text that is Python already is what IPython leaves as it is, unless it starts with a
    blank or indented line or holds what `_CLEANED_UP` finds: IPython's token transforms
    act only on what Python refuses (an escape at a line's start, `x?`, `a = !cmd`). So
    such text is parsed once and not tokenized again; everything else goes through
    `TransformerManager.transform_cell`. SyntaxError or ValueError (null bytes) if the
    result is not Python."""
    if text and not text[0].isspace() and _CLEANED_UP.search(text) is None:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            pass  # IPython syntax, or an error IPython's transform reports the same
        else:
            return (text if text.endswith("\n") else text + "\n"), tree
    transformed = _transformer().transform_cell(text)
    return transformed, ast.parse(transformed)


def _read_code(cell: Cell, body: str, offset: int) -> None:
    """Fill in the cell's exportable code and names from `body`, whose first line is line
    `offset + 1` of the cell."""
    try:
        transformed, tree = as_python(body)
    except SyntaxError as err:
        line = (err.lineno or 0) + offset
        cell.error = f"{cell.label}, line {line}: {type(err).__name__}: {err.msg}"
        return
    except ValueError as err:  # null bytes, lone surrogates: not Python source
        cell.error = f"{cell.label}: not Python source ({_one_line(err)})"
        return
    try:  # what only the compiler refuses: `return`, `yield` or `break` outside their place
        compile(tree, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError as err:
        line = (err.lineno or 0) + offset
        cell.error = f"{cell.label}, line {line}: {type(err).__name__}: {err.msg}"
        return
    lines = body.split("\n")
    # The text guards below are exact: each reader finds nothing in code without the word
    # it looks for, and a 1000-cell notebook is read in a third of the time without them.
    awaits = (
        source.top_level_awaits(tree) if "async" in transformed or "await" in transformed else []
    )
    for line in awaits:
        # IPython runs such a cell in its event loop (autoawait); handler.py is a module
        text = lines[line - 1].strip() if line - 1 < len(lines) else "await"
        cell.problems.append((line + offset, text))
    removed: set[int] = set()
    for node in ast.walk(tree) if "get_ipython" in transformed else ():
        call = _ipython_call(node)
        if call is None:
            continue
        kind, name, argument = call
        line = getattr(node, "lineno", 1)
        text = lines[line - 1].strip() if line - 1 < len(lines) else ""
        top_level = next(
            (s for s in tree.body if isinstance(s, ast.Expr) and s.value is node), None
        )
        pip = _pip_install(kind, name, argument)
        if top_level is not None and (pip is not None or (kind == "line" and name in DISPLAY_ONLY)):
            if pip is not None:
                cell.pip.extend(pip)
            else:
                cell.dropped.append((line + offset, text))
            removed.update(range(top_level.lineno, (top_level.end_lineno or line) + 1))
        else:
            cell.problems.append((line + offset, text))
    kept = [text for number, text in enumerate(lines, 1) if number not in removed]
    cell.code = "\n".join(kept).strip("\n")
    if cell.problems:  # not exportable, but what it binds still tells what it provides
        code, code_tree = transformed, tree
    elif cell.code == transformed.rstrip("\n"):  # nothing removed: the tree is the same
        code, code_tree = cell.code, tree
    else:
        code = cell.code
        try:
            code_tree = ast.parse(code)
        except SyntaxError as err:  # IPython syntax of a kind not handled above
            cell.error = f"{cell.label}, line {(err.lineno or 0) + offset}: {err.msg}"
            return
    try:
        cell.uses = source.used_names(code, code_tree) - {"get_ipython"}
    except SyntaxError as err:  # a scope error only symtable sees (`nonlocal` at top level)
        cell.error = f"{cell.label}, line {(err.lineno or 0) + offset}: {err.msg}"
        return
    cell.binds = source.bound_names(code_tree)
    cell.functions = source.functions(code_tree)
    cell.imports = source.imported_modules(code_tree) if "import" in code else set()
    cell.prestart_hooks = source.prestart_hooks(code_tree) if source.PRESTART_HOOK in code else []


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def read_cells(notebook: Any) -> list[Cell]:
    """The cells of an nbformat notebook (or its JSON dicts), read for export."""
    cells = []
    for index, raw in enumerate(notebook["cells"]):
        text = raw["source"] if isinstance(raw["source"], str) else "".join(raw["source"])
        # "\r\n" and a lone "\r" end lines for IPython (str.splitlines) and for Python's
        # tokenizer alike: as "\n", the magic line and every line number are the kernel's
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        tags = frozenset(raw.get("metadata", {}).get("tags", []))
        cell_type = raw["cell_type"]
        if cell_type != "code":
            kind: Kind = "markdown" if cell_type == "markdown" else "raw"
            cells.append(Cell(index, raw.get("id"), kind, text, tags))
            continue
        magic, line, body = _split_cell_magic(text)
        kind = {"handler": "handler", "model": "model"}.get(magic or "", "code")  # type: ignore[assignment]
        cell = Cell(index, raw.get("id"), kind, text, tags, records=recorded_runs(raw))
        if magic in ("handler", "model"):
            declared = arguments.HANDLER if magic == "handler" else arguments.MODEL
            try:
                cell.options = arguments.parse(declared, line, prog=f"%%{magic}")
            except ValueError as err:
                cell.error = f"{cell.label}: {_one_line(err)}"
            name = getattr(cell.options, "name", None)
            modifier = getattr(cell.options, "concurrency_modifier", None)
            for given in (name, modifier):
                # handler.py names both in its start() call: a keyword would not compile
                python_name = given is not None and given.isidentifier()
                if python_name and magic == "handler" and keyword.iskeyword(str(given)):
                    python_name = False
                if given is not None and not python_name:
                    cell.error = f"cell {index}: %%{magic} {given!r}: not a Python name"
            _read_code(cell, body, offset=1)
            for given in (name, modifier):
                if magic == "handler" and given and cell.error is None and given not in cell.binds:
                    cell.uses.add(given)  # defined in another cell: trace it there
        elif magic in TRANSPARENT_CELL_MAGICS:
            _read_code(cell, body, offset=1)
        elif magic is not None:
            cell.problems.append((1, text.split("\n", 1)[0].strip()))
        else:
            _read_code(cell, body, offset=0)
        cells.append(cell)
    return cells


def line_magic_arguments(text: str, magic: str) -> list[str]:
    """The argument text of each `%magic ...` line call in a cell's source, in order (read
    from IPython's own transformation of the cell, as the kernel runs it); [] when the
    cell is not Python once transformed."""
    try:
        _, tree = as_python(text)
    except (SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        call = _ipython_call(node)
        if call is not None and call[0] == "line" and call[1] == magic:
            found.append((node.lineno, node.col_offset, call[2]))
    return [argument for _, _, argument in sorted(found)]
