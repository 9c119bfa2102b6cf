"""What a job's `input` may be: null, empty, text the handler echoes.

The patterns of worker-template (`job_input.get("name", "World")`) and worker-deforum (a
guard for a missing input, which `--test_input` never lets the handler reach: it refuses
`{"input": null}` with "Job has no input parameter. Unable to run." and exits 1).
"""

import runpod

CASES = [
    {"input": None},
    {"input": {}},
    {"input": {"name": "corpus"}},
    {"input": {"name": "\ud800 lone"}},  # a lone surrogate: valid JSON, no valid UTF-8
]


def handler(job):
    job_input = job.get("input")
    if job_input is None:
        return {"error": "INPUT_NOT_PROVIDED"}
    name = job_input.get("name", "World")
    return {"greeting": f"Hello, {name}!", "length": len(name)}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
