#!/usr/bin/env bash
# Record the example notebooks: run each notebooks/*.ipynb (or the ones named) in place with
# papermill in a fresh kernel, cwd notebooks/, so that the committed notebooks carry their
# %rp_test records (application/vnd.nbworker.run+json) for `nbworker test` to replay. Then
# drop papermill's per-cell and per-notebook metadata (timestamps, durations, paths): noise
# in diffs. In place, not via a copy: export.ipynb exports itself as papermill saves it.
# If a notebook fails, it is put back as it was and the script stops (exit 1).
# Run it after changing a notebook; review the diff of the recorded outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
python=$PWD/.venv/bin/python
cd notebooks
if [ "$#" -gt 0 ]; then
  notebooks=("${@##*/}")
else
  notebooks=(*.ipynb)
fi
backup=$(mktemp -d)
trap 'rm -rf "$backup"' EXIT
for nb in "${notebooks[@]}"; do
  echo "== $nb"
  started=$SECONDS
  cp "$nb" "$backup/$nb"
  if ! "$python" -m papermill --no-progress-bar --log-level WARNING -k python3 "$nb" "$nb"; then
    cp "$backup/$nb" "$nb"
    echo "record_notebooks: $nb failed; left as it was" >&2
    exit 1
  fi
  "$python" - "$nb" <<'PY'
import sys

import nbformat

path = sys.argv[1]
notebook = nbformat.read(path, as_version=4)
notebook.metadata.pop("papermill", None)
for cell in notebook.cells:
    cell.metadata.pop("papermill", None)
    cell.metadata.pop("execution", None)
nbformat.write(notebook, path)
PY
  echo "   recorded in $((SECONDS - started)) s"
done
"$python" ../scripts/show_runs.py "${notebooks[@]}"
