#!/usr/bin/env bash
# The package as a user gets it from PyPI: build the sdist and the wheel (`python -m build`),
# check them (`twine check`, and that LICENSE, CHANGELOG.md and the worker's templates are
# in them), install the wheel into a fresh venv (dependencies from the index), and run
# `nbworker --help` and `nbworker test` on a copy of notebooks/quickstart.ipynb there: its
# recorded runs replayed in a fresh kernel of that venv and against the exported worker.
# Everything goes to a temporary folder, removed at exit; .venv only builds. Needs .venv
# (scripts/setup.sh) and the index. NBWORKER_PACKAGE_TEST=notebook-only skips the worker
# replay.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/nbworker-package.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== package: sdist and wheel"
.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  echo "package_check: python -m build failed" >&2
  exit 1
}
sdists=("$work"/dist/*.tar.gz)
wheels=("$work"/dist/*.whl)
if [[ ${#sdists[@]} -ne 1 || ${#wheels[@]} -ne 1 ]]; then
  echo "package_check: expected one sdist and one wheel in $work/dist" >&2
  exit 1
fi
ls -l "$work/dist"
.venv/bin/python -m twine check --strict "$work"/dist/*

# What the archives must hold: the licence and changelog in the sdist; in the wheel the
# licence, the typing marker and the worker's test files that export copies.
.venv/bin/python - "${sdists[0]}" "${wheels[0]}" <<'PY'
import sys
import tarfile
import zipfile

sdist, wheel = sys.argv[1:]
with tarfile.open(sdist) as archive:
    in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
with zipfile.ZipFile(wheel) as archive:
    in_wheel = set(archive.namelist())
missing = [f"sdist: {name}" for name in ("LICENSE", "CHANGELOG.md", "README.md") if name not in in_sdist]
wanted = ("nbworker/py.typed", "nbworker/compare.py", "nbworker/export/templates/")
missing += [
    f"wheel: {name}" for name in wanted if not any(path.startswith(name) for path in in_wheel)
]
import pathlib  # every template export copies into a worker, each by name

for template in sorted(pathlib.Path("nbworker/export/templates").iterdir()):
    if template.is_file() and f"nbworker/export/templates/{template.name}" not in in_wheel:
        missing.append(f"wheel: nbworker/export/templates/{template.name}")
if not any(path.endswith(".dist-info/licenses/LICENSE") for path in in_wheel):
    missing.append("wheel: .dist-info/licenses/LICENSE")
if missing:
    sys.exit("package_check: missing from the archives: " + ", ".join(missing))
print(f"package: {len(in_sdist)} files in the sdist, {len(in_wheel)} in the wheel")
PY

echo "== package: the wheel in a fresh venv"
"$python" -m venv "$work/venv"
venv=$work/venv
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --quiet)
"${pip[@]}" --upgrade pip >"$work/pip.log" 2>&1 && "${pip[@]}" "${wheels[0]}" >>"$work/pip.log" 2>&1 || {
  cat "$work/pip.log" >&2
  echo "package_check: installing the wheel failed" >&2
  exit 1
}
# From here on nothing of the checkout may be imported: run in the temporary folder, with
# the venv's own python3 kernelspec (ipykernel installs it under the venv's share/jupyter;
# jupyter_client starts it with the interpreter that asks for it, the venv's).
cd "$work"
unset PYTHONPATH
export JUPYTER_PATH=$venv/share/jupyter
export PATH=$venv/bin:$PATH
installed=$("$venv/bin/python" -c 'import nbworker, pathlib; print(pathlib.Path(nbworker.__file__).parent)')
if [[ $installed != "$venv"/* ]]; then
  echo "package_check: nbworker imports from $installed, not from the venv" >&2
  exit 1
fi
"$venv/bin/nbworker" --help
mkdir notebook
cp "$root/notebooks/quickstart.ipynb" notebook/
options=()
if [[ ${NBWORKER_PACKAGE_TEST:-} == notebook-only ]]; then
  options=(--notebook-only)
fi
echo "== package: nbworker test on the quickstart notebook, from the wheel"
"$venv/bin/nbworker" test notebook/quickstart.ipynb --output-dir replay "${options[@]}"
echo "== package: OK ($(basename "${sdists[0]}"), $(basename "${wheels[0]}"))"
