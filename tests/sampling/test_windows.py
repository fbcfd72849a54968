"""Window math against brute force, over many shapes (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earthstream.errors import ConfigError, DimensionError, WindowError
from earthstream.sampling import AxisWindows, build_window_grid


def brute_starts(size: int, length: int, stride: int, edges: str) -> list[int]:
    """Window starts by definition: drop keeps windows that fit; pad keeps starting
    windows until one reaches the end (never one starting past the end)."""
    starts = []
    s = 0
    while s < size:
        if s + length <= size or (edges == "pad" and (not starts or starts[-1] + length < size)):
            starts.append(s)
        s += stride
    return starts


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 60),
    length=st.integers(1, 70),
    stride=st.integers(1, 30),
    chunk=st.integers(1, 25),
    edges=st.sampled_from(["drop", "pad"]),
)
def test_axis_windows(size: int, length: int, stride: int, chunk: int, edges: str) -> None:
    ax = AxisWindows("d", size, length, stride, squeeze=False, chunk=chunk, edges=edges)
    expected = brute_starts(size, length, stride, edges)
    assert ax.starts().tolist() == expected
    if edges == "pad" and stride <= length:
        covered = np.zeros(size, bool)
        for s in expected:
            covered[s : s + length] = True
        assert covered.all()  # pad covers every element
    # chunk groups partition the windows by the chunk of their start
    lo, hi = ax.block_ranges()
    ks = [k for a, b in zip(lo, hi, strict=True) for k in range(a, b)]
    assert ks == list(range(ax.count))
    for a, b in zip(lo, hi, strict=True):
        assert len({expected[k] // chunk for k in range(a, b)}) == 1


@settings(max_examples=100, deadline=None)
@given(
    shape=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    data=st.data(),
)
def test_grid_blocks_partition_windows(shape: list[int], data: st.DataObject) -> None:
    dims = [f"d{i}" for i in range(len(shape))]
    sizes = dict(zip(dims, shape, strict=True))
    window = {d: data.draw(st.integers(1, n)) for d, n in sizes.items() if data.draw(st.booleans())}
    stride = {d: data.draw(st.integers(1, 5)) for d in dims if data.draw(st.booleans())}
    chunks = {d: data.draw(st.integers(1, n)) for d, n in sizes.items()}
    grid = build_window_grid(sizes, window, stride, "drop", chunks)
    n_blocks = int(np.prod(grid.block_counts()))
    ids = grid.block_windows(np.arange(n_blocks))
    assert sorted(ids.tolist()) == list(range(grid.n_windows))
    assert grid.block_sizes().sum() == grid.n_windows
    starts = grid.starts_of(np.arange(grid.n_windows))
    for a, ax in enumerate(grid.axes):
        assert (starts[:, a] + ax.length <= ax.size).all()
        assert (starts[:, a] % ax.stride == 0).all()


def test_iterated_dims_and_defaults() -> None:
    grid = build_window_grid(
        {"time": 10, "lat": 8, "lon": 8}, {"lat": 4, "lon": None}, {"time": 3}, "drop", {}
    )
    assert grid.counts == (4, 2, 1)
    time, lat, lon = grid.axes
    assert time.squeeze and time.length == 1 and time.stride == 3
    assert not lat.squeeze and lat.stride == 4
    assert lon.length == 8 and lon.whole


@pytest.mark.parametrize(
    ("window", "stride", "edges", "error", "match"),
    [
        ({"latitude": 4}, None, "drop", DimensionError, r"latitude.*Did you mean 'lat'"),
        ({"lat": 4}, {"lot": 2}, "drop", DimensionError, "stride names dim 'lot'"),
        ({"lat": 64}, None, "drop", WindowError, r"longer than dim 'lat' \(8\).*edges='pad'"),
        ({"lat": 0}, None, "drop", WindowError, "at least 1"),
        ({"lat": 4}, {"lat": 0}, "drop", WindowError, r"stride\['lat'\]=0 must be at least 1"),
        ({"lat": 4}, {"lat": -2}, "drop", WindowError, "must be at least 1"),
        ({"lat": 2.5}, None, "drop", WindowError, "whole number"),
        ({"lat": 4}, None, "wrap", ConfigError, "edges='wrap'"),
        ([4, 4], None, "drop", ConfigError, "mapping from dim name"),
    ],
)
def test_errors(window, stride, edges, error, match) -> None:
    with pytest.raises(error, match=match):
        build_window_grid({"lat": 8, "lon": 8}, window, stride, edges, {})


def test_pad_allows_long_window() -> None:
    grid = build_window_grid({"lat": 8}, {"lat": 64}, None, "pad", {})
    assert grid.counts == (1,)
