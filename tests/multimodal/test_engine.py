"""Every modality of a MultiStream through the one engine: decoded once, one report, one
budget, DataLoader workers, resume; rasters from their tiles, against rasterio.

Oracles: xarray's read of each store (time steps matched by label), rasterio's
window reads and ``rasterio.warp.reproject`` of the file (or of the overview level
read), pyproj for the footprints of another CRS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import earthstream as es
from earthstream.errors import MemoryBudgetError

RES = 0.5
N_LAT, N_LON, N_T = 20, 28, 10
LAT = 50.0 - RES / 2 - RES * np.arange(N_LAT)  # north to south
LON = 2.0 + RES / 2 + RES * np.arange(N_LON)
TIMES = np.datetime64("2022-06-01T00", "ns") + np.arange(N_T) * np.timedelta64(6, "h")


def _to_zarr(ds: xr.Dataset, path: Path, chunks: dict[str, tuple[int, ...]]) -> Path:
    encoding = {v: {"chunks": chunks[v]} for v in ds.data_vars}
    ds.to_zarr(path, zarr_format=3, encoding=encoding, consolidated=False)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mm-engine")
    rng = np.random.default_rng(11)
    shape = (N_T, N_LAT, N_LON)
    weather = xr.Dataset(
        {v: (("time", "lat", "lon"), rng.normal(0, 1, shape).astype("f4")) for v in ("t", "u")},
        coords={"time": TIMES, "lat": LAT, "lon": LON},
    )
    paths = {"weather": _to_zarr(weather, root / "w.zarr", {"t": (1, 10, 14), "u": (1, 10, 14)})}
    # a second time-varying store: one row more north, two columns more west, other chunks,
    # missing the last two steps, and NaN where xarray masks its fill value
    lat2 = np.concatenate([[LAT[0] + RES], LAT])
    lon2 = np.concatenate([LON[0] - RES * np.arange(2, 0, -1), LON])
    shape2 = (N_T - 2, len(lat2), len(lon2))
    sst = rng.normal(290, 2, shape2).astype("f4")
    sst[:, 5:8, 5:9] = np.nan
    ocean = xr.Dataset(
        {"sst": (("time", "lat", "lon"), sst), "swh": (("time", "lat", "lon"), sst * 0.01)},
        coords={"time": TIMES[:-2], "lat": lat2, "lon": lon2},
    )
    paths["ocean"] = _to_zarr(ocean, root / "o.zarr", {"sst": (3, 7, 9), "swh": (3, 7, 9)})
    # hourly steps of the same grid: a 6-hourly window's steps are 6 apart in it
    hours = np.datetime64("2022-06-01T00", "ns") + np.arange(6 * N_T) * np.timedelta64(1, "h")
    hourly = xr.Dataset(
        {"p": (("time", "lat", "lon"), rng.normal(1e5, 50, (len(hours), N_LAT, N_LON)))},
        coords={"time": hours, "lat": LAT, "lon": LON},
    )
    paths["hourly"] = _to_zarr(hourly, root / "h.zarr", {"p": (4, 20, 28)})
    return paths


def open_xr(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, chunks=None, consolidated=False).load()


def _check_ocean(batch: Any, ocean: xr.Dataset, weather_times: np.ndarray) -> int:
    """Each sample's ocean record against xarray's (by time label); returns absent ones."""
    rec = batch.record("ocean")
    absent = 0
    for i in range(batch.size):
        r, c = int(batch.starts["lat"][i]), int(batch.starts["lon"][i])
        when = weather_times[int(batch.starts["time"][i])]
        if when not in ocean["time"].values:
            assert not rec.present[i] and not rec.data[i].any()
            absent += 1
            continue
        assert rec.present[i]
        box = {"lat": slice(r + 1, r + 9), "lon": slice(c + 2, c + 10)}
        want = ocean.sel(time=when).isel(box)
        for k, name in enumerate(rec.channels):
            np.testing.assert_array_equal(rec.data[i, k], want[name].values)
    return absent


def make(stores: dict[str, Path], **kwargs: Any) -> es.MultiStream:
    options = {"batch_size": 6, "seed": 5, **kwargs}
    return es.MultiStream(
        {
            "weather": es.open_zarr(stores["weather"]),
            "ocean": es.Modality(stores["ocean"], missing="zero"),
        },
        {"lat": 8, "lon": 8},
        **options,
    )


def test_second_store_decoded_once_with_one_report(stores: dict[str, Path]) -> None:
    weather, ocean = open_xr(stores["weather"]), open_xr(stores["ocean"])
    stream = make(stores, shuffle="chunks", memory_limit="64MB")
    sources = [stream.source, stream.parts["ocean"].source]
    before = [s.request_stats() for s in sources]
    n = absent = 0
    for batch in stream:
        rec = batch.record("weather")
        for i in range(batch.size):
            t, r, c = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            for k, name in enumerate(rec.channels):
                want = weather[name].values[t, r : r + 8, c : c + 8]
                np.testing.assert_array_equal(rec.data[i, k], want)
        absent += _check_ocean(batch, ocean, TIMES)
        n += batch.size
    assert n == stream.n_windows and absent == 2 * stream.n_windows // N_T
    report = stream.report
    assert report is not None and report.finished
    # one report: both inputs' requests and bytes, both modalities' chunks, each once
    after = [s.request_stats() for s in sources]
    assert report.requests == sum(
        a["requests"] - b["requests"] for a, b in zip(after, before, strict=True)
    )
    assert report.bytes_read == sum(
        a["bytes"] - b["bytes"] for a, b in zip(after, before, strict=True)
    )
    names = {name for name, _ in report.decodes}
    assert names == {"t", "u", "ocean/sst", "ocean/swh"}
    assert set(report.decodes.values()) == {1}
    ocean_chunks = {index for name, index in report.decodes if name == "ocean/sst"}
    # the chunks the boxes touch: 3 of time, rows 1-16 (3 of 7), columns 2-25 (3 of 9)
    assert len(ocean_chunks) == 3 * 3 * 3
    assert report.peak_held_bytes <= report.memory_limit


@pytest.mark.parametrize(("shuffle", "memory"), [("chunks", "40KB"), ("full", "40KB")])
def test_within_one_budget(stores: dict[str, Path], shuffle: str, memory: str) -> None:
    """Memory too small for the stores: chunks are evicted and read again, batches are
    made in sweeps (fully shuffled), and every record stays exact."""
    weather, ocean = open_xr(stores["weather"]), open_xr(stores["ocean"])
    stream = make(stores, shuffle=shuffle, memory_limit=memory, batch_size=6)
    if shuffle == "full":
        assert stream._sweep_batches > 0
    n = 0
    for batch in stream:
        _check_ocean(batch, ocean, TIMES)
        i = batch.size - 1
        t, r, c = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
        expected = weather["t"].values[t, r : r + 8, c : c + 8]
        np.testing.assert_array_equal(batch["weather"][i, 0], expected)
        n += batch.size
    report = stream.report
    assert report is not None and n == stream.n_windows
    assert report.peak_held_bytes <= report.memory_limit
    assert max(report.decodes.values()) > 1  # it did not all fit: decoded again, counted
    with pytest.raises(MemoryBudgetError, match="every modality"):
        make(stores, memory_limit="150KB", batch_size=64)


def test_steps_matched_by_time_not_position(stores: dict[str, Path]) -> None:
    """A 6-hourly primary with 2-step windows over an hourly store: each sample reads the
    hourly store's steps 6 apart (per-sample positions), equal to xarray's sel."""
    hourly = open_xr(stores["hourly"])
    stream = es.MultiStream(
        {"w": es.Modality(stores["weather"], variables=["t"]), "h": stores["hourly"]},
        {"time": 2, "lat": 8, "lon": 8},
        batch_size=5,
        shuffle="chunks",
        seed=1,
    )
    n = 0
    for batch in stream:
        assert batch.record("h").layout == "CTHW"
        for i in range(batch.size):
            t, r, c = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            want = hourly["p"].sel(time=TIMES[t : t + 2]).values[:, r : r + 8, c : c + 8]
            np.testing.assert_array_equal(batch["h"][i, 0], want)
            np.testing.assert_array_equal(batch.coords["h/time_index"][i], [6 * t, 6 * t + 6])
        n += batch.size
    assert n == stream.n_windows
    assert set(stream.report.decodes.values()) == {1}


def test_dataloader_workers_serve_each_sample_once(stores: dict[str, Path]) -> None:
    ocean = open_xr(stores["ocean"])
    stream = make(stores, shuffle="chunks")
    seen: list[int] = []
    for batch in stream.to_torch().loader(num_workers=2):
        seen.extend(batch.window_ids.tolist())
        rec = batch.record("ocean")
        i = 0
        t, r, c = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
        if rec.present[i]:
            want = ocean["sst"].sel(time=TIMES[t]).values[r + 1 : r + 9, c + 2 : c + 10]
            np.testing.assert_array_equal(rec.data[i, 0].numpy(), want)
    assert sorted(seen) == list(range(stream.n_windows))


def test_resume_continues_both_modalities(stores: dict[str, Path]) -> None:
    full = [(b.window_ids.copy(), b["ocean"].copy()) for b in make(stores)]
    stream = make(stores)
    it = iter(stream)
    for _ in range(3):
        next(it)
    state = stream.state_dict()
    del it
    resumed = make(stores)
    resumed.load_state_dict(state)
    tail = [(b.window_ids, b["ocean"]) for b in resumed]
    assert len(tail) == len(full) - 3
    for (ids, values), (want_ids, want) in zip(tail, full[3:], strict=True):
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(values, want)


# -- rasters: tiles through the engine ---------------------------------------------------
@pytest.fixture(scope="module")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import rasterio
    from affine import Affine

    root = tmp_path_factory.mktemp("mm-cog")
    rng = np.random.default_rng(2)
    # 8x finer than the primary, with overviews, uint16 with nodata, scaled
    h, w = N_LAT * 8, N_LON * 8
    data = rng.integers(1, 5000, (3, h, w)).astype("u2")
    data[:, 40:60, 30:70] = 0  # nodata
    profile = {
        "driver": "COG", "height": h, "width": w, "count": 3, "dtype": "uint16",
        "crs": "EPSG:4326", "transform": Affine(RES / 8, 0, LON[0] - RES / 2, 0, -RES / 8,
                                                  LAT[0] + RES / 2),
        "nodata": 0, "blocksize": 128, "compress": "deflate", "overview_count": 3,
    }  # fmt: skip
    with rasterio.open(root / "fine.tif", "w", **profile) as dst:
        dst.write(data)
        dst.scales = (0.0001, 0.0001, 0.0001)
        dst.offsets = (-0.1, -0.1, -0.1)
        dst.descriptions = ("blue", "green", "red")
    # UTM zone 31N over part of the primary's area, 2 km pixels, float32 without nodata
    profile = {
        "driver": "COG", "height": 300, "width": 260, "count": 2, "dtype": "float32",
        "crs": "EPSG:32631", "transform": Affine(2000.0, 0, 300000.0, 0, -2000.0, 5500000.0),
        "nodata": None, "blocksize": 128, "overviews": "none",
    }  # fmt: skip
    with rasterio.open(root / "utm.tif", "w", **profile) as dst:
        dst.write(rng.normal(0, 1, (2, 300, 260)).astype("f4"))
    return {"fine": root / "fine.tif", "utm": root / "utm.tif"}


def _decoded(raw: np.ndarray, valid: np.ndarray, scale: float, offset: float) -> np.ndarray:
    out = np.empty(raw.shape, np.float32)
    np.multiply(raw, scale, out=out, casting="unsafe")
    out += offset
    return np.where(valid, out, np.float32(0))


def test_cog_on_common_grid_reads_the_overview(rasters: dict[str, Path], stores) -> None:
    """Chips on the primary's grid (8x coarser than the COG): read from the overview the
    chips' pixels call for (level 2, 8x), warped bilinearly; each tile decoded once."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    stream = es.MultiStream(
        {
            "w": es.Modality(stores["weather"], variables=["t"]),
            "s2": es.Modality(rasters["fine"], resampling="bilinear", missing="zero"),
        },
        {"lat": 8, "lon": 8},
        batch_size=7,
        shuffle=False,
    )
    part = stream.parts["s2"]
    with rasterio.open(rasters["fine"]) as full:
        factors = full.overviews(1)
    assert factors == [2, 4, 8] and part.level == 2  # the coarsest not coarser than the chips
    with rasterio.open(rasters["fine"], overview_level=part.level) as src:
        for batch in stream:
            rec = batch.record("s2")
            assert rec.channels == ("blue", "green", "red") and rec.layout == "CHW"
            for i in range(batch.size):
                west, _, _, north = batch.coords["bounds"][i]
                chip = Affine(RES, 0, west, 0, -RES, north)
                raw = np.zeros((3, 8, 8), "u2")
                reproject(
                    rasterio.band(src, [1, 2, 3]), raw, dst_transform=chip, dst_crs="EPSG:4326",
                    src_nodata=0, dst_nodata=0, resampling=Resampling.bilinear,
                )  # fmt: skip
                valid = raw != 0
                np.testing.assert_array_equal(rec.mask[i], valid)
                np.testing.assert_array_equal(rec.data[i], _decoded(raw, valid, 1e-4, -0.1))
                np.testing.assert_array_equal(batch.coords["s2/transform"][i], tuple(chip)[:6])
    report = stream.report
    tiles = [n for (name, _), n in report.decodes.items() if name == "s2/band_data"]
    assert tiles and set(tiles) == {1}


def test_cog_native_is_its_own_pixels(rasters: dict[str, Path], stores) -> None:
    import rasterio
    from rasterio.windows import from_bounds

    stream = es.MultiStream(
        {
            "w": es.Modality(stores["weather"], variables=["t"]),
            "s2": es.Modality(
                es.open_tiff(rasters["fine"]), variables=["red"], resolution="native"
            ),
        },
        {"lat": 4, "lon": 4},
        batch_size=9,
        seed=3,
    )
    with rasterio.open(rasters["fine"]) as src:
        for batch in stream:
            rec = batch.record("s2")
            assert rec.data.shape[1:] == (1, 32, 32) and rec.channels == ("red",)
            for i in range(batch.size):
                window = from_bounds(*batch.coords["bounds"][i], transform=src.transform)
                raw = src.read([3], window=window)
                np.testing.assert_array_equal(rec.data[i], _decoded(raw, raw != 0, 1e-4, -0.1))
    assert set(stream.report.decodes.values()) == {1}


@pytest.mark.parametrize("resolution", ["common", "native"])
def test_cog_in_another_crs(rasters: dict[str, Path], stores, resolution: str) -> None:
    """A UTM COG under a lat/lon primary: common chips warped onto the primary's grid equal
    rasterio's windowed read + ``reproject`` (the GDAL chip reader this replaced) and,
    within GDAL's edge effect where the read window meets the raster's edge, ``reproject``
    of the whole file; native chips are the file's pixels around each footprint's centre
    (pyproj's bounds), snapped to its grid."""
    import rasterio
    from affine import Affine
    from pyproj import Transformer
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    stream = es.MultiStream(
        {
            "w": es.Modality(stores["weather"], variables=["t"]),
            "utm": es.Modality(
                rasters["utm"], resolution=resolution, resampling="bilinear", missing="zero"
            ),
        },
        {"lat": 4, "lon": 4},
        batch_size=8,
        shuffle=False,
    )
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)
    gdal_reader = es.open_cog(rasters["utm"])
    present = 0
    with rasterio.open(rasters["utm"]) as src:
        values = src.read()
        for batch in stream:
            rec = batch.record("utm")
            for i in range(batch.size):
                west, south, east, north = batch.coords["bounds"][i]
                if resolution == "common":
                    chip = Affine(RES, 0, west, 0, -RES, north)
                    want = np.zeros((2, 4, 4), "f4")
                    inside = np.zeros((1, 4, 4), "u1")
                    reproject(values, want, src_transform=src.transform, src_crs=src.crs,
                              dst_transform=chip, dst_crs="EPSG:4326",
                              resampling=Resampling.bilinear)  # fmt: skip
                    reproject(np.ones((1, 300, 260), "u1"), inside, src_transform=src.transform,
                              src_crs=src.crs, dst_transform=chip, dst_crs="EPSG:4326",
                              dst_nodata=0, resampling=Resampling.nearest)  # fmt: skip
                    valid = np.broadcast_to(inside.astype(bool), want.shape)
                    grid = es.GridSpec("EPSG:4326", tuple(chip)[:6], (4, 4))
                    windowed, ok = gdal_reader.read_chip(grid, resampling="bilinear")
                    np.testing.assert_array_equal(rec.data[i], np.where(ok, windowed, 0))
                    np.testing.assert_allclose(rec.data[i], np.where(valid, want, 0), atol=2e-3)
                    want = np.where(ok, windowed, 0)
                else:
                    left, bottom, right, top = to_utm.transform_bounds(
                        west, south, east, north, densify_pts=21
                    )
                    h, w = rec.data.shape[2:]
                    col = round(((left + right) / 2 - 2000.0 * w / 2 - 300000.0) / 2000.0)
                    row = round((5500000.0 - ((bottom + top) / 2 + 2000.0 * h / 2)) / 2000.0)
                    want = src.read(window=Window(col, row, w, h), boundless=True, fill_value=0)
                    rows, cols = np.arange(row, row + h), np.arange(col, col + w)
                    inside = ((rows >= 0) & (rows < 300))[:, None] & ((cols >= 0) & (cols < 260))
                    valid = np.broadcast_to(inside, want.shape)
                    t = batch.coords["utm/transform"][i]
                    assert (t[2], t[5]) == (300000.0 + 2000.0 * col, 5500000.0 - 2000.0 * row)
                np.testing.assert_array_equal(rec.mask[i], valid)
                np.testing.assert_array_equal(rec.data[i], np.where(valid, want, 0))
                present += bool(rec.present[i])
    assert 0 < present < stream.n_windows
