"""A handler that ends the process: `sys.exit()` inside a job.

worker-infinity-embedding calls `sys.exit(1)` when its configuration is wrong (at start-up);
a handler doing the same, or raising another BaseException, escapes the SDK's
`except Exception`: `--test_input` exits with that code and prints no result, and a
deployed worker's process ends (the job is lost to a retry).
"""

import sys

import runpod

CASES = [
    {"input": {"code": 3}},
    {"input": {"code": 0}},  # exit 0, and still no result
]


def handler(job):
    code = job["input"]["code"]
    print(f"configuration is wrong, leaving with {code}")
    sys.exit(code)


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
