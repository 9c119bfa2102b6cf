"""Input files fetched from URLs with `rp_download.file`.

The pattern of worker-esrgan and worker-lora_trainer (`rp_download.file(url)`, then the
local path, its type and original name) and of worker-faster_whisper (a URL in the
input). The files come from `FILES_URL`, a server the tests start on 127.0.0.1 serving
`FILES`; the SDK refuses private addresses unless `RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS` is set.
"""

import os

import runpod
from runpod.serverless.utils import rp_download

ENV = {"RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS": "1"}
FILES = {"words.txt": "alpha beta gamma\n"}

FILES_URL = os.environ.get("FILES_URL", "http://127.0.0.1:8000")

CASES = [
    {"input": {"file": "words.txt"}},
    {"input": {"file": "missing.txt"}},  # HTTP 404: raise_for_status raises
]


def handler(job):
    fetched = rp_download.file(f"{FILES_URL}/{job['input']['file']}")
    with open(fetched["file_path"], encoding="utf-8") as file:
        words = file.read().split()
    os.remove(fetched["file_path"])
    return {"type": fetched["type"], "original_name": fetched["original_name"], "words": words}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
