#!/usr/bin/env bash
# Set up .venv with nbworker (editable) and what its tests and demo need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
log=.venv/setup.log
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup failed: see above ($log)" >&2
  exit 1
fi
echo "setup: .venv ready ($(.venv/bin/python --version), $(.venv/bin/python -m pip --version | cut -d' ' -f1-2))"
