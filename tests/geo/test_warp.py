"""geo._warp.warp_bands against rasterio.warp.reproject called directly with the nodata
value (the oracle): GDAL's fast kernel (no src_nodata) where a window holds no nodata pixel
gives the same pixels and validity as the masked kernel."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from earthstream.geo._warp import warp_bands

SRC = Affine(10.0, 0, 500000.0, 0, -10.0, 4985000.0)
DST = Affine(0.00011, 0, 15.001, 0, -0.00011, 45.017)  # inside SRC


def _oracle(data, method, nodata, shape, dst_transform=DST):
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    dst = np.full((data.shape[0], *shape), nodata if nodata is not None else 0, data.dtype)
    reproject(
        source=data, destination=dst, src_transform=SRC, src_crs="EPSG:32633",
        src_nodata=nodata, dst_transform=dst_transform, dst_crs="EPSG:4326", dst_nodata=nodata,
        resampling=Resampling[method],
    )  # fmt: skip
    return dst


@pytest.mark.parametrize("method", ["nearest", "bilinear", "cubic", "lanczos", "average"])
@pytest.mark.parametrize("holes", [False, True])
def test_fast_kernel_equals_masked_kernel(method, holes) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(1, 10000, size=(2, 96, 96), dtype=np.uint16)
    data[:, ::7, ::5] = rng.integers(0, 3, size=data[:, ::7, ::5].shape, dtype=np.uint16)
    if holes:
        data[:, :20, :30] = 0
    else:
        data[data == 0] = 1
    shape = (48, 48)
    raw, ok = warp_bands(data, SRC, "EPSG:32633", DST, "EPSG:4326", shape, [method] * 2, [0, 0])
    ref = _oracle(data, method, 0, shape)
    assert (ref != 0).mean() > 0.5  # the chip lies on the window
    np.testing.assert_array_equal(raw, ref)
    np.testing.assert_array_equal(ok, ref != 0)
    slow, slow_ok = warp_bands(
        data, SRC, "EPSG:32633", DST, "EPSG:4326", shape, [method] * 2, [0, 0], fast=False
    )
    np.testing.assert_array_equal(slow, raw)
    np.testing.assert_array_equal(slow_ok, ok)


def test_fast_kernel_is_used_without_nodata_pixels(monkeypatch) -> None:
    """Plumbing: a window without nodata pixels is warped without src_nodata (GDAL's fast
    kernel); with nodata pixels, with it."""
    import rasterio.warp

    calls = []
    real = rasterio.warp.reproject

    def spy(*args, **kwargs):
        calls.append(kwargs.get("src_nodata"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rasterio.warp, "reproject", spy)
    data = np.full((1, 64, 64), 500, np.uint16)
    warp_bands(data, SRC, "EPSG:32633", DST, "EPSG:4326", (16, 16), ["bilinear"], [0])
    assert calls == [None]
    data[0, 0, 0] = 0
    calls.clear()
    warp_bands(data, SRC, "EPSG:32633", DST, "EPSG:4326", (16, 16), ["bilinear"], [0])
    assert calls == [0]


#: Past the window's right and bottom edges: pixels nothing lands on.
EDGE = Affine(0.00011, 0, 15.006, 0, -0.00011, 45.014)


@pytest.mark.parametrize("method", ["nearest", "bilinear", "average", "cubic", "lanczos"])
def test_chips_past_the_window_edge_equal_the_masked_kernel(method, monkeypatch) -> None:
    """Where the chip reaches past the window, the fast kernel leaves the nodata value; for
    methods that stay within the values' range (nodata below it) that is final: one warp,
    equal to rasterio's masked kernel.  Others warp again with ``src_nodata``."""
    import rasterio.warp

    rng = np.random.default_rng(5)
    data = rng.integers(1, 10000, size=(3, 96, 96), dtype=np.uint16)
    calls = []
    real = rasterio.warp.reproject

    def spy(*args, **kwargs):
        calls.append(kwargs.get("src_nodata"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rasterio.warp, "reproject", spy)
    shape = (64, 64)
    raw, ok = warp_bands(data, SRC, "EPSG:32633", EDGE, "EPSG:4326", shape, [method] * 3, [0] * 3)
    assert calls == ([None] if method in ("nearest", "bilinear", "average") else [None, 0])
    monkeypatch.setattr(rasterio.warp, "reproject", real)
    ref = _oracle(data, method, 0, shape, EDGE)
    assert 0.2 < (ref != 0).mean() < 0.9  # reaches past the window
    np.testing.assert_array_equal(raw, ref)
    np.testing.assert_array_equal(ok, ref != 0)
