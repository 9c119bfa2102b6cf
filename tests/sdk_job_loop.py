"""Run the conformance cases through the runpod SDK's deployed job loop.

`python sdk_job_loop.py OUT.json` starts a stand-in for the platform on 127.0.0.1, points
the SDK's result and stream webhooks at it, and for each case in conformance_cases.py
awaits the SDK's own `rp_job.run_job` / `run_job_generator` and `handle_job` (the
function a deployed worker's JobScaler calls per job). It writes, per case, what the
job functions returned, what `handle_job` asked to send, and what reached the platform.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POSTS: list[dict] = []


class Platform(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kind, job_id = self.path.split("?", 1)[0].strip("/").split("/", 1)
        POSTS.append({"kind": kind, "job_id": job_id, "body": json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


async def run_cases(rp_job, cases, comparable) -> dict:
    from runpod.http_client import AsyncClientSession
    from runpod.serverless.modules.rp_handler import is_generator

    sent: list = []
    send_result, stream_result = rp_job.send_result, rp_job.stream_result

    async def record_send(session, job_data, job, is_stream=False):
        sent.append(("done", comparable(job_data)))
        await send_result(session, job_data, job, is_stream=is_stream)

    async def record_stream(session, job_data, job):
        sent.append(("stream", comparable(job_data)))
        await stream_result(session, job_data, job)

    rp_job.send_result, rp_job.stream_result = record_send, record_stream
    results = {}
    async with AsyncClientSession() as session:
        for name, handler, job_input, aggregate in cases:
            job = {"id": f"job-{name}", "input": job_input}
            if is_generator(handler):
                returned = [
                    item async for item in rp_job.run_job_generator(handler, copy.deepcopy(job))
                ]
            else:
                returned = await rp_job.run_job(handler, copy.deepcopy(job))
            del sent[:]
            config = {"handler": handler, "return_aggregate_stream": aggregate}
            await rp_job.handle_job(session, config, copy.deepcopy(job))
            posts = [p for p in POSTS if p["job_id"] == job["id"]]
            results[name] = {
                "job_function": comparable(returned),
                "sent_stream": [data for kind, data in sent if kind == "stream"],
                "sent_result": next((data for kind, data in sent if kind == "done"), None),
                "posted_stream": [p["body"] for p in posts if p["kind"] == "stream"],
                "posted_result": [p["body"] for p in posts if p["kind"] == "done"],
            }
    return results


def main(out_path: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    os.environ["RUNPOD_WEBHOOK_POST_OUTPUT"] = f"{base}/done/$ID?worker=conformance"
    os.environ["RUNPOD_WEBHOOK_POST_STREAM"] = f"{base}/stream/$ID?worker=conformance"
    for variable in ("RUNPOD_POD_ID", "RUNPOD_POD_HOSTNAME", "RUNPOD_WEBHOOK_GET_JOB"):
        os.environ.pop(variable, None)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conformance_cases import CASES, comparable
    from runpod.serverless.modules import rp_job

    results = asyncio.run(run_cases(rp_job, CASES, comparable))
    server.shutdown()
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
