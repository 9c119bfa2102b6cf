#!/usr/bin/env bash
# The whole loop on the quickstart notebook: set up .venv, run notebooks/quickstart.ipynb
# headless in a fresh kernel (papermill), print the runs it recorded, export it as a RunPod
# worker (build/demo/worker), then run that worker's own tests under the real runpod SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
mkdir -p build/demo
echo "== 1. the notebook, headless in a fresh kernel"
.venv/bin/python -m papermill --no-progress-bar --log-level WARNING -k python3 \
  notebooks/quickstart.ipynb build/demo/quickstart.ipynb
.venv/bin/python scripts/show_runs.py build/demo/quickstart.ipynb
echo
echo "== 2. exported as a RunPod worker"
.venv/bin/nbworker export build/demo/quickstart.ipynb -o build/demo/worker --force
echo
echo "== 3. the worker's own tests (handler.py under the runpod SDK; the notebook replayed)"
cd build/demo/worker
exec ../../../.venv/bin/python -m pytest -p no:cacheprovider tests -v
