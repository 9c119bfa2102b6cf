"""handler.py: the taken cells in notebook order, then the SDK's start under a main guard."""

from __future__ import annotations

from nbworker.export.cells import Cell
from nbworker.export.select import ExportError, Selection

__all__ = ["render_handler"]


def _section(cell: Cell) -> str:
    if cell.kind == "model":
        title = (
            f"cell {cell.index}: %%model {getattr(cell.options, 'name', '')} "
            "(runs once, when the worker starts)"
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
    taken = [by_index[index] for index in selection.taken if by_index[index].code.strip()]
    sections = [_section(cell) for cell in taken]
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
        cell = _cell_at(text, sections, taken, err.lineno or 0)
        where = f" ({cell.label}, exported there)" if cell is not None else ""
        raise ExportError(
            f"the exported handler.py does not compile: line {err.lineno}{where}: {err.msg}",
            cell=None if cell is None else cell.index,
        ) from None
    return text


def _cell_at(text: str, sections: list[str], cells: list[Cell], line: int) -> Cell | None:
    """The cell whose section of handler.py holds `line` (1-based), if any."""
    start = text.count("\n", 0, text.index(sections[0])) + 1 if sections else 0
    for section, cell in zip(sections, cells, strict=True):
        end = start + section.count("\n")
        if start <= line < end:
            return cell
        start = end + 2  # the blank line between sections
    return None
