"""Configuration read from the environment when the worker starts.

The pattern of nearly every worker: worker-vllm and worker-sglang (`MODEL_NAME`,
`MAX_*` numbers), worker-infinity-embedding (`;`-separated lists), worker-comfyui and
worker-tgi (ports, intervals, flags as "true"/"false"). The cases assume `ENV`.
"""

import os

import runpod

ENV = {
    "MODEL_NAME": "corpus/echo-small",
    "MAX_TOKENS": "4",
    "ALLOWED_MODELS": "corpus/echo-small;corpus/echo-large",
}

MODEL_NAME = os.environ.get("MODEL_NAME", "corpus/echo-tiny")
MAX_TOKENS = int(os.getenv("MAX_TOKENS", "16"))
ALLOWED_MODELS = [name for name in os.getenv("ALLOWED_MODELS", MODEL_NAME).split(";") if name]
LOWERCASE = os.getenv("LOWERCASE", "false").lower() == "true"

CASES = [
    {"input": {"prompt": "One two three four five six"}},  # cut at MAX_TOKENS
    {"input": {"prompt": "hello", "model": "corpus/echo-large"}},
    {"input": {"prompt": "hello", "model": "someone/else"}},  # not in ALLOWED_MODELS
]


def handler(job):
    request = job["input"]
    model = request.get("model") or MODEL_NAME
    if model not in ALLOWED_MODELS:
        return {"error": f"model {model} is not served here (serving: {', '.join(ALLOWED_MODELS)})"}
    words = request["prompt"].split()[:MAX_TOKENS]
    text = " ".join(words)
    return {"model": model, "text": text.lower() if LOWERCASE else text, "tokens": len(words)}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
