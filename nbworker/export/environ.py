"""The environment variables an exported handler.py reads, found by reading its code.

`os.environ[...]`, `os.environ.get(...)`, `.setdefault`, `.pop`, `"X" in os.environ`,
`os.getenv(...)`, through `import os as o`, `from os import environ, getenv` (aliased or not)
and `env = os.environ`, at module level or nested in functions, classes and lambdas. Only
literal names are listed; a name computed at run time is reported in a note. Writes
(`os.environ["X"] = ...`) are no reads. The variables RunPod sets on every worker itself are
left out of what the user is asked for; names that look like credentials get no default.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENV_NAME",
    "PLATFORM_VARIABLES",
    "EnvRead",
    "env_entries",
    "environment_reads",
    "is_secret_name",
]

# Set by RunPod itself on every serverless worker (the SDK reads most): not the user's to fill.
# (RUNPOD_API_KEY is not among them: a handler calling RunPod's API needs the user's key.)
PLATFORM_VARIABLES = frozenset(
    {
        "RUNPOD_AI_API_KEY",
        "RUNPOD_CPU_COUNT",
        "RUNPOD_DC_ID",
        "RUNPOD_ENDPOINT_ID",
        "RUNPOD_GPU_COUNT",
        "RUNPOD_GPU_NAME",
        "RUNPOD_MEM_GB",
        "RUNPOD_PING_INTERVAL",
        "RUNPOD_POD_HOSTNAME",
        "RUNPOD_POD_ID",
        "RUNPOD_PUBLIC_IP",
        "RUNPOD_REALTIME_CONCURRENCY",
        "RUNPOD_REALTIME_PORT",
        "RUNPOD_VOLUME_ID",
        "RUNPOD_WEBHOOK_GET_JOB",
        "RUNPOD_WEBHOOK_PING",
        "RUNPOD_WEBHOOK_POST_OUTPUT",
        "RUNPOD_WEBHOOK_POST_STREAM",
    }
)
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:[A-Z0-9]*(?:TOKEN|SECRETS?|PASSWORD|PASSWD|CREDENTIALS?)|(?:API|ACCESS)?KEY)(?:_|$)"
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class EnvRead:
    """One read of an environment variable in handler.py: its name (None when computed at
    run time), the default the code gives (None for none), the line."""

    name: str | None
    default: str | None
    line: int
    sets: bool = False  # `environ.setdefault`: the code sets it when it is not given


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential (HF_TOKEN, API_KEY)."""
    return bool(_SECRET_NAME.search(name.upper()))


class _Reads(ast.NodeVisitor):
    """The environment reads of a module: `os.environ[...]` (loaded), `environ.get`,
    `environ.setdefault`, `environ.pop`, `"X" in environ`, `os.getenv`, through any alias of
    os, environ and getenv the module binds (imports anywhere, `E = os.environ`)."""

    def __init__(self) -> None:
        self.os_names: set[str] = set()
        self.environ_names: set[str] = set()
        self.getenv_names: set[str] = set()
        self.reads: list[EnvRead] = []

    def bind(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "os" or alias.name.startswith("os."):
                        self.os_names.add(alias.asname or "os")
            elif isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level:
                for alias in node.names:
                    if alias.name == "environ":
                        self.environ_names.add(alias.asname or alias.name)
                    elif alias.name == "getenv":
                        self.getenv_names.add(alias.asname or alias.name)
        # `env = os.environ`, `get = os.getenv`: one pass after the imports is enough
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    if self._is_environ(node.value):
                        self.environ_names.add(target.id)
                    elif self._is_getenv(node.value):
                        self.getenv_names.add(target.id)

    def _is_environ(self, node: ast.AST) -> bool:
        return self._is_os(node, "environ", self.environ_names)

    def _is_getenv(self, node: ast.AST) -> bool:
        return self._is_os(node, "getenv", self.getenv_names)

    def _is_os(self, node: ast.AST, attribute: str, bound: set[str]) -> bool:
        """`node` is `os.<attribute>` (os by any name it is bound to) or a name bound to it."""
        if isinstance(node, ast.Name):
            return node.id in bound
        return (
            isinstance(node, ast.Attribute)
            and node.attr == attribute
            and isinstance(node.value, ast.Name)
            and node.value.id in self.os_names
        )

    def _add(
        self, name_node: ast.AST | None, default_node: ast.AST | None, line: int, sets: bool = False
    ) -> None:
        name = None
        if isinstance(name_node, ast.Constant) and isinstance(name_node.value, str):
            name = name_node.value
        default = None
        if isinstance(default_node, ast.Constant) and not isinstance(
            default_node.value, (bytes, type(None))
        ):
            value = default_node.value
            default = ("true" if value else "false") if isinstance(value, bool) else str(value)
        self.reads.append(EnvRead(name, default, line, sets))

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load) and self._is_environ(node.value):
            self._add(node.slice, None, node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        name = node.args[0] if node.args else _keyword(node, "key")
        default = node.args[1] if len(node.args) > 1 else _keyword(node, "default")
        if self._is_getenv(function):
            self._add(name, default, node.lineno)
        elif (
            isinstance(function, ast.Attribute)
            and function.attr in ("get", "setdefault", "pop")
            and self._is_environ(function.value)
        ):
            self._add(name, default, node.lineno, sets=function.attr == "setdefault")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if (
            len(node.ops) == 1
            and isinstance(node.ops[0], (ast.In, ast.NotIn))
            and self._is_environ(node.comparators[0])
        ):
            self._add(node.left, None, node.lineno)
        self.generic_visit(node)


def _keyword(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def environment_reads(source: str) -> list[EnvRead]:
    """Every read of an environment variable in the Python `source`, in line order."""
    if "environ" not in source and "getenv" not in source:
        return []  # every form read below names one of the two (a 1000-cell handler: ~45 ms)
    tree = ast.parse(source)
    reads = _Reads()
    reads.bind(tree)
    reads.visit(tree)
    return sorted(reads.reads, key=lambda read: (read.line, read.name or ""))


def env_entries(reads: Sequence[EnvRead]) -> tuple[list[dict[str, Any]], list[str]]:
    """(hub.json `env` entries, notes): one entry per variable, by first read."""
    entries: dict[str, dict[str, Any]] = {}
    lines: dict[str, list[int]] = {}
    set_by_code: set[str] = set()
    notes = []
    for read in reads:
        if read.name is None:
            notes.append(
                f"handler.py line {read.line} reads an environment variable whose name is "
                "computed at run time: hub.json cannot list it; add it to .runpod/hub.json's "
                "env by hand if users should set it"
            )
            continue
        if read.name in PLATFORM_VARIABLES or not ENV_NAME.fullmatch(read.name):
            continue
        lines.setdefault(read.name, []).append(read.line)
        if read.sets:
            set_by_code.add(read.name)
        if read.name in entries:
            field_ = entries[read.name]["input"]
            if (
                "default" not in field_
                and read.default is not None
                and not is_secret_name(read.name)
            ):
                field_["default"] = read.default
            continue
        entries[read.name] = {"key": read.name, "input": {"name": read.name, "type": "string"}}
        if read.default is not None and not is_secret_name(read.name):
            entries[read.name]["input"]["default"] = read.default
    for name, entry in entries.items():
        where = ", ".join(str(line) for line in lines[name])
        line_word = "line" if len(lines[name]) == 1 else "lines"
        if is_secret_name(name):
            description = (
                f"A secret handler.py reads ({line_word} {where}): set it to a RunPod secret, "
                f"{{{{ RUNPOD_SECRET_{name.lower()} }}}}, never to the value itself."
            )
        elif "default" in entry["input"] and name in set_by_code:
            description = (
                f"handler.py sets it to {entry['input']['default']!r} when it is not given "
                f"({line_word} {where})."
            )
        else:
            description = f"Read by handler.py ({line_word} {where})."
        field_ = entry["input"]
        entry["input"] = {
            "name": field_["name"],
            "type": "string",
            "description": description,
            **({"default": field_["default"]} if "default" in field_ else {}),
        }
    return list(entries.values()), notes
