"""Credentials known by their shape or their name, and what passes as a placeholder.

The rules of ours that every part of the scan shares: key shapes detect-secrets does not
know (RunPod, Hugging Face, AWS, Anthropic, OpenAI, a `Bearer` token, a `Basic` header), the
names that say a value is a secret (`X-Api-Key` read as `X_API_KEY`), the line rules run
over every text and the `"key": "value"` rule for data (records, written files), and the
test that tells a template to fill in (`<your key>`, `xxxx`, `$TOKEN`) from a credential.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator

# (pattern, kind, variable) of credentials recognisable by their shape alone: ours, for
# what detect-secrets does not know (its OpenAI rule knows only the old `T3BlbkFJ` keys).
PATTERNS: tuple[tuple[re.Pattern[str], str, str], ...] = (
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
AWS_SECRET = ("an AWS secret access key", "AWS_SECRET_ACCESS_KEY")
AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+=]{40}")
# A 40-character key bound to a name holding both "aws" and "secret", as Python
# (`aws_secret_access_key="..."`, `os.environ["AWS_SECRET_ACCESS_KEY"] = "..."`) or as the
# text of a credentials file (`aws_secret_access_key = ...`).
_AWS_SECRET_LINE = re.compile(
    r"(?i)(?<!\w)(\w*(?:aws\w*secret|secret\w*aws)\w*)[\"'\]\s]*[:=]\s*[rbu]?[\"']?"
    r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
)
# Matched against a name with `-` and spaces read as `_`: header names (`X-Api-Key`) too.
SECRET_NAME = re.compile(r"(?i)(?:^|_)(?:api_?key|token|secret|password|passwd|secret_key)$")
# Tokenizer special tokens are called *_token and hold strings that are no secret.
_SPECIAL_TOKENS = frozenset(
    f"{kind}_token" for kind in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")
)
AUTH_NAME = re.compile(r"(?i)(?:^|_)(?:auth|basic_auth|http_auth|credentials)$")
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
LINE_BREAK = re.compile(r"\r\n|\r|\n")


# What each rule of ours needs in a text to find anything there (a fast test).
OUR_SHAPES = re.compile(r"rpa_|hf_|AKIA|ASIA|sk-|(?i:bearer|basic|aws|secret)|%env|%set_env")


def our_line_rules(line: str) -> Iterator[tuple[str, str]]:
    """(kind, variable) for what our rules find on a line: a key of a known shape, an AWS
    secret bound to its name, a bearer token, a basic-auth header, `%env NAME=secret`."""
    shaped = False
    for pattern, kind, variable in PATTERNS:
        if any(not is_placeholder(match.group()) for match in pattern.finditer(line)):
            shaped = True
            yield kind, variable
    if any(not is_placeholder(match.group(2)) for match in _AWS_SECRET_LINE.finditer(line)):
        yield AWS_SECRET
    if not shaped and any(_random_token(m.group(1)) for m in _BEARER.finditer(line)):
        yield _BEARER_KIND  # a token of a shape above is reported as what it is
    if any(_basic_credentials(m.group(1)) for m in _BASIC.finditer(line)):
        yield _BASIC_KIND
    env = _ENV_MAGIC.match(line)
    if env and secret_literal(env.group(1), env.group(2).strip("\"'")):
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
    return bool(colon) and decoded.isprintable() and not is_placeholder(password)


# A JSON (or Python) `"key": "string"` pair, in a record or a written file.
_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def named_values(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line, kind, variable) for each string keyed by a secret's name (`"hf_token": ...`),
    by our name rule: detect-secrets' keyword list has no `token`."""
    for number, line in enumerate(lines, start=1):
        if not SECRET_WORDS.search(line):
            continue
        for match in _JSON_PAIR.finditer(line):
            try:
                key, value = (json.loads(f'"{group}"') for group in match.groups())
            except ValueError:
                continue
            if any(pattern.search(value) for pattern, _, _ in PATTERNS):
                continue  # the shape rule reports it as what it is
            # what a streaming LLM yields is `{"token": "ONE"}`: in data a `*token` holds a
            # credential only if it looks like one (letters and digits, no space, 8 or more)
            text_token = key.lower().endswith("token") and not (
                len(value) >= 8 and not any(c.isspace() for c in value) and _random_token(value)
            )
            if not text_token and secret_literal(key, value):
                yield number, f"a literal keyed {key}", env_variable(key)


def _random_token(value: str) -> bool:
    """A bearer token, not a word: letters and digits both, and no placeholder."""
    return (
        any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    ) and not is_placeholder(value)


# What every Python rule needs in the text of its name (a fast test): SECRET_NAME,
# AUTH_NAME and the AWS secret's name.
SECRET_WORDS = re.compile(r"(?i)api[_ -]?key|token|secret|passw|auth|credentials")


def secret_literal(name: str, value: str) -> bool:
    """Whether `value`, bound to `name`, is a credential rather than a placeholder."""
    name = NAME_SEPARATORS.sub("_", name.strip())
    return (
        bool(SECRET_NAME.search(name))
        and name.lower() not in _SPECIAL_TOKENS
        and not is_placeholder(value)
    )


NAME_SEPARATORS = re.compile(r"[-\s]+")


def env_variable(name: str) -> str:
    """The environment variable a value named `name` would be read from: `X-Api-Key` ->
    `X_API_KEY`."""
    return NAME_SEPARATORS.sub("_", name.strip()).upper()


def is_placeholder(value: str) -> bool:
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
