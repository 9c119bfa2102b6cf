from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kernel_client import Kernel

sys.path.insert(0, str(Path(__file__).parent))  # helper modules beside the tests
# Example notebooks and the golden worker folders: their tests run in exported workers.
collect_ignore_glob = ["data/*"]

# Kernels started by the tests run this interpreter: the python3 kernelspec that ipykernel
# installs in this environment comes before any user-wide one.
_kernels = Path(sys.prefix, "share", "jupyter")
if _kernels.is_dir():
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(_kernels), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )


@pytest.fixture(scope="session")
def ipython():
    """The process's one InteractiveShell, with history kept in memory."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    return InteractiveShell.instance(config=config)


@pytest.fixture
def shell(ipython):
    """nbworker's magics on the shell, bound to a session of this test's own."""
    from shell import Shell

    from nbworker.magics import uninstall

    shell = Shell(ipython)
    yield shell
    uninstall(ipython)
    shell.session.close()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One real kernel (nbworker loaded) shared by the tests of a module that neither stop
    a run nor reset it: each uses names of its own."""
    from kernel_client import Kernel

    shared = Kernel(tmp_path_factory.mktemp("kernel"))
    try:
        yield shared
    finally:
        shared.shutdown()


@pytest.fixture
def fresh_kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A real kernel (nbworker loaded) of the test's own, in its tmp_path."""
    from kernel_client import Kernel

    own = Kernel(tmp_path)
    try:
        yield own
    finally:
        own.shutdown()


# Module-scoped fixtures too dear to set up once per pytest-xdist worker (a venv installed
# from PyPI, every corpus worker run under the SDK, SDK servers): under `--dist loadgroup`
# (scripts/test.sh) the tests of a module that use any of them stay on one worker; every
# other test goes to whichever worker is free. (test module, fixture)
SHARED_SETUP = {
    ("test_binder.py", "binder_venv"),
    ("test_client.py", "sdk_server"),
    ("test_client.py", "sdk_stream_server"),
    ("test_conformance.py", "sdk_results"),
    ("test_corpus.py", "sdk"),
    ("test_corpus.py", "nbworker_runs"),
    ("test_corpus.py", "served"),
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.name
        if any((module, name) in SHARED_SETUP for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(module))


def pytest_report_header(config: pytest.Config) -> str:
    """The SDK line this run judges by (scripts/test.sh: 1.12, scripts/test_sdk2.sh: 2.0)."""
    from importlib import metadata

    try:
        return f"runpod {metadata.version('runpod')} ({sys.prefix})"
    except metadata.PackageNotFoundError:
        return "runpod not installed"
