"""nbworker: write, test and ship RunPod serverless workers from a Jupyter notebook.

In a notebook: `%load_ext nbworker`, then `%%model`, `%%handler`, `%rp_test` and
`%rp_models`. From Python: `register_handler(fn)`, `run_job({"input": ...})` and
`cache.load(name, loader)`. Importing nbworker is light: IPython,
papermill and runpod are imported only where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbworker.errors import HandlerError, HandlerNotFound, JobError, NbworkerError

if TYPE_CHECKING:
    from nbworker import cache
    from nbworker.cache import ModelCache
    from nbworker.record import Run
    from nbworker.registry import HandlerSpec
    from nbworker.session import Session, default_session, register_handler, run_job
    from nbworker.widgets import panel

__version__ = "0.1.0"

__all__ = [
    "ExportError",
    "ExportReport",
    "HandlerError",
    "HandlerNotFound",
    "HandlerSpec",
    "JobError",
    "ModelCache",
    "NbworkerError",
    "Run",
    "Session",
    "__version__",
    "cache",
    "default_session",
    "export_notebook",
    "load_ipython_extension",
    "panel",
    "register_handler",
    "run_job",
    "unload_ipython_extension",
]

_LAZY = {
    "ModelCache": "nbworker.cache",
    "Run": "nbworker.jobs",
    "HandlerSpec": "nbworker.registry",
    "ExportError": "nbworker.export",
    "ExportReport": "nbworker.export",
    "export_notebook": "nbworker.export",
    "Session": "nbworker.session",
    "default_session": "nbworker.session",
    "register_handler": "nbworker.session",
    "run_job": "nbworker.session",
    "panel": "nbworker.widgets",
}


def __getattr__(name: str) -> Any:
    if name == "cache":  # the module: nbworker.cache.load(...), get, evict, clear, info
        import importlib

        return importlib.import_module("nbworker.cache")
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbworker' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nbworker`: the magics, bound to the default session."""
    from nbworker.magics import install
    from nbworker.session import default_session

    install(ipython, default_session())


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext nbworker`: remove the magics; the session and its handlers stay."""
    from nbworker.magics import uninstall

    uninstall(ipython)
