"""handler.py: the taken cells in notebook order, then the SDK's start under a main guard."""

from __future__ import annotations

from nbworker.export.cells import Cell
from nbworker.export.select import ExportError, Selection

__all__ = ["render_handler"]


def _section(cell: Cell) -> str:
    if cell.kind == "model":
        title = (
            f"cell {cell.index}: %%model {cell.options.name} (runs once, when the worker starts)"
        )
    elif cell.kind == "handler":
        title = f"cell {cell.index}: {(cell.source.splitlines() or [''])[0].strip()}"
    else:
        title = f"cell {cell.index}"
    return f"# --- {title}\n{cell.code.strip()}\n"


def _start_config(selection: Selection) -> str:
    options = selection.handler.options
    items = [f'"handler": {selection.name}']
    if options is not None and options.aggregate:
        items.append('"return_aggregate_stream": True')
    if selection.concurrency_modifier is not None:  # the author's own, as it is
        items.append(f'"concurrency_modifier": {selection.concurrency_modifier}')
    elif options is not None and options.concurrency != 1:
        items.append(f'"concurrency_modifier": lambda current: {options.concurrency}')
    return "{" + ", ".join(items) + "}"


def render_handler(cells: list[Cell], selection: Selection, *, notebook: str) -> str:
    """The text of handler.py; ExportError if it would not compile."""
    by_index = {cell.index: cell for cell in cells}
    sections = [
        _section(by_index[index]) for index in selection.taken if by_index[index].code.strip()
    ]
    text = (
        f'"""RunPod worker: the `{selection.name}` handler, exported by nbworker from {notebook}.\n'
        "\n"
        "Models load once, at start-up, before the worker takes jobs. Change the notebook and\n"
        "export again rather than editing this file.\n"
        '"""\n'
        "\n" + "\n\n".join(sections) + "\n\n"
        'if __name__ == "__main__":\n'
        "    import runpod\n"
        "\n"
        f"    runpod.serverless.start({_start_config(selection)})\n"
    )
    try:
        compile(text, "handler.py", "exec")
    except SyntaxError as err:
        raise ExportError(
            f"the exported handler.py does not compile: line {err.lineno}: {err.msg}"
        ) from None
    return text
