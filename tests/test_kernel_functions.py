"""nbworker.kernel: what the magics do, called as plain functions on a real IPython shell
(no magic involved), as anyone can call them from Python or a test."""

from __future__ import annotations

import argparse
import json

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbworker import arguments, kernel
from nbworker.errors import CellError, JobError
from nbworker.session import Session


@pytest.fixture
def ipython():
    shell = InteractiveShell.instance()
    saved = dict(shell.user_ns)
    yield shell
    shell.user_ns.clear()
    shell.user_ns.update(saved)


def handler_options(line: str = "") -> argparse.Namespace:
    return arguments.parse(arguments.HANDLER, line, prog="%%handler")


def test_register_cell_runs_the_cell_and_registers_its_function(ipython) -> None:
    session = Session()
    cell = "def helper(x):\n    return x\n\ndef handler(job):\n    return helper(job['input'])\n"
    registered = kernel.register_cell(ipython, session, cell, handler_options(), cell_id="c1")
    assert registered.spec.name == "handler"
    assert registered.replaced == []
    assert session.run_job({"input": 3}).output == 3
    assert "helper" in ipython.user_ns  # the cell ran in the user namespace


def test_re_running_a_cell_under_another_name_replaces_what_it_registered(ipython) -> None:
    session = Session()
    kernel.register_cell(
        ipython, session, "def first(job):\n    return 1\n", handler_options(), cell_id="c"
    )
    again = kernel.register_cell(
        ipython, session, "def second(job):\n    return 2\n", handler_options(), cell_id="c"
    )
    assert again.replaced == ["first"]
    assert session.registry.names() == ["second"]


@pytest.mark.parametrize(
    ("cell", "line", "message"),
    [
        ("x = 1\n", "", "the cell defines no function; write `def handler(job): ...`"),
        (
            "def a(job): pass\ndef b(job): pass\n",
            "",
            "the cell defines 2 functions (a, b) and none is named 'handler'; name the one to "
            "register: %%handler a",
        ),
        (
            "def handler(job):\n    return )\n",
            "",
            "SyntaxError at line 3 of the cell: unmatched ')': return )",
        ),
        ("def handler(job): pass\n", "not-a-name", "'not-a-name' is not a Python name"),
        (
            "def handler(job): pass\ndef concurrency_modifier(n): return 2\n",
            "--concurrency 3",
            "--concurrency 3 and concurrency_modifier concurrency_modifier both size the "
            "worker: keep one",
        ),
        (
            "await something()\ndef handler(job): pass\n",
            "",
            "`await` outside a function at line 2 of the cell: handler.py runs this code at "
            "import, where it cannot await; await inside an `async def handler(job)`",
        ),
    ],
)
def test_register_cell_says_in_one_line_why_a_cell_cannot_register(  # lines count %%handler's
    ipython, cell: str, line: str, message: str
) -> None:
    session = Session()
    with pytest.raises(CellError) as caught:
        kernel.register_cell(ipython, session, cell, handler_options(line))
    assert str(caught.value) == message
    assert session.registry.names() == []


def test_load_model_runs_once_then_binds_from_the_cache(ipython) -> None:
    session = Session()
    cell = "calls = globals().get('calls', 0) + 1\nweights = [1.0] * 10\n"
    first = kernel.load_model(ipython, session, "weights", cell)
    assert not first.hit and ipython.user_ns["calls"] == 1
    del ipython.user_ns["weights"]
    again = kernel.load_model(ipython, session, "weights", cell + "# a comment only\n")
    assert again.hit  # the same code, by meaning: nothing ran
    assert ipython.user_ns["calls"] == 1
    assert ipython.user_ns["weights"] == [1.0] * 10  # bound again from the cache


def test_a_failed_load_rolls_the_namespace_back(ipython) -> None:
    session = Session()
    ipython.user_ns["kept"] = "before"
    with pytest.raises(ZeroDivisionError):
        kernel.load_model(ipython, session, "broken", "kept = 'changed'\nhalf = 1\n1 / 0\n")
    assert ipython.user_ns["kept"] == "before"
    assert "half" not in ipython.user_ns
    assert "broken" not in session.cache


def test_unbind_drops_the_names_and_the_output_history_of_a_released_entry(ipython) -> None:
    session = Session()
    loaded = kernel.load_model(ipython, session, "table", "table = {'rows': [1, 2, 3]}\n")
    table = ipython.user_ns["table"]
    ipython.user_ns["Out"] = {7: table}
    ipython.user_ns["_7"] = table
    kernel.unbind(ipython, loaded.entry)
    assert "table" not in ipython.user_ns
    assert "_7" not in ipython.user_ns
    assert ipython.user_ns["Out"] == {}


def test_job_from_reads_json_a_file_or_a_variable(ipython, tmp_path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"input": {"from": "file"}}), encoding="utf-8")
    namespace = {"job": {"input": {"from": "var"}}, "text": '{"input": {"from": "text"}}'}
    assert kernel.job_from(namespace, [], job_text='{"input": 1}') == (
        None,
        {"id": "local_test", "input": 1},
    )
    assert kernel.job_from(namespace, ["fast"], file=str(path))[0] == "fast"
    assert kernel.job_from(namespace, [], file=str(path))[1]["input"] == {"from": "file"}
    assert kernel.job_from(namespace, [], var="job")[1]["input"] == {"from": "var"}
    assert kernel.job_from(namespace, [], var="text")[1]["input"] == {"from": "text"}


@pytest.mark.parametrize(
    ("words", "options", "error", "message"),
    [
        (
            [],
            {},
            CellError,
            'give the job once: as JSON (%rp_test {"input": {...}}), -f FILE.json or --var NAME, e.g. %rp_test {"input": {"text": "hi"}}',
        ),
        ([], {"var": "missing"}, CellError, "no variable named 'missing'"),
        (
            [],
            {"file": "/nonexistent/job.json"},
            CellError,
            "cannot read /nonexistent/job.json: No such file or directory",
        ),
        (["a", "b", "c"], {}, CellError, "unexpected argument 'c'"),
        (
            [],
            {"job_text": "[1]"},
            JobError,
            'JOB_JSON must be a JSON object like {"input": {...}}, not list',
        ),
    ],
)
def test_job_from_refuses_in_one_line(words, options, error, message) -> None:
    with pytest.raises(error) as caught:
        kernel.job_from({}, words, **options)
    assert str(caught.value) == message


def test_this_notebook_is_the_one_the_front_end_names(tmp_path, monkeypatch) -> None:
    notebook = tmp_path / "work.ipynb"
    notebook.write_text("{}", encoding="utf-8")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert kernel.this_notebook({"__vsc_ipynb_file__": str(notebook)}) == str(notebook)
    assert kernel.this_notebook({"__session__": str(tmp_path / "gone.ipynb")}) is None
    assert kernel.this_notebook({}) is None


def test_the_rp_test_line_options_are_one_parse_for_the_magic_and_export() -> None:
    line = '{"input": {"a": 1}} --ignore seed,took --no-compare'
    options, job = arguments.split_job_json(line)
    assert job is not None and json.loads(job) == {"input": {"a": 1}}
    parsed = arguments.parse(arguments.RP_TEST, options, prog="%rp_test")
    assert arguments.comparison(parsed) == arguments.Comparison(["seed", "took"], False)
    assert arguments.rp_test_comparison('--ignore a,b {"input": 1}') == (["a", "b"], True)
    assert arguments.rp_test_comparison('{"input": 1} --bogus') == ([], True)


# --------------------------------------------------------------------------- per-cell costs

ASYNCIO_WARNING = "calls asyncio.run()"


def register(ipython, cell: str) -> list[str]:
    """The warnings of the handler a cell registers (on a session of its own)."""
    session = Session()
    return list(kernel.register_cell(ipython, session, cell, handler_options()).spec.warnings)


def test_a_handler_cell_is_checked_from_its_own_tree_without_reading_the_source(
    ipython, monkeypatch
) -> None:
    import inspect

    def no_source(*args, **kwargs):
        raise AssertionError("the cell's source was read again")

    monkeypatch.setattr(inspect, "getsource", no_source)
    calls = "import asyncio\n\ndef handler(job):\n    return asyncio.run(asyncio.sleep(0))\n"
    assert any(ASYNCIO_WARNING in w for w in register(ipython, calls))
    decorated = (
        "import asyncio, functools\n\ndef traced(function):\n    @functools.wraps(function)\n"
        "    def wrapper(job):\n        return function(job)\n    return wrapper\n\n"
        "@traced\ndef handler(job):\n    return asyncio.run(asyncio.sleep(0))\n"
    )
    assert any(ASYNCIO_WARNING in w for w in register(ipython, decorated))
    plain = "def handler(job):\n    return {'asyncio': 'run'}\n"  # the words, no call
    assert not any(ASYNCIO_WARNING in w for w in register(ipython, plain))
    assert not any(ASYNCIO_WARNING in w for w in register(ipython, "def handler(job):\n    pass\n"))


def test_a_handler_bound_to_a_function_from_another_cell_is_checked_from_its_source(
    ipython,
) -> None:
    ipython.run_cell(
        "import asyncio\n\ndef elsewhere(job):\n    return asyncio.run(asyncio.sleep(0))\n"
    )
    # The cell's own `def handler` is not what it registers: the name is bound again.
    cell = "def handler(job):\n    return 1\n\nhandler = elsewhere\n"
    assert any(ASYNCIO_WARNING in w for w in register(ipython, cell))
    wrapped = "def handler(job):\n    return 1\n\nhandler = wrap(elsewhere)\n"
    ipython.run_cell(
        "def wrap(f):\n    def handler(job):\n        return f(job)\n    return handler\n"
    )
    assert not any(ASYNCIO_WARNING in w for w in register(ipython, wrapped))  # as getsource


PYTHON_CELLS = [
    "def handler(job):\n    return 1\n",
    "\n\n# a comment first\ndef handler(job):\n    return 1\n",
    "  # an indented comment\ndef handler(job):\n    return '''\n  kept as it is'''\n",
    "x = {\n    ...: 1,\n}\ndef handler(job):\n    return x\n",
    "import os\nif os.sep != '/':\n    pass\ndef handler(job):\n    return 5 % 3\n",
]
IPYTHON_CELLS = [
    "files = !ls\ndef handler(job):\n    return files\n",
    "x = %time 1\ndef handler(job):\n    return x\n",
    "%time y = 1\ndef handler(job):\n    return y\n",
    "len?\ndef handler(job):\n    return 1\n",
    ">>> def handler(job):\n...     return 1\n",
]


@pytest.mark.parametrize("cell", PYTHON_CELLS + IPYTHON_CELLS)
def test_a_cell_is_the_python_ipython_makes_of_it(ipython, cell: str) -> None:
    """The parse skips IPython's token transforms for a cell that is Python already: the
    code and the tree are what IPython's full transform gives, for either kind of cell."""
    import ast

    code, tree = kernel.parse_cell(ipython, cell)
    expected = "\n" + ipython.transform_cell(cell)
    assert code == expected
    assert ast.dump(tree) == ast.dump(ipython.compile.ast_parse(expected))


def test_a_syntax_error_still_names_the_cells_line(ipython) -> None:  # %%handler is 1
    with pytest.raises(CellError, match="SyntaxError at line 4 of the cell"):
        kernel.parse_cell(ipython, "x = 1\n\ny = )\ndef handler(job):\n    return x\n")


def test_the_signature_check_reads_plain_functions_as_inspect_does() -> None:
    import inspect

    from nbworker.registry import _takes_one_argument

    def takes_one(function) -> bool:
        try:
            inspect.signature(function).bind(object())
        except TypeError:
            return False
        return True

    functions = [
        lambda: 0,
        lambda job: 0,
        lambda job, other: 0,
        lambda job, other=1: 0,
        lambda *jobs: 0,
        lambda job, *, key: 0,
        lambda job, *, key=1: 0,
        lambda *, key: 0,
        lambda job=1, other=2: 0,
        lambda job, /, other=2: 0,
        lambda job, other, /: 0,
        lambda **options: 0,
        lambda job, **options: 0,
        lambda *jobs, key: 0,
    ]
    for function in functions:
        assert _takes_one_argument(function) == takes_one(function), inspect.signature(function)
    assert _takes_one_argument(print) is None  # not a plain function: inspect decides
