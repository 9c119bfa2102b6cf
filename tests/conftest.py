import os
import sys
from pathlib import Path

import pytest

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


def pytest_report_header(config: pytest.Config) -> str:
    """The SDK line this run judges by (scripts/test.sh: 1.12, scripts/test_sdk2.sh: 2.0)."""
    from importlib import metadata

    try:
        return f"runpod {metadata.version('runpod')} ({sys.prefix})"
    except metadata.PackageNotFoundError:
        return "runpod not installed"
