"""MinValid: windows left out by their valid fraction, against a brute-force count on
xarray's read of the same store (window by window, with NumPy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import earthstream as es
from earthstream.errors import ConfigError, GridMismatchError


@pytest.fixture(scope="module")
def holes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float32 store with time-varying NaN holes (clouds) and a fixed one (land)."""
    rng = np.random.default_rng(1)
    t, ny, nx = 7, 20, 30
    sst = rng.normal(290, 3, (t, ny, nx)).astype(np.float32)
    sst[:, 12:, :9] = np.nan  # "land"
    for k in range(t):  # "clouds"
        y, x = rng.integers(0, ny - 6), rng.integers(0, nx - 8)
        sst[k, y : y + 6, x : x + 8] = np.nan
    time = np.datetime64("2022-01-01", "ns") + np.arange(t) * np.timedelta64(1, "D")
    ds = xr.Dataset(
        {"sst": (("time", "lat", "lon"), sst)},
        coords={"time": time, "lat": np.linspace(50, 31, ny), "lon": np.arange(nx) * 0.5},
    )
    path = tmp_path_factory.mktemp("valid") / "sst.zarr"
    ds.to_zarr(path, zarr_format=3, encoding={"sst": {"chunks": (2, 8, 11)}})
    return path


def brute(valid: np.ndarray, grid, dims: tuple[str, ...]) -> np.ndarray:
    """Valid fraction of every window of ``grid`` over ``dims`` of ``valid``, by slicing."""
    axes = [grid.axis(d) for d in dims]
    out = np.zeros([a.count for a in axes])
    area = np.prod([a.length for a in axes])
    for index in np.ndindex(*out.shape):
        cut = tuple(
            slice(int(a.starts()[k]), int(a.starts()[k]) + a.length)
            for a, k in zip(axes, index, strict=True)
        )
        out[index] = valid[cut].sum() / area
    return out


@pytest.mark.parametrize(
    ("window", "stride", "edges"),
    [
        ({"lat": 5, "lon": 6}, {"lat": 3, "lon": 4}, "pad"),
        ({"time": 2, "lat": 8, "lon": 8}, {"time": 1, "lat": 8, "lon": 8}, "drop"),
    ],
)
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9, 1.0])
def test_nan_fraction_against_brute_force(holes, window, stride, edges, threshold) -> None:
    stream = es.Stream(holes, window, stride, edges=edges, windows=es.MinValid(threshold, "sst"))
    grid = stream.order.grid
    valid = ~np.isnan(xr.open_zarr(holes)["sst"].values)
    fraction = brute(valid, grid, ("time", "lat", "lon"))
    want = np.flatnonzero((fraction >= threshold).reshape(-1))
    np.testing.assert_array_equal(stream.subset.ids, want)
    excluded = grid.n_windows - len(want)
    assert sum(stream.excluded.values()) == excluded
    assert f"{excluded:,}" in repr(stream) or excluded == 0
    info = stream.subset.info
    assert info["chunks_decoded"] > 0 and info["seconds"] >= 0
    # only kept windows are served, each once
    served = sorted(i for b in stream for i in b.window_ids.tolist())
    assert served == want.tolist()


def test_static_mask_from_another_store(tmp_path: Path) -> None:
    weather = es.datasets.era5_like(tmp_path / "w.zarr", n_times=5, n_lat=32, n_lon=64)
    static = es.datasets.static_fields(tmp_path / "s.zarr", like=weather)
    band = {"lat": slice(60, -30)}
    land = es.MinValid(0.4, "lsm", source=static, where=lambda lsm: lsm >= 0.5)
    stream = es.Stream(
        weather,
        {"lat": 8, "lon": 8},
        {"lat": 4, "lon": 4},
        variables=["t2m"],
        sel=band,
        windows=land,
        samples_per_epoch=40,
        seed=1,
    )
    lsm = xr.open_zarr(static)["lsm"].sel(band).values >= 0.5
    grid = stream.order.grid
    fraction = brute(lsm, grid, ("lat", "lon"))
    keep = np.broadcast_to(fraction >= 0.4, grid.counts)
    np.testing.assert_array_equal(stream.subset.mask(), keep)
    served = {i for b in stream for i in b.window_ids.tolist()}
    assert len(served) == 40 and served <= set(stream.subset.ids.tolist())
    # the same rule through a split: excluded counts per reason
    splits = es.split(
        weather,
        {"lat": 8, "lon": 8},
        variables=["t2m"],
        windows=land,
        time={"train": slice(None, "2020-01-01T12"), "val": slice("2020-01-01T18", None)},
    )
    assert all("valid fraction of lsm < 0.4" in s.excluded for s in splits.values())


def test_mask_on_another_grid_is_refused(tmp_path: Path) -> None:
    weather = es.datasets.era5_like(tmp_path / "w.zarr", n_times=3, n_lat=16, n_lon=32)
    other = es.datasets.era5_like(tmp_path / "o.zarr", n_times=3, n_lat=20, n_lon=32)
    static = es.datasets.static_fields(tmp_path / "s.zarr", like=other)
    with pytest.raises(GridMismatchError, match="does not contain"):
        es.Stream(
            weather,
            {"lat": 8, "lon": 8},
            variables=["t2m"],
            windows=es.MinValid(0.5, "lsm", source=static),
        )
    with pytest.raises(ConfigError, match="name the variable"):
        es.Stream(weather, {"lat": 8, "lon": 8}, variables=["t2m", "u10"], windows=es.MinValid(0.5))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        es.MinValid(1.5)
