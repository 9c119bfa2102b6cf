"""Notebook -> RunPod worker directory.

`export_notebook("notebook.ipynb", "worker/")` writes the files a RunPod worker repository
holds: `handler.py` (plain Python, no nbworker), `requirements.txt` pinned from this
environment, `Dockerfile`, `test_input.json`, `.runpod/tests.json` and `.runpod/hub.json`
(RunPod Hub), tests that replay the runs recorded in the notebook, a `README.md`, a GitHub
workflow running those tests and a `.gitignore`; with `git=True` the folder becomes a git
repository with a first commit. Pure functions over nbformat notebooks: no kernel runs.

    read_cells -> select_cells -> render_handler, requirements, dockerfile, test files,
                  hub.json, README, workflow
               -> write_files (atomic; never over a hand-edited file without force) -> git
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbworker import arguments
from nbworker.export.cells import Cell, line_magic_arguments, read_cells
from nbworker.export.select import ExportError, Selection, select_cells
from nbworker.export.write import Written, write_files

__all__ = [
    "STEPS",
    "ExportError",
    "ExportReport",
    "build_worker",
    "default_directory",
    "export_notebook",
    "handler_streams",
    "records_with_options",
]


# What an export does, in order: `on_step` hears each as it begins (the command's progress).
STEPS = (
    "reading the notebook",
    "reading its cells",
    "scanning for secrets",
    "tracing the cells the handler needs",
    "pinning the requirements",
    "rendering the files",
    "scanning the files",
    "writing the worker",
)


def _no_step(step: str) -> None:
    """`on_step` when nobody listens."""


@dataclass
class ExportReport:
    """What an export did: the handler, each cell taken or left out and why, the files."""

    notebook: str
    handler: str
    directory: str | None
    cells: list[tuple[int, str, bool, str]]  # (index, label, taken, reason)
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)
    written: Written | None = None
    commit: str | None = None  # the first commit's id, when export made a git repository

    def __str__(self) -> str:
        lines = [f"export of {self.notebook}: handler `{self.handler}`"]
        for _, label, taken, reason in self.cells:
            lines.append(f"  {'+' if taken else '-'} {label}: {reason}")
        if self.written is not None:
            target = self.directory or "."
            changed = ", ".join(self.written.written) or "nothing"
            lines.append(f"wrote to {target}: {changed}")
            if self.written.unchanged:
                lines.append(f"unchanged: {', '.join(self.written.unchanged)}")
            if self.written.overwritten_edits:
                lines.append(
                    f"overwrote edits (--force): {', '.join(self.written.overwritten_edits)}"
                )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _read_notebook(notebook: Any) -> tuple[Any, str]:
    if isinstance(notebook, (str, os.PathLike)):
        path = Path(notebook)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ExportError(f"no such notebook: {path}") from None
        except IsADirectoryError:
            raise ExportError(f"{path} is a folder, not a notebook (.ipynb file)") from None
        except OSError as err:
            raise ExportError(f"cannot read {path}: {err.strerror or err}") from None
        return _parsed_notebook(data, path), path.name
    return notebook, str(notebook.get("metadata", {}).get("nbworker_name", "notebook.ipynb"))


def _parsed_notebook(data: bytes, path: Path) -> Any:
    """The nbformat v4 notebook in `data`, as plain JSON dicts; ExportError (one line) if it
    is none: not UTF-8, not JSON, not a notebook object, or not what nbformat's schema
    allows. nbformat is not imported for a v4 notebook (`ipynb`: its import costs ~1 s)."""
    from nbworker.export import ipynb
    from nbworker.export.secrets import redact

    try:
        notebook = ipynb.loads(data)
    except ValueError as err:
        why = redact(" ".join(str(err).split())[:300])
        raise ExportError(f"cannot read {path} as a notebook: {why}") from None
    problem = ipynb.schema_problem(notebook)
    if problem is not None:
        why = redact(problem if len(problem) <= 200 else problem[:200] + "...")
        raise ExportError(f"{path} is not a valid notebook (nbformat's schema): {why}")
    return notebook


def _checked_name(name: str) -> str:
    """The notebook's file name, fit for handler.py's header and the copy in tests/."""
    if not name.endswith(".ipynb") or name == ".ipynb":
        raise ExportError(f"the notebook's file name must end in .ipynb: {name!r}")
    unsafe = [c for c in name if c in '/\\"' or not c.isprintable()]
    if unsafe:
        raise ExportError(
            f"the notebook's file name {name!r} has characters the worker's files cannot "
            f"carry ({''.join(sorted(set(unsafe)))!r}); rename the notebook"
        )
    return name


def _check_secrets(cells: list[Cell], notebook: Any, copy: Any) -> None:
    """Refuse a credential in a cell's source, in a run record or in what else the copy of
    the notebook in tests/ keeps (ids, tags, kernelspec): all of it ships."""
    from nbworker.export import secrets, trimmed

    findings = secrets.find_secrets([(cell.index, cell.source) for cell in cells])
    findings += secrets.find_in_records(trimmed.records_text(notebook))
    findings += secrets.find_in_kept(trimmed.kept_fields(copy))
    _refuse(findings)


def _refuse(findings: list[Any]) -> None:
    from nbworker.export import secrets

    if findings:
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        cell = first.cell if first.cell >= 0 else None
        raise ExportError(secrets.describe(first) + more, cell=cell, line=first.line)


def _check_records(cells: list[Cell]) -> None:
    """Each run record is a JSON object: a hand-edited or hostile one is named, not a crash."""
    for cell in cells:
        for number, record in enumerate(cell.records):
            if not isinstance(record, dict):
                raise ExportError(
                    f"{cell.label}: run record {number + 1} is a JSON "
                    f"{type(record).__name__}, not a run record (an object); clear the cell's "
                    "output and run it again",
                    cell=cell.index,
                )


def build_worker(
    notebook: Any,
    *,
    handler: str | None = None,
    notebook_name: str | None = None,
    category: str | None = None,
    on_step: Callable[[str], None] = _no_step,
) -> ExportReport:
    """The worker's files as text (relative path -> text), and the report; nothing written.
    `category` is hub.json's (by default what the imports say). `on_step` hears each of
    `STEPS` but the last as it begins."""
    from nbworker.export import ci, docker, hub, readme, requirements, testfiles
    from nbworker.export.cases import example_job, hub_tests, select_cases

    if category is not None and category not in hub.CATEGORIES:
        raise ExportError(
            f"category must be one of {', '.join(hub.CATEGORIES)} (RunPod Hub's), not {category!r}"
        )
    on_step(STEPS[0])
    nb, name = _read_notebook(notebook)
    name = _checked_name(notebook_name or name)
    on_step(STEPS[1])
    cells = read_cells(nb)
    _check_records(cells)
    from nbworker.export import ipynb, secrets, trimmed

    on_step(STEPS[2])
    copy = trimmed.trimmed_notebook(nb)
    _check_secrets(cells, nb, copy)
    on_step(STEPS[3])
    selection: Selection = select_cells(cells, handler=handler)
    by_index = {cell.index: cell for cell in cells}
    taken = [by_index[index] for index in selection.taken]

    from nbworker.export.handler import render_handler

    notes: list[str] = []
    on_step(STEPS[4])
    modules = set().union(*(cell.imports for cell in taken))
    pip = [word for cell in taken for word in cell.pip]
    requirement_lines, requirement_notes = requirements.pinned_requirements(modules, pip)
    notes += requirement_notes
    cuda = docker.torch_cuda() if "torch" in modules else None
    base, reason = docker.base_image(cuda)
    notes.append(reason)
    gpu = hub.needs_gpu(modules)
    if gpu and any(re.match(r"torch==\S+\+cpu$", line) for line in requirement_lines):
        notes.append(
            "hub.json asks for a GPU (the handler's cells import a GPU framework) but "
            "requirements.txt pins torch's CPU build, which never uses it: export where torch "
            "is a CUDA build"
        )

    on_step(STEPS[5])
    records = [record for cell in cells for record in records_with_options(cell)]
    try:
        cases = select_cases(records, handler=selection.name)
    except (TypeError, ValueError) as err:  # a record no run of the handler could leave
        raise ExportError(f"a run record cannot be a test case: {_short(err)}") from None
    files = {
        "handler.py": render_handler(cells, selection, notebook=name),
        "requirements.txt": f"# RunPod worker exported by nbworker from {name}.\n"
        + "".join(f"{line}\n" for line in requirement_lines),
        "Dockerfile": docker.dockerfile(base=base, notebook=name, env=_sdk_settings(cases)),
    }
    if _sdk_settings(cases):
        notes.append(
            "the notebook's runs carry the handler's output in their errors (`logs`): the "
            "Dockerfile sets RUNPOD_LOG_CAPTURE=all so the worker does too (runpod 2)"
        )
    if cases:
        files["test_input.json"] = example_job(cases)
        files[".runpod/tests.json"] = hub_tests(
            cases,
            cuda_versions=docker.host_cuda_versions(base),
            cpu_flavor=None if gpu else hub.CPU_FLAVOR,
        )
    else:
        notes.append(
            f"no %rp_test run of `{selection.name}` is recorded in the notebook: no "
            "test_input.json and no test cases were written"
        )
    streaming = handler_streams(selection)
    files.update(
        testfiles.worker_tests(
            cases=cases, handler=selection.name, streaming=streaming, notebook_name=name
        )
    )
    document, hub_notes = hub.hub_document(
        notebook=nb,
        notebook_name=name,
        handler=selection.name,
        handler_source=files["handler.py"],
        modules=modules,
        cuda_versions=docker.host_cuda_versions(base),
        category=category,
    )
    notes += hub_notes
    problems = hub.hub_problems(document)
    if problems:  # nbworker's own mistake, never a file RunPod would refuse
        raise ExportError(f".runpod/hub.json would not be valid: {'; '.join(problems)}")
    files[".runpod/hub.json"] = hub.hub_json(document)
    files["README.md"] = readme.worker_readme(
        title=document["title"],
        description=hub.notebook_description(nb),
        notebook_name=name,
        handler=selection.name,
        streaming=streaming,
        cases=cases,
        env=document["config"]["env"],
        runs_on=document["config"]["runsOn"],
    )
    files[ci.WORKFLOW] = ci.workflow(
        python_version=ci.kernel_python(nb),
        test_input_completes=any(case["status"] == "COMPLETED" for case in cases),
    )
    files[".gitignore"] = ci.gitignore()
    on_step(STEPS[6])
    # a last check: nothing the notebook's records put into the files holds a credential
    # (the copy of the notebook holds only what _check_secrets read; nbworker's own test
    # files, the same in every worker, hold nothing of the notebook)
    _refuse(secrets.find_in_files({p: t for p, t in files.items() if p not in testfiles.FIXED}))
    text = ipynb.dumps(copy)
    files[f"tests/{name}"] = text if text.endswith("\n") else text + "\n"

    report_cells = []
    for cell in cells:
        taken_reason = selection.taken.get(cell.index)
        reason = taken_reason or selection.left_out.get(cell.index, "")
        report_cells.append((cell.index, cell.label, taken_reason is not None, reason))
    for cell in taken:
        if cell.pip:
            notes.append(
                f"{cell.label}: `pip install {' '.join(cell.pip)}` went to requirements.txt"
            )
        for line, text in cell.dropped:
            notes.append(f"{cell.label}, line {line}: `{text}` dropped (notebook only)")
    return ExportReport(name, selection.name, None, report_cells, files, notes)


def _short(err: Exception) -> str:
    from nbworker.export.secrets import redact

    text = " ".join(str(err).split())
    return redact(text if len(text) <= 300 else text[:300] + "...")


def _sdk_settings(cases: list[dict[str, Any]]) -> dict[str, str]:
    """The SDK settings the recorded runs show: a failure whose error JSON has `logs` was
    run under RUNPOD_LOG_CAPTURE=all (runpod 2), and the worker should capture them too."""
    for case in cases:
        error = case.get("error")
        if isinstance(error, str) and error.startswith("{") and '"logs"' in error:
            try:
                fields = json.loads(error)
            except ValueError:
                continue
            if isinstance(fields, dict) and "logs" in fields:
                return {"RUNPOD_LOG_CAPTURE": "all"}
    return {}


def records_with_options(cell: Cell) -> list[dict[str, Any]]:
    """The cell's records, each with its cell and the comparison options of the `%rp_test`
    line that made it (the n-th line made the n-th record; one line, in a loop, made all)."""
    if not cell.records:
        return []
    lines = line_magic_arguments(cell.source, "rp_test")
    if len(lines) == 1:
        lines = lines * len(cell.records)
    records = []
    for number, record in enumerate(cell.records):
        record = dict(record, cell=cell.index)
        if len(lines) == len(cell.records):
            options = arguments.rp_test_comparison(lines[number])
            record["ignore"] = options.ignore
            record["compare"] = options.compare
        records.append(record)
    return records


def handler_streams(selection: Selection) -> bool:
    import ast

    tree = ast.parse(selection.handler.code)
    for node in tree.body:
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == selection.name
        ):
            return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(node))
    return False


def _own_nodes(function: Any) -> list[Any]:
    """The nodes of a function's body, not those of functions defined inside it."""
    import ast

    nodes, pending = [], list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        nodes.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def default_directory(notebook: str | os.PathLike[str]) -> Path:
    """Where a notebook's worker goes when no directory is given: `<stem>-worker` beside it."""
    path = Path(notebook)
    return path.with_name(f"{path.stem}-worker")


def export_notebook(
    notebook: Any,
    directory: str | os.PathLike[str] | None = None,
    *,
    handler: str | None = None,
    force: bool = False,
    category: str | None = None,
    git: bool = False,
    on_step: Callable[[str], None] = _no_step,
) -> ExportReport:
    """Export `notebook` (a path or an nbformat notebook) to the worker `directory`
    (by default `<stem>-worker` beside a notebook given by path). `category` is hub.json's
    (by default what the imports say). With `git`, the folder becomes a git repository with
    a first commit, unless it is one or lies inside one (`report.commit`, and a note).
    `on_step` hears each of `STEPS` as it begins."""
    if directory is None and not isinstance(notebook, (str, os.PathLike)):
        raise ExportError("give the worker directory: the notebook was not read from a path")
    # a folder: refused here
    report = build_worker(notebook, handler=handler, category=category, on_step=on_step)
    directory = default_directory(notebook) if directory is None else directory
    on_step(STEPS[7])
    report.directory = str(directory)
    report.written = write_files(Path(directory), report.files, force=force)
    if git:
        from nbworker.export.git import make_repository

        report.commit, git_notes = make_repository(
            Path(directory), notebook=report.notebook, changed=report.written.written
        )
        report.notes += git_notes
    return report
