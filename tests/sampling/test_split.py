"""Splits without leakage (hypothesis): time ranges with a gap, spatial blocks with a buffer.

Oracles: brute force in the test (pixel by pixel block lookups, pairwise
distances of the footprints, the delivered batches' times and positions),
never the vectorized code under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.errors import ConfigError, SelectionError
from earthstream.sampling import (
    assign_blocks,
    boxes_in_split,
    build_window_grid,
    grid_split_mask,
    time_split_spans,
)


# -- spatial blocks -----------------------------------------------------------------------
def brute_split(box_lo, box_hi, assignment, block, sizes, buffer) -> int:
    """The split whose blocks hold every pixel of the grown box, by visiting each pixel."""
    ranges = [
        range(max(lo - buffer, 0), min(hi + buffer, size))
        for lo, hi, size in zip(box_lo, box_hi, sizes, strict=True)
    ]
    owners = {
        int(assignment[tuple(p // b for p, b in zip(pixel, block, strict=True))])
        for pixel in itertools.product(*ranges)
    }
    return owners.pop() if len(owners) == 1 else -1


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.tuples(st.integers(4, 24), st.integers(4, 24)),
    block=st.tuples(st.integers(2, 9), st.integers(2, 9)),
    window=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    stride=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    buffer=st.integers(0, 3),
    n_splits=st.integers(2, 3),
    kind=st.sampled_from(["checkerboard", "random"]),
    edges=st.sampled_from(["drop", "pad"]),
    seed=st.integers(0, 2**16),
)
def test_block_splits_are_disjoint_and_buffered(
    sizes, block, window, stride, buffer, n_splits, kind, edges, seed
) -> None:
    assume(window[0] <= sizes[0] and window[1] <= sizes[1])
    grid = build_window_grid(
        {"t": 2, "y": sizes[0], "x": sizes[1]},
        {"y": window[0], "x": window[1]},
        {"y": stride[0], "x": stride[1]},
        edges,
        {"t": 1, "y": 8, "x": 8},
    )
    shape = tuple(-(-s // b) for s, b in zip(sizes, block, strict=True))
    assignment = assign_blocks(shape, n_splits, kind, seed=seed)
    masks = [
        grid_split_mask(grid, {"y": block[0], "x": block[1]}, assignment, s, buffer)
        for s in range(n_splits)
    ]
    # no window in two splits
    assert (np.sum(masks, axis=0) <= 1).all()
    # each window's split is the brute-force one
    ys, xs = grid.axis("y").starts(), grid.axis("x").starts()
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            want = brute_split(
                (y, x), (y + window[0], x + window[1]), assignment, block, sizes, buffer
            )
            got = [s for s in range(n_splits) if masks[s][0, i, j]]
            assert got == ([] if want < 0 else [want])
            assert masks[got[0]][1, i, j] if got else True  # the same at every time step
    # pixels: no shared pixel, and more than 2 * buffer apart (Chebyshev)
    pixels = []
    for s in range(n_splits):
        cover = np.zeros(sizes, dtype=bool)
        for i, j in zip(*np.nonzero(masks[s][0]), strict=True):
            cover[ys[i] : ys[i] + window[0], xs[j] : xs[j] + window[1]] = True
        pixels.append(np.argwhere(cover))
    for a, b in itertools.combinations(pixels, 2):
        if len(a) and len(b):
            gap = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2).min()
            assert gap > 2 * buffer


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    dims=st.integers(1, 3),
    buffer=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
def test_boxes_in_split_matches_brute_force(n, dims, buffer, seed) -> None:
    rng = np.random.default_rng(seed)
    sizes = tuple(int(s) for s in rng.integers(3, 12, dims))
    block = tuple(int(b) for b in rng.integers(1, 5, dims))
    shape = tuple(-(-s // b) for s, b in zip(sizes, block, strict=True))
    assignment = assign_blocks(shape, 3, "random", seed=seed)
    lo = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    hi = lo + rng.integers(1, 4, (n, dims))
    got = boxes_in_split(lo, hi, assignment, block, sizes, buffer)
    for k in range(n):
        assert got[k] == brute_split(lo[k], hi[k], assignment, block, sizes, buffer)


@given(
    shape=st.tuples(st.integers(1, 15), st.integers(1, 15)),
    shares=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=4),
    seed=st.integers(0, 100),
)
def test_random_assignment_has_exact_shares(shape, shares, seed) -> None:
    a = assign_blocks(shape, len(shares), "random", fractions=shares, seed=seed)
    counts = np.bincount(a.ravel(), minlength=len(shares))
    want = np.asarray(shares) / sum(shares) * a.size
    assert (np.abs(counts - want) < 1).all() and counts.sum() == a.size
    assert (a == assign_blocks(shape, len(shares), "random", fractions=shares, seed=seed)).all()


def test_checkerboard_neighbours_differ() -> None:
    a = assign_blocks((5, 7), 2)
    assert (a[1:] != a[:-1]).all() and (a[:, 1:] != a[:, :-1]).all()
    with pytest.raises(ConfigError, match="kind='random'"):
        assign_blocks((2, 2), 2, fractions=[0.5, 0.5])


# -- time ----------------------------------------------------------------------------------
def _times(n: int, holes: list[int]) -> np.ndarray:
    hours = np.array([h for h in range(n + len(holes)) if h not in holes][:n]) * 6
    return np.datetime64("2020-01-01", "ns") + hours.astype("timedelta64[h]")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(12, 60),
    cuts=st.lists(st.integers(1, 59), min_size=1, max_size=3, unique=True),
    gap_steps=st.integers(0, 5),
    holes=st.lists(st.integers(0, 70), max_size=4, unique=True),
    as_steps=st.booleans(),
)
def test_time_spans_are_ordered_and_gapped(n, cuts, gap_steps, holes, as_steps) -> None:
    times = _times(n, holes)
    bounds = sorted(c for c in cuts if c < n - 1)
    assume(bounds)
    edges = [0, *bounds, n]
    ranges = {
        f"s{i}": slice(times[a], times[b - 1]) for i, (a, b) in enumerate(itertools.pairwise(edges))
    }
    gap = gap_steps if as_steps else f"{6 * gap_steps}h"
    try:
        spans = time_split_spans(times, ranges, gap)
    except SelectionError as exc:
        message = str(exc)
        event("refused: a split lies within the gap")
        assert "nothing of it is left" in message
        return
    ordered = list(spans.values())
    for prev, cur in itertools.pairwise(ordered):
        assert prev.stop <= cur.start
        if as_steps:
            assert cur.start - (prev.stop - 1) > gap_steps
        else:
            assert times[cur.start] - times[prev.stop - 1] > np.timedelta64(6 * gap_steps, "h")
        # nothing more than needed was left out
        if cur.embargoed:
            last = cur.start - 1
            if as_steps:
                assert last - (prev.stop - 1) <= gap_steps
            else:
                assert times[last] - times[prev.stop - 1] <= np.timedelta64(6 * gap_steps, "h")


def test_overlapping_time_ranges_are_refused() -> None:
    times = _times(20, [])
    with pytest.raises(SelectionError, match="overlap"):
        time_split_spans(
            times, {"a": slice(None, "2020-01-03"), "b": slice("2020-01-02", None)}, None
        )


def _source(n_times: int, holes: list[int], ny: int = 6, nx: int = 8) -> es.ArraySource:
    times = _times(n_times, holes)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n_times, ny, nx)).astype(np.float32)
    return es.ArraySource(
        {"v": (("time", "y", "x"), data)},
        chunks={"time": 4, "y": 3, "x": 4},
        coords={"time": times, "y": np.arange(ny, dtype=float), "x": np.arange(nx, dtype=float)},
    )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(20, 48),
    cut=st.floats(0.3, 0.7),
    gap=st.integers(0, 4),
    inputs=st.integers(1, 3),
    lead=st.integers(1, 3),
    holes=st.lists(st.integers(0, 50), max_size=2, unique=True),
)
def test_forecast_splits_share_no_time(n, cut, gap, inputs, lead, holes) -> None:
    """Delivered inputs and targets of the splits: disjoint times, more than the gap apart."""
    source = _source(n, holes)
    times = source.coords["time"]
    k = int(cut * n)
    try:
        splits = es.split(
            source,
            {"y": 6, "x": 8},
            time={"train": slice(None, times[k]), "val": slice(times[k + 1], None)},
            gap=f"{6 * gap}h",
            forecast={"inputs": inputs, "lead": f"{6 * lead}h"},
            batch_size=5,
        )
    except (SelectionError, es.errors.ForecastError):
        event("refused: too little left for a forecast window")
        return  # refused, never leaked
    used = {}
    for name, stream in splits.items():
        seen = set()
        for batch in stream:
            seen.update(batch.coords["input_times"].ravel().tolist())
            seen.update(batch.coords["target_times"].ravel().tolist())
        used[name] = np.array(sorted(seen), dtype="datetime64[ns]")
    assert not set(used["train"].tolist()) & set(used["val"].tolist())
    assert used["val"].min() - used["train"].max() > np.timedelta64(6 * gap, "h")


def test_block_split_stream_pixels_and_train_stats(tmp_path) -> None:
    """Every delivered sample pixel belongs to one split; train statistics use only its pixels."""
    import xarray as xr

    path = es.datasets.era5_like(tmp_path / "e.zarr", n_times=4, n_lat=32, n_lon=64)
    blocks = es.SpatialBlocks(
        {"lat": 16, "lon": 16}, {"train": 0.5, "val": 0.25, "test": 0.25}, buffer=1
    )
    splits = es.split(
        path,
        {"lat": 8, "lon": 8},
        {"lat": 4, "lon": 4},
        variables=["t2m"],
        blocks=blocks,
        batch_size=16,
    )
    pixels = {}
    for name, stream in splits.items():
        seen = set()
        for batch in stream:
            for t, y, x in zip(
                batch.starts["time"], batch.starts["lat"], batch.starts["lon"], strict=True
            ):
                seen.update((int(t), int(y + i), int(x + j)) for i in range(8) for j in range(8))
        pixels[name] = seen
        assert stream.n_windows > 0 and sum(stream.excluded.values()) > 0
    for a, b in itertools.combinations(pixels.values(), 2):
        assert not a & b
    dims, mask = splits.footprint("train")
    assert dims == ("lat", "lon")
    covered = {(y, x) for _, y, x in pixels["train"]}
    assert {tuple(p) for p in np.argwhere(mask).tolist()} == covered
    stats = splits.compute_stats(scheduler="sync", progress=False)
    values = xr.open_zarr(path)["t2m"].values[:, mask]
    assert int(stats["t2m"].count) == values.size
    np.testing.assert_allclose(
        float(stats["t2m"].mean), values.astype(np.float64).mean(), rtol=1e-6
    )


def test_time_split_train_stats_use_train_range(tmp_path) -> None:
    import xarray as xr

    path = es.datasets.era5_like(tmp_path / "e.zarr", n_times=24, n_lat=16, n_lon=32)
    splits = es.split(
        path,
        {"lat": 8, "lon": 8},
        variables=["t2m"],
        gap="6h",
        time={"train": slice(None, "2020-01-03"), "test": slice("2020-01-04", None)},
    )
    stats = splits.compute_stats(scheduler="sync", progress=False)
    train = xr.open_zarr(path)["t2m"].sel(time=slice(None, "2020-01-03")).values
    assert int(stats["t2m"].count) == train.size
    np.testing.assert_allclose(float(stats["t2m"].mean), train.astype(np.float64).mean(), rtol=1e-6)
    assert splits.time["test"].embargoed == 1  # 2020-01-04T00 is 6 h after the last train step
    assert "embargoed" in repr(splits)
