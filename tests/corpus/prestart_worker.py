"""A prestart hook (runpod 2.0) loads what the handler needs, once, before the first job.

No public worker uses `register_prestart_hook` yet (2.0 is a release candidate); this is
the model-loading-at-start-up pattern of every worker (worker-sdxl's `ModelHandler()`,
worker-faster_whisper's `MODEL.setup()`) moved into a hook.
"""

import runpod

NEEDS = ["register_prestart_hook"]

CASES = [
    {"input": {"word": "beta"}},
    {"input": {"word": "omega"}},
]

VOCABULARY = {}
LOADS = []


def load_vocabulary():
    LOADS.append(len(LOADS) + 1)
    VOCABULARY.update({word: index for index, word in enumerate(["alpha", "beta", "gamma"])})


runpod.serverless.register_prestart_hook(load_vocabulary)


def handler(job):
    word = job["input"]["word"]
    return {"index": VOCABULARY.get(word), "loads": len(LOADS)}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
