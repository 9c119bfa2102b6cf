"""Writing the worker directory: atomically, and never over a file edited since the last
export unless asked to. The hashes of what nbworker wrote are kept in a manifest."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nbworker.export.select import ExportError

__all__ = ["MANIFEST", "Written", "write_files"]

MANIFEST = ".nbworker-export.json"


@dataclass
class Written:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    overwritten_edits: list[str] = field(default_factory=list)  # with force


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_files(directory: Path, files: dict[str, str], *, force: bool = False) -> Written:
    """Write `files` (relative path -> text) under `directory`. A file that exists and is
    not what the last export wrote (edited by hand, or never written by nbworker) stops the
    export before anything is written, unless `force`."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        manifest = {}
    result = Written()
    pending: dict[str, bytes] = {}
    edited = []
    for relative, text in sorted(files.items()):
        data = text.encode("utf-8")
        target = directory / relative
        if target.is_file():
            current = _digest(target.read_bytes())
            if current == _digest(data):
                result.unchanged.append(relative)
                continue
            if manifest.get(relative) != current:
                edited.append(relative)
        pending[relative] = data
    if edited and not force:
        raise ExportError(
            f"{', '.join(edited)} in {directory} changed since nbworker last wrote "
            f"{'it' if len(edited) == 1 else 'them'} (or nbworker never did): nothing was "
            "written. Move the change into the notebook, or export with --force to overwrite."
        )
    result.overwritten_edits = edited
    for relative, data in pending.items():
        _atomic_write(directory / relative, data)
        result.written.append(relative)
    hashes = {relative: _digest(text.encode("utf-8")) for relative, text in files.items()}
    record = json.dumps({"files": dict(sorted(hashes.items()))}, indent=2) + "\n"
    if not manifest_path.is_file() or manifest_path.read_text(encoding="utf-8") != record:
        _atomic_write(manifest_path, record.encode("utf-8"))
    return result
