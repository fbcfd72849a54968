"""Window subsets and random windows per epoch (hypothesis): reproducible in (seed, epoch),
exactly once where promised, uniform, sharded and resumed as every other order."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.errors import ConfigError
from earthstream.sampling import (
    EpochPlan,
    OrderSpec,
    WindowSubset,
    build_window_grid,
    label_chip_positions,
)

grids = st.builds(
    lambda n_t, n_y, w, s, c_t, c_y: build_window_grid(
        {"t": n_t, "y": n_y}, {"y": min(w, n_y)}, {"y": s}, "drop", {"t": c_t, "y": c_y}
    ),
    st.integers(1, 12),
    st.integers(1, 20),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 8),
)


def epoch_ids(spec: OrderSpec, epoch: int) -> list[int]:
    order = spec.epoch(epoch)
    return [i for _, ids in order.iter_batches(range(order.n_batches)) for i in ids.tolist()]


@settings(max_examples=120, deadline=None)
@given(
    grid=grids,
    shuffle=st.sampled_from(["none", "chunks", "full"]),
    seed=st.integers(0, 2**32 - 1),
    batch_size=st.integers(1, 9),
    buffer=st.integers(1, 4),
    keep=st.integers(0, 2**32 - 1),
)
def test_subset_epochs_serve_each_kept_window_once(grid, shuffle, seed, batch_size, buffer, keep):
    mask = np.random.default_rng(keep).random(grid.n_windows) < 0.6
    subset = WindowSubset.from_mask(grid, mask, "test")
    spec = OrderSpec(grid, shuffle, seed, batch_size, False, buffer, subset=subset)
    ids = epoch_ids(spec, 3)
    assert sorted(ids) == subset.ids.tolist()
    assert ids == epoch_ids(spec, 3)
    assert subset.n_excluded == grid.n_windows - subset.n


@settings(max_examples=150, deadline=None)
@given(
    grid=grids,
    shuffle=st.sampled_from(["none", "chunks", "full"]),
    seed=st.integers(0, 2**32 - 1),
    batch_size=st.integers(1, 9),
    buffer=st.integers(1, 4),
    replacement=st.booleans(),
    fraction=st.floats(0.05, 3.0),
    subset_seed=st.one_of(st.none(), st.integers(0, 100)),
    world=st.integers(1, 4),
)
def test_random_windows(
    grid, shuffle, seed, batch_size, buffer, replacement, fraction, subset_seed, world
):
    subset = None
    pool = np.arange(grid.n_windows)
    if subset_seed is not None:
        mask = np.random.default_rng(subset_seed).random(grid.n_windows) < 0.5
        if not mask.any():
            mask[0] = True
        subset = WindowSubset.from_mask(grid, mask)
        pool = subset.ids
    samples = max(1, int(fraction * len(pool)))
    if not replacement:
        samples = min(samples, len(pool))
    spec = OrderSpec(
        grid,
        shuffle,
        seed,
        batch_size,
        False,
        buffer,
        subset=subset,
        samples=samples,
        replacement=replacement,
    )
    ids = epoch_ids(spec, 2)
    assert len(ids) == samples == spec.n_windows
    assert set(ids) <= set(pool.tolist())
    if not replacement:
        assert len(set(ids)) == samples  # distinct within the epoch
    # a pure function of (seed, epoch): the same twice, read in any batch order
    assert ids == epoch_ids(spec, 2)
    order = spec.epoch(2)
    backwards = [order.batch(j).tolist() for j in reversed(range(order.n_batches))]
    assert [i for b in reversed(backwards) for i in b] == ids
    # ranks split the batches: their union is the epoch, each batch once
    plan = EpochPlan.full(order.n_batches, world, "drop")
    served = []
    for rank in range(world):
        batches, _ = plan.rank_batches(rank)
        served += [j for j, _ in order.iter_batches(batches)]
    assert sorted(served) == sorted(set(served)) and len(served) == plan.steps * world


def test_random_windows_change_with_epoch_and_seed() -> None:
    grid = build_window_grid({"t": 10, "y": 30}, {"y": 4}, {"y": 1}, "drop", {"t": 2, "y": 8})
    for shuffle in ("none", "chunks", "full"):
        spec = OrderSpec(grid, shuffle, 1, 8, samples=40)
        assert epoch_ids(spec, 0) != epoch_ids(spec, 1)
        other = OrderSpec(grid, shuffle, 2, 8, samples=40)
        assert epoch_ids(spec, 0) != epoch_ids(other, 0)


@pytest.mark.parametrize("shuffle", ["none", "chunks", "full"])
@pytest.mark.parametrize("replacement", [False, True])
def test_random_windows_are_uniform(shuffle: str, replacement: bool) -> None:
    """Each window's frequency over many epochs against uniform: Pearson's chi-square
    statistic below its mean + 6 standard deviations (df + 6 sqrt(2 df))."""
    grid = build_window_grid({"t": 6, "y": 12}, {"y": 3}, {"y": 1}, "drop", {"t": 2, "y": 5})
    n = grid.n_windows  # 60
    spec = OrderSpec(grid, shuffle, 7, 16, samples=20, replacement=replacement, shuffle_buffer=2)
    counts = Counter(i for e in range(400) for i in epoch_ids(spec, e))
    observed = np.array([counts[i] for i in range(n)], dtype=float)
    expected = 400 * 20 / n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    df = n - 1
    assert chi2 < df + 6 * np.sqrt(2 * df), chi2


def test_sample_counts_are_checked() -> None:
    grid = build_window_grid({"y": 10}, {"y": 2}, None, "drop", {"y": 5})
    with pytest.raises(ConfigError, match="replacement=True"):
        OrderSpec(grid, samples=6)
    assert OrderSpec(grid, samples=6, replacement=True).n_windows == 6
    with pytest.raises(ConfigError, match="at least 1"):
        OrderSpec(grid, samples=0)


def test_stream_random_windows_decode_once_and_resume(era5_v3, open_xr) -> None:
    """samples_per_epoch through a Stream: each chunk decoded once, values as xarray's,
    and a resumed epoch continues exactly."""
    make = lambda: es.Stream(  # noqa: E731
        era5_v3,
        {"lat": 4, "lon": 4},
        {"lat": 1, "lon": 1},
        variables=["t2m"],
        samples_per_epoch=150,
        batch_size=16,
        seed=3,
        shuffle_buffer=2,
    )
    stream = make()
    assert "150 random windows" in repr(stream)
    ref = open_xr(era5_v3)["t2m"].values
    batches = list(stream)
    assert sum(b.size for b in batches) == 150
    for b in batches[:3]:
        for k in range(b.size):
            t, y, x = (int(b.starts[d][k]) for d in ("time", "lat", "lon"))
            np.testing.assert_array_equal(b["t2m"][k], ref[t, y : y + 4, x : x + 4])
    # one chunk per time step here: each sampled step's chunk decoded once
    steps = {int(t) for b in batches for t in b.starts["time"]}
    assert stream.report.chunks_decoded == len(steps)
    resumed = make()
    it = iter(resumed)
    assert [next(it).index for _ in range(3)] == [0, 1, 2]
    state = resumed.state_dict()
    assert state["settings"]["samples_per_epoch"] == 150
    fresh = make()
    fresh.load_state_dict(state)
    assert [b.window_ids.tolist() for b in fresh] == [b.window_ids.tolist() for b in batches[3:]]
    other = es.Stream(
        era5_v3,
        {"lat": 4, "lon": 4},
        {"lat": 1, "lon": 1},
        variables=["t2m"],
        samples_per_epoch=140,
        batch_size=16,
        seed=3,
        shuffle_buffer=2,
    )
    with pytest.raises(es.errors.ResumeError):
        other.load_state_dict(state)


# -- label-centred, class-balanced chips ---------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    n_classes=st.integers(1, 4),
    samples=st.integers(1000, 3000),
    chip=st.tuples(st.integers(1, 32), st.integers(1, 32)),
    shape=st.tuples(st.integers(32, 200), st.integers(32, 200)),
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 5),
    jitter=st.booleans(),
    raw_shares=st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4),
)
def test_label_chips_balance_classes(
    n, n_classes, samples, chip, shape, seed, epoch, jitter, raw_shares
):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-5, max(shape) + 5, (n, 2))
    classes = rng.integers(0, n_classes, n)
    pixel = np.floor(centers).astype(int)
    inside = (pixel >= 0).all(1) & (pixel[:, 0] < shape[0]) & (pixel[:, 1] < shape[1])
    present = sorted(set(classes[inside].tolist()))
    if not present:
        with pytest.raises(ConfigError):
            label_chip_positions(centers, classes, grid_shape=shape, chip=chip, samples=samples)
        return
    shares = {c: raw_shares[c] for c in present}
    got = label_chip_positions(
        centers,
        classes,
        grid_shape=shape,
        chip=chip,
        samples=samples,
        shares=shares,
        seed=seed,
        epoch=epoch,
        jitter=jitter,
    )
    total = sum(shares.values())
    measured = got.shares()
    for c in present:  # within 1 / samples of the requested share (far inside 5 points)
        assert abs(measured.get(c, 0.0) - shares[c] / total) <= 1 / samples + 1e-12
    # each chip lies on the grid and holds its feature's centre pixel
    f = pixel[got.features]
    assert (got.rows >= 0).all() and (got.rows + chip[0] <= shape[0]).all()
    assert (got.cols >= 0).all() and (got.cols + chip[1] <= shape[1]).all()
    assert ((got.rows <= f[:, 0]) & (f[:, 0] < got.rows + chip[0])).all()
    assert ((got.cols <= f[:, 1]) & (f[:, 1] < got.cols + chip[1])).all()
    assert (classes[got.features] == got.classes).all() and inside[got.features].all()
    assert got.outside == int((~inside).sum())
    again = label_chip_positions(
        centers,
        classes,
        grid_shape=shape,
        chip=chip,
        samples=samples,
        shares=shares,
        seed=seed,
        epoch=epoch,
        jitter=jitter,
    )
    assert (again.rows == got.rows).all() and (again.features == got.features).all()
    ids = got.window_ids(shape, chip)
    counts = (shape[0] - chip[0] + 1, shape[1] - chip[1] + 1)
    assert (np.unravel_index(ids, counts)[0] == got.rows).all()
