#!/usr/bin/env bash
# Set up .venv, then run the test suite. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"  # the venv's python3 kernel first
exec .venv/bin/python -m pytest "$@"
