"""The model cache from Python: load once, accounting per device, eviction, budget, threads."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from nbworker import memory
from nbworker.cache import CacheMiss, LoadCycle, ModelCache

MiB = 1024**2


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- loading


def test_load_once_then_hits_until_the_key_changes() -> None:
    cache = ModelCache()
    calls = []

    def loader():
        calls.append(1)
        return {"weights": len(calls)}

    assert cache.load("m", loader, key="v1") == {"weights": 1}
    assert cache.load("m", loader, key="v1") == {"weights": 1}
    assert calls == [1]
    assert cache.entry("m").hits == 1
    assert cache.load("m", loader, key="v2") == {"weights": 2}
    assert cache.fetch("m", loader, key="v2", reload=True).released[0].reason == "reload"
    assert len(calls) == 3 and cache.names() == ["m"]


def test_get_and_misses() -> None:
    cache = ModelCache()
    cache.load("encoder", lambda: "E")
    assert cache.get("encoder") == "E"
    with pytest.raises(CacheMiss) as caught:
        cache.get("decoder")
    assert str(caught.value) == "no model named 'decoder' is cached (encoder)"
    assert isinstance(caught.value, KeyError)


def test_bound_entries_give_the_value_of_their_own_name_or_all_names() -> None:
    cache = ModelCache()
    cache.fetch("encoder", lambda: {"encoder": 1, "tokenizer": 2}, bound=True)
    cache.fetch("pipe", lambda: {"a": 1, "b": 2}, bound=True)
    assert cache.get("encoder") == 1
    assert cache.get("pipe") == {"a": 1, "b": 2}


def test_a_failed_load_leaves_no_entry_and_other_entries_alone() -> None:
    cache = ModelCache()
    cache.load("keep", lambda: np.ones(10))

    def broken():
        raise OSError("weights file missing")

    with pytest.raises(OSError, match="weights file missing"):
        cache.load("broken", broken)
    assert cache.names() == ["keep"]
    assert cache.get("keep").sum() == 10


# ---------------------------------------------------------------- memory accounting


def test_numpy_arrays_and_their_views_count_once() -> None:
    array = np.zeros((1000, 1000))  # 8 MB
    objects = {"a": array, "view": array[:10], "again": [array, {"deep": array.T}]}
    assert memory.bytes_by_device(objects.values()) == {"cpu": 8_000_000}


def test_torch_modules_count_parameters_and_buffers_once() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(100, 200), torch.nn.BatchNorm1d(200))
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    assert buffers > 0
    assert memory.bytes_by_device([net]) == {"cpu": params + buffers}


def test_shared_storages_count_once_across_a_pipeline() -> None:
    class Pipeline:
        __slots__ = ("decoder", "encoder", "extra")

        def __init__(self) -> None:
            self.encoder = torch.nn.Embedding(1000, 64)
            self.decoder = torch.nn.Linear(64, 1000, bias=False)
            self.decoder.weight = self.encoder.weight  # tied weights
            self.extra = {"slice": self.encoder.weight.data[:10], "blob": b"x" * 1000}

    pipeline = Pipeline()
    embedding = 1000 * 64 * 4
    assert memory.bytes_by_device([pipeline, {"again": pipeline}]) == {"cpu": embedding + 1000}


def test_meta_tensors_hold_nothing_and_devices_are_named() -> None:
    meta = torch.empty(10_000, device="meta")
    assert memory.bytes_by_device([meta]) == {}
    assert list(memory.bytes_by_device([torch.ones(4)])) == ["cpu"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only paths")
def test_without_cuda_the_allocator_figures_are_empty() -> None:
    # On a CPU-only machine the CUDA paths degrade to nothing, without error.
    assert memory.cuda_allocated() == {}
    memory.release_cuda()
    entry = ModelCache().fetch("m", lambda: torch.ones(3)).entry
    assert entry.memory == {"cpu": 12}
    assert entry.cuda_before == entry.cuda_after == {}
    assert entry.describe_cuda() == ""


def test_allocator_figures_are_described_per_device() -> None:
    entry = ModelCache().fetch("m", lambda: None).entry
    entry.cuda_before = {"cuda:0": 100 * MiB, "cuda:1": 0}
    entry.cuda_after = {"cuda:0": 1124 * MiB, "cuda:1": 0}
    assert entry.describe_cuda() == "CUDA allocator +1.0 GiB on cuda:0"


@pytest.mark.parametrize(
    ("text", "size"),
    [("8GiB", 8 * 1024**3), ("512MB", 512_000_000), ("1.5G", int(1.5 * 1024**3)), ("100", 100)],
)
def test_parse_size(text: str, size: int) -> None:
    assert memory.parse_size(text) == size


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match=r"'lots' is not a size: write e\.g\. 8GiB"):
        memory.parse_size("lots")


def test_format_bytes() -> None:
    assert [memory.format_bytes(n) for n in (12, 2048, 3 * MiB, 5 * 1024**3)] == [
        "12 B",
        "2.0 KiB",
        "3.0 MiB",
        "5.0 GiB",
    ]


# ---------------------------------------------------------------- eviction frees memory


def test_evict_frees_the_objects_and_their_memory() -> None:
    cache = ModelCache()
    gc.collect()
    before = rss()
    cache.load("big", lambda: np.ones(256 * MiB // 8))  # 256 MiB, touched
    watched = weakref.ref(cache.get("big"))
    assert rss() - before > 200 * MiB
    released = cache.evict("big")
    assert released.memory == {"cpu": 256 * MiB}
    assert released.still_referenced == []
    assert watched() is None
    assert rss() - before < 50 * MiB
    assert "big" not in cache


def test_evict_says_when_something_else_still_holds_the_object() -> None:
    cache = ModelCache()
    held = cache.load("model", lambda: torch.nn.Linear(10, 10))
    released = cache.evict("model")
    assert released.still_referenced == ["model"]
    assert held.weight.shape == (10, 10)


def test_release_hooks_run_before_collection() -> None:
    cache = ModelCache()
    namespace = {"model": None}
    cache.fetch("m", lambda: {"model": np.ones(5)}, bound=True)
    namespace["model"] = cache.get("m")
    remove = cache.on_release(lambda entry: namespace.pop("model"))
    assert cache.evict("m").still_referenced == []
    remove()
    cache.load("n", lambda: 1)
    cache.clear()  # the removed hook is not called again
    assert namespace == {}


# ---------------------------------------------------------------- budget


def test_budget_evicts_the_least_recently_used_first() -> None:
    cache = ModelCache(budget=25 * MiB)
    cache.load("a", lambda: np.ones(10 * MiB // 8))
    cache.load("b", lambda: np.ones(10 * MiB // 8))
    cache.get("a")  # now b is the least recently used
    loaded = cache.fetch("c", lambda: np.ones(10 * MiB // 8))
    assert [(r.name, r.reason) for r in loaded.released] == [("b", "over budget")]
    assert cache.names() == ["a", "c"]
    assert cache.total_bytes() == 20 * MiB


def test_an_entry_larger_than_the_budget_loads_with_a_warning() -> None:
    cache = ModelCache(budget=1 * MiB)
    cache.load("small", lambda: np.ones(1000))
    loaded = cache.fetch("huge", lambda: np.ones(2 * MiB // 8))
    assert loaded.warnings == [
        "huge holds 2.0 MiB, more than the whole budget of 1.0 MiB: loaded anyway"
    ]
    assert cache.names() == ["huge"]


def test_lowering_the_budget_evicts_now_and_the_variable_sets_it(monkeypatch) -> None:
    cache = ModelCache()
    cache.load("a", lambda: np.ones(MiB // 8))
    cache.load("b", lambda: np.ones(MiB // 8))
    assert [r.name for r in cache.set_budget(MiB)] == ["a"]
    monkeypatch.setenv("NBWORKER_CACHE_BUDGET", "8GiB")
    assert ModelCache().budget == 8 * 1024**3


# ---------------------------------------------------------------- nested loads


def test_a_loader_may_load_another_entry() -> None:
    cache = ModelCache()

    def outer() -> dict[str, object]:
        tokenizer = cache.load("inner", lambda: np.zeros(MiB, np.uint8), key="i")
        return {"tokenizer": tokenizer, "encoder": np.ones(2 * MiB, np.uint8)}

    loaded = cache.fetch("outer", outer, key="o", bound=True)
    assert not loaded.hit and cache.names() == ["inner", "outer"]
    # outer binds the tokenizer too (a hit binds it again), but its memory is inner's
    assert loaded.entry.objects["tokenizer"] is cache.get("inner")
    assert loaded.entry.memory == {"cpu": 2 * MiB} and cache.total_bytes() == 3 * MiB
    assert cache.fetch("outer", outer, key="o", bound=True).hit
    assert cache.entry("inner").hits == 1


def test_what_a_nested_hit_gives_counts_in_the_inner_entry_only() -> None:
    cache = ModelCache()
    cache.load("inner", lambda: np.zeros(MiB, np.uint8))
    loaded = cache.fetch("outer", lambda: {"w": cache.load("inner", list)}, bound=True)
    assert loaded.entry.memory == {} and cache.total_bytes() == MiB


def test_a_nested_entry_stays_when_the_outer_load_fails_after_it() -> None:
    cache = ModelCache()

    def outer() -> None:
        cache.load("inner", lambda: "loaded")
        raise RuntimeError("outer broke")

    with pytest.raises(RuntimeError, match="outer broke"):
        cache.load("outer", outer)
    assert cache.names() == ["inner"]
    assert cache.load("outer", lambda: "second try") == "second try"  # not left loading


def test_a_failed_nested_load_fails_the_outer_one_unless_it_is_caught() -> None:
    cache = ModelCache()

    def broken() -> None:
        raise ValueError("inner broke")

    with pytest.raises(ValueError, match="inner broke"):
        cache.load("outer", lambda: cache.load("inner", broken))
    assert len(cache) == 0

    def forgiving() -> str:
        try:
            cache.load("inner", broken)
        except ValueError:
            return "without inner"
        return "with inner"

    assert cache.load("outer", forgiving) == "without inner"
    assert cache.names() == ["outer"]


def test_a_load_that_needs_itself_is_a_one_line_error_not_a_deadlock() -> None:
    cache = ModelCache()
    cache.load("other", lambda: 1)

    def outer() -> object:
        return cache.load("inner", lambda: cache.load("outer", lambda: "never"))

    with pytest.raises(LoadCycle) as raised:
        cache.load("outer", outer)
    assert raised.value.chain == ("outer", "inner", "outer")
    assert str(raised.value) == (
        "loading 'outer' needs 'outer' itself (outer -> inner -> outer): "
        "a model cell cannot load its own entry"
    )
    assert raised.value._render_traceback_() == [f"LoadCycle: {raised.value}"]
    assert cache.names() == ["other"]  # neither of the two stays, nor stays loading
    assert cache.load("outer", lambda: "now") == "now"


def test_a_cycle_through_another_thread_is_an_error_too() -> None:
    """x's loader waits in a thread of its own for y, whose loader asks for x: the thread
    asking for y would wait for y, which waits for x's load, which waits for it."""
    cache = ModelCache()
    y_started = threading.Event()
    errors: list[BaseException] = []

    def load_y() -> None:
        def y() -> object:
            y_started.set()
            return cache.load("x", lambda: "x from y")  # waits for the main thread's load

        try:
            cache.load("y", y)
        except BaseException as err:  # asserted below
            errors.append(err)

    worker = threading.Thread(target=load_y)

    def x() -> object:
        worker.start()
        y_started.wait(5)
        while not cache._waiting:  # y's loader is waiting for x
            time.sleep(0.001)
        return cache.load("y", lambda: "y from x")

    with pytest.raises(LoadCycle) as raised:
        cache.load("x", x)
    assert raised.value.chain == ("y", "x", "y")
    worker.join(5)  # x failed: y's loader, waiting for it, then loaded x itself
    assert errors == [] and cache.names() == ["x", "y"]
    assert cache.get("y") == "x from y"


def test_two_threads_loading_one_name_load_it_once() -> None:
    cache = ModelCache()
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow() -> str:
        calls.append(threading.get_ident())
        started.set()
        release.wait(5)
        return "loaded"

    first = threading.Thread(target=cache.load, args=("model", slow))
    first.start()
    started.wait(5)
    results = []
    second = threading.Thread(target=lambda: results.append(cache.fetch("model", slow)))
    second.start()
    while not cache._waiting:  # the second thread waits for the first one's load
        time.sleep(0.001)
    release.set()
    first.join(5)
    second.join(5)
    assert len(calls) == 1 and results[0].hit and results[0].entry.value == "loaded"


def test_a_thread_waiting_for_a_failed_load_loads_it_itself() -> None:
    cache = ModelCache()
    started, release = threading.Event(), threading.Event()

    def failing() -> str:
        started.set()
        release.wait(5)
        raise RuntimeError("first load broke")

    def first() -> None:
        with pytest.raises(RuntimeError):
            cache.load("model", failing)

    thread = threading.Thread(target=first)
    thread.start()
    started.wait(5)
    results = []
    second = threading.Thread(target=lambda: results.append(cache.load("model", lambda: "ok")))
    second.start()
    while not cache._waiting:
        time.sleep(0.001)
    release.set()
    thread.join(5)
    second.join(5)
    assert results == ["ok"] and cache.names() == ["model"]


def test_different_names_load_at_the_same_time() -> None:
    """A loader may load its parts in threads of its own (each its entry) and wait for them."""
    cache = ModelCache()
    barrier = threading.Barrier(3, timeout=5)

    def part(number: int) -> int:
        barrier.wait()  # every part loads at once, or this times out
        return number

    def whole() -> list[int]:
        threads = [
            threading.Thread(target=cache.load, args=(f"part{n}", lambda n=n: part(n)))
            for n in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return [cache.get(f"part{n}") for n in range(3)]

    assert cache.load("whole", whole) == [0, 1, 2]
    assert sorted(cache.names()) == ["part0", "part1", "part2", "whole"]


# ---------------------------------------------------------------- threads


def test_reads_go_on_while_a_load_runs() -> None:
    cache = ModelCache()
    cache.load("served", lambda: "ready")
    slowest = []
    errors = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                assert cache.get("served") == "ready"
                cache.info()
            except Exception as err:  # collected and asserted below
                errors.append(err)
            slowest.append(time.perf_counter() - started)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    cache.load("slow", lambda: time.sleep(0.5) or "loaded")
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert max(slowest) < 0.2  # no read waited for the half-second load
    assert cache.get("slow") == "loaded"


def test_a_hit_does_not_wait_for_another_entrys_load() -> None:
    cache = ModelCache()
    cache.load("a", lambda: [1], key="k")
    loading, release = threading.Event(), threading.Event()

    def held() -> list[int]:
        loading.set()
        release.wait(10)  # b's load lasts until the hit below has returned
        return [2]

    slow = threading.Thread(target=cache.load, args=("b", held))
    slow.start()
    assert loading.wait(5)  # b's loader is running
    try:
        assert cache.load("a", lambda: [0], key="k") == [1]
        assert slow.is_alive()  # the hit came back while b's load still ran
    finally:
        release.set()
        slow.join(5)
    assert cache.get("b") == [2]


def test_memory_shared_between_numpy_and_torch_counts_once() -> None:
    array = np.ones(1_000_000)
    tensor = torch.ones(1_000_000, dtype=torch.float64)
    assert memory.bytes_by_device([array, torch.from_numpy(array)]) == {"cpu": 8_000_000}
    assert memory.bytes_by_device([tensor, tensor.numpy()]) == {"cpu": 8_000_000}
    # a tensor over part of an array: the union of the two regions
    part = torch.from_numpy(array[500_000:])
    assert memory.bytes_by_device([part, array[:10]]) == {"cpu": 8_000_000}
    assert memory.bytes_by_device([part]) == {"cpu": 4_000_000}


def test_process_memory_figures_match_the_kernels_own() -> None:
    now, peak = memory.process_rss(), memory.peak_rss()
    assert now is not None and peak is not None
    assert abs(now - rss()) < 16 * MiB
    assert peak >= now - 16 * MiB
