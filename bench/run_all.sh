#!/usr/bin/env bash
# Run the benchmarks one after the other, then print one table of all their figures, each
# beside its goal (OK / MISSED), and a line per script.
#
#   bash bench/run_all.sh                        # bench_core bench_cache bench_serve
#                                                # bench_export bench_test gpu_check
#   bash bench/run_all.sh --quick                # --quick passed to each
#   bash bench/run_all.sh bench_core gpu_check   # some of them (names in bench/, or paths)
#
# Each script writes its final table's rows to $NBWORKER_BENCH_ROWS (bench/common.py's
# print_table); `python bench/common.py --summary FILE` prints them as one table. A script
# that fails (BENCHMARK CHECK FAILED, a crash: any non-zero exit) shows as FAILED with the
# line that says why; the others still run, and this script then exits 1. The scripts'
# output is kept in a log each, beside the rows, in $NBWORKER_BENCH_LOGS (default: a new
# temporary folder, named at the end). PYTHON: the interpreter (default: .venv/bin/python).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}
if [[ ! -x $python ]]; then
  echo "run_all.sh: no interpreter at $python: run scripts/setup.sh, or set PYTHON" >&2
  exit 2
fi
quick=()
scripts=()
for arg in "$@"; do
  case $arg in
    --quick) quick=(--quick) ;;
    -h | --help)
      sed -n '2,15p' "$0" | cut -c3-
      exit 0
      ;;
    -*)
      echo "run_all.sh: unknown option $arg (see --help)" >&2
      exit 2
      ;;
    *) scripts+=("$arg") ;;
  esac
done
if ((${#scripts[@]} == 0)); then
  scripts=(bench_core bench_cache bench_serve bench_export bench_test gpu_check)
fi

logs=${NBWORKER_BENCH_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/nbworker-bench.XXXXXX")}
mkdir -p "$logs"
rows=$logs/rows.jsonl
: >"$rows"
export NBWORKER_BENCH_ROWS=$rows PYTHONUNBUFFERED=1
# Kernels the scripts start run this interpreter: its environment's kernelspec comes first.
JUPYTER_PATH="$("$python" -c 'import sys; print(sys.prefix)')/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
export JUPYTER_PATH
trap 'echo "run_all.sh: interrupted; rows so far in $rows" >&2; exit 130' INT TERM

status() { # status NAME EXIT LOG: the script's exit status, as a line of the rows file
  "$python" -c 'import json, sys
print(json.dumps({"script": sys.argv[1], "exit": int(sys.argv[2]), "log": sys.argv[3]}))' \
    "$@" >>"$rows"
}

failed=0
for script in "${scripts[@]}"; do
  case $script in
    */* | *.py) path=$script name=$(basename "$script" .py) ;;
    *) path=$here/$script.py name=$script ;;
  esac
  log=$logs/$name.log
  if [[ ! -f $path ]]; then
    echo "run_all.sh: no bench script $path" | tee "$log" >&2
    status "$name" 127 "$log"
    failed=1
    continue
  fi
  echo "== $name ${quick[*]:-} (load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a))"
  start=$SECONDS
  NBWORKER_BENCH_SCRIPT=$name "$python" "$path" ${quick[@]+"${quick[@]}"} 2>&1 | tee "$log"
  code=${PIPESTATUS[0]}
  echo "== $name: exit $code after $((SECONDS - start)) s"
  echo
  status "$name" "$code" "$log"
  ((code == 0)) || failed=1
done

"$python" "$here/common.py" --summary "$rows" || failed=1
echo "logs and rows: $logs"
exit "$failed"
