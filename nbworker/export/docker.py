"""The Dockerfile of an exported worker, on the RunPod base image matching torch's CUDA.

A torch wheel built for CUDA X needs a driver and libraries at least that new, so the image
is the newest known RunPod base image whose CUDA is not newer than the torch build's.
"""

from __future__ import annotations

import importlib.util

__all__ = ["DEFAULT_BASE", "base_image", "dockerfile", "host_cuda_versions", "torch_cuda"]

DEFAULT_BASE = "runpod/base:0.6.2-cuda12.2.0"

# Tags of RunPod's base images (runpod/base on Docker Hub), by the CUDA version they ship.
BASE_IMAGES: dict[tuple[int, int], str] = {
    (11, 8): "runpod/base:0.4.0-cuda11.8.0",
    (12, 1): "runpod/base:0.6.0-cuda12.1.1",
    (12, 2): "runpod/base:0.6.2-cuda12.2.0",
}

# CUDA versions a RunPod host's driver may offer (the Hub's `allowedCudaVersions`), newest first.
HOST_CUDA_VERSIONS = (
    "12.8",
    "12.7",
    "12.6",
    "12.5",
    "12.4",
    "12.3",
    "12.2",
    "12.1",
    "12.0",
    "11.8",
)


def host_cuda_versions(base: str) -> tuple[str, ...]:
    """The host CUDA versions that can run image `base`: its own CUDA version or newer."""
    for (major, minor), tag in BASE_IMAGES.items():
        if tag == base:
            return tuple(
                version
                for version in HOST_CUDA_VERSIONS
                if tuple(int(part) for part in version.split(".")) >= (major, minor)
            )
    return HOST_CUDA_VERSIONS


def base_image(torch_cuda: str | None) -> tuple[str, str]:
    """(image, one-line reason for the report) for torch built with CUDA `torch_cuda`."""
    if torch_cuda is None:
        return DEFAULT_BASE, (
            f"base image {DEFAULT_BASE} (the default): the worker uses no CUDA build of torch"
        )
    try:
        major, minor = (int(part) for part in torch_cuda.split(".")[:2])
    except ValueError:
        return DEFAULT_BASE, (
            f"base image {DEFAULT_BASE}: torch's CUDA version {torch_cuda!r} is not "
            "understood, so the default was taken"
        )
    wanted = (major, minor)
    if wanted in BASE_IMAGES:
        return BASE_IMAGES[
            wanted
        ], f"base image {BASE_IMAGES[wanted]}: torch uses CUDA {torch_cuda}"
    older = [version for version in BASE_IMAGES if version <= wanted]
    chosen = max(older) if older else min(BASE_IMAGES)
    which = "the newest known one before it" if older else "the oldest known one"
    return BASE_IMAGES[chosen], (
        f"base image {BASE_IMAGES[chosen]}: torch uses CUDA {torch_cuda}, for which no "
        f"RunPod base image tag is known; took {which} (CUDA {chosen[0]}.{chosen[1]})"
    )


def torch_cuda() -> str | None:
    """torch.version.cuda of the installed torch: None for a CPU build or without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except (ImportError, OSError):  # installed but broken (missing shared libraries)
        return None
    cuda = torch.version.cuda
    return str(cuda) if cuda else None


def dockerfile(*, base: str, notebook: str, env: dict[str, str] | None = None) -> str:
    """The worker's Dockerfile: requirements installed, then handler.py run unbuffered.
    `env` becomes ENV lines (settings of the SDK the notebook's runs relied on)."""
    notebook = " ".join(notebook.splitlines())  # the header comment stays one line
    settings = "".join(f"ENV {key}={value}\n" for key, value in sorted((env or {}).items()))
    return (
        f"# RunPod worker exported by nbworker from {notebook}.\n"
        f"FROM {base}\n" + settings + "WORKDIR /\n"
        "COPY requirements.txt /requirements.txt\n"
        "RUN python -m pip install --no-cache-dir -r /requirements.txt\n"
        "COPY handler.py /handler.py\n"
        'CMD ["python", "-u", "/handler.py"]\n'
    )
