"""Epoch orders: exactly once, deterministic, different per epoch, shardable (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earthstream.errors import ConfigError
from earthstream.sampling import (
    OrderSpec,
    _permute,
    build_window_grid,
    normalize_shuffle,
    shard_range,
)

grids = st.builds(
    lambda n_t, n_y, w, s, c_t, c_y: build_window_grid(
        {"t": n_t, "y": n_y}, {"y": min(w, n_y)}, {"t": s}, "drop", {"t": c_t, "y": c_y}
    ),
    st.integers(1, 20),
    st.integers(1, 20),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 6),
    st.integers(1, 8),
)


def epoch_ids(spec: OrderSpec, epoch: int) -> list[int]:
    order = spec.epoch(epoch)
    return [i for _, ids in order.iter_batches(range(order.n_batches)) for i in ids.tolist()]


@settings(max_examples=150, deadline=None)
@given(
    grid=grids,
    shuffle=st.sampled_from(["none", "chunks", "full"]),
    seed=st.integers(0, 2**32 - 1),
    batch_size=st.integers(1, 17),
    buffer=st.integers(1, 5),
    drop_last=st.booleans(),
)
def test_exactly_once_and_deterministic(grid, shuffle, seed, batch_size, buffer, drop_last) -> None:
    spec = OrderSpec(grid, shuffle, seed, batch_size, drop_last, buffer)
    ids = epoch_ids(spec, 0)
    n = grid.n_windows
    if drop_last:
        assert len(ids) == (n // batch_size) * batch_size
        assert len(set(ids)) == len(ids)
    else:
        assert sorted(ids) == list(range(n))
    assert ids == epoch_ids(spec, 0)  # same seed and epoch: same order
    order = spec.epoch(0)
    batches = [order.batch(j).tolist() for j in range(order.n_batches)]
    assert [i for b in batches for i in b] == ids


@settings(max_examples=60, deadline=None)
@given(grid=grids, shuffle=st.sampled_from(["chunks", "full"]), seed=st.integers(0, 1000))
def test_epochs_differ(grid, shuffle, seed) -> None:
    spec = OrderSpec(grid, shuffle, seed, 4, False, 2)
    if grid.n_windows < 8 or (shuffle == "chunks" and np.prod(grid.block_counts()) < 4):
        return  # too few windows or groups for two orders to differ reliably
    assert epoch_ids(spec, 0) != epoch_ids(spec, 1)
    assert epoch_ids(spec, 0) != epoch_ids(OrderSpec(grid, shuffle, seed + 1, 4, False, 2), 0)


@settings(max_examples=100, deadline=None)
@given(n_batches=st.integers(0, 200), num_shards=st.integers(1, 16))
def test_shards_partition_batches(n_batches: int, num_shards: int) -> None:
    parts = [shard_range(n_batches, s, num_shards) for s in range(num_shards)]
    assert [j for p in parts for j in p] == list(range(n_batches))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_chunks_order_groups_chunks() -> None:
    """Under the block shuffle, a unit's windows come from its own chunk groups only."""
    grid = build_window_grid({"t": 40, "y": 32}, {"y": 8}, None, "drop", {"t": 1, "y": 32})
    spec = OrderSpec(grid, "chunks", 7, 4, False, 3)
    ids = np.array(epoch_ids(spec, 0))
    time = grid.starts_of(ids)[:, 0]
    per_unit = 3 * 4  # 3 groups of 4 windows
    for u in range(0, len(ids), per_unit):
        groups = min(3, (len(ids) - u) // 4)  # the last unit holds what is left
        assert len(set(time[u : u + per_unit].tolist())) == groups
    assert sorted(set(time[:per_unit].tolist())) != [0, 1, 2]  # groups are shuffled


@pytest.mark.parametrize("n", [5, 1000, 4097])
def test_feistel_permutation(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(_permute, "EXACT_LIMIT", 1)
    full = _permute.permutation_slice(n, (3, 1), 0, n)
    assert sorted(full.tolist()) == list(range(n))
    assert (_permute.permutation_slice(n, (3, 1), n // 3, n // 2) == full[n // 3 : n // 2]).all()
    other = _permute.permutation_slice(n, (3, 2), 0, n)
    assert (other != full).any()
    if n > 100:  # no visible structure: positions and values are uncorrelated
        assert abs(np.corrcoef(np.arange(n), full)[0, 1]) < 0.1


def test_normalize_shuffle() -> None:
    assert normalize_shuffle("full") == "full"
    with pytest.raises(ConfigError, match="'chunks'"):
        normalize_shuffle("sometimes")
