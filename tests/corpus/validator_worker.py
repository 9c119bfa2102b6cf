"""Input checked against an rp_validator schema before any work is done.

The pattern of worker-faster_whisper, worker-sdxl, worker-kandinsky, worker-lora_trainer
and ashleykleynhans/runpod-worker-a1111: a module-level schema with types, defaults and
constraints; `{"error": errors}` (a list, not a string) when the input does not fit.
"""

import runpod
from runpod.serverless.utils.rp_validator import validate

SCHEMA = {
    "text": {"type": str, "required": True},
    # the SDK skips type and constraint checks for a value of the default's type, so
    # repeat=9 passes; a value of another type still reaches the constraint
    "repeat": {"type": int, "required": False, "default": 1, "constraints": lambda n: 1 <= n <= 5},
    "scale": {"type": float, "required": False, "default": 1.0},
    "lang": {
        "type": str,
        "required": False,
        "default": None,
        "constraints": lambda code: code in ("en", "fr"),
    },
}

CASES = [
    {"input": {"text": "hi", "repeat": 2, "scale": 3}},  # defaults filled, int -> float
    {"input": {"text": "hi", "repeat": 9}},  # passes: the default's type skips the checks
    {"input": {"repeat": 2, "colour": "red"}},  # missing and unexpected keys: two errors
    {"input": {"text": "hi", "lang": "de"}},  # constraint not met
    {"input": {"text": "hi", "repeat": "two"}},  # the constraint itself raises TypeError
]


def handler(job):
    checked = validate(job["input"], SCHEMA)
    if "errors" in checked:
        return {"error": checked["errors"]}
    args = checked["validated_input"]
    words = [args["text"]] * args["repeat"]
    return {"text": " ".join(words), "scale": args["scale"], "lang": args["lang"] or "en"}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
