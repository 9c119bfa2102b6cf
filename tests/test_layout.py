"""The package's layout keeps the architecture visible (DESIGN.md, STYLE.md): imports run
one way (no circle), nothing imports the magics, modules stay small, every error class
lives in errors.py, and `import nbworker` pulls in neither IPython nor the job runner."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nbworker"
MAX_LINES = 520  # "no module over ~500 lines"
# The facade's lazy imports (load_ipython_extension, __getattr__) are how IPython and users
# reach the package; they run on demand, not at import, so they are no arrows of the design.
FACADE = "nbworker"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if "templates" in parts:  # the worker's own files, copied into it: not nbworker's
            continue
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str:
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {_resolve(name, modules) for name in names if name.startswith("nbworker")}
    return found


def import_graph() -> dict[str, set[str]]:
    """Each nbworker module and the nbworker modules it imports (at any depth of its code)."""
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    graph[FACADE] = set()  # see FACADE
    for name in graph:
        graph[name].discard(FACADE)  # `from nbworker import errors` names the module itself
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_imports_have_no_circle() -> None:
    assert _cycles(import_graph()) == []


def test_nothing_imports_the_magics() -> None:
    importers = [name for name, imports in import_graph().items() if "nbworker.magics" in imports]
    assert importers == []


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("nbworker.jobs", {"nbworker.display", "nbworker.session", "nbworker.cache"}),
        ("nbworker.record", {"nbworker.jobs", "nbworker.display"}),
        ("nbworker.cache", {"nbworker.session"}),
        ("nbworker.export", {"nbworker.jobs", "nbworker.session", "nbworker.display"}),
        ("nbworker.export.cells", {"nbworker.jobs"}),
        ("nbworker.client", {"nbworker.jobs", "nbworker.session"}),
        ("nbworker.deploy", {"nbworker.jobs", "nbworker.session", "nbworker.display"}),
        ("nbworker.deploy", {"nbworker.kernel"}),
        ("nbworker.deploy.plan", {"nbworker.client", "nbworker.testing"}),  # planning: no network
        ("nbworker.testing.remote", {"nbworker.jobs", "nbworker.session", "nbworker.kernel"}),
    ],
)
def test_arrows_run_down(module: str, forbidden: set[str]) -> None:
    """The core does not reach up: running a job is not showing it, a cache needs no
    session, export reads records without the job runner."""
    assert import_graph()[module] & forbidden == set()


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
    }
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_every_error_class_lives_in_errors() -> None:
    """Public exception classes are defined in nbworker/errors.py (private control-flow
    exceptions of one module, named with a leading underscore, may stay there)."""
    elsewhere = []
    for name, path in _modules().items():
        if name == "nbworker.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(base) for base in node.bases}
                if any(base.endswith(("Error", "Exception", "Timeout")) for base in bases) or (
                    bases & {"NbworkerError", "BaseException", "KeyError", "ValueError"}
                ):
                    elsewhere.append(f"{name}.{node.name}")
    assert elsewhere == [] or set(elsewhere) <= ALLOWED_ELSEWHERE, elsewhere


# A BaseException that stops a handler (not an error of nbworker's): see errors.py.
ALLOWED_ELSEWHERE = {"nbworker.stopping.JobTimeout"}


def test_the_error_tree_names_every_error() -> None:
    import nbworker.errors as errors

    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
        if value.__module__ == errors.__name__ and not value.__name__.startswith("_")
    ]
    assert classes
    missing = [cls.__name__ for cls in classes if cls.__name__ not in (errors.__doc__ or "")]
    assert missing == []


def test_import_nbworker_is_light() -> None:
    """`import nbworker` works in a plain interpreter without IPython, ipywidgets,
    papermill or the job runner (the magics and the panel import them when used)."""
    code = (
        "import sys, nbworker; "
        "print(sorted(m for m in ('IPython', 'ipywidgets', 'papermill', 'nbworker.jobs', "
        "'nbworker.magics', 'requests') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
