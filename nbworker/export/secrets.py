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
"""

from __future__ import annotations

import ast
import base64
import binascii
import bisect
import difflib
import functools
import itertools
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


# (pattern, kind, variable) of credentials recognisable by their shape alone: ours, for
# what detect-secrets does not know (its OpenAI rule knows only the old `T3BlbkFJ` keys).
_PATTERNS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"(?<![A-Za-z0-9_])rpa_[A-Za-z0-9]{20,}"), "a RunPod API key", "RUNPOD_API_KEY"),
    (re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}"), "a Hugging Face token", "HF_TOKEN"),
    (
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        "an AWS access key id",
        "AWS_ACCESS_KEY_ID",
    ),
    (
        re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,}"),
        "an Anthropic API key",
        "ANTHROPIC_API_KEY",
    ),
    (
        re.compile(r"(?<![\w-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        "an OpenAI API key",
        "OPENAI_API_KEY",
    ),
)
_BEARER = re.compile(r"(?i)(?<![\w-])bearer\s+([A-Za-z0-9._~+/-]{12,}=*)")
_BEARER_KIND = ("a bearer token", "")
_AWS_SECRET = ("an AWS secret access key", "AWS_SECRET_ACCESS_KEY")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+=]{40}")
# A 40-character key bound to a name holding both "aws" and "secret", as Python
# (`aws_secret_access_key="..."`, `os.environ["AWS_SECRET_ACCESS_KEY"] = "..."`) or as the
# text of a credentials file (`aws_secret_access_key = ...`).
_AWS_SECRET_LINE = re.compile(
    r"(?i)(?<!\w)(\w*(?:aws\w*secret|secret\w*aws)\w*)[\"'\]\s]*[:=]\s*[rbu]?[\"']?"
    r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
)
# Matched against a name with `-` and spaces read as `_`: header names (`X-Api-Key`) too.
_SECRET_NAME = re.compile(r"(?i)(?:^|_)(?:api_?key|token|secret|password|passwd|secret_key)$")
# Tokenizer special tokens are called *_token and hold strings that are no secret.
_SPECIAL_TOKENS = frozenset(
    f"{kind}_token" for kind in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")
)
_AUTH_NAME = re.compile(r"(?i)(?:^|_)(?:auth|basic_auth|http_auth|credentials)$")
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
# A word of a template starts the value or a word in it ("your-key", "AKIA...7EXAMPLE",
# "myDummyKey"); inside a run of capitals it is chance ("...CYEXAMPLEKEY" is a key).
_PLACEHOLDER_WORD = re.compile(
    r"(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))(?i:" + "|".join(_PLACEHOLDER_WORDS) + ")"
)
_KNOWN_PREFIXES = re.compile(r"^(?:rpa_|hf_|akia|asia|sk-ant-|sk-proj-|sk-)")
_ENV_MAGIC = re.compile(r"^\s*%(?:env|set_env)\s+([A-Za-z_]\w*)(?:\s*=\s*|\s+)(\S.*?)\s*$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PRAGMA = "pragma"  # no allowlist comment without it: skips detect-secrets' 12 regexes a line


def find_secrets(sources: Sequence[tuple[int, str]]) -> list[SecretFinding]:
    """Credentials in (cell index, source) pairs, one per (cell, line, kind), in order."""
    texts = [_LINE_BREAK.split(source) for _, source in sources]
    allowed = [_allowlisted(lines) for lines in texts]
    named = [
        [
            found
            for found in itertools.chain(_scan_python(source), _scan_shell(lines))
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
    texts = [_LINE_BREAK.split(text) for _, _, text in records]
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
    texts = [_LINE_BREAK.split(files[path]) for path in paths]
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
    texts = [_LINE_BREAK.split(text) for _, _, text in fields]
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
    for pattern, _, _ in _PATTERNS:
        text = pattern.sub("<redacted>", text)
    return text


# ------------------------------------------------------------------------- line rules


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
    plugins = _candidates([piece for pieces, _ in windowed for piece in pieces], data=data)
    first = 0
    results = []
    for index, (lines, filename) in enumerate(zip(texts, filenames, strict=True)):
        findings: list[tuple[int, str, str]] = []
        joined = "\n".join(lines)
        if _OUR_SHAPES.search(joined):
            for number, line in enumerate(lines, start=1):
                findings.extend((number, *found) for found in _our_line_rules(line))
        if data and _SECRET_WORDS.search(joined):
            findings.extend(_named_values(lines))
        ours = {number for number, _, _ in findings} | (reported[index] if reported else set())
        pieces, line_of = windowed[index]
        chosen, first = plugins[first : first + len(pieces)], first + len(pieces)
        for piece, kind in sorted(set(_detect_secrets(pieces, filename, chosen))):
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


# What each rule of ours needs in a text to find anything there (a fast test).
_OUR_SHAPES = re.compile(r"rpa_|hf_|AKIA|ASIA|sk-|(?i:bearer|basic|aws|secret)|%env|%set_env")


def _our_line_rules(line: str) -> Iterator[tuple[str, str]]:
    shaped = False
    for pattern, kind, variable in _PATTERNS:
        if any(not _placeholder(match.group()) for match in pattern.finditer(line)):
            shaped = True
            yield kind, variable
    if any(not _placeholder(match.group(2)) for match in _AWS_SECRET_LINE.finditer(line)):
        yield _AWS_SECRET
    if not shaped and any(_random_token(m.group(1)) for m in _BEARER.finditer(line)):
        yield _BEARER_KIND  # a token of a shape above is reported as what it is
    if any(_basic_credentials(m.group(1)) for m in _BASIC.finditer(line)):
        yield _BASIC_KIND
    env = _ENV_MAGIC.match(line)
    if env and _secret_literal(env.group(1), env.group(2).strip("\"'")):
        yield f"a literal assigned to {env.group(1)}", env.group(1)


# `Authorization: Basic <base64 of user:password>` (RFC 7617): what decodes to that.
_BASIC = re.compile(r"(?i)(?<![\w-])basic\s+([A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])")
_BASIC_KIND = ("a basic-auth header (user:password in base64)", "")


def _basic_credentials(value: str) -> bool:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, colon, password = decoded.partition(":")
    return bool(colon) and decoded.isprintable() and not _placeholder(password)


# A JSON (or Python) `"key": "string"` pair, in a record or a written file.
_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _named_values(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line, kind, variable) for each string keyed by a secret's name (`"hf_token": ...`),
    by our name rule: detect-secrets' keyword list has no `token`."""
    for number, line in enumerate(lines, start=1):
        if not _SECRET_WORDS.search(line):
            continue
        for match in _JSON_PAIR.finditer(line):
            try:
                key, value = (json.loads(f'"{group}"') for group in match.groups())
            except ValueError:
                continue
            if any(pattern.search(value) for pattern, _, _ in _PATTERNS):
                continue  # the shape rule reports it as what it is
            # what a streaming LLM yields is `{"token": "ONE"}`: in data a `*token` holds a
            # credential only if it looks like one (letters and digits, no space, 8 or more)
            text_token = key.lower().endswith("token") and not (
                len(value) >= 8 and not any(c.isspace() for c in value) and _random_token(value)
            )
            if not text_token and _secret_literal(key, value):
                yield number, f"a literal keyed {key}", _variable(key)


def _random_token(value: str) -> bool:
    """A bearer token, not a word: letters and digits both, and no placeholder."""
    return (
        any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    ) and not _placeholder(value)


@dataclass(frozen=True)
class _Plugin:
    plugin: Any  # a detect-secrets plugin, with its default settings
    spans: Callable[[str], Iterator[tuple[int, int]]]  # where in a text it could match
    entropy: bool


# detect-secrets' IPPublicDetector reports public IP addresses: no credential, and workers
# name their services by address.
_LEFT_OUT = frozenset({"IPPublicDetector"})


@dataclass(frozen=True)
class _Detectors:
    plugins: tuple[_Plugin, ...]
    line_filters: tuple[Callable[..., bool], ...]  # drop a line: an indirect reference
    secret_filters: tuple[Callable[..., bool], ...]  # drop a value: a UUID, `$X`, an id


@functools.cache
def _detectors() -> _Detectors:
    """detect-secrets' plugins and its default filters, built once (they hold no state).

    The filters are those of a fresh `Settings()` (the library's defaults, not its
    process-wide settings, which stay untouched), less those about files (a cell has none)
    and the allowlist (read first, for our rules too). Each plugin gets a fast test run once
    over a whole text, so that only a text where it could match is scanned line by line:
    its own patterns (multiline, so that `^` and `$` still mean a line), its keywords, or
    its quoted strings over the entropy limit.
    """
    from importlib import import_module

    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
    from detect_secrets.plugins.keyword import DENYLIST_REGEX, KeywordDetector
    from detect_secrets.settings import Settings

    plugins = []
    for plugin_class in get_mapping_from_secret_type_to_class().values():
        if plugin_class.__name__ in _LEFT_OUT:
            continue
        plugin = plugin_class()
        spans: Callable[[str], Iterator[tuple[int, int]]] = _everywhere
        if isinstance(plugin, RegexBasedDetector):
            patterns = [re.compile(p.pattern, p.flags | re.MULTILINE) for p in plugin.denylist]
            spans = functools.partial(_matches, patterns)
        elif isinstance(plugin, KeywordDetector):  # its keywords are lowercase
            spans = functools.partial(_lowered_matches, re.compile(DENYLIST_REGEX))
        elif isinstance(plugin, HighEntropyStringsPlugin):
            spans = functools.partial(_high_entropy, plugin)
        entropy = isinstance(plugin, HighEntropyStringsPlugin)
        plugins.append(_Plugin(plugin, spans, entropy))
    line_filters, secret_filters = [], []
    for path in Settings().filters:
        module, name = path.rsplit(".", 1)
        function = getattr(import_module(module), name)
        parameters = _parameters(function)
        if "filename" in parameters:
            continue
        (secret_filters if "secret" in parameters else line_filters).append(function)
    return _Detectors(tuple(plugins), tuple(line_filters), tuple(secret_filters))


def _candidates(texts: list[str], *, data: bool) -> list[list[_Plugin]]:
    """For each text (a line), the plugins that could find something in it, in their order:
    each plugin's fast test runs once over all the texts joined (a match over a seam marks
    both sides: a rule is then only run for nothing)."""
    starts = list(itertools.accumulate((len(text) + 1 for text in texts[:-1]), initial=0))
    chosen: list[list[_Plugin]] = [[] for _ in texts]
    joined = "\n".join(texts)
    for plugin in _detectors().plugins:
        if data and plugin.entropy:
            continue
        hit: set[int] = set()
        for start, end in plugin.spans(joined):
            first = bisect.bisect_right(starts, start) - 1
            hit.update(range(first, bisect.bisect_right(starts, max(start, end - 1))))
        for index in sorted(hit):
            chosen[index].append(plugin)
    return chosen


def _everywhere(text: str) -> Iterator[tuple[int, int]]:
    yield 0, len(text)


def _matches(patterns: list[re.Pattern[str]], text: str) -> Iterator[tuple[int, int]]:
    for pattern in patterns:
        for match in pattern.finditer(text):
            yield match.span()


def _lowered_matches(pattern: re.Pattern[str], text: str) -> Iterator[tuple[int, int]]:
    """Matches of a lowercase `pattern` in `text` ignoring case: in text.lower(), a dozen
    times quicker than re.IGNORECASE, where lowering keeps every character's place."""
    lowered = text.lower()
    if len(lowered) != len(text):  # "İ" lowers to two characters
        lowered, pattern = text, re.compile(pattern.pattern, re.IGNORECASE)
    for match in pattern.finditer(lowered):
        yield match.span()


def _high_entropy(plugin: Any, text: str) -> Iterator[tuple[int, int]]:
    """Quoted strings of the plugin's alphabet over its entropy limit. A string of n
    distinct characters has at most log2(n) bits a character: most need no counting."""
    limit = plugin.entropy_limit
    for match in plugin.regex.finditer(text):
        value = match.group(2)
        if math.log2(len(set(value))) > limit and plugin.calculate_shannon_entropy(value) > limit:
            yield match.span()


# Records and written files hold what programs made: embeddings, base64 images, hashes,
# where high entropy is the rule, not a sign of a credential. There the entropy plugins
# would refuse every worker that returns an image; the shapes (ours, AWS, JWT, private keys,
# basic-auth URLs, ...) and secret-named keys still apply. Cell sources get every plugin.
def _detect_secrets(
    lines: list[str], filename: str, chosen: list[list[_Plugin]]
) -> Iterator[tuple[int, str]]:
    """(line, kind) for what detect-secrets' plugins find (on each line, those `chosen` for
    it), filtered as its scanner filters, plus our filters (`_ours_drop`)."""
    from detect_secrets.util.code_snippet import get_code_snippet

    detectors = _detectors()
    for number, line in enumerate(lines, start=1):
        if not chosen[number - 1]:
            continue
        line = line.rstrip()
        context = get_code_snippet(lines, number)
        kinds = [
            (chosen_plugin.entropy, f"{chosen_plugin.plugin.secret_type} (detect-secrets)")
            for chosen_plugin in chosen[number - 1]
            if _finds(chosen_plugin.plugin, detectors, line, number, filename, context)
        ]
        # the line filters after the plugins (detect-secrets runs them first, to stop early:
        # the same result), as one of them is quadratic in a line's length
        if not kinds or any(
            _rejects(f, line=line, context=context) for f in detectors.line_filters
        ):
            continue
        # a shape says more than entropy: a GitHub token is not also "a high-entropy string"
        specific = [kind for entropy, kind in kinds if not entropy]
        yield from ((number, kind) for kind in specific or [kind for _, kind in kinds])


def _finds(
    plugin: Any, detectors: _Detectors, line: str, number: int, filename: str, context: Any
) -> bool:
    """Whether `plugin` finds a value on the line that no filter drops."""
    found = plugin.analyze_line(filename=filename, line=line, line_number=number, context=context)
    return any(
        not _ours_drop(plugin, value, line)
        and not any(
            _rejects(f, secret=value, line=line, plugin=plugin, context=context)
            for f in detectors.secret_filters
        )
        for value in (secret.secret_value or "" for secret in found or ())
    )


# A commit or digest named as one (`revision="<40 hex>"` pins a model; `sha256 = "..."`) is
# hex of high entropy that is no credential.
_DIGEST_NAME = re.compile(r"(?i)revision|commit|sha\d*|hash|digest|checksum|etag")


def _ours_drop(plugin: Any, value: str, line: str) -> bool:
    """Our filters on detect-secrets' findings: a placeholder, a named digest, a keyword
    that is not the end of its name."""
    if _placeholder(value):
        return True
    if type(plugin).__name__ == "KeywordDetector":
        return not _keyword_named(value, line)
    hex_digest = type(plugin).__name__ == "HexHighEntropyString" and len(value) in (40, 64)
    return hex_digest and bool(_DIGEST_NAME.search(line))


def _keyword_named(value: str, line: str) -> bool:
    """Whether the name a keyword finding's value is bound to ends in a secret's word, as our
    name rule asks: `db_password`, `client_secret`, not `secret_name` or `password_field`
    (detect-secrets takes any name holding the word). True where no name is seen."""
    at = line.find(value)
    names = _keyword_names().findall(line[: at if at >= 0 else 0])
    if not names:
        return True
    name = _NAME_SEPARATORS.sub("_", names[-1])
    return bool(_keyword_end().search(name) or _SECRET_NAME.search(name))


@functools.cache
def _keyword_names() -> re.Pattern[str]:
    """A name holding one of detect-secrets' keywords."""
    from detect_secrets.plugins.keyword import DENYLIST

    return re.compile(r"(?i)[\w-]*(?:" + "|".join(DENYLIST) + r")[\w-]*")


@functools.cache
def _keyword_end() -> re.Pattern[str]:
    """A name ending in one of detect-secrets' keywords (`db_pass`) or in a secret's key
    (`aws_secret_access_key`)."""
    from detect_secrets.plugins.keyword import DENYLIST

    return re.compile(r"(?i)(?:" + "|".join(DENYLIST) + r"|secret\w*_?key)$")


@functools.cache
def _parameters(function: Callable[..., Any]) -> frozenset[str]:
    from detect_secrets.util.inject import get_injectable_variables

    return frozenset(get_injectable_variables(function))


def _rejects(function: Callable[..., Any], **values: Any) -> bool:
    """Whether a detect-secrets filter drops what it is given (called as its scanner calls
    it: with the values it names; one that names others does not apply)."""
    parameters = _parameters(function)
    if not parameters <= values.keys():
        return False
    return bool(function(**{name: values[name] for name in parameters}))


# ------------------------------------------------------------------------ shell rules

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


def _scan_shell(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line, kind, variable) in a cell's shell: a shell cell magic's body, `!` lines, and
    the text a `%%writefile` writes to a file that is not Python."""
    for number, text, shell in _shell_lines(lines):
        if not shell:
            for _, name, _value in _assignment_lines([text]):
                yield number, f"a literal assigned to {name}", _variable(name)
            continue
        named = False
        for pattern, verb in ((_SHELL_ASSIGNMENT, "assigned to"), (_SHELL_OPTION, "passed as")):
            for match in pattern.finditer(text):
                name, value = match.group(1), _unquoted(match.group(2))
                if not value.startswith("`") and _secret_literal(name, value):
                    named = True
                    label = name if verb == "assigned to" else f"--{name.lstrip('-')}"
                    yield number, f"a literal {verb} {label}", _variable(name)
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


def _assignment_lines(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(0-based index, name, value) of each `.env`-style line binding a secret's name."""
    for index, line in enumerate(lines):
        if "=" not in line:
            continue
        match = _ASSIGNMENT_LINE.match(line)
        if match:
            name, value = match.group(1), _unquoted(match.group(2))
            if _secret_literal(name, value) and not any(p.search(value) for p, _, _ in _PATTERNS):
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
        if len(value) < 20 or _placeholder(value):
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


# ----------------------------------------------------------------------- Python rules


def _scan_python(source: str) -> Iterator[tuple[int, str, str]]:
    """Secret-named literals in the cell's Python; nothing if it is not Python."""
    if not _SECRET_WORDS.search(source):
        return  # no name any rule below takes: no need to parse
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
    near: list[int] | None = None  # the lines a rule could find something on, if known
    if parsed[1] is _same_line:
        near = [
            n for n, line in enumerate(_LINE_BREAK.split(source), 1) if _SECRET_WORDS.search(line)
        ]
    for name, value, lineno, variable in _literal_bindings(tree, near):
        line = line_of(lineno) + offset
        if any(pattern.search(value) for pattern, _, _ in _PATTERNS):
            continue  # the line scan reports it as what it is
        lowered = name.lower()
        if variable[1] == "auth":
            if not _placeholder(value):
                yield line, f"a user name and password given as {name}", ""
        elif "aws" in lowered and "secret" in lowered and _AWS_SECRET_VALUE.fullmatch(value):
            if not _placeholder(value):
                yield (line, *_AWS_SECRET)
        elif _secret_literal(name, value):
            yield line, f"a literal {variable[1]} {name}", variable[0]


# What every Python rule needs in the text of its name (a fast test): _SECRET_NAME,
# _AUTH_NAME and the AWS secret's name.
_SECRET_WORDS = re.compile(r"(?i)api[_ -]?key|token|secret|passw|auth|credentials")


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
    return tree, _LineMap(_LINE_BREAK.split(python), _LINE_BREAK.split(source))


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


_Binding = tuple[str, str, int, tuple[str, str]]  # (name, string, line, (variable, verb))


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
                    yield key.value, value.value, value.lineno, (_variable(key.value), "keyed")
        elif isinstance(node, ast.Call):
            yield from _call_bindings(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _parameter_defaults(node.args)
        elif _is_str(node) and "=" in node.value and "\n" in node.value:  # .env text
            for offset, name, value in _assignment_lines(node.value.split("\n")):
                line = min(node.lineno + offset, node.end_lineno or node.lineno)
                yield name, value, line, (_variable(name), "assigned to")


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
            yield name, default.value, default.lineno, (_variable(name), "given as the default of")


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
        elif keyword.arg and _AUTH_NAME.search(keyword.arg):  # auth=("user", "pass")
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
            yield name, default.value, default.lineno, (_variable(name), "given as the default of")
    elif called.endswith("Auth") and len(args) == 2:  # HTTPBasicAuth("user", "pass")
        password = _password_of(ast.Tuple(elts=args))
        if password is not None:
            yield called, password.value, password.lineno, ("", "auth")


def _password_of(value: ast.expr) -> ast.Constant | None:
    """The password of a literal `("user", "password")` pair, else None."""
    if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == 2:
        user, password = value.elts
        if _is_str(user) and _is_str(password):
            return password  # type: ignore[return-value]
    return None


def _pairs(target: ast.expr, value: ast.expr) -> Iterator[_Binding]:
    named = getattr(target, "id", None) or getattr(target, "attr", None)
    if isinstance(named, str) and _AUTH_NAME.search(named):  # AUTH = ("user", "pass")
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


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _secret_literal(name: str, value: str) -> bool:
    """Whether `value`, bound to `name`, is a credential rather than a placeholder."""
    name = _NAME_SEPARATORS.sub("_", name.strip())
    return (
        bool(_SECRET_NAME.search(name))
        and name.lower() not in _SPECIAL_TOKENS
        and not _placeholder(value)
    )


_NAME_SEPARATORS = re.compile(r"[-\s]+")


def _variable(name: str) -> str:
    """The environment variable a value named `name` would be read from: `X-Api-Key` ->
    `X_API_KEY`."""
    return _NAME_SEPARATORS.sub("_", name.strip()).upper()


def _placeholder(value: str) -> bool:
    """Empty, a template to fill in (`<your key>`, `xxxx`, `changeme`) or a `$VARIABLE`."""
    text = value.strip()
    lowered = text.lower()
    if not any(char.isalnum() for char in text) or text.startswith("$"):
        return True
    if _PLACEHOLDER_WORD.search(text):
        return True
    if text[0] + text[-1] in ("<>", "[]", "{}"):  # "<your key>", "[PAD]", "{token}"
        return True
    body = _KNOWN_PREFIXES.sub("", lowered)
    return len({char for char in body if char.isalnum()}) <= 1  # "xxxx", "hf_0000"
