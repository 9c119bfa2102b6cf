#!/usr/bin/env bash
# Set up .venv: nbworker (editable) and one of pyproject's extras, a line per step.
#   bash scripts/setup.sh demo   what scripts/demo.sh runs: nbworker and its dependencies
#                                (papermill, pytest, the runpod SDK), runpod pinned to 1.12.0
#   bash scripts/setup.sh [dev]  everything the tests and CI need (scripts/test.sh): demo,
#                                model (torch 2.13.0, sentence-transformers), JupyterLab,
#                                Playwright, repo2docker, ruff, mypy, ...
# Idempotent: a .venv set up for the same pyproject.toml and extra (dev covers demo) is
# left as it is. pip's output goes to .venv/setup.log, shown whole when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pip_install.sh
extra=${1:-dev}
if [[ $extra != demo && $extra != dev ]]; then
  echo "usage: bash scripts/setup.sh [demo|dev]" >&2
  exit 2
fi
python=${PYTHON:-python3}
# pyproject admits runpod 1.12 and 2.x; this venv stays on the release line (.venv-rp2,
# scripts/setup_sdk2.sh, holds the 2.0 line), so a new runpod release cannot change it unseen.
runpod_version=1.12.0
stamp=.venv/.nbworker-setup  # the extra and the pyproject.toml it was set up for
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv ($("$python" --version))"
  "$python" -m venv .venv
fi
state=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
state="$state runpod==$runpod_version"
if [[ -f $stamp ]] && { grep -qxF "dev $state" "$stamp" || grep -qxF "$extra $state" "$stamp"; }; then
  echo "setup: .venv is up to date for $extra (pyproject.toml unchanged; rm $stamp to install again)"
  exit 0
fi
log=.venv/setup.log
: >"$log"
echo "setup: upgrading pip"
pip_install .venv/bin/python "$log" --upgrade pip
if [[ $extra == demo ]]; then
  echo "setup: installing nbworker[demo] and runpod $runpod_version (about a minute on a fresh .venv)"
else
  echo "setup: installing nbworker[dev] and runpod $runpod_version (several minutes on a fresh .venv: torch, JupyterLab, Playwright, ...)"
fi
pip_install .venv/bin/python "$log" -e ".[$extra]" "runpod==$runpod_version"
echo "$extra $state" >"$stamp"
echo "setup: .venv ready for $extra ($(.venv/bin/python --version), $(.venv/bin/python -m pip --version | cut -d' ' -f1-2), runpod $runpod_version; log: $log)"
