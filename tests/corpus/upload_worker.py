"""Results written to files and handed back as uploads, with no bucket configured.

The patterns of worker-sdxl and worker-comfyui (with `BUCKET_ENDPOINT_URL` set,
`rp_upload.upload_image`; without, the image inline as a base64 data URI), and of
worker-esrgan and worker-kandinsky (`rp_upload` alone). Without bucket credentials the SDK
saves the file locally instead: `upload_image` into `simulated_uploaded/` under a random
name, `upload_in_memory_object` into `local_upload/` under the given name.
"""

import base64
import os

import runpod
from runpod.serverless.utils import rp_cleanup, rp_upload

CASES = [
    {"input": {"name": "tile", "pixels": [0, 255, 128, 64]}},
    {"input": {"name": "empty", "pixels": []}},
]


def handler(job):
    request = job["input"]
    data = bytes(request["pixels"])
    folder = os.path.join("outputs", job["id"])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{request['name']}.png")
    with open(path, "wb") as file:
        file.write(data)

    if os.environ.get("BUCKET_ENDPOINT_URL"):
        inline = None
    else:
        inline = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    uploaded = rp_upload.upload_image(job["id"], path)  # a local path without a bucket
    with open(uploaded, "rb") as file:
        kept = file.read() == data
    stored = rp_upload.upload_in_memory_object(f"{request['name']}.bin", data)
    rp_cleanup.clean([folder])
    return {
        "inline": inline,
        "uploaded_to": os.path.dirname(uploaded),
        "uploaded_suffix": os.path.splitext(uploaded)[1],
        "uploaded_intact": kept,
        "stored": stored,
    }


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
