"""Credentials in a cell's shell and in `.env` text.

A shell cell magic's body (`%%bash`, `%%sh`, `%%script`), `!` lines and `%sx`, a
`%%writefile` of a shell script: `NAME=value` and `--name value` bound to a secret's name,
and unquoted words of high entropy (not paths, URLs or a git command's commit). The text of
another non-Python `%%writefile` (`.env`), and `.env` text in a Python string, for
`NAME=value` lines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from nbworker.export.secrets.shapes import PATTERNS, env_variable, is_placeholder, secret_literal

# The cell magics whose body is a shell script, and the file types `%%writefile` writes as
# one; another non-Python file it writes (`.env`, `.cfg`) is read for `NAME=value` lines.
_SHELL_MAGIC = re.compile(r"%%(?:bash|sh|zsh|script|system)(?:\s|$)")
_SHELL_FILES = frozenset({"sh", "bash", "zsh"})
# `!cmd`, `files = !ls`, `%sx cmd`, `%system cmd`: the shell text after the escape
_SHELL_ESCAPE = re.compile(r"^\s*(?:[\w.]+\s*=\s*)?(?:!!?|%sx\s|%system\s)(.*)$")
# `NAME=value` as a shell assigns it (`export X=...`, `X=... cmd`); `--name=value`, `--name value`
_SHELL_ASSIGNMENT = re.compile(r"(?<![\w$-])([A-Za-z_]\w*)=(\"[^\"]*\"|'[^']*'|[^\s;&|\"'()]+)")
_SHELL_OPTION = re.compile(
    r"(?<!\S)--?([A-Za-z][\w-]*)(?:=|\s+)(\"[^\"]*\"|'[^']*'|[^\s;&|\"'()-][^\s;&|\"'()]*)"
)
# A line of `.env`-style text: `NAME=value`, `export NAME=value`, a comment after it.
_ASSIGNMENT_LINE = re.compile(
    r"^\s*(?:export\s+)?([A-Za-z_][\w.-]*)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'()\[\]{}]+)\s*(?:#.*)?$"
)
# An unquoted word on a shell line that looks random, by detect-secrets' alphabets and
# default entropy limits (hex 3.0, base64 4.5); no path (`/`), no dotted name.
_HEX_WORD = re.compile(r"[0-9a-f]{32,}|[0-9A-F]{32,}")
_BASE64_WORD = re.compile(r"[A-Za-z0-9+_-]{20,}={0,2}")
_SHELL_SPLIT = re.compile(r"[\s;&|()<>]+")
# a git command names commits: a 40-hex word there is one
_COMMIT_CONTEXT = re.compile(r"(?i)\bgit\s|" + r"revision|commit|sha\d*|hash|digest|checksum|etag")


def scan_shell(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line, kind, variable) in a cell's shell: a shell cell magic's body, `!` lines, and
    the text a `%%writefile` writes to a file that is not Python."""
    for number, text, shell in _shell_lines(lines):
        if not shell:
            for _, name, _value in assignment_lines([text]):
                yield number, f"a literal assigned to {name}", env_variable(name)
            continue
        named = False
        for pattern, verb in ((_SHELL_ASSIGNMENT, "assigned to"), (_SHELL_OPTION, "passed as")):
            for match in pattern.finditer(text):
                name, value = match.group(1), _unquoted(match.group(2))
                if not value.startswith("`") and secret_literal(name, value):
                    named = True
                    label = name if verb == "assigned to" else f"--{name.lstrip('-')}"
                    yield number, f"a literal {verb} {label}", env_variable(name)
        if not named:
            for kind in _random_words(text):
                yield number, kind, ""


def _shell_lines(lines: list[str]) -> Iterator[tuple[int, str, bool]]:
    """(1-based line, text, whether it is shell) of each line read as shell or `.env` text."""
    first = next((n for n, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return
    magic = lines[first].strip()
    if magic.startswith("%%"):
        words = magic.split()
        if _SHELL_MAGIC.match(magic):
            shell = True
        elif words[0] in ("%%writefile", "%%file") and len(words) > 1:
            suffix = words[-1].rsplit(".", 1)[-1].lower() if "." in words[-1] else ""
            if suffix in ("py", "ipy", "pyw"):
                return  # Python: the Python rules read it
            shell = suffix in _SHELL_FILES
        else:
            return
        for number in range(first + 2, len(lines) + 1):
            yield number, lines[number - 1], shell
        return
    if not any("!" in line or "%s" in line for line in lines):
        return
    for number, line in enumerate(lines, start=1):
        escaped = _SHELL_ESCAPE.match(line)
        if escaped:
            yield number, escaped.group(1), True


def assignment_lines(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(0-based index, name, value) of each `.env`-style line binding a secret's name."""
    for index, line in enumerate(lines):
        if "=" not in line:
            continue
        match = _ASSIGNMENT_LINE.match(line)
        if match:
            name, value = match.group(1), _unquoted(match.group(2))
            if secret_literal(name, value) and not any(p.search(value) for p, _, _ in PATTERNS):
                yield index, name, value


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _random_words(text: str) -> Iterator[str]:
    """The kinds of unquoted random-looking words on a shell line (a key after `login`)."""
    for word in _SHELL_SPLIT.split(text):
        word = word.strip("\"'`,")
        if "://" in word or word.startswith(("/", ".", "~", "$")):
            continue  # a URL (a password in one is a basic-auth URL), a path, a variable
        value = word.rsplit("=", 1)[-1] if "=" in word.rstrip("=") else word
        if len(value) < 20 or is_placeholder(value):
            continue
        if _HEX_WORD.fullmatch(value):
            if _shannon(value) <= 3.0:
                continue
            if len(value) in (40, 64) and _COMMIT_CONTEXT.search(text):
                continue
            yield "a high-entropy hex string on a shell line"
        elif (
            _BASE64_WORD.fullmatch(value)
            and any(c.isdigit() for c in value)
            and _shannon(value) > 4.5
        ):
            yield "a high-entropy base64 string on a shell line"


def _shannon(value: str) -> float:
    counts = [value.count(char) for char in set(value)]
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts)
