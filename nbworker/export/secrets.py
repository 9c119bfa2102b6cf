"""Credentials written into notebook cells, found before anything is exported.

A worker's files (and the copy of the notebook kept beside its tests) end up in a Docker
image and often a public repository, so export refuses a notebook holding a key, token or
password as a literal. Two passes over each cell: patterns of known credentials (RunPod,
Hugging Face, AWS) on every line, comments and shell lines included; and, on the cell's
Python (IPython syntax transformed away), string literals bound to names that say they
hold a secret (`HF_TOKEN = "..."`, `os.environ["X_API_KEY"] = "..."`, `login(token="...")`).
"""

from __future__ import annotations

import ast
import difflib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["SecretFinding", "describe", "find_secrets"]


@dataclass(frozen=True)
class SecretFinding:
    """Where a credential sits: 0-based cell index, 1-based line in that cell's source."""

    cell: int
    line: int
    kind: str  # what it looks like: "a Hugging Face token", "a literal assigned to X"
    variable: str  # the environment variable to read it from instead


# (pattern, kind, variable) of credentials recognisable by their shape alone.
_PATTERNS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"(?<![A-Za-z0-9_])rpa_[A-Za-z0-9]{20,}"), "a RunPod API key", "RUNPOD_API_KEY"),
    (re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}"), "a Hugging Face token", "HF_TOKEN"),
    (
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        "an AWS access key id",
        "AWS_ACCESS_KEY_ID",
    ),
)
_AWS_SECRET = ("an AWS secret access key", "AWS_SECRET_ACCESS_KEY")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+=]{40}")
# A 40-character key bound to a name holding both "aws" and "secret", as Python
# (`aws_secret_access_key="..."`, `os.environ["AWS_SECRET_ACCESS_KEY"] = "..."`) or as the
# text of a credentials file (`aws_secret_access_key = ...`).
_AWS_SECRET_LINE = re.compile(
    r"(?i)(\w*(?:aws\w*secret|secret\w*aws)\w*)[\"'\]\s]*[:=]\s*[rbu]?[\"']?"
    r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
)
_SECRET_NAME = re.compile(r"(?i)(?:^|_)(?:api_key|token|secret|password)$")
# Tokenizer special tokens are called *_token and hold strings that are no secret.
_SPECIAL_TOKENS = frozenset(
    f"{kind}_token" for kind in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")
)
_PLACEHOLDER_WORDS = (
    "your",
    "placeholder",
    "example",
    "changeme",
    "change_me",
    "change-me",
    "redacted",
    "replaceme",
    "replace_me",
    "dummy",
)
_ENV_MAGIC = re.compile(r"^\s*%(?:env|set_env)\s+([A-Za-z_]\w*)(?:\s*=\s*|\s+)(\S.*?)\s*$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def find_secrets(sources: Sequence[tuple[int, str]]) -> list[SecretFinding]:
    """Credentials in (cell index, source) pairs, one per (cell, line, kind), in order."""
    found: dict[tuple[int, int, str], SecretFinding] = {}
    for cell, source in sources:
        for finding in _scan_cell(cell, source):
            found.setdefault((finding.cell, finding.line, finding.kind), finding)
    return [found[key] for key in sorted(found)]


def describe(finding: SecretFinding) -> str:
    """One line for the user: where, what, and what to do; never the secret itself."""
    text = (
        f"cell {finding.cell}, line {finding.line}: {finding.kind}; read it from the "
        f'environment instead (os.environ["{finding.variable}"]) — nothing was exported'
    )
    for pattern, _, _ in _PATTERNS:
        text = pattern.sub("<redacted>", text)
    return text


def _scan_cell(cell: int, source: str) -> Iterator[SecretFinding]:
    lines = _LINE_BREAK.split(source)
    for number, line in enumerate(lines, start=1):
        for pattern, kind, variable in _PATTERNS:
            if any(not _placeholder(match.group()) for match in pattern.finditer(line)):
                yield SecretFinding(cell, number, kind, variable)
        if any(not _placeholder(match.group(2)) for match in _AWS_SECRET_LINE.finditer(line)):
            yield SecretFinding(cell, number, *_AWS_SECRET)
        env = _ENV_MAGIC.match(line)
        if env and _secret_literal(env.group(1), env.group(2).strip("\"'")):
            yield SecretFinding(cell, number, f"a literal assigned to {env.group(1)}", env.group(1))
    yield from _scan_python(cell, source)


def _scan_python(cell: int, source: str) -> Iterator[SecretFinding]:
    """Secret-named literals in the cell's Python; nothing if it is not Python."""
    lines = _LINE_BREAK.split(source)
    first = next((n for n, line in enumerate(lines) if line.strip()), 0)
    offset = 0
    if lines[first].lstrip().startswith("%%"):  # a cell magic: its body may be Python
        offset = first + 1
        source = "\n".join(lines[offset:])
    parsed = _parse(source)
    if parsed is None:
        return
    tree, line_of = parsed
    for name, value, lineno, variable in _literal_bindings(tree):
        line = line_of(lineno) + offset
        if any(pattern.search(value) for pattern, _, _ in _PATTERNS):
            continue  # the line scan reports it as what it is
        lowered = name.lower()
        if "aws" in lowered and "secret" in lowered and _AWS_SECRET_VALUE.fullmatch(value):
            if not _placeholder(value):
                yield SecretFinding(cell, line, *_AWS_SECRET)
        elif _secret_literal(name, value):
            yield SecretFinding(cell, line, f"a literal {variable[1]} {name}", variable[0])


def _parse(source: str) -> tuple[ast.AST, Callable[[int], int]] | None:
    """The AST of `source` with IPython syntax transformed, and a map back to its lines."""
    with warnings.catch_warnings():  # "\d" in a string: the notebook's business, not ours
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source), lambda lineno: lineno  # plain Python: as it is
        except Exception:
            pass
        try:
            from IPython.core.inputtransformer2 import TransformerManager

            python = TransformerManager().transform_cell(source)
            tree = ast.parse(python)
        except Exception:  # not Python (shell, %%writefile text, half-typed): lines only
            return None
    return tree, _LineMap(_LINE_BREAK.split(python), _LINE_BREAK.split(source))


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


def _literal_bindings(tree: ast.AST) -> Iterator[tuple[str, str, int, tuple[str, str]]]:
    """(name, string, line, (variable, verb)) for each string literal bound to a name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                yield from _pairs(target, node.value)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            yield from _pairs(node.target, node.value)
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg and _is_str(keyword.value):
                    value = keyword.value
                    yield keyword.arg, value.value, value.lineno, (keyword.arg.upper(), "passed as")
            func, args = node.func, node.args
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("setdefault", "putenv")  # os.environ.setdefault("X", "...")
                and len(args) >= 2
                and _is_str(args[0])
                and _is_str(args[1])
            ):
                yield args[0].value, args[1].value, args[1].lineno, (args[0].value, "assigned to")


def _pairs(target: ast.expr, value: ast.expr) -> Iterator[tuple[str, str, int, tuple[str, str]]]:
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


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _secret_literal(name: str, value: str) -> bool:
    """Whether `value`, bound to `name`, is a credential rather than a placeholder."""
    return (
        bool(_SECRET_NAME.search(name))
        and name.lower() not in _SPECIAL_TOKENS
        and not _placeholder(value)
    )


def _placeholder(value: str) -> bool:
    """Empty, a template to fill in (`<your key>`, `xxxx`, `changeme`) or a `$VARIABLE`."""
    text = value.strip()
    lowered = text.lower()
    if not any(char.isalnum() for char in text) or text.startswith("$"):
        return True
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return True
    if text[0] + text[-1] in ("<>", "[]", "{}"):  # "<your key>", "[PAD]", "{token}"
        return True
    body = re.sub(r"^(?:rpa_|hf_|akia|asia)", "", lowered)
    return len({char for char in body if char.isalnum()}) <= 1  # "xxxx", "hf_0000"
