"""detect-secrets' plugins and filters, set up once and run only where they could match.

Its plugins with their default settings (less `IPPublicDetector`), each with a fast test
over a whole text, and its default filters (less those about files and the allowlist,
which the scan reads first, for our rules too), plus filters of ours: placeholders, named
digests, keywords that are not the end of their name. detect-secrets' process-wide
settings stay untouched.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nbworker.export.secrets.shapes import NAME_SEPARATORS, SECRET_NAME, is_placeholder


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

    plugins: list[_Plugin] = []
    classes: list[Any] = list(get_mapping_from_secret_type_to_class().values())
    for plugin_class in classes:
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
    line_filters: list[Callable[..., bool]] = []
    secret_filters: list[Callable[..., bool]] = []
    for path in Settings().filters:
        module, name = path.rsplit(".", 1)
        function = getattr(import_module(module), name)
        parameters = _parameters(function)
        if "filename" in parameters:
            continue
        (secret_filters if "secret" in parameters else line_filters).append(function)
    return _Detectors(tuple(plugins), tuple(line_filters), tuple(secret_filters))


def candidates(texts: list[str], *, data: bool) -> list[list[_Plugin]]:
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
def detected(
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
    if is_placeholder(value):
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
    name = NAME_SEPARATORS.sub("_", names[-1])
    return bool(_keyword_end().search(name) or SECRET_NAME.search(name))


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
