"""compute_stats over sel/isel selections: NumPy on xarray's selection is the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import DimensionError, SelectionError


@pytest.fixture(scope="module")
def hadisst_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A 1-degree SST field stored as HadISST stores it: latitude from 89.5 down to -89.5,
    land (and sea ice) as NaN, written by xarray (Zarr v2)."""
    import xarray as xr

    rng = np.random.default_rng(7)
    lat = np.linspace(89.5, -89.5, 180)
    lon = np.linspace(-179.5, 179.5, 360)
    sst = 28.0 * np.cos(np.deg2rad(lat))[:, None] + rng.normal(0, 1.5, (4, 180, 360))
    land = (np.sin(np.deg2rad(lon))[None, :] * np.cos(np.deg2rad(3 * lat))[:, None]) > 0.35
    sst[:, land] = np.nan
    sst[:, :15] = np.nan  # sea ice
    times = np.array(["1979-01-16", "1979-02-15", "2015-12-16", "2016-01-16"], "datetime64[ns]")
    ds = xr.Dataset(
        {"sst": (("time", "latitude", "longitude"), sst.astype("f4"))},
        coords={"time": times, "latitude": lat, "longitude": lon},
    )
    path = tmp_path_factory.mktemp("hadisst") / "hadisst.zarr"
    ds.to_zarr(path, zarr_format=2, encoding={"sst": {"chunks": (1, 45, 90)}})
    return path, xr.open_zarr(path, chunks=None).load()


def _check(stats: Any, values: np.ndarray) -> None:
    valid = values[np.isfinite(values)].astype("f8")
    assert int(stats.count) == valid.size
    np.testing.assert_allclose(stats.mean, valid.mean(), rtol=1e-10)
    np.testing.assert_allclose(stats.std, valid.std(), rtol=1e-9)
    assert float(stats.min) == valid.min() and float(stats.max) == valid.max()


def test_descending_latitude_band_as_xarray_selects_it(hadisst_like: tuple[Path, Any]) -> None:
    """The issue's case: ``slice(29.5, -29.5)`` on a latitude stored 89.5 -> -89.5 counts
    the tropics' values (it raised "selects nothing"), and ``slice(-29.5, 29.5)``
    raises instead of counting all 180 rows."""
    path, ds = hadisst_like
    band = {"latitude": slice(29.5, -29.5)}
    stats = es.compute_stats(path, "sst", sel=band, scheduler="sync", progress=False)
    expect = ds["sst"].sel(band).values
    _check(stats["sst"], expect)
    whole = int(np.isfinite(ds["sst"].values).sum())
    assert int(stats["sst"].count) < whole
    assert stats.source["selection"] == {"latitude": [60, 120]}
    with pytest.raises(SelectionError, match=r"runs descending.*Write slice\(29.5, -29.5\)"):
        es.compute_stats(
            path,
            "sst",
            sel={"latitude": slice(-29.5, 29.5)},
            scheduler="sync",
            progress=False,
        )


def test_periods_by_partial_dates(hadisst_like: tuple[Path, Any]) -> None:
    path, ds = hadisst_like
    for period in (slice("1979", "2015"), slice("2016", None), slice("1979-02", "2015-12")):
        stats = es.compute_stats(
            path, "sst", sel={"time": period}, scheduler="sync", progress=False
        )
        _check(stats["sst"], ds["sst"].sel(time=period).values)


def test_deprecated_selection_warns_with_what_to_write(hadisst_like: tuple[Path, Any]) -> None:
    path, ds = hadisst_like
    with pytest.warns(DeprecationWarning, match=r"write sel=\{'latitude': slice\(29.5, -29.5\)\}"):
        old = es.compute_stats(
            path,
            "sst",
            selection={"latitude": slice(29.5, -29.5)},
            scheduler="sync",
            progress=False,
        )
    _check(old["sst"], ds["sst"].sel(latitude=slice(29.5, -29.5)).values)
    with pytest.warns(DeprecationWarning, match=r"isel=\{'time': slice\(0, 2\)\}"):
        first = es.compute_stats(
            path, "sst", selection={"time": (0, 2)}, scheduler="sync", progress=False
        )
    _check(first["sst"], ds["sst"].isel(time=slice(0, 2)).values)
    with pytest.raises(es.errors.ConfigError, match="not selection= as well"):
        es.compute_stats(path, selection={"time": (0, 2)}, isel={"time": 0}, scheduler="sync")


def test_scalar_selection_drops_a_per_dim(era5_tiled: Path, open_xr: Any) -> None:
    ds = open_xr(era5_tiled)
    one = es.compute_stats(era5_tiled, "z", sel={"level": 850}, scheduler="sync", progress=False)
    assert one["z"].shape == ()
    _check(one["z"], ds["z"].sel(level=850).values)
    two = es.compute_stats(
        era5_tiled, "z", sel={"level": slice(850, 1000)}, scheduler="sync", progress=False
    )
    assert two["z"].shape == (2,) and two["z"].labels["level"] == (850, 1000)
    for k, level in enumerate((850, 1000)):
        assert int(two["z"].count[k]) == ds["z"].sel(level=level).size
    with pytest.raises(DimensionError, match="drops it"):
        es.compute_stats(
            era5_tiled, "z", per="level", sel={"level": 850}, scheduler="sync", progress=False
        )


def test_normalizing_a_selection_needs_statistics_of_it(era5_tiled: Path, open_xr: Any) -> None:
    """Per-level statistics index the levels a stream selected, never the store's first ones."""
    sel = {"level": slice(850, 1000)}
    stream = es.Stream(era5_tiled, {"lat": 5, "lon": 5, "level": None}, variables="z", sel=sel)
    whole = es.compute_stats(era5_tiled, "z", scheduler="sync", progress=False)
    with pytest.raises(es.errors.StatsMismatchError, match="have 3 'level' entries"):
        es.Normalizer(whole).check_stream(stream)
    lower = es.compute_stats(
        era5_tiled, "z", isel={"level": slice(0, 2)}, scheduler="sync", progress=False
    )
    with pytest.raises(es.errors.StatsMismatchError, match=r"\[500, 850\].*\[850, 1000\]"):
        es.Normalizer(lower).check_stream(stream)
    same = es.compute_stats(era5_tiled, "z", sel=sel, scheduler="sync", progress=False)
    norm = es.Normalizer(same)
    norm.check_stream(stream)
    batch = next(iter(stream))
    out = norm.apply_numpy(batch)
    ds = open_xr(era5_tiled)
    for k, level in enumerate((850, 1000)):
        values = ds["z"].sel(level=level).values
        expect = (batch["z"][:, k] - values.mean()) / values.std()
        np.testing.assert_allclose(out["z"][:, k], expect, rtol=1e-5, atol=1e-5)
