"""Notebook files read and written without importing nbformat (`nbworker.export.ipynb`),
held against nbformat itself: the same notebook read, the same bytes written, the same
notebooks refused (nbformat's own verdict, on notebooks mutated at random), each refusal
one line naming where; and the command line neither imports jsonschema nor nbformat to
export a notebook or to refuse an invalid one."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from nbworker.export import ipynb

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(
    [*(ROOT / "tests" / "data").glob("*.ipynb"), *(ROOT / "notebooks").glob("*.ipynb")]
)
HEAVY = ("jsonschema", "nbformat", "papermill", "rfc3987_syntax", "nbclient")


def examples(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def varied() -> Any:
    """A notebook with a bit of everything nbformat's reader and writer treat apart."""
    code = new_code_cell("print('a')\nx = 1\n", metadata={"tags": ["parameters"]})
    code.outputs = [
        new_output("stream", name="stdout", text="a\nb\n"),
        new_output("stream", name="stderr", text="warn\n"),
        new_output(
            "display_data",
            data={
                "text/plain": "line 1\nline 2",
                "text/html": "<b>x</b>\n<i>y</i>",
                "image/svg+xml": "<svg>\n</svg>",
                "application/json": {"k": ["v\n", 1]},
                "application/vnd.nbworker.run+json": {"handler": "h", "output": "a\nb"},
            },
            metadata={"isolated": True},
        ),
        new_output("execute_result", data={"text/plain": "1"}, execution_count=3),
        new_output("error", ename="ValueError", evalue="bad\nvalue", traceback=["t1", "t2"]),
    ]
    code.execution_count = 3
    markdown = new_markdown_cell("# Title\n\nnon-ASCII: é ✓ \u2028 end")
    markdown.attachments = {"a.png": {"image/png": "iVBORw0KGgo=", "text/plain": "x\ny"}}
    nb = new_notebook(cells=[markdown, code, new_raw_cell("raw\ntext")])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


# ------------------------------------------------------------------ reading and writing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_reading_and_writing_is_nbformats(path: Path) -> None:
    data = path.read_bytes()
    ours = ipynb.loads(data)
    theirs = nbformat.reads(data.decode(), as_version=4)
    assert ours == json.loads(json.dumps(theirs))
    assert ipynb.schema_problem(ours) is None
    assert ipynb.dumps(ours) == nbformat.writes(theirs)


def test_a_notebook_of_every_kind_of_output_round_trips_as_nbformat_writes_it() -> None:
    nb = varied()
    plain = json.loads(json.dumps(nb))
    before = copy.deepcopy(plain)
    text = ipynb.dumps(plain)
    assert text == nbformat.writes(nb)
    assert plain == before  # dumps changes nothing of what it writes
    assert ipynb.loads(text.encode()) == json.loads(json.dumps(nbformat.reads(text, 4)))


def test_transient_fields_are_dropped_and_old_versions_converted() -> None:
    nb = varied()
    nb.metadata["signature"] = "sha256:..."
    nb.metadata["orig_nbformat"] = 3
    nb.cells[1].metadata["trusted"] = True
    read = ipynb.loads(nbformat.writes(nb).encode())
    assert "signature" not in read["metadata"] and "orig_nbformat" not in read["metadata"]
    assert "trusted" not in read["cells"][1]["metadata"]

    from nbformat import v3

    old = v3.new_notebook(worksheets=[v3.new_worksheet(cells=[v3.new_code_cell(input="x = 1")])])
    converted = ipynb.loads(nbformat.writes(old, version=3).encode())
    assert converted["nbformat"] == 4 and converted["cells"][0]["source"] == "x = 1"
    assert ipynb.schema_problem(converted) is None


def test_missing_and_repeated_cell_ids_are_repaired_as_nbformat_repairs_them() -> None:
    nb = json.loads(nbformat.writes(varied()))
    del nb["cells"][0]["id"]
    nb["cells"][2]["id"] = nb["cells"][1]["id"]
    read = ipynb.loads(json.dumps(nb).encode())
    ids = [cell["id"] for cell in read["cells"]]
    assert len(set(ids)) == 3 and ids[1] == nb["cells"][1]["id"]
    assert ipynb.schema_problem(read) is None
    nb["nbformat_minor"] = 4  # before 4.5 cells have no ids: none is added
    for cell in nb["cells"]:
        cell.pop("id", None)
    assert all("id" not in cell for cell in ipynb.loads(json.dumps(nb).encode())["cells"])


# ------------------------------------------------------------------ the schema's verdict


def nbformat_refuses(notebook: Any) -> bool:
    """nbformat's verdict on the JSON (it repairs ids first); a crash counts as refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nbformat.validate(nbformat.from_dict(copy.deepcopy(notebook)))
        except Exception:
            return True
    return False


def paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            if path == () and key in ("nbformat", "nbformat_minor"):
                continue  # the version picks the schema: loads checks it first
            found += paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*path, index))
    return found


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["", "x", "code", "markdown", "raw", "stream", "display_data", "a b"]),
    st.lists(st.sampled_from(["line\n", "x"]), max_size=2),
    st.builds(dict),  # new objects each time: the test changes them
    st.builds(lambda: [1, 2]),
)


@examples(250)
@given(st.data())
def test_what_nbformat_refuses_is_refused_in_one_line_and_nothing_else(data: Any) -> None:
    nb = json.loads(nbformat.writes(varied()))
    for _ in range(data.draw(st.integers(1, 3))):
        places = paths(nb)[1:]
        if not places:
            break
        path = data.draw(st.sampled_from(places))
        parent = nb
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent[path[-1]], dict):
            parent[path[-1]]["unexpected"] = data.draw(JSON_VALUES)
        else:
            parent[path[-1]] = data.draw(JSON_VALUES)
    problem = ipynb.schema_problem(ipynb.normalize(copy.deepcopy(nb)))
    assert (problem is not None) == nbformat_refuses(nb), (problem, json.dumps(nb)[:2000])
    if problem is not None:
        assert "\n" not in problem and len(problem) < 300, problem


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda nb: nb["cells"][0].update(cell_type="nope"), 'cells[0]: its cell_type ("nope")'),
        (lambda nb: nb["cells"][1].update(source=5), "cells[1].source must be a string or a list"),
        (lambda nb: nb["cells"][1]["outputs"][0].pop("text"), "cells[1].outputs[0] must contain"),
        (
            lambda nb: nb["cells"][1]["outputs"][4].update(output_type="zzz"),
            "cells[1].outputs[4]: its output_type",
        ),
        (lambda nb: nb["cells"][2].update(extra=1), "cells[2] must not contain {'extra'}"),
        (lambda nb: nb["cells"][1].update(execution_count="3"), "cells[1].execution_count must be"),
        (lambda nb: nb["metadata"]["kernelspec"].pop("name"), "metadata.kernelspec must contain"),
        (lambda nb: nb["cells"].append(5), "cells[3] must be object"),
    ],
)
def test_a_refusal_names_where_the_notebook_is_wrong(change: Any, message: str) -> None:
    nb = json.loads(nbformat.writes(varied()))
    change(nb)
    assert nbformat_refuses(nb)
    problem = ipynb.schema_problem(ipynb.normalize(nb))
    assert problem is not None and problem.startswith(message), problem


def test_a_newer_minor_is_read_as_nbformat_reads_it() -> None:
    """4.7 (newer than nbformat knows): extra fields and unknown kinds of cells pass."""
    nb = json.loads(nbformat.writes(varied()))
    nb["nbformat_minor"] = 7
    nb["cells"].append({"cell_type": "future", "id": "f", "metadata": {}, "source": "", "x": 1})
    nb["extra"] = True
    assert not nbformat_refuses(nb)
    assert ipynb.schema_problem(ipynb.normalize(nb)) is None


# ------------------------------------------------------------------ what the command imports


PROBE = """
import contextlib, io, json, sys
from nbworker import cli
with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli.main(["--help"])
    except SystemExit:
        pass
    help_imports = [name for name in HEAVY if name in sys.modules]
    code = cli.main(["export", sys.argv[1], "-o", sys.argv[2]])
print(json.dumps({"code": code, "help": help_imports,
                  "export": [name for name in HEAVY if name in sys.modules]}))
"""


def probe(tmp_path: Path, notebook: Path) -> tuple[dict[str, Any], str]:
    script = f"HEAVY = {HEAVY!r}\n" + textwrap.dedent(PROBE)
    done = subprocess.run(
        [sys.executable, "-c", script, str(notebook), str(tmp_path / "worker")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_command_exports_without_importing_nbformat_or_jsonschema(tmp_path: Path) -> None:
    found, _ = probe(tmp_path, ROOT / "tests" / "data" / "sentiment.ipynb")
    assert found == {"code": 0, "help": [], "export": []}
    assert (tmp_path / "worker" / "handler.py").is_file()
    copy_of = (tmp_path / "worker" / "tests" / "sentiment.ipynb").read_text(encoding="utf-8")
    nbformat.validate(nbformat.reads(copy_of, 4))  # the copy it wrote is a valid notebook


def test_an_invalid_notebook_is_refused_in_one_line_without_jsonschema(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    nb = json.loads(nbformat.writes(varied()))
    nb["cells"][1]["outputs"][0]["name"] = 3
    bad.write_text(json.dumps(nb), encoding="utf-8")
    found, stderr = probe(tmp_path, bad)
    assert found == {"code": 1, "help": [], "export": []}
    assert stderr == (
        f"nbworker export: error: {bad} is not a valid notebook (nbformat's schema): "
        "cells[1].outputs[0].name must be string\n"
    )
    assert not (tmp_path / "worker").exists()
