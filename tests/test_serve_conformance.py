"""The endpoint conformance suite (tests/endpoint_suite.py), which the SDK's own
`--rp_serve_api` server passes (tests/test_client.py), run against `%rp_serve`: handlers
registered with `%%handler` in a real InteractiveShell, served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from endpoint_suite import (
    HANDLER_CHECKS,
    STREAM_CHECKS,
    SUITE_HANDLER_BODY,
    SUITE_STREAM_HANDLER_BODY,
)

from nbworker import serve
from nbworker.client import Endpoint

FULL = frozenset({"health", "cancel"})  # routes %rp_serve has and the SDK's server lacks


@pytest.fixture(scope="module")
def servers(ipython) -> Iterator[dict[str, str]]:
    from shell import Shell

    from nbworker.magics import uninstall

    shell = Shell(ipython)
    shell.ok("%%handler\n" + SUITE_HANDLER_BODY)
    # the SDK's /runsync of a generator answers all its chunks: --aggregate, as deployed
    shell.ok(
        "%%handler streamer --aggregate\n"
        + SUITE_STREAM_HANDLER_BODY.replace("def handler(", "def streamer(")
    )
    shell.ok("%rp_serve --port 0")
    (plain,) = serve.running(shell.session)
    stream = serve.serve(shell.session, "streamer")
    try:
        yield {"plain": plain.url, "stream": stream.url}
    finally:
        stream.stop()
        shell.ok("%rp_serve --stop")
        uninstall(ipython)


@pytest.mark.parametrize("check", HANDLER_CHECKS, ids=lambda check: check.__name__)
def test_rp_serve_conforms(servers, check) -> None:
    check(Endpoint(servers["plain"]), FULL)


@pytest.mark.parametrize("check", STREAM_CHECKS, ids=lambda check: check.__name__)
def test_rp_serve_streaming_conforms(servers, check) -> None:
    check(Endpoint(servers["stream"]), FULL)


@pytest.mark.slow
def test_rp_serve_in_a_real_kernel_swaps_handlers_and_a_cell_calls_it(tmp_path) -> None:
    import nbformat
    import papermill
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [
        "%load_ext nbworker",
        '%%handler\ndef handler(job):\n    return {"n": job["input"]["n"] + 1}',
        "%rp_serve --port 0",
        "from nbworker import serve\nfrom nbworker.client import Endpoint\n"
        "ep = Endpoint(serve.running()[0].url)\n"
        'assert ep.run_sync({"input": {"n": 1}})["output"] == {"n": 2}',
        '%%handler\ndef handler(job):\n    return {"n": job["input"]["n"] + 100}',
        'job = ep.run({"input": {"n": 1}})\n'
        'import time\nfor _ in range(100):\n    answer = ep.status(job["id"])\n'
        '    if answer["status"] == "COMPLETED":\n        break\n    time.sleep(0.02)\n'
        'assert answer["output"] == {"n": 101}, answer',
        "%rp_serve --stop\nassert serve.running() == []",
    ]
    path = tmp_path / "serve.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), path)
    executed = papermill.execute_notebook(
        str(path), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False
    )
    printed = "".join(o.get("text", "") for o in executed.cells[2].outputs)
    assert "serving handler `handler`" in printed or "serving handler handler" in printed, printed
