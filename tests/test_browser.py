"""The notebook experience in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium
driven by Playwright (never `playwright install`; `scripts/browser_deps.sh` installs it).

`test_quickstart_and_panel_in_jupyterlab`: open a copy of notebooks/quickstart.ipynb, clear
its outputs, Run All Cells, check that the recorded runs show again; then add a `%rp_panel`
cell, run the streaming handler `tokens` from the panel, see its chunks arrive live; then
run a handler that reports progress and see its bar while it runs, then its result; keep
screenshots in build/browser/.

`test_run_views_in_jupyterlab[light|dark]`: tests/data/browser/views.ipynb (apart from the example notebooks: its handlers exist for this test) in each theme,
one cell at a time: a run seen while it runs (its time ticks), a stream mid-stream, a
500-row result, an interrupted run, the panel after a run, and the notebook saved and
reopened; screenshots of each under $NBWORKER_SCREENSHOTS (default: pytest's tmp_path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_lab import (
    BOX,
    KERNEL_IDLE_MS,
    NEEDS_CHROMIUM,
    STEP_MS,
    Findings,
    Lab,
    browser_page,
    card_checks,
    menu,
    running,
)

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
VIEWS = REPO / "tests" / "data" / "browser" / "views.ipynb"
ARTIFACTS = REPO / "build" / "browser"  # gitignored; kept after the run
RUN_ALL_MS = 60_000  # the quickstart takes ~5 s of sleeps and timeouts
SAVE_MS = 60_000  # a save takes 10 s and more on a busy 2-core machine

pytestmark = [pytest.mark.slow, pytest.mark.browser, NEEDS_CHROMIUM]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    server = Lab(tmp_path)
    shutil.copy(QUICKSTART, server.root / "quickstart.ipynb")
    with running(server):
        yield server


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    print(f"\nbrowser artifacts: {folder}")
    return folder


# Records the text of the panel's output each time it changes, to see the stream live.
WATCH_OUTPUT = """(element) => {
    window.nbworkerSeen = [];
    new MutationObserver(() => window.nbworkerSeen.push(element.innerText)).observe(
        element, {childList: true, subtree: true, characterData: true});
}"""


# A handler that reports progress, then waits (bounded) for the test to let it finish.
PROGRESS_CELL = """import os, time, runpod, nbworker

def slow(job):
    runpod.serverless.progress_update(job, "loading")
    runpod.serverless.progress_update(job, "3/10 steps")
    deadline = time.monotonic() + 60
    while not os.path.exists({go!r}) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "done"

nbworker.register_handler(slow)
%rp_test slow {{"input": {{}}}}"""


@pytest.mark.timeout(180)
def test_quickstart_and_panel_in_jupyterlab(lab: Lab, artifacts: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    notebook = json.loads(QUICKSTART.read_text())
    code_cells = sum(cell["cell_type"] == "code" for cell in notebook["cells"])
    with browser_page(lab, artifacts / "failure.png") as (page, elsewhere):
        page.goto(
            f"{lab.url}/lab/tree/quickstart.ipynb?reset&token={lab.token}",
            timeout=STEP_MS * 3,
        )
        status_bar = page.locator("#jp-main-statusbar")
        expect(status_bar).to_contain_text("| Idle", timeout=KERNEL_IDLE_MS)
        cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell")
        expect(cells).to_have_count(code_cells)

        # The saved outputs go; Run All brings the recorded runs back.
        menu(page, "Edit", "Clear Outputs of All Cells")
        runs = page.locator(".jp-NotebookPanel .jp-OutputArea-output .nbworker-run")
        expect(runs).to_have_count(0)
        menu(page, "Run", "Run All Cells")
        last = cells.nth(code_cells - 1)
        expect(last.locator(".jp-InputPrompt")).to_have_text(f"[{code_cells}]:", timeout=RUN_ALL_MS)
        expect(status_bar).to_contain_text("| Idle")
        expect(last.locator(".jp-OutputArea-output")).to_contain_text("lexicon")
        first_test = cells.filter(has_text='%rp_test {"input": {"text": "I love').first
        expect(first_test.locator(".nbworker-run")).to_contain_text("COMPLETED")
        expect(first_test.locator(".nbworker-run")).to_contain_text(
            '"label": "positive", "score": 3.5, "words": 6'
        )
        statuses = runs.all_inner_texts()
        assert len(statuses) >= 7, statuses
        joined = "\n".join(statuses)
        for status in ("COMPLETED", "FAILED", "TIMED_OUT"):
            assert status in joined, joined
        assert "txt is not a valid input option" in joined
        page.screenshot(path=artifacts / "1-run-all.png")

        # A new last cell with the panel.
        last.locator(".jp-InputPrompt").click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        expect(cells).to_have_count(code_cells + 1)
        new = cells.nth(code_cells)
        new.locator(".cm-content").click()
        page.keyboard.type("%rp_panel")
        expect(new.locator(".cm-content")).to_have_text("%rp_panel")
        page.keyboard.press("Shift+Enter")
        panel = new.locator(".nbworker-panel")
        expect(panel).to_be_visible()
        expect(panel.locator(".nbworker-handler select option")).to_contain_text(
            ["handler", "tokens"], timeout=STEP_MS
        )

        panel.locator(".nbworker-handler select").select_option("tokens")
        panel.locator(".nbworker-job textarea").fill('{"input": {"text": "good food"}}')
        expect(panel.locator(".nbworker-validation")).to_contain_text("valid job")
        output = panel.locator(".nbworker-output")
        output.evaluate(WATCH_OUTPUT)
        panel.locator(".nbworker-run-button").click()
        expect(output.locator(".nbworker-run")).to_contain_text("COMPLETED")
        expect(output.locator(".nbworker-run")).to_contain_text("tokens")
        # the status line says what the panel measured; the headline is the card's alone
        expect(panel.locator(".nbworker-status")).to_contain_text("wall in the panel")
        expect(panel.locator(".nbworker-status")).not_to_contain_text("COMPLETED")
        expect(output).to_contain_text('"word": "good"')
        expect(output).to_contain_text('"word": "food"')
        seen = page.evaluate("window.nbworkerSeen")
        live = [text for text in seen if "IN_PROGRESS" in text and '"word": "good"' in text]
        assert live, f"no live view with the first chunk among {seen!r}"
        assert any('"word": "food"' not in text for text in live), seen  # one chunk at a time
        panel.scroll_into_view_if_needed()
        page.screenshot(path=artifacts / "2-panel.png")
        panel.screenshot(path=artifacts / "3-panel-only.png")

        # A handler reporting progress: the bar shows while it runs, then the result.
        # It waits for a file the test writes once the bar is on screen.
        go = lab.root / "go"
        expect(cells).to_have_count(code_cells + 2)  # Shift+Enter on the last cell added one
        progress_cell = cells.nth(code_cells + 1)
        progress_cell.locator(".cm-content").click()
        page.keyboard.insert_text(PROGRESS_CELL.format(go=str(go)))
        page.keyboard.press("Shift+Enter")
        live_bar = progress_cell.locator(".nbworker-run progress")
        expect(live_bar).to_have_attribute("value", "0.3000")
        expect(progress_cell.locator(".nbworker-run")).to_contain_text("IN_PROGRESS")
        page.screenshot(path=artifacts / "4-progress-live.png")
        go.write_text("go", encoding="utf-8")
        expect(progress_cell.locator(".nbworker-run")).to_contain_text("COMPLETED")
        expect(progress_cell.locator(".nbworker-run")).to_contain_text("progress (2 updates")
        expect(progress_cell.locator(".nbworker-run")).not_to_contain_text("IN_PROGRESS")
        progress_cell.screenshot(path=artifacts / "5-progress-done.png")
        assert not elsewhere, f"requests beyond 127.0.0.1: {elsewhere}"


# --- The run views, light and dark -------------------------------------------------------

# tests/data/browser/views.ipynb, its code cells by index.
SETUP, SLOW, SLOW_RUN, TOKENS, TOKENS_RUN, ROWS, ROWS_RUN, STUCK, STUCK_RUN, PANEL = range(10)
LIVE_SECONDS = 1.5  # how long the test watches a live card tick before letting the run end
MAX_UPDATES_PER_SECOND = 10  # "a few" display updates a second, with room for jitter
MAX_VALUE_PX = 500  # a long value's box
MAX_PANEL_OUTPUT_PX = 700  # the panel's run output
ROWS_VALUE = "pre.nbworker-value:has-text('\"square\"')"  # the 500 rows, not the input
STDERR = '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'  # and tracebacks

# Watches an output area: each new text of its `.nbworker-elapsed` (with when it came) and
# each card put in (one per display update).
WATCH_LIVE = """(area) => {
    const seen = {elapsed: [], cards: 0};
    const read = (records) => {
        for (const record of records || [])
            for (const node of record.addedNodes)
                if (node.nodeType === 1 && (node.matches(".nbworker-run")
                        || node.querySelector(".nbworker-run"))) seen.cards += 1;
        const element = area.querySelector(".nbworker-elapsed");
        const text = element ? element.textContent : null;
        const last = seen.elapsed[seen.elapsed.length - 1];
        if (text !== null && (!last || last.text !== text))
            seen.elapsed.push({text, at: performance.now()});
    };
    read();
    new MutationObserver(read).observe(
        area, {childList: true, subtree: true, characterData: true});
    window.nbworkerLive = seen;
}"""
TICKED = f"""() => {{
    const seen = window.nbworkerLive.elapsed;
    return seen.length >= 3 && performance.now() - seen[0].at >= {LIVE_SECONDS * 1000};
}}"""


class Visit:
    """One theme's visit of the notebook: the lab, the page, its code cells, the findings
    and the screenshots taken (under `folder`, named `<theme>-<what>.png`)."""

    def __init__(self, lab: Lab, page: Any, findings: Findings, folder: Path) -> None:
        self.lab, self.page, self.findings, self.folder = lab, page, findings, folder
        self.cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell")
        self.status_bar = page.locator("#jp-main-statusbar")
        self.shots: list[Path] = []

    def shot(self, target: Any, what: str) -> None:
        """A screenshot of `target` (an element, or the page)."""
        path = self.folder / f"{self.findings.theme}-{what}.png"
        target.screenshot(path=path)
        self.shots.append(path)

    def run(self, index: int) -> Any:
        """Run code cell `index`; the cell."""
        cell = self.cells.nth(index)
        cell.locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+Enter")
        return cell

    def release(self, name: str) -> None:
        """Let a handler waiting for the file `name` go on."""
        (self.lab.root / name).write_text("go", encoding="utf-8")


def _done(cell: Any) -> None:
    from playwright.sync_api import expect

    expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"^\[\d+\]:$"))


def _one_result(findings: Findings, cell: Any, status: str, what: str) -> Any:
    """After the run, the cell holds its result card and nothing else of nbworker's."""
    from playwright.sync_api import expect

    card = cell.locator(".jp-OutputArea-output .nbworker-run")
    findings.wait(f"{what}: one {status} card", lambda: expect(card.first).to_contain_text(status))
    findings.check(card.count() == 1, f"{what}: {card.count()} cards, not one")
    live = cell.locator(".nbworker-live").count()
    findings.check(live == 0, f"{what}: {live} live card(s) left after the run")
    return card.first


def _open_rows(page: Any, card: Any) -> None:
    """Show the 500 rows in `card`, opening their section if it came collapsed (as a big
    value may), as a user would: a click on its summary."""
    from playwright.sync_api import expect

    value = card.locator(ROWS_VALUE).first
    expect(value).to_be_attached()
    closed = card.locator("details:not([open])", has=page.locator(ROWS_VALUE))
    if closed.count():
        closed.first.locator(":scope > summary").click()
    expect(value).to_be_visible()


def _sync_run(visit: Visit) -> None:
    """A run that does not stream: its card shows from the start and its time ticks, a few
    updates a second; then the result alone."""
    from playwright.sync_api import expect

    findings, page = visit.findings, visit.page
    cell = visit.run(SLOW_RUN)
    live = cell.locator(".nbworker-run.nbworker-live")
    if findings.wait("sync run: a live card", lambda: expect(live).to_be_visible()):
        cell.locator(".jp-OutputArea").evaluate(WATCH_LIVE)
        ticked = findings.wait(
            "sync run: .nbworker-elapsed changes while it runs",
            lambda: page.wait_for_function(TICKED, timeout=STEP_MS),
        )
        visit.shot(cell, "sync-running")
        card_checks(findings, live, "sync run's live card")
        seen = page.evaluate("window.nbworkerLive")
        if ticked:
            times = [text["text"] for text in seen["elapsed"]]
            window = (seen["elapsed"][-1]["at"] - seen["elapsed"][0]["at"]) / 1000
            rate = max(len(times) - 1, seen["cards"]) / window
            findings.facts.append(
                f"sync run: times {times}, {seen['cards']} cards in {window:.2f} s"
            )
            findings.check(
                rate <= MAX_UPDATES_PER_SECOND, f"sync run: {rate:.1f} display updates a second"
            )
    else:
        visit.shot(cell, "sync-running")
    visit.release("go-slow")
    _done(cell)
    card = _one_result(findings, cell, "COMPLETED", "sync run")
    card_checks(findings, card, "sync run's result")
    findings.check("42" in card.inner_text(), "sync run: the result shows no output")
    visit.shot(cell, "sync-done")


def _streaming_run(visit: Visit) -> None:
    """A stream mid-stream: the chunks so far and the time; then the result alone."""
    from playwright.sync_api import expect

    findings = visit.findings
    cell = visit.run(TOKENS_RUN)
    live = cell.locator(".nbworker-run.nbworker-live")
    if findings.wait(
        "streaming run: .nbworker-chunks counts 2 chunks or more",
        lambda: expect(live.locator(".nbworker-chunks")).to_have_text(
            re.compile(r"^\D*([2-9]|\d\d+)\b")
        ),
    ):
        findings.check("token1" in live.inner_text(), "streaming run: no chunk shown live")
        findings.check(live.locator(".nbworker-elapsed").count() == 1, "streaming run: no time")
    visit.shot(cell, "streaming")
    visit.release("go-tokens")
    _done(cell)
    card = _one_result(findings, cell, "COMPLETED", "streaming run")
    findings.check("token0 token1" in card.inner_text(), "streaming run: no joined text")
    visit.shot(cell, "streaming-done")


def _big_output(visit: Visit) -> None:
    """A 500-row result: in a scroll box of bounded height."""
    findings = visit.findings
    cell = visit.run(ROWS_RUN)
    _done(cell)
    card = _one_result(findings, cell, "COMPLETED", "big output")
    if findings.wait("big output: a pre.nbworker-value", lambda: _open_rows(visit.page, card)):
        box = card.locator(ROWS_VALUE).first.evaluate(BOX)
        findings.facts.append(f"big output's value: {box}")
        findings.check(box["max_height"] != "none", "big output: no max-height")
        findings.check(box["height"] < MAX_VALUE_PX, f"big output: {box['height']} px high")
        findings.check(box["overflow"] in ("auto", "scroll"), f"big output: {box['overflow']}")
        findings.check(box["scroll_height"] > box["client_height"], "big output: no scrolling")
    height = card.bounding_box()["height"]
    findings.check(height < 2 * MAX_VALUE_PX, f"big output: its card is {height} px high")
    visit.shot(cell, "big-output")


def _cancelled_run(visit: Visit) -> None:
    """A run interrupted from the Kernel menu: the CANCELLED card alone, no traceback."""
    from playwright.sync_api import expect

    findings = visit.findings
    cell = visit.run(STUCK_RUN)
    findings.wait(
        "interrupted run: a live card first",
        lambda: expect(cell.locator(".nbworker-run.nbworker-live")).to_be_visible(),
    )
    expect(visit.status_bar).to_contain_text("| Busy")
    menu(visit.page, "Kernel", "Interrupt Kernel")
    _done(cell)
    card = _one_result(findings, cell, "CANCELLED", "interrupted run")
    card_checks(findings, card, "CANCELLED card")
    findings.check(
        not any("KeyboardInterrupt" in text for text in cell.locator(STDERR).all_inner_texts()),
        "interrupted run: a KeyboardInterrupt traceback under the card",
    )
    visit.shot(cell, "cancelled")


def _panel_run(visit: Visit) -> None:
    """The panel after a run of the 500-row handler: its output stays bounded."""
    from playwright.sync_api import expect

    findings = visit.findings
    panel = visit.run(PANEL).locator(".nbworker-panel")
    expect(panel).to_be_visible()
    expect(panel.locator(".nbworker-handler select option")).to_contain_text(
        ["rows", "slow", "stuck", "tokens"]
    )
    panel.locator(".nbworker-handler select").select_option("rows")
    panel.locator(".nbworker-job textarea").fill('{"input": {}}')
    expect(panel.locator(".nbworker-validation")).to_contain_text("valid job")
    panel.locator(".nbworker-run-button").click()
    output = panel.locator(".nbworker-output")
    expect(output.locator(".nbworker-run")).to_contain_text("COMPLETED")
    card_checks(findings, output.locator(".nbworker-run").first, "panel's result")
    findings.wait("panel: the 500 rows", lambda: _open_rows(visit.page, output))
    box = output.evaluate(BOX)
    findings.facts.append(f"panel's output: {box}")
    findings.check(box["max_height"] != "none", "panel output: no max-height")
    findings.check(box["height"] < MAX_PANEL_OUTPUT_PX, f"panel output: {box['height']} px")
    panel.scroll_into_view_if_needed()
    visit.shot(panel, "panel")
    visit.shot(visit.page, "panel-page")


def _reopened(visit: Visit) -> None:
    """Saved, its kernel shut down, opened again: the results as the file keeps them (no
    live card), and the panel's short fallback."""
    from playwright.sync_api import expect

    findings, page, lab = visit.findings, visit.page, visit.lab
    saved = lab.root / VIEWS.name
    before = saved.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-current")
    expect(tab).not_to_have_class(re.compile(r"\bjp-mod-dirty\b"), timeout=SAVE_MS)
    assert saved.stat().st_mtime_ns != before, "the notebook was not saved"
    findings.check("nbworker-live" not in saved.read_text(), "a live card saved in the file")
    menu(page, "Kernel", "Shut Down Kernel")
    expect(visit.status_bar).to_contain_text("No Kernel")
    page.goto(lab.notebook_url(VIEWS.name), timeout=STEP_MS * 3)
    expect(visit.status_bar).to_contain_text("| Idle", timeout=KERNEL_IDLE_MS)
    expect(visit.cells).to_have_count(PANEL + 1)
    for index, status in [
        (SLOW_RUN, "COMPLETED"),
        (TOKENS_RUN, "COMPLETED"),
        (ROWS_RUN, "COMPLETED"),
        (STUCK_RUN, "CANCELLED"),
    ]:
        _one_result(findings, visit.cells.nth(index), status, f"reopened cell {index}")
    panel = visit.cells.nth(PANEL).locator(".jp-OutputArea-output")
    text = "\n".join(panel.all_inner_texts())
    findings.facts.append(f"reopened panel: {text[:300]!r}")
    findings.check("children=" not in text, "reopened panel: the widget's raw repr")
    findings.check(len(text) < 600, f"reopened panel: {len(text)} characters")
    findings.check("COMPLETED" in text, "reopened panel: the run made from it not shown")
    height = page.evaluate(
        "() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
        ".jp-WindowedPanel-outer').scrollHeight"
    )
    page.set_viewport_size({"width": 1400, "height": min(height + 100, 8000)})  # all of it
    visit.shot(page, "reopened")


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NBWORKER_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.timeout(300)
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_run_views_in_jupyterlab(theme: str, tmp_path: Path, screenshots: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_MS)
    lab = Lab(tmp_path, theme=theme)
    shutil.copy(VIEWS, lab.root / VIEWS.name)
    findings = Findings(theme)
    with running(lab), browser_page(lab, screenshots / f"{theme}-failure.png") as (page, elsewhere):
        visit = Visit(lab, page, findings, screenshots)
        page.goto(lab.notebook_url(VIEWS.name), timeout=STEP_MS * 3)
        expect(visit.status_bar).to_contain_text("| Idle", timeout=KERNEL_IDLE_MS)
        light = "true" if theme == "light" else "false"
        expect(page.locator("body")).to_have_attribute("data-jp-theme-light", light)
        expect(visit.cells).to_have_count(PANEL + 1)
        for index in (SETUP, SLOW, TOKENS, ROWS, STUCK):
            cell = visit.run(index)
            _done(cell)
            expect(cell.locator(STDERR)).to_have_count(0)
        _sync_run(visit)
        _streaming_run(visit)
        _big_output(visit)
        _cancelled_run(visit)
        _panel_run(visit)
        _reopened(visit)
        assert not elsewhere, f"requests beyond 127.0.0.1: {elsewhere}"

    print(f"\n{theme} screenshots:", *visit.shots, sep="\n  ")
    print(f"{theme} measures:", *findings.facts, sep="\n  ")
    assert not findings.problems, "\n".join(findings.problems)
