"""The worker's `README.md`: what it does, its input and output, how to test and ship it.

Made from the notebook (title and description, as hub.json has them), the recorded cases
(a few, each JSON cut to a bounded size: an embedding's vectors would fill pages), the
environment variables handler.py reads, and RunPod's documented ways to deploy a worker
folder. The Hub shows this file too (`README.md` at the root). It holds recorded outputs,
so export scans it for credentials like every file it writes.

Pure: same input, byte-identical text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EXAMPLES_SHOWN", "JSON_SHOWN", "worker_readme"]

EXAMPLES_SHOWN = 3  # recorded cases shown; the rest are in tests/cases.json
JSON_SHOWN = 600  # characters of one JSON value shown, the rest cut with a count
CHUNKS_SHOWN = 5  # chunks of a recorded stream shown


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > JSON_SHOWN:
        more = len(text) - JSON_SHOWN
        text = f"{text[:JSON_SHOWN]} ... ({more:,} more characters)"
    return text


def _fenced(text: str, language: str = "json") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{language}\n{text}\n{fence}\n"


def _cell(text: str) -> str:
    """Text fit for a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _examples(cases: Sequence[Mapping[str, Any]], *, streaming: bool) -> list[str]:
    if not cases:
        return [
            "No run of the handler is recorded in the notebook yet: run it with `%rp_test` "
            "there and export again to get examples, `test_input.json` and the tests.\n"
        ]
    completed = [case for case in cases if case["status"] == "COMPLETED"]
    failed = [case for case in cases if case["status"] != "COMPLETED"]
    shown = (completed[: EXAMPLES_SHOWN - 1] + failed[:1])[:EXAMPLES_SHOWN]
    if len(shown) < EXAMPLES_SHOWN:
        shown += [case for case in cases if case not in shown][: EXAMPLES_SHOWN - len(shown)]
    shown.sort(key=lambda case: int(str(case["name"]).rsplit("-", 1)[-1]))
    parts = [
        f"Runs recorded in the notebook ({len(shown)} of {len(cases)}; all of them are in "
        "`tests/cases.json`, and `tests/` replays each against `handler.py`). A job is "
        '`{"input": ...}`, as RunPod\'s `/run` and `/runsync` take it.\n'
    ]
    for case in shown:
        status = case["status"]
        parts.append(f"### {case['name']}: {status}\n")
        parts.append("Job:\n\n" + _fenced(_json(case["job"])))
        stream = case.get("stream")
        if streaming and stream:
            total = case.get("stream_total", len(stream))
            shown_chunks = stream[:CHUNKS_SHOWN]
            which = "" if len(shown_chunks) == total else f", the first {len(shown_chunks)}"
            parts.append(
                f"Streamed {total} chunk{'s' if total != 1 else ''} (`/stream/{{id}}`){which}:"
                "\n\n" + _fenced("\n".join(_json(chunk) for chunk in shown_chunks))
            )
        if status == "COMPLETED":
            parts.append("Output:\n\n" + _fenced(_json(case["output"])))
        else:
            error = case.get("error")
            parts.append("Error (the job is FAILED):\n\n" + _fenced(_json(error)))
            if case.get("output") is not None:
                parts.append("Output beside the error:\n\n" + _fenced(_json(case["output"])))
    return parts


def _environment(env: Sequence[Mapping[str, Any]]) -> list[str]:
    if not env:
        return ["handler.py reads no environment variable of its own.\n"]
    rows = [
        "Set them on the endpoint (console: the endpoint's Settings, Environment Variables; "
        "the Hub asks for them on deploying, from `.runpod/hub.json`). A secret goes in as a "
        "RunPod secret, `{{ RUNPOD_SECRET_name }}`, never as the value itself.\n",
        "| variable | default | what |",
        "| --- | --- | --- |",
    ]
    for entry in env:
        field = entry.get("input", {})
        default = field.get("default")
        shown = f"`{_cell(default)}`" if default is not None else "(none)"
        rows.append(f"| `{entry['key']}` | {shown} | {_cell(field.get('description', ''))} |")
    return ["\n".join(rows) + "\n"]


def worker_readme(
    *,
    title: str,
    description: str | None,
    notebook_name: str,
    handler: str,
    streaming: bool,
    cases: Sequence[Mapping[str, Any]],
    env: Sequence[Mapping[str, Any]],
    runs_on: str,
) -> str:
    """The text of the worker's README.md. `description`: the notebook's first paragraph
    (None: it has none, and the README says what the worker is without it)."""
    kind = "a generator: it streams its output in chunks" if streaming else "one answer a job"
    where = "a GPU" if runs_on == "GPU" else "a CPU"
    sections = [
        f"# {title}\n",
        *([f"{description}\n"] if description else []),
        f"A RunPod serverless worker, exported by nbworker from the notebook `{notebook_name}` "
        f"(a copy is in `tests/`): the handler `{handler}` ({kind}), in `handler.py`; it asks "
        f"for {where} (`.runpod/hub.json`). Change it in the notebook and export again: "
        "`nbworker export` never overwrites a file edited here without `--force`.\n",
        "## Input and output\n",
        *_examples(cases, streaming=streaming),
        "## Environment variables\n",
        *_environment(env),
        "## Run it and its tests locally\n",
        _fenced(
            "python -m venv .venv && . .venv/bin/activate\n"
            "pip install -r requirements.txt 'pytest>=8' 'requests>=2.31'\n"
            "python handler.py                     # runs the job in test_input.json\n"
            'python handler.py --test_input "$(cat test_input.json)"   # exits 1 if it fails\n'
            "python -m pytest tests                # every recorded run, under the runpod SDK",
            "sh",
        ),
        "RunPod's local API server, for `/run`, `/runsync`, `/status/{id}` and "
        "`/stream/{id}` on your machine:\n",
        _fenced(
            "python handler.py --rp_serve_api --rp_api_port 8000\n"
            "curl -s -X POST http://localhost:8000/runsync \\\n"
            "  -H 'Content-Type: application/json' -d @test_input.json",
            "sh",
        ),
        "`tests/test_notebook.py` replays the notebook itself and needs nbworker and "
        "papermill (`pip install -r tests/requirements.txt`); without them it skips. "
        "On GitHub, `.github/workflows/test.yml` runs the same on every push and pull "
        "request: it installs `requirements.txt`, runs `test_input.json` through "
        "`handler.py` and replays the recorded runs.\n",
        "## Put it on GitHub\n",
        "`nbworker export --git` (the default when it makes a new folder) makes this folder a "
        "git repository with a first commit. Create an empty repository on GitHub (no README, "
        "no licence), then:\n",
        _fenced(
            "git remote add origin git@github.com:YOUR-NAME/YOUR-REPOSITORY.git\n"
            "git push -u origin main",
            "sh",
        ),
        "## Deploy it on RunPod\n",
        "Each of RunPod's documented ways takes this folder as it is:\n",
        "1. **GitHub integration.** In the RunPod console, Serverless, New Endpoint, choose "
        "GitHub repo, connect your GitHub account and pick this repository and its branch. "
        "RunPod builds the `Dockerfile` and deploys the image; a new push (or release, as "
        "you choose) builds it again.\n"
        "2. **RunPod Hub.** The Hub lists a repository with `.runpod/hub.json`, "
        "`.runpod/tests.json`, `handler.py`, a `Dockerfile` and this README. Check "
        "`hub.json` (title, description, category, GPU or CPU, the environment variables), "
        "then create a GitHub release (`git tag v0.1.0 && git push origin v0.1.0`, and "
        "publish the release on GitHub); in the console, Hub, Add your repo. RunPod "
        "builds each release and runs the tests of `.runpod/tests.json` before it is "
        "listed.\n"
        "3. **An image, a template and an endpoint.** Build and push the image, then make a "
        "template and a queue endpoint for it, in the console or with nbworker (it needs "
        "`RUNPOD_API_KEY`; `--dry-run` shows what it would create and creates nothing):\n",
        _fenced(
            "docker build --platform linux/amd64 -t YOUR-REGISTRY/YOUR-IMAGE:0.1.0 .\n"
            "docker push YOUR-REGISTRY/YOUR-IMAGE:0.1.0\n"
            "nbworker deploy . --image YOUR-REGISTRY/YOUR-IMAGE:0.1.0 --dry-run",
            "sh",
        ),
        "A deployed endpoint takes the same jobs:\n",
        _fenced(
            "curl -s -X POST https://api.runpod.ai/v2/ENDPOINT_ID/runsync \\\n"
            '  -H "Authorization: Bearer $RUNPOD_API_KEY" \\\n'
            "  -H 'Content-Type: application/json' -d @test_input.json",
            "sh",
        ),
    ]
    text = "\n".join(section.rstrip("\n") + "\n" for section in sections)
    return text
