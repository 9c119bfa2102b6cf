"""The `nbworker` command as a user meets it: help that says `%rp_test`, every error one
`nbworker COMMAND: error: ...` line with its exit code, and progress on stderr (a tqdm bar on
a terminal, a line per notebook elsewhere, nothing with --no-progress; tqdm imported only
when a bar shows) with kernels that start without ipykernel's unencrypted-TCP warning.
Real subprocesses of the command; a pseudo-terminal where being on a terminal matters."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from nbworker import cli
from nbworker.testing import NotebookReport, Progress, Step

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TCP_WARNING = "susceptible to eavesdropping"  # ipykernel's, for a TCP kernel without keys


def command(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`nbworker ARGS` as a process, its output piped (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "nbworker.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def on_a_terminal(
    *args: str, cwd: Path, timeout: float = 280, interrupt_at: str | None = None
) -> tuple[int, str, str]:
    """`nbworker ARGS` with stderr on a pseudo-terminal 120 columns wide: (exit code,
    stdout, what the terminal received). `interrupt_at`: once the terminal shows this text,
    Ctrl-C (SIGINT to the command's process group, as a terminal sends it)."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = cwd / "stdout.txt"
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "nbworker.cli", *args],
            cwd=cwd,
            stdout=stdout,
            stderr=terminal,
            start_new_session=True,  # its own process group, kernels and pool included
        )
    os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            received += chunk
            if interrupt_at is not None and interrupt_at.encode() in received:
                os.killpg(process.pid, signal.SIGINT)
                interrupt_at = None
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, out.read_text(), received.decode(errors="replace")


def notebooks(tmp_path: Path, *names: str) -> list[str]:
    for name in names:
        shutil.copy(DATA / name, tmp_path / name)
    return list(names)


# ------------------------------------------------------------------------ help


def test_help_says_rp_test_with_one_percent(tmp_path: Path) -> None:
    """argparse formats `%` only in an option's help, not in a description: the description
    must be written with one."""
    done = command("test", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "Every %rp_test run recorded in a notebook is a test case" in text
    assert "%%" not in text
    assert "--no-progress" in text


@pytest.mark.slow
def test_the_pytest_plugin_help_says_rp_test_with_one_percent(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "each %rp_test run they recorded is a test" in text
    assert "%%rp_test" not in text


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ["test"],
            2,
            "nbworker test: error: the following arguments are required: NOTEBOOK.ipynb|DIR "
            "(see nbworker test --help)",
        ),
        (
            ["test", "."],
            2,
            "nbworker test: error: . is a folder with no notebook (*.ipynb) in it or under it",
        ),
        (
            ["test", "nb.ipynb", "-j", "many"],
            2,
            "nbworker test: error: argument -j/--jobs: invalid int value: 'many' (see nbworker test --help)",
        ),
        (
            ["test", "missing.ipynb"],
            2,
            "nbworker test: error: no such notebook or folder: missing.ipynb",
        ),
        (
            ["export"],
            2,
            "nbworker export: error: the following arguments are required: NOTEBOOK.ipynb "
            "(see nbworker export --help)",
        ),
        (["export", "."], 1, "nbworker export: error: . is a folder, not a notebook (.ipynb file)"),
        (["export", "missing.ipynb"], 1, "nbworker export: error: no such notebook: missing.ipynb"),
        (
            ["deploy"],
            2,
            "nbworker deploy: error: the following arguments are required: "
            "NOTEBOOK.ipynb|WORKER_DIR, --image (see nbworker deploy --help)",
        ),
        (
            ["ship"],
            2,
            "nbworker: error: argument COMMAND: invalid choice: 'ship' "
            "(choose from export, test, deploy) (see nbworker --help)",
        ),
    ],
)
def test_every_error_is_one_line_with_its_exit_code(
    tmp_path: Path, args: list[str], code: int, line: str
) -> None:
    done = command(*args, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (code, ""), done.stderr
    # argparse quotes the choices on some Pythons ('export', 'test'), not on others
    unquoted = done.stderr.replace("'export', 'test', 'deploy'", "export, test, deploy")
    assert unquoted == line + "\n"


def test_a_folder_whose_notebooks_are_all_left_out_says_so(tmp_path: Path) -> None:
    (tmp_path / "nbs" / ".ipynb_checkpoints").mkdir(parents=True)
    shutil.copy(DATA / "streaming.ipynb", tmp_path / "nbs" / ".ipynb_checkpoints")
    done = command("test", "nbs", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "nbworker test: error: nbs is a folder with no notebook to test: its 1 *.ipynb file(s) "
        "are hidden (a dot-name, .ipynb_checkpoints) or in exported workers; name one to test it\n"
    )


def test_show_runs_with_no_argument_prints_its_usage_and_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "show_runs.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: python scripts/show_runs.py NOTEBOOK.ipynb")


@pytest.mark.slow  # nbformat's import, a second per process
def test_show_runs_says_in_one_line_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "notes.ipynb").write_text("not JSON")
    script = str(ROOT / "scripts" / "show_runs.py")
    for path, line in [
        ("missing.ipynb", "show_runs: error: missing.ipynb: No such file or directory"),
        ("notes.ipynb", "show_runs: error: notes.ipynb is not a notebook: "),
    ]:
        done = subprocess.run(
            [sys.executable, script, path], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(line) and done.stderr.count("\n") == 1, done.stderr
    done = subprocess.run(
        [sys.executable, script, str(ROOT / "notebooks" / "quickstart.ipynb")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith("quickstart.ipynb: 7 recorded runs")


# ------------------------------------------------------------------------ export progress


def test_export_off_a_terminal_prints_no_progress_and_imports_no_tqdm(tmp_path: Path) -> None:
    shutil.copy(DATA / "sentiment.ipynb", tmp_path)
    code = (
        "import sys\nfrom nbworker import cli\n"
        "code = cli.main(['export', 'sentiment.ipynb', '-o', 'w'])\n"
        "print(code, 'tqdm' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[-1] == "0 False"
    assert (tmp_path / "w" / "handler.py").is_file()


@pytest.mark.parametrize("quiet", [False, True])
def test_export_on_a_terminal_shows_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    """The bar shows from the first step after EXPORT_BAR_DELAY (0 here: the notebook is
    small) and ends at its last step; --no-progress shows none."""
    shutil.copy(DATA / "sentiment.ipynb", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "EXPORT_BAR_DELAY", 0.0)
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with open(terminal, "w", encoding="utf-8", closefd=True) as stderr:
        monkeypatch.setattr(sys, "stderr", stderr)
        argv = ["export", "sentiment.ipynb", "-o", "w", *(["--no-progress"] if quiet else [])]
        code = cli.main(argv)
        stderr.flush()
    received = b""
    while select.select([master], [], [], 0)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    assert code == 0
    shown = received.decode()
    if quiet:
        assert shown == ""
        return
    assert "nbworker export" in shown
    last = shown.rstrip().split("\r")[-1]
    assert "8/8" in last and "writing the worker" in last, last


# ------------------------------------------------------------------------ test progress


def test_the_bar_counts_cells_cases_and_notebooks(capsys: pytest.CaptureFixture[str]) -> None:
    """Steps of two notebooks (as from two pool processes), then their reports: the bar's
    total grows as notebooks report theirs, and a late step of an ended notebook is ignored."""
    progress = Progress(2, bar=True)
    progress.step(Step("a.ipynb", "notebook", 0, 10, 0, 3))
    progress.step(Step("b.ipynb", "notebook", 4, 6, 1, 2, failed=1))
    progress.step(Step("a.ipynb", "worker", 10, 10, 3, 3))
    assert progress.bar.total == 16 and progress.bar.n == 14
    assert "worker: a.ipynb" in str(progress.bar)
    progress.done(NotebookReport("a.ipynb", [], name="a.ipynb"))
    progress.step(Step("a.ipynb", "worker", 10, 10, 3, 3))  # late: ignored
    progress.done(NotebookReport("b.ipynb", [], name="b.ipynb"))
    assert progress.bar.n == progress.bar.total == 16
    progress.close()
    last = capsys.readouterr().err.rstrip().split("\r")[-1]
    assert "16/16" in last and "2/2 notebooks" in last, last


@pytest.mark.slow  # real kernels, the worker's tests
def test_nbworker_test_on_a_terminal_shows_a_bar_and_no_tcp_warning(tmp_path: Path) -> None:
    """Two notebooks in two processes (their steps relayed to the bar), the worker replay
    too; the kernels write to the same terminal, and none warns of unencrypted TCP."""
    names = notebooks(tmp_path, "sentiment.ipynb", "streaming.ipynb")
    code, stdout, shown = on_a_terminal("test", *names, "-j", "2", cwd=tmp_path)
    assert code == 0, stdout + shown
    assert TCP_WARNING not in shown
    assert "cases replayed" in shown and "worker: " in shown, shown
    last = shown.rstrip().split("\r")[-1]
    assert "2/2 notebooks" in last and "5/5 cases replayed" in last, last
    assert "5 passed, 0 failed" in stdout


@pytest.mark.slow  # a real kernel
@pytest.mark.parametrize("quiet", [False, True])
def test_nbworker_test_off_a_terminal_prints_a_line_per_notebook(
    tmp_path: Path, quiet: bool
) -> None:
    names = notebooks(tmp_path, "streaming.ipynb")
    done = command(
        "test",
        *names,
        "--notebook-only",
        *(["--no-progress"] if quiet else []),
        cwd=tmp_path,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert TCP_WARNING not in done.stderr
    if quiet:
        assert done.stderr == ""
    else:
        assert done.stderr.splitlines()[-1].startswith("streaming.ipynb: 2/2 cases passed (")


@pytest.mark.slow  # a real kernel
def test_ctrl_c_ends_nbworker_test_in_one_line_with_130(tmp_path: Path) -> None:
    """Interrupted mid-replay (the kernel gets the SIGINT too): the kernel is shut down and
    the command says so in one line, no traceback."""
    names = notebooks(tmp_path, "sentiment.ipynb")
    code, stdout, shown = on_a_terminal("test", *names, cwd=tmp_path, interrupt_at="cases replayed")
    assert code == cli.EXIT_INTERRUPTED, stdout + shown
    assert shown.rstrip().splitlines()[-1] == "nbworker test: interrupted", shown
    assert "Traceback" not in shown and stdout == ""


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """`nbworker export ... | head -1`: the pipe closes under a long report; the command
    ends quietly (141, as a shell reports SIGPIPE), no BrokenPipeError traceback."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(f"note {n}") for n in range(3000)]
    notebook.cells.append(nbformat.v4.new_code_cell("%%handler\ndef handler(job):\n    return 1"))
    nbformat.write(notebook, tmp_path / "long.ipynb")  # the report: a line per cell, > 64 KiB
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    reader = subprocess.Popen(
        [sys.executable, "-m", "nbworker.cli", "export", "long.ipynb", "--no-git"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline().startswith(b"export of long.ipynb")
    reader.stdout.close()  # as `head -1` does once it has its line
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == cli.EXIT_BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
