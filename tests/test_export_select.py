"""Reading cells and choosing what goes into handler.py: rules, reasons and errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbworker.export.cells import read_cells
from nbworker.export.handler import render_handler
from nbworker.export.select import ExportError, select_cells
from nbworker.export.write import MANIFEST, write_files


def notebook(*sources: str, tags: dict[int, list[str]] | None = None):
    cells = []
    for index, text in enumerate(sources):
        cell = new_markdown_cell(text[3:]) if text.startswith("md:") else new_code_cell(text)
        if tags and index in tags:
            cell.metadata["tags"] = tags[index]
        cells.append(cell)
    return new_notebook(cells=cells)


def select(*sources: str, handler: str | None = None, tags=None):
    cells = read_cells(notebook(*sources, tags=tags))
    return cells, select_cells(cells, handler=handler)


def test_the_handler_takes_what_it_uses_transitively_in_notebook_order() -> None:
    cells, selection = select(
        "%load_ext nbworker",
        "import math",
        "SCALE = 2",
        "def helper(x):\n    return math.sqrt(x) * SCALE",
        "unused = 1",
        "%%handler\ndef handler(job):\n    return helper(job['input'])",
        '%rp_test {"input": 4}',
    )
    assert list(selection.taken) == [1, 2, 3, 5]
    assert selection.taken == {
        1: "defines math, used by cell 3",
        2: "defines SCALE, used by cell 3",
        3: "defines helper, used by cell 5",
        5: "the handler `handler`",
    }
    assert selection.left_out[4] == "not needed by `handler`"
    assert selection.left_out[6] == "notebook tools only (%rp_test, display)"
    text = render_handler(cells, selection, notebook="n.ipynb")
    namespace: dict = {}
    exec(compile(text, "handler.py", "exec"), namespace)
    assert namespace["handler"]({"input": 4}) == 4.0


def test_the_latest_definition_above_wins_and_skip_tags_are_obeyed() -> None:
    _, selection = select(
        "LIMIT = 1",
        "LIMIT = 2",
        "LIMIT = 3",
        "%%handler\ndef handler(job):\n    return LIMIT",
        tags={2: ["nbworker:skip"]},
    )
    assert list(selection.taken) == [1, 3]
    assert selection.left_out[2] == "tagged nbworker:skip"


def test_a_model_cell_below_the_handler_is_found_and_export_tags_force_cells_in() -> None:
    cells, selection = select(
        "%%handler\ndef handler(job):\n    return MODEL['k']",
        "%%model m\nMODEL = {'k': 1}",
        "print('warming up')",
        tags={2: ["nbworker:export"]},
    )
    assert selection.taken == {
        0: "the handler `handler`",
        1: "defines MODEL, used by cell 0",
        2: "tagged nbworker:export",
    }
    assert "# --- cell 1: %%model m (runs once, when the worker starts)" in render_handler(
        cells, selection, notebook="n.ipynb"
    )


def test_pip_lines_become_requirements_and_display_magics_are_dropped() -> None:
    cells, selection = select(
        "%pip install --quiet requests==2.32.3\n!pip install numpy\n%matplotlib inline\nimport requests, numpy",
        "%%handler\ndef handler(job):\n    return requests.__name__ + numpy.__name__",
    )
    assert cells[0].pip == ["--quiet", "requests==2.32.3", "numpy"]
    assert cells[0].dropped == [(3, "%matplotlib inline")]
    assert cells[0].code == "import requests, numpy"
    assert cells[0].imports == {"requests", "numpy"}
    assert 0 in selection.taken


@pytest.mark.parametrize(
    ("sources", "handler", "message"),
    [
        (
            ["x = 1"],
            None,
            "the notebook has no %%handler cell to export: write the handler in a cell that starts with %%handler",
        ),
        (
            ["%%handler\ndef a(job): pass", "%%handler\ndef b(job): pass"],
            None,
            "the notebook registers 2 handlers (a, b) and none is named 'handler': choose one with --handler NAME",
        ),
        (
            ["%%handler\ndef a(job): pass"],
            "b",
            "no %%handler cell registers 'b'; the notebook's handlers: a",
        ),
        (
            ["%%handler\ndef handler(job):\n    return MISSING"],
            None,
            "`MISSING` is used by cell 0 (%%handler) but no cell defines it",
        ),
        (
            ["!nvidia-smi\nGPU = 'none'", "%%handler\ndef handler(job):\n    return GPU"],
            None,
            "cell 0, line 1: `!nvidia-smi` is IPython syntax a worker cannot run: write it as Python, move it to a cell the handler does not need, or tag that cell nbworker:skip",
        ),
        (
            ["%%time\nx = 1\n%env FOO=1", "%%handler\ndef handler(job):\n    return x"],
            None,
            "cell 0, line 3: `%env FOO=1` is IPython syntax a worker cannot run: write it as Python, move it to a cell the handler does not need, or tag that cell nbworker:skip",
        ),
        (
            ["import nbworker\nTOOLS = nbworker", "%%handler\ndef handler(job):\n    return TOOLS"],
            None,
            "cell 0 imports nbworker: the exported worker must not depend on it; move that import to a cell the handler does not need",
        ),
        (
            ["%%handler --concurrency many\ndef handler(job): pass"],
            None,
            "no %%handler cell can be read: cell 0 (%%handler --concurrency many): argument --concurrency: invalid int value: 'many'",
        ),
        (
            [
                "%%handler --concurrency 4\ndef concurrency_modifier(current):\n    return 2\n"
                "def handler(job): pass"
            ],
            None,
            "cell 0 (%%handler --concurrency 4): --concurrency 4 and concurrency_modifier concurrency_modifier both size the worker: keep one",
        ),
        (
            ["%%handler --concurrency-modifier scale\ndef handler(job): pass"],
            None,
            "`scale` is used by cell 0 (%%handler --concurrency-modifier scale) but no cell defines it",
        ),
        (
            ["def helper(:\n    pass", "%%handler\ndef handler(job):\n    return helper()"],
            None,
            "`helper` is used by cell 1 (%%handler) but no cell defines it (cell 0, line 1: SyntaxError: invalid syntax)",
        ),
    ],
)
def test_errors_name_the_cell(sources: list[str], handler: str | None, message: str) -> None:
    with pytest.raises(ExportError) as caught:
        select(*sources, handler=handler)
    assert str(caught.value) == message


def test_the_last_cell_registering_a_name_wins() -> None:
    _, selection = select(
        "%%handler\ndef handler(job):\n    return 1",
        "%%handler\ndef handler(job):\n    return 2",
    )
    assert selection.handler.index == 1
    assert selection.left_out[0] == "another handler, not needed by this one"


def test_start_config_carries_the_handler_options() -> None:
    cells, selection = select(
        "%%handler tokens --aggregate --concurrency 4\ndef tokens(job):\n    yield 1"
    )
    text = render_handler(cells, selection, notebook="n.ipynb")
    assert text.endswith(
        '    runpod.serverless.start({"handler": tokens, "return_aggregate_stream": True, '
        '"concurrency_modifier": lambda current: 4})\n'
    )


def test_the_authors_concurrency_modifier_goes_into_start_as_it_is() -> None:
    cells, selection = select(
        "import os",
        "import math",
        "%%handler\n"
        "def concurrency_modifier(current: int) -> int:\n"
        "    return int(os.environ.get('MAX_CONCURRENCY', 1))\n"
        "\n"
        "def generate(job):\n"
        "    return math.pi",
    )
    assert selection.name == "generate" and selection.concurrency_modifier == "concurrency_modifier"
    assert selection.taken == {
        0: "defines os, used by cell 2",
        1: "defines math, used by cell 2",
        2: "the handler `generate`",
    }
    text = render_handler(cells, selection, notebook="n.ipynb")
    assert text.endswith(
        '    runpod.serverless.start({"handler": generate, '
        '"concurrency_modifier": concurrency_modifier})\n'
    )
    namespace: dict = {}
    exec(compile(text, "handler.py", "exec"), namespace)
    assert namespace["concurrency_modifier"](1) == int(os.environ.get("MAX_CONCURRENCY", 1))


def test_a_concurrency_modifier_named_by_the_option_is_traced_to_its_cell() -> None:
    cells, selection = select(
        "import os",
        "LIMIT_VARIABLE = 'MAX_CONCURRENCY'",
        "def scale(current):\n    return int(os.environ.get(LIMIT_VARIABLE, current))",
        "unused = 1",
        "%%handler --concurrency-modifier scale\n"
        "def concurrency_modifier(current):\n"
        "    return 9\n"
        "def handler(job):\n"
        "    return 1",
    )
    assert selection.concurrency_modifier == "scale"  # the option wins over the convention
    assert selection.taken == {
        0: "defines os, used by cell 2",
        1: "defines LIMIT_VARIABLE, used by cell 2",
        2: "defines scale, used by cell 4",
        4: "the handler `handler`",
    }
    text = render_handler(cells, selection, notebook="n.ipynb")
    assert text.endswith(
        '    runpod.serverless.start({"handler": handler, "concurrency_modifier": scale})\n'
    )


@pytest.mark.parametrize(
    ("code", "hooks"),
    [
        ("import runpod\nrunpod.serverless.register_prestart_hook(warm)", ["warm"]),
        (
            "import runpod\n@runpod.serverless.register_prestart_hook\ndef warm():\n    pass",
            ["warm"],
        ),
        (
            "from runpod.serverless import register_prestart_hook\nregister_prestart_hook(warm)",
            ["warm"],
        ),
        (
            "from runpod.serverless import register_prestart_hook as on_start\n"
            "@on_start\nasync def a():\n    pass\non_start(b)",
            ["a", "b"],
        ),
        (
            "import runpod.serverless as rs\nrs.register_prestart_hook(lambda: None)",
            ["lambda: None"],
        ),
        ("register_prestart_hook(warm)", ["warm"]),  # imported in another cell
        ("import runpod\nrunpod.serverless.start({'handler': h})\nhook(warm)", []),
        ("from runpod.serverless import progress_update as register\nregister(job, 1)", []),
    ],
)
def test_prestart_hook_registrations_are_found_by_parsing(code: str, hooks: list[str]) -> None:
    import ast

    from nbworker import source

    assert source.prestart_hooks(ast.parse(code)) == hooks


def test_a_cell_registering_a_prestart_hook_goes_in_before_the_start_block() -> None:
    cells, selection = select(
        "import runpod",
        "import logging",
        "def warm():\n    logging.getLogger('worker').info('warm')",
        "runpod.serverless.register_prestart_hook(warm)",
        "other = 1",
        "%%handler\ndef handler(job):\n    return 1",
        "print('exploring')",
    )
    assert selection.taken == {
        0: "defines runpod, used by cell 3",
        1: "defines logging, used by cell 2",
        2: "defines warm, used by cell 3",
        3: "registers the prestart hook warm",
        5: "the handler `handler`",
    }
    text = render_handler(cells, selection, notebook="n.ipynb")
    assert text.index("runpod.serverless.register_prestart_hook(warm)") < text.index(
        'if __name__ == "__main__":'
    )
    compile(text, "handler.py", "exec")


def test_a_prestart_hook_in_a_skipped_cell_stays_out() -> None:
    _, selection = select(
        "import runpod\n@runpod.serverless.register_prestart_hook\ndef warm():\n    pass",
        "%%handler\ndef handler(job):\n    return 1",
        tags={0: ["nbworker:skip"]},
    )
    assert selection.taken == {1: "the handler `handler`"}
    assert selection.left_out[0] == "tagged nbworker:skip"


# ---------------------------------------------------------------- writing


def test_write_is_atomic_and_refuses_to_overwrite_edits(tmp_path: Path) -> None:
    first = write_files(tmp_path, {"handler.py": "v1\n", "tests/cases.json": "{}\n"})
    assert first.written == ["handler.py", "tests/cases.json"]
    again = write_files(tmp_path, {"handler.py": "v1\n", "tests/cases.json": "{}\n"})
    assert again.written == [] and again.unchanged == ["handler.py", "tests/cases.json"]
    (tmp_path / "handler.py").write_text("v1 plus a hand edit\n")
    with pytest.raises(
        ExportError, match=r"handler\.py in .* changed since nbworker last wrote it"
    ):
        write_files(tmp_path, {"handler.py": "v2\n", "tests/cases.json": "[]\n"})
    assert (tmp_path / "handler.py").read_text() == "v1 plus a hand edit\n"
    assert (tmp_path / "tests/cases.json").read_text() == "{}\n"  # nothing was written
    forced = write_files(tmp_path, {"handler.py": "v2\n", "tests/cases.json": "[]\n"}, force=True)
    assert forced.overwritten_edits == ["handler.py"]
    assert (tmp_path / "handler.py").read_text() == "v2\n"
    assert sorted(json.loads((tmp_path / MANIFEST).read_text())["files"]) == [
        "handler.py",
        "tests/cases.json",
    ]
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


def test_a_file_nbworker_never_wrote_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM my-own-image\n")
    with pytest.raises(
        ExportError,
        match=r"Dockerfile .* changed since nbworker last wrote it \(or nbworker never did\)",
    ):
        write_files(tmp_path, {"Dockerfile": "FROM runpod/base\n"})


def test_notebook_files_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "n.ipynb"
    nbformat.write(notebook("%%handler\ndef handler(job):\n    return 1"), path)
    cells = read_cells(nbformat.read(path, as_version=4))
    assert cells[0].kind == "handler" and cells[0].functions == ["handler"]
