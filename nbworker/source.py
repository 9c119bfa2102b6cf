"""What a piece of Python code binds, uses and imports, read from its syntax tree.

Shared by the magics (which function a `%%handler` cell defines, what a `%%model` cell
binds, whether its code changed) and the exporter (which cells a handler depends on).
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import symtable

__all__ = [
    "PRESTART_HOOK",
    "bound_names",
    "code_key",
    "functions",
    "imported_modules",
    "prestart_hooks",
    "top_level_awaits",
    "used_names",
]

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
BUILTINS = frozenset(dir(builtins))
PRESTART_HOOK = "register_prestart_hook"  # runpod 2.0's runpod.serverless.register_prestart_hook


def code_key(tree: ast.Module) -> str:
    """A key that changes with what code means, not with how it is laid out: the hash of
    its syntax tree without positions. Comments, blank lines, trailing spaces, line
    continuations, tabs for spaces, CRLF line ends, redundant parentheses and the quotes or
    escapes spelling a literal leave it as is; a literal's value (docstrings too), a name,
    an operator, the block a statement is in, or an f-string's `{x = }` text change it.

    The tree, not the tokens: in Python 3.12 the tokenizer splits f-strings and drops the
    spaces in `f"{x = }"`, which the program prints.
    """
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def functions(tree: ast.Module) -> list[str]:
    """The functions a module defines at top level, in order."""
    return [
        node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def _binds(node: ast.AST) -> set[str]:
    """Names a statement binds in the scope it runs in: assignments, imports, defs and
    classes, loop and `with` targets, walrus and `match` captures; not names local to the
    functions, classes and comprehensions in it."""
    bound: set[str] = set()
    pending: list[ast.AST] = [node]
    while pending:
        node = pending.pop()
        if isinstance(node, _SCOPES):
            if not isinstance(node, ast.Lambda):
                bound.add(node.name)
                pending.extend(node.decorator_list)
            continue
        if isinstance(node, _COMPREHENSIONS):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
        pending.extend(ast.iter_child_nodes(node))
    bound.discard("*")  # from x import *
    return bound


def bound_names(tree: ast.Module) -> set[str]:
    """Every name a module binds at top level."""
    names: set[str] = set()
    for statement in tree.body:
        names |= _binds(statement)
    return names


def _loads(node: ast.AST) -> set[str]:
    """Names read when a statement runs, outside the bodies of the functions, lambdas and
    comprehensions it defines (whose reads happen later, or in their own scope)."""
    loads: set[str] = set()
    pending: list[ast.AST] = [node]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # decorators, defaults and annotations are evaluated where the def runs
            pending.extend(node.decorator_list)
            pending.extend(node.args.defaults)
            pending.extend(d for d in node.args.kw_defaults if d is not None)
            continue
        if isinstance(node, ast.ClassDef):
            pending.extend(node.decorator_list)
            pending.extend(node.bases)
            pending.extend(keyword.value for keyword in node.keywords)
            continue
        if isinstance(node, ast.Lambda):
            pending.extend(node.args.defaults)
            continue
        if isinstance(node, _COMPREHENSIONS):
            pending.append(node.generators[0].iter)  # the first iterable runs here
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            loads.add(node.id)
        elif isinstance(node, (ast.AugAssign)) and isinstance(node.target, ast.Name):
            loads.add(node.target.id)  # x += 1 reads x
        pending.extend(ast.iter_child_nodes(node))
    return loads


_TRY = (ast.Try, *((ast.TryStar,) if hasattr(ast, "TryStar") else ()))


def _flow(statements: list[ast.stmt], used: set[str], bound: set[str]) -> None:
    """Walk statements in the order they run, into the blocks of `for`, `while`, `if`,
    `with`, `try` and `match`: a name read before anything above binds it is used; a name
    bound in a block counts as bound for what follows (whether or not the block ran)."""

    def read(node: ast.AST | None) -> None:
        if node is not None:
            used.update(_loads(node) - bound)

    for statement in statements:
        if isinstance(statement, (ast.For, ast.AsyncFor)):
            read(statement.iter)
            bound.update(_binds(statement.target))
            _flow(statement.body, used, bound)
            _flow(statement.orelse, used, bound)
        elif isinstance(statement, (ast.While, ast.If)):
            read(statement.test)
            _flow(statement.body, used, bound)
            _flow(statement.orelse, used, bound)
        elif isinstance(statement, (ast.With, ast.AsyncWith)):
            for item in statement.items:
                read(item.context_expr)
                if item.optional_vars is not None:
                    bound.update(_binds(item.optional_vars))
            _flow(statement.body, used, bound)
        elif isinstance(statement, _TRY):
            _flow(statement.body, used, bound)
            for handler in statement.handlers:
                read(handler.type)
                if handler.name:
                    bound.add(handler.name)
                _flow(handler.body, used, bound)
            _flow(statement.orelse, used, bound)
            _flow(statement.finalbody, used, bound)
        elif isinstance(statement, ast.Match):
            read(statement.subject)
            for case in statement.cases:
                bound.update(_binds(case.pattern))
                read(case.guard)
                _flow(case.body, used, bound)
        else:
            read(statement)
            bound.update(_binds(statement))


def _global_reads(table: symtable.SymbolTable) -> set[str]:
    """Global names read anywhere inside the nested scopes of a symbol table."""
    names: set[str] = set()
    for child in table.get_children():
        for symbol in child.get_symbols():
            if symbol.is_referenced() and symbol.is_global():
                names.add(symbol.get_name())
        names |= _global_reads(child)
    return names


def used_names(source: str, tree: ast.Module | None = None) -> set[str]:
    """Names a module needs from outside itself: read at top level before the module binds
    them, or read as globals by its functions, classes, lambdas and comprehensions (and
    not bound anywhere in the module). Builtins are left out."""
    tree = tree if tree is not None else ast.parse(source)
    used: set[str] = set()
    bound: set[str] = set()
    _flow(tree.body, used, bound)
    used |= _global_reads(symtable.symtable(source, "<cell>", "exec")) - bound
    return used - BUILTINS


def imported_modules(tree: ast.Module) -> set[str]:
    """Top-level names of the modules a module imports absolutely, anywhere in it."""
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    return modules


def prestart_hooks(tree: ast.Module) -> list[str]:
    """The prestart hooks a module registers (runpod 2.0), as their source text, in order:
    a call of an attribute `....register_prestart_hook(hook)` (`runpod.serverless.`...), or
    of the bare name, under the name `from runpod.serverless import register_prestart_hook`
    binds (its alias too); or either used as a decorator."""
    names = {PRESTART_HOOK}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runpod"):
            names.update(a.asname or a.name for a in node.names if a.name == PRESTART_HOOK)

    def registers(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr == PRESTART_HOOK
        return isinstance(node, ast.Name) and node.id in names

    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if any(registers(decorator) for decorator in node.decorator_list):
                found.append((node.lineno, node.col_offset, node.name))
        elif isinstance(node, ast.Call) and registers(node.func) and node.args:
            found.append((node.lineno, node.col_offset, ast.unparse(node.args[0])))
    return [hook for _, _, hook in sorted(found)]


def top_level_awaits(tree: ast.Module) -> list[int]:
    """The lines of `await`, `async for` and `async with` outside any function: IPython
    syntax (its autoawait), not Python a module (handler.py) can hold."""
    found: list[int] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)) or (
            isinstance(node, ast.comprehension) and node.is_async
        ):
            found.append(getattr(node, "lineno", None) or node.target.lineno)  # type: ignore[union-attr]
        pending.extend(ast.iter_child_nodes(node))
    return sorted(set(found))
