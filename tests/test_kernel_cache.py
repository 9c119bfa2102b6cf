"""End-to-end tests of the model cache (`%%model`, `%rp_models`) in a real Jupyter kernel.

No mocks: each test drives a kernel started from the `python3` kernelspec through
jupyter_client, with the `Kernel` of tests/kernel_client.py. Tests whose entries cannot
disturb one another share one kernel per module (conftest.py's `kernel`: each uses entry
and variable names of its own); tests that `%reset -f`, set a budget, or measure the
kernel's memory get a kernel of their own (`fresh_kernel`).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from helpers import notebook_records, write_notebook
from kernel_client import Execution, Kernel, strip_ansi

MiB = 2**20
RSS = (
    "int(__import__('pathlib').Path('/proc/self/statm').read_text().split()[1])"
    " * __import__('os').sysconf('SC_PAGE_SIZE')"
)
HIT = r"{name}: cache hit, loaded (?:just now|\d+ s ago) in \d+\.\d\d s, {memory} \({names}\)"
LOADED = r"{name}: loaded in \d+\.\d\d s, {memory} \({names}\)"


# --------------------------------------------------------------------------- helpers


def stdout_lines(execution: Execution) -> list[str]:
    return [line for line in strip_ansi(execution.stdout).splitlines() if line.strip()]


def assert_lines(execution: Execution, *patterns: str) -> None:
    """The cell printed exactly these lines (regular expressions), in this order."""
    lines = stdout_lines(execution)
    assert len(lines) == len(patterns) and all(
        re.fullmatch(pattern, line) for pattern, line in zip(patterns, lines, strict=False)
    ), f"expected lines {patterns}\n{execution.describe()}"


def loads(kernel: Kernel, counter: str) -> int:
    """How many times a cell ran `builtins.<counter> += 1` (kept where %reset cannot reach)."""
    return int(kernel.evaluate(f"getattr(__import__('builtins'), {counter!r}, 0)"))


def defined(kernel: Kernel, name: str) -> bool:
    return kernel.evaluate(f"{name!r} in globals()") == "True"


def object_id(kernel: Kernel, name: str) -> int:
    return int(kernel.evaluate(f"id({name})"))


def cached(kernel: Kernel) -> list[str]:
    """The names of the entries in the kernel's model cache, in load order."""
    return ast.literal_eval(
        kernel.evaluate("__import__('nbworker').default_session().cache.names()")
    )


def rss(kernel: Kernel) -> int:
    """The kernel process's resident set size, in bytes, read by the kernel itself."""
    return int(kernel.evaluate(RSS))


def table(kernel: Kernel) -> tuple[dict[str, Any], dict[str, dict[str, str]], str]:
    """`%rp_models`: its mimebundle, the rows of its text table by model name (column ->
    cell), and the summary line."""
    shown = kernel.ok("%rp_models")
    displays = shown.of_type("display_data")
    assert len(displays) == 1 and not shown.stdout, shown.describe()
    data = displays[0].content["data"]
    lines = data["text/plain"].splitlines()
    if len(lines) == 1:  # the model cache is empty (...)
        return data, {}, lines[0]
    header, rows, summary = lines[0], lines[1:-1], lines[-1]
    # Columns are left-justified: each starts where its heading starts.
    starts = [(m.start(), m[0]) for m in re.finditer(r"\S+(?: \S+)*", header)]
    parsed = {}
    for row in rows:
        cells = {
            title: row[start : (starts[i + 1][0] if i + 1 < len(starts) else None)].strip()
            for i, (start, title) in enumerate(starts)
        }
        parsed[cells["model"]] = cells
    return data, parsed, summary


def html_rows(markup: str) -> list[list[str]]:
    return [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", markup, re.S)
    ]


def model_cell(name: str, body: str, *, counter: str | None = None, flags: str = "") -> str:
    """A `%%model` cell; with `counter`, it counts its runs in `builtins.<counter>`."""
    lines = [f"%%model {name}{flags}"]
    if counter:
        lines += [
            "import builtins",
            f"builtins.{counter} = getattr(builtins, {counter!r}, 0) + 1",
        ]
    return "\n".join([*lines, body.strip("\n")])


def one_line_usage_error(result: Execution, expected: str) -> None:
    assert result.status == "error", result.describe()
    assert result.reply["ename"] == "UsageError", result.describe()
    evalue = result.reply["evalue"]
    assert expected in evalue, evalue
    assert "\n" not in evalue.strip(), evalue
    shown = [strip_ansi(line) for line in result.reply.get("traceback", [])]
    for message in result.of_type("error"):
        shown += [strip_ansi(line) for line in message.content["traceback"]]
    shown += result.stderr.splitlines()
    assert not any("nbworker/" in line for line in shown), shown
    assert len("\n".join(shown).strip().splitlines()) <= 3, shown
    assert not stdout_lines(result), result.describe()


# --------------------------------------------------------------------------- 1. load once

ENCODER = """
import torch
t1_net = torch.nn.Linear(8, 4)  # 32 + 4 float32: 144 B
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_model_cell_loads_once_and_reloads_on_edit_or_reload(kernel: Kernel) -> None:
    cell = model_cell("t1_enc", ENCODER, counter="NBW_LOADS_T1")
    first = kernel.ok(cell)
    assert_lines(first, LOADED.format(name="t1_enc", memory="144 B on cpu", names="t1_net"))
    assert loads(kernel, "NBW_LOADS_T1") == 1
    assert kernel.evaluate("type(t1_net).__name__") == "'Linear'"
    net_id = object_id(kernel, "t1_net")

    # Re-running the same cell is a hit: nothing runs, the names are bound again.
    kernel.ok("t1_net = None")
    hit = kernel.ok(cell)
    assert_lines(hit, HIT.format(name="t1_enc", memory="144 B on cpu", names="t1_net"))
    assert loads(kernel, "NBW_LOADS_T1") == 1
    assert object_id(kernel, "t1_net") == net_id
    assert cached(kernel).count("t1_enc") == 1

    # An edited source releases the old entry (all of it: nothing else holds it) and runs.
    edited = model_cell("t1_enc", ENCODER.replace("(8, 4)", "(8, 2)"), counter="NBW_LOADS_T1")
    kernel.ok("import weakref; t1_old = weakref.ref(t1_net)")
    changed = kernel.ok(edited)
    assert_lines(
        changed,
        r"t1_enc: released \(source changed\), 144 B on cpu",
        LOADED.format(name="t1_enc", memory="72 B on cpu", names="t1_net"),
    )
    assert loads(kernel, "NBW_LOADS_T1") == 2
    assert kernel.evaluate("t1_old() is None") == "True"
    assert kernel.evaluate("t1_net.out_features") == "2"
    assert_lines(kernel.ok(edited), HIT.format(name="t1_enc", memory="72 B on cpu", names="t1_net"))
    assert loads(kernel, "NBW_LOADS_T1") == 2

    # --reload releases and runs the same source again.
    edited_id = object_id(kernel, "t1_net")
    reloaded = kernel.ok(edited.replace("%%model t1_enc", "%%model t1_enc --reload", 1))
    assert_lines(
        reloaded,
        r"t1_enc: released \(reload\), 72 B on cpu",
        LOADED.format(name="t1_enc", memory="72 B on cpu", names="t1_net"),
    )
    assert loads(kernel, "NBW_LOADS_T1") == 3
    assert object_id(kernel, "t1_net") != edited_id
    # The reloaded entry is keyed by the same source: running it plainly is a hit.
    assert_lines(kernel.ok(edited), HIT.format(name="t1_enc", memory="72 B on cpu", names="t1_net"))
    assert loads(kernel, "NBW_LOADS_T1") == 3
    assert cached(kernel).count("t1_enc") == 1


# --------------------------------------------------------------------------- 2. survival

SURVIVOR = """
import torch
s2_net = torch.nn.Linear(3, 2)
with torch.no_grad():
    s2_net.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.25]]))
    s2_net.bias.fill_(0.5)
"""

SURVIVOR_HANDLER = """
%%handler s2_handler
def s2_handler(job):
    with torch.no_grad():
        y = s2_net(torch.tensor(job["input"]["x"], dtype=torch.float32))
    return {"y": y.tolist()}
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cache_and_handlers_survive_reset_and_del(fresh_kernel: Kernel) -> None:
    k = fresh_kernel
    cell = model_cell("s2_enc", SURVIVOR, counter="NBW_LOADS_S2")
    assert_lines(k.ok(cell), LOADED.format(name="s2_enc", memory="32 B on cpu", names="s2_net"))
    net_id = object_id(k, "s2_net")
    assert "registered `s2_handler` (sync)" in k.ok(SURVIVOR_HANDLER).stdout
    job = '%rp_test s2_handler {"input": {"x": [1, 2, 4]}}'
    before = k.ok(job).record()
    assert before["status"] == "COMPLETED", before
    assert before["output"] == {"y": [17.5, 0.0]}

    k.ok("%reset -f")
    assert not defined(k, "s2_net")
    assert not defined(k, "torch")
    # The handler registry survives %reset -f; the handler's globals are gone for now.
    names = k.evaluate("__import__('nbworker').default_session().registry.names()")
    assert names == "['s2_handler']"
    assert k.ok(job).record()["status"] == "FAILED"
    assert cached(k) == ["s2_enc"]

    after_reset = k.ok(cell)
    assert_lines(after_reset, HIT.format(name="s2_enc", memory="32 B on cpu", names="s2_net"))
    assert loads(k, "NBW_LOADS_S2") == 1
    assert object_id(k, "s2_net") == net_id
    after = k.ok(job).record()
    assert after["status"] == "COMPLETED", after
    assert after["output"] == before["output"]

    k.ok("del s2_net")
    assert not defined(k, "s2_net")
    after_del = k.ok(cell)
    assert_lines(after_del, HIT.format(name="s2_enc", memory="32 B on cpu", names="s2_net"))
    assert loads(k, "NBW_LOADS_S2") == 1
    assert object_id(k, "s2_net") == net_id
    assert k.ok(job).record()["output"] == before["output"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hit_after_reset_binds_names_the_namespace_already_held(fresh_kernel: Kernel) -> None:
    k = fresh_kernel
    k.ok("import numpy as np  # an earlier cell imports what the model cell imports too")
    cell = model_cell("r2_enc", "import numpy as np\nr2_arr = np.arange(4.0)")
    k.ok(cell)
    k.ok("%%handler r2_handler\ndef r2_handler(job):\n    return {'sum': float(np.sum(r2_arr))}")
    job = '%rp_test r2_handler {"input": {}}'
    before = k.ok(job).record()
    assert before["output"] == {"sum": 6.0}, before

    k.ok("%reset -f")
    assert_lines(k.ok(cell), HIT.format(name="r2_enc", memory="32 B on cpu", names="r2_arr"))
    assert defined(k, "r2_arr")
    # The cell binds `np` too: after the hit, code written against the cell works as before.
    after = k.ok(job).record()
    assert (after["status"], after["output"]) == ("COMPLETED", before["output"]), after["error"]
    assert defined(k, "np"), "the hit did not bind `np`, which the cell binds"


# --------------------------------------------------------------------------- 3. failure


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_failed_load_leaves_no_entry_and_restores_the_namespace(kernel: Kernel) -> None:
    kernel.ok("f3_keep = 'the value before'  # a variable the failing cell rebinds")
    keep_id = object_id(kernel, "f3_keep")
    other = model_cell("f3_other", "import numpy\nf3_other_arr = numpy.arange(16)")
    kernel.ok(other)
    other_id = object_id(kernel, "f3_other_arr")
    _, rows, _ = table(kernel)
    other_row = rows["f3_other"]

    failing = model_cell(
        "f3_fail",
        """
import numpy
f3_keep = numpy.ones(1000)
f3_half = "half-loaded"
raise RuntimeError("cannot load f3")
""",
        counter="NBW_LOADS_F3",
    )
    for attempt in (1, 2):  # a failure is not cached: the cell runs again
        result = kernel.execute(failing)
        assert result.status == "error", result.describe()
        assert result.reply["ename"] == "RuntimeError", result.describe()
        assert result.reply["evalue"] == "cannot load f3"
        (error,) = result.of_type("error")
        assert error.content["ename"] == "RuntimeError"
        assert not stdout_lines(result), result.describe()
        assert loads(kernel, "NBW_LOADS_F3") == attempt

        _, rows, _ = table(kernel)
        assert "f3_fail" not in rows, rows
        assert "f3_fail" not in cached(kernel)
        assert not defined(kernel, "f3_half")
        assert kernel.evaluate("f3_keep") == "'the value before'"
        assert object_id(kernel, "f3_keep") == keep_id
        # The other entry is untouched: still cached, bound, not used.
        assert rows["f3_other"]["hits"] == other_row["hits"]
        assert rows["f3_other"]["cpu"] == "128 B"
        assert object_id(kernel, "f3_other_arr") == other_id

    assert_lines(
        kernel.ok(other), HIT.format(name="f3_other", memory="128 B on cpu", names="f3_other_arr")
    )


NESTED = """
n5_tokenizer = numpy.zeros(2**20, numpy.uint8)  # 1 MiB
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_model_cell_may_run_another_and_a_cycle_is_one_line(kernel: Kernel) -> None:
    inner = f"get_ipython().run_cell_magic('model', 'n5_inner', {NESTED!r})"
    outer = model_cell(
        "n5_outer",
        f"import numpy\n{inner}\nn5_encoder = numpy.ones(2**19, numpy.uint8)",
        counter="NBW_LOADS_N5",
    )
    kernel.ok(outer)
    assert cached(kernel)[-2:] == ["n5_inner", "n5_outer"]
    _, rows, _ = table(kernel)
    # the tokenizer counts in its own entry only, though outer binds it too
    assert (rows["n5_inner"]["cpu"], rows["n5_outer"]["cpu"]) == ("1.0 MiB", "512.0 KiB"), rows
    kernel.ok("del n5_tokenizer, n5_encoder")
    again = kernel.ok(outer)  # a hit binds both again, and runs nothing
    assert "n5_outer: cache hit" in again.stdout and loads(kernel, "NBW_LOADS_N5") == 1
    assert defined(kernel, "n5_tokenizer") and defined(kernel, "n5_encoder")

    # outer fails after inner loaded: inner stays, outer leaves nothing
    failing = model_cell("n5_fails", f"import numpy\n{inner}\nraise RuntimeError('n5 broke')")
    kernel.ok("get_ipython().run_line_magic('rp_models', '--evict n5_inner')")
    result = kernel.execute(failing)
    assert result.reply["ename"] == "RuntimeError", result.describe()
    assert "n5_inner" in cached(kernel) and "n5_fails" not in cached(kernel)

    cycle = model_cell("n5_cycle", "get_ipython().run_cell_magic('model', 'n5_cycle', 'n5_x = 1')")
    result = kernel.execute(cycle)  # a deadlocked kernel would time this test out
    assert result.reply["ename"] == "UsageError", result.describe()
    assert "loading 'n5_cycle' needs 'n5_cycle' itself" in result.reply["evalue"]
    shown = [strip_ansi(line) for line in result.reply.get("traceback", [])]
    assert len(shown) <= 1 and not any("nbworker/" in line for line in shown), shown
    assert "n5_cycle" not in cached(kernel) and not defined(kernel, "n5_x")


# --------------------------------------------------------------------------- 4. eviction

BIG = "import numpy\n{name} = numpy.ones(200 * 2**20 // 8)  # 200 MiB, every page written"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_evict_frees_the_memory(fresh_kernel: Kernel) -> None:
    k = fresh_kernel
    k.ok("import numpy, weakref")
    start = rss(k)
    loaded = k.ok(model_cell("e4_big", BIG.format(name="e4_arr")))
    assert_lines(loaded, LOADED.format(name="e4_big", memory=r"200\.0 MiB on cpu", names="e4_arr"))
    k.ok("e4_ref = weakref.ref(e4_arr)")
    full = rss(k)
    assert full - start >= 190 * MiB, (start, full)

    evicted = k.ok("%rp_models --evict e4_big")
    assert_lines(evicted, r"e4_big: released \(evicted\), 200\.0 MiB on cpu")
    assert not defined(k, "e4_arr")
    assert k.evaluate("e4_ref()") == "None"
    assert cached(k) == []
    freed = full - rss(k)
    assert freed >= 150 * MiB, f"RSS dropped by {freed / MiB:.1f} MiB"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_evict_frees_an_object_that_was_a_cells_value(fresh_kernel: Kernel) -> None:
    k = fresh_kernel
    k.ok("import numpy, weakref")
    start = rss(k)
    k.ok(model_cell("e4_out", BIG.format(name="e4_out_arr")))
    shown = k.ok("e4_out_arr")  # the cell's value: Out[n], _, _n and the displayhook hold it
    assert len(shown.of_type("execute_result")) == 1, shown.describe()
    n = shown.reply["execution_count"]
    k.ok("e4_out_ref = weakref.ref(e4_out_arr)")
    held = f"Out[{n}] is _{n} is _ is get_ipython().displayhook._ is e4_out_arr"
    assert k.evaluate(held) == "True"
    full = rss(k)
    assert full - start >= 190 * MiB, (start, full)

    evicted = k.ok("%rp_models --evict e4_out")
    problems = []
    lines = stdout_lines(evicted)
    if lines != ["e4_out: released (evicted), 200.0 MiB on cpu"]:
        problems.append(f"eviction printed {lines}")
    if defined(k, "e4_out_arr"):
        problems.append("e4_out_arr is still bound")
    if k.evaluate(f"{n} in Out") != "False":
        problems.append(f"Out[{n}] is still there")
    if k.evaluate("e4_out_ref() is None") != "True":
        holders = k.evaluate("[name for name, v in globals().items() if v is e4_out_ref()]")
        by_hook = k.evaluate(
            "[u for u in ('_', '__', '___') if getattr(get_ipython().displayhook, u) is e4_out_ref()]"
        )
        problems.append(
            f"the evicted array is alive: user_ns names {holders}, displayhook attributes {by_hook}"
        )
    freed = full - rss(k)
    if freed < 150 * MiB:
        problems.append(f"RSS dropped by {freed / MiB:.1f} MiB only")
    # `_` goes on following the cells' values.
    k.ok("6 * 7")
    if k.evaluate("_") != "42":
        problems.append(
            f"after the eviction, `_` is {k.evaluate('_')} after a cell whose value is 42"
        )
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- 5. budget


def twelve_mib(name: str) -> str:
    return model_cell(name, f"import numpy\n{name}_arr = numpy.ones(12 * 2**20 // 8)")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_budget_evicts_least_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBWORKER_CACHE_BUDGET", "1GiB")  # read when the kernel's cache is made
    k = Kernel(tmp_path)
    try:
        _, _, summary = table(k)
        assert summary == "the model cache is empty (0 cached, 0 B of a 1.0 GiB budget)", summary

        assert_lines(k.ok("%rp_models --budget 30MiB"), r"budget: 30MiB")
        twelve = r"12\.0 MiB on cpu"
        assert_lines(
            k.ok(twelve_mib("b5_a")), LOADED.format(name="b5_a", memory=twelve, names="b5_a_arr")
        )
        assert_lines(
            k.ok(twelve_mib("b5_b")), LOADED.format(name="b5_b", memory=twelve, names="b5_b_arr")
        )
        # Touch b5_a: b5_b becomes the least recently used although b5_a was loaded first.
        assert_lines(
            k.ok(twelve_mib("b5_a")), HIT.format(name="b5_a", memory=twelve, names="b5_a_arr")
        )
        third = k.ok(twelve_mib("b5_c"))
        assert_lines(
            third,
            r"b5_b: released \(over budget\), 12\.0 MiB on cpu",
            LOADED.format(name="b5_c", memory=twelve, names="b5_c_arr"),
        )
        assert cached(k) == ["b5_a", "b5_c"]
        assert not defined(k, "b5_b_arr")
        assert defined(k, "b5_a_arr") and defined(k, "b5_c_arr")
        _, _, summary = table(k)
        assert summary == "2 cached, 24.0 MiB of a 30.0 MiB budget", summary

        # An entry bigger than the whole budget loads, with a warning, and pushes out the rest.
        big = model_cell("b5_big", "import numpy\nb5_big_arr = numpy.ones(40 * 2**20 // 8)")
        over = k.ok(big)
        assert_lines(
            over,
            r"b5_a: released \(over budget\), 12\.0 MiB on cpu",
            r"b5_c: released \(over budget\), 12\.0 MiB on cpu",
            LOADED.format(name="b5_big", memory=r"40\.0 MiB on cpu", names="b5_big_arr"),
            r"⚠ b5_big holds 40\.0 MiB, more than the whole budget of 30\.0 MiB: loaded anyway",
        )
        assert cached(k) == ["b5_big"]
        assert defined(k, "b5_big_arr")

        assert_lines(k.ok("%rp_models --budget none"), r"budget: none")
        assert_lines(
            k.ok(twelve_mib("b5_d")), LOADED.format(name="b5_d", memory=twelve, names="b5_d_arr")
        )
        assert cached(k) == ["b5_big", "b5_d"]
        _, _, summary = table(k)
        assert summary == "2 cached, 52.0 MiB, no budget", summary
    finally:
        k.shutdown()


# --------------------------------------------------------------------------- 6. table


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_rp_models_shows_a_table(kernel: Kernel) -> None:
    kernel.ok(model_cell("t6_arrays", "import numpy\nt6_arr = numpy.ones(2**20 // 8)"))
    kernel.ok(model_cell("t6_pair", "import numpy\nt6_x = numpy.ones(3)\nt6_y = numpy.ones(5)"))
    for _ in range(2):
        kernel.ok(model_cell("t6_arrays", "import numpy\nt6_arr = numpy.ones(2**20 // 8)"))

    data, rows, summary = table(kernel)
    assert set(data) == {"text/plain", "text/html"}
    header = data["text/plain"].splitlines()[0].split()
    assert header[:3] == ["model", "names", "cpu"], header
    arrays, pair = rows["t6_arrays"], rows["t6_pair"]
    assert (arrays["names"], arrays["cpu"], arrays["hits"]) == ("t6_arr", "1.0 MiB", "2")
    assert (pair["names"], pair["cpu"], pair["hits"]) == ("t6_x, t6_y", "64 B", "0")
    assert re.fullmatch(r"\d+\.\d\d s", arrays["loaded in"]), arrays
    assert re.fullmatch(r"just now|\d+ s ago", arrays["last used"]), arrays
    assert list(rows).index("t6_arrays") < list(rows).index("t6_pair")  # load order
    assert re.fullmatch(rf"{len(rows)} cached, \S+ (B|KiB|MiB), no budget", summary), summary

    markup = data["text/html"]
    assert "<table" in markup and "</table>" in markup
    html = html_rows(markup)
    assert html[0][:3] == ["model", "names", "cpu"]
    hits = html[0].index("hits")
    by_name = {row[0]: row for row in html[1:]}
    assert by_name["t6_arrays"][1:3] == ["t6_arr", "1.0 MiB"]
    assert by_name["t6_arrays"][hits] == "2"
    assert by_name["t6_pair"][1:3] == ["t6_x, t6_y", "64 B"]
    assert summary in markup


# --------------------------------------------------------------------------- 7. usage errors


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param("%%model 1bad\nx = 1\n", "%%model: '1bad' is not a Python name", id="bad-name"),
        pytest.param("%rp_models --evict nope", "%rp_models: no model named 'nope' is cached", id="evict-unknown"),
        pytest.param("%rp_models --budget lots", "%rp_models: 'lots' is not a size", id="bad-budget"),
        pytest.param("%%model u7_syntax\nu7_x = (1,\n", "%%model: SyntaxError at line 2 of the cell", id="syntax"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(kernel: Kernel, code: str, expected: str) -> None:
    entries = cached(kernel)
    one_line_usage_error(kernel.execute(code), expected)
    assert cached(kernel) == entries
    assert not defined(kernel, "u7_x")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_syntax_error_does_not_release_the_entry(kernel: Kernel) -> None:
    cell = model_cell("u7_enc", "import numpy\nu7_arr = numpy.arange(8)", counter="NBW_LOADS_U7")
    kernel.ok(cell)
    arr_id = object_id(kernel, "u7_arr")
    for flags in ("", " --reload"):
        broken = model_cell("u7_enc", "import numpy\nu7_arr = numpy.arange(8\n", flags=flags)
        one_line_usage_error(kernel.execute(broken), "%%model: SyntaxError at line 3 of the cell")
        assert "u7_enc" in cached(kernel)
        assert object_id(kernel, "u7_arr") == arr_id
    _, rows, _ = table(kernel)
    assert rows["u7_enc"]["hits"] == "0"
    assert_lines(kernel.ok(cell), HIT.format(name="u7_enc", memory="64 B on cpu", names="u7_arr"))
    assert loads(kernel, "NBW_LOADS_U7") == 1
    assert object_id(kernel, "u7_arr") == arr_id


# --------------------------------------------------------------------------- 8. papermill

PM_MODEL = """\
%%model pm_enc
import torch
pm_net = torch.nn.Linear(2, 1)
with torch.no_grad():
    pm_net.weight.fill_(0.5)
    pm_net.bias.fill_(-1.0)"""

PM_HANDLER = """\
%%handler
def handler(job):
    with torch.no_grad():
        y = pm_net(torch.tensor(job["input"]["x"], dtype=torch.float32))
    return {"y": y.tolist()}"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_papermill_runs_a_notebook_with_a_model_cell(tmp_path: Path) -> None:
    source, output = tmp_path / "model.ipynb", tmp_path / "model.out.ipynb"
    write_notebook(
        source,
        [
            "%load_ext nbworker",
            PM_MODEL,
            PM_HANDLER,
            '%rp_test {"input": {"x": [2, 4]}}',
            PM_MODEL,  # the same cell again: a hit
            '%rp_test {"input": {"x": [1, 1]}}',
        ],
    )
    papermill.execute_notebook(
        str(source), str(output), kernel_name="python3", progress_bar=False, cwd=str(tmp_path)
    )

    notebook = nbformat.read(str(output), as_version=4)
    assert not any(o["output_type"] == "error" for cell in notebook.cells for o in cell.outputs)

    def text(index: int) -> str:
        return "".join(o.get("text", "") for o in notebook.cells[index].outputs)

    assert re.fullmatch(
        LOADED.format(name="pm_enc", memory="12 B on cpu", names="pm_net") + "\n", text(1)
    )
    assert text(2) == "registered `handler` (sync)\n"
    assert re.fullmatch(
        HIT.format(name="pm_enc", memory="12 B on cpu", names="pm_net") + "\n", text(4)
    )
    records = notebook_records(notebook)
    assert [(index, record["status"]) for index, record in records] == [
        (3, "COMPLETED"),
        (5, "COMPLETED"),
    ]
    assert records[0][1]["handler"] == "handler"
    assert records[0][1]["job"] == {"id": "local_test", "input": {"x": [2, 4]}}
    assert records[0][1]["output"] == {"y": [2.0]}
    assert records[0][1]["error"] is None
    assert records[1][1]["output"] == {"y": [0.0]}
    assert json.loads(json.dumps(records[0][1])) == records[0][1]  # what was saved is JSON
