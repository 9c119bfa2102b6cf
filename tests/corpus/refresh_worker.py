"""`refresh_worker` in the returned dict: the platform restarts the worker after the job.

The patterns of worker-sdxl (refresh after an img2img job, and with every error),
ashleykleynhans/runpod-worker-a1111 (an error, the upstream answer under an `output` key,
and a refresh together), blib-la/runpod-worker-comfy and older worker-comfyui (a
`REFRESH_WORKER` environment flag), and runpod-workers/mock-worker.
"""

import os

import runpod

REFRESH_EVERY_JOB = os.environ.get("REFRESH_WORKER", "false").lower() == "true"

CASES = [
    {"input": {"prompt": "a lighthouse"}},  # refresh_worker False: popped, no stopPod
    {"input": {"prompt": "a lighthouse", "image_url": "in.png"}},  # refresh on success
    {"input": {"prompt": "", "upstream_status": 500}},  # error, output and refresh together
    {"input": {"refresh_only": True}},  # nothing left once the key is popped
]


def handler(job):
    request = job["input"]
    if request.get("refresh_only"):
        return {"refresh_worker": True}
    if request.get("upstream_status"):
        return {
            "error": f"upstream answered HTTP {request['upstream_status']}",
            "output": {"detail": "prompt is empty"},
            "refresh_worker": True,
        }
    img2img = bool(request.get("image_url"))
    return {
        "image": f"render of {request['prompt']}",
        "mode": "img2img" if img2img else "txt2img",
        "refresh_worker": REFRESH_EVERY_JOB or img2img,
    }


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
