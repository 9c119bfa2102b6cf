"""Print the %rp_test runs recorded in executed notebooks, one line each."""

from __future__ import annotations

import json
import sys

import nbformat

RECORD = "application/vnd.nbworker.run+json"


def main(paths: list[str]) -> int:
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
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
