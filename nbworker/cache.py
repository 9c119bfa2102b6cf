"""The model cache: load once, keep across re-runs, know the memory, evict for real.

An entry is a name, a key (for a `%%model` cell, `source.code_key`: the hash of what its
code means, not of its layout), the objects the load produced, and figures: load time,
bytes per device, hits, last use. Loading a name whose key has not changed is a hit and
runs nothing; a new key releases the old entry first. A budget (`NBWORKER_CACHE_BUDGET`,
e.g. `8GiB`) evicts the least recently used entries when a load takes the cache past it.

From Python, `nbworker.cache.load(name, loader)` and friends work on the default
session's cache; a `ModelCache` of your own works the same. All methods are thread-safe.

A loader may load other entries (a `%%model` cell running `%%model`, or calling `load`):
each name loads once at a time, so a second thread asking for a name being loaded waits
for that load and gets its entry, while other names load meanwhile. A load that needs
itself, directly or through other loads, raises `LoadCycle` rather than waiting forever.
A nested entry stays when the load around it fails: it was loaded in full. What a nested
load made counts in its own entry's memory, not again in the one around it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbworker import memory
from nbworker.errors import CacheMiss, LoadCycle

__all__ = [
    "BUDGET_VARIABLE",
    "CacheMiss",
    "Entry",
    "LoadCycle",
    "Loaded",
    "ModelCache",
    "Released",
    "clear",
    "default_cache",
    "evict",
    "get",
    "info",
    "load",
]

BUDGET_VARIABLE = "NBWORKER_CACHE_BUDGET"


@dataclass
class _Load:
    """A load under way: the thread running it, and the names it loaded in turn."""

    name: str
    thread: int
    nested: list[Entry] = field(default_factory=list)


@dataclass
class Entry:
    """One cached load. `objects` maps names to what the load produced: for a `%%model`
    cell the names it bound, for `load()` the entry's own name to the loader's value."""

    name: str
    key: str | None
    objects: dict[str, Any]
    order: int
    loaded_at: float  # time.time() when loaded
    load_seconds: float
    memory: dict[str, int]  # bytes per device
    cuda_before: dict[str, int] = field(default_factory=dict)  # allocator figures, if CUDA
    cuda_after: dict[str, int] = field(default_factory=dict)
    source: str | None = None
    cell_id: str | None = None
    hits: int = 0
    last_used: float = 0.0

    @property
    def value(self) -> Any:
        """The object named like the entry, else every object it holds, by name."""
        if self.name in self.objects:
            return self.objects[self.name]
        return dict(self.objects)

    @property
    def names(self) -> list[str]:
        """The names the entry binds, whatever they hold (a function, a dict, a tensor),
        but modules: the cell's imports bind the same module as any other cell's."""
        return [name for name, obj in self.objects.items() if not isinstance(obj, types.ModuleType)]

    @property
    def total_bytes(self) -> int:
        return sum(self.memory.values())

    def describe_cuda(self) -> str:
        """What the CUDA allocator gained during the load, per device ('' without CUDA)."""
        grown = {
            device: after - self.cuda_before.get(device, 0)
            for device, after in self.cuda_after.items()
            if after != self.cuda_before.get(device, 0)
        }
        if not grown:
            return ""
        return "CUDA allocator " + ", ".join(
            f"{'+' if n > 0 else '-'}{memory.format_bytes(abs(n))} on {device}"
            for device, n in grown.items()
        )

    def describe_memory(self) -> str:
        if not self.memory:
            return "no arrays or tensors"
        return ", ".join(f"{memory.format_bytes(n)} on {dev}" for dev, n in self.memory.items())


@dataclass
class Released:
    """What evicting an entry gave back. `still_referenced` names objects that outlived the
    release (something else holds them, so their memory is not free yet)."""

    name: str
    memory: dict[str, int]
    reason: str
    still_referenced: list[str] = field(default_factory=list)


@dataclass
class Loaded:
    """The outcome of `ModelCache.fetch`."""

    entry: Entry
    hit: bool
    released: list[Released] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _is_data(obj: Any) -> bool:
    """Not a module, class or function: something a load made, that holds memory."""
    return not isinstance(obj, (type, types.ModuleType, types.FunctionType, types.MethodType))


def _weak_refs(objects: dict[str, Any]) -> dict[str, weakref.ref[Any]]:
    refs = {}
    for name, obj in objects.items():
        if _is_data(obj):
            with contextlib.suppress(TypeError):  # ints, dicts, lists... cannot be watched
                refs[name] = weakref.ref(obj)
    return refs


class ModelCache:
    """Named loads kept for the life of the session."""

    def __init__(self, *, budget: int | None = None) -> None:
        if budget is None and os.environ.get(BUDGET_VARIABLE):
            budget = memory.parse_size(os.environ[BUDGET_VARIABLE])
        self.budget = budget
        self._entries: dict[str, Entry] = {}
        self._lock = threading.RLock()  # guards the entries and loads; held briefly
        self._load_ended = threading.Condition(self._lock)
        self._loading: dict[str, _Load] = {}  # the loads under way, by name
        self._waiting: dict[int, str] = {}  # thread -> the name it waits to be loaded
        self._loads = 0
        self._release_hooks: list[Callable[[Entry], None]] = []

    # ------------------------------------------------------------------ loading

    def fetch(
        self,
        name: str,
        loader: Callable[[], Any],
        *,
        key: str | None = None,
        reload: bool = False,
        bound: bool = False,
        source: str | None = None,
        cell_id: str | None = None,
    ) -> Loaded:
        """The entry `name`, loaded by `loader()` unless cached under the same key.

        `bound=True`: the loader returns a dict of names to objects (a `%%model` cell's
        bindings) rather than one value. A loader that raises leaves no entry, and the
        entry it was to replace is already released.
        """
        __tracebackhide__ = True  # a failed load shows the loader's frames, not ours
        me = threading.get_ident()
        with self._lock:  # a hit never waits for another entry's load
            outer = self._load_of(me)  # the load this one runs inside, if any
            while True:
                hit = self._hit(name, key, reload)
                if hit is not None:
                    if outer is not None:
                        outer.nested.append(hit.entry)
                    return hit
                if name not in self._loading:
                    break
                self._check_cycle(name, me)
                self._waiting[me] = name
                try:  # another thread loads it: wait for that load, then look again
                    self._load_ended.wait()
                finally:
                    del self._waiting[me]
            load = self._loading[name] = _Load(name, me)
            released = []
            entry = self._entries.get(name)
            if entry is not None:
                reason = "reload" if reload or entry.key == key else "source changed"
                released.append(self._release(name, reason=reason))
            del entry

        try:
            cuda_before = memory.cuda_allocated()
            started = time.perf_counter()
            produced = loader()
            seconds = time.perf_counter() - started
            objects = dict(produced) if bound else {name: produced}
            # A nested load's objects (a `%%model` cell inside this one binds them here too,
            # and a hit must bind them again) count in their own entry only.
            nested = {id(obj) for inner in load.nested for obj in inner.objects.values()}
            own = [obj for obj in objects.values() if id(obj) not in nested]
            new = Entry(
                name=name,
                key=key,
                objects=objects,
                order=0,
                loaded_at=time.time(),
                load_seconds=seconds,
                memory=memory.bytes_by_device(own),
                cuda_before=cuda_before,
                cuda_after=memory.cuda_allocated(),
                source=source,
                cell_id=cell_id,
                last_used=time.time(),
            )
            with self._lock:
                self._loads += 1
                new.order = self._loads
                self._entries[name] = new
                del self._loading[name]  # in the same step: a waiting thread sees the entry
                if outer is not None:
                    outer.nested.append(new)
                loaded = Loaded(new, hit=False, released=released)
                self._apply_budget(loaded)
            return loaded
        finally:  # a failed load leaves no entry: a thread waiting for it loads it itself
            with self._lock:
                if self._loading.get(name) is load:  # not a later load of the name
                    del self._loading[name]
                self._load_ended.notify_all()

    def _load_of(self, thread: int) -> _Load | None:
        """The innermost load `thread` is running (loads nest only within a thread)."""
        running = [load for load in self._loading.values() if load.thread == thread]
        return running[-1] if running else None  # dicts keep the order loads started in

    def _check_cycle(self, name: str, me: int) -> None:
        """LoadCycle if waiting for `name` would wait for this thread's own load: `name` is
        loading in this thread, or its loader waits (perhaps through others) for one that is."""
        needs = [name]  # what the load of each needs in turn, until a load of this thread
        owner = self._loading[name].thread
        while owner != me:
            awaited = self._waiting.get(owner)
            if awaited is None or awaited not in self._loading or awaited in needs:
                return  # that load goes on: waiting for it ends
            needs.append(awaited)
            owner = self._loading[awaited].thread
        mine = [load.name for load in self._loading.values() if load.thread == me]
        ring = mine[mine.index(needs[-1]) :] + needs[:-1]  # each needs the next, the last the first
        start = ring.index(name)
        raise LoadCycle(name, (*ring[start:], *ring[:start], name))

    def _hit(self, name: str, key: str | None, reload: bool) -> Loaded | None:
        entry = self._entries.get(name)
        if entry is None or entry.key != key or reload:
            return None
        entry.hits += 1
        entry.last_used = time.time()
        return Loaded(entry, hit=True)

    def load(self, name: str, loader: Callable[[], Any], *, key: str | None = None) -> Any:
        """`loader()`'s value, computed once per `name` (and `key`: a new key reloads)."""
        return self.fetch(name, loader, key=key).entry.value

    def get(self, name: str) -> Any:
        """The cached value of `name` (see `Entry.value`); CacheMiss if absent."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise CacheMiss(name, tuple(self._entries))
            entry.hits += 1
            entry.last_used = time.time()
            return entry.value

    def entry(self, name: str) -> Entry:
        with self._lock:
            if name not in self._entries:
                raise CacheMiss(name, tuple(self._entries))
            return self._entries[name]

    # ------------------------------------------------------------------ releasing

    def on_release(self, hook: Callable[[Entry], None]) -> Callable[[], None]:
        """Call `hook(entry)` when an entry is released, before memory is collected (the
        notebook unbinds the entry's names from the user namespace). Returns a function
        that removes the hook."""
        self._release_hooks.append(hook)
        return lambda: self._release_hooks.remove(hook)

    def peek(self, name: str) -> Entry | None:
        """The entry `name`, if cached, without counting a use."""
        with self._lock:
            return self._entries.get(name)

    def set_budget(self, budget: int | None) -> list[Released]:
        """Set (None: remove) the budget; entries over it are evicted now, LRU first."""
        with self._lock:
            self.budget = budget
            return self._evict_over_budget(keep=None)

    def evict(self, name: str) -> Released:
        with self._lock:
            if name not in self._entries:
                raise CacheMiss(name, tuple(self._entries))
            return self._release(name, reason="evicted")

    def clear(self) -> list[Released]:
        with self._lock:
            return [self._release(name, reason="cleared") for name in list(self._entries)]

    def _release(self, name: str, *, reason: str) -> Released:
        entry = self._entries.pop(name)
        watched = _weak_refs(entry.objects)
        for hook in self._release_hooks:
            hook(entry)
        released = Released(name, dict(entry.memory), reason)
        entry.objects.clear()
        del entry
        gc.collect()
        memory.release_cuda()
        released.still_referenced = sorted(n for n, ref in watched.items() if ref() is not None)
        return released

    def _apply_budget(self, loaded: Loaded) -> None:
        new = loaded.entry
        if self.budget is not None and new.total_bytes > self.budget:
            loaded.warnings.append(
                f"{new.name} holds {memory.format_bytes(new.total_bytes)}, more than the whole "
                f"budget of {memory.format_bytes(self.budget)}: loaded anyway"
            )
        loaded.released.extend(self._evict_over_budget(keep=new))

    def _evict_over_budget(self, *, keep: Entry | None) -> list[Released]:
        """Evict least recently used entries (never `keep`) while over the budget."""
        if self.budget is None:
            return []
        others = sorted(
            (entry for entry in self._entries.values() if entry is not keep),
            key=lambda entry: entry.last_used,
        )
        released = []
        while others and self.total_bytes() > self.budget:
            released.append(self._release(others.pop(0).name, reason="over budget"))
        return released

    # ------------------------------------------------------------------ figures

    def total_bytes(self) -> int:
        with self._lock:
            return sum(entry.total_bytes for entry in self._entries.values())

    def info(self) -> list[Entry]:
        """The entries, in the order they were loaded."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda entry: entry.order)

    def names(self) -> list[str]:
        return [entry.name for entry in self.info()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


# ---------------------------------------------------------------------- the default cache


_default_cache: ModelCache | None = None


def default_cache() -> ModelCache:
    """The model cache of this process: the default session's (`%load_ext nbworker`), and
    the one the functions below use. The cache owns it, so that they need no session."""
    global _default_cache
    if _default_cache is None:
        _default_cache = ModelCache()
    return _default_cache


def _default() -> ModelCache:
    return default_cache()


def load(name: str, loader: Callable[[], Any], *, key: str | None = None) -> Any:
    """Load once into the default session's cache; see `ModelCache.load`."""
    return _default().load(name, loader, key=key)


def get(name: str) -> Any:
    return _default().get(name)


def evict(name: str) -> Released:
    return _default().evict(name)


def clear() -> list[Released]:
    return _default().clear()


def info() -> list[Entry]:
    return _default().info()
