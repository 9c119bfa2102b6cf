# Sourced by scripts/setup.sh and scripts/setup_sdk2.sh, not run: `pip_install PYTHON LOG
# ARGS...` runs `PYTHON -m pip install ARGS...` with its whole output appended to LOG, and
# prints a line for each package pip collects (a fresh venv's install is minutes long, and
# should not be silent) and one when it installs them. On failure: the log, and status 1.
pip_install() {
  local python=$1 log=$2 line name version status
  shift 2
  set +e
  "$python" -m pip install --disable-pip-version-check "$@" 2>&1 | tee -a "$log" | {
    while IFS= read -r line; do
      case $line in
        "Collecting "*) line=${line#Collecting }; echo "setup:   + ${line%% (from *}" ;;
        "Processing "*) # a file of a local index or --find-links: name-version-...whl
          line=${line#Processing }; line=${line%% (from *}; line=${line##*/}
          IFS=- read -r name version _ <<<"${line%.tar.gz}"
          echo "setup:   + $name==${version%.whl}" ;;
        "Installing collected packages: "*)
          line=${line#Installing collected packages: }
          echo "setup:   installing $(($(tr -cd , <<<"$line" | wc -c) + 1)) package(s)" ;;
      esac
    done
  }
  status=${PIPESTATUS[0]}
  set -e
  if [[ $status -ne 0 ]]; then
    cat "$log" >&2
    echo "setup failed: pip install $* (exit $status; the log above is $log)" >&2
    return 1
  fi
}
