#!/usr/bin/env bash
# The whole loop on the quickstart notebook: set up .venv (nbworker[demo]: only what the demo
# runs), run notebooks/quickstart.ipynb headless in a fresh kernel (papermill), print the
# runs it recorded, export it as a RunPod worker (build/demo/worker), run that worker's own
# tests under the real runpod SDK, then `nbworker test`: the recorded runs replayed in a
# fresh kernel and against the worker; last, the worker served by the SDK's own local API
# server (`python handler.py --rp_serve_api`) and `nbworker test --url` replaying the same
# runs against it over HTTP, as it would against a deployed endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
mkdir -p build/demo
echo "== 1. the notebook, headless in a fresh kernel (papermill)"
# papermill's API rather than its command, to give it nbworker's kernel manager: the kernel
# talks over Unix sockets, so ipykernel does not warn of unencrypted TCP at its start.
.venv/bin/python - notebooks/quickstart.ipynb build/demo/quickstart.ipynb <<'PY'
import sys

import papermill

from nbworker.testing.execute import AsyncLocalKernelManager

source, target = sys.argv[1:]
papermill.execute_notebook(
    source,
    target,
    kernel_name="python3",
    progress_bar=False,
    kernel_manager_class=AsyncLocalKernelManager,
)
PY
.venv/bin/python scripts/show_runs.py build/demo/quickstart.ipynb
echo
echo "== 2. exported as a RunPod worker"
.venv/bin/nbworker export build/demo/quickstart.ipynb -o build/demo/worker --force
echo
echo "== 3. the worker's own tests (handler.py under the runpod SDK; the notebook replayed)"
(cd build/demo/worker && ../../../.venv/bin/python -m pytest -p no:cacheprovider tests -v)
echo
echo "== 4. nbworker test: every recorded run replayed in a fresh kernel and in the worker"
.venv/bin/nbworker test build/demo/quickstart.ipynb --output-dir build/demo/replay \
  --junit-xml build/demo/replay/results.xml
echo
echo "== 5. the worker as a server (python handler.py --rp_serve_api), the recorded runs replayed against it"
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd build/demo/worker && exec ../../../.venv/bin/python handler.py --rp_serve_api \
  --rp_api_host 127.0.0.1 --rp_api_port "$port" >../server.log 2>&1) &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
if ! .venv/bin/python scripts/wait_for_server.py "http://127.0.0.1:$port" "$server" 60; then
  tail -20 build/demo/server.log >&2
  exit 1
fi
echo "serving on http://127.0.0.1:$port (log: build/demo/server.log)"
.venv/bin/nbworker test build/demo/quickstart.ipynb --url "http://127.0.0.1:$port" \
  --junit-xml build/demo/replay/server.xml
