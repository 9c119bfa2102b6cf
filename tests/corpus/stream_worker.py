"""A generator handler that streams words, without `return_aggregate_stream`.

The pattern of runpod-workers/mock-worker's generator handler and of token-streaming LLM
workers: each yield is one stream item; deployed, the job's final output is then `[]`
(clients read `/stream`). `--test_input` never iterates a generator, so the SDK's side of
this is its `--rp_serve_api` server and its deployed job loop.
"""

import runpod

CASES = [
    {"input": {"text": "streams come in pieces"}},
    {"input": {"text": ""}},  # no chunks at all
]


def handler(job):
    for position, word in enumerate(job["input"]["text"].split()):
        yield {"position": position, "word": word}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
