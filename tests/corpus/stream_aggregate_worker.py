"""An async generator handler with `return_aggregate_stream: True`.

The pattern of worker-vllm, worker-sglang and worker-tgi: an OpenAI-style stream of
deltas, each chunk streamed and, deployed, the list of all chunks as the final output
(what `/runsync` answers).
"""

import asyncio

import runpod

CASES = [
    {"input": {"prompt": "count to three", "max_tokens": 3}},
    {"input": {"prompt": "say nothing", "max_tokens": 0}},
]


async def stream_tokens(job):
    request = job["input"]
    for index in range(request["max_tokens"]):
        await asyncio.sleep(0)
        yield {"choices": [{"index": 0, "delta": {"content": f"tok{index}"}}]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": stream_tokens, "return_aggregate_stream": True})
