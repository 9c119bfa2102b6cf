"""A handler timed with rp_debugger: `@FunctionTimer` on the handler, `LineTimer` blocks
inside it, the timer object itself given to `start()`.

The pattern of worker-faster_whisper. Each checkpoint name may exist once in the SDK's
process-wide `Checkpoints`; the deployed job loop clears them after every job, so the
second job of a worker works (and so must the second `%rp_test`).
"""

import runpod
from runpod.serverless.utils import rp_debugger

CASES = [
    {"input": {"text": "the quick brown fox"}},
    {"input": {"text": ""}},  # raises inside a LineTimer
    {"input": {"text": "jumps over"}},  # the checkpoints of the two jobs above are gone
]


@rp_debugger.FunctionTimer
def handler(job):
    with rp_debugger.LineTimer("tokenise"):
        words = job["input"]["text"].split()
    with rp_debugger.LineTimer("count"):
        if not words:
            raise ValueError("nothing to count")
        lengths = [len(word) for word in words]
    return {"words": len(words), "longest": max(lengths)}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
