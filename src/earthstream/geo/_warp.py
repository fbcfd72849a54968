"""Warping a window of raster values onto a chip grid with GDAL's warper.

:func:`warp_bands` is the one place chips are resampled: the source is an
in-memory window (decoded tiles, or a windowed read) with its own transform,
the destination the chip's grid.  Bands sharing a resampling method and a
nodata value go through one ``rasterio.warp.reproject`` call.

GDAL's warper has fast kernels for windows without masks; telling it a
``src_nodata`` puts it on the general (slower) kernel even when the window
holds no nodata pixel.  So ``src_nodata`` is passed only when the window holds
one.  The fast kernels do not keep a valid pixel off the nodata value (a cubic
undershoot to 0 stays 0, where the masked kernel writes 1), so a result that
holds the nodata value is warped again with ``src_nodata``, unless the method
never leaves the range of the values it draws on (:data:`CONVEX`: nearest,
bilinear, average ...) and the nodata value lies outside the window's range: then
only pixels nothing lands on hold it, as with the masked kernel.  The output is
the same either way (``tests/geo/test_warp.py`` holds them equal to
``rasterio.warp.reproject`` with ``src_nodata``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._gdal import quiet_rasterio_warnings

__all__ = ["CONVEX", "has_nodata", "outside_range", "valid_of", "warp_bands"]

#: Methods whose output pixel lies between the least and the greatest source value it
#: draws on (non-negative weights, or a pick): with a nodata value outside the window's
#: range, a valid output pixel can never equal it.
CONVEX = frozenset({"nearest", "bilinear", "average", "mode", "max", "min", "med", "q1", "q3"})


def valid_of(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where ``values`` are not ``nodata`` (all True without a nodata value).

    >>> valid_of(np.array([0, 3, 0]), 0).tolist()
    [False, True, False]
    >>> valid_of(np.array([np.nan, 1.0]), np.nan).tolist()
    [False, True]
    """
    if nodata is None:
        return np.ones(values.shape, dtype=bool)
    if math.isnan(nodata):
        return np.asarray(~np.isnan(values))
    return np.asarray(values != nodata)


def has_nodata(values: np.ndarray, nodata: float | None) -> bool:
    """Whether any of ``values`` is ``nodata``."""
    if nodata is None:
        return False
    if math.isnan(nodata):
        return bool(np.isnan(values).any()) if values.dtype.kind == "f" else False
    return bool((values == nodata).any())


def outside_range(values: np.ndarray, nodata: float) -> bool:
    """Whether ``nodata`` lies outside ``[values.min(), values.max()]`` (NaN: always, for
    values without NaN).

    >>> outside_range(np.array([1, 5, 9]), 0), outside_range(np.array([1, 5, 9]), 4)
    (True, False)
    """
    if math.isnan(nodata):
        return not has_nodata(values, nodata)
    if not values.size:
        return True
    return bool(nodata < values.min() or nodata > values.max())


def warp_bands(
    data: np.ndarray,
    src_transform: Sequence[float],
    src_crs: str,
    dst_transform: Sequence[float],
    dst_crs: str,
    dst_shape: tuple[int, int],
    methods: Sequence[str],
    nodatas: Sequence[float | None],
    *,
    fast: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``data`` ``(bands, h, w)`` (raw values on ``src_transform``) onto a grid.

    Band ``i`` is resampled with ``methods[i]``, ``nodatas[i]`` marking invalid
    source pixels (``None``: every pixel inside the window is valid).  Returns the
    warped raw values ``(bands, *dst_shape)`` (the band's nodata, else 0, where
    nothing lands) and their validity.  ``fast``: leave ``src_nodata`` out for
    windows without nodata pixels (GDAL's fast kernels; same output).
    """
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    quiet_rasterio_warnings()
    n = data.shape[0]
    out = np.empty((n, *dst_shape), dtype=data.dtype)
    valid = np.empty((n, *dst_shape), dtype=bool)
    src_affine = Affine(*src_transform[:6])
    dst_affine = Affine(*dst_transform[:6])
    groups: dict[tuple[str, float | None], list[int]] = {}
    for i, (m, nd) in enumerate(zip(methods, nodatas, strict=True)):
        groups.setdefault((m, nd), []).append(i)
    footprint: np.ndarray | None = None
    for (method, nodata), idx in groups.items():
        src = data[idx] if len(idx) < n else data
        dst = np.empty((len(idx), *dst_shape), dtype=data.dtype)
        dst[...] = nodata if nodata is not None else 0
        src = np.ascontiguousarray(src)
        kwargs: dict[str, Any] = {
            "src_transform": src_affine,
            "src_crs": src_crs,
            "dst_transform": dst_affine,
            "dst_crs": dst_crs,
            "dst_nodata": nodata,
            "resampling": Resampling[method],
            "num_threads": 1,
        }
        if fast and nodata is not None and not has_nodata(src, nodata):
            # GDAL's fast kernel: no pixel of the window is masked.  It does not keep
            # valid pixels off the nodata value as the masked kernel does (a cubic
            # undershoot to 0), nor mark pixels it does not reach apart from them: when
            # the result holds the nodata value, the masked kernel decides.
            reproject(source=src, destination=dst, src_nodata=None, **kwargs)
            if has_nodata(dst, nodata) and not (method in CONVEX and outside_range(src, nodata)):
                dst[...] = nodata
                reproject(source=src, destination=dst, src_nodata=nodata, **kwargs)
        else:
            reproject(source=src, destination=dst, src_nodata=nodata, **kwargs)
        out[idx] = dst
        if nodata is None:  # no nodata value: the window's footprint says what is valid
            if footprint is None:
                footprint = _footprint(
                    data.shape[1:], src_affine, src_crs, dst_affine, dst_crs, dst_shape
                )
            valid[idx] = footprint
        else:
            valid[idx] = valid_of(dst, nodata)
    return out, valid


def _footprint(
    shape: tuple[int, ...],
    src_affine: Any,
    src_crs: str,
    dst_affine: Any,
    dst_crs: str,
    dst_shape: tuple[int, int],
) -> np.ndarray:
    """Where a window of ``shape`` lands on the destination grid (nearest), as booleans."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    inside = np.zeros((1, *dst_shape), dtype=np.uint8)
    reproject(
        source=np.ones((1, *shape), dtype=np.uint8),
        destination=inside,
        src_transform=src_affine,
        src_crs=src_crs,
        dst_transform=dst_affine,
        dst_crs=dst_crs,
        dst_nodata=0,
        resampling=Resampling.nearest,
        num_threads=1,
    )
    return np.asarray(inside[0], dtype=bool)
