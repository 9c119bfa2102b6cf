"""Making an exported worker folder a git repository with a first commit (`--git`).

Only local git commands (init, add, commit, config, rev-parse): nothing is pushed, pushing
to GitHub is the user's step. git runs with the caller's GIT_* variables taken out of its
environment (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE of an enclosing hook or shell would
point it at another repository), without a terminal to prompt on, and without hooks.
It never fails the export: whatever git cannot do becomes a note.

- a folder with its own `.git`: left alone, no commit (the user commits the new export);
- a folder inside another repository's work tree: not made a repository of its own;
- git not installed: a note.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BRANCH", "FALLBACK_EMAIL", "FALLBACK_NAME", "commit_message", "make_repository"]

BRANCH = "main"
FALLBACK_NAME = "nbworker"
FALLBACK_EMAIL = "nbworker@localhost"
_TIMEOUT = 120  # seconds for one git command (add of a big folder, a slow disk)


def commit_message(notebook: str) -> str:
    return f"Worker exported by nbworker from {' '.join(notebook.split())}"


def _environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


class _Git:
    def __init__(self, executable: str, folder: Path) -> None:
        self.executable = executable
        self.folder = folder
        self.env = _environment()

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, "-c", f"core.hooksPath={os.devnull}", *args],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )


def _why(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def make_repository(
    folder: Path, *, notebook: str, changed: Sequence[str] = ()
) -> tuple[str | None, list[str]]:
    """(the first commit's id, or None; notes) for the worker `folder`, just exported
    (`changed`: the files this export wrote)."""
    folder = Path(folder)
    executable = shutil.which("git")
    if executable is None:
        return None, [
            "git is not installed: the worker folder was not made a git repository (install "
            "git, then `git init -b main && git add -A && git commit` there)"
        ]
    if os.path.lexists(folder / ".git"):
        todo = (
            f"`git add -A && git commit` there commits what changed ({', '.join(changed)})"
            if changed
            else "no file changed"
        )
        return None, [
            f"{folder} is a git repository already: export left git alone (no commit); {todo}"
        ]
    git = _Git(executable, folder)
    try:
        return _make(git, notebook)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, [f"git did not finish ({type(err).__name__}): {folder} may be half set up"]


def _make(git: _Git, notebook: str) -> tuple[str | None, list[str]]:
    inside = git("rev-parse", "--show-toplevel")
    if inside.returncode == 0 and inside.stdout.strip():
        return None, [
            f"{git.folder} is inside the git work tree {inside.stdout.strip()}: not made a "
            "repository of its own (no commit); commit the worker there"
        ]
    init = git("init", "--quiet", "-b", BRANCH)
    if init.returncode != 0:  # git before 2.28 has no -b
        init = git("init", "--quiet")
        if init.returncode == 0:
            init = git("symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
    if init.returncode != 0:
        return None, [f"git init failed in {git.folder}: {_why(init)}"]
    added = git("add", "-A")
    if added.returncode != 0:
        return None, [f"git add failed in {git.folder}: {_why(added)}"]
    notes = []
    identity: list[str] = []
    name = git("config", "user.name").stdout.strip()
    email = git("config", "user.email").stdout.strip()
    if not (name and email):
        identity = ["-c", f"user.name={FALLBACK_NAME}", "-c", f"user.email={FALLBACK_EMAIL}"]
        notes.append(
            f"no git identity is configured (user.name, user.email): the first commit is "
            f"by {FALLBACK_NAME} <{FALLBACK_EMAIL}>; after `git config --global user.name ...` "
            "and `user.email ...`, `git commit --amend --reset-author` makes it yours"
        )
    commit = git(*identity, "commit", "--quiet", "--no-verify", "-m", commit_message(notebook))
    if commit.returncode != 0:
        return None, [
            *notes,
            f"git commit failed in {git.folder}: {_why(commit)} (the files are staged: "
            "commit them yourself)",
        ]
    head = git("rev-parse", "HEAD").stdout.strip()
    notes.append(
        f"made {git.folder} a git repository (branch {BRANCH}) with a first commit "
        f"{head[:12]}; put it on GitHub: `git remote add origin URL && git push -u origin "
        f"{BRANCH}` (see README.md)"
    )
    return head or None, notes
