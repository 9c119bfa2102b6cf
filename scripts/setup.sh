#!/usr/bin/env bash
# Set up .venv with nbworker (editable) and what its tests and demo need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# pyproject admits runpod 1.12 and 2.x; this venv stays on the release line (.venv-rp2,
# scripts/setup_sdk2.sh, holds the 2.0 line), so a new runpod release cannot change it unseen.
runpod_version=1.12.0
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
log=.venv/setup.log
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]' \
         "runpod==$runpod_version"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup failed: see above ($log)" >&2
  exit 1
fi
echo "setup: .venv ready ($(.venv/bin/python --version), $(.venv/bin/python -m pip --version | cut -d' ' -f1-2))"
