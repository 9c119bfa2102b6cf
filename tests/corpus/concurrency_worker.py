"""An async handler whose worker runs several jobs at once, sized from the environment.

The pattern of worker-vllm, worker-sglang, worker-infinity-embedding and
runpod-workers/mock-worker: `concurrency_modifier` in the start config returns a number
read from `MAX_CONCURRENCY`. Deployed, the SDK calls it to size the worker;
`--test_input` and `--rp_serve_api` never call it.
"""

import asyncio
import os

import runpod

ENV = {"MAX_CONCURRENCY": "3"}

CASES = [
    {"input": {"texts": ["a", "bb", "ccc"]}},
    {"input": {"texts": []}},
]


def concurrency_modifier(current_concurrency):
    return int(os.environ.get("MAX_CONCURRENCY", current_concurrency))


async def embed_one(text):
    await asyncio.sleep(0)
    return [len(text), text.count("a")]


async def handler(job):
    vectors = await asyncio.gather(*(embed_one(text) for text in job["input"]["texts"]))
    return {"data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "concurrency_modifier": concurrency_modifier})
