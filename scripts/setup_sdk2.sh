#!/usr/bin/env bash
# Set up .venv-rp2: nbworker (editable) on the runpod 2.0 line, with only what the SDK suites
# of scripts/test_sdk2.sh need (no torch, no browser, no hypothesis). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pip_install.sh
runpod_version=2.0.0rc2  # the 2.0 line's newest on the index; pip takes a pre-release only when pinned
venv=.venv-rp2
python=${PYTHON:-python3}
if [[ ! -x $venv/bin/python ]]; then
  echo "setup: creating $venv ($("$python" --version))"
  "$python" -m venv "$venv"
fi
log=$venv/setup.log
# Beyond nbworker's own dependencies: numpy (the sentiment example worker imports it),
# pytest-timeout (pyproject's `timeout` option), pytest-xdist (scripts/test_sdk2.sh runs
# in parallel), ruff (the exported tests are linted).
extras=("numpy>=1.26" "pytest-timeout>=2.3" "pytest-xdist>=3.5" "ruff>=0.6")
: >"$log"
echo "setup: upgrading pip in $venv"
pip_install "$venv/bin/python" "$log" --upgrade pip
echo "setup: installing nbworker and runpod $runpod_version into $venv (about a minute when fresh)"
pip_install "$venv/bin/python" "$log" -e . "runpod==$runpod_version" "${extras[@]}"
installed=$("$venv"/bin/python -c 'from importlib.metadata import version; print(version("runpod"))')
if [[ $installed != "$runpod_version" ]]; then
  echo "setup: $venv has runpod $installed, expected $runpod_version" >&2
  exit 1
fi
echo "setup: $venv ready ($("$venv"/bin/python --version), runpod $installed)"
