"""COG source: header, windowed reads, chips on other grids, overviews, nodata, scale/offset,
and the HTTP requests a chip read costs (counted in nginx's access log)."""

from __future__ import annotations

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import ConfigError, CRSError, StoreNotFoundError, VariableNotFoundError
from earthstream.geo import GridSpec, PixelWindow, reproject_bounds
from earthstream.geo._gdal import close_handles
from tests._geodata import BLOCK, OFFSET, SCALE, SIZE, UTM, WGS84
from tests.geo._reference import reproject_read, warped_vrt_read


@pytest.fixture(scope="module")
def cog(scenes):
    return es.open_cog(scenes[0].assets["red"])


def test_header(cog, scenes) -> None:
    s = scenes[0]
    assert cog.grid == GridSpec(UTM, s.transform, s.shape)
    assert cog.crs == UTM and cog.dtype == np.uint16
    assert cog.block_shape == (BLOCK, BLOCK)
    assert cog.overviews == (2, 4)  # the COG driver's automatic overviews
    (band,) = cog.bands
    assert (band.nodata, band.scale, band.offset) == (0.0, SCALE, OFFSET)
    assert "COGSource" in repr(cog)


def test_window_read_equals_rasterio(cog, scenes) -> None:
    raw = scenes[0].data["red"]
    window = PixelWindow(row=37, col=101, height=50, width=70)
    got = cog.read(window, apply_scale=False)
    np.testing.assert_array_equal(got, raw[:, 37:87, 101:171])
    scaled = cog.read(window)
    ref = raw[:, 37:87, 101:171] * np.float32(SCALE) + np.float32(OFFSET)
    np.testing.assert_allclose(scaled, ref, atol=1e-6)
    # the nodata corner is NaN once scaled, nodata when raw
    corner = cog.read(PixelWindow(0, 0, 4, 4))
    assert np.isnan(corner).all()
    # bounds in another CRS select the same pixels
    b = cog.grid.window_bounds(window)
    np.testing.assert_array_equal(cog.read(bounds=b, apply_scale=False), got)


def test_window_past_the_edge_is_nodata(cog, scenes) -> None:
    got = cog.read(PixelWindow(SIZE - 10, SIZE - 10, 20, 20), apply_scale=False)
    assert got.shape == (1, 20, 20)
    np.testing.assert_array_equal(got[:, :10, :10], scenes[0].data["red"][:, -10:, -10:])
    assert (got[:, 10:, :] == 0).all() and (got[:, :, 10:] == 0).all()


@pytest.mark.parametrize(
    ("crs", "res", "method"),
    [
        (UTM, 7.0, "nearest"),
        (UTM, 7.0, "bilinear"),
        ("EPSG:32632", 13.0, "nearest"),
        ("EPSG:32632", 13.0, "cubic"),
        (WGS84, 0.0001, "nearest"),
        (WGS84, 0.0001, "bilinear"),
    ],
)
def test_chip_equals_independent_reproject(cog, scenes, crs, res, method) -> None:
    bounds = reproject_bounds(cog.bounds, UTM, crs)
    grid = GridSpec.from_bounds(crs, bounds, res)
    chip = grid.window(PixelWindow(grid.height // 4, grid.width // 4, 48, 40))
    values, valid, info = cog.read_chip_info(
        chip, resampling=method, overview=None, apply_scale=False
    )
    ref, ref_valid = reproject_read(scenes[0].assets["red"], chip, method)
    np.testing.assert_array_equal(values, ref)
    np.testing.assert_array_equal(valid, ref_valid)
    assert info.window is not None and info.window.height < SIZE // 2  # a window, not the file
    if method == "nearest":  # GDAL's warped VRT agrees too
        np.testing.assert_array_equal(values, warped_vrt_read(scenes[0].assets["red"], chip))


def test_aligned_chip_is_a_plain_window(cog, scenes) -> None:
    chip = cog.grid.window(PixelWindow(64, 96, 32, 32))
    values, valid, info = cog.read_chip_info(chip, apply_scale=False)
    assert info.aligned and info.overview_level is None
    np.testing.assert_array_equal(values, scenes[0].data["red"][:, 64:96, 96:128])
    assert valid.all()


@pytest.mark.parametrize(("factor", "level"), [(2, 0), (3, 0), (4, 1), (8, 1)])
def test_overview_is_picked_for_coarse_chips(cog, scenes, factor, level) -> None:
    chip = cog.grid.decimated(SIZE // factor, SIZE // factor).window(PixelWindow(8, 8, 24, 24))
    values, valid, info = cog.read_chip_info(chip, apply_scale=False)
    assert info.overview_level == level
    ref, ref_valid = reproject_read(scenes[0].assets["red"], chip, overview_level=level)
    np.testing.assert_array_equal(values, ref)
    np.testing.assert_array_equal(valid, ref_valid)
    full, _, full_info = cog.read_chip_info(chip, apply_scale=False, overview=None)
    assert full_info.overview_level is None
    np.testing.assert_array_equal(full, reproject_read(scenes[0].assets["red"], chip)[0])


def test_select_bands_and_errors(cog, scenes, tmp_path) -> None:
    assert cog.select(["b1"]).band_names == ("b1",)
    assert cog.select([1]).band_names == ("b1",)
    with pytest.raises(VariableNotFoundError, match="Bands: b1"):
        cog.select(["red"])
    with pytest.raises(ConfigError, match="overview=5"):
        cog.read_chip(cog.grid.window(PixelWindow(0, 0, 8, 8)), overview=5)
    with pytest.raises(StoreNotFoundError):
        es.open_cog(tmp_path / "missing.tif")


def test_missing_crs_says_what_to_pass(tmp_path) -> None:
    import rasterio
    from affine import Affine

    path = tmp_path / "nocrs.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
        transform=Affine(1, 0, 0, 0, -1, 8),
    ) as dst:  # fmt: skip
        dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(CRSError, match="crs="):
        es.open_cog(path)
    cog = es.open_cog(path, crs="EPSG:32633")
    assert cog.crs == "EPSG:32633"
    assert cog.read(PixelWindow(0, 0, 2, 2), apply_scale=False).tolist() == [[[1, 1], [1, 1]]]


def test_remote_chip_reads_count_requests(nginx, scenes, geo_dir) -> None:
    """Over HTTP: the header costs HEAD + one GET, once per process; a chip costs one merged
    range per row of tiles."""
    import shutil

    path = geo_dir / "cogs" / "fresh-copy.tif"  # a file no other test read over HTTP
    shutil.copy(scenes[0].assets["red"], path)
    url = nginx.url(path)
    nginx.clear_log()
    remote = es.open_cog(url)
    opened = nginx.requests()
    assert [r.method for r in opened] == ["HEAD", "GET"]  # no sidecar probes, no listing
    assert all(r.status in (200, 206) for r in opened)
    nginx.clear_log()
    close_handles()
    es.open_cog(url)  # a new handle: the header comes from GDAL's per-process cache
    assert nginx.requests() == []
    local = es.open_cog(path)
    nginx.clear_log()
    chip = remote.grid.window(PixelWindow(BLOCK - 16, BLOCK - 16, 32, 32))  # 2 x 2 tiles
    np.testing.assert_array_equal(
        remote.read_chip(chip, apply_scale=False)[0], local.read_chip(chip, apply_scale=False)[0]
    )
    reads = nginx.requests()
    assert all(r.method == "GET" and r.status == 206 for r in reads)
    assert 1 <= len(reads) <= 2, reads  # two tiles per row are one merged range
    nginx.clear_log()
    inner = remote.grid.window(PixelWindow(BLOCK + 8, BLOCK + 8, 32, 32))  # 1 tile
    remote.read_chip(inner)
    assert len(nginx.requests()) <= 1
    close_handles()


def test_multiband_cog_with_per_band_resampling(tmp_path) -> None:
    from affine import Affine

    from tests._geodata import scene_data, write_cog

    data = np.concatenate([scene_data(s, (256, 256)) for s in (1, 2, 3)])
    path = write_cog(tmp_path / "rgb.tif", data, UTM, Affine(10, 0, 500000, 0, -10, 4985000), 0)
    cog = es.open_cog(path, band_names=["red", "green", "blue"])
    assert cog.band_names == ("red", "green", "blue") and len(cog.bands) == 3
    grid = GridSpec.from_bounds(WGS84, reproject_bounds(cog.bounds, UTM, WGS84), 0.00012)
    chip = grid.window(PixelWindow(40, 30, 32, 32))
    methods = ["nearest", "bilinear", "cubic"]
    values, valid = cog.read_chip(chip, resampling=methods, apply_scale=False, overview=None)
    for b, method in enumerate(methods):
        ref, ref_valid = reproject_read(path, chip, method)
        np.testing.assert_array_equal(values[b], ref[b])
        np.testing.assert_array_equal(valid[b], ref_valid[b])
    blue = cog.select(["blue"])
    np.testing.assert_array_equal(
        blue.read(PixelWindow(5, 6, 7, 8), apply_scale=False)[0], data[2, 5:12, 6:14]
    )
    with pytest.raises(ConfigError, match="one per band"):
        cog.read_chip(chip, resampling=["nearest"])
