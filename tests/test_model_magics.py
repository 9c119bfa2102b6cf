"""`%%model` and `%rp_models` in a real IPython InteractiveShell."""

from __future__ import annotations

import builtins
import re
import weakref

import pytest
from shell import Shell

MODEL_CELL = """
%%model encoder
import builtins, torch
builtins.NBW_LOADS = getattr(builtins, "NBW_LOADS", 0) + 1  # outside what %reset clears
encoder = torch.nn.Linear(256, 256)  # 256*256*4 + 256*4 bytes
scale = 2.0
"""
ENCODER_BYTES = 256 * 256 * 4 + 256 * 4


@pytest.fixture(autouse=True)
def load_counter():
    builtins.NBW_LOADS = 0
    yield
    del builtins.NBW_LOADS


def test_first_run_loads_and_reruns_are_hits(shell: Shell) -> None:
    first = shell.ok(MODEL_CELL).captured.stdout
    assert first.startswith("encoder: loaded in ")
    assert first.rstrip().endswith("257.0 KiB on cpu (encoder, scale)")
    encoder = shell.ipython.user_ns["encoder"]
    hit = shell.ok(MODEL_CELL).captured.stdout
    assert builtins.NBW_LOADS == 1
    assert hit.startswith("encoder: cache hit, loaded just now in ")
    assert shell.ipython.user_ns["encoder"] is encoder
    (entry,) = shell.session.cache.info()
    assert (entry.hits, entry.memory) == (1, {"cpu": ENCODER_BYTES})
    assert entry.source.strip() == MODEL_CELL.strip().split("\n", 1)[1]


def test_changed_source_and_reload_release_first(shell: Shell) -> None:
    shell.ok(MODEL_CELL)
    old = weakref.ref(shell.ipython.user_ns["encoder"])
    out = shell.ok(MODEL_CELL.replace("scale = 2.0", "scale = 3.0")).captured.stdout
    assert out.splitlines()[0] == "encoder: released (source changed), 257.0 KiB on cpu"
    assert old() is None  # the old model is gone, not just replaced in the namespace
    assert builtins.NBW_LOADS == 2 and shell.ipython.user_ns["scale"] == 3.0
    out = shell.ok(
        MODEL_CELL.replace("%%model encoder", "%%model encoder --reload")
    ).captured.stdout
    assert out.splitlines()[0] == "encoder: released (reload), 257.0 KiB on cpu"
    assert builtins.NBW_LOADS == 3


def test_the_cache_survives_reset_and_del(shell: Shell) -> None:
    shell.ok(MODEL_CELL)
    encoder = shell.ipython.user_ns["encoder"]
    shell.ok("%reset -f")
    assert "encoder" not in shell.ipython.user_ns
    shell.ok(MODEL_CELL)
    assert shell.ipython.user_ns["encoder"] is encoder
    shell.ok("del encoder, scale")
    shell.ok(MODEL_CELL)
    assert shell.ipython.user_ns["scale"] == 2.0
    assert builtins.NBW_LOADS == 1


def test_handlers_use_the_cached_model_across_a_reset(shell: Shell) -> None:
    shell.ok(MODEL_CELL)
    shell.ok(
        """
        %%handler
        import torch
        def handler(job):
            with torch.no_grad():
                return float(encoder(torch.ones(256)).sum() * scale)
        """
    )
    before = shell.record('%rp_test {"input": {}}')["output"]
    shell.ok("%reset -f")
    shell.ok(MODEL_CELL)
    assert shell.record('%rp_test {"input": {}}')["output"] == before
    assert builtins.NBW_LOADS == 1


def test_a_failed_load_leaves_nothing_behind(shell: Shell) -> None:
    shell.ok(MODEL_CELL)
    shell.ok("weights = 'the old weights'")
    result = shell.run(
        """
        %%model broken
        weights = [0] * 1000
        partial = object()
        raise FileNotFoundError("checkpoint.pt")
        """
    )
    assert isinstance(result.error_in_exec, FileNotFoundError)
    assert shell.session.cache.names() == ["encoder"]
    assert shell.ipython.user_ns["weights"] == "the old weights"
    assert "partial" not in shell.ipython.user_ns
    shown = re.sub(r"\x1b\[[0-9;]*m", "", result.captured.stdout)
    assert "Cell In[" in shown and 'raise FileNotFoundError("checkpoint.pt")' in shown


def test_evict_unbinds_the_names_and_clears_the_output_history(shell: Shell) -> None:
    shell.ok("%%model big\nimport numpy as np\nbig = np.ones(1000)")
    shell.ok("big")  # Out[n] and _ now hold it too
    watched = weakref.ref(shell.ipython.user_ns["big"])
    out = shell.ok("%rp_models --evict big").captured.stdout
    assert out.strip() == "big: released (evicted), 7.8 KiB on cpu"
    assert "big" not in shell.ipython.user_ns
    assert watched() is None


def test_evict_leaves_modules_bound(shell: Shell) -> None:
    """The cell's `import numpy as np` may be the binding an earlier cell made and later
    cells use: evicting the model frees the model and keeps the module."""
    shell.ok("import numpy as np")
    shell.ok("%%model big\nimport numpy as np\nbig = np.ones(1000)")
    out = shell.ok("%rp_models --evict big").captured.stdout
    assert out.strip() == "big: released (evicted), 7.8 KiB on cpu"
    assert "big" not in shell.ipython.user_ns
    assert shell.ok("np.zeros(2).tolist()").result == [0.0, 0.0]


def test_evict_warns_when_the_user_still_holds_the_model(shell: Shell) -> None:
    shell.ok("%%model m\nimport numpy as np\nm = np.ones(10)")
    shell.ok("kept = m")
    out = shell.ok("%rp_models --evict m").captured.stdout
    assert out.strip().endswith("⚠ still referenced elsewhere, not freed: m")


def test_table_and_clear(shell: Shell) -> None:
    shell.ok(MODEL_CELL)
    shell.ok(MODEL_CELL)
    shell.ok("%%model plain\nsettings = {'threshold': 0.5}")
    result = shell.ok("%rp_models")
    (output,) = result.captured.outputs
    text = output.data["text/plain"]
    assert text.splitlines()[0].split() == [
        "model",
        "names",
        "cpu",
        "loaded",
        "in",
        "hits",
        "last",
        "used",
    ]
    assert text.splitlines()[1].split()[:5] == ["encoder", "encoder,", "scale", "257.0", "KiB"]
    assert " 1 " in text.splitlines()[1]  # one hit
    assert text.splitlines()[-1] == "2 cached, 257.0 KiB, no budget"
    assert "<table " in output.data["text/html"]
    out = shell.ok("%rp_models --clear").captured.stdout
    assert out.splitlines() == [
        "encoder: released (cleared), 257.0 KiB on cpu",
        "plain: released (cleared), no arrays or tensors",
    ]
    assert shell.ok("%rp_models").captured.outputs[0].data["text/plain"] == (
        "the model cache is empty (0 cached, 0 B, no budget)"
    )


def test_budget_from_the_magic(shell: Shell) -> None:
    shell.ok("%%model a\nimport numpy as np\na = np.ones(2**17)")  # 1 MiB
    shell.ok("%%model b\nimport numpy as np\nb = np.ones(2**17)")
    assert shell.ok("%rp_models --budget 1.5MiB").captured.stdout.splitlines() == [
        "budget: 1.5MiB",
        "a: released (over budget), 1.0 MiB on cpu",
    ]
    out = shell.ok("%%model c\nimport numpy as np\nc = np.ones(2**18)").captured.stdout
    assert out.splitlines()[0] == "b: released (over budget), 1.0 MiB on cpu"
    assert out.splitlines()[-1] == (
        "⚠ c holds 2.0 MiB, more than the whole budget of 1.5 MiB: loaded anyway"
    )
    shell.ok("%rp_models --budget none")
    assert shell.session.cache.budget is None


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("%%model 1bad\nx = 1", "%%model: '1bad' is not a Python name"),
        ("%%model\nx = 1", "%%model: the following arguments are required: name"),
        (
            "%rp_models --evict nope",
            "%rp_models: no model named 'nope' is cached (the cache is empty)",
        ),
        (
            "%rp_models --budget lots",
            "%rp_models: 'lots' is not a size: write e.g. 8GiB, 512MiB, 2GB or a number of bytes",
        ),
    ],
)
def test_usage_errors(shell: Shell, cell: str, message: str) -> None:
    assert shell.usage_error(cell) == message


def test_a_syntax_error_does_not_release_the_loaded_model(shell: Shell) -> None:
    shell.ok(MODEL_CELL)
    message = shell.usage_error(MODEL_CELL.replace("scale = 2.0", "scale = (2.0"))
    assert message.startswith("%%model: SyntaxError at line 5 of the cell")
    assert shell.session.cache.names() == ["encoder"]
    assert "encoder" in shell.ipython.user_ns


def test_a_hit_binds_every_name_the_cell_binds_even_ones_already_held(shell: Shell) -> None:
    shell.ok("import numpy as np")
    cell = "%%model arr\nimport numpy as np\narr = np.arange(4.0)\nfor i in range(2):\n    pass"
    shell.ok(cell)
    assert sorted(shell.session.cache.entry("arr").objects) == ["arr", "i", "np"]
    shell.ok("%reset -f")
    shell.ok(cell)
    assert shell.ipython.user_ns["np"].__name__ == "numpy"
    assert shell.ipython.user_ns["i"] == 1


# The cache key is what the code means (source.code_key), not its text: a change of layout
# is a hit ("unchanged code"), a change of meaning reloads.
MEANING_CELL = '''
%%model encoder
import builtins
builtins.NBW_LOADS = getattr(builtins, "NBW_LOADS", 0) + 1
checkpoint = "hf://org/model#main"
count = 0
for step in range(3):
    tag = f"{count=}"
    count += 1


def describe():
    """The encoder."""
    return checkpoint
'''


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda c: c.replace("count = 0", "# a comment\ncount = 0  # why"), id="comments"
        ),
        pytest.param(lambda c: c.replace("\n", "\n\n"), id="blank-lines"),
        pytest.param(lambda c: c.replace("\n", "   \n"), id="trailing-spaces"),
        pytest.param(lambda c: c.replace("count = 0", "count = \\\n    0"), id="continuation"),
        pytest.param(lambda c: c.replace("count = 0", "count = (\n    0\n)"), id="parentheses"),
        pytest.param(
            lambda c: c.replace('"hf://org/model#main"', "'hf://org/model#main'"), id="quotes"
        ),
        pytest.param(lambda c: c.replace("#main", "#ma\\\nin"), id="continued-string"),
        pytest.param(lambda c: c.replace("    ", "\t"), id="tabs-for-spaces"),
        pytest.param(lambda c: c.replace("\n", "\r\n"), id="crlf"),
    ],
)
def test_a_change_of_layout_only_is_a_hit(shell: Shell, change) -> None:
    first = shell.ok(MEANING_CELL)
    assert first.captured.stdout.startswith("encoder: loaded in ")
    entry = shell.session.cache.entry("encoder")
    changed = change(MEANING_CELL)
    assert changed != MEANING_CELL
    out = shell.ok(changed).captured.stdout
    assert out.startswith("encoder: unchanged code, cache hit, loaded just now in "), out
    assert builtins.NBW_LOADS == 1 and shell.session.cache.entry("encoder") is entry
    again = shell.ok(MEANING_CELL).captured.stdout  # the text that loaded: a plain hit
    assert again.startswith("encoder: cache hit, loaded just now in ")
    assert builtins.NBW_LOADS == 1


@pytest.mark.parametrize(
    ("change", "effect"),
    [
        pytest.param(
            lambda c: c.replace("#main", "#dev"),
            ("checkpoint", "hf://org/model#dev"),
            id="a-# in-a-string",
        ),
        pytest.param(
            lambda c: c.replace("#main", ""), ("checkpoint", "hf://org/model"), id="string-cut-at-#"
        ),
        pytest.param(
            lambda c: c.replace("The encoder.", "The decoder."),
            ("describe", "The decoder."),
            id="docstring",
        ),
        pytest.param(
            lambda c: c.replace("    count += 1", "count += 1"),
            ("count", 1),
            id="dedented-out-of-the-loop",
        ),
        pytest.param(
            lambda c: c.replace("{count=}", "{count = }"),
            ("tag", "count = 2"),
            id="f-string-spaces",
        ),
        pytest.param(lambda c: c.replace("range(3)", "range(0x3)"), None, id="literal-spelling"),
    ],
)
def test_a_change_of_meaning_reloads(shell: Shell, change, effect) -> None:
    shell.ok(MEANING_CELL)
    changed = change(MEANING_CELL)
    out = shell.ok(changed).captured.stdout
    if effect is None:  # the same value spelled otherwise is the same code
        assert "unchanged code, cache hit" in out and builtins.NBW_LOADS == 1
        return
    assert out.splitlines()[0] == "encoder: released (source changed), no arrays or tensors"
    assert builtins.NBW_LOADS == 2
    name, value = effect
    bound = shell.ipython.user_ns[name]
    assert (bound.__doc__ if callable(bound) else bound) == value


def test_a_hit_that_no_longer_compiles_fails_and_keeps_the_model(shell: Shell) -> None:
    """Tabs and spaces mixed so that the meaning is ambiguous: a TabError, not a hit."""
    shell.ok(MEANING_CELL)
    mixed = MEANING_CELL.replace("    count +=", "\tcount +=")
    message = shell.usage_error(mixed)
    assert message.startswith("%%model: TabError at line 8 of the cell"), message
    assert shell.session.cache.names() == ["encoder"] and builtins.NBW_LOADS == 1


def test_the_options_line_is_not_the_code(shell: Shell) -> None:
    """--reload reloads code that has not changed; another name is another entry (the old
    one stays cached until evicted)."""
    shell.ok(MEANING_CELL)
    spaced = shell.ok(MEANING_CELL.replace("encoder", "  encoder  ", 1)).captured.stdout
    assert spaced.startswith("encoder: cache hit, ")  # the same body: not even "unchanged code"
    out = shell.ok(MEANING_CELL.replace("encoder", "encoder --reload", 1)).captured.stdout
    assert out.splitlines()[0] == "encoder: released (reload), no arrays or tensors"
    shell.ok(MEANING_CELL.replace("encoder", "other", 1))
    assert shell.session.cache.names() == ["encoder", "other"] and builtins.NBW_LOADS == 3


def test_a_cell_re_run_as_it_was_loaded_is_a_hit_without_a_parse(shell: Shell, monkeypatch):
    """The text the entry was loaded from gives the same tree, so the same key: a re-run of
    it is not parsed again; any other text is (a layout change is still a hit, by its tree;
    a change of code loads again)."""
    from nbworker import kernel

    parsed: list[str] = []
    real = kernel.parse_cell

    def counting(shell_, cell, **options):
        parsed.append(cell)
        return real(shell_, cell, **options)

    monkeypatch.setattr(kernel, "parse_cell", counting)
    shell.ok(MODEL_CELL)
    assert len(parsed) == 1
    for _ in range(3):
        assert shell.ok(MODEL_CELL).captured.stdout.startswith("encoder: cache hit")
    assert len(parsed) == 1 and builtins.NBW_LOADS == 1
    layout = MODEL_CELL.replace("scale = 2.0", "scale = 2.0  # the same code")
    assert "unchanged code, cache hit" in shell.ok(layout).captured.stdout
    assert len(parsed) == 2 and builtins.NBW_LOADS == 1
    changed = MODEL_CELL.replace("scale = 2.0", "scale = 3.0")
    assert "source changed" in shell.ok(changed).captured.stdout
    assert builtins.NBW_LOADS == 2 and shell.ipython.user_ns["scale"] == 3.0
    assert (
        "reload" in shell.ok(changed.replace("encoder\n", "encoder --reload\n", 1)).captured.stdout
    )
    assert builtins.NBW_LOADS == 3
