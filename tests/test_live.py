"""The live view of a run (nbworker.live): on its own with a real ticker thread, and in a
real kernel, where its displays, made on the ticker's thread, must reach the cell."""

from __future__ import annotations

import contextvars
import itertools
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kernel_client import Kernel

from nbworker.live import TICK_SECONDS, LiveRun, Ticker, live_bundle
from nbworker.record import RECORD_MIMETYPE as RECORD

INTERVAL = 0.05  # a quick ticker for the tests of the view alone

Bundle = dict[str, Any]


class Screen:
    """What a LiveRun showed: `open_view` for it; each bundle with when it was shown and
    the value of `CELL` in the context it was shown in."""

    CELL: contextvars.ContextVar[str] = contextvars.ContextVar("cell")

    def __init__(self) -> None:
        self.shown: list[tuple[float, Bundle, str | None]] = []
        self.opened = 0
        self._changed = threading.Condition()

    def open_view(self, bundle: Bundle) -> Callable[[Bundle], None]:
        self.opened += 1
        self._show(bundle)
        return self._show

    def _show(self, bundle: Bundle) -> None:
        with self._changed:
            self.shown.append((time.perf_counter(), bundle, self.CELL.get(None)))
            self._changed.notify_all()

    def wait_for(self, what: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The text of the first bundle shown for which `what(text)`, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for _, bundle, _ in self.shown:
                    if what(bundle["text/plain"]):
                        return str(bundle["text/plain"])
                left = deadline - time.monotonic()
                assert left > 0, (
                    f"not shown in {timeout} s: {[b['text/plain'] for _, b, _ in self.shown]}"
                )
                self._changed.wait(left)


@pytest.fixture
def ticker():
    shared = Ticker(interval=INTERVAL)
    yield shared
    shared.close()


FINAL = {"text/plain": "✓ COMPLETED", RECORD: {"status": "COMPLETED"}}


def test_a_run_that_ends_before_its_first_tick_opens_no_view(ticker: Ticker) -> None:
    screen = Screen()
    for _ in range(100):
        view = LiveRun("handler", screen.open_view, streams=True, ticker=ticker)
        view.chunk("a", 0)
        assert view.close(FINAL) is False  # the caller shows FINAL: the one display
    view.tick()  # a tick that comes after close shows nothing
    assert screen.shown == [] and screen.opened == 0


def test_the_view_ticks_counts_chunks_and_shows_progress(ticker: Ticker) -> None:
    screen = Screen()
    token = Screen.CELL.set("cell 7")
    try:
        view = LiveRun("tokens", screen.open_view, streams=True, ticker=ticker)
    finally:
        Screen.CELL.reset(token)
    screen.wait_for(lambda text: "0 chunks" in text)
    view.chunk("hel", 0)
    assert "1 chunk\n" in screen.wait_for(lambda text: "1 chunk" in text)
    view.chunk("lo", 1)
    view.progress({"step": 3, "total": 4}, 0.1)
    shown = screen.wait_for(lambda text: "2 chunks" in text and "progress" in text)
    assert "75%" in shown and "the chunks joined: hello" in shown
    assert view.close(FINAL) is True
    view.tick()
    assert screen.opened == 1 and screen.shown[-1][1] is FINAL  # nothing after the result
    assert {cell for _, _, cell in screen.shown[:-1]} == {"cell 7"}  # the maker's context
    live = [bundle for _, bundle, _ in screen.shown[:-1]]
    elapsed = [re.search(r"IN_PROGRESS  tokens  (\S+ \S+)", b["text/plain"])[1] for b in live]
    assert len(set(elapsed)) == len(elapsed) >= 3, elapsed  # the time moves at each tick
    html = live[-1]["text/html"]
    assert 'class="nbworker-run nbworker-in_progress nbworker-live"' in html
    assert '<span class="nbworker-chunks">2 chunks</span>' in html
    assert re.search(r'<span class="nbworker-elapsed">[\d.]+ ms</span>', html)
    assert '<progress value="0.7500" max="1"' in html and "var(--jp-" in html


def test_a_burst_is_shown_within_a_tick_and_ticks_are_an_interval_apart(ticker: Ticker) -> None:
    screen = Screen()
    view = LiveRun("burst", screen.open_view, streams=True, ticker=ticker)
    for index in range(5000):  # far more chunks than ticks
        view.chunk(index, index)
    burst = time.perf_counter()
    screen.wait_for(lambda text: "5,000 chunks" in text)  # then a pause: still shown
    assert screen.shown[-1][0] - burst <= INTERVAL + 1.0
    screen.wait_for(lambda text: len(screen.shown) >= 4)
    view.close(FINAL)
    times = [t for t, _, _ in screen.shown[:-1]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= INTERVAL, gaps


def test_a_handler_that_does_not_stream_shows_no_chunks(ticker: Ticker) -> None:
    screen = Screen()
    view = LiveRun("embed", screen.open_view, streams=False, ticker=ticker)
    view.progress("loading weights", 0.01)
    shown = screen.wait_for(lambda text: "progress" in text)
    view.close(FINAL)
    assert "chunk" not in shown and "progress: loading weights" in shown
    assert "<progress" not in screen.shown[0][1]["text/html"]  # not numeric: no bar


def test_views_of_one_ticker_tick_on_their_own_and_a_private_ticker_ends_with_its_run(
    ticker: Ticker,
) -> None:
    first, second = Screen(), Screen()
    views = [
        LiveRun(name, s.open_view, streams=False, ticker=ticker)
        for name, s in [("first", first), ("second", second)]
    ]
    for screen, name in [(first, "first"), (second, "second")]:
        screen.wait_for(lambda text, name=name: f"IN_PROGRESS  {name}" in text)
    for view in views:
        view.close(FINAL)
    own = Screen()
    threads = set(threading.enumerate())
    view = LiveRun("own", own.open_view, streams=False)  # as the panel makes them
    (thread,) = set(threading.enumerate()) - threads
    view.close(FINAL)
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_live_bundle_says_what_the_run_has_done() -> None:
    bundle = live_bundle("handler", 4000.0, ["a"], progress=0.5)
    assert bundle["text/plain"].splitlines()[0] == "… IN_PROGRESS  handler  4.00 s  1 chunk"
    assert "progress: [##########----------] 50%" in bundle["text/plain"]
    assert RECORD not in bundle  # the record is the result's, never a live view's
    assert "<code>h&lt;b&gt;</code>" in live_bundle("h<b>", 0.2, None)["text/html"]


# --------------------------------------------------------------------------- in a kernel


def shown_ms(text: str) -> float:
    """The elapsed time a live view shows, in ms."""
    match = re.search(r"IN_PROGRESS  \S+  ([\d.]+) (µs|ms|s)", text)
    assert match, text
    return float(match[1]) * {"µs": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]


SLOW = """
%%handler slow
import time
import runpod

def slow(job):
    for step in range(1, 5):
        time.sleep(0.3)
        runpod.serverless.progress_update(job, {"step": step, "total": 4})
    return {"done": True}
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_run_is_live_from_its_start_in_a_kernel(kernel: Kernel) -> None:
    """A 1.2 s handler that does not stream: a live card a tick in, its time ticking, its
    progress as a bar, at most one update per tick; at the end the card is the result, the
    cell's only output. Every message is the cell's (the kernel client keeps only those)."""
    kernel.ok(SLOW)
    run = kernel.ok('%rp_test slow {"input": {}}')
    first, *updates = run.of_type("display_data", "update_display_data")
    assert first.msg_type == "display_data" and RECORD not in first.content["data"]
    assert first.t < 0.3 + TICK_SECONDS, run.describe()  # not at the first progress update
    display_id = first.content["transient"]["display_id"]
    assert all(u.content["transient"]["display_id"] == display_id for u in updates)
    *live, final = [first, *updates]
    assert RECORD in final.content["data"] and len(live) >= 4, run.describe()
    elapsed = [shown_ms(m.content["data"]["text/plain"]) for m in live]
    assert elapsed == sorted(elapsed) and len(set(elapsed)) == len(elapsed), run.describe()
    assert any("<progress " in m.content["data"]["text/html"] for m in live), run.describe()
    gaps = [later.t - earlier.t for earlier, later in itertools.pairwise(live)]
    assert len(live) <= run.record()["duration_ms"] / 1000 / TICK_SECONDS + 1, run.describe()
    assert min(gaps) > TICK_SECONDS / 2, gaps  # arrival times: jitter of the transport
    (output,) = [o for o in run.outputs() if o["output_type"] != "stream"]
    assert output["data"][RECORD]["output"] == {"done": True}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_quick_run_is_one_display_in_a_kernel(kernel: Kernel) -> None:
    kernel.ok('%%handler quick\ndef quick(job):\n    return job["input"]')
    for _ in range(3):
        run = kernel.ok('%rp_test quick {"input": 1}')
        assert [m.msg_type for m in run.messages] == ["display_data"], run.describe()
        assert run.record()["output"] == 1
