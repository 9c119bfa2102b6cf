"""Print the %rp_test runs recorded in executed notebooks, one line each.

    python scripts/show_runs.py NOTEBOOK.ipynb ...

Exit 0; 2 with no notebook named (the usage is printed); 1 when a notebook cannot be read
(one line: `show_runs: error: ...`).
"""

from __future__ import annotations

import json
import sys

RECORD = "application/vnd.nbworker.run+json"
USAGE = "usage: python scripts/show_runs.py NOTEBOOK.ipynb [NOTEBOOK.ipynb ...]"


def main(paths: list[str]) -> int:
    if not paths or any(path in ("-h", "--help") for path in paths):
        out = sys.stdout if paths else sys.stderr  # asked for, or a usage error
        print(
            f"{USAGE}\nPrints the %rp_test runs recorded in each notebook, one line each.", file=out
        )
        return 0 if paths else 2
    import nbformat  # after the usage: its import takes about a second

    for path in paths:
        try:
            notebook = nbformat.read(path, as_version=4)
        except OSError as err:
            print(f"show_runs: error: {path}: {err.strerror or err}", file=sys.stderr)
            return 1
        except Exception as err:  # not JSON, not a notebook: nbformat's many error types
            why = " ".join(str(err).split())[:200]
            print(f"show_runs: error: {path} is not a notebook: {why}", file=sys.stderr)
            return 1
        records = [
            (index, output["data"][RECORD])
            for index, cell in enumerate(notebook.cells)
            for output in cell.get("outputs", [])
            if RECORD in output.get("data", {})
        ]
        print(f"{path}: {len(records)} recorded runs")
        for index, record in records:
            shown = record["error"] if record["status"] != "COMPLETED" else record["output"]
            text = shown if isinstance(shown, str) else json.dumps(shown)
            if record["status"] == "FAILED" and text.startswith("{"):
                text = json.loads(text)["error_message"]
            stream = "" if record["stream"] is None else f" {len(record['stream'])} chunks,"
            print(
                f"  cell {index:>2}  {record['handler']:<8} {record['status']:<10}"
                f"{record['duration_ms']:>9.2f} ms {stream} {text[:70]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
