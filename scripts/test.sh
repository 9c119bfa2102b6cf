#!/usr/bin/env bash
# Set up .venv, then run the test suite on runpod 1.12; then, unless a test path was given,
# the suites that put the SDK to work again on runpod 2.0 (scripts/test_sdk2.sh, .venv-rp2).
# Extra arguments go to pytest (e.g. -m "not slow"); NBWORKER_SDK2=0 skips the 2.0 round.
# Tests run on NBWORKER_TEST_WORKERS processes (pytest-xdist; default 4: most slow tests
# wait on kernels and subprocesses, so more processes than the 2 cores of CI pay; 0: this
# process alone). --dist loadfile keeps a file's tests on one process, so a module's
# shared kernel or worker starts once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"  # the venv's python3 kernel first
workers=${NBWORKER_TEST_WORKERS:-4}
parallel=()
if [[ $workers != 0 ]]; then
  parallel=(-n "$workers" --dist loadgroup)
fi
.venv/bin/python -m pytest "${parallel[@]}" "$@"
for argument in "$@"; do
  if [[ $argument == tests* || $argument == *.py* ]]; then
    exit 0  # a run of chosen tests: the 2.0 round is for the whole suite
  fi
done
if [[ ${NBWORKER_SDK2:-1} != 0 ]]; then
  echo "== the SDK suites again, on runpod 2.0 (.venv-rp2)"
  exec bash scripts/test_sdk2.sh "$@"
fi
