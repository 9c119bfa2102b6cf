"""An async generator that reports failure by yielding `{"error": ...}` and returning.

The pattern of worker-vllm (an OpenAI-style error object as the error) and worker-sglang
(a message string after an upstream failure), with `return_aggregate_stream`. Deployed, the
first chunk with a truthy `error` ends the stream and fails the job with `str(error)`; a
generator that raises fails it with the SDK's "handler: ... traceback: ..." text. The
local `--rp_serve_api` server does neither: it lists the error chunk as output.
"""

import runpod

CASES = [
    {"input": {"route": "/v1/completions", "tokens": ["a", "b"]}},
    {"input": {"route": "/v1/unknown"}},  # an error object before any chunk
    {"input": {"route": "/v1/completions", "tokens": ["a", "b"], "fail_after": 1}},
    {"input": {"route": "/v1/completions", "tokens": ["a"], "raise_after": 1}},
]

ROUTES = ("/v1/completions", "/v1/chat/completions")


def _error(message):
    return {"error": {"message": message, "type": "worker_error", "code": None}}


async def handler(job):
    request = job["input"]
    if request.get("route") not in ROUTES:
        yield _error(f"unsupported route {request.get('route')!r}")
        return
    for count, token in enumerate(request.get("tokens", []), start=1):
        yield {"text": token}
        if count == request.get("fail_after"):
            yield {"error": f"upstream closed the stream after {count} token(s)"}
            return
        if count == request.get("raise_after"):
            raise ConnectionError("upstream went away")


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
