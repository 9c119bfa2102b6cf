"""How finished runs and the cache look: theme colours measured against JupyterLab's own
theme CSS, bounded values, streams, the wording, and a real markdown export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import markdown_it
import nbformat
import pytest

from nbworker import Session
from nbworker.cache import ModelCache
from nbworker.display import (
    COLORS,
    DIM_COLOR,
    MARKS,
    MAX_SHOWN,
    NOTE_BACKGROUND,
    TEXT_COLOR,
    VALUE_BACKGROUND,
    cache_bundle,
    card_open,
    chunks_view,
    duration,
    entry_line,
    plural,
    run_bundle,
    value_html,
)
from nbworker.live import live_bundle
from nbworker.record import RECORD_MIMETYPE
from nbworker.values import WIDTH

THEMES = Path(sys.prefix, "share/jupyter/lab/themes/@jupyterlab")


def run_of(handler, job_input=None, **options):
    session = Session()
    try:
        return session.run_job({"input": job_input or {}}, handler, **options)
    finally:
        session.close()


# --------------------------------------------------------------------------- theme contrast


def _theme(name: str) -> dict[str, str]:
    """The --jp-* variables a JupyterLab theme sets, resolved to colours."""
    css = (THEMES / f"theme-{name}-extension/index.css").read_text(encoding="utf-8")
    material = {}  # --md-* colours, as the themes' own fallbacks give them
    for path in THEMES.glob("theme-*-extension/index.css"):
        material.update(
            re.findall(r"var\(--(md-[a-z]+-\d+),\s*(#[0-9a-fA-F]+)\)", path.read_text())
        )
    defined = dict(re.findall(r"--(jp-[a-z0-9-]+):\s*([^;}]+)", css))

    def resolve(value: str) -> str:
        match = re.fullmatch(r"var\(--([a-z0-9-]+)(?:,\s*(.+))?\)", value.strip())
        if not match:
            return value.strip()
        name, fallback = match[1], match[2]
        if name in defined:
            return resolve(defined[name])
        return material.get(name) or resolve(fallback or "")

    return {name: resolve(value) for name, value in defined.items()}


def _rgba(value: str) -> tuple[float, float, float, float]:
    value = {"white": "#fff", "black": "#000"}.get(value, value)
    if value.startswith("#"):
        digits = value[1:] if len(value) > 4 else "".join(c * 2 for c in value[1:])
        return (*(int(digits[i : i + 2], 16) for i in (0, 2, 4)), 1.0)  # type: ignore[return-value]
    numbers = [float(part) for part in re.fullmatch(r"rgba?\((.*)\)", value)[1].split(",")]
    return (*numbers[:3], numbers[3] if len(numbers) > 3 else 1.0)  # type: ignore[return-value]


def _over(top, bottom):
    alpha = top[3]
    return (*(top[i] * alpha + bottom[i] * (1 - alpha) for i in range(3)), 1.0)


def _contrast(fg, bg) -> float:
    def luminance(color) -> float:
        def channel(x: float) -> float:
            x /= 255
            return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

        return 0.2126 * channel(color[0]) + 0.7152 * channel(color[1]) + 0.0722 * channel(color[2])

    lighter, darker = sorted([luminance(_over(fg, bg)), luminance(bg)], reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _in_theme(expression: str, theme: dict[str, str]):
    """The colour a `var(--jp-x, fallback)` expression has under `theme`."""
    match = re.fullmatch(r"var\(--(jp-[a-z0-9-]+),\s*(.+)\)", expression)
    if match:
        return _rgba(theme.get(match[1]) or match[2])
    return _rgba(expression)


@pytest.mark.parametrize("name", ["light", "dark", "dark-high-contrast"])
def test_text_reads_at_4_5_to_1_and_marks_at_3_to_1_in_every_jupyterlab_theme(name) -> None:
    theme = _theme(name)
    for background_name in ("jp-layout-color0", "jp-layout-color1"):
        background = _rgba(theme[background_name])
        text, dim = _in_theme(TEXT_COLOR, theme), _in_theme(DIM_COLOR, theme)
        assert _contrast(text, background) >= 4.5
        assert _contrast(dim, background) >= 4.5  # the summaries' dimmer text
        value_box = _over(_in_theme(VALUE_BACKGROUND, theme), background)
        assert _contrast(text, value_box) >= 4.5  # text in a scroll box
        note_box = _over(_rgba(NOTE_BACKGROUND), background)
        assert _contrast(text, note_box) >= 4.5  # a warning
        for status, color in COLORS.items():  # marks and borders only (non-text: 3:1)
            assert _contrast(_in_theme(color, theme), background) >= 3, (status, background_name)


def test_the_status_colours_are_theme_variables_with_fallbacks_for_light_and_dark() -> None:
    for status, color in COLORS.items():
        match = re.fullmatch(r"var\(--jp-[a-z0-9-]+, (#[0-9a-f]{6})\)", color)
        assert match, color
        for background in ("#ffffff", "#1e1e1e"):  # other front ends: light, VS Code dark
            assert _contrast(_rgba(match[1]), _rgba(background)) >= 3, (status, background)


def test_no_fixed_colour_outside_a_theme_variable_in_any_view() -> None:
    def handler(job):
        yield "a"
        raise ValueError("x")

    views = [
        run_bundle(run_of(handler))["text/html"],
        run_bundle(run_of(lambda job: 1))["text/html"],
    ]
    for view in views:
        styles = " ".join(re.findall(r'style="([^"]*)"', view))
        outside = re.sub(r"var\(--jp-[a-z0-9-]+, [^)]*(\([^)]*\))?[^)]*\)", "", styles)
        assert not re.search(r"#[0-9a-fA-F]{3,6}\b|\brgb\(", outside), outside
        assert "color:var(--jp-content-font-color1, inherit)" in view


def test_every_mark_is_in_the_fonts_debians_chromium_falls_back_to() -> None:
    if shutil.which("fc-list") is None:
        pytest.skip("no fontconfig here")
    for status, mark in MARKS.items():
        families = subprocess.run(
            ["fc-list", f":charset={ord(mark):x}", "family"], capture_output=True, text=True
        ).stdout
        assert "DejaVu Sans" in families, (status, mark)


def test_a_card_names_its_status_and_liveness_in_classes() -> None:
    assert card_open("TIMED_OUT").startswith('<div class="nbworker-run nbworker-timed_out" ')
    assert 'class="nbworker-run nbworker-in_progress nbworker-live"' in card_open(
        "IN_PROGRESS", live=True
    )
    assert "border-left:4px solid var(--jp-warn-color0, " in card_open("TIMED_OUT")


# --------------------------------------------------------------------------- values


def test_a_value_box_is_bounded_escaped_and_has_no_blank_line() -> None:
    box = value_html("<b>a</b>\n\nb")
    assert box.startswith('<pre class="nbworker-value" style="max-height:24em;overflow:auto;')
    assert "&lt;b&gt;a&lt;/b&gt;&#10;&#10;b</pre>" in box and "\n" not in box


def test_short_json_is_one_line_and_small_nested_values_stay_compact() -> None:
    rows = [{"id": i, "label": "positive"} for i in range(500)]
    text = run_bundle(run_of(lambda job: rows))["text/plain"]
    body = text.split("\noutput:\n", 1)[1].splitlines()
    assert body[:3] == [
        "  [",
        '    {"id": 0, "label": "positive"},',
        '    {"id": 1, "label": "positive"},',
    ]
    assert len(text) < MAX_SHOWN + 500 and body[-1].startswith("  … (cut at 4,000 characters of ")
    numbers = run_bundle(run_of(lambda job: list(range(300))))["text/plain"]
    lines = numbers.split("\noutput:\n", 1)[1].splitlines()
    assert lines[1].startswith("    0, 1, 2, 3,") and len(lines) < 20  # not one number a line
    assert max(len(line) for line in lines) <= WIDTH + 4
    # What is shown is the value's JSON, spaced out: the same characters in the same order.
    squeeze = "".join(numbers.split("\noutput:\n", 1)[1].split())
    assert squeeze == "".join(json.dumps(list(range(300))).split())


def test_a_big_output_is_collapsed_with_its_size_and_cheap_to_show() -> None:
    output = [i / 7 for i in range(1_000_000)]
    run = run_of(lambda job: output)
    started = time.perf_counter()
    bundle = run_bundle(run)
    seconds = time.perf_counter() - started
    page = bundle["text/html"]
    assert "<details>\n<summary" in page
    assert f"output (1,000,000 items, {len(run.output_json or ''):,} characters of JSON)" in page
    assert len(page) < 2 * MAX_SHOWN + 4000 and len(bundle["text/plain"]) < MAX_SHOWN + 500
    assert seconds < 0.5  # the record and the views reuse the encoding; bench_core measures it


# --------------------------------------------------------------------------- streams


def test_an_aggregate_stream_is_shown_once_and_the_output_said_to_be_its_list() -> None:
    def handler(job):
        for i in range(3):
            yield {"i": i, "text": f"chunk {i}"}

    session = Session()
    try:
        session.register_handler(handler, aggregate=True)
        bundle = run_bundle(session.run_job({"input": {}}, "handler"))
    finally:
        session.close()
    assert bundle["text/plain"].count('"chunk 1"') == 1
    assert "output: the list of the 3 chunks above (--aggregate)" in bundle["text/plain"]
    assert bundle["text/html"].count("chunk 1") <= 2  # the chunk, and the joined text
    assert bundle[RECORD_MIMETYPE]["output"] == bundle[RECORD_MIMETYPE]["stream"]


def test_every_chunk_of_a_long_stream_can_be_reached() -> None:
    chunks = [{"token": f"t{i} ", "index": i} for i in range(120)]
    text, page = chunks_view(chunks)
    assert text.startswith("… 70 earlier chunks: the Run's .stream has all 120\n[70] ")
    assert "\n[0] " not in text and text.count("\n[") == 50
    earlier = page.split("<details>", 1)[1].split("</details>", 1)[0]
    assert "70 earlier chunks</summary>" in earlier and "[0] {&quot;token&quot;" in earlier
    assert "[69] " in earlier and "[119] " in page
    assert "the chunks&#x27; &quot;token&quot; joined:" in page
    assert 'the chunks\' "token" joined: t0 t1 t2' in text


@pytest.mark.parametrize(
    ("chunks", "joined"),
    [
        (["Hel", "lo", "!"], "Hello!"),
        ([{"text": "a"}, {"text": "b", "n": 2}], "ab"),
        ([{"text": "a"}, {"token": "b"}], None),  # not the same key
        ([{"text": "a", "role": "x"}, {"text": "b", "role": "y"}], None),  # two string fields
        ([1, 2], None),
        (["only"], None),  # one chunk: nothing to join
    ],
)
def test_a_character_or_token_stream_offers_its_joined_text(chunks, joined) -> None:
    text, _ = chunks_view(chunks)
    if joined is None:
        assert "joined" not in text
    else:
        assert text.endswith(f" joined: {joined}")


def test_the_live_view_has_no_empty_box_before_the_first_chunk() -> None:
    bundle = live_bundle("tokens", 0.0, [])
    assert "<pre" not in bundle["text/html"] and bundle["text/plain"].endswith("0 chunks")
    assert "1 chunk\n" in live_bundle("tokens", 1.0, ["a"])["text/plain"]


# --------------------------------------------------------------------------- wording


def test_plural_and_duration() -> None:
    assert [plural(1, "chunk"), plural(0, "chunk"), plural(1200, "chunk")] == [
        "1 chunk",
        "0 chunks",
        "1,200 chunks",
    ]
    assert [duration(0.412), duration(3.2), duration(4000)] == ["412 µs", "3.20 ms", "4.00 s"]


def test_a_timed_out_traceback_does_not_name_nbworkers_module() -> None:
    def handler(job):
        while True:
            pass

    run = run_of(handler, timeout=0.2)
    assert run.status == "TIMED_OUT" and run.error == "timed out after 0.2 s"
    text = run_bundle(run)["text/plain"]
    assert text.splitlines()[0].startswith("◷ TIMED_OUT  handler  ")
    assert text.rstrip().endswith("JobTimeout: the job's 0.2 s were up")
    assert "nbworker." not in text


def test_a_generator_failure_reads_like_any_other() -> None:
    def handler(job):
        return job["input"].missing
        yield

    run = run_of(handler)
    assert run.error.startswith("handler: 'dict' object has no attribute 'missing' \ntraceback: ")
    text = run_bundle(run)["text/plain"]
    assert "error: AttributeError: 'dict' object has no attribute 'missing'" in text
    assert "stream (" not in text  # it failed before it streamed: no empty box
    assert "stream" not in run_bundle(run)["text/html"]


def test_warnings_come_right_after_the_headline() -> None:
    def handler(job):
        raise SystemExit(3)

    run = run_of(handler)
    assert run.warnings
    for view in (run_bundle(run)["text/plain"], run_bundle(run)["text/html"]):
        assert view.index("⚠") < view.index("traceback")


def test_a_model_entry_shows_the_names_it_binds_whatever_they_hold() -> None:
    cache = ModelCache()

    def embed(text):
        return [len(text)]

    loaded = cache.fetch(
        "tools", lambda: {"embed": embed, "config": {"k": 1}, "json": json}, bound=True
    )
    line = entry_line(loaded.entry, hit=False)
    assert "(embed, config)" in line and "no data" not in line
    hit = cache.fetch("tools", lambda: {}, bound=True)
    assert entry_line(hit.entry, hit=True).startswith("tools: cache hit, loaded just now in ")
    table = cache_bundle(cache.info(), budget=None)
    assert "embed, config" in table["text/plain"] and "just now" in table["text/plain"]
    assert "padding:2px 14px 2px 0" in table["text/html"]
    cache.clear()
    empty = cache_bundle(cache.info(), budget=None)
    assert "<table" not in empty["text/html"] and "the model cache is empty" in empty["text/html"]


# --------------------------------------------------------------------------- markdown


@pytest.mark.slow
def test_a_markdown_export_holds_each_run_as_one_html_block(tmp_path) -> None:
    def tokens(job):
        yield "line one\n\nline three"
        yield "!"

    runs = [run_of(lambda job: {"text": "a\n\nb", "rows": list(range(300))}), run_of(tokens)]
    notebook = nbformat.v4.new_notebook()
    for run in runs:
        output = nbformat.v4.new_output("display_data", data=run_bundle(run))
        notebook.cells.append(nbformat.v4.new_code_cell("%rp_test", outputs=[output]))
    nbformat.write(notebook, tmp_path / "runs.ipynb")
    command = [sys.executable, "-m", "nbconvert", "--to", "markdown", "runs.ipynb"]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    markdown = (tmp_path / "runs.md").read_text(encoding="utf-8")
    blocks = [t for t in markdown_it.MarkdownIt("commonmark").parse(markdown) if t.type != "fence"]
    # Each card is one HTML block (a blank line inside would end it mid-value)...
    assert [t.type for t in blocks] == ["html_block", "html_block"]
    assert all(t.content.startswith('<div class="nbworker-run ') for t in blocks)
    assert all(t.content.rstrip().endswith("</div>") for t in blocks)
    # ... and the plain view is one option away (nbconvert's own exporter, in this process).
    from nbconvert import MarkdownExporter
    from traitlets.config import Config

    config = Config({"NbConvertBase": {"display_data_priority": ["text/plain"]}})
    plain, _ = MarkdownExporter(config=config).from_notebook_node(notebook)
    assert "    ✓ COMPLETED  handler  " in plain and "<div" not in plain
