"""What the magics do in the kernel, as plain functions of an IPython shell.

Each function takes the shell (anything with IPython's `InteractiveShell` interface) and
the session, does one magic's work and returns what happened; the magics only parse their
line, call these and print. Misuse raises an `NbworkerError` (mostly `CellError`) whose
message is the one line the magic shows after its own name.

- `parse_cell` / `execute`: a cell's body as Python, run in the user namespace the way
  IPython runs a cell (its source kept for tracebacks and `inspect.getsource`).
- `register_cell`: `%%handler`: run the cell, register the function it defines, by the
  rule export follows too (`arguments.handler_function`).
- `load_model`: `%%model`: run the cell once into the model cache; a failed load rolls
  the namespace back; a hit binds the cached names again.
- `unbind`: drop the notebook's references to a released entry, so its memory is freed.
- `job_from`: `%rp_test`'s job, from JSON, a file or a variable.
- `QuietRuns`: an AST transformer: a bare `%rp_test` line is not the cell's value.
- `sharing_output`: while a run's bundle is shown, ipykernel's message reuses the output's
  JSON, encoded once by the runner, instead of encoding a big output again.

IPython itself is not imported: the shell is passed in.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nbworker import arguments, source
from nbworker.cache import Entry, Loaded
from nbworker.errors import CellError
from nbworker.jobs import build_job, parse_job
from nbworker.record import Run, dumps_sharing
from nbworker.registry import DEFAULT_NAME, HandlerSpec
from nbworker.session import Session

__all__ = [
    "QuietRuns",
    "Registered",
    "cell_number",
    "execute",
    "job_from",
    "load_model",
    "parse_cell",
    "register_cell",
    "sharing_output",
    "this_notebook",
    "unbind",
]


# --------------------------------------------------------------------------- cells


def parse_cell(shell: Any, cell: str, *, magic: str = "%%handler") -> tuple[str, ast.Module]:
    """The cell's body as Python (IPython syntax transformed) and its tree. A syntax error
    or a top-level `await` is a CellError naming the line of the cell."""
    try:
        python, tree = _plain_python(shell, cell)
        if tree is None:
            python = shell.transform_cell(cell)
            tree = shell.compile.ast_parse("\n" + python)
        code = "\n" + python  # line numbers as in the cell
    except SyntaxError as err:
        line = (err.lineno or 0) + (0 if err.filename != "<tokenize>" else 1)
        text = f": {err.text.strip()}" if err.text and err.text.strip() else ""
        raise CellError(
            f"{type(err).__name__} at line {line} of the cell: {err.msg}{text}", line=line
        ) from None
    # `await`, `async for` and `async with` need their keywords in the text: most cells
    # are not walked for them
    awaits = source.top_level_awaits(tree) if "await" in code or "async" in code else []
    if awaits:  # IPython's autoawait runs such a cell; handler.py is a module and cannot
        where = "an `async def handler(job)`" if magic == "%%handler" else "asyncio.run(...)"
        raise CellError(
            f"`await` outside a function at line {awaits[0]} of the cell: handler.py runs "
            f"this code at import, where it cannot await; await inside {where}",
            line=awaits[0],
        )
    return code, tree


def _plain_python(shell: Any, cell: str) -> tuple[str, ast.Module | None]:
    """`shell.transform_cell(cell)` and its tree when the cell is Python already, else
    (cell, None). IPython's token transforms (`%magic`, `!cmd`, `x = %magic`, `obj?`, the
    autocall escapes) each need something no valid Python holds, so they leave valid Python
    as it is: only the cheap line transforms (leading blank lines, indent, prompts) run
    before the parse; the tokenising transforms run only for a cell that does not parse."""
    manager = getattr(shell, "input_transformer_manager", None)
    cleanup = getattr(manager, "cleanup_transforms", None)
    line_transforms = getattr(manager, "line_transforms", None)
    if cleanup is None or line_transforms is None or shell.input_transformers_post:
        return cell, None
    lines = (cell if cell.endswith("\n") else cell + "\n").splitlines(keepends=True)
    for transform in cleanup + line_transforms:
        lines = transform(lines)
    if len(lines) < 2:  # one line: IPython's prefilter (autocall) may apply
        return cell, None
    python = "".join(lines)
    try:
        return python, shell.compile.ast_parse("\n" + python)
    except SyntaxError:
        return cell, None


def execute(shell: Any, code: str, tree: ast.Module, raw_cell: str) -> str:
    """Run a cell's body in the user namespace, as IPython would: its source is kept for
    tracebacks and `inspect.getsource`, and what it raises fails the cell. Returns the
    file name the code was filed under."""
    __tracebackhide__ = True
    filename: str = shell.compile.cache(code, cell_number(shell), raw_code=raw_cell)
    exec(shell.compile(tree, filename, "exec"), shell.user_ns)
    return filename


def cell_number(shell: Any) -> int:
    """The In[n] of the running cell: the number IPython filed the calling cell's code
    under (IPython 9 has already counted the next cell by the time a magic runs)."""
    numbers = getattr(shell.compile, "_filename_map", {})
    frame: Any = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename in numbers:
            return int(numbers[frame.f_code.co_filename])
        frame = frame.f_back
    return int(shell.execution_count)


def _python_name(given: str | None, what: str = "") -> None:
    if given is not None and not given.isidentifier():
        raise CellError(f"{what}{given!r} is not a Python name")


# --------------------------------------------------------------------------- %%handler


@dataclass
class Registered:
    """What a `%%handler` cell registered, and the handlers of that cell it replaced."""

    spec: HandlerSpec
    modifier: str | None = None  # the concurrency modifier's name, when there is one
    replaced: list[str] = field(default_factory=list)


def choose_function(tree: ast.Module, name: str | None, modifier: str | None) -> str:
    """The handler's name by the rule export follows too (`arguments.handler_function`),
    or a CellError saying why the cell does not tell."""
    functions = source.functions(tree)
    chosen = arguments.handler_function(name, functions, source.bound_names(tree), modifier)
    if chosen is not None:
        return chosen
    functions = [f for f in functions if f != modifier]
    if not functions:
        raise CellError("the cell defines no function; write `def handler(job): ...`")
    raise CellError(
        f"the cell defines {len(functions)} functions ({', '.join(functions)}) and none is "
        f"named {DEFAULT_NAME!r}; name the one to register: %%handler {functions[0]}"
    )


def register_cell(
    shell: Any, session: Session, cell: str, options: Any, *, cell_id: str | None = None
) -> Registered:
    """`%%handler`: run the cell and register the function it defines. `options` are the
    magic's parsed arguments (`arguments.HANDLER`). Re-running a cell replaces what it
    registered before, under whatever name."""
    __tracebackhide__ = True
    _python_name(options.name)
    _python_name(options.concurrency_modifier)
    code, tree = parse_cell(shell, cell)
    modifier_name = arguments.modifier_name(options, source.bound_names(tree))
    name = choose_function(tree, options.name, modifier_name)
    conflict = arguments.sizing_conflict(options.concurrency, modifier_name)
    if conflict:
        raise CellError(conflict)
    filename = execute(shell, code, tree, cell)
    namespace = shell.user_ns
    if name not in namespace:
        raise CellError(f"the cell did not define {name!r}")
    modifier = None
    if modifier_name is not None:
        if modifier_name not in namespace:
            raise CellError(
                f"--concurrency-modifier {modifier_name}: no cell has defined {modifier_name!r}"
            )
        modifier = namespace[modifier_name]
    registry = session.registry
    replaced = [s.name for s in registry if cell_id and s.cell_id == cell_id and s.name != name]
    for old in replaced:
        registry.unregister(old)
    spec = registry.register(  # what session.register_handler does, with the tree
        namespace[name],
        name=name,
        aggregate=options.aggregate,
        concurrency=options.concurrency,
        concurrency_modifier=modifier,
        source=cell,
        cell_id=cell_id,
        definition=_definition(tree, namespace[name], filename),
    )
    return Registered(spec, modifier_name, replaced)


def _definition(tree: ast.Module, function: Any, filename: str) -> ast.AST | None:
    """The `def` of the cell's tree that made `function` (unwrapped, as inspect.getsource
    reads it), or None when none did (a name bound to a function from elsewhere)."""
    try:
        code = getattr(inspect.unwrap(function), "__code__", None)
    except ValueError:  # a cycle of __wrapped__
        return None
    if code is None or code.co_filename != filename:
        return None
    for node in tree.body:
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == code.co_name
            and min([node.lineno, *(d.lineno for d in node.decorator_list)]) == code.co_firstlineno
        ):
            return node
    return None


# --------------------------------------------------------------------------- %%model


def load_model(
    shell: Any,
    session: Session,
    name: str,
    cell: str,
    *,
    reload: bool = False,
    cell_id: str | None = None,
) -> Loaded:
    """`%%model NAME`: run the cell once and keep what it binds in the session's cache.

    The cell is keyed on its code's meaning (`source.code_key`); on a hit nothing runs and
    the cached names are bound again. A cell that raises leaves the namespace as it was."""
    __tracebackhide__ = True
    _python_name(name)
    cached = session.cache.peek(name)
    if cached is not None and not reload and cached.source == cell and cached.key is not None:
        # The very text the entry was loaded from: the same tree, so the same key (a re-run
        # cell, the common hit, is neither parsed nor hashed again).
        key, parsed = cached.key, None
    else:  # parsed on a hit too (the key is the tree's), and before anything is released
        parsed = parse_cell(shell, cell, magic="%%model")
        key = source.code_key(parsed[1])
    del cached

    def run_cell() -> dict[str, Any]:
        __tracebackhide__ = True
        code, tree = parsed if parsed is not None else parse_cell(shell, cell, magic="%%model")
        namespace = shell.user_ns
        before = dict(namespace)
        try:
            execute(shell, code, tree, cell)
        except BaseException:
            # A failed load leaves nothing half-loaded behind: undo what the cell bound.
            for bound in [n for n in namespace if n not in before]:
                del namespace[bound]
            namespace.update(before)
            before.clear()  # the traceback keeps this frame: it must not keep the objects
            raise
        # What the cell binds: every name its code assigns at top level (even to the
        # object it held before, e.g. a repeated import), and anything else it changed.
        names = source.bound_names(tree)
        return {
            bound: value
            for bound, value in namespace.items()
            if bound in names or (bound not in before or before[bound] is not value)
            if bound != "__builtins__"
        }

    loaded = session.cache.fetch(
        name,
        run_cell,
        key=key,
        reload=reload,
        bound=True,
        source=cell,
        cell_id=cell_id,
    )
    if loaded.hit:
        shell.user_ns.update(loaded.entry.objects)
    return loaded


def unbind(shell: Any, entry: Entry) -> None:
    """Drop the notebook's references to a released entry's objects so that their memory
    can be freed: the names the entry bound, and IPython's output history (`Out[n]`, `_n`,
    `_`). A name of the user's own that still holds one is left alone (the release then
    says the object is still referenced). Modules stay bound: `sys.modules` keeps them
    anyway, so unbinding frees nothing, and the cell's `import torch` may be the same
    binding an earlier cell made, which later cells use."""
    namespace = shell.user_ns
    ids = {id(obj) for obj in entry.objects.values() if not isinstance(obj, types.ModuleType)}
    for space in (namespace, shell.user_ns_hidden):  # the displayhook writes both
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
    hook = shell.displayhook  # it keeps the last three outputs itself
    for attribute in ("_", "__", "___"):
        if id(getattr(hook, attribute, None)) in ids:
            setattr(hook, attribute, None)
    last = getattr(shell, "last_execution_result", None)  # the previous cell's value
    if last is not None and id(getattr(last, "result", None)) in ids:
        last.result = None


# --------------------------------------------------------------------------- %rp_test


def job_from(
    user_ns: dict[str, Any],
    words: list[str],
    *,
    job_text: str | None = None,
    file: str | None = None,
    var: str | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """`%rp_test`'s handler name and job: `words` are its positional arguments (a name,
    a job), `job_text` the JSON found on its line, or `file` (JSON) or `var` (a dict or
    JSON text in `user_ns`). Exactly one source of the job."""
    words = list(words)
    name = None
    if words and words[0].isidentifier() and (len(words) == 2 or job_text or file or var):
        name = words.pop(0)
    if words:
        if job_text is not None or len(words) > 1:
            raise CellError(f"unexpected argument {words[-1]!r}")
        job_text = words[0]  # a JSON value that is not an object, or a stray word
    sources = [s for s in (job_text, file, var) if s is not None]
    if len(sources) != 1:
        raise CellError(
            'give the job once: as JSON (%rp_test {"input": {...}}), -f FILE.json or --var NAME'
            + ("" if sources else ', e.g. %rp_test {"input": {"text": "hi"}}')
        )
    if job_text is not None:
        return name, parse_job(job_text)
    if file is not None:
        try:
            with open(os.path.expanduser(file), encoding="utf-8") as opened:
                text = opened.read()
        except OSError as err:
            raise CellError(f"cannot read {file}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise CellError(
                f"{file} is not UTF-8 text (byte {err.start}); job JSON is UTF-8"
            ) from None
        return name, parse_job(text, source=file)
    assert var is not None
    if var not in user_ns:
        raise CellError(f"no variable named {var!r}")
    value = user_ns[var]
    if isinstance(value, str):
        return name, parse_job(value, source=var)
    return name, build_job(value, source=var)


class QuietRuns(ast.NodeTransformer):
    """IPython's AST transformer that makes a bare `%rp_test ...` line of a cell show no
    value (`x = %rp_test ...` still gets the Run): its card is shown already, and as the
    cell's value the Run would only make a terminal print an empty `Out[n]:` (and cost the
    display hook's work). The call becomes `(call, None)[1]`: the same call, value None."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        for index, statement in enumerate(node.body):
            if isinstance(statement, ast.Expr) and _is_rp_test(statement.value):
                quiet = ast.Subscript(
                    ast.Tuple([statement.value, ast.Constant(None)], ast.Load()),
                    ast.Constant(1),
                    ast.Load(),
                )
                node.body[index] = ast.copy_location(ast.Expr(quiet), statement)
        return node


def _is_rp_test(node: ast.expr) -> bool:
    """Whether `node` is IPython's `get_ipython().run_line_magic('rp_test', ...)`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "run_line_magic"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == "rp_test"
    )


SHARED_OVER = 100_000  # characters of output JSON; below, encoding it again costs little


@contextlib.contextmanager
def sharing_output(shell: Any, bundle: dict[str, Any], run: Run) -> Iterator[None]:
    """While `bundle` (`run`'s mimebundle) is displayed: the kernel's message for it holds
    the output's JSON that the runner encoded once (`run.output_json`), instead of
    ipykernel's json.dumps of the whole bundle encoding a big output a second time.

    A hook of ipykernel's display publisher (the API ipywidgets' Output uses) swaps the
    message's content for its bytes, which jupyter_client sends as they are; it runs after
    any other hook (the last registered), on this thread's displays only, and leaves any
    other message, or one it cannot encode, to the kernel. Outside a kernel, or for a small
    output, nothing changes."""
    publisher: Any = getattr(shell, "display_pub", None)
    register = getattr(publisher, "register_hook", None)
    text = run.output_json
    if text is None or len(text) < SHARED_OVER or register is None:
        yield
        return
    output = run.output

    def pack(message: dict[str, Any]) -> dict[str, Any]:
        content = message.get("content")
        if isinstance(content, dict) and content.get("data") is bundle:
            try:
                packed = dumps_sharing(content, output, text)
            except (TypeError, ValueError, RecursionError):
                return message
            message["content"] = packed.encode("utf-8", "surrogateescape")  # as jupyter_client
        return message

    register(pack)
    try:
        yield
    finally:
        publisher.unregister_hook(pack)


# --------------------------------------------------------------------------- %rp_export


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
