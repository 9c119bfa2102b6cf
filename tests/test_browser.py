"""The notebook experience in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium
driven by Playwright (never `playwright install`; `scripts/browser_deps.sh` installs it).

Open a copy of notebooks/quickstart.ipynb, clear its outputs, Run All Cells, check that the
recorded runs show again; then add a `%rp_panel` cell, run the streaming handler `tokens`
from the panel, see its chunks arrive live; then run a handler that reports progress and
see its bar while it runs, then its result; keep screenshots in build/browser/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
ARTIFACTS = REPO / "build" / "browser"  # gitignored; kept after the run
SERVER_START_SECONDS = 60
KERNEL_IDLE_MS = 60_000
RUN_ALL_MS = 60_000  # the quickstart takes ~5 s of sleeps and timeouts
STEP_MS = 20_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: run `bash scripts/browser_deps.sh` (Debian's chromium)",
    ),
]

# JupyterLab settings of this run only: every cell attached to the DOM (no windowing), so
# the whole notebook can be read; no news or update checks (nothing leaves 127.0.0.1).
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
PAGE_CONFIG = {
    "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True},
}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


class Lab:
    """A JupyterLab server on 127.0.0.1 serving a temporary root directory."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.root.mkdir()
        self.log = base / "jupyterlab.log"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        config, settings = base / "config", base / "settings"
        (config / "labconfig").mkdir(parents=True)
        (config / "labconfig" / "page_config.json").write_text(json.dumps(PAGE_CONFIG))
        for name, values in SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        venv_jupyter = Path(sys.prefix, "share", "jupyter")
        self.env = {
            **os.environ,
            # the venv's python3 kernel first (this interpreter, nbworker installed)
            "JUPYTER_PATH": os.pathsep.join(
                [str(venv_jupyter), *filter(None, [os.environ.get("JUPYTER_PATH")])]
            ),
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_DATA_DIR": str(base / "data"),
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "IPYTHONDIR": str(base / "ipython"),
        }
        self.command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={base / 'workspaces'}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {self.process.returncode}:\n{_tail(self.log)}")
            try:
                if _get(f"{self.url}/api/status?token={self.token}") == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)  # polling a server, not a page
        pytest.fail(f"JupyterLab not up after {SERVER_START_SECONDS} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        """Shut the server down (it shuts its kernels down), then end it by its PID."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        request = urllib.request.Request(
            f"{self.url}/api/shutdown",
            method="POST",
            headers={"Authorization": f"token {self.token}"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
            process.wait(timeout=20)
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    server = Lab(tmp_path)
    shutil.copy(QUICKSTART, server.root / "quickstart.ipynb")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    print(f"\nbrowser artifacts: {folder}")
    return folder


def _menu(page, menu: str, item: str) -> None:
    """Click a menu bar entry, then one of its items (both by their exact label)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


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
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=STEP_MS)
    notebook = json.loads(QUICKSTART.read_text())
    code_cells = sum(cell["cell_type"] == "code" for cell in notebook["cells"])
    elsewhere: list[str] = []

    def local_only(route) -> None:
        """Only 127.0.0.1: any other request is aborted and reported."""
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = None
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", local_only)
            page = context.new_page()
            page.goto(
                f"{lab.url}/lab/tree/quickstart.ipynb?reset&token={lab.token}",
                timeout=STEP_MS * 3,
            )
            status_bar = page.locator("#jp-main-statusbar")
            expect(status_bar).to_contain_text("| Idle", timeout=KERNEL_IDLE_MS)
            cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell")
            expect(cells).to_have_count(code_cells)

            # The saved outputs go; Run All brings the recorded runs back.
            _menu(page, "Edit", "Clear Outputs of All Cells")
            runs = page.locator(".jp-NotebookPanel .jp-OutputArea-output .nbworker-run")
            expect(runs).to_have_count(0)
            _menu(page, "Run", "Run All Cells")
            last = cells.nth(code_cells - 1)
            expect(last.locator(".jp-InputPrompt")).to_have_text(
                f"[{code_cells}]:", timeout=RUN_ALL_MS
            )
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
            expect(panel.locator(".nbworker-status")).to_contain_text("COMPLETED")
            expect(panel.locator(".nbworker-status")).to_contain_text("tokens")
            expect(output).to_contain_text("COMPLETED")
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
        except BaseException:
            if page is not None:
                with contextlib.suppress(Exception):
                    page.screenshot(path=artifacts / "failure.png")
            print(f"JupyterLab log:\n{_tail(lab.log)}")
            raise
        finally:
            browser.close()
