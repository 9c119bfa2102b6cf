"""The panel (`nbworker.panel()`, `%rp_panel`) in a real InteractiveShell, clicked through
the widget API."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from shell import Shell

from nbworker.record import PANEL_MIMETYPE, RECORD_MIMETYPE
from nbworker.widgets import Panel

ECHO = "%%handler\ndef handler(job):\n    return {'echo': job['input']}"


@pytest.fixture
def panel(shell: Shell):
    panel = Panel(shell.session)
    shell.ipython.user_ns["panel"] = panel
    yield panel
    panel.close()
    shell.ipython.user_ns.pop("panel", None)


def shown(panel: Panel) -> dict:
    """The mimebundle the panel's Output shows."""
    (entry,) = panel.output.outputs
    return entry["data"]


def test_import_nbworker_stays_without_ipywidgets() -> None:
    code = "import nbworker, sys; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rp_panel_returns_the_panel_of_the_session(shell: Shell) -> None:
    shell.ok(ECHO)
    result = shell.ok("%rp_panel")
    panel = result.result
    try:
        assert isinstance(panel, Panel) and panel.session is shell.session
        assert panel.handler.options == ("handler",)
        assert "nbworker-panel" in panel._dom_classes
        assert "nbworker-run-button" in panel.run_button._dom_classes
        assert "%rp_panel: takes no arguments" in shell.usage_error("%rp_panel x")
    finally:
        panel.close()


def test_handler_list_follows_the_registered_handlers(shell: Shell, panel: Panel) -> None:
    assert panel.handler.options == () and panel.run_button.disabled
    shell.ok(ECHO)  # a cell that runs refreshes the panel
    assert panel.handler.options == ("handler",) and panel.handler.value == "handler"
    assert not panel.run_button.disabled
    shell.session.register_handler(lambda job: 1, name="other")  # not in a cell
    assert panel.handler.options == ("handler",)
    panel.refresh_button.click()
    assert panel.handler.options == ("handler", "other") and panel.handler.value == "handler"
    panel.handler.value = "other"
    shell.session.registry.unregister("handler")
    panel.refresh_button.click()
    assert panel.handler.options == ("other",) and panel.handler.value == "other"


def test_invalid_json_disables_run_and_shows_the_position(shell: Shell, panel: Panel) -> None:
    shell.ok(ECHO)
    assert "valid job" in panel.validation.value and not panel.run_button.disabled
    panel.job.value = '{"input": {"a": 1,}}'
    assert panel.run_button.disabled and not panel.valid
    assert "at line 1 column 19 (char 18)" in panel.validation.value
    message = shell.usage_error('%rp_test {"input": {"a": 1,}}')  # the same words ...
    words = message.removeprefix("%rp_test: JOB_JSON ")
    assert f"the job {words}" in panel.validation.value  # ... about the job box, not JOB_JSON
    assert "JOB_JSON" not in panel.validation.value
    panel.job.value = '{"text": 1}'
    assert panel.run_button.disabled
    assert "the job has no &quot;input&quot;" in panel.validation.value
    panel.job.value = '{"input": {"a": 1}}'
    assert not panel.run_button.disabled and "valid job" in panel.validation.value


def test_run_shows_status_output_and_the_record(shell: Shell, panel: Panel) -> None:
    shell.ok(ECHO)
    panel.job.value = '{"input": {"text": "hi"}}'
    panel.run_button.click()
    run = panel.last_run
    assert run is not None and run.output == {"echo": {"text": "hi"}}
    data = shown(panel)
    assert data[RECORD_MIMETYPE]["output"] == {"echo": {"text": "hi"}}
    assert data["text/plain"].startswith("✓ COMPLETED  handler")
    assert shell.session.history[-1] is run  # recorded as %rp_test's runs are
    assert panel.history.options[0][0].startswith("1. ✓ COMPLETED handler")
    assert panel.kept == [{**run.to_record(), "origin": "panel"}]


def test_the_status_line_says_what_the_card_does_not(shell: Shell, panel: Panel) -> None:
    shell.ok("%%handler\ndef handler(job):\n    return 1")  # a run of some µs
    panel.run_button.click()
    status = panel.status.value
    assert "COMPLETED" not in status and "handler" not in status  # the card's headline
    assert "wall in the panel" in status and "memory: " in status
    assert "0.00 s" not in status and re.search(r"\d+ µs|\d\.\d\d ms", status)
    assert "not kept in the notebook (display the panel in a cell" in status  # never shown


def test_a_failed_run_is_shown_as_such(shell: Shell, panel: Panel) -> None:
    shell.ok("%%handler\ndef handler(job):\n    raise ValueError('text is required')")
    panel.run_button.click()
    assert shown(panel)["text/plain"].startswith("✗ FAILED")
    assert "ValueError: text is required" in shown(panel)["text/plain"]
    assert panel.kept[0]["status"] == "FAILED"
    assert not panel.run_button.disabled  # ready for the next run


def test_output_and_prints_scroll_inside_bounded_boxes(panel: Panel) -> None:
    for box in (panel.output, panel.printed):
        assert box.layout.max_height.endswith("em") and box.layout.overflow == "auto"
    assert panel.output.layout.max_height == "24em"


def test_streamed_chunks_show_while_the_handler_runs(shell: Shell, panel: Panel) -> None:
    shell.ok(
        """
        %%handler
        import time
        seen = []
        def shown_text():
            outputs = panel.output.outputs
            return outputs[0]["data"]["text/plain"] if outputs else ""
        def handler(job):
            for i in range(3):
                yield {"i": i}
                # back in the handler: the panel shows the chunk at its next tick
                deadline = time.monotonic() + 10
                while f'"i": {i}' not in shown_text():
                    assert time.monotonic() < deadline, "the chunk never showed"
                    time.sleep(0.01)
                seen.append((list(panel.chunks), shown_text()))
        """
    )
    panel.run_button.click()
    seen = shell.ipython.user_ns["seen"]
    assert seen[0][0] == [{"i": 0}]
    assert "IN_PROGRESS" in seen[0][1] and "1 chunk" in seen[0][1]
    assert panel.chunks == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert shown(panel)[RECORD_MIMETYPE]["stream"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert shown(panel)["text/plain"].startswith("✓ COMPLETED")


def test_history_rerun_loads_the_job_back(shell: Shell, panel: Panel) -> None:
    shell.ok(ECHO)
    shell.ok('%rp_test {"input": {"n": 1}}')  # a run of the magic is in the history too
    panel.refresh_button.click()
    panel.job.value = '{"input": {"n": 2}}'
    panel.run_button.click()
    labels = [label for label, _ in panel.history.options]
    assert len(labels) == 2 and labels[0].startswith("2.") and '{"n": 2}' in labels[0]
    panel.history.value = 1  # the older run, of %rp_test
    assert not panel.rerun_button.disabled
    panel.rerun_button.click()
    assert json.loads(panel.job.value)["input"] == {"n": 1}
    assert panel.last_run.output == {"echo": {"n": 1}}
    assert len(panel.history.options) == 3 and panel.history.value == 0


def test_cache_table_and_evict(shell: Shell, panel: Panel) -> None:
    assert panel.evict_button.disabled and "the model cache is empty" in panel.models.value
    shell.ok("%%model weights\nimport numpy as np\nweights = np.zeros(1024)")
    # a row of the table, its cells apart ("weights W 3.8 MiB 0.65 s" ran together)
    assert re.search(r"<td [^>]*padding:[^>]*>weights</td>", panel.models.value)
    assert "8.0 KiB" in panel.models.value  # 1024 float64 on cpu
    assert panel.model.value == "weights" and not panel.evict_button.disabled
    assert "weights" in shell.ipython.user_ns
    panel.evict_button.click()
    assert "weights: released (evicted), 8.0 KiB on cpu" in panel.cache_status.value
    assert "weights" not in shell.session.cache
    assert "weights" not in shell.ipython.user_ns  # unbound, as %rp_models --evict does
    assert "weights" not in panel.models.value and panel.evict_button.disabled
    assert "the model cache is empty" in panel.models.value and "<th" not in panel.models.value


def test_default_handler_is_the_one_named_handler(shell: Shell, panel: Panel) -> None:
    register = shell.session.register_handler
    register(lambda job: 1, name="alpha")
    panel.refresh()
    assert panel.handler.value == "alpha"  # the only one
    register(lambda job: 2, name="handler")
    register(lambda job: 3, name="beta")
    panel.refresh()
    assert panel.handler.options == ("alpha", "beta", "handler")
    assert panel.handler.value == "handler"  # not the first alphabetically
    shell.session.registry.unregister("handler")
    panel.refresh()
    assert panel.handler.value == "alpha"  # none named handler: the first
    panel.handler.value = "beta"  # a choice of the user's stays ...
    register(lambda job: 2, name="handler")
    panel.refresh()
    assert panel.handler.value == "beta"
    shell.session.registry.unregister("beta")  # ... while the handler exists
    panel.refresh()
    assert panel.handler.value == "handler"


def test_the_saved_view_is_a_short_text_and_html(shell: Shell, panel: Panel) -> None:
    shell.ok(ECHO)
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.model_id
    text = bundle["text/plain"]
    assert text.startswith("nbworker panel: handler `handler` (a widget: run this cell")
    assert "Panel(" not in text and "\n" not in text and len(text) < 200
    assert 'class="nbworker-panel-fallback"' in bundle["text/html"]
    assert "handler `handler`" in bundle["text/html"]


def test_rp_panel_keeps_its_runs_in_a_display_it_updates(shell: Shell) -> None:
    shell.ok(ECHO)
    shown_cell = shell.ok("%rp_panel")
    panel = shown_cell.result
    try:
        first, kept = shown_cell.captured.outputs  # the panel, then the display of its runs
        assert "application/vnd.jupyter.widget-view+json" in first.data
        display_id = kept.transient["display_id"]
        assert kept.data[PANEL_MIMETYPE] == {"runs": []}
        assert "none yet" in kept.data["text/plain"]
        shell.ok("%rp_panel").result.close()  # another panel: a display of its own
        panel.job.value = '{"input": {"n": 1}}'
        out = f"Out[{shown_cell.execution_count}]"
        ran = shell.ok(f"{out}.run()")  # from a later cell, as a click comes from the front end
        (update,) = [o for o in ran.captured.outputs if o.update]
        assert update.transient == {"display_id": display_id}
        assert update.data[PANEL_MIMETYPE] == {"runs": panel.kept}
        (record,) = panel.kept
        assert record["origin"] == "panel" and record["output"] == {"echo": {"n": 1}}
        assert "1 run kept in this notebook" in update.data["text/plain"]
        assert "1. ✓ COMPLETED handler" in update.data["text/plain"]
        assert "kept in this notebook as panel run 1" in panel.status.value
        # shown again, the panel keeps its runs in the display it made first
        again = shell.ok(out)
        assert [PANEL_MIMETYPE in o.data for o in again.captured.outputs] == [False]
    finally:
        panel.close()
