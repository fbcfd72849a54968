"""The slot cache: bounded slots, evicts the chunk needed furthest ahead, respects pins."""

from __future__ import annotations

import numpy as np
import pytest

from earthstream.engine import SlotCache, SlotPool, build_layout
from earthstream.sampling import build_window_grid
from earthstream.sources import ArraySource


def cache_with(n_slots: int) -> SlotCache:
    source = ArraySource({"v": (("t", "y"), np.zeros((8, 4), "f4"))}, chunks={"t": 1})
    grid = build_window_grid({"t": 8, "y": 4}, {"y": 4}, None, "drop", {"t": 1})
    layout = build_layout(list(source.variables.values()), grid)
    return SlotCache([SlotPool(layout.variables[0], n_slots)])


def load(cache: SlotCache, key: int, until: float) -> list[int] | None:
    found = cache.reserve(key, until)
    if found is None:
        return None
    cache.fulfil(key)
    return found[1]


def test_evicts_furthest_next_use() -> None:
    cache = cache_with(3)
    for key, uses in {0: [1, 5], 1: [2], 2: [3, 9]}.items():
        for use in uses:
            cache.add_use(key, use)
    for key in (0, 1, 2):
        assert load(cache, key, 0) == []
    assert cache.used_bytes == 3 * 16
    cache.add_use(3, 4)
    assert cache.reserve(3, 4) is None  # every resident chunk is needed before batch 4
    cache.consume(0)  # chunk 0's next use is now 5: later than 4
    assert load(cache, 3, 4) == [0]
    assert 0 not in cache.resident
    assert cache.peak_bytes == 3 * 16


def test_pins_and_unused_chunks() -> None:
    cache = cache_with(2)
    cache.add_use(0, 10)
    load(cache, 0, 0)
    load(cache, 1, 0)  # no recorded use: the first to go
    cache.pin(1)
    assert cache.reserve(2, 20) is None  # 1 is pinned; 0 is needed at 10, before 20
    cache.unpin(1)
    found = cache.reserve(2, 20)
    assert found is not None and found[1] == [1]
    cache.cancel(2)
    assert cache.pools[0].n_free == 1


@pytest.mark.parametrize("n_slots", [1, 4])
def test_slab_windows_view(n_slots: int) -> None:
    cache = cache_with(n_slots)
    pool = cache.pools[0]
    assert pool.slab.shape == (n_slots, 1, 4)
    assert pool.windows is not None and pool.windows.shape[0] == n_slots


def test_dead_chunks_give_their_slot_first() -> None:
    cache = cache_with(4)
    cache.add_use(0, 1)
    assert load(cache, 0, 0) == []
    cache.consume(0)  # chunk 0 is done: its slot is reused before a fresh one
    found = cache.reserve(1, 2)
    assert found is not None and found[1] == [0]
    assert cache.pools[0].n_free == 3  # no never-used slot was touched
    cache.fulfil(1)
    cache.reuse_dead = False
    cache.add_use(2, 3)
    load(cache, 2, 3)
    cache.consume(2)
    found = cache.reserve(3, 4)
    assert found is not None and found[1] == []  # without reuse, a free slot is taken
