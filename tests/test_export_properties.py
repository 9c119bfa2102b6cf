"""Property tests of the exporter on notebooks built at random from cell fragments.

Whatever a notebook holds, `build_worker` either gives files that work as files (handler.py
and every other .py compiles, every .json parses, handler.py imports no nbworker) or raises
an ExportError whose message is one line. Any other exception, or a traceback in the
message, is a bug in the exporter, not in the notebook. Beside that: the handler.py it
gives defines the handler it starts; an export is deterministic; a valid handler among
unrelated cells exports and runs; a secret never gets into the files or the message; the
notebook's name is text in the files, never code.

The notebooks mix what exports (imports, assignments, functions, display magics, `%pip`
lines, `%%model` and `%%handler` cells) with what must not (other IPython syntax, broken
Python, handlers with the wrong signature, imports of nbworker, secrets), tags, markdown,
arbitrary text and recorded `%rp_test` runs. The smallest failures found so far are kept
as plain tests at the end.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import string
import symtable

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nbworker.export import ExportError, ExportReport, build_worker
from nbworker.export.cells import RECORD_MIMETYPE

# IPython's transformer warns of text holding line breaks other than \n, \r, \v and \f.
pytestmark = pytest.mark.filterwarnings("ignore:`make_tokens_by_line` received:UserWarning")


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
# What a `%%handler` line may name (first the good, then the bad: see `mostly`): the
# functions, one no cell defines, and no Python names. The same order in the next lists.
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

# Lines and small blocks of code cells. GOOD exports when the cells it uses are there;
# BAD fails the export of any cell that holds it and is needed.
GOOD = [
    # imports
    "import math",
    "import json",
    "import os",
    "import os.path",
    "from collections import Counter",
    "import numpy as np",
    "import requests",
    "from numpy import zeros",
    "import not_installed_module",
    "from . import sibling",
    "from math import *",
    # assignments
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
    # functions, some reading names no cell defines
    "def helper(v):\n    return v * SCALE",
    "def helper(v):\n    return math.sqrt(v)",
    "def helper2(v):\n    return undefined_name(v)",
    "def make():\n    return np.zeros(3)",
    "async def fetch(url):\n    return requests.get(url).json()",
    "def gen():\n    yield from range(3)",
    "@functools.cache\ndef cached(v):\n    return v",
    "def outer():\n    def inner():\n        return MODEL\n    return inner",
    "helper3 = lambda v: v + missing_global",
    "print(get_ipython())",
    # IPython syntax the export drops or turns into requirements
    "%matplotlib inline",
    "%load_ext nbworker",
    "%config InlineBackend.figure_format = 'svg'",
    "%who",
    "%rp_test {'input': 1}",
    "%pip install requests",
    "%pip install --quiet numpy==1.0 'requests>=2'",
    "%pip install -r requirements.txt",
    "%pip install git+https://example.com/pkg.git",
    "%pip install nbworker",
    "!pip install numpy",
    "!python -m pip install --upgrade pip",
]
MAGIC_ERRORS = [
    "%pip",
    "%time x = 1",
    "!ls",
    "!nvidia-smi",
    "files = !ls",
    "%env FOO=1",
    "%cd /tmp",
    "value?",
    "%timeit sum(data)",
    "get_ipython().system('ls')",
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
    "import nbworker",
    "from nbworker.export import build_worker",
]
# What reading a cell once crashed on (see test_smallest_failures): Python the parser
# takes and only the compiler's symbol table refuses, a shell line with an unbalanced
# quote, a lone surrogate (JSON's "\udc80", which nbformat reads as it is).
READ_CRASHES = [
    "nonlocal x",
    "def g(a):\n    global a",
    "def h():\n    v = 1\n    global v",
    "!echo don't",
    'out = !grep -c "x file',
    "x = 1  # \udc80",
]
BAD = MAGIC_ERRORS + BROKEN + READ_CRASHES

HANDLER_BODIES = [
    "def {f}(job):\n    return {{'n': len(job['input'])}}",
    "def {f}(job):\n    return helper(job['input'])",
    "def {f}(job):\n    return MODEL['k'] * SCALE",
    "def {f}(job):\n    return np.zeros(3).tolist()",
    "async def {f}(job):\n    return await fetch(job['input'])",
    "def {f}(job):\n    for v in range(3):\n        yield v",
    "async def {f}(job):\n    yield job['input']",
    "def {f}(job):\n    yield from gen()",
    "{f} = lambda job: job['input']",
    "def {f}(job):\n    return undefined_name",
    "def {f}():\n    return 1",
    "def {f}(job, extra):\n    return extra",
    "def {f}(job)\n    return 1",
    "def {f}(job):\nreturn 1",
    "def {f}(job):\n    !ls\n    return 1",
    "def {f}(job):\n    return %time 1",
    "def {f}(job):\n    import nbworker\n    return nbworker.__name__",
    "def one(job):\n    return 1\n\ndef two(job):\n    return 2",
    "x = 1",
    "",
]

TAGS = ["nbworker:export", "nbworker:skip", "parameters", "hide-input"]
tags = st.lists(st.sampled_from(TAGS), max_size=2, unique=True)
handler_tags = st.sampled_from([[]] * 6 + [["nbworker:skip"], ["nbworker:export"], ["x"]])


def mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """One of `good` five times in six, else one of `bad` (shrinking to good)."""
    return st.integers(0, 5).flatmap(lambda i: st.sampled_from(bad if i == 5 and bad else good))


def fragments(bad: list[str]) -> st.SearchStrategy[str]:
    """A GOOD fragment five times in six, else a `bad` one."""
    return mostly(GOOD, bad)


# ------------------------------------------------------------------------- secrets

ALNUM = string.ascii_letters + string.digits
# Words that make the secret scanner take a literal for a placeholder: a real credential
# holds none of them, and neither do the ones generated here (the scanner's own list).
from nbworker.export.secrets.shapes import _PLACEHOLDER_WORDS as PLACEHOLDER_WORDS  # noqa: E402


def _random_enough(text: str) -> bool:
    lowered = text.lower()
    return len(set(lowered)) >= 4 and not any(word in lowered for word in PLACEHOLDER_WORDS)


def _key(prefix: str, size: int, extra: int = 8, alphabet: str = ALNUM) -> st.SearchStrategy[str]:
    body = st.text(alphabet=alphabet, min_size=size, max_size=size + extra)
    return body.filter(_random_enough).map(lambda text: prefix + text)


@st.composite
def secrets(draw: st.DrawFn) -> tuple[str, str, bool]:
    """(the secret, a line holding it, whether its shape alone gives it away)."""
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


def _cell(source: str, cell_tags: list[str]):
    cell = new_code_cell(source)
    if cell_tags:
        cell.metadata["tags"] = cell_tags
    return cell


@st.composite
def code_sources(draw: st.DrawFn, bad: list[str] = BAD) -> str:
    lines = draw(st.lists(fragments(bad), min_size=1, max_size=4))
    if draw(st.integers(0, 5)) == 0:
        lines.insert(0, draw(st.sampled_from(CELL_MAGICS)))
    return "\n".join(lines)


@st.composite
def handler_sources(draw: st.DrawFn, bad: list[str] = BAD) -> str:
    words = ["%%handler"]
    if draw(st.booleans()):
        words.append(draw(mostly(HANDLER_NAMES[:3], HANDLER_NAMES[3:])))
    words += draw(st.lists(mostly(HANDLER_OPTIONS[:4], HANDLER_OPTIONS[4:]), max_size=2))
    function = draw(st.sampled_from(FUNCTION_NAMES))
    body = draw(mostly(HANDLER_BODIES[:9], HANDLER_BODIES[9:]))
    lines = [" ".join(words), body.format(f=function)]
    for fragment in draw(st.lists(fragments(bad), max_size=2)):
        lines.insert(draw(st.integers(1, len(lines))), fragment)
    return "\n".join(lines)


@st.composite
def model_sources(draw: st.DrawFn, bad: list[str] = BAD) -> str:
    line = draw(st.sampled_from(MODEL_LINES))
    return f"%%model {line}".rstrip() + "\n" + draw(code_sources(bad))


def _record(handler: str, status: str, job_input, output) -> dict:
    """A record as `Run.to_record` writes it (finite floats: NaN and infinities are None)."""
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


# Arbitrary text, and text made of what Python and IPython syntax is made of, sometimes
# under a cell magic.
SYNTAX = string.ascii_letters[:6] + "_0123 \t\n\r()[]{}:;,.=+*'\"#%!?$\\@-<>"
texts = st.tuples(
    st.sampled_from(["", "", "%%handler ", "%%model ", "%%time\n", "%%handler\n"]),
    st.text(max_size=60) | st.text(alphabet=SYNTAX, max_size=60),
).map("".join)


@st.composite
def cells(draw: st.DrawFn, bad: list[str] = BAD):
    kind = draw(st.sampled_from(["code", "code", "code", "model", "markdown", "text", "run"]))
    cell_tags = draw(tags)
    if kind == "markdown":
        cell = new_markdown_cell(draw(st.sampled_from(["# Title", "Some *text*", "%%handler"])))
        if cell_tags:
            cell.metadata["tags"] = cell_tags
        return cell
    if kind == "text":
        return _cell(draw(texts), cell_tags)
    if kind == "run":
        cell = _cell("%rp_test {'input': [1, 2]}", cell_tags)
        cell.outputs = draw(run_outputs())
        return cell
    source = code_sources if kind == "code" else model_sources
    return _cell(draw(source(bad)), cell_tags)


@st.composite
def notebooks(draw: st.DrawFn, bad: list[str] = BAD):
    """Up to 6 cells, and %%handler cells among them: mostly one, else none or several."""
    notebook_cells = draw(st.lists(cells(bad), max_size=6))
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2, 3]))):
        cell = _cell(draw(handler_sources(bad)), draw(handler_tags))
        notebook_cells.insert(draw(st.integers(0, len(notebook_cells))), cell)
    return new_notebook(cells=notebook_cells)


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
    """handler.py and every .py compile, every .json parses, handler.py needs no nbworker."""
    files = report.files
    assert "handler.py" in files
    for path, text in files.items():
        assert isinstance(text, str), path
        if path.endswith(".py"):
            compile(text, path, "exec")
        elif path.endswith(".json"):
            json.loads(text)
    handler_py = files["handler.py"]
    assert _nbworker_imports(handler_py) == []
    assert not re.search(r"^\s*(import|from)\s+nbworker\b", handler_py, re.MULTILINE)


def check_message(error: ExportError) -> None:
    """One line (no \n, no \r: both end a line, for Python and for a terminal), no traceback."""
    message = str(error)
    assert message.strip(), "an empty ExportError"
    assert "\n" not in message and "\r" not in message, f"a message of many lines: {message!r}"
    assert "Traceback" not in message, message


def build(notebook) -> ExportReport | ExportError:
    """The report, or the ExportError; any other exception propagates (a bug). `notebook`
    is an nbformat notebook, or the path of a notebook file."""
    try:
        report = build_worker(notebook)
    except ExportError as error:
        check_message(error)
        return error
    check_files(report)
    return report


def check_worker(report: ExportReport) -> None:
    """More than compiling: each `# --- cell N` header the export writes is only a comment
    (to Python's own parser), and the handler handler.py starts is one it defines (else
    the worker dies at start with a NameError)."""
    text = report.files["handler.py"]
    headers = [line for line in text.split("\n") if line.startswith("# --- cell ")]
    assert [h for h in headers if ast.parse(h).body] == [], "a header comment is partly code"
    module = symtable.symtable(text, "handler.py", "exec")
    try:
        symbol = module.lookup(report.handler)
    except KeyError:
        symbol = None
    assert symbol is not None and (symbol.is_assigned() or symbol.is_imported()), (
        f"handler.py starts {report.handler!r} but never defines it"
    )


# ------------------------------------------------------------------------- properties


@examples(1500)
@given(notebooks())
def test_export_gives_compiling_files_or_a_one_line_error(notebook) -> None:
    build(notebook)


@examples(600)
@given(notebooks(BAD))
def test_an_exported_handler_py_starts_a_handler_it_defines(notebook) -> None:
    try:
        report = build_worker(notebook)
    except Exception:  # judged by the property above
        return
    check_worker(report)


def _outcome(notebook) -> tuple:
    try:
        report = build_worker(notebook)
    except Exception as error:  # whether it should be an ExportError is judged above
        return type(error), str(error), getattr(error, "cell", None), getattr(error, "line", None)
    return report.handler, report.files, report.cells, report.notes


@examples(300)
@given(notebooks())
def test_export_is_deterministic_and_leaves_the_notebook_alone(notebook) -> None:
    before = copy.deepcopy(notebook)
    first = _outcome(notebook)
    assert notebook == before, "build_worker changed the notebook"
    assert _outcome(copy.deepcopy(notebook)) == first
    assert _outcome(notebook) == first


# Cells that neither fail an export nor change what `handler` does, wherever they stand.
HARMLESS = [
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
    kind = draw(st.sampled_from(["code", "code", "markdown", "unneeded", "run"]))
    if kind == "markdown":
        return new_markdown_cell(draw(st.text(max_size=40)))
    if kind == "unneeded":  # not needed by the handler, so left out whatever it holds
        source = draw(code_sources(BAD))
        return _cell(source, draw(st.sampled_from([[], ["nbworker:skip"]])))
    if kind == "run":
        cell = _cell("%rp_test {'input': [1, 2]}", [])
        cell.outputs = draw(run_outputs())
        return cell
    lines = draw(st.lists(st.sampled_from(HARMLESS), min_size=1, max_size=3))
    return _cell("\n".join(lines), draw(st.lists(st.sampled_from(TAGS), max_size=1)))


HANDLER_CELL = "def handler(job):\n    return {'n': len(job['input'])}"


@examples(300)
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


@examples(300)
@given(
    st.lists(cells(BAD), max_size=4),
    st.lists(cells(BAD), max_size=4),
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
    if skipped and cell.cell_type == "code":
        cell.metadata["tags"] = ["nbworker:skip"]
    notebook = new_notebook(
        cells=[*above, cell, *below, new_code_cell(f"%%handler\n{HANDLER_CELL}")]
    )
    try:
        result = build_worker(notebook)
    except Exception as error:  # an ExportError; any other is the first property's failure
        assert literal not in str(error)
        if isinstance(error, ExportError):
            check_message(error)
    else:
        leaks = [path for path, text in result.files.items() if literal in text]
        raise AssertionError(f"a notebook holding a secret was exported; it is in {leaks}")


# The notebook's file name (export takes it from the path; an nbformat notebook can carry
# it in its metadata): it goes into handler.py's docstring and requirements.txt's header.
NAMES = ["nb.json", "my notebook.ipynb", "it's.ipynb", 'x""";import os;""".ipynb', "a\\N.ipynb"]
names = st.one_of(
    st.sampled_from(NAMES),
    st.text(max_size=20).map(lambda text: text + ".ipynb"),
    st.text(max_size=20),
)


def check_name(report: ExportReport, name: str) -> None:
    """The name shows whole (or on one line) in handler.py's docstring and the header line
    of requirements.txt: text there, never code or requirements."""
    shown = (name, " ".join(name.splitlines()))
    docstring = ast.get_docstring(ast.parse(report.files["handler.py"])) or ""
    assert any(form in docstring for form in shown), f"handler.py's docstring: {docstring!r}"
    header = report.files["requirements.txt"].split("\n", 1)[0]
    assert any(form in header for form in shown), f"requirements.txt's header: {header!r}"


@examples(300)
@given(names)
def test_any_notebook_name_gives_working_files_or_a_one_line_error(name) -> None:
    notebook = new_notebook(cells=[new_code_cell(f"%%handler\n{HANDLER_CELL}")])
    notebook.metadata["nbworker_name"] = name
    result = build(notebook)
    if isinstance(result, ExportReport):
        check_name(result, name)


# ------------------------------------------- the smallest failures the properties have found
# Each crashed the exporter, or exported a worker that broke at start-up, before its fix.

H = "%%handler\ndef handler(job):\n    return 1"


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        # SyntaxError out of symtable: a scope error only symtable sees. The cell is not needed.
        pytest.param(["nonlocal x", H], None, id="scope-error-in-an-unneeded-cell"),
        pytest.param(
            ["nonlocal x", "%%handler\ndef handler(job):\n    return x"],
            "`x` is used by cell 1 (%%handler) but no cell defines it (cell 0, line 1: "
            "SyntaxError: nonlocal declaration not allowed at module level)",
            id="scope-error-in-the-cell-that-would-define-a-name",
        ),
        # ValueError out of shlex.split: a shell line with one quote.
        pytest.param(["!echo don't", H], None, id="unbalanced-quote-in-shell-line"),
        # UnicodeEncodeError out of ast.parse: a lone surrogate.
        pytest.param(["x = 1  # \udc80", H], None, id="lone-surrogate"),
        # A %%handler name that is no Python name (the magic refuses it too).
        pytest.param(
            ["%%handler a.b\ndef handler(job):\n    return 1"],
            "no %%handler cell can be read: cell 0: %%handler 'a.b': not a Python name",
            id="dotted-name",
        ),
        # A \r in a %%handler line ended the line of the message naming the cell, and the
        # `# --- cell 0: %%handler ...` comment in handler.py. A \r ends a line for IPython
        # (str.splitlines): the magic line is `%%handler 0`, the body `0`, as in the kernel...
        pytest.param(
            ["%%handler 0\r0", "%%handler\ndef handler(job):\n    return x"],
            "`x` is used by cell 1 (%%handler) but no cell defines it (cell 0: %%handler '0': "
            "not a Python name)",
            id="carriage-return-in-message",
        ),
        # ... and here the body starts with `--aggregate`: Python that reads a name.
        pytest.param(
            ["%%handler --aggregate\r--aggregate\ndef handler(job):\n    yield 1"],
            "`aggregate` is used by cell 0 (%%handler --aggregate) but no cell defines it",
            id="carriage-return-in-header",
        ),
        # A %%handler NAME the cell does not define: it must come from another cell...
        pytest.param(
            ["%%handler missing\ndef handler(job):\n    return 1"],
            "`missing` is used by cell 0 (%%handler missing) but no cell defines it",
            id="undefined-handler-name",
        ),
        # ... which is then taken, as the magic would have registered it.
        pytest.param(
            [
                "def missing(job):\n    return 2",
                "%%handler missing\ndef handler(job):\n    return 1",
            ],
            None,
            id="handler-name-from-an-earlier-cell",
        ),
    ],
)
def test_smallest_failures(sources: list[str], expected: str | None) -> None:
    result = build(new_notebook(cells=[new_code_cell(text) for text in sources]))
    if expected is None:
        assert isinstance(result, ExportReport), result
        check_worker(result)
    else:
        assert isinstance(result, ExportError) and str(result) == expected, result


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nb.json", "the notebook's file name must end in .ipynb: 'nb.json'"),
        (
            'x""";import os;""".ipynb',
            'the notebook\'s file name \'x""";import os;""".ipynb\' has characters the '
            "worker's files cannot carry ('\"'); rename the notebook",
        ),
        (
            "a\nrequests==0.0.1\n#.ipynb",
            "the notebook's file name 'a\\nrequests==0.0.1\\n#.ipynb' has characters the "
            "worker's files cannot carry ('\\n'); rename the notebook",
        ),
    ],
)
def test_unusable_notebook_names_are_refused(tmp_path, name: str, expected: str) -> None:
    notebook = new_notebook(cells=[new_code_cell(H)])
    if "\n" not in name:  # a file of that name, exported by path
        path = tmp_path / name
        path.write_text(nbformat.writes(notebook))
        notebook = path
    else:
        notebook.metadata["nbworker_name"] = name
    result = build(notebook)
    assert isinstance(result, ExportError) and str(result) == expected, result


# ------------------------------------------------------------- Python that IPython leaves as is

# Lines that are Python, IPython syntax, or Python only in some places (inside a string, a
# bracket or a block), mixed at random: `as_python` may skip IPython's transformation only
# where the transformation would leave the text as it is.
FRAGMENTS = [
    "x = 1",
    "",
    "   ",
    "    y = 2",
    "def f(a):",
    "    return a % 2",
    "s = '''",
    ">>> print(1)",
    "In [1]: x",
    "%time x = 1",
    "%%time",
    "!ls -la",
    "a = !ls",
    "b = %pwd",
    "x?",
    "?x",
    "/f 1",
    ",f a b",
    ";f a",
    "'''",
    "z = (1,",
    "     2)",
    "w = 3 \\",
    "    + 4",
    "# %not a magic",
    "async def g():",
    "    await h()",
    "await h()",
    "get_ipython().run_line_magic('time', 'x')",
    "if x:",
    "    %time y",
    "\tt = 1",
    "q = '%s' % x",
    "d = {",
    "    ...: 1,",
    "...: 2",
    "}",
    "[nav] In [2]: x",
    "    >>> doctest()",
    "\r",
]


@examples(400)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6), st.booleans())
def test_as_python_skips_ipythons_transform_only_where_it_changes_nothing(
    lines: list[str], newline_at_end: bool
) -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    from nbworker.export.cells import as_python

    text = "\n".join(lines) + ("\n" if newline_at_end else "")
    try:
        transformed = TransformerManager().transform_cell(text)
        expected: object = (transformed, ast.dump(ast.parse(transformed)))
    except (SyntaxError, ValueError) as err:
        expected = type(err)
    try:
        got, tree = as_python(text)
        found: object = (got, ast.dump(tree))
    except (SyntaxError, ValueError) as err:
        found = type(err)
    assert found == expected, text
