"""requirements.txt pins the runpod the kernel has, and says so when that is a pre-release.

Runs under both SDK lines (scripts/test.sh: 1.12.0, scripts/test_sdk2.sh: 2.0.0rc2): what is
expected follows the installed SDK. The other pins are tested in test_export_parts.py.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

from nbworker.export import build_worker
from nbworker.export.requirements import pinned_requirements

DATA = Path(__file__).parent / "data"
RUNPOD = metadata.version("runpod")


def prerelease_note(pin: str, why: str) -> str:
    return (
        f"{pin} ({why}) is a pre-release: requirements.txt pins it as installed here, so the "
        "worker runs on it too; pin a release by hand if it should not"
    )


def test_runpod_is_pinned_as_installed_with_a_note_only_for_a_pre_release() -> None:
    lines, notes = pinned_requirements([])
    assert lines == [f"runpod=={RUNPOD}"]
    expected = [prerelease_note(f"runpod=={RUNPOD}", "the worker runs on runpod")]
    assert notes == (expected if Version(RUNPOD).is_prerelease else [])


def test_the_export_report_says_the_worker_runs_on_a_pre_release() -> None:
    report = build_worker(DATA / "streaming.ipynb")
    assert f"runpod=={RUNPOD}" in report.files["requirements.txt"].splitlines()
    note = prerelease_note(f"runpod=={RUNPOD}", "the worker runs on runpod")
    assert (note in report.notes) == Version(RUNPOD).is_prerelease
    assert (f"note: {note}" in str(report).splitlines()) == Version(RUNPOD).is_prerelease


def install_distribution(folder: Path, name: str, version: str) -> None:
    """A distribution's metadata on disk, found by importlib.metadata like any installed one."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.mark.parametrize(
    ("version", "prerelease"),
    [("1.0rc1", True), ("2.0.0.dev3", True), ("1.0a2", True), ("1.0", False), ("1.0.post1", False)],
)
def test_any_pinned_pre_release_gets_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, prerelease: bool
) -> None:
    install_distribution(tmp_path, "nbworker-probe", version)
    monkeypatch.syspath_prepend(str(tmp_path))
    lines, notes = pinned_requirements([], ["nbworker-probe"])
    assert f"nbworker-probe=={version}" in lines
    ours = [note for note in notes if note.startswith("nbworker-probe")]
    assert ours == (
        [prerelease_note(f"nbworker-probe=={version}", "pip-installed")] if prerelease else []
    )
