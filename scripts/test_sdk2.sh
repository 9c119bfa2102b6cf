#!/usr/bin/env bash
# Set up .venv-rp2 (runpod 2.0 line), then run the suites that put the real SDK to work:
# the SDK's job loop, its local API server, exported workers under it. The main suite
# (scripts/test.sh) covers runpod 1.12. Extra arguments go to pytest (e.g. -k generator).
# In parallel as scripts/test.sh runs (NBWORKER_TEST_WORKERS, default 4; 0: one process).
set -euo pipefail
cd "$(dirname "$0")/.."
# One file a line; add a suite here when it runs the SDK. A listed file that is missing makes
# pytest exit 4, so a renamed suite fails the run instead of dropping out of it.
suites=(
  tests/test_conformance.py        # the SDK's deployed job loop against nbworker's runner
  tests/test_serve_conformance.py  # %rp_serve against the endpoint suite
  tests/test_client.py             # the endpoint suite against the SDK's --rp_serve_api
  tests/test_export.py             # exported workers under the SDK (--test_input, their tests)
  tests/test_export_testfiles.py   # the exported tests/test_handler.py against the SDK
  tests/test_testing.py            # nbworker test: the worker replay under the SDK
  tests/test_pytest_plugin.py      # pytest --nbworker: the same, as pytest items
  tests/test_export_requirements.py  # requirements.txt pins the installed runpod
  tests/test_deploy.py             # nbworker deploy: the SDK's API calls (GraphQL on 1.12, REST on 2.0)
  tests/test_remote_replay.py      # nbworker test --url against the SDK's --rp_serve_api
  tests/test_sdk_features.py       # rp_debugger, progress_update, prestart hooks, log capture
  tests/test_export_sdk_features.py  # concurrency_modifier and prestart hooks, exported
  tests/test_corpus.py             # our corpus workers under the SDK and under nbworker
)
bash scripts/setup_sdk2.sh
export JUPYTER_PATH="$PWD/.venv-rp2/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
workers=${NBWORKER_TEST_WORKERS:-4}
parallel=()
if [[ $workers != 0 ]]; then
  parallel=(-n "$workers" --dist loadgroup)
fi
status=0
.venv-rp2/bin/python -m pytest "${parallel[@]}" "${suites[@]}" "$@" || status=$?
if [[ $status -eq 5 ]]; then  # pytest: no test was collected
  echo "test_sdk2: no test ran under runpod 2.0: that is a failure" >&2
  exit 1
fi
exit "$status"
