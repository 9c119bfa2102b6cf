"""`replay_against(...)`: `nbworker test --url/--endpoint` from a notebook cell.

    from nbworker.testing import replay_against
    replay_against(url="http://127.0.0.1:8000")          # this kernel's runs, to a server
    replay_against("sentiment.ipynb", endpoint="abc123")  # a saved notebook's runs

It returns a `ServerReplay`, which a notebook shows as a card with a table (as `%rp_test`
shows a run: JupyterLab's theme variables, plain text beside it) and which has `passed`,
`exit_code` and the report. Without a notebook, the cases are the runs this kernel's
session holds (the nbworker magics' session, else the default one; `%rp_test`'s and the
panel's, not the jobs `%rp_serve` ran): the COMPLETED and FAILED runs of the handler chosen
as export would choose it among the registered ones. Those
runs carry no `%rp_test --ignore` or `--no-compare`: each is compared whole; a saved
notebook's cases keep theirs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from nbworker.testing.model import Case, NotebookReport, Options, Result, selected

__all__ = ["KERNEL_NAME", "ServerReplay", "replay_session"]

KERNEL_NAME = "kernel"  # what case ids call this kernel's runs: kernel::run-N::case-1
_CELL = "text-align:left;padding:2px 14px 2px 0;vertical-align:top"


@dataclass
class ServerReplay:
    """What `replay_against` gave: the report of one notebook (or of this kernel's runs)."""

    report: NotebookReport

    @property
    def cases(self) -> list[Case]:
        return self.report.cases

    @property
    def exit_code(self) -> int:
        """As `nbworker test`'s: 0 passed, 1 a case failed, 3 the server (or the notebook)
        failed, 5 no case was compared."""
        return self.report.exit_code

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def junit_xml(self) -> str:
        from nbworker.testing.report import junit_xml

        return junit_xml([self.report])

    def __str__(self) -> str:
        from nbworker.testing.report import summary

        return summary([self.report])

    def __repr__(self) -> str:
        return f"<ServerReplay {self.report.remote}: {self._headline()}>"

    def _headline(self) -> str:
        cases = self.report.cases
        failed = sum(not case.passed for case in cases)
        compared = sum(case.compared and case.passed for case in cases)
        if self.report.error is not None:
            return "ERROR"
        return f"{compared} passed, {failed} failed, {len(cases) - compared - failed} not compared"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": str(self), "text/html": self._html()}

    def _html(self) -> str:
        from nbworker import display

        state = {0: "COMPLETED", 1: "FAILED", 3: "FAILED"}.get(self.exit_code, "CANCELLED")
        mark = display.MARKS[state]
        head = (
            f'<span style="color:{display.status_color(state)}">{mark}</span> '
            f"<b>replay against {html.escape(str(self.report.remote))}</b>: "
            f"{html.escape(self._headline())}"
        )
        header = "".join(
            f'<th style="{_CELL}">{name}</th>' for name in ("case", "handler", "server", "time")
        )
        rows = []
        for case in self.report.cases:
            color = display.status_color(
                "COMPLETED"
                if case.remote_result == Result.PASSED
                else "FAILED"
                if case.remote_result in (Result.FAILED, Result.ERROR)
                else "CANCELLED"
            )
            took = "" if case.remote_seconds is None else f"{case.remote_seconds:.2f} s"
            why = case.remote_detail if case.remote_result != Result.PASSED else ""
            cells = [
                html.escape(case.id),
                html.escape(case.handler),
                f'<span style="color:{color}">{html.escape(str(case.remote_result))}</span>',
                took,
            ]
            row = "".join(f'<td style="{_CELL}">{cell}</td>' for cell in cells)
            rows.append(f"<tr>{row}</tr>")
            if why:
                rows.append(
                    f'<tr><td colspan="4" style="{_CELL}">{display.value_html(why)}</td></tr>'
                )
        lines = []
        times = self.report.job_times()
        if times is not None:
            lines.append(times)
        lines += [f"note: {note}" for note in self.report.notes]
        if self.report.error is not None:
            lines.append(f"ERROR: {self.report.error}")
        footer = "".join(
            f'<div style="color:{display.DIM_COLOR}">{html.escape(line)}</div>' for line in lines
        )
        border = display.status_color(state)
        return (
            f'<div class="nbworker-replay" style="border-left:4px solid {border};'
            f"padding:4px 10px;margin:2px 0;color:{display.TEXT_COLOR};"
            "font-family:var(--jp-code-font-family, monospace);"
            'font-size:var(--jp-code-font-size, 13px);line-height:1.45">\n'
            f"<div>{head}</div>\n"
            f'<table style="border-collapse:collapse"><thead><tr>{header}</tr></thead>\n'
            f"<tbody>{''.join(rows)}</tbody></table>\n{footer}\n</div>"
        )


def _kernel_session() -> Any:
    """The session of the nbworker magics loaded in this IPython, else the default one."""
    from nbworker.session import default_session

    try:
        from IPython import get_ipython
    except ImportError:
        return default_session()
    shell = get_ipython()
    magics = None if shell is None else shell.magics_manager.registry.get("NbworkerMagics")
    found = getattr(magics, "session", None)
    return found if found is not None else default_session()


def replay_session(session: Any, options: Options) -> NotebookReport:
    """A session's runs as cases (None: this kernel's), replayed against the server of
    `options`."""
    from nbworker.envelope import LOCAL_JOB_ID
    from nbworker.export.cases import select_cases
    from nbworker.registry import default_choice
    from nbworker.testing.remote import Planned, run_planned

    # %rp_test's and the panel's runs; not the jobs a server of this kernel ran (their ids
    # are the server's), replays against %rp_serve among them
    session = session if session is not None else _kernel_session()
    runs = [run for run in session.history if run.job.get("id") == LOCAL_JOB_ID]
    report = NotebookReport(KERNEL_NAME, name=KERNEL_NAME)
    registered = {spec.name: spec for spec in session.registry}
    name = (
        options.handler
        or default_choice(registered)
        or default_choice(dict.fromkeys(run.handler for run in runs))
    )
    cases = [
        Case(KERNEL_NAME, number, f"run-{number}", 1, run.handler, run.status)
        for number, run in enumerate(runs, 1)
    ]
    for case in cases:
        case.notebook_result = case.worker_result = Result.NOT_REPLAYED
    chosen = [case for case in cases if selected(case, options.select)]
    report.cases, report.deselected = chosen, len(cases) - len(chosen)
    if name is None:
        report.remote = options.remote
        report.error = (
            "cannot tell whose runs to send: several handlers and none named `handler`; "
            "give handler="
        )
        return report
    if not runs:
        report.remote = options.remote
        report.notes.append("this kernel holds no run: run %rp_test first")
        return report
    spec = registered.get(name)
    streaming = spec.streams if spec is not None else any(r.stream is not None for r in runs)
    records = [run.to_record() for run in runs]
    kept = [
        (case, record)
        for case, record in zip(cases, records, strict=True)
        if record["handler"] == name and record["status"] in ("COMPLETED", "FAILED")
    ]
    recorded = dict(
        zip(
            (id(case) for case, _ in kept),
            select_cases([record for _, record in kept], handler=name),
            strict=True,
        )
    )
    planned = [Planned(case, recorded.get(id(case))) for case in chosen]
    report.notes += run_planned(planned, options, handler=name, streaming=streaming, report=report)
    report.seconds = report.remote_seconds
    return report
