"""How much memory objects hold, per device; sizes read and written for people.

`bytes_by_device` walks an object graph (containers, plain objects, torch modules) and
counts each numpy buffer and each torch storage once, on the device it lives on. numpy and
torch are never imported here: an object can only be an array or a tensor if its library
is already loaded.
"""

from __future__ import annotations

import contextlib
import re
import sys
import types
from collections.abc import Iterable
from typing import Any

__all__ = [
    "bytes_by_device",
    "cuda_allocated",
    "format_bytes",
    "parse_budget",
    "parse_size",
    "peak_rss",
    "process_rss",
    "release_cuda",
]

MAX_OBJECTS = 1_000_000  # a walk stops after this many objects (a graph that large is a bug)
_SKIP_TYPES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    property,
    str,
    int,
    float,
    complex,
    bool,
    type(None),
)
_BUFFERS = (bytes, bytearray)


def _tensor_region(tensor: Any) -> tuple[str, int, int]:
    """(device, start address, bytes) of the storage behind a torch tensor."""
    device = str(tensor.device)
    try:
        storage = tensor.untyped_storage()
        return device, storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse, nested and other special tensors
        return device, id(tensor), tensor.element_size() * tensor.nelement()


def _array_region(array: Any, ndarray: type) -> tuple[str, int, int]:
    """("cpu", start address, bytes) of the whole buffer behind a numpy array or view."""
    while isinstance(getattr(array, "base", None), ndarray):
        array = array.base
    return "cpu", array.__array_interface__["data"][0], array.nbytes


def _union(regions: list[tuple[int, int]]) -> int:
    """Bytes covered by (start, size) regions, overlaps counted once."""
    total, reached = 0, -1
    for start, size in sorted(regions):
        end = start + size
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def bytes_by_device(objects: Iterable[Any]) -> dict[str, int]:
    """Bytes held by numpy arrays, torch tensors (parameters and buffers of modules too)
    and bytes buffers reachable from `objects`, by device (`cpu`, `cuda:0`, ...). Memory
    is counted by address: a storage shared by tensors (tied weights, views), an array and
    its views, or a tensor made from a numpy array (`torch.from_numpy`) counts once."""
    torch = sys.modules.get("torch")
    numpy = sys.modules.get("numpy")
    tensor_type = getattr(torch, "Tensor", None)
    ndarray = getattr(numpy, "ndarray", None)
    regions: dict[str, list[tuple[int, int]]] = {}
    buffers = 0
    seen: set[int] = set()
    stack = list(objects)
    while stack and len(seen) < MAX_OBJECTS:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIP_TYPES):
            continue
        seen.add(id(obj))
        if tensor_type is not None and isinstance(obj, tensor_type):
            if obj.device.type != "meta":
                device, start, size = _tensor_region(obj)
                regions.setdefault(device, []).append((start, size))
        elif ndarray is not None and isinstance(obj, ndarray):
            device, start, size = _array_region(obj, ndarray)
            regions.setdefault(device, []).append((start, size))
        elif isinstance(obj, _BUFFERS):
            buffers += len(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        else:
            stack.extend(_attributes(obj))
    totals = {device: _union(spans) for device, spans in regions.items()}
    if buffers:
        totals["cpu"] = totals.get("cpu", 0) + buffers
    return {device: size for device, size in sorted(totals.items()) if size}


def _attributes(obj: Any) -> list[Any]:
    """The values of an object's instance attributes, read without running its code."""
    values: list[Any] = []
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        namespace = None
    if isinstance(namespace, dict):
        values.extend(namespace.values())
    for cls in type(obj).__mro__:
        for slot in cls.__dict__.get("__slots__", ()):
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                with contextlib.suppress(AttributeError):
                    values.append(object.__getattribute__(obj, slot))
    return values


def cuda_allocated() -> dict[str, int]:
    """The CUDA caching allocator's bytes allocated per device; {} without CUDA (or torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    return {
        f"cuda:{index}": torch.cuda.memory_allocated(index)
        for index in range(torch.cuda.device_count())
    }


def release_cuda() -> None:
    """Give the CUDA allocator's cached, unused blocks back to the driver (if CUDA is used)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def process_rss() -> int | None:
    """This process's resident memory now, in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as file:
            pages = int(file.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import resource

    return pages * resource.getpagesize()


def peak_rss() -> int | None:
    """This process's peak resident memory in bytes (Unix), else None."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def parse_budget(text: str) -> int | None:
    """A cache budget: a size (`parse_size`), or None for no cap (`none`, `off`, `0`)."""
    return None if text.strip().lower() in ("none", "off", "0") else parse_size(text)


def parse_size(text: str) -> int:
    """`8GiB`, `512MB`, `1.5G` (binary), `1048576` -> bytes. Raises ValueError."""
    match = _SIZE.match(text)
    unit = match[2].lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size: write e.g. 8GiB, 512MiB, 2GB or a number of bytes"
        )
    return int(float(match[1]) * _UNITS[unit])


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
