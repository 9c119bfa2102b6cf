"""The copy of the notebook a worker ships in `tests/`: what its tests need, nothing else.

`tests/test_notebook.py` re-runs the copy with papermill, and `nbworker test` reads the runs
it recorded: both need the cells' sources and the run records (the display_data holding
`application/vnd.nbworker.run+json`, and the panel's display of its runs,
`application/vnd.nbworker.panel+json`). Everything else a notebook carries can hold what
should not ship: a token printed in a stream, shown in an execute_result or a traceback,
kept in widget state, an attachment, or cell metadata. So the copy keeps the sources, the
cells' tags (papermill's `parameters`, nbworker's own), each record (those mimetypes alone),
and of the notebook's metadata its kernelspec and language_info. What it keeps besides
sources and records (`kept_fields`: the cells' ids and tags, that metadata) is scanned for
credentials as the sources and records are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from nbworker.record import PANEL_MIMETYPE, RECORD_MIMETYPE

__all__ = ["kept_fields", "records_text", "trimmed_notebook"]

_KEPT_METADATA = ("kernelspec", "language_info")
_RECORDS = (RECORD_MIMETYPE, PANEL_MIMETYPE)  # an output's data kept in the copy


def trimmed_notebook(notebook: Any) -> dict[str, Any]:
    """A new notebook (JSON dicts, as `nbformat.v4.new_notebook` builds it): `notebook` with
    only what the worker's tests need. A cell without an id gets a random one, as
    nbformat's `new_code_cell` gives it."""
    import uuid

    cells = []
    for raw in notebook["cells"]:
        source = raw["source"] if isinstance(raw["source"], str) else "".join(raw["source"])
        tags = raw.get("metadata", {}).get("tags")
        metadata = {"tags": list(tags)} if isinstance(tags, list) and tags else {}
        cell_id = raw.get("id")
        cell: dict[str, Any] = {
            "id": cell_id if isinstance(cell_id, str) else uuid.uuid4().hex[:8],
            "cell_type": raw["cell_type"] if raw["cell_type"] in ("code", "markdown") else "raw",
            "metadata": metadata,
            "source": source,
        }
        if cell["cell_type"] == "code":
            cell["execution_count"] = None
            cell["outputs"] = [
                {"output_type": "display_data", "metadata": {}, "data": data}
                for _, data in _numbered_records(raw)
            ]
        cells.append(cell)
    kept = notebook.get("metadata", {})
    return {
        "nbformat": 4,
        "nbformat_minor": max(int(notebook.get("nbformat_minor", 5)), 5),  # cell ids: 4.5
        "metadata": {key: kept[key] for key in _KEPT_METADATA if key in kept},
        "cells": cells,
    }


def kept_fields(copy: Any) -> list[tuple[int, str, str]]:
    """(cell index, or -1 for the notebook; "id", "tags" or the metadata's key; text) of
    what the trimmed `copy` keeps besides sources and records, for the secret scan. The ids
    stay: papermill's report and `nbworker test` name cells by them."""
    fields = []
    for index, cell in enumerate(copy["cells"]):
        if "id" in cell:
            fields.append((index, "id", str(cell["id"])))
        tags = cell.get("metadata", {}).get("tags")
        if tags:
            fields.append((index, "tags", _json_lines(tags)))
    for key in _KEPT_METADATA:
        if key in copy["metadata"]:
            fields.append((-1, key, _json_lines(copy["metadata"][key])))
    return fields


def _json_lines(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False, default=repr)


def _numbered_records(cell: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(output index, its records: the output's data under the record mimetypes alone) of
    each output of a cell that holds a run record or a panel's runs."""
    for number, output in enumerate(cell.get("outputs", [])):
        data = output.get("data") if isinstance(output, dict) else None
        if isinstance(data, dict):
            kept = {mimetype: data[mimetype] for mimetype in _RECORDS if mimetype in data}
            if kept:
                yield number, kept


def records_text(notebook: Any) -> list[tuple[int, int, str]]:
    """(cell index, output index, JSON text) of each run record (and each panel's runs) in
    `notebook`, one key a line (so that a finding names a line of it), for the secret scan."""
    return [
        (index, number, _json_lines(record))
        for index, cell in enumerate(notebook["cells"])
        for number, data in _numbered_records(cell)
        for record in data.values()
    ]
