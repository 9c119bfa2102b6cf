"""RunPod worker: the `handler` handler, exported by nbworker from sentiment.ipynb.

Models load once, at start-up, before the worker takes jobs. Change the notebook and
export again rather than editing this file.
"""

# --- cell 2
import numpy as np


# --- cell 3: %%model lexicon (runs once, when the worker starts)
LEXICON = {"love": 2.0, "great": 1.5, "good": 1.0, "bad": -1.0, "awful": -2.0}
WEIGHTS = np.array(list(LEXICON.values()))


# --- cell 6
import logging

logging.getLogger(__name__).info("sentiment worker starting")


# --- cell 7
def tokenize(text):
    return [word.strip(".,!?").lower() for word in text.split()]


# --- cell 8: %%handler
from runpod.serverless.utils.rp_validator import validate

SCHEMA = {"text": {"type": str, "required": True}}


def handler(job):
    validated = validate(job["input"], SCHEMA)
    if "errors" in validated:
        return {"error": "; ".join(validated["errors"])}
    words = tokenize(validated["validated_input"]["text"])
    score = float(np.sum([LEXICON.get(word, 0.0) for word in words]))
    return {"label": "positive" if score > 0 else "negative", "score": score}


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler})
