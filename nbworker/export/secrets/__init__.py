"""Credentials in a notebook, found before anything is exported.

A worker's files (and the copy of the notebook kept beside its tests) end up in a Docker
image and often a public repository, so export refuses a notebook holding a key, token or
password as a literal. What is read, and by which rules:

- every line of every cell (comments, `!shell` and `%magic` lines, markdown included), by
  detect-secrets' plugins with their default settings and heuristic filters (secret-named
  keywords, Base64 and hex high-entropy strings, AWS, private keys, basic-auth URLs, JWTs,
  GitHub, Slack, Stripe, OpenAI, ...), and by rules of ours for shapes it does not know:
  RunPod `rpa_...` keys, Hugging Face `hf_...` tokens, OpenAI `sk-...`/`sk-proj-...` and
  Anthropic `sk-ant-...` keys, a `Bearer <token>`, a `Basic <base64 of user:password>`.
  A keyword finding needs the name to end in the word (`db_password`, not `secret_name`);
- the cell's Python (IPython syntax transformed away), for string literals bound to a name
  that says it holds a secret (`X-Api-Key` read as `X_API_KEY`): `SECRET_KEY = "..."`,
  `os.environ["X_TOKEN"] = "..."`, `os.environ.update({...})` and `setdefault`, the default
  of `os.getenv("X", "...")` or of a parameter, `{"api_key": "..."}`, `login(token="...")`,
  `auth=("user", "pass")`, `%env X_TOKEN=...`, and `NAME=value` lines in a string (`.env`
  text);
- the cell's shell (a `%%bash`/`%%sh`/`%%script` body, `!` lines, a `%%writefile` of a shell
  script): `NAME=value` and `--name value` bound to a secret's name, and unquoted words of
  high entropy (hex, base64; not paths, URLs or a git command's commit); the text of another
  non-Python `%%writefile` (`.env`) for `NAME=value` lines;
- what else ships from the notebook: the run records kept in its copy (`find_in_records`),
  what else that copy keeps (cell ids and tags, kernelspec, `find_in_kept`) and, last, the
  text of every file export writes (`find_in_files`), by the same line rules less the
  high-entropy ones, plus `"key": "value"` pairs under a secret's name (in data, a `*token`
  only if it looks random: a streaming LLM yields `{"token": "ONE"}`).

Placeholders pass: `"<your key>"`, `"xxxx"`, `"changeme"`, `"$TOKEN"`, `os.environ[...]`.
A deliberate false positive is allowed with detect-secrets' own pragma, on that line
(`x = "..."  # pragma: allowlist secret`) or alone on the line before it
(`# pragma: allowlist nextline secret`); it works on any line of a cell, shell and magic
lines too. A finding never carries the secret itself, only where it is and what it looks like.

The scan lives in a package, one concern a module: this one runs it (`find_*`, one line
per finding, redaction); `shapes` holds the credentials known by their shape or their name
and what passes as a placeholder, `plugins` detect-secrets' plugins and filters, `shell`
the rules for shell and `.env` text, `python` those for a cell's Python.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nbworker.export.secrets.plugins import candidates, detected
from nbworker.export.secrets.python import scan_python
from nbworker.export.secrets.shapes import (
    LINE_BREAK,
    OUR_SHAPES,
    PATTERNS,
    SECRET_WORDS,
    named_values,
    our_line_rules,
)
from nbworker.export.secrets.shell import scan_shell

__all__ = [
    "SecretFinding",
    "describe",
    "find_in_files",
    "find_in_kept",
    "find_in_records",
    "find_secrets",
    "redact",
]


@dataclass(frozen=True)
class SecretFinding:
    """Where a credential sits: 0-based cell index, 1-based line in that cell's source (or
    in the JSON of its `output`-th output, a run record; or in the written `file`; or in
    the `place` of the cell, or of the notebook's metadata (cell -1), that the copy keeps)."""

    cell: int
    line: int
    kind: str  # the rule: "a Hugging Face token", "Basic Auth Credentials (detect-secrets)"
    variable: str  # the environment variable to read it from instead ("" if none fits)
    output: int | None = None
    file: str | None = None
    place: str | None = None  # what else of the copy holds it: "id", "tags", "kernelspec"


_PRAGMA = "pragma"  # no allowlist comment without it: skips detect-secrets' 12 regexes a line


def find_secrets(sources: Sequence[tuple[int, str]]) -> list[SecretFinding]:
    """Credentials in (cell index, source) pairs, one per (cell, line, kind), in order."""
    texts = [LINE_BREAK.split(source) for _, source in sources]
    allowed = [_allowlisted(lines) for lines in texts]
    named = [
        [
            found
            for found in itertools.chain(scan_python(source), scan_shell(lines))
            if found[0] not in allowlisted
        ]
        for (_, source), lines, allowlisted in zip(sources, texts, allowed, strict=True)
    ]
    scanned = _scan_texts(
        texts,
        [_file_name(lines) for lines in texts],
        reported=[{line for line, _, _ in found} for found in named],
    )
    found: dict[tuple[int, int, str], SecretFinding] = {}
    for (cell, _), findings, by_name, allowlisted in zip(
        sources, scanned, named, allowed, strict=True
    ):
        for line, kind, variable in [*findings, *by_name]:
            if line not in allowlisted:
                found.setdefault((cell, line, kind), SecretFinding(cell, line, kind, variable))
    return [found[key] for key in sorted(found)]


def find_in_records(records: Sequence[tuple[int, int, str]]) -> list[SecretFinding]:
    """Credentials in the JSON text of run records: (cell index, output index, text)."""
    texts = [LINE_BREAK.split(text) for _, _, text in records]
    scanned = _scan_texts(texts, ["record.json"] * len(texts), data=True)
    found: dict[tuple[int, int, int, str], SecretFinding] = {}
    for (cell, output, _), lines, findings in zip(records, texts, scanned, strict=True):
        allowed = _allowlisted(lines)
        for line, kind, variable in findings:
            if line not in allowed:
                finding = SecretFinding(cell, line, kind, variable, output)
                found.setdefault((cell, output, line, kind), finding)
    return [found[key] for key in sorted(found)]


def find_in_files(files: Mapping[str, str]) -> list[SecretFinding]:
    """Credentials in the text of files about to be written (relative path -> text)."""
    paths = sorted(files)
    texts = [LINE_BREAK.split(files[path]) for path in paths]
    findings = []
    scanned = _scan_texts(texts, paths, data=True)
    for path, lines, found in zip(paths, texts, scanned, strict=True):
        allowed = _allowlisted(lines)
        for line, kind, variable in sorted(set(found)):
            if line not in allowed:
                findings.append(SecretFinding(-1, line, kind, variable, file=path))
    return findings


def find_in_kept(fields: Sequence[tuple[int, str, str]]) -> list[SecretFinding]:
    """Credentials in what else the notebook's copy keeps: (cell index, or -1 for the
    notebook's metadata; what it is: "id", "tags", "kernelspec"; its text)."""
    texts = [LINE_BREAK.split(text) for _, _, text in fields]
    scanned = _scan_texts(texts, ["kept.json"] * len(texts), data=True)
    findings = []
    for (cell, place, _), lines, found in zip(fields, texts, scanned, strict=True):
        allowed = _allowlisted(lines)
        for line, kind, variable in sorted(set(found)):
            if line not in allowed:
                findings.append(SecretFinding(cell, line, kind, variable, place=place))
    return findings


def describe(finding: SecretFinding) -> str:
    """One line for the user: where, which rule, and what to do; never the secret itself."""
    read = f'os.environ["{finding.variable}"]' if finding.variable else "os.environ, at run time"
    if finding.place is not None:
        where = (
            f"cell {finding.cell}'s {finding.place}"
            if finding.cell >= 0
            else f"the notebook's metadata ({finding.place}, line {finding.line} of its JSON)"
        )
        text = (
            f"{where}: {finding.kind}, which the worker's tests/ copy of the notebook keeps: "
            "take it out of the notebook — nothing was exported"
        )
    elif finding.file is not None:
        text = (
            f"{finding.file}, line {finding.line}: {finding.kind}, in a file export would write "
            "from the notebook — nothing was exported"
        )
    elif finding.output is not None:
        text = (
            f"cell {finding.cell}, output {finding.output}: {finding.kind} in the run record "
            f"that %rp_test left there (line {finding.line} of its JSON), which the worker's "
            "tests/ copy of the notebook keeps: run the cell again without it in the job or "
            "the result — nothing was exported"
        )
    else:
        text = (
            f"cell {finding.cell}, line {finding.line}: {finding.kind}; read it from the "
            f"environment instead ({read}) — nothing was exported"
        )
    return redact(text)


def redact(text: str) -> str:
    """`text` with every credential of a shape we know replaced by `<redacted>`."""
    for pattern, _, _ in PATTERNS:
        text = pattern.sub("<redacted>", text)
    return text


def _file_name(lines: list[str]) -> str:
    """The file name detect-secrets reads a cell as (its keyword rule goes by the type): a
    `%%writefile` cell as the file it writes, any other as Python."""
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("%%writefile"):
        words = first.split()
        if len(words) > 1 and "." in words[-1]:
            return "cell." + words[-1].rsplit(".", 1)[1]
    return "cell.py"


def _allowlisted(lines: list[str]) -> set[int]:
    """The 1-based lines detect-secrets' allowlist pragma covers."""
    if not any(_PRAGMA in line for line in lines):
        return set()
    from detect_secrets.filters.allowlist import is_line_allowlisted
    from detect_secrets.util.code_snippet import get_code_snippet

    return {
        number
        for number, line in enumerate(lines, start=1)
        if is_line_allowlisted("cell.py", line, get_code_snippet(lines, number))
    }


def _scan_texts(
    texts: list[list[str]],
    filenames: list[str],
    *,
    data: bool = False,
    reported: list[set[int]] | None = None,
) -> list[list[tuple[int, str, str]]]:
    """For each text (its lines), [(line, kind, variable)]: our shapes, and detect-secrets'
    plugins on the lines where no rule of ours found anything (`reported`: lines our Python
    rules found something on), as ours say more: the variable to read it from. `data`: text
    a program wrote, not code. Each rule runs once over all the texts, and line by line only
    in a text where it could match."""
    windowed = [_windows(lines) for lines in texts]
    # for each line (or window of one) of every text, the plugins that could match it
    plugins = candidates([piece for pieces, _ in windowed for piece in pieces], data=data)
    first = 0
    results = []
    for index, (lines, filename) in enumerate(zip(texts, filenames, strict=True)):
        findings: list[tuple[int, str, str]] = []
        joined = "\n".join(lines)
        if OUR_SHAPES.search(joined):
            for number, line in enumerate(lines, start=1):
                findings.extend((number, *found) for found in our_line_rules(line))
        if data and SECRET_WORDS.search(joined):
            findings.extend(named_values(lines))
        ours = {number for number, _, _ in findings} | (reported[index] if reported else set())
        pieces, line_of = windowed[index]
        chosen, first = plugins[first : first + len(pieces)], first + len(pieces)
        for piece, kind in sorted(set(detected(pieces, filename, chosen))):
            if line_of[piece - 1] not in ours:
                ours_or_new = (line_of[piece - 1], kind, "")
                if ours_or_new not in findings:
                    findings.append(ours_or_new)
        results.append(findings)
    return results


# A long line (a base64 image in a record, minified code) goes to detect-secrets' plugins in
# overlapping windows: some of their patterns (`//.+/:_authToken=`) take time quadratic in
# a line's length; a credential is far shorter than the overlap.
_WINDOW, _OVERLAP = 1000, 200


def _windows(lines: list[str]) -> tuple[list[str], list[int]]:
    """(pieces, the 1-based line of each): `lines` with each long line cut in windows."""
    if all(len(line) <= _WINDOW for line in lines):
        return lines, list(range(1, len(lines) + 1))
    pieces, line_of = [], []
    for number, line in enumerate(lines, start=1):
        starts = range(0, max(len(line) - _OVERLAP, 1), _WINDOW - _OVERLAP)
        for start in starts:
            pieces.append(line[start : start + _WINDOW])
            line_of.append(number)
    return pieces, line_of
