#!/usr/bin/env bash
# The whole loop on the quickstart notebook: set up .venv (nbworker[demo]: only what the demo
# runs), run notebooks/quickstart.ipynb headless in a fresh kernel (papermill), print the
# runs it recorded, export it as a RunPod worker (build/demo/worker), run that worker's own
# tests under the real runpod SDK, then `nbworker test`: the recorded runs replayed in a
# fresh kernel and against the worker.
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
exec .venv/bin/nbworker test build/demo/quickstart.ipynb --output-dir build/demo/replay \
  --junit-xml build/demo/replay/results.xml
