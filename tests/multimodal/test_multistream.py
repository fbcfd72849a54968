"""Multi-modal samples: weather + static fields + a COG, checked against xarray and rasterio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import earthstream as es
from earthstream.errors import ConfigError, GridMismatchError, MissingModalityError, TimeAxisError

RES = 0.5
N_LAT, N_LON, N_T = 24, 32, 12
LAT = 60.0 - RES / 2 - RES * np.arange(N_LAT)  # cell centres, north to south
LON = -10.0 + RES / 2 + RES * np.arange(N_LON)
TIMES = np.datetime64("2021-03-01T00", "ns") + np.arange(N_T) * np.timedelta64(6, "h")


def _to_zarr(ds: xr.Dataset, path: Path, chunks: dict[str, tuple[int, ...]]) -> Path:
    encoding = {v: {"chunks": chunks[v]} for v in ds.data_vars}
    ds.to_zarr(path, zarr_format=3, encoding=encoding, consolidated=False)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mm")
    rng = np.random.default_rng(3)
    weather = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), rng.normal(280, 5, (N_T, N_LAT, N_LON)).astype("f4")),
            "u10": (("time", "lat", "lon"), rng.normal(0, 3, (N_T, N_LAT, N_LON)).astype("f4")),
            "z": (
                ("time", "level", "lat", "lon"),
                rng.normal(5e4, 1e3, (N_T, 3, N_LAT, N_LON)).astype("f4"),
            ),
        },
        coords={"time": TIMES, "level": [500, 850, 1000], "lat": LAT, "lon": LON},
    )
    chunks = {"t2m": (1, 12, 16), "u10": (1, 12, 16), "z": (1, 3, 12, 16)}
    paths = {"weather": _to_zarr(weather, root / "weather.zarr", chunks)}
    # static fields on a larger grid (2 more rows north, 3 more columns west): offsets
    lat_s = np.concatenate([LAT[0] + RES * np.arange(2, 0, -1), LAT])
    lon_s = np.concatenate([LON[0] - RES * np.arange(3, 0, -1), LON])
    static = xr.Dataset(
        {
            "lsm": (("lat", "lon"), (rng.random((len(lat_s), len(lon_s))) > 0.5).astype("f4")),
            "orography": (("lat", "lon"), rng.gamma(2, 300, (len(lat_s), len(lon_s))).astype("f4")),
        },
        coords={"lat": lat_s, "lon": lon_s},
    )
    paths["static"] = _to_zarr(static, root / "static.zarr", {"lsm": (8, 8), "orography": (8, 8)})
    # a DEM 4x finer than the weather grid, same extent
    fine_lat = 60.0 - RES / 8 - RES / 4 * np.arange(N_LAT * 4)
    fine_lon = -10.0 + RES / 8 + RES / 4 * np.arange(N_LON * 4)
    dem = xr.Dataset(
        {
            "height": (
                ("lat", "lon"),
                rng.gamma(2, 300, (len(fine_lat), len(fine_lon))).astype("f4"),
            )
        },
        coords={"lat": fine_lat, "lon": fine_lon},
    )
    paths["dem"] = _to_zarr(dem, root / "dem.zarr", {"height": (32, 32)})
    # a COG (EPSG:4326, 4x finer) covering the western 3/4 of the grid: 2 bands
    import rasterio
    from affine import Affine

    width = N_LON * 4 * 3 // 4
    data = rng.normal(0.3, 0.1, (2, N_LAT * 4, width)).astype("f4")
    profile = {
        "driver": "COG",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:4326",
        "transform": Affine(RES / 4, 0.0, -10.0, 0.0, -RES / 4, 60.0),
        "nodata": None,
        "blocksize": 128,
        "overviews": "none",
    }
    with rasterio.open(root / "s2.tif", "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("red", "nir")
    paths["cog"] = root / "s2.tif"
    return paths


def open_xr(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, chunks=None, consolidated=False).load()


def footprint(batch: es.Batch, b: int, h: int, w: int) -> tuple[slice, slice, float, float]:
    r, c = int(batch.starts["lat"][b]), int(batch.starts["lon"][b])
    return slice(r, r + h), slice(c, c + w), float(LAT[r] + RES / 2), float(LON[c] - RES / 2)


@pytest.mark.parametrize("shuffle", [False, "chunks"])
def test_records_equal_independent_reads(stores: dict[str, Path], shuffle) -> None:
    import rasterio
    from rasterio.windows import from_bounds

    weather, static, dem = (open_xr(stores[k]) for k in ("weather", "static", "dem"))
    cog = rasterio.open(stores["cog"])
    stream = es.MultiStream(
        {
            "era5": es.Modality(stores["weather"], variables=["t2m", "u10"]),
            "upper": es.Modality(stores["weather"], variables=["z"]),
            "static": stores["static"],
            "dem": es.Modality(stores["dem"], resolution="native"),
            "s2": es.Modality(es.open_cog(stores["cog"]), resolution="native", missing="zero"),
        },
        {"lat": 8, "lon": 8},
        batch_size=6,
        shuffle=shuffle,
        seed=4,
    )
    assert set(stream.infos) == {"era5", "upper", "static", "dem", "s2"}
    n = absent = 0
    for batch in stream:
        era5, upper, stat = batch.record("era5"), batch.record("upper"), batch.record("static")
        assert era5.layout == "CHW" and era5.channels == ("t2m", "u10")
        assert upper.layout == "VLHW" and upper.data.shape[1:] == (1, 3, 8, 8)
        assert stat.layout == "CHW" and stat.info.static
        s2 = batch.record("s2")
        assert s2.channels == ("red", "nir") and s2.info.crs == "EPSG:4326"
        assert s2.data.shape[1:] == (2, 32, 32)
        for b in range(batch.size):
            rows, cols, north, west = footprint(batch, b, 8, 8)
            t = int(batch.starts["time"][b])
            np.testing.assert_array_equal(
                era5.data[b],
                np.stack([weather[v].values[t, rows, cols] for v in ("t2m", "u10")]),
            )
            np.testing.assert_array_equal(upper.data[b, 0], weather["z"].values[t, :, rows, cols])
            srows = slice(rows.start + 2, rows.stop + 2)
            scols = slice(cols.start + 3, cols.stop + 3)
            np.testing.assert_array_equal(
                stat.data[b],
                np.stack([static[v].values[srows, scols] for v in stat.channels]),
            )
            frows = slice(rows.start * 4, rows.stop * 4)
            fcols = slice(cols.start * 4, cols.stop * 4)
            np.testing.assert_array_equal(batch["dem"][b, 0], dem["height"].values[frows, fcols])
            # the COG through rasterio: the same footprint at its own resolution
            bounds = batch.coords["bounds"][b]
            assert bounds[3] == pytest.approx(north) and bounds[0] == pytest.approx(west)
            east = bounds[2]
            if east <= -10.0 + N_LON * RES * 3 / 4:
                window = from_bounds(*bounds, transform=cog.transform)
                expected = cog.read(window=window)
                np.testing.assert_array_equal(s2.data[b], expected)
                assert s2.present[b] and s2.mask[b].all()
            else:
                absent += not s2.present[b]
            np.testing.assert_allclose(batch.coords["center_lat"][b], (bounds[1] + bounds[3]) / 2)
        assert batch.coords["reference_time"].dtype.kind == "M"
        n += batch.size
    assert n == stream.n_windows
    assert absent > 0  # samples east of the COG: zeros, present False


def test_common_grid_raster_and_static_broadcast(stores: dict[str, Path]) -> None:
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    weather = open_xr(stores["weather"])
    static = open_xr(stores["static"])
    cog = rasterio.open(stores["cog"])
    stream = es.MultiStream(
        {
            "era5": es.Modality(stores["weather"], variables=["t2m"]),
            "static": es.Modality(stores["static"], variables=["lsm"], broadcast_time=True),
            "s2": es.Modality(stores["cog"], variables=["nir"], missing="skip"),
        },
        {"time": 2, "lat": 4, "lon": 4},
        stride={"time": 2},
        batch_size=8,
        shuffle=False,
    )
    kept = 0
    for batch in stream:
        assert batch["era5"].shape[1:] == (1, 2, 4, 4)
        assert batch["static"].shape[1:] == (1, 2, 4, 4)
        assert batch.record("era5").layout == "CTHW"
        for b in range(batch.size):
            rows, cols, north, west = footprint(batch, b, 4, 4)
            t = int(batch.starts["time"][b])
            np.testing.assert_array_equal(
                batch["era5"][b, 0], weather["t2m"].values[t : t + 2, rows, cols]
            )
            lsm = static["lsm"].values[
                rows.start + 2 : rows.stop + 2, cols.start + 3 : cols.stop + 3
            ]
            np.testing.assert_array_equal(batch["static"][b, 0, 0], lsm)
            np.testing.assert_array_equal(batch["static"][b, 0, 1], lsm)
            expected = np.zeros((4, 4), "f4")
            reproject(
                rasterio.band(cog, 2),
                expected,
                dst_transform=Affine(RES, 0.0, west, 0.0, -RES, north),
                dst_crs="EPSG:4326",
                resampling=Resampling.nearest,
            )
            np.testing.assert_array_equal(batch["s2"][b, 0], expected)
        kept += batch.size
    # skip: samples outside the COG are dropped and counted
    assert stream.skipped > 0 and kept + stream.skipped == stream.n_windows


def test_forecast_multimodal_through_workers(stores: dict[str, Path]) -> None:
    stream = es.MultiStream(
        {
            "era5": es.Modality(stores["weather"], variables=["t2m", "u10"]),
            "static": stores["static"],
        },
        {"lat": 8, "lon": 8},
        forecast={"inputs": 2, "lead": "12h", "targets": ["t2m"]},
        encodings=("time", "position"),
        batch_size=4,
        seed=1,
    )
    weather = open_xr(stores["weather"])
    loader = stream.to_torch().loader(num_workers=2)
    n = 0
    for batch in loader:
        assert tuple(batch["era5"].shape[1:]) == (2, 2, 8, 8)
        assert tuple(batch["target"].shape[1:]) == (1, 1, 8, 8)
        assert tuple(batch["static"].shape[1:]) == (2, 8, 8)
        assert tuple(batch["time_encoding"].shape[1:]) == (4,)
        rec = batch.record("target")
        assert rec.channels == ("t2m",)
        for b in range(batch["era5"].shape[0]):
            r, c = int(batch.starts["lat"][b]), int(batch.starts["lon"][b])
            t = int(batch.starts["time"][b])  # first input step
            np.testing.assert_array_equal(
                batch["target"][b, 0, 0].numpy(), weather["t2m"].values[t + 3, r : r + 8, c : c + 8]
            )
        n += batch["era5"].shape[0]
    assert n == stream.n_windows


def test_errors_say_what_to_fix(stores: dict[str, Path], tmp_path: Path) -> None:
    t2m = es.Modality(stores["weather"], variables=["t2m"])
    with pytest.raises(GridMismatchError, match="resolution='native'"):
        es.MultiStream({"era5": t2m, "dem": stores["dem"]}, {"lat": 8, "lon": 8})
    # a grid offset by half a cell cannot nest
    shifted = open_xr(stores["static"]).assign_coords(lon=lambda d: d.lon + RES / 2)
    path = _to_zarr(shifted, tmp_path / "shifted.zarr", {"lsm": (8, 8), "orography": (8, 8)})
    with pytest.raises(GridMismatchError, match="do not nest"):
        es.MultiStream({"era5": t2m, "s": path}, {"lat": 8, "lon": 8})
    # a second weather store of another period: no common step
    other = open_xr(stores["weather"])[["t2m"]].assign_coords(time=TIMES + np.timedelta64(365, "D"))
    path = _to_zarr(other, tmp_path / "other.zarr", {"t2m": (1, 12, 16)})
    with pytest.raises(TimeAxisError, match="do not overlap"):
        es.MultiStream(
            {"era5": es.Modality(stores["weather"], variables=["t2m"]), "o": path},
            {"lat": 8, "lon": 8},
        )
    stream = es.MultiStream(
        {"era5": es.Modality(stores["weather"], variables=["t2m"]), "s2": stores["cog"]},
        {"lat": 8, "lon": 8},
        shuffle=False,
    )
    with pytest.raises(MissingModalityError, match="missing='skip'"):
        list(stream)
    with pytest.raises(ConfigError, match="different sample shapes"):
        es.MultiStream({"era5": stores["weather"]}, {"level": None, "lat": 8, "lon": 8})
    with pytest.raises(ConfigError, match="primary must be gridded"):
        es.MultiStream({"s2": stores["cog"], "era5": t2m}, {"lat": 8, "lon": 8})


def test_normalization_of_records_and_targets(stores: dict[str, Path]) -> None:
    """normalize= with one statistics file per store: every record channel (per level for
    z) and the forecast target come out as (x - mean) / std, on the device stage."""
    from earthstream.errors import StatsMismatchError

    weather_stats = es.compute_stats(
        stores["weather"], ["t2m", "u10", "z"], scheduler="sync", progress=False
    )
    static_stats = es.compute_stats(stores["static"], scheduler="sync", progress=False)

    def make() -> es.MultiStream:
        return es.MultiStream(
            {
                "era5": es.Modality(stores["weather"], variables=["t2m", "u10"]),
                "upper": es.Modality(stores["weather"], variables=["z"]),
                "static": stores["static"],
            },
            {"lat": 8, "lon": 8},
            forecast={"inputs": 2, "lead": "6h", "targets": ["t2m"]},
            encodings=("time",),
            batch_size=4,
            shuffle=False,
        )

    raw = next(iter(make()))
    ds = make().to_torch(normalize=[weather_stats, static_stats])
    got = next(iter(ds))
    for c, name in enumerate(("t2m", "u10")):
        v = weather_stats[name]
        np.testing.assert_allclose(
            got["era5"][:, c].numpy(), (raw["era5"][:, c] - v.mean) / v.std, rtol=1e-5, atol=1e-5
        )
    z = weather_stats["z"]  # per level: (3,)
    expected = (raw["upper"][:, 0] - z.mean[None, None, :, None, None]) / z.std[
        None, None, :, None, None
    ]
    np.testing.assert_allclose(got["upper"][:, 0].numpy(), expected, rtol=1e-5, atol=1e-4)
    t = weather_stats["t2m"]
    np.testing.assert_allclose(
        got["target"][:, 0].numpy(), (raw["target"][:, 0] - t.mean) / t.std, rtol=1e-5, atol=1e-5
    )
    for c, name in enumerate(raw.record("static").channels):
        s = static_stats[name]
        np.testing.assert_allclose(
            got["static"][:, c].numpy(),
            (raw["static"][:, c] - s.mean) / s.std,
            rtol=1e-5,
            atol=1e-5,
        )
    np.testing.assert_array_equal(got["time_encoding"].numpy(), raw["time_encoding"])
    # the static store's statistics left out: refused before any data is read
    with pytest.raises(StatsMismatchError, match="static"):
        make().to_torch(normalize=weather_stats)


def test_normalization_through_loader_workers(stores: dict[str, Path]) -> None:
    """With ds.loader(num_workers=2) the workers leave normalization to the main process's
    last stage, and every batch arrives normalized."""
    stats = es.compute_stats(stores["weather"], ["t2m"], scheduler="sync", progress=False)
    stream = es.Stream(stores["weather"], {"lat": 8, "lon": 8}, variables=["t2m"], batch_size=8)
    raw = {int(i): b["t2m"][k] for b in stream for k, i in enumerate(b.window_ids)}
    ds = stream.to_torch(normalize=stats)
    n = 0
    for batch in ds.loader(num_workers=2):
        for k, i in enumerate(batch.window_ids.tolist()):
            expected = (raw[i] - stats["t2m"].mean) / stats["t2m"].std
            np.testing.assert_allclose(batch["t2m"][k].numpy(), expected, rtol=1e-5, atol=1e-5)
            n += 1
    assert n == stream.n_windows and not ds._device_stage


def test_selection_on_the_primary(stores: dict[str, Path]) -> None:
    """sel=/isel= select the primary's samples (as xarray's sel); other modalities are
    matched to the selected footprints by their coordinates, forecasts stay inside."""
    weather = xr.open_zarr(stores["weather"], chunks=None, consolidated=False).load()
    static = xr.open_zarr(stores["static"], chunks=None, consolidated=False).load()
    sel = {"lat": slice(58.0, 52.0), "time": slice("2021-03-01T06", "2021-03-03T00")}
    isel = {"lon": slice(4, 28)}
    part = weather.isel(isel).sel(sel)
    stream = es.MultiStream(
        {"w": es.Modality(stores["weather"], variables=["t2m", "u10"]), "s": stores["static"]},
        {"lat": 4, "lon": 8},
        forecast={"inputs": 2, "lead": "12h", "targets": ["t2m"]},
        sel=sel,
        isel=isel,
        batch_size=5,
        seed=2,
    )
    times = set(part["time"].values.tolist())
    n = 0
    for batch in stream:
        for i in range(batch.size):
            y, x = int(batch.starts["lat"][i]), int(batch.starts["lon"][i])
            box = {"lat": slice(y, y + 4), "lon": slice(x, x + 8)}
            inputs = part.isel(box).sel(time=batch.coords["input_times"][i])
            for c, name in enumerate(("t2m", "u10")):
                np.testing.assert_array_equal(batch["w"][i, c], inputs[name].values)
            target = part["t2m"].isel(box).sel(time=batch.coords["target_times"][i])
            np.testing.assert_array_equal(batch["target"][i, 0], target.values)
            assert set(batch.coords["target_times"][i].tolist()) <= times
            footprint = static.sel(lat=part["lat"].values[box["lat"]]).sel(
                lon=part["lon"].values[box["lon"]]
            )
            np.testing.assert_array_equal(batch["s"][i, 0], footprint["lsm"].values)
        n += batch.size
    assert n == stream.n_windows > 0
