"""The checks of what `nbworker deploy` sends: names, image references, GPU ids, numbers,
env values, secret names. Each failure is a one-line DeployError naming the option.

runpod 1.12 writes every string into GraphQL text unescaped (`name: "{name}"`), so a `"`, a
`\\` or a control character would change the query: they are refused, not escaped (runpod 2
sends JSON, where an escape would arrive as written)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbworker.errors import DeployError

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
SECRET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
SECRET_REF = re.compile(r"\{\{ RUNPOD_SECRET_[A-Za-z0-9][A-Za-z0-9_-]* \}\}")
SECRET_KEY = re.compile(r"(?i)(?:^|_)(?:KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
GPU = re.compile(r"-?[A-Za-z0-9](?:[A-Za-z0-9 _.-]{0,62}[A-Za-z0-9])?")
ENDPOINT = re.compile(r"[A-Za-z0-9_-]{1,64}")
CUDA = re.compile(r"\d{1,2}\.\d{1,2}")
# docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest]
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
IMAGE = re.compile(
    rf"(?:{_HOST}(?:\.{_HOST})*(?::[0-9]+)?/)?{_PART}(?:/{_PART})*"
    r"(?::\w[\w.-]{0,127})?(?:@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,})?"
)


def env_key(key: Any, option: str) -> None:
    checked(key, ENV_KEY, f"{option} {key!r}", "a variable name: letters, digits, '_'")


def env_value(key: str, value: Any, option: str) -> str:
    env_key(key, option)
    if not isinstance(value, str):
        raise DeployError(f"{option} {key}: not a string: {value!r}", option=option)
    if SECRET_REF.fullmatch(value):
        return value  # a secret's reference, written out by hand
    sendable(value, f"{option} {key}")
    if SECRET_KEY.search(key) or flagged(key, value):
        raise DeployError(
            f"{option} {key}: a secret's value is never sent as one; make it a RunPod secret "
            f"and pass --secret {key}=SECRET_NAME",
            option="--env",
        )
    return value


def flagged(key: str, value: str) -> bool:
    """Whether export's secret scan flags `KEY = "value"`."""
    from nbworker.export.secrets import find_secrets

    return bool(find_secrets([(0, f"{key} = {json.dumps(value)}")]))


def pairs(words: Sequence[str], option: str) -> dict[str, str]:
    """`KEY=VALUE` words as a dict; each key once."""
    found: dict[str, str] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise DeployError(f"{option} {short(word)!r}: write KEY=VALUE", option=option)
        if key in found:
            raise DeployError(f"{option} {key}: given twice", option=option)
        found[key] = value
    return found


def check_image(image: Any) -> None:
    if not isinstance(image, str) or len(image) > 255 or not IMAGE.fullmatch(image):
        raise DeployError(
            f"--image {short(str(image))!r}: not an image reference "
            "([registry/]name[:tag][@sha256:digest], lowercase, no spaces)",
            option="--image",
        )


def gpu_ids(words: Sequence[str], option: str) -> str:
    ids = [part.strip() for word in words for part in word.split(",")]
    for gpu in ids:
        checked(gpu, GPU, option, "a GPU pool (AMPERE_24) or type (NVIDIA GeForce RTX 4090)")
    return ",".join(ids)


def checked(value: Any, pattern: re.Pattern[str], option: str, rule: str) -> Any:
    if value is not None and (not isinstance(value, str) or not pattern.fullmatch(value)):
        raise DeployError(f"{option}: {short(str(value))!r} is not valid ({rule})", option=option)
    return value


def sendable(value: str, option: str) -> None:
    bad = sorted({c for c in value if c in '"\\' or not c.isprintable()})
    if bad:
        raise DeployError(
            f"{option}: the SDK cannot send {''.join(bad)!r} (it writes values into "
            "GraphQL text unescaped)",
            option=option.split()[0],
        )


def number(value: Any, option: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DeployError(
            f"{option} must be a whole number >= {least}, not {value!r}", option=option
        )
    return value


def name_of(path: Path) -> str:
    """An endpoint name from a source's file or folder name."""
    stem = path.resolve().stem if path.suffix == ".ipynb" else path.resolve().name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._")[:50]
    return name or "nbworker"


def short(text: Any, limit: int = 120) -> str:
    """`text` on one line, at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cuda_version(value: Any) -> bool:
    """Whether `value` is a CUDA version as hub.json lists them ("12.4")."""
    return isinstance(value, str) and CUDA.fullmatch(value) is not None


def mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (what hub.json or /health left out)."""
    return value if isinstance(value, dict) else {}
