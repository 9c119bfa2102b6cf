"""Which cells go into handler.py: the chosen handler's cell and, traced back through the
notebook, every cell that defines a name it needs, transitively."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from nbworker import arguments
from nbworker.errors import ExportError
from nbworker.export.cells import Cell
from nbworker.registry import DEFAULT_NAME, default_choice

__all__ = [
    "ExportError",
    "Selection",
    "choose_handler",
    "concurrency_modifier",
    "registered_name",
    "select_cells",
]


@dataclass
class Selection:
    """The handler to export and the cells it takes, each with why (in notebook order)."""

    name: str
    handler: Cell
    concurrency_modifier: str | None = None  # the name of the handler's modifier, if any
    taken: dict[int, str] = field(default_factory=dict)  # cell index -> reason
    left_out: dict[int, str] = field(default_factory=dict)


def concurrency_modifier(cell: Cell) -> str | None:
    """The concurrency modifier a %%handler cell declares, by the magic's own rule."""
    if cell.options is None:
        return None
    return arguments.modifier_name(cell.options, cell.binds)


def registered_name(cell: Cell) -> str | None:
    """The name a %%handler cell registers, by the magic's own rule (None if it can't tell);
    the cell's concurrency modifier is not a candidate."""
    named = str(cell.options.name) if cell.options is not None and cell.options.name else None
    return arguments.handler_function(named, cell.functions, cell.binds, concurrency_modifier(cell))


def choose_handler(cells: list[Cell], name: str | None) -> tuple[Cell, str]:
    """The %%handler cell to export: the one registering `name`; by default the one named
    `handler`, else the only one. The last such cell wins, as when the notebook runs."""
    handlers: dict[str, Cell] = {}
    for cell in cells:
        if cell.kind == "handler" and not cell.skipped and cell.error is None:
            registered = registered_name(cell)
            if registered is not None:
                handlers[registered] = cell
    broken = [c for c in cells if c.kind == "handler" and not c.skipped and c.error is not None]
    if not handlers and broken:
        raise ExportError(f"no %%handler cell can be read: {broken[0].error}", cell=broken[0].index)
    if not handlers:
        raise ExportError(
            "the notebook has no %%handler cell to export: write the handler in a cell that "
            "starts with %%handler"
        )
    if name is not None:
        if name not in handlers:
            raise ExportError(
                f"no %%handler cell registers {name!r}; the notebook's handlers: "
                f"{', '.join(sorted(handlers))}"
            )
        return handlers[name], name
    chosen = default_choice(handlers)
    if chosen is not None:
        return handlers[chosen], chosen
    raise ExportError(
        f"the notebook registers {len(handlers)} handlers ({', '.join(sorted(handlers))}) and "
        f"none is named {DEFAULT_NAME!r}: choose one with --handler NAME"
    )


def _check_exportable(cell: Cell) -> None:
    if cell.error is not None:
        raise ExportError(cell.error, cell=cell.index)
    if cell.problems:
        line, text = cell.problems[0]
        raise ExportError(
            f"{cell.label}, line {line}: `{text}` is IPython syntax a worker cannot run: "
            "write it as Python, move it to a cell the handler does not need, or tag that "
            "cell nbworker:skip",
            cell=cell.index,
            line=line,
        )
    if "nbworker" in cell.imports:
        raise ExportError(
            f"{cell.label} imports nbworker: the exported worker must not depend on it; move "
            "that import to a cell the handler does not need",
            cell=cell.index,
        )


def _definers(cells: list[Cell]) -> dict[str, list[Cell]]:
    """For each name, the cells that may provide it, in notebook order."""
    definers: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.kind in ("code", "handler", "model") and not cell.skipped and cell.error is None:
            for name in cell.binds:
                definers.setdefault(name, []).append(cell)
    return definers


def _provider(definers: dict[str, list[Cell]], name: str, before: int) -> Cell | None:
    """The cell that defines `name` for a cell at index `before`: the last one above it,
    else the first one below it (a function reads globals when called, not defined)."""
    candidates = definers.get(name, [])
    position = bisect.bisect_left([cell.index for cell in candidates], before)
    if position > 0:
        return candidates[position - 1]
    below = [cell for cell in candidates[position:] if cell.index > before]
    return below[0] if below else None


def select_cells(cells: list[Cell], *, handler: str | None = None) -> Selection:
    """Choose the handler and trace the cells it needs."""
    handler_cell, name = choose_handler(cells, handler)
    modifier = concurrency_modifier(handler_cell)
    concurrency = getattr(handler_cell.options, "concurrency", 1)
    conflict = modifier and arguments.sizing_conflict(concurrency, modifier)
    if conflict:
        raise ExportError(f"{handler_cell.label}: {conflict}", cell=handler_cell.index)
    selection = Selection(name=name, handler=handler_cell, concurrency_modifier=modifier)
    selection.taken[handler_cell.index] = f"the handler `{name}`"
    queue = [handler_cell]
    for cell in cells:
        if cell.skipped or cell.kind == "markdown":
            continue
        if cell.forced:
            selection.taken.setdefault(cell.index, "tagged nbworker:export")
            queue.append(cell)
        elif cell.prestart_hooks and cell.index not in selection.taken:
            # runpod 2.0 runs registered hooks before the first job: the worker needs them
            # though the handler never names them
            hooks = ", ".join(cell.prestart_hooks)
            selection.taken[cell.index] = f"registers the prestart hook {hooks}"
            queue.append(cell)
    unreadable = [cell for cell in cells if cell.error is not None]
    definers = _definers(cells)
    while queue:
        cell = queue.pop(0)
        _check_exportable(cell)
        for used in sorted(cell.uses):
            provider = _provider(definers, used, cell.index)
            if provider is None:
                hint = f" ({unreadable[0].error})" if unreadable else ""
                raise ExportError(
                    f"`{used}` is used by {cell.label} but no cell defines it{hint}",
                    cell=cell.index,
                )
            if provider.index not in selection.taken:
                selection.taken[provider.index] = f"defines {used}, used by cell {cell.index}"
                queue.append(provider)
    for cell in cells:
        if cell.index in selection.taken:
            continue
        reason: str
        if cell.kind in ("markdown", "raw"):
            reason = cell.kind
        elif cell.skipped:
            reason = "tagged nbworker:skip"
        elif cell.records or (cell.dropped and not cell.code.strip()):
            reason = "notebook tools only (%rp_test, display)"
        elif cell.kind == "handler":
            reason = "another handler, not needed by this one"
        else:
            reason = f"not needed by `{name}`"
        selection.left_out[cell.index] = reason
    selection.taken = dict(sorted(selection.taken.items()))
    return selection
