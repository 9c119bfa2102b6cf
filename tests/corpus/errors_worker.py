"""The ways real workers report failure from a plain handler.

worker-comfyui: `{"error": "...", "details": [...]}` (the details stay in the output);
worker-sdxl-turbo: the validator's errors folded into one message; worker-esrgan:
`{"errors": [...]}`, and worker-infinity-embedding: an OpenAI-style error object
(`{"object": "error", "message": ...}`), neither of which is an error to RunPod (the job
COMPLETES); worker-vllm: an exception from input parsing (RunPod's error JSON).
"""

import runpod

CASES = [
    {"input": {"mode": "details"}},
    {"input": {"mode": "folded"}},
    {"input": {"mode": "plural"}},
    {"input": {"mode": "openai"}},
    {"input": {"mode": "raise"}},
]


def parse_request(request):
    if "messages" not in request and "prompt" not in request:
        raise ValueError("input needs one of: messages, prompt")
    return request


def handler(job):
    mode = job["input"]["mode"]
    problems = ["node 4: missing model", "node 7: bad seed"]
    if mode == "details":
        return {"error": "Job processing failed", "details": problems}
    if mode == "folded":
        return {"error": f"Input validation failed: {problems}"}
    if mode == "plural":
        return {"errors": problems}
    if mode == "openai":
        return {"object": "error", "message": problems[0], "type": "BadRequestError", "code": 400}
    return parse_request(job["input"])


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
