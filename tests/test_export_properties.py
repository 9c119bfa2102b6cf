"""Property tests of the exporter on notebooks built at random from cell fragments.

Whatever the notebook holds, `build_worker` either gives files that work as files (handler.py
and every other .py compiles, every .json parses, handler.py imports no nbworker) or raises
an ExportError with a one-line message. Any other exception, or a traceback in a message,
is a bug in the exporter, not in the notebook.
"""

from __future__ import annotations

import ast
import copy
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nbworker.export import ExportError, ExportReport, build_worker
from nbworker.export.cells import RECORD_MIMETYPE


def examples(count: int) -> settings:
    """`count` examples, no deadline (the first export imports a lot), and no example
    database: nothing is written beside the tests."""
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# ------------------------------------------------------------------------ the vocabulary

FUNCTION_NAMES = ["handler", "tokens", "predict"]
# What a `%%handler` line may name: the functions, and names that are no Python name.
HANDLER_NAMES = [*FUNCTION_NAMES, "missing", "a.b", "1st", "x-y", '"two words"', "'"]
HANDLER_OPTIONS = [
    "--aggregate",
    "--concurrency 4",
    "--concurrency 0",
    "--concurrency -2",
    "--concurrency many",
    "--concurrency",
    "--bogus",
]
MODEL_LINES = ["m", "big-model --reload", "", "a b", "--reload", '"unclosed']
CELL_MAGICS = ["%%time", "%%capture", "%%bash", "%%writefile out.txt", "%%timeit"]

# Lines and small blocks of a code cell: valid and invalid Python, IPython syntax.
IMPORTS = [
    "import math",
    "import json",
    "import os",
    "import os.path",
    "from collections import Counter",
    "import numpy as np",
    "import requests",
    "from numpy import zeros",
    "import not_installed_module",
    "import nbworker",
    "from nbworker.export import build_worker",
    "from . import sibling",
    "from math import *",
]
ASSIGNMENTS = [
    "SCALE = 2",
    "x = SCALE * 3",
    "data = [1, 2, 3]",
    "MODEL = {'k': 1}",
    "MODEL = np.ones(3)",
    "CONFIG = json.loads('{}')",
    "total = sum(data)",
    "x += 1",
    "counts = Counter(data)",
    "a, b = 1, undefined_name",
    "HOME = os.environ.get('HOME')",
    "path = os.path.join('a', 'b')",
    "squares = [v * v for v in data]",
    "pad_token = '[PAD]'",
    "API_KEY = os.environ['API_KEY']",
    "HF_TOKEN = '<your token>'",
    "if (n := len(data)) > 2:\n    big = True",
    "class Box:\n    size = SCALE",
]
DEFINITIONS = [
    "def helper(v):\n    return v * SCALE",
    "def helper(v):\n    return math.sqrt(v)",
    "def helper2(v):\n    return undefined_name(v)",
    "def make():\n    return np.zeros(3)",
    "async def fetch(url):\n    return requests.get(url).json()",
    "def gen():\n    yield from range(3)",
    "@functools.cache\ndef cached(v):\n    return v",
    "def outer():\n    def inner():\n        return MODEL\n    return inner",
    "helper3 = lambda v: v + missing_global",
]
MAGIC_LINES = [
    "%time x = 1",
    "%matplotlib inline",
    "%load_ext nbworker",
    "%config InlineBackend.figure_format = 'svg'",
    "%pip install requests",
    "%pip install --quiet numpy==1.0 'requests>=2'",
    "%pip install -r requirements.txt",
    "%pip install git+https://example.com/pkg.git",
    "%pip install nbworker",
    "%pip",
    "!pip install numpy",
    "!python -m pip install --upgrade pip",
    "!ls",
    "!nvidia-smi",
    "files = !ls",
    "%env FOO=1",
    "%who",
    "%rp_test {'input': 1}",
    "%cd /tmp",
    "value?",
    "%timeit sum(data)",
    "get_ipython().system('ls')",
    "print(get_ipython())",
]
BROKEN = [
    "def f(:\n    pass",
    "x = (",
    "  indented = 1",
    "return 1",
    "yield 1",
    "await fetch('u')",
    "break",
    "print 'py2'",
    "f'{'",
    "x = '\\N{no such name}'",
    "del undefined_name",
    "raise SystemExit",
]
# Python the parser takes and only the compiler's symbol table refuses.
SCOPE_ERRORS = [
    "nonlocal x",
    "def g(a):\n    global a",
    "def h():\n    v = 1\n    global v",
]
FRAGMENTS = IMPORTS + ASSIGNMENTS + DEFINITIONS + MAGIC_LINES + BROKEN + SCOPE_ERRORS

HANDLER_BODIES = [
    "def {f}(job):\n    return {{'n': len(job['input'])}}",
    "def {f}(job):\n    return helper(job['input'])",
    "def {f}(job):\n    return MODEL['k'] * SCALE",
    "def {f}(job):\n    return np.zeros(3).tolist()",
    "def {f}(job):\n    return undefined_name",
    "async def {f}(job):\n    return await fetch(job['input'])",
    "def {f}(job):\n    for v in range(3):\n        yield v",
    "async def {f}(job):\n    yield job['input']",
    "def {f}(job):\n    yield from gen()",
    "def {f}():\n    return 1",
    "def {f}(job, extra):\n    return extra",
    "def {f}(job)\n    return 1",
    "def {f}(job):\nreturn 1",
    "def {f}(job):\n    !ls\n    return 1",
    "def {f}(job):\n    return %time 1",
    "{f} = lambda job: job['input']",
    "def {f}(job):\n    import nbworker\n    return nbworker.__name__",
    "def one(job):\n    return 1\n\ndef two(job):\n    return 2",
    "x = 1",
    "",
]

TAGS = ["nbworker:export", "nbworker:skip", "parameters", "hide-input"]

# ------------------------------------------------------------------------- secrets

ALNUM = string.ascii_letters + string.digits
# Words that make the secret scanner take a literal for a placeholder: a real credential
# holds none of them, and neither do the ones generated here.
PLACEHOLDER_WORDS = (
    "your",
    "placeholder",
    "example",
    "changeme",
    "change_me",
    "change-me",
    "redacted",
    "replaceme",
    "replace_me",
    "dummy",
)


def _random_enough(text: str) -> bool:
    lowered = text.lower()
    return len(set(lowered)) >= 4 and not any(word in lowered for word in PLACEHOLDER_WORDS)


def _key(prefix: str, size: int, extra: int = 8, alphabet: str = ALNUM) -> st.SearchStrategy[str]:
    body = st.text(alphabet=alphabet, min_size=size, max_size=size + extra)
    body = body.filter(_random_enough)
    return body.map(lambda text: prefix + text)


# (literal, the line holding it, whether it is found by its shape alone)
@st.composite
def secrets(draw: st.DrawFn) -> tuple[str, str, bool]:
    kind = draw(st.sampled_from(["hf", "rpa", "aws", "named"]))
    if kind == "hf":
        literal = draw(_key("hf_", 30))
    elif kind == "rpa":
        literal = draw(_key("rpa_", 20))
    elif kind == "aws":
        prefix = draw(st.sampled_from(["AKIA", "ASIA"]))
        literal = draw(_key(prefix, 16, 0, string.ascii_uppercase + string.digits))
    else:
        literal = draw(_key("", 12))
        line = draw(
            st.sampled_from(
                [
                    "API_KEY = {s!r}",
                    "OPENAI_API_KEY = {s!r}",
                    "db_password = {s!r}",
                    "runpod.api_key = {s!r}",
                    "os.environ['MY_SECRET'] = {s!r}",
                    "client = login(token={s!r})",
                    "os.environ.setdefault('HF_TOKEN', {s!r})",
                    "%env SERVICE_TOKEN={s}",
                ]
            )
        )
        return literal, line.format(s=literal), False
    line = draw(
        st.sampled_from(
            [
                "TOKEN = {s!r}",
                "key = {s!r}",
                "login({s!r})",
                "# the key: {s}",
                "!huggingface-cli login --token {s}",
                "runpod.api_key = {s!r}",
                "{s}",
            ]
        )
    )
    return literal, line.format(s=literal), True


# --------------------------------------------------------------------------- cells

tags = st.lists(st.sampled_from(TAGS), max_size=2, unique=True)


def _cell(source: str, cell_tags: list[str]):
    cell = new_code_cell(source)
    if cell_tags:
        cell.metadata["tags"] = cell_tags
    return cell


@st.composite
def code_sources(draw: st.DrawFn, fragments: list[str] = FRAGMENTS) -> str:
    lines = draw(st.lists(st.sampled_from(fragments), min_size=1, max_size=4))
    if draw(st.integers(0, 5)) == 0:
        lines.insert(0, draw(st.sampled_from(CELL_MAGICS)))
    return "\n".join(lines)


@st.composite
def handler_sources(draw: st.DrawFn) -> str:
    words = ["%%handler"]
    if draw(st.booleans()):
        words.append(draw(st.sampled_from(HANDLER_NAMES)))
    words += draw(st.lists(st.sampled_from(HANDLER_OPTIONS), max_size=2))
    function = draw(st.sampled_from(FUNCTION_NAMES))
    body = draw(st.sampled_from(HANDLER_BODIES)).format(f=function)
    lines = [" ".join(words), body]
    for fragment in draw(st.lists(st.sampled_from(FRAGMENTS), max_size=2)):
        lines.insert(draw(st.integers(1, len(lines))), fragment)
    return "\n".join(lines)


@st.composite
def model_sources(draw: st.DrawFn) -> str:
    line = draw(st.sampled_from(MODEL_LINES))
    body = draw(
        code_sources(IMPORTS + ASSIGNMENTS + DEFINITIONS[:4] + MAGIC_LINES[:6] + BROKEN[:3])
    )
    return f"%%model {line}".rstrip() + "\n" + body


def _record(handler: str, status: str, job_input, output) -> dict:
    return {
        "handler": handler,
        "job": {"id": "test-1", "input": job_input},
        "status": status,
        "output": output if status == "COMPLETED" else None,
        "error": None if status == "COMPLETED" else {"error_type": "ValueError"},
        "stream": None,
        "refresh_worker": False,
        "duration_ms": 1.0,
        "warnings": [],
    }


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def run_outputs(draw: st.DrawFn) -> list:
    """Outputs of a `%rp_test` cell: the records nbworker keeps of runs."""
    outputs = []
    for _ in range(draw(st.integers(0, 2))):
        record = _record(
            draw(st.sampled_from(FUNCTION_NAMES)),
            draw(st.sampled_from(["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"])),
            draw(json_values),
            draw(json_values),
        )
        outputs.append(new_output("display_data", data={RECORD_MIMETYPE: record}))
    return outputs


@st.composite
def cells(draw: st.DrawFn):
    kind = draw(st.sampled_from(["code", "code", "handler", "model", "markdown", "text", "run"]))
    cell_tags = draw(tags)
    if kind == "markdown":
        cell = new_markdown_cell(draw(st.sampled_from(["# Title", "Some *text*", "%%handler"])))
        if cell_tags:
            cell.metadata["tags"] = cell_tags
        return cell
    if kind == "text":
        return _cell(draw(st.text(max_size=60)), cell_tags)
    if kind == "run":
        cell = _cell("%rp_test {'input': [1, 2]}", cell_tags)
        cell.outputs = draw(run_outputs())
        return cell
    source = {"code": code_sources, "handler": handler_sources, "model": model_sources}[kind]
    return _cell(draw(source()), cell_tags)


notebooks = st.lists(cells(), max_size=8).map(lambda cells: new_notebook(cells=cells))

# ------------------------------------------------------------------------ the checks


def _nbworker_imports(text: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "nbworker"]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found += [node.module or ""] if (node.module or "").split(".")[0] == "nbworker" else []
    return found


def check_files(report: ExportReport) -> None:
    files = report.files
    assert "handler.py" in files
    for path, text in files.items():
        assert isinstance(text, str), path
        if path.endswith(".py"):
            compile(text, path, "exec")
        elif path.endswith(".json"):
            json.loads(text)
    assert _nbworker_imports(files["handler.py"]) == []
    assert "import nbworker" not in files["handler.py"]
    assert "from nbworker" not in files["handler.py"]


def check_message(error: ExportError) -> None:
    message = str(error)
    assert message.strip(), "an empty ExportError"
    assert "\n" not in message and "\r" not in message, f"a message of many lines: {message!r}"
    assert "Traceback" not in message, message


def build(notebook) -> ExportReport | ExportError:
    """The report, or the ExportError; any other exception propagates (a bug)."""
    try:
        report = build_worker(notebook)
    except ExportError as error:
        check_message(error)
        return error
    check_files(report)
    return report


def sources(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells]


# ------------------------------------------------------------------------- properties


@examples(600)
@given(notebooks)
def test_export_gives_working_files_or_a_one_line_error(notebook) -> None:
    build(notebook)


@examples(150)
@given(notebooks)
def test_export_is_deterministic(notebook) -> None:
    before = copy.deepcopy(notebook)
    first = build(notebook)
    assert notebook == before, "build_worker changed the notebook"
    second = build(copy.deepcopy(notebook))
    if isinstance(first, ExportError):
        assert isinstance(second, ExportError)
        assert (str(first), first.cell, first.line) == (str(second), second.cell, second.line)
    else:
        assert isinstance(second, ExportReport)
        assert first.files == second.files
        assert (first.handler, first.cells, first.notes) == (
            second.handler,
            second.cells,
            second.notes,
        )


# Cells that neither fail an export nor change what `handler` does, wherever they stand.
HARMLESS_FRAGMENTS = [
    "import math",
    "import json",
    "import numpy as np",
    "from collections import Counter",
    "SCALE = 2",
    "data = [1, 2, 3]",
    "def helper(v):\n    return v * 2",
    "async def fetch(url):\n    return url",
    "%matplotlib inline",
    "%load_ext nbworker",
    "%pip install requests",
    "!pip install numpy",
    "%who",
]


@st.composite
def harmless_cells(draw: st.DrawFn):
    kind = draw(st.sampled_from(["code", "code", "markdown", "broken", "run"]))
    if kind == "markdown":
        return new_markdown_cell(draw(st.text(max_size=40)))
    if kind == "broken":  # not needed by the handler, so left out whatever it holds
        source = draw(code_sources(BROKEN + MAGIC_LINES))
        return _cell(source, draw(st.sampled_from([[], ["nbworker:skip"]])))
    if kind == "run":
        cell = _cell("%rp_test {'input': [1, 2]}", [])
        cell.outputs = draw(run_outputs())
        return cell
    lines = draw(st.lists(st.sampled_from(HARMLESS_FRAGMENTS), min_size=1, max_size=3))
    return _cell("\n".join(lines), draw(st.lists(st.sampled_from(TAGS), max_size=1)))


HANDLER_CELL = "def handler(job):\n    return {'n': len(job['input'])}"


@examples(200)
@given(
    st.lists(harmless_cells(), max_size=4),
    st.lists(harmless_cells(), max_size=4),
    st.sampled_from(["%%handler", "%%handler handler", "%%handler --concurrency 3"]),
    st.lists(st.integers()) | st.text() | st.dictionaries(st.text(), st.integers()),
)
def test_a_valid_handler_among_unrelated_cells_exports_and_runs(
    above, below, magic, job_input
) -> None:
    notebook = new_notebook(cells=[*above, new_code_cell(f"{magic}\n{HANDLER_CELL}"), *below])
    report = build(notebook)
    assert isinstance(report, ExportReport), f"export failed: {report}"
    assert report.handler == "handler"
    namespace: dict = {"__name__": "handler"}  # not "__main__": the worker does not start
    exec(compile(report.files["handler.py"], "handler.py", "exec"), namespace)
    assert callable(namespace["handler"])
    assert namespace["handler"]({"id": "j", "input": job_input}) == {"n": len(job_input)}


@examples(200)
@given(
    st.lists(cells(), max_size=5),
    st.lists(cells(), max_size=5),
    secrets(),
    st.sampled_from(["own", "python", "text", "markdown", "handler"]),
    st.booleans(),
)
def test_a_secret_never_reaches_the_files_or_the_message(
    above, below, secret, where, skipped
) -> None:
    literal, line, by_shape = secret
    if where == "handler":
        source = f"%%handler\n{line}\n{HANDLER_CELL}"
    elif where == "python" or not by_shape:  # a literal bound to a name: found in Python
        source = f"import os\n{line}\nSCALE = 2"
    elif where == "text":  # by its shape, on any line: shell, prose, broken code
        source = f"!echo start\n{line}\ndef f(:"
    elif where == "markdown":
        source = f"The key:\n\n    {line}\n"
    else:
        source = line
    cell = new_markdown_cell(source) if where == "markdown" and by_shape else _cell(source, [])
    if skipped and where != "markdown":
        cell.metadata["tags"] = ["nbworker:skip"]
    notebook = new_notebook(
        cells=[*above, cell, *below, new_code_cell(f"%%handler\n{HANDLER_CELL}")]
    )
    result = build(notebook)
    assert isinstance(result, ExportError), "a notebook holding a secret was exported"
    assert literal not in str(result)
    assert literal[-12:] not in str(result)


# ----------------------------------------------- minimal counterexamples found by the above


@pytest.mark.parametrize(
    "sources_",
    [
        pytest.param(["nonlocal x", "%%handler\ndef handler(job):\n    return 1"], id="nonlocal"),
        pytest.param(
            ["def g(a):\n    global a", "%%handler\ndef handler(job):\n    return 1"],
            id="parameter-and-global",
        ),
        pytest.param(["%%handler a.b\ndef handler(job):\n    return 1"], id="dotted-name"),
    ],
)
def test_minimal_counterexamples(sources_: list[str]) -> None:
    build(new_notebook(cells=[new_code_cell(text) for text in sources_]))
