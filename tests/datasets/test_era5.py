"""The ERA5-like generator: real Zarr, deterministic, reused when unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import ConfigError


def test_deterministic_and_reused(tmp_path: Path) -> None:
    kw = {"n_times": 6, "n_lat": 8, "n_lon": 16, "variables": ["t2m", "z"]}
    a = es.datasets.era5_like(tmp_path / "a.zarr", **kw)
    b = es.datasets.era5_like(tmp_path / "b.zarr", **kw)
    sa, sb = es.open_zarr(a), es.open_zarr(b)
    for name, index in (("t2m", (3, 0, 0)), ("z", (3, 0, 0, 0))):
        np.testing.assert_array_equal(sa.read_chunk(name, index), sb.read_chunk(name, index))
    mtime = (a / "zarr.json").stat().st_mtime_ns
    es.datasets.era5_like(tmp_path / "a.zarr", **kw)  # same recipe: reused
    assert (a / "zarr.json").stat().st_mtime_ns == mtime
    es.datasets.era5_like(tmp_path / "a.zarr", **{**kw, "seed": 1})  # new recipe: rewritten
    assert (a / "zarr.json").stat().st_mtime_ns != mtime


def test_plausible_fields(tmp_path: Path) -> None:
    import xarray as xr

    path = es.datasets.era5_like(tmp_path / "p.zarr", n_times=8, n_lat=19, n_lon=36)
    ds = xr.open_zarr(path)
    t2m = ds.t2m.values
    assert t2m.min() > 200 and t2m.max() < 330
    equator, pole = t2m[:, 9].mean(), t2m[:, 0].mean()
    assert equator > pole + 20  # latitude gradient
    assert ds.z.sel(level=500).mean() > ds.z.sel(level=1000).mean()  # higher level, higher z
    assert str(ds.time.values[1]) == "2020-01-01T06:00:00.000000000"


def test_rejects_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose from"):
        es.datasets.era5_like(tmp_path / "x.zarr", variables=["precip"])
    with pytest.raises(ConfigError, match="shards need zarr_format=3"):
        es.datasets.era5_like(tmp_path / "x.zarr", zarr_format=2, shards={"time": 4})


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_packed_int16_decodes_as_xarray(tmp_path: Path, zarr_format: int) -> None:
    """packed=True stores CF-packed int16 that xarray and earthstream decode alike, within
    the packing's resolution of the float fields."""
    import xarray as xr

    kw = {"n_times": 4, "n_lat": 8, "n_lon": 16, "variables": ["t2m", "z"]}
    path = es.datasets.era5_like(
        tmp_path / "packed.zarr", packed=True, zarr_format=zarr_format, **kw
    )
    plain = es.datasets.era5_like(tmp_path / "plain.zarr", zarr_format=zarr_format, **kw)
    ds = xr.open_zarr(path, consolidated=False)
    source = es.open_zarr(path, decoded_dtype="xarray")
    assert source.variables["t2m"].stored_dtype == np.int16
    assert source.variables["t2m"].dtype == ds.t2m.dtype == np.float64
    for name in ("t2m", "z"):
        info = source.variables[name]
        index = (1,) + (0,) * (info.ndim - 1)
        chunk = source.read_chunk(name, index)
        assert chunk is not None
        np.testing.assert_array_equal(chunk[0], ds[name].values[1])
        scale = ds[name].encoding["scale_factor"]
        reference = xr.open_zarr(plain, consolidated=False)[name].values[1]
        assert np.abs(chunk[0] - reference).max() <= scale / 2 + 1e-6 * np.abs(reference).max()
