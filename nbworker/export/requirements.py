"""requirements.txt for an exported worker, pinned to what this environment has installed.

The handler ran in the notebook against these very versions, so the image gets them too:
each imported module is mapped to the distribution that provides it, and each
`%pip install` argument to what it installed. What cannot be pinned (a URL, something not
installed here) is kept or left out with a note saying so, and a pinned pre-release (runpod
2.0.0rc2, say) gets a note too: the worker then runs on a version pip would not pick itself.

PyPI serves no version with a local build label (`+ubuntu1`), so the label is dropped, with
a note; except PyTorch's: torch 2.13.0+cpu or +cu128 is a build PyTorch serves from an index
of its own, and the build decides where the worker computes (a CPU build never uses the GPU;
PyPI's torch 2.13.0 is another build, with a CUDA of its own). So it is pinned with its label
and requirements.txt names that index (`--extra-index-url`): the worker gets the build the
notebook ran on.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = ["pinned_requirements"]

# PyTorch's index of each build (https://pytorch.org/get-started/locally/): its wheels carry
# the build as their local label (2.13.0+cpu, 2.13.0+cu128, 2.13.0+rocm6.4, 2.13.0+xpu).
_PYTORCH_INDEX = "https://download.pytorch.org/whl/{label}"
_PYTORCH_BUILDS = frozenset({"torch", "torchvision", "torchaudio"})
_PYTORCH_LABEL = re.compile(r"cpu|cu\d+|rocm\d+(?:\.\d+)*|xpu")

_FILE = "add what that file lists to requirements.txt by hand"
_INDEX = "add it to requirements.txt by hand if packages come from there"
# pip options whose value is the next word (no requirement either) -> the note dropping
# them gets ("" for none; `-e`'s value is kept as a requirement).
_OPTIONS_WITH_VALUE = {
    "-r": _FILE,
    "--requirement": _FILE,
    "-c": _FILE,
    "--constraint": _FILE,
    "-i": _INDEX,
    "--index-url": _INDEX,
    "--extra-index-url": _INDEX,
    "-f": _INDEX,
    "--find-links": _INDEX,
    "-e": "",
    "--editable": "",
    "-t": "",
    "--target": "",
    "--prefix": "",
    "--root": "",
    "--src": "",
    "--upgrade-strategy": "",
    "--platform": "",
    "--python-version": "",
    "--trusted-host": "",
    "--proxy": "",
    "--cache-dir": "",
    "--no-binary": "",
    "--only-binary": "",
    "-C": "",
    "--config-settings": "",
}


@functools.cache
def _module_distributions() -> Mapping[str, list[str]]:
    """Top-level module -> names of the installed distributions providing it (cached)."""
    return metadata.packages_distributions()


def pinned_requirements(
    modules: Iterable[str], pip_specs: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """(requirement lines, notes): each third-party distribution the code imports or the
    notebook pip-installed, pinned `Name==version` as installed here; runpod always. The
    lines start with the `--extra-index-url` of PyTorch's index when a build is pinned."""
    pins = _Pins()
    if not pins.add_distribution("runpod", why="the worker runs on runpod"):
        pins.add_spec("runpod")  # kept unpinned, with a note
    for module in sorted({name.split(".")[0] for name in modules} - {""}):
        if module in sys.stdlib_module_names:
            continue
        if module == "nbworker":
            pins.note_nbworker()
            continue
        distributions = sorted(set(_module_distributions().get(module, ())), key=str.lower)
        if not distributions:
            pins.note(
                f"module {module} is imported but no installed distribution provides it: "
                "add it to requirements.txt by hand"
            )
        for name in distributions:
            pins.add_distribution(name, why=f"module {module} is imported")
    words = [_unquoted(word) for word in pip_specs]
    skip_next = False
    for position, word in enumerate(words):
        if skip_next:
            skip_next = False
            continue
        if word.startswith("-"):
            option, has_value, value = word.partition("=")
            skip_next = option in _OPTIONS_WITH_VALUE and not has_value
            if skip_next and position + 1 < len(words):
                value = words[position + 1]
            if option in ("-e", "--editable") and value:
                pins.add_spec(value)
            elif _OPTIONS_WITH_VALUE.get(option):
                why = _OPTIONS_WITH_VALUE[option]
                pins.note(f"pip option `{option} {value}` was dropped: {why}")
            continue
        if word:
            pins.add_spec(word)
    return pins.lines(), pins.notes


class _Pins:
    """The requirement lines gathered so far (by canonical name) and the notes."""

    def __init__(self) -> None:
        self._pinned: dict[str, tuple[str, frozenset[str], str]] = {}  # name, extras, ==version
        self._kept: set[str] = set()  # lines kept as written
        self._indexes: set[str] = set()  # PyTorch's indexes of the builds pinned
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def note_nbworker(self) -> None:
        self.note(
            "nbworker is not a requirement of the worker: the exported code should not "
            "import nbworker"
        )

    def lines(self) -> list[str]:
        entries = [(line, line) for line in self._kept]
        for name, extras, version in self._pinned.values():
            shown = f"{name}[{','.join(sorted(extras))}]" if extras else name
            entries.append((name, f"{shown}{version}"))
        options = [f"--extra-index-url {url}" for url in sorted(self._indexes)]
        ordered = sorted(entries, key=lambda e: (e[0].lower(), e[1]))
        return options + [line for _, line in ordered]

    def add_distribution(
        self, name: str, *, why: str, extras: frozenset[str] = frozenset()
    ) -> bool:
        """Pin the installed distribution `name`; False if it is not installed."""
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return False
        own_name = distribution.metadata["Name"] or name
        key = canonicalize_name(own_name)
        if key == "nbworker":
            self.note_nbworker()
            return True
        version = self._pinned_version(own_name, distribution.version)
        if key in self._pinned:
            extras |= self._pinned[key][1]
        self._pinned[key] = (own_name, extras, version)
        if _is_prerelease(distribution.version):
            self.note(
                f"{own_name}{version} ({why}) is a pre-release: requirements.txt pins it as "
                "installed here, so the worker runs on it too; pin a release by hand if it "
                "should not"
            )
        if distribution.read_text("direct_url.json"):
            self.note(
                f"{own_name} ({why}) was installed from a URL or a local path, not from a "
                f"package index: check that {own_name}{version} can be installed"
            )
        return True

    def add_spec(self, spec: str) -> None:
        """A `pip install` argument: pinned if it names an installed distribution."""
        # here, not at the top: packaging's requirement parser is a third of what pinning
        # imports, and most notebooks have no %pip line
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            requirement = None
        if requirement is None or requirement.url or requirement.marker:
            self._kept.add(spec)
            self.note(
                f"`pip install {spec}` is kept as written, not pinned: check that the image "
                "can install it"
            )
            return
        if canonicalize_name(requirement.name) == "nbworker":
            self.note_nbworker()
            return
        extras = frozenset(requirement.extras)
        if not self.add_distribution(requirement.name, why="pip-installed", extras=extras):
            self._kept.add(spec)
            self.note(
                f"`pip install {spec}`: {requirement.name} is not installed here, so it is "
                "kept as written and not pinned"
            )
            return
        installed = metadata.version(requirement.name)
        if requirement.specifier and not requirement.specifier.contains(
            installed, prereleases=True
        ):
            self.note(
                f"`pip install {spec}`: the installed {requirement.name} {installed} does not "
                f"satisfy {requirement.specifier}; pinned to the installed version"
            )

    def _pinned_version(self, name: str, version: str) -> str:
        """`==X.Y.Z`; a local label like `+ubuntu1` dropped (a note says so) unless it is one of
        PyTorch's builds (`+cpu`, `+cu128`), kept with its index; `===` if not PEP 440."""
        try:
            parsed = Version(version)
        except InvalidVersion:
            return f"==={version}"
        if parsed.local is None:
            return f"=={version}"
        if canonicalize_name(name) in _PYTORCH_BUILDS and _PYTORCH_LABEL.fullmatch(parsed.local):
            url = _PYTORCH_INDEX.format(label=parsed.local)
            self._indexes.add(url)
            where = (
                "the worker computes on the CPU, as the notebook did (export where torch is a "
                "CUDA build for a GPU worker)"
                if parsed.local == "cpu"
                else "the worker gets the build the notebook ran on"
            )
            self.note(
                f"{name}=={version} is PyTorch's {parsed.local} build: requirements.txt pins it "
                f"with its label, from PyTorch's index (--extra-index-url {url}), so {where}"
            )
            return f"=={version}"
        self.note(
            f"{name}: the local build label +{parsed.local} of the installed {version} was "
            f"dropped: {name}=={parsed.public} installs the default build from the index"
        )
        return f"=={parsed.public}"


def _is_prerelease(version: str) -> bool:
    """2.0.0rc2, 2.0.0.dev1: pip installs such a version only when it is named exactly."""
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return False


def _unquoted(word: str) -> str:
    """`"numpy>=2"` -> `numpy>=2`: %pip lines are split on spaces, quotes and all."""
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        return word[1:-1]
    return word
