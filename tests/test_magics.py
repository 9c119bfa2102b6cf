"""`%%handler` and `%rp_test` in a real IPython InteractiveShell."""

from __future__ import annotations

import json

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from kernel_client import strip_ansi
from shell import RECORD_KEYS, Shell

from nbworker.record import RECORD_MIMETYPE, Run

ECHO = """
%%handler
def handler(job):
    return {"echo": job["input"]}
"""


# ---------------------------------------------------------------- the extension


def test_load_ext_registers_the_magics_with_help(ipython: InteractiveShell) -> None:
    with capture_output():
        ipython.run_line_magic("load_ext", "nbworker")
    try:
        assert ipython.find_cell_magic("handler") is not None
        rp_test = ipython.find_line_magic("rp_test")
        assert "--timeout SECONDS" in rp_test.__doc__ and "-f FILE.json" in rp_test.__doc__
    finally:
        with capture_output():
            ipython.run_line_magic("unload_ext", "nbworker")
    assert ipython.find_line_magic("rp_test") is None


def test_load_ext_shares_the_default_session_with_the_python_api(ipython) -> None:
    import nbworker

    with capture_output():
        ipython.run_line_magic("load_ext", "nbworker")
    try:

        @nbworker.register_handler
        def twin(job):
            return job["input"]["x"] * 2

        run = ipython.run_line_magic("rp_test", 'twin {"input": {"x": 21}}')
        assert (run.status, run.output) == ("COMPLETED", 42)
    finally:
        nbworker.default_session().registry.unregister("twin")
        with capture_output():
            ipython.run_line_magic("unload_ext", "nbworker")


# ---------------------------------------------------------------- %%handler


@pytest.mark.parametrize(
    ("cell", "name", "kind"),
    [
        ("def handler(job):\n    return 1", "handler", "sync"),
        ("async def handler(job):\n    return 1", "handler", "async"),
        ("def stream(job):\n    yield 1", "stream", "generator"),
        ("async def stream(job):\n    yield 1", "stream", "async_generator"),
        (
            "def helper(x):\n    return x\ndef handler(job):\n    return helper(1)",
            "handler",
            "sync",
        ),
        ("import functools\nhandler = functools.partial(lambda job, k: k, k=1)", "handler", "sync"),
    ],
)
def test_handler_registers_by_the_rules(shell: Shell, cell: str, name: str, kind: str) -> None:
    out = shell.ok(f"%%handler\n{cell}").captured.stdout
    spec = shell.session.registry.get(name)
    assert spec.kind == kind
    assert spec.source.rstrip("\n") == cell
    assert f"registered `{name}` ({kind.replace('_', ' ')})" in out


def test_handler_name_argument_and_options(shell: Shell) -> None:
    shell.ok(
        """
        %%handler tokens --aggregate --concurrency 4
        def helper(job):
            return 0
        def tokens(job):
            yield from range(3)
        """
    )
    spec = shell.session.registry.get("tokens")
    assert (spec.kind, spec.aggregate, spec.concurrency) == ("generator", True, 4)
    assert "helper" not in shell.session.registry


def test_a_concurrency_modifier_in_the_cell_is_picked_up_by_its_name(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_CONCURRENCY", "3")
    out = shell.ok(
        """
        %%handler
        import os
        def concurrency_modifier(current: int) -> int:
            return int(os.environ.get("MAX_CONCURRENCY", 1))
        def generate(job):
            return job["input"]
        """
    ).captured.stdout
    spec = shell.session.registry.get("generate")  # the modifier is not "the only function"
    assert spec.concurrency_modifier is shell.ipython.user_ns["concurrency_modifier"]
    assert (spec.concurrency, spec.concurrency_modifier(1)) == (1, 3)
    assert out.splitlines()[0] == (
        "registered `generate` (sync, concurrency_modifier concurrency_modifier)"
    )


def test_concurrency_modifier_option_names_a_function_of_any_cell(shell: Shell) -> None:
    shell.ok("def scale_from_env(current):\n    return current + 1")
    out = shell.ok(
        """
        %%handler --concurrency-modifier scale_from_env
        def concurrency_modifier(current):
            return 9
        def handler(job):
            return 1
        """
    ).captured.stdout
    spec = shell.session.registry.get("handler")
    assert spec.concurrency_modifier is shell.ipython.user_ns["scale_from_env"]  # it wins
    assert "(sync, concurrency_modifier scale_from_env)" in out


def test_register_handler_takes_a_concurrency_modifier() -> None:
    from nbworker.errors import HandlerError
    from nbworker.session import Session

    session = Session()
    spec = session.register_handler(lambda job: 1, name="h", concurrency_modifier=lambda c: 2)
    assert spec.concurrency_modifier(1) == 2
    assert session.registry.get("h").concurrency == 1
    numpy = pytest.importorskip("numpy")  # any integer will do, as for the SDK
    session.register_handler(lambda job: 1, name="h", concurrency_modifier=lambda c: numpy.int64(2))
    with pytest.raises(HandlerError, match=r"^concurrency 3 and concurrency_modifier <lambda>"):
        session.register_handler(
            lambda job: 1, name="h", concurrency=3, concurrency_modifier=lambda c: 2
        )

    async def later(current):
        return 2

    with pytest.raises(HandlerError, match=r"^concurrency_modifier later\(1\) returned <coro"):
        session.register_handler(lambda job: 1, name="h", concurrency_modifier=later)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (
            "%%handler --concurrency 4\n"
            "def concurrency_modifier(current):\n    return 2\n"
            "def handler(job):\n    return 1",
            "%%handler: --concurrency 4 and concurrency_modifier concurrency_modifier both "
            "size the worker: keep one",
        ),
        (
            "%%handler --concurrency-modifier never_defined_anywhere\ndef handler(job): pass",
            "%%handler: --concurrency-modifier never_defined_anywhere: no cell has defined "
            "'never_defined_anywhere'",
        ),
        (
            "%%handler --concurrency-modifier 2x\ndef handler(job): pass",
            "%%handler: '2x' is not a Python name",
        ),
        (
            "%%handler\nconcurrency_modifier = 4\ndef handler(job): pass",
            "%%handler: concurrency_modifier 4 is not callable",
        ),
        (
            "%%handler\ndef concurrency_modifier():\n    return 2\ndef handler(job): pass",
            "%%handler: concurrency_modifier concurrency_modifier() cannot take one argument: "
            "RunPod calls concurrency_modifier(current_concurrency)",
        ),
        (
            "%%handler\ndef concurrency_modifier(current):\n    return '3'\ndef handler(job): pass",
            "%%handler: concurrency_modifier concurrency_modifier(1) returned '3', not a whole "
            "number: deployed, this stops the worker; return a whole number >= 1, the jobs to "
            "run at once",
        ),
        (
            "%%handler\ndef concurrency_modifier(current):\n    return 0\ndef handler(job): pass",
            "%%handler: concurrency_modifier concurrency_modifier(1) returned 0: deployed, the "
            "worker would take no jobs; return a whole number >= 1, the jobs to run at once",
        ),
        (
            "%%handler\nimport os\n"
            "def concurrency_modifier(current):\n    return int(os.environ['NO_SUCH_VAR_NB'])\n"
            "def handler(job): pass",
            "%%handler: concurrency_modifier concurrency_modifier(1) raised KeyError: "
            "'NO_SUCH_VAR_NB': deployed, this stops the worker",
        ),
    ],
)
def test_concurrency_modifier_errors_are_one_line(shell: Shell, cell: str, message: str) -> None:
    assert shell.usage_error(cell) == message
    assert shell.session.registry.names() == []


def test_rerunning_the_cell_replaces_the_handler(shell: Shell) -> None:
    shell.ok("%%handler\ndef handler(job):\n    return 1")
    assert shell.ipython.run_line_magic("rp_test", '{"input": {}}').output == 1
    shell.ok("%%handler\ndef handler(job):\n    return 2")
    assert shell.ipython.run_line_magic("rp_test", '{"input": {}}').output == 2
    assert shell.session.registry.names() == ["handler"]


def test_renaming_the_function_in_the_same_cell_replaces_the_old_name(shell: Shell) -> None:
    shell.ok("%%handler\ndef first(job):\n    return 1", cell_id="cell-a")
    shell.ok("%%handler\ndef other(job):\n    return 0", cell_id="cell-b")
    out = shell.ok("%%handler\ndef second(job):\n    return 2", cell_id="cell-a").captured.stdout
    assert shell.session.registry.names() == ["other", "second"]
    assert "replaces `first`" in out


def test_several_handlers_and_the_default_rule(shell: Shell) -> None:
    shell.ok("%%handler\ndef a(job):\n    return 'a'")
    shell.ok("%%handler\ndef b(job):\n    return 'b'")
    message = shell.usage_error('%rp_test {"input": {}}')
    assert message == (
        "%rp_test: 2 handlers are registered (a, b) and none is named 'handler': say which one to run"
    )
    assert shell.record('%rp_test b {"input": {}}')["output"] == "b"
    shell.ok(ECHO)
    assert shell.record('%rp_test {"input": {"k": 1}}')["output"] == {"echo": {"k": 1}}


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (
            "%%handler\nx = 1",
            "%%handler: the cell defines no function; write `def handler(job): ...`",
        ),
        (
            "%%handler\ndef a(job): pass\ndef b(job): pass",
            "%%handler: the cell defines 2 functions (a, b) and none is named 'handler'; "
            "name the one to register: %%handler a",
        ),
        (
            "%%handler\ndef handler(x, y): pass",
            "%%handler: handler(x, y) cannot take one positional argument: RunPod calls handler(job)",
        ),
        (
            "%%handler\ndef handler(): pass",
            "%%handler: handler() cannot take one positional argument: RunPod calls handler(job)",
        ),
        ("%%handler 1x\ndef handler(job): pass", "%%handler: '1x' is not a Python name"),
        (
            "%%handler missing\ndef handler(job): pass",
            "%%handler: the cell did not define 'missing'",
        ),
        (
            "%%handler --aggregate\ndef handler(job): return 1",
            "%%handler: --aggregate applies to generator handlers; handler is sync",
        ),
        (
            "%%handler --concurrency 0\ndef handler(job): return 1",
            "%%handler: concurrency must be a whole number >= 1, not 0",
        ),
        ("%%handler --bogus\ndef handler(job): pass", "%%handler: unrecognized arguments: --bogus"),
        (
            "%%handler\ndef handler(job):\n    return 1\n  oops",
            "%%handler: IndentationError at line 4 of the cell: "
            "unindent does not match any outer indentation level: oops",
        ),
        (
            "%%handler\ndef handler(job):\n    return (1",
            "%%handler: SyntaxError at line 3 of the cell: incomplete input: return (1",
        ),
    ],
)
def test_handler_usage_errors(shell: Shell, cell: str, message: str) -> None:
    assert shell.usage_error(cell) == message
    assert shell.session.registry.names() == []


def test_handler_cell_that_raises_fails_the_cell_and_registers_nothing(shell: Shell) -> None:
    result = shell.run(
        "%%handler\ndef handler(job):\n    return 1\nraise ValueError('setup broke')"
    )
    assert isinstance(result.error_in_exec, ValueError)
    assert "handler" not in shell.session.registry
    assert "nbworker/magics.py" not in result.captured.stdout + result.captured.stderr


def test_handler_warns_about_deploy_only_problems(shell: Shell) -> None:
    out = shell.ok(
        """
        %%handler
        import asyncio, functools
        def traced(function):
            @functools.wraps(function)
            def wrapper(job):
                return function(job)
            return wrapper
        @traced
        def handler(job):
            yield 1
        """
    ).captured.stdout
    assert "generator hidden behind a decorator" in out
    out = shell.ok(
        """
        %%handler
        import asyncio
        def handler(job):
            return asyncio.run(asyncio.sleep(0, result=1))
        """
    ).captured.stdout
    assert "handler calls asyncio.run(): a deployed worker calls handlers inside its running" in out


# ---------------------------------------------------------------- %rp_test


def test_rp_test_records_the_run_in_the_cell(shell: Shell) -> None:
    shell.ok(ECHO)
    result = shell.ok('%rp_test {"input": {"text": "hello"}}')
    outputs = result.captured.outputs
    assert len(outputs) == 1  # shown once, though the magic's value is the cell's value
    data = outputs[0].data
    assert {"text/plain", "text/html", RECORD_MIMETYPE} <= set(data)
    record = data[RECORD_MIMETYPE]
    assert set(record) == RECORD_KEYS
    assert record["handler"] == "handler"
    assert record["job"] == {"id": "local_test", "input": {"text": "hello"}}
    assert record["status"] == "COMPLETED"
    assert record["output"] == {"echo": {"text": "hello"}}
    assert record["error"] is None and record["stream"] is None
    assert record["refresh_worker"] is False and record["duration_ms"] >= 0
    json.dumps(record, allow_nan=False)
    assert "COMPLETED" in data["text/plain"] and "&quot;echo&quot;" in data["text/html"]
    # a bare %rp_test line is not the cell's value (no empty `Out[n]:` in a terminal)
    assert result.result is None
    assert shell.session.history[-1].output == {"echo": {"text": "hello"}}


def test_rp_test_returns_the_run_and_later_cells_display_it(shell: Shell) -> None:
    shell.ok(ECHO)
    assigned = shell.ok('run = %rp_test {"input": {"a": 1}}')
    assert len(shell.records(assigned)) == 1
    assert shell.ipython.user_ns["run"].output == {"echo": {"a": 1}}
    shown_again = shell.ok("run")
    assert shell.records(shown_again)[0]["output"] == {"echo": {"a": 1}}


def test_failed_run_is_a_result_not_an_error_of_the_cell(shell: Shell) -> None:
    shell.ok(
        """
        %%handler
        def handler(job):
            if "text" not in job["input"]:
                raise ValueError("text is required")
            return job["input"]["text"]
        """
    )
    result = shell.ok('%rp_test {"input": {}}')
    (record,) = shell.records(result)
    assert record["status"] == "FAILED"
    assert json.loads(record["error"])["error_message"] == "text is required"
    text = result.captured.outputs[0].data["text/plain"]
    assert "ValueError: text is required" in text
    assert "Cell In[" in text and 'raise ValueError("text is required")' in text
    assert "nbworker/" not in text


def test_rp_test_shows_what_the_handler_prints(shell: Shell) -> None:
    shell.ok("%%handler\ndef handler(job):\n    print('loading', job['id'])\n    return 1")
    assert "loading local_test" in shell.ok('%rp_test {"input": {}}').captured.stdout


def test_rp_test_streams_and_aggregates(shell: Shell) -> None:
    shell.ok(
        "%%handler --aggregate\nasync def handler(job):\n    for i in range(3):\n        yield {'i': i}"
    )
    result = shell.ok('%rp_test {"input": {}}')
    assert len(result.captured.outputs) == 1  # ended before the first tick: no live view
    record = shell.records(result)[-1]
    assert record["stream"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert record["output"] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_rp_test_timeout_leaves_the_session_alive(shell: Shell) -> None:
    shell.ok("model = {'weights': [1, 2, 3]}")
    shell.ok("%%handler\ndef handler(job):\n    while True:\n        pass")
    record = shell.record('%rp_test {"input": {}} --timeout 0.3')
    assert record["status"] == "TIMED_OUT"
    assert shell.ipython.user_ns["model"] == {"weights": [1, 2, 3]}
    shell.ok("%%handler\ndef handler(job):\n    return sum(model['weights'])")
    assert shell.record('%rp_test --timeout 5 {"input": {}}')["output"] == 6


def test_rp_test_interrupt_records_cancelled_and_ends_the_cell(shell: Shell) -> None:
    shell.ok("%%handler\ndef handler(job):\n    while True:\n        pass")
    result = shell.run(
        "import _thread, threading\n"
        "threading.Timer(0.3, _thread.interrupt_main).start()\n"
        '%rp_test {"input": {}}'
    )
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    (record,) = shell.records(result)
    assert record["status"] == "CANCELLED"
    assert "handler" in shell.session.registry


def test_rp_test_job_sources(shell: Shell, tmp_path) -> None:
    shell.ok(ECHO)
    path = tmp_path / "test_input.json"
    path.write_text('{"input": {"from": "file"}, "id": "abc"}')
    record = shell.record(f"%rp_test -f {path}")
    assert record["job"] == {"id": "abc", "input": {"from": "file"}}
    shell.ok('job = {"input": {"from": "dict"}}\ntext = \'{"input": {"from": "text"}}\'')
    assert shell.record("%rp_test --var job")["output"] == {"echo": {"from": "dict"}}
    assert shell.record("%rp_test handler --var text")["output"] == {"echo": {"from": "text"}}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '%rp_test {"input": {"text": "x"}',
            "%rp_test: JOB_JSON is not valid JSON: Expecting ',' delimiter at line 1 column 24 "
            "(char 23)",
        ),
        (
            "%rp_test [1, 2]",
            '%rp_test: JOB_JSON must be a JSON object like {"input": {...}}, not list',
        ),
        ("%rp_test 42", '%rp_test: JOB_JSON must be a JSON object like {"input": {...}}, not int'),
        (
            '%rp_test {"inputs": {}}',
            '%rp_test: JOB_JSON has no "input": a RunPod job looks like {"input": {...}} '
            "(keys given: 'inputs')",
        ),
        (
            "%rp_test",
            '%rp_test: give the job once: as JSON (%rp_test {"input": {...}}), -f FILE.json or '
            '--var NAME, e.g. %rp_test {"input": {"text": "hi"}}',
        ),
        (
            '%rp_test {"input": {}} --var job',
            '%rp_test: give the job once: as JSON (%rp_test {"input": {...}}), -f FILE.json or '
            "--var NAME",
        ),
        ('%rp_test handler extra {"input": {}}', "%rp_test: unexpected argument 'extra'"),
        ('%rp_test nope {"input": {}}', "%rp_test: no handler named 'nope'; registered: handler"),
        ('%rp_test {"input": {}} --timeout 0', "%rp_test: --timeout must be positive, not 0"),
        (
            "%rp_test -f /no/such/file.json",
            "%rp_test: cannot read /no/such/file.json: No such file or directory",
        ),
        ("%rp_test --var undefined_name", "%rp_test: no variable named 'undefined_name'"),
        ('%rp_test {"input": {}} --bogus', "%rp_test: unrecognized arguments: --bogus"),
    ],
)
def test_rp_test_usage_errors(shell: Shell, line: str, message: str) -> None:
    shell.ok(ECHO)
    assert shell.usage_error(line) == message


def test_rp_test_without_handlers(shell: Shell) -> None:
    assert shell.usage_error('%rp_test {"input": {}}') == (
        "%rp_test: no handler is registered: define one in a %%handler cell "
        "(or call nbworker.register_handler)"
    )


def test_usage_errors_show_one_line(shell: Shell) -> None:
    result = shell.run("%rp_test [1]")
    shown = result.captured.stdout + result.captured.stderr
    assert [line for line in shown.splitlines() if line.strip()] == [
        'UsageError: %rp_test: JOB_JSON must be a JSON object like {"input": {...}}, not list'
    ]


def test_rp_test_shows_deploy_warnings(shell: Shell) -> None:
    shell.ok(
        """
        %%handler
        import asyncio
        def handler(job):
            return asyncio.run(asyncio.sleep(0, result={"when": object()}))
        """
    )
    # In a kernel the handler sees the kernel's running loop, as it would see the worker's.
    record = shell.record('%rp_test {"input": "not an object"}')
    warnings = "\n".join(record["warnings"])
    assert "calls asyncio.run()" in warnings
    assert "input is str, not an object" in warnings


def test_a_concurrency_modifier_that_exits_is_a_one_line_error(shell: Shell) -> None:
    message = shell.usage_error(
        "%%handler\nimport sys\ndef concurrency_modifier(current):\n    sys.exit(2)\n"
        "def handler(job):\n    return 1"
    )
    assert message.startswith("%%handler: concurrency_modifier concurrency_modifier(1) raised ")
    assert "SystemExit" in message and "\n" not in message


def test_top_level_await_in_a_handler_or_model_cell_names_the_cell_line(shell) -> None:
    """IPython's autoawait would run it, handler.py cannot: one line naming the cell's line,
    not a SyntaxError traceback through nbworker."""
    message = shell.usage_error(
        "%%handler\nimport asyncio\nawait asyncio.sleep(0)\ndef handler(job):\n    return 1"
    )
    assert message.startswith("%%handler: `await` outside a function at line 3 of the cell")
    assert "async def handler(job)" in message
    message = shell.usage_error("%%model m\nimport asyncio\nx = await asyncio.sleep(0, 1)")
    assert message.startswith("%%model: `await` outside a function at line 3 of the cell")
    assert "m" not in shell.session.cache


def test_a_magic_line_parsed_before_is_not_parsed_again_and_each_cell_gets_its_own(
    shell: Shell, monkeypatch
) -> None:
    from nbworker import magics

    parsed: list[str] = []
    real = magics.arguments.words

    def counting(line):
        parsed.append(line)
        return real(line)

    monkeypatch.setattr(magics.arguments, "words", counting)
    shell.ok(ECHO)
    for _ in range(3):
        shell.ok('%rp_test {"input": {"text": "hi"}}')
    shell.ok('%rp_test --timeout 5 {"input": {"text": "hi"}}')
    # %%handler's line, then %rp_test's options (beside the JSON) of each kind: once each
    assert parsed == ["", "", "--timeout 5"], parsed
    installed = shell.ipython.magics_manager.registry["NbworkerMagics"]
    first = installed._args(installed.rp_test, "--timeout 5")
    first.timeout = 99.0  # a copy: the next cell gets the line's own values
    assert installed._args(installed.rp_test, "--timeout 5").timeout == 5.0


# ---------------------------------------------------------------- magic lines


def test_a_trailing_comment_ends_every_magic_line(shell: Shell) -> None:
    """README's first example: a `#` that begins a word, outside quotes and the JSON."""
    out = shell.ok("%%model classifier   # runs once; re-running is a cache hit\nw = [1]")
    assert shell.session.cache.names() == ["classifier"], out.captured.stdout
    shell.ok('%%handler   # `handler`, sync\ndef handler(job):\n    return job["input"]')
    record = shell.record('%rp_test {"input": {"text": "#1 # not a comment"}}  # a comment')
    assert record["output"] == {"text": "#1 # not a comment"}
    record = shell.record('%rp_test {"input": {"t": "}"}} --timeout 5 # a } in a string')
    assert record["output"] == {"t": "}"}
    assert (
        "classifier"
        in shell.ok("%rp_models  # what is cached").captured.outputs[0].data["text/plain"]
    )
    assert shell.ok("%rp_serve --stop  # nothing to stop").captured.stdout == "not serving\n"
    message = shell.usage_error("%rp_export   # the notebook this kernel runs")
    assert message.startswith("%rp_export: this kernel does not know its notebook's path")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("--var job#1", "no variable named 'job#1'", id="inside-a-word"),
        pytest.param('-f "/no/such # file.json"  # c', "cannot read /no/such # file.json", id="dq"),
        pytest.param("-f '/no/it\\'s # x.json", "cannot read /no/it\\s:", id="sq-no-escape"),
        pytest.param('-f "/no/\\"q\\" # x.json" # c', 'cannot read /no/"q" # x.json', id="escaped"),
        pytest.param("-f /no/a\\ \\#b.json # c", "cannot read /no/a #b.json", id="backslash"),
        pytest.param('-f "/no/x.json', 'no closing quotation: -f "/no/x.json', id="unclosed"),
        pytest.param('{"input": 1,} # c', "JOB_JSON is not valid JSON", id="bad-json"),
        pytest.param("# all of it", "give the job once", id="all-comment"),
    ],
)
def test_comments_quotes_and_json_on_an_rp_test_line(shell: Shell, line: str, message: str) -> None:
    shell.ok(ECHO)
    error = shell.usage_error(f"%rp_test {line}")
    assert error.startswith("%rp_test: ") and message in error, error


@pytest.mark.parametrize(
    ("line", "options", "job"),
    [
        (
            '{"input": {"text": "#1 # not a comment"}}  # a comment',
            "",
            '{"input": {"text": "#1 # not a comment"}}',
        ),
        (
            '--timeout 5 {"input": {"t": "}"}} --no-compare # c',
            "--timeout 5   --no-compare",
            '{"input": {"t": "}"}}',
        ),
        ('[1, "#"] #c', "", '[1, "#"]'),
        ('{"a": 1}#right after the JSON', "", '{"a": 1}'),
        ('name # {"input": 1}', "name", None),
        ("--var x#y --token 'a # b' \\#c # d", "--var x#y --token 'a # b' \\#c", None),
        ('--token "a\\" # b" # c', '--token "a\\" # b"', None),
        ('{"input": 1,} # bad JSON runs to the comment', "", '{"input": 1,} '),
        ('{"input": "# unclosed', "", '{"input": "# unclosed'),
        ("# all of it", "", None),
    ],
)
def test_a_magic_line_splits_into_options_job_and_comment(
    line: str, options: str, job: str | None
) -> None:
    from nbworker import arguments

    assert arguments.split_job_json(line) == (options, job)
    # export reads a `%%model` / `%%handler` line as the magic does
    parsed = arguments.parse(arguments.MODEL, "classifier   # runs once", prog="%%model")
    assert parsed.name == "classifier"


def test_help_and_argument_errors_name_the_magic_as_it_is_written(shell: Shell) -> None:
    for magic, usage in [
        ("%%handler", "%%handler [--aggregate]"),
        ("%%model", "%%model [--reload]"),
    ]:
        assert usage in shell.ok(f"{magic}?").captured.stdout
    assert "  %rp_test [-f FILE.json]" in shell.ok("%rp_test?").captured.stdout
    errors = {
        "%%model\nx = 1": "%%model: the following arguments are required: name",
        "%%handler --concurrency x\ndef handler(job): pass": "%%handler: argument --concurrency:",
        "%rp_serve --port x": "%rp_serve: argument --port: invalid int value: 'x'",
        "%rp_models --bogus": "%rp_models: unrecognized arguments: --bogus",
        "%rp_export a b": "%rp_export: unrecognized arguments: b",
        "%rp_panel now": "%rp_panel: takes no arguments, not 'now'",
    }
    for cell, start in errors.items():
        message = shell.usage_error(cell)
        assert message.startswith(start) and "\n" not in message, message


# ---------------------------------------------------------------- the cell's value


def test_a_bare_rp_test_line_is_not_the_cells_value(shell: Shell) -> None:
    """The display hook writes `Out[n]: ` for a cell's value, as a terminal does: a bare
    `%rp_test` gets none; `run = %rp_test` still gets the Run, shown when asked for."""
    shell.ok(ECHO)
    bare = shell.ok('%rp_test {"input": {"a": 1}}')
    assert "Out[" not in bare.captured.stdout and bare.result is None
    assert len(shell.records(bare)) == 1
    looped = shell.ok('for n in range(2):\n    %rp_test {"input": {"n": 1}}\n%rp_test {"input": 2}')
    assert "Out[" not in looped.captured.stdout and len(shell.records(looped)) == 3
    assigned = shell.ok('run = %rp_test {"input": {"a": 2}}\nrun.output')
    assert "Out[" in assigned.captured.stdout and assigned.result == {"echo": {"a": 2}}
    shown = shell.ok("run")
    assert "Out[" in shown.captured.stdout and isinstance(shown.result, Run)
    # the transformer is there only for a cell that names rp_test, and leaves with the magics
    quiet = shell.ipython.magics_manager.registry["NbworkerMagics"].quiet
    assert quiet not in shell.ipython.ast_transformers
    shell.ok("x = 1  # rp_test")
    assert quiet in shell.ipython.ast_transformers
    from nbworker.magics import uninstall

    uninstall(shell.ipython)
    assert quiet not in shell.ipython.ast_transformers


def test_an_interrupted_run_shows_its_card_alone_and_fails_the_cell(shell: Shell) -> None:
    """A KeyboardInterrupt (Ctrl-C, or the handler's own) cancels the run: the CANCELLED
    card is the cell's one output, no traceback, and the cell fails (so "Run all" stops)."""
    shell.ok("%%handler\ndef handler(job):\n    raise KeyboardInterrupt")
    result = shell.run('%rp_test {"input": {}}')
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    (record,) = shell.records(result)
    assert record["status"] == "CANCELLED" and len(result.captured.outputs) == 1
    assert "Traceback" not in result.captured.stdout + result.captured.stderr
    # any other KeyboardInterrupt is shown as IPython shows it
    other = shell.run("raise KeyboardInterrupt('not a run')")
    assert isinstance(other.error_in_exec, KeyboardInterrupt)
    assert "KeyboardInterrupt: not a run" in strip_ansi(other.captured.stdout)


def test_the_interrupt_handler_chains_to_the_one_before_and_gives_it_back(shell: Shell) -> None:
    from nbworker.magics import install, uninstall

    ipython = shell.ipython
    seen: list[BaseException] = []
    uninstall(ipython)
    ipython.set_custom_exc(
        (ValueError,),
        lambda _shell, _etype, value, _tb, tb_offset=None: [seen.append(value) or "handled"],
    )
    before = (ipython.custom_exceptions, ipython.CustomTB)
    try:
        install(ipython, shell.session)
        assert ipython.custom_exceptions == (ValueError, KeyboardInterrupt)
        error = shell.run("raise ValueError('mine')").error_in_exec
        assert seen == [error]
        uninstall(ipython)
        assert (ipython.custom_exceptions, ipython.CustomTB) == before
    finally:
        ipython.set_custom_exc((), None)
        install(ipython, shell.session)
