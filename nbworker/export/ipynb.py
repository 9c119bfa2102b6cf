"""Notebook files read, checked and written as nbformat does, without importing nbformat.

`import nbformat` imports jsonschema, and where jsonschema's format extras are installed
(JupyterLab's jupyter_events pulls them in) jsonschema imports rfc3987_syntax, which
compiles 38 lark grammars at import: about 0.9 s of every `nbworker export` or `nbworker
test` (jsonschema issue 1428). Jupyter writes nbformat 4, and for it this module does what
`nbformat.reads` and `nbformat.writes` do: lines rejoined on reading and split on writing,
transient fields dropped, cell ids repaired (`nbformat.validator._normalize`), and the
notebook validated against nbformat's own schema file, with fastjsonschema, which nbformat
itself validates with by default. The schema files are found beside nbformat's modules
without importing them. Older versions (1 to 3) are converted by nbformat, imported then.

The functions take and give plain JSON dicts; nbformat's `NotebookNode`s are dicts too.
"""

from __future__ import annotations

import functools
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "dumps",
    "from_disk",
    "loads",
    "normalize",
    "read",
    "schema_problem",
    "upgrade",
]

_JSON_MIME = re.compile(r"application/(.*\+)?json")
_SPLIT_MIMES = ("application/javascript", "image/svg+xml")  # split like text/*
_TYPE_NAMES = {"string": "a string", "array": "a list of strings", "object": "an object"}


def _is_json_mime(mime: str) -> bool:
    return _JSON_MIME.fullmatch(mime) is not None


# ------------------------------------------------------------------ reading


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The notebook in the file `path` (`loads`); OSError if it cannot be read."""
    with open(path, "rb") as file:
        return loads(file.read())


def loads(data: bytes) -> dict[str, Any]:
    """The notebook `data` holds, as nbformat 4 JSON dicts, as `nbformat.reads(..., 4)`
    gives it (without validating it: `schema_problem`). ValueError saying in one line what
    it is instead: not UTF-8, not JSON, not a notebook object, no version nbformat reads,
    cells that are not objects, or an old version nbformat cannot convert."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text (byte {err.start})") from None
    except ValueError as err:  # json.JSONDecodeError
        if not data.strip():
            raise ValueError("the file is empty") from None
        line, column = getattr(err, "lineno", "?"), getattr(err, "colno", "?")
        message = getattr(err, "msg", str(err))
        raise ValueError(f"not JSON ({message} at line {line} column {column})") from None
    except RecursionError:
        raise ValueError("not JSON a notebook can be: nested too deep") from None
    if not isinstance(value, dict):
        raise ValueError(f"it holds a JSON {type(value).__name__}, not an object")
    version = value.get("nbformat")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 4:
        found = "no nbformat version" if version is None else f"nbformat version {version!r}"
        raise ValueError(f"it has {found} (nbformat reads versions 1 to 4)")
    cells = value.get("cells", value.get("worksheets"))
    if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
        # nbformat's own checks iterate them before its schema says a word
        raise ValueError("its cells are not a list of objects")
    return from_disk(normalize(upgrade(value, text)))


def upgrade(value: dict[str, Any], text: str) -> dict[str, Any]:
    """The notebook `value` (parsed from `text`) as nbformat 4; a version 1 to 3 notebook is
    converted by nbformat (imported only then). ValueError (one line) if it cannot be."""
    if value.get("nbformat") == 4:
        return value
    import warnings

    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            converted = nbformat.convert(nbformat.reader.reads(text), 4)
        except Exception as err:  # a shape an old version's converter cannot read
            raise ValueError(f"{type(err).__name__}: {' '.join(str(err).split())}") from None
    return json.loads(nbformat.writes(converted))  # plain JSON, as a v4 file holds it


def normalize(notebook: dict[str, Any]) -> dict[str, Any]:
    """Give each cell of a 4.5+ notebook a unique id, as `nbformat.validate` does before
    validating (a missing or repeated id gets a new random one); in place. What is no
    cell, or an id that is no string, is left for the schema to name."""
    minor = notebook.get("nbformat_minor", 0)
    if not isinstance(minor, int) or minor < 5 or not isinstance(notebook.get("cells"), list):
        return notebook
    seen: set[str] = set()
    for cell in notebook["cells"]:
        if not isinstance(cell, dict) or not isinstance(cell.get("id", ""), str):
            continue
        if "id" not in cell or cell["id"] in seen:
            cell["id"] = uuid.uuid4().hex[:8]  # nbformat's generate_corpus_id
        seen.add(cell["id"])
    return notebook


def from_disk(notebook: dict[str, Any]) -> dict[str, Any]:
    """What `nbformat.reads` keeps of a v4 file's JSON: multi-line text rejoined
    (`rwbase.rejoin_lines`), transient fields dropped (`strip_transient`); in place. Parts
    of a shape the schema does not allow are left as they are, for it to name."""
    for cell in _dicts(notebook.get("cells")):
        if _lines(cell.get("source")):
            cell["source"] = "".join(cell["source"])
        attachments = cell.get("attachments")
        for attachment in attachments.values() if isinstance(attachments, dict) else ():
            _rejoin_bundle(attachment)
        if cell.get("cell_type") == "code":
            for output in _dicts(cell.get("outputs")):
                kind = output.get("output_type", "")
                if kind in ("execute_result", "display_data"):
                    _rejoin_bundle(output.get("data"))
                elif kind and _lines(output.get("text")):
                    output["text"] = "".join(output["text"])
        if isinstance(cell.get("metadata"), dict):
            cell["metadata"].pop("trusted", None)
    if isinstance(notebook.get("metadata"), dict):
        for key in ("orig_nbformat", "orig_nbformat_minor", "signature"):
            notebook["metadata"].pop(key, None)
    return notebook


def _lines(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(line, str) for line in value)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _rejoin_bundle(data: Any) -> None:
    for key, value in list(data.items()) if isinstance(data, dict) else ():
        if _lines(value) and not _is_json_mime(key):
            data[key] = "".join(value)


# ------------------------------------------------------------------ the schema


def _schema_folder() -> Path:
    """nbformat's v4 folder (its schema files), found without importing nbformat."""
    import importlib.util

    spec = importlib.util.find_spec("nbformat")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nbformat is not installed: its schema files are needed")
    return Path(next(iter(spec.submodule_search_locations))) / "v4"


@functools.cache
def _schema(minor: int) -> dict[str, Any]:
    """nbformat's schema for 4.`minor`, as `nbformat.validator.get_validator` picks it: a
    minor newer than nbformat knows gets the latest schema, relaxed (extra properties and
    unknown cell and output types allowed)."""
    folder = _schema_folder()
    exact = folder / f"nbformat.v4.{minor}.schema.json"
    if exact.is_file():
        return json.loads(exact.read_text(encoding="utf-8"))
    latest = json.loads((folder / "nbformat.v4.schema.json").read_text(encoding="utf-8"))
    known = sorted(
        int(path.name.split(".")[2]) for path in folder.glob("nbformat.v4.*.schema.json")
    )
    if not known or minor < known[-1]:
        raise ValueError(f"nbformat has no schema for nbformat 4.{minor}")
    relaxed = _relaxed(latest)
    relaxed["definitions"]["cell"]["oneOf"].append({"$ref": "#/definitions/unrecognized_cell"})
    relaxed["definitions"]["output"]["oneOf"].append({"$ref": "#/definitions/unrecognized_output"})
    return relaxed


def _relaxed(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: True if key == "additionalProperties" else _relaxed(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_relaxed(item) for item in value]
    return value


@dataclass(frozen=True)
class _Checks:
    """The validators of one schema: the notebook with its cells taken as any object, each
    kind of cell with its outputs taken as any object, and each kind of output, compiled
    when first needed. A cell (an output) is valid under the schema's `oneOf` of kinds
    exactly when it is valid as the kind its `cell_type` (`output_type`) names, since each
    kind's schema allows only its own name there: checked that way, a cell is validated
    once, not once per kind, and an error names what is wrong in it rather than that no
    kind matched."""

    schema: dict[str, Any]  # with `cell` and `output` taken as any object
    cells: dict[str | None, str]  # cell_type -> definition; None: unrecognized (4.6+)
    outputs: dict[str | None, str]
    compiled: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def validator(self, ref: str | None) -> Callable[[Any], Any]:
        """The compiled validator of a definition (None: the whole notebook)."""
        key = ref or ""
        if key not in self.compiled:
            import fastjsonschema

            schema = self.schema
            if ref is not None:
                schema = {
                    "$schema": schema.get("$schema"),
                    "$ref": f"#/definitions/{ref}",
                    "definitions": schema["definitions"],
                }
            self.compiled[key] = fastjsonschema.compile(schema)
        return self.compiled[key]


@functools.cache
def _checks(minor: int) -> _Checks:
    schema = _schema(minor)
    definitions = dict(schema["definitions"])
    kinds: dict[str, dict[str | None, str]] = {}
    for what in ("cell", "output"):
        refs = [ref["$ref"].rsplit("/", 1)[1] for ref in definitions[what]["oneOf"]]
        kinds[what] = {
            None if ref == f"unrecognized_{what}" else ref.removesuffix("_cell"): ref
            for ref in refs
        }
        definitions[what] = {"type": "object"}
    return _Checks(dict(schema, definitions=definitions), kinds["cell"], kinds["output"])


def schema_problem(notebook: dict[str, Any]) -> str | None:
    """What in the v4 `notebook` (its JSON as on disk, cell ids normalised) nbformat's
    schema does not allow, in one line; None if it is valid."""
    import fastjsonschema

    minor = notebook.get("nbformat_minor", 0)
    if not isinstance(minor, int) or isinstance(minor, bool) or minor < 0:
        return f"nbformat_minor must be a whole number >= 0, not {json.dumps(minor)}"
    checks = _checks(minor)
    place: list[str] = []
    try:
        checks.validator(None)(notebook)
        for index, cell in enumerate(notebook["cells"]):
            place = ["cells", str(index)]
            ref = _kind(cell, "cell_type", checks.cells)
            if ref is None:
                return _no_kind(cell, "cell_type", checks.cells, place)
            checks.validator(ref)(cell)
            outputs = cell.get("outputs", []) if cell["cell_type"] == "code" else []
            for number, output in enumerate(outputs):
                place = ["cells", str(index), "outputs", str(number)]
                ref = _kind(output, "output_type", checks.outputs)
                if ref is None:
                    return _no_kind(output, "output_type", checks.outputs, place)
                checks.validator(ref)(output)
    except fastjsonschema.JsonSchemaException as err:
        return _described(err, place)
    return None


def _kind(value: dict[str, Any], key: str, kinds: dict[str | None, str]) -> str | None:
    """The definition `value` is to be valid under, by its `key` (`cell_type`); None when
    no kind has that name."""
    kind = value.get(key)
    if isinstance(kind, str) and kind in kinds:
        return kinds[kind]
    return kinds.get(None)  # a newer minor: any other kind is an unrecognized one


def _no_kind(
    value: dict[str, Any], key: str, kinds: dict[str | None, str], place: list[str]
) -> str:
    names = ", ".join(sorted(name for name in kinds if name))
    found = "missing" if key not in value else json.dumps(value[key])
    return f"{_place(place)}: its {key} ({found}) is none of {names}"


def _described(err: Any, where: list[str]) -> str:
    """fastjsonschema's error as one line naming where it is (`cells[3].source`)."""
    path = where + [str(part) for part in (err.path or ["data"])[1:]]
    if err.rule == "oneOf" and isinstance(err.definition, dict):
        types = [option.get("type") for option in err.definition.get("oneOf", [])]
        if types and all(isinstance(kind, str) for kind in types):  # multiline_string
            return f"{_place(path)} must be {' or '.join(_TYPE_NAMES.get(t, t) for t in types)}"
    message = " ".join(str(err.message).split())
    name, _, rest = message.partition(" ")  # fastjsonschema's "data.cells[0] must be ..."
    if not name.startswith("data") or not rest:
        return f"{_place(path)}: {message}"
    return f"{_place(path)} {rest}"


def _place(path: list[str]) -> str:
    text = "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in path).lstrip(".")
    return text or "the notebook"


# ------------------------------------------------------------------ writing


def dumps(notebook: dict[str, Any]) -> str:
    """The v4 notebook as `nbformat.writes` gives it, byte for byte (without a final
    newline, as nbformat): multi-line text split into lines, transient fields dropped,
    keys sorted, one space of indent, non-ASCII kept. `notebook` is left as it is."""
    return json.dumps(
        _on_disk(notebook),
        indent=1,
        sort_keys=True,
        separators=(",", ": "),
        ensure_ascii=False,
        default=_bytes_as_text,
    )


def _bytes_as_text(value: Any) -> Any:
    """nbformat's BytesEncoder: base64 (ASCII) bytes as text."""
    if isinstance(value, bytes):
        return value.decode("ascii")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _on_disk(notebook: dict[str, Any]) -> dict[str, Any]:
    """`rwbase.split_lines` and `strip_transient` of a copy of the notebook, the copy new
    only where they change something (nbformat deep-copies it all first)."""
    cells = []
    for cell in notebook["cells"]:
        cell = dict(cell)
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(True)
        if "attachments" in cell:
            cell["attachments"] = {
                name: _split_bundle(bundle) for name, bundle in cell["attachments"].items()
            }
        if "trusted" in cell.get("metadata", {}):
            cell["metadata"] = {k: v for k, v in cell["metadata"].items() if k != "trusted"}
        if cell.get("cell_type") == "code" and "outputs" in cell:
            cell["outputs"] = [_split_output(output) for output in cell["outputs"]]
        cells.append(cell)
    transient = ("orig_nbformat", "orig_nbformat_minor", "signature")
    metadata = notebook.get("metadata", {})
    return dict(
        notebook,
        cells=cells,
        metadata={key: value for key, value in metadata.items() if key not in transient},
    )


def _split_output(output: dict[str, Any]) -> dict[str, Any]:
    kind = output.get("output_type")
    if kind in ("execute_result", "display_data") and "data" in output:
        return dict(output, data=_split_bundle(output["data"]))
    if kind == "stream" and isinstance(output.get("text"), str):
        return dict(output, text=output["text"].splitlines(True))
    return output


def _split_bundle(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.splitlines(True)
        if isinstance(value, str) and (key.startswith("text/") or key in _SPLIT_MIMES)
        else value
        for key, value in data.items()
    }
