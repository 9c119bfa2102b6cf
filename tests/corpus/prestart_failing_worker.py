"""A prestart hook (runpod 2.0) that fails: every job fails with the SDK's
`prestart_failed` error and the worker exits 1 (`--test_input` before running the job).
"""

import runpod

NEEDS = ["register_prestart_hook"]

CASES = [{"input": {"word": "beta"}}]


def open_weights():
    with open("/nonexistent/corpus/weights.bin", "rb") as file:
        return file.read()


runpod.serverless.register_prestart_hook(open_weights)


def handler(job):
    return {"word": job["input"]["word"]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
