"""The panel (`nbworker.panel()`, `%rp_panel`) in a real InteractiveShell, clicked through
the widget API."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from shell import Shell

from nbworker.record import RECORD_MIMETYPE
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
    message = shell.usage_error('%rp_test {"input": {"a": 1,}}')  # the same words
    assert message.removeprefix("%rp_test: ") in panel.validation.value
    panel.job.value = '{"text": 1}'
    assert panel.run_button.disabled and "has no &quot;input&quot;" in panel.validation.value
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
    assert "COMPLETED" in panel.status.value and "memory:" in panel.status.value
    assert " ms" in panel.status.value or " µs" in panel.status.value
    assert shell.session.history[-1] is run  # recorded as %rp_test's runs are
    assert panel.history.options[0][0].startswith("1. ✓ COMPLETED handler")


def test_a_failed_run_is_shown_as_such(shell: Shell, panel: Panel) -> None:
    shell.ok("%%handler\ndef handler(job):\n    raise ValueError('text is required')")
    panel.run_button.click()
    assert "FAILED" in panel.status.value
    assert "ValueError: text is required" in shown(panel)["text/plain"]
    assert not panel.run_button.disabled  # ready for the next run


def test_streamed_chunks_show_while_the_handler_runs(shell: Shell, panel: Panel) -> None:
    shell.ok(
        """
        %%handler
        import time
        seen = []
        def handler(job):
            for i in range(3):
                yield {"i": i}
                # back in the handler: the panel has shown the chunk already
                seen.append((list(panel.chunks), panel.output.outputs[0]["data"]["text/plain"]))
                time.sleep(0.03)
        """
    )
    panel.run_button.click()
    seen = shell.ipython.user_ns["seen"]
    assert seen[0][0] == [{"i": 0}]
    assert seen[0][1].startswith("… IN_PROGRESS  handler") and "1 chunks" in seen[0][1]
    assert '[0] {"i": 0}' in seen[0][1]
    assert panel.chunks == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert shown(panel)[RECORD_MIMETYPE]["stream"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert "COMPLETED" in panel.status.value


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
    assert panel.evict_button.disabled and "the model cache" not in panel.models.value
    shell.ok("%%model weights\nimport numpy as np\nweights = np.zeros(1024)")
    assert "<td style='text-align:left'>weights</td>" in panel.models.value
    assert "8.0 KiB" in panel.models.value  # 1024 float64 on cpu
    assert panel.model.value == "weights" and not panel.evict_button.disabled
    assert "weights" in shell.ipython.user_ns
    panel.evict_button.click()
    assert "weights: released (evicted), 8.0 KiB on cpu" in panel.cache_status.value
    assert "weights" not in shell.session.cache
    assert "weights" not in shell.ipython.user_ns  # unbound, as %rp_models --evict does
    assert "weights" not in panel.models.value and panel.evict_button.disabled
