#!/usr/bin/env bash
# Set up .venv, then run notebooks/quickstart.ipynb headless in a fresh kernel (papermill)
# and print the runs it recorded. The executed notebook is kept in build/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
mkdir -p build/demo
.venv/bin/python -m papermill --no-progress-bar --log-level WARNING -k python3 \
  notebooks/quickstart.ipynb build/demo/quickstart.ipynb
exec .venv/bin/python scripts/show_runs.py build/demo/quickstart.ipynb
