"""Progress reported while a job runs, with `runpod.serverless.progress_update`.

The pattern of runpod-workers/mock-worker and of batch workers by other authors: a
fraction as text ("2/3"), then a dict. Deployed, each update is posted as the job's
IN_PROGRESS output; `--test_input` has no platform to post to, logs that, and goes on.
Both the module attribute and a name imported early are used, as workers do.
"""

import runpod
from runpod.serverless import progress_update

CASES = [
    {"input": {"steps": 3}},
    {"input": {"steps": 0}},  # only the final update
]


def handler(job):
    steps = job["input"].get("steps", 1)
    for step in range(1, steps + 1):
        runpod.serverless.progress_update(job, f"{step}/{steps}")
    progress_update(job, {"stage": "done", "percent": 100})
    return {"steps": steps}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
