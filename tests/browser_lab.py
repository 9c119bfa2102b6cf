"""What the browser tests share: a JupyterLab server on 127.0.0.1 with settings of its own
(light or dark theme); Debian's Chromium driven by Playwright, held to 127.0.0.1; and
checks of a run card as the page shows it (theme variables, WCAG contrast, bounded boxes),
noted as `Findings` so that one run names everything that falls short.

Never `playwright install`: `scripts/browser_deps.sh` installs /usr/bin/chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import free_port

from nbworker.display import MARKS

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
SERVER_START_SECONDS = 60
KERNEL_IDLE_MS = 60_000
STEP_MS = 20_000
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: run `bash scripts/browser_deps.sh` (Debian's chromium)",
)

MIN_CONTRAST = 4.5  # WCAG AA for text
MIN_MARK = 3.0  # WCAG AA for graphics and large text: the status marks and borders
PARTS = {"headline": MIN_CONTRAST, "mark": MIN_MARK, "border": MIN_MARK}

THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
# JupyterLab settings of a run only: every cell attached to the DOM (no windowing), so
# the whole notebook can be read; the theme asked for.
TRACKER_SETTINGS = "@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
THEME_SETTINGS = "@jupyterlab/apputils-extension/themes.jupyterlab-settings"
# No news or update checks: nothing leaves 127.0.0.1.
PAGE_CONFIG = {
    "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True},
}


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


class Lab:
    """A JupyterLab server on 127.0.0.1 serving a temporary root directory, with fresh
    settings, workspaces and runtime folders under `base`."""

    def __init__(self, base: Path, *, theme: str = "light") -> None:
        self.root = base / "root"
        self.root.mkdir()
        self.log = base / "jupyterlab.log"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        config, settings = base / "config", base / "settings"
        (config / "labconfig").mkdir(parents=True)
        (config / "labconfig" / "page_config.json").write_text(json.dumps(PAGE_CONFIG))
        values = {
            TRACKER_SETTINGS: {"windowingMode": "none"},
            THEME_SETTINGS: {"theme": THEMES[theme]},
        }
        for name, value in values.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
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
        """Start the server and wait (bounded) until it answers."""
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
                pytest.fail(f"JupyterLab exited with {self.process.returncode}:\n{tail(self.log)}")
            try:
                if _get(f"{self.url}/api/status?token={self.token}") == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)  # polling a server, not a page
        pytest.fail(f"JupyterLab not up after {SERVER_START_SECONDS} s:\n{tail(self.log)}")

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

    def notebook_url(self, name: str) -> str:
        """The address that opens notebook `name` of the root in a fresh workspace."""
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"


@contextlib.contextmanager
def running(lab: Lab) -> Iterator[Lab]:
    """The lab started, and shut down however the block ends."""
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@contextlib.contextmanager
def browser_page(lab: Lab, failure_shot: Path) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page (1400x1000) and the list of requests it tried beyond 127.0.0.1
    (each aborted). If the block fails, the page goes to `failure_shot` and the lab's log
    to stdout."""
    from playwright.sync_api import sync_playwright

    elsewhere: list[str] = []

    def local_only(route: Any) -> None:
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
            yield page, elsewhere
        except BaseException:
            if page is not None:
                with contextlib.suppress(Exception):
                    page.screenshot(path=failure_shot)
                print(f"page at the failure: {failure_shot}")
            print(f"JupyterLab log:\n{tail(lab.log)}")
            raise
        finally:
            browser.close()


def menu(page: Any, menu: str, item: str) -> None:
    """Click a menu bar entry, then one of its items (both by their exact label)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


# The colours of a card as the page shows them: for its status headline, its status mark
# (a symbol of MARKS) and its border, the colour and the background under it (every
# ancestor's background composed over the white canvas) and their WCAG contrast ratio; and
# the colours its inline styles give outside `var(--jp-...)`.
CARD_COLOURS = """(card, marks) => {
    if (!card.isConnected) return {detached: true};  // a live card, replaced meanwhile
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 1;
    const context = canvas.getContext("2d", {willReadFrequently: true});
    const rgba = (css) => {
        context.clearRect(0, 0, 1, 1);
        context.fillStyle = "rgba(0, 0, 0, 0)";
        context.fillStyle = css;
        context.fillRect(0, 0, 1, 1);
        const [r, g, b, a] = context.getImageData(0, 0, 1, 1).data;
        return [r, g, b, a / 255];
    };
    const over = (top, bottom) => {
        const alpha = top[3] + bottom[3] * (1 - top[3]);
        const mix = (i) => (top[i] * top[3] + bottom[i] * bottom[3] * (1 - top[3])) / alpha;
        return [mix(0), mix(1), mix(2), alpha];
    };
    const luminance = (colour) => {
        const [r, g, b] = colour.slice(0, 3).map((v) => {
            v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const backgroundOf = (element) => {
        const chain = [];
        for (let node = element; node; node = node.parentElement) chain.unshift(node);
        let background = [255, 255, 255, 1];
        for (const node of chain)
            background = over(rgba(getComputedStyle(node).backgroundColor), background);
        return background;
    };
    const contrast = (css, element) => {
        if (!element) return null;
        const background = backgroundOf(element);
        const colour = over(rgba(css), background);
        const [light, dark] = [luminance(colour), luminance(background)].sort((a, b) => b - a);
        return {text: element.textContent.trim().slice(0, 40), colour: colour.map(Math.round),
                background: background.map(Math.round), background_luminance: luminance(background),
                ratio: (light + 0.05) / (dark + 0.05)};
    };
    const holding = (test) => {
        const walker = document.createTreeWalker(card, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode())
            if (test(node.textContent)) return node.parentElement;
        return null;
    };
    const headline = holding((text) => /COMPLETED|FAILED|TIMED_OUT|CANCELLED|IN_PROGRESS/.test(text));
    if (!headline) return {error: "no status word in the card"};
    const mark = holding((text) => marks.some((symbol) => text.includes(symbol)));
    const style = getComputedStyle(card);
    const side = ["Left", "Top", "Right", "Bottom"].find(
        (name) => parseFloat(style[`border${name}Width`]) > 0);
    const styles = [card, ...card.querySelectorAll("[style]")].map(
        (element) => element.getAttribute("style") || "");
    const outside = styles.join(";").replace(/var\\(--jp-[\\w-]+(,[^()]*(\\([^()]*\\))?[^()]*)?\\)/g, "");
    return {
        headline: contrast(getComputedStyle(headline).color, headline),
        mark: mark && contrast(getComputedStyle(mark).color, mark),
        border: side ? contrast(style[`border${side}Color`], card) : null,
        theme_variables: styles[0].includes("var(--jp-"),
        hard_coded: outside.match(/#[0-9a-fA-F]{3,8}\\b|rgb\\([^)]*\\)/g) || [],
    };
}"""


# A box's computed bounds: its max-height, overflow and heights.
BOX = """(element) => {
    const style = getComputedStyle(element);
    return {max_height: style.maxHeight, overflow: style.overflowY,
            height: element.getBoundingClientRect().height,
            scroll_height: element.scrollHeight, client_height: element.clientHeight};
}"""


class Findings:
    """The checks of one theme's run: a failed check is noted and the run goes on, so one
    report names every view that falls short; the test fails at the end if any did."""

    def __init__(self, theme: str) -> None:
        self.theme = theme
        self.problems: list[str] = []
        self.facts: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(f"{self.theme}: {what}")
        return ok

    def wait(self, what: str, waiting: Callable[[], Any]) -> bool:
        """Run a bounded wait (an `expect` or `wait_for_function`); False if it ran out."""
        from playwright.sync_api import Error

        try:
            waiting()
        except (AssertionError, Error) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            return self.check(False, f"{what} ({first[:200]})")
        return True


def card_checks(findings: Findings, card: Any, what: str) -> None:
    """Check that run card `card` takes its colours from JupyterLab's theme and that its
    headline, status mark and border stand out from the background (WCAG contrast); that
    the page is in the theme `findings` is for is asserted."""
    for _ in range(20):  # a live card is replaced a few times a second: look again
        colours = card.evaluate(CARD_COLOURS, list(MARKS.values()))
        if "detached" not in colours:
            break
    else:
        colours = {"error": "the card was replaced at every look"}
    if not findings.check("error" not in colours, f"{what}: {colours.get('error')}"):
        return
    ratios = {part: colours[part] and round(colours[part]["ratio"], 2) for part in PARTS}
    findings.facts.append(f"{what}: contrast {ratios} on {colours['headline']['background']}")
    findings.check(colours["theme_variables"], f"{what}: its inline style uses no var(--jp-)")
    findings.check(
        not colours["hard_coded"],
        f"{what}: colours outside JupyterLab's variables {colours['hard_coded']}",
    )
    for part, least in PARTS.items():
        seen = colours[part]
        if findings.check(seen is not None, f"{what}: no {part} found"):
            findings.check(
                seen["ratio"] >= least,
                f"{what}: {part} contrast {seen['ratio']:.2f}:1 < {least}:1 "
                f"({seen['colour']} on {seen['background']})",
            )
    dark = findings.theme == "dark"
    assert (colours["headline"]["background_luminance"] < 0.2) == dark, (
        f"{what} not on a {dark=} page"
    )
