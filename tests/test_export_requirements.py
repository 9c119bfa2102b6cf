"""requirements.txt pins the runpod the kernel has, and says so when that is a pre-release;
a build of PyTorch's (torch 2.13.0+cpu, +cu128) is pinned with its label and its index.

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


def pytorch_note(pin: str, label: str) -> str:
    where = (
        "the worker computes on the CPU, as the notebook did (export where torch is a CUDA "
        "build for a GPU worker)"
        if label == "cpu"
        else "the worker gets the build the notebook ran on"
    )
    return (
        f"{pin} is PyTorch's {label} build: requirements.txt pins it with its label, from "
        f"PyTorch's index (--extra-index-url https://download.pytorch.org/whl/{label}), so {where}"
    )


@pytest.mark.parametrize("label", ["cpu", "cu128", "cu118", "rocm6.4", "xpu"])
def test_a_pytorch_build_is_pinned_with_its_label_from_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str
) -> None:
    install_distribution(tmp_path, "torchaudio", f"2.13.0+{label}")
    monkeypatch.syspath_prepend(str(tmp_path))
    lines, notes = pinned_requirements([], ["torchaudio"])
    assert lines == [
        f"--extra-index-url https://download.pytorch.org/whl/{label}",
        f"runpod=={RUNPOD}",
        f"torchaudio==2.13.0+{label}",
    ]
    assert pytorch_note(f"torchaudio==2.13.0+{label}", label) in notes


def test_builds_from_one_index_name_it_once_and_indexes_come_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_distribution(tmp_path, "torch", "2.13.0+cu128")
    install_distribution(tmp_path, "torchvision", "0.28.0+cu128")
    install_distribution(tmp_path, "torchaudio", "2.13.0+cpu")
    monkeypatch.syspath_prepend(str(tmp_path))
    lines, _ = pinned_requirements([], ["torchvision", "torchaudio", "torch"])
    assert lines == [
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        "--extra-index-url https://download.pytorch.org/whl/cu128",
        f"runpod=={RUNPOD}",
        "torch==2.13.0+cu128",
        "torchaudio==2.13.0+cpu",
        "torchvision==0.28.0+cu128",
    ]


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("nbworker-probe", "1.0+cpu"),
        ("nbworker-probe", "1.0+ubuntu1"),
        ("torchaudio", "2.0+local7"),
    ],
)
def test_any_other_local_label_is_dropped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, version: str
) -> None:
    """Only PyTorch's own distributions and build labels name PyTorch's index."""
    install_distribution(tmp_path, name, version)
    monkeypatch.syspath_prepend(str(tmp_path))
    lines, notes = pinned_requirements([], [name])
    public, label = version.split("+")
    assert lines == sorted([f"{name}=={public}", f"runpod=={RUNPOD}"])
    # (under runpod 2.0rc2 a note says the SDK pinned is a pre-release: not this test's)
    notes = [note for note in notes if not note.startswith(f"runpod=={RUNPOD} ")]
    assert notes == [
        f"{name}: the local build label +{label} of the installed {version} was dropped: "
        f"{name}=={public} installs the default build from the index"
    ]


def test_the_installed_torch_is_pinned_as_the_build_it_is() -> None:
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        pytest.skip("torch is not installed")
    label = Version(version).local
    lines, notes = pinned_requirements(["torch"])
    assert f"torch=={version}" in lines
    if label is None:  # PyPI's build: nothing more to say
        assert lines == [f"runpod=={RUNPOD}", f"torch=={version}"]
    else:
        assert lines[0] == f"--extra-index-url https://download.pytorch.org/whl/{label}"
        assert pytorch_note(f"torch=={version}", label) in notes
