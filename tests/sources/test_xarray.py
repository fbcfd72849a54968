"""Streaming xarray Datasets and DataArrays: every sample equals xarray's read of the window.

The oracle is xarray itself (``Dataset.isel`` of the same window, loaded by xarray's
backend, CF decoding and dask), on Datasets opened from Zarr (the fast path) and from
NetCDF4 written by h5netcdf (the general path).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import earthstream as es

from ..conftest import assert_batch_matches


def _all_samples(stream: es.Stream, ds: Any, window: dict[str, int]) -> int:
    n = 0
    for batch in stream:
        assert_batch_matches(batch, ds, window)
        n += batch.size
    assert n == stream.n_windows
    return n


# -- Zarr-backed: the fast path ----------------------------------------------------------------
def test_lazy_zarr_dataset_takes_the_fast_path(era5_v3: Path) -> None:
    ds = xr.open_zarr(era5_v3, chunks=None)
    source = es.open_zarr(ds)
    assert isinstance(source, es.ZarrSource) and not source.selection
    assert sorted(source.variables) == sorted(ds.data_vars)
    assert source.variables["z"].chunks == ds["z"].encoding["chunks"]
    window = {"lat": 8, "lon": 8}
    stream = es.Stream(ds[["t2m", "u10"]], window, shuffle="chunks", batch_size=8)
    assert isinstance(stream.source, es.ZarrSource)
    _all_samples(stream, ds.load(), window)
    report = stream.report
    assert report is not None  # one time step per chunk: each chunk decoded once
    assert report.chunks_decoded == ds.sizes["time"] * 2


@pytest.mark.parametrize(
    ("cut", "names"),
    [
        (lambda ds: ds.sel(lat=slice(60, -60)).isel(time=slice(2, 8)), ["t2m", "u10"]),
        (
            lambda ds: ds.isel(time=slice(-4, None), lon=slice(3, 29)).sel(lat=slice(45, -80)),
            ["t2m", "u10"],
        ),
        (lambda ds: ds.sel(time=slice("2020-01-01T12", "2020-01-02"), level=850), ["z"]),
        (lambda ds: ds.sel(level=[850])[["z"]].isel(level=0), ["z"]),
    ],
)
def test_sliced_zarr_dataset_streams_its_selection_once(
    era5_v3: Path, cut: Any, names: list[str]
) -> None:
    ds = cut(xr.open_zarr(era5_v3, chunks=None))[names]
    source = es.open_zarr(ds)
    assert isinstance(source, es.ZarrSource) and source.selection, getattr(source, "why", "")
    window = {"lat": 3, "lon": 5}
    stream = es.Stream(ds, window, shuffle="chunks", batch_size=5, seed=2)
    reference = ds.load()
    if "level" in reference.coords and "level" not in reference.dims:
        # a single level selected: xarray drops the dim, the stream iterates its one position
        reference = reference.expand_dims("level", axis=1)
    _all_samples(stream, reference, window)
    report = stream.report
    assert report is not None and report.chunks_decoded == ds.sizes["time"] * len(names)


def test_dataarray_and_dask_backed(era5_v3: Path) -> None:
    da = xr.open_zarr(era5_v3, chunks=None)["t2m"].isel(lon=slice(4, 20))
    source = es.open_xarray(da)
    assert isinstance(source, es.ZarrSource) and list(source.variables) == ["t2m"]
    dask_ds = xr.open_zarr(era5_v3)  # dask arrays as open_zarr made them: still the store
    assert isinstance(es.open_zarr(dask_ds), es.ZarrSource)
    cut = dask_ds.sel(lat=slice(50, -50))  # a dask graph on top: read through xarray
    general = es.open_zarr(cut)
    assert isinstance(general, es.XarraySource) and "dask" in general.why
    assert general.variables["t2m"].chunks == (1, cut.sizes["lat"], cut.sizes["lon"])
    window = {"lat": 4, "lon": 4}
    _all_samples(es.Stream(cut[["t2m"]], window, batch_size=9), cut.load(), window)
    _all_samples(es.Stream(da, window, batch_size=9), da.to_dataset().load(), window)


def test_loaded_or_edited_datasets_read_what_the_user_holds(era5_v3: Path) -> None:
    ds = xr.open_zarr(era5_v3, chunks=None)[["t2m"]].load()
    ds["t2m"][0, :, :] = -1.0
    source = es.open_zarr(ds)
    assert isinstance(source, es.XarraySource) and "memory" in source.why
    window = {"lat": 8, "lon": 16}
    stream = es.Stream(ds, window, shuffle=False, batch_size=4)
    first = next(iter(stream))
    assert (first["t2m"][first.starts["time"] == 0] == -1.0).all()
    _all_samples(stream, ds, window)
    lazy = xr.open_zarr(era5_v3, chunks=None)[["t2m"]]
    edited = lazy.assign_coords(lon=lazy["lon"] + 0.5)  # coordinates not the store's
    assert isinstance(es.open_zarr(edited), es.XarraySource)


def test_cf_packed_zarr_is_decoded_as_xarray_decodes_it(tmp_path: Path) -> None:
    """A packed Zarr variable xarray decoded streams through the Zarr fast path, which
    decodes CF itself: the values are xarray's (NaN for the fill value), as float32,
    each chunk decoded once."""
    path = tmp_path / "packed.zarr"
    _packed(seed=3).to_zarr(path, zarr_format=2)
    ds = xr.open_zarr(path, chunks=None)
    source = es.open_zarr(ds)
    assert isinstance(source, es.ZarrSource)
    assert source.variables["t"].dtype == np.float32
    stream = es.Stream(ds, {"lat": 4, "lon": 6}, shuffle=False, batch_size=16)
    reference = ds.load()
    for batch in stream:
        for i in range(batch.size):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            ref = reference["t"].isel(time=t, lat=slice(y, y + 4), lon=slice(x, x + 6)).values
            np.testing.assert_array_equal(batch["t"][i], ref.astype(np.float32))
    assert stream.report is not None and max(stream.report.decodes.values()) == 1


def test_zarr_opened_raw_takes_the_general_path(tmp_path: Path) -> None:
    """With mask_and_scale=False xarray leaves the stored integers and CF attributes:
    the stream delivers the same raw values, through xarray."""
    path = tmp_path / "packed.zarr"
    _packed(seed=4).to_zarr(path, zarr_format=3)
    ds = xr.open_zarr(path, chunks=None, mask_and_scale=False)
    source = es.open_zarr(ds)
    assert isinstance(source, es.XarraySource) and "mask_and_scale=False" in source.why
    stream = es.Stream(ds[["t"]], {"lat": 10, "lon": 16}, shuffle=False, batch_size=12)
    (batch,) = list(stream)
    np.testing.assert_array_equal(batch["t"], ds["t"].values)
    assert batch["t"].dtype == ds["t"].dtype


def test_stores_without_a_path_stream_through_the_store_object() -> None:
    """A Dataset over a MemoryStore (no path or URL) reads chunk bytes through the store."""
    import zarr

    store = zarr.storage.MemoryStore()
    values = np.random.default_rng(3).normal(size=(4, 6)).astype("f4")
    xr.Dataset({"v": (("t", "x"), values)}).to_zarr(store, zarr_format=3)
    ds = xr.open_zarr(store, chunks=None).isel(x=slice(1, 5))
    source = es.open_zarr(ds)
    assert isinstance(source, es.ZarrSource)
    stream = es.Stream(ds, {"x": 4}, shuffle=False, batch_size=4)
    (batch,) = list(stream)
    np.testing.assert_array_equal(batch["v"], ds["v"].values)
    assert stream.report is not None and stream.report.chunks_decoded == 1


# -- NetCDF through h5netcdf: the general path ------------------------------------------------
def _packed(seed: int) -> Any:
    """A packed int16 temperature (scale, offset, _FillValue), a float field, 6-hourly times."""
    rng = np.random.default_rng(seed)
    t = rng.normal(280.0, 10.0, (12, 10, 16))
    t[rng.random(t.shape) < 0.05] = np.nan
    precip = rng.gamma(1.0, 2.0, (12, 10, 16)).astype("f4")
    ds = xr.Dataset(
        {
            "t": (("time", "lat", "lon"), t, {"units": "K"}),
            "precip": (("time", "lat", "lon"), precip),
        },
        coords={
            "time": np.arange(12) * np.timedelta64(6, "h") + np.datetime64("1979-01-01", "ns"),
            "lat": np.linspace(45, -45, 10),
            "lon": np.arange(16) * 22.5,
        },
    )
    ds["t"].encoding.update(
        dtype="int16", scale_factor=0.01, add_offset=280.0, _FillValue=np.int16(-32768)
    )
    return ds


@pytest.fixture(scope="module")
def netcdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nc") / "packed.nc"
    ds = _packed(seed=1)
    ds["t"].encoding["chunksizes"] = (2, 5, 16)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_netcdf_streams_through_xarray(netcdf: Path) -> None:
    ds = xr.open_dataset(netcdf, engine="h5netcdf")
    source = es.open_zarr(ds)
    assert isinstance(source, es.XarraySource)
    assert source.variables["t"].chunks == (2, 5, 16)  # the file's chunks
    assert source.variables["t"].dtype == np.float32  # packed: float32 by default
    np.testing.assert_array_equal(source.coords["time"], ds["time"].values)
    reference = ds.load()
    window = {"lat": 5, "lon": 4}
    for shuffle in (False, "chunks", "full"):
        stream = es.Stream(ds, window, {"lon": 3}, shuffle=shuffle, batch_size=7, seed=1)
        n = 0
        for batch in stream:
            for i in range(batch.size):
                t, y, x = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
                box = {"time": t, "lat": slice(y, y + 5), "lon": slice(x, x + 4)}
                for name in ("t", "precip"):
                    ref = reference[name].isel(box).values.astype(np.float32)
                    np.testing.assert_array_equal(batch[name][i], ref)
                assert batch.coords["time"][i] == reference["time"].values[t]
            n += batch.size
        assert n == stream.n_windows
    wide = es.open_xarray(ds, "t", dtype="float64")
    assert wide.variables["t"].dtype == np.float64
    chunk = wide.read_chunk("t", (1, 1, 0))
    assert chunk is not None
    np.testing.assert_array_equal(chunk, reference["t"].values[2:4, 5:10, :])


def test_netcdf_selection_stats_and_workers(netcdf: Path) -> None:
    ds = xr.open_dataset(netcdf, engine="h5netcdf")
    sel = {"time": slice("1979-01-01T12", "1979-01-03"), "lat": slice(30, -20)}
    stats = es.compute_stats(ds, "t", sel=sel, scheduler="sync", progress=False)
    values = ds["t"].sel(sel).values.astype(np.float32).astype("f8")
    valid = values[np.isfinite(values)]
    assert int(stats["t"].count) == valid.size
    np.testing.assert_allclose(stats["t"].mean, valid.mean(), rtol=1e-10)
    source = pickle.loads(pickle.dumps(es.open_zarr(ds)))  # to DataLoader/Dask workers
    assert source.read_chunk("precip", (0, 0, 0)) is not None
    stream = es.Stream(ds, {"lat": 4, "lon": 4}, variables="precip", sel=sel, batch_size=8)
    loader = stream.to_torch().loader(num_workers=2)
    seen = sorted(int(i) for b in loader for i in b.window_ids.tolist())
    assert seen == list(range(stream.n_windows))


def test_multistream_with_datasets(era5_v3: Path, tmp_path: Path) -> None:
    static = es.datasets.static_fields(tmp_path / "static.zarr", like=era5_v3)
    weather = xr.open_zarr(era5_v3, chunks=None).sel(lat=slice(70, -70))
    land = xr.open_zarr(static, chunks=None).sel(lat=slice(80, -80))  # a sliced secondary
    stream = es.MultiStream(
        {"era5": weather[["t2m"]], "static": land},
        {"lat": 4, "lon": 8},
        batch_size=6,
        shuffle=False,
    )
    ref_w, ref_s = weather.load(), land.load()
    for batch in stream:
        for i in range(batch.size):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            box = {"lat": slice(y, y + 4), "lon": slice(x, x + 8)}
            np.testing.assert_array_equal(
                batch["era5"][i, 0], ref_w["t2m"].isel({**box, "time": t}).values
            )
            lats = ref_w["lat"].values[box["lat"]]
            expect = ref_s.sel(lat=lats).isel(lon=box["lon"])
            for c, name in enumerate(batch.record("static").channels):
                np.testing.assert_array_equal(batch["static"][i, c], expect[name].values)
