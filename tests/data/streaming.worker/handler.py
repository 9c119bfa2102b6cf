"""RunPod worker: the `handler` handler, exported by nbworker from streaming.ipynb.

Models load once, at start-up, before the worker takes jobs. Change the notebook and
export again rather than editing this file.
"""

# --- cell 1: %%model vocab (runs once, when the worker starts)
VOCAB = ["alpha", "beta", "gamma", "delta"]


# --- cell 2: %%handler --aggregate
import asyncio


async def handler(job):
    for word in VOCAB[: job["input"]["n"]]:
        await asyncio.sleep(0)
        yield {"word": word}


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
