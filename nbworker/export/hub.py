"""`.runpod/hub.json`, RunPod Hub's listing of a worker, made from the notebook and handler.py.

The Hub's publishing guide documents the fields (title, description, type, category, iconUrl,
and a config: runsOn, containerDiskInGb, cpuFlavor or gpuCount and gpuIds,
allowedCudaVersions, env, presets); `hub_problems` checks a document against them, and export
never writes one it finds a problem in. What comes from where:

- title: the notebook's first markdown heading, else its file name; description: the first
  markdown paragraph, else a sentence naming the handler;
- category: the imports of the cells the handler needs (sentence_transformers -> embedding,
  diffusers -> image, whisper -> audio, ...), "language" when none says; the caller may
  choose it;
- config: a GPU when those cells import a CUDA-capable framework (torch, jax, ...), with the
  CUDA versions `.runpod/tests.json` names; else a CPU;
- env: every environment variable handler.py reads under a literal name (`environ.py` reads
  the code), each a field the user fills in when deploying; the variables the platform sets
  itself (RUNPOD_POD_ID ...) left out; a secret-looking name (TOKEN, KEY, SECRET, PASSWORD)
  gets no default and says to use a RunPod secret. A name computed at run time is reported,
  not guessed.

Pure functions: same notebook, byte-identical text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nbworker.export.environ import ENV_NAME, env_entries, environment_reads

__all__ = [
    "CATEGORIES",
    "CPU_FLAVOR",
    "GPU_POOLS",
    "category_of",
    "hub_document",
    "hub_json",
    "hub_problems",
    "needs_gpu",
    "notebook_description",
    "notebook_title",
]

CATEGORIES = ("audio", "embedding", "language", "video", "image")  # the Hub's, as documented
RUNS_ON = ("GPU", "CPU")
INPUT_TYPES = ("string", "number", "boolean", "huggingface")
# RunPod's compute-optimised CPU flavour: a worker with no GPU framework runs there.
CPU_FLAVOR = "cpu3c"
# GPU pools of 24 GB cards: ADA_24 holds the RTX 4090 that .runpod/tests.json tests on.
GPU_POOLS = "ADA_24,AMPERE_24"

# Top-level module -> category, most specific first: an embedding worker imports torch too.
_CATEGORY_MODULES: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "embedding",
        frozenset(
            {"sentence_transformers", "infinity_emb", "fastembed", "FlagEmbedding", "open_clip"}
        ),
    ),
    ("video", frozenset({"decord", "av", "moviepy", "imageio_ffmpeg"})),
    (
        "audio",
        frozenset(
            {
                "whisper",
                "faster_whisper",
                "whisperx",
                "torchaudio",
                "librosa",
                "soundfile",
                "pyannote",
                "speechbrain",
                "TTS",
                "bark",
                "pydub",
            }
        ),
    ),
    (
        "image",
        frozenset(
            {"diffusers", "PIL", "cv2", "torchvision", "timm", "ultralytics", "controlnet_aux"}
        ),
    ),
)
DEFAULT_CATEGORY = "language"
# Frameworks that compute on a GPU when there is one: the worker then asks the Hub for one.
GPU_MODULES = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "jax",
        "jaxlib",
        "tensorflow",
        "cupy",
        "vllm",
        "sglang",
        "diffusers",
        "transformers",
        "sentence_transformers",
        "whisper",
        "faster_whisper",
        "ctranslate2",
        "xformers",
        "bitsandbytes",
        "flash_attn",
        "accelerate",
        "tensorrt",
        "triton",
        "onnxruntime",
        "paddle",
        "mxnet",
        "ultralytics",
        "timm",
        "open_clip",
        "llama_cpp",
        "exllamav2",
    }
)
# Images that pull big wheels or weights into the container get more disk.
_BIG_MODULES = frozenset({"diffusers", "vllm", "sglang", "tensorrt", "exllamav2"})

_CUDA_VERSION = re.compile(r"\d+\.\d+")


# ------------------------------------------------------------------ the notebook's text


def _markdown_cells(notebook: Mapping[str, Any]) -> list[str]:
    texts = []
    for cell in notebook.get("cells", []):
        if isinstance(cell, Mapping) and cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            texts.append(source if isinstance(source, str) else "".join(source))
    return texts


_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1")
_HTML_TAG = re.compile(r"<[^>\n]+>")


def plain_text(markdown: str) -> str:
    """One line of markdown as plain words: links as their text, emphasis and tags away."""
    text = _LINK.sub(r"\1", markdown)
    text = _HTML_TAG.sub("", text)
    for _ in range(3):  # nested emphasis (**`x`**)
        text = _EMPHASIS.sub(r"\2", text)
    return " ".join(text.split())


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("; "))
    if end >= limit // 2:
        return cut[: end + 1]
    return cut[: cut.rfind(" ")].rstrip(",;:") + "..." if " " in cut else cut + "..."


def notebook_title(notebook: Mapping[str, Any], *, notebook_name: str) -> str:
    """The first markdown heading of the notebook, else a title made of its file name."""
    for text in _markdown_cells(notebook):
        fence = False
        for line in text.split("\n"):
            if line.lstrip().startswith(("```", "~~~")):
                fence = not fence
            match = None if fence else _HEADING.match(line)
            if match:
                title = plain_text(match.group(2))
                if title:
                    return _bounded(title, 100)
    stem = notebook_name[: -len(".ipynb")] if notebook_name.endswith(".ipynb") else notebook_name
    words = " ".join(re.split(r"[\s_.-]+", stem)).strip() or "worker"
    return _bounded(words[0].upper() + words[1:], 100)


def notebook_description(notebook: Mapping[str, Any]) -> str | None:
    """The first paragraph of prose in the notebook's markdown, as one plain line."""
    for text in _markdown_cells(notebook):
        paragraph: list[str] = []
        fence = False
        for line in [*text.split("\n"), ""]:
            stripped = line.strip()
            if stripped.startswith(("```", "~~~")):
                fence = not fence
                paragraph = []
                continue
            if fence:
                continue
            prose = stripped and not (
                _HEADING.match(line)
                or stripped.startswith((">", "|", "<", "!["))
                or re.match(r"(?:[-*+]|\d+[.)])(?:\s|$)|---|\*\*\*|___", stripped)
            )
            if prose:
                paragraph.append(stripped)
            elif paragraph:
                words = plain_text(" ".join(paragraph))
                if words:
                    return _bounded(words, 300)
                paragraph = []
            else:
                paragraph = []
    return None


# ------------------------------------------------------------------ inference


def category_of(modules: Iterable[str]) -> str:
    """The Hub category the imported modules point to; "language" when none does."""
    top = {module.split(".")[0] for module in modules}
    for category, names in _CATEGORY_MODULES:
        if top & names:
            return category
    return DEFAULT_CATEGORY


def needs_gpu(modules: Iterable[str]) -> bool:
    """Whether the imported modules include a framework that computes on a GPU."""
    return bool({module.split(".")[0] for module in modules} & GPU_MODULES)


def _disk_gb(top: set[str], gpu: bool) -> int:
    if top & _BIG_MODULES:
        return 40
    return 20 if gpu else 10


def hub_document(
    *,
    notebook: Mapping[str, Any],
    notebook_name: str,
    handler: str,
    handler_source: str,
    modules: Iterable[str],
    cuda_versions: Sequence[str],
    category: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(the hub.json document, notes). `handler_source` is handler.py's text (its env reads);
    `modules` what the cells it came from import; `cuda_versions` those tests.json allows."""
    top = {module.split(".")[0] for module in modules}
    gpu = needs_gpu(top)
    description = notebook_description(notebook) or (
        f"A RunPod serverless worker: the handler `{handler}`, exported by nbworker from "
        f"{notebook_name}."
    )
    config: dict[str, Any] = {"runsOn": "GPU" if gpu else "CPU"}
    config["containerDiskInGb"] = _disk_gb(top, gpu)
    if gpu:
        config["gpuCount"] = 1
        config["gpuIds"] = GPU_POOLS
        config["allowedCudaVersions"] = list(cuda_versions)
    else:
        config["cpuFlavor"] = CPU_FLAVOR
    env, notes = env_entries(environment_reads(handler_source))
    config["env"] = env
    document = {
        "title": notebook_title(notebook, notebook_name=notebook_name),
        "description": description,
        "type": "serverless",
        "category": category or category_of(top),
        "config": config,
    }
    return document, notes


def hub_json(document: Mapping[str, Any]) -> str:
    """The text of `.runpod/hub.json`."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ the documented fields

_TOP = {"title", "description", "type", "category", "iconUrl", "config"}
_CONFIG = {
    "runsOn",
    "containerDiskInGb",
    "cpuFlavor",
    "gpuCount",
    "gpuIds",
    "allowedCudaVersions",
    "env",
    "presets",
}
_INPUT = {
    "name",
    "type",
    "description",
    "default",
    "advanced",
    "options",
    "min",
    "max",
    "trueValue",
    "falseValue",
}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def hub_problems(document: Any) -> list[str]:
    """What in `document` is not what RunPod Hub's publishing guide documents for hub.json
    (required fields, allowed values, types); [] for a valid one."""
    if not isinstance(document, Mapping):
        return [f"hub.json must be an object, not a {type(document).__name__}"]
    problems = [f"unknown field {key!r}" for key in document if key not in _TOP]
    for key in ("title", "description"):
        if not _text(document.get(key)):
            problems.append(f"{key} must be a non-empty string")
    if document.get("type") != "serverless":
        problems.append(f'type must be "serverless", not {document.get("type")!r}')
    if document.get("category") not in CATEGORIES:
        problems.append(
            f"category must be one of {', '.join(CATEGORIES)}, not {document.get('category')!r}"
        )
    if "iconUrl" in document and not (
        isinstance(document["iconUrl"], str) and re.fullmatch(r"https?://\S+", document["iconUrl"])
    ):
        problems.append("iconUrl must be an http(s) URL")
    config = document.get("config")
    if not isinstance(config, Mapping):
        return [*problems, "config must be an object"]
    return problems + _config_problems(config)


def _config_problems(config: Mapping[str, Any]) -> list[str]:
    problems = [f"unknown field config.{key}" for key in config if key not in _CONFIG]
    runs_on = config.get("runsOn")
    if runs_on not in RUNS_ON:
        problems.append(f'config.runsOn must be "GPU" or "CPU", not {runs_on!r}')
    if not _positive_int(config.get("containerDiskInGb")):
        problems.append("config.containerDiskInGb must be a positive integer (GB)")
    if runs_on == "CPU" and not _text(config.get("cpuFlavor")):
        problems.append("config.cpuFlavor is required when runsOn is CPU")
    if runs_on == "GPU":
        if not _positive_int(config.get("gpuCount")):
            problems.append("config.gpuCount must be a positive integer when runsOn is GPU")
        if not _text(config.get("gpuIds")):
            problems.append("config.gpuIds (comma-separated GPU pools) is required for a GPU")
    if "allowedCudaVersions" in config:
        versions = config["allowedCudaVersions"]
        if not isinstance(versions, list) or not all(
            isinstance(v, str) and _CUDA_VERSION.fullmatch(v) for v in versions
        ):
            problems.append('config.allowedCudaVersions must be a list of "X.Y" strings')
    if "env" in config:
        problems += _env_problems(config["env"])
    if "presets" in config:
        presets = config["presets"]
        if not isinstance(presets, list) or not all(
            isinstance(preset, Mapping)
            and _text(preset.get("name"))
            and isinstance(preset.get("defaults"), Mapping)
            for preset in presets
        ):
            problems.append("config.presets must be a list of {name, defaults} objects")
    return problems


def _env_problems(env: Any) -> list[str]:
    if not isinstance(env, list):
        return ["config.env must be a list"]
    problems = []
    seen: set[str] = set()
    for number, entry in enumerate(env):
        where = f"config.env[{number}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where} must be an object")
            continue
        key = entry.get("key")
        if not (isinstance(key, str) and ENV_NAME.fullmatch(key)):
            problems.append(f"{where}.key must be an environment variable name")
        elif key in seen:
            problems.append(f"{where}: {key} is listed twice")
        else:
            seen.add(key)
        unknown = set(entry) - {"key", "value", "input"}
        problems += [f"unknown field {where}.{name}" for name in sorted(unknown)]
        if ("value" in entry) == ("input" in entry):
            problems.append(f"{where} needs exactly one of value and input")
        elif "value" in entry:
            if not isinstance(entry["value"], (str, int, float, bool)):
                problems.append(f"{where}.value must be a string, number or boolean")
        else:
            problems += _input_problems(entry["input"], f"{where}.input")
    return problems


def _input_problems(field_: Any, where: str) -> list[str]:
    if not isinstance(field_, Mapping):
        return [f"{where} must be an object"]
    problems = [f"unknown field {where}.{name}" for name in sorted(set(field_) - _INPUT)]
    kind = field_.get("type")
    if kind not in INPUT_TYPES:
        problems.append(f"{where}.type must be one of {', '.join(INPUT_TYPES)}, not {kind!r}")
    for key in ("name", "description"):
        if not _text(field_.get(key)):
            problems.append(f"{where}.{key} must be a non-empty string")
    if "default" in field_:
        default = field_["default"]
        fits = {
            "number": _number(default),
            "boolean": isinstance(default, bool),
        }.get(str(kind), isinstance(default, str))
        if not fits:
            problems.append(f"{where}.default does not fit its type {kind!r}")
    if "advanced" in field_ and not isinstance(field_["advanced"], bool):
        problems.append(f"{where}.advanced must be true or false")
    if "options" in field_:
        options = field_["options"]
        if not isinstance(options, list) or not all(
            isinstance(o, Mapping) and _text(o.get("label")) and "value" in o for o in options
        ):
            problems.append(f"{where}.options must be a list of {{label, value}} objects")
    for key in ("min", "max"):
        if key in field_ and not _number(field_[key]):
            problems.append(f"{where}.{key} must be a number")
    return problems
