"""Chips -> pixel windows of a raster: which pixels a chip on another grid needs, vectorized.

The geometry of reading a chip (a window of a target grid, any CRS and
resolution) from a raster, for many chips at once, as :func:`read_chip` does it
for one:

1. the chip's bounds are reprojected into the raster's CRS (edges densified, as
   ``pyproj``'s ``transform_bounds``);
2. ``scale``: how many full-resolution raster pixels one chip pixel spans (what
   ``overview="auto"`` picks an overview level from);
3. if the chip lies on the raster's (overview) pixel grid, its window *is* the
   chip (``aligned``: no resampling, the window may reach past the raster's
   edges); otherwise the window covering the bounds, widened by a margin for the
   resampling kernel (the kernel's radius times the downsampling factor, as
   GDAL's warper widens it, plus 2), clipped to the raster.

Pure NumPy and pyproj: no GDAL, no I/O.  :mod:`earthstream.chips` plans engine
boxes (tiles as chunks) from these windows; secondary modalities can too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import WindowError
from ._grid import GridSpec, is_geographic, reproject_bounds, transformer

__all__ = [
    "RADIUS",
    "RasterLevel",
    "Windows",
    "chip_bounds",
    "chip_transforms",
    "kernel_radius",
    "raster_windows",
    "transform_bounds",
]

#: Resampling kernel radius in source pixels (GDAL's warper); methods not listed: 1.
RADIUS = {"nearest": 0, "bilinear": 1, "cubic": 2, "cubic_spline": 2, "lanczos": 3}

#: Points added along each edge when bounds are reprojected (pyproj's default).
DENSIFY = 21


def kernel_radius(methods: Sequence[str]) -> int:
    """The widest kernel radius of ``methods`` (pixels).

    >>> kernel_radius(["nearest", "cubic"])
    2
    """
    return max((RADIUS.get(m, 1) for m in methods), default=0)


def chip_transforms(grid: GridSpec, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(n, 6)`` affine transforms of the chips of ``grid`` starting at pixel ``(row, col)``:
    exactly what ``grid.window(PixelWindow(row, col, h, w)).transform`` holds."""
    a, b, _, d, e, _ = grid.transform
    x0, y0 = grid.xy(rows, cols)
    n = len(x0)
    out = np.empty((n, 6), dtype=np.float64)
    out[:, 0], out[:, 1], out[:, 2] = a, b, x0
    out[:, 3], out[:, 4], out[:, 5] = d, e, y0
    return out


def chip_bounds(transforms: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """``(n, 4)`` ``(left, bottom, right, top)`` of chips with ``transforms`` and shapes, as
    :attr:`GridSpec.bounds` computes them (the extremes of the four corners).

    >>> g = GridSpec.from_bounds("EPSG:32633", (500000, 4990000, 510000, 5000000), 10)
    >>> t = chip_transforms(g, np.array([100]), np.array([200]))
    >>> chip_bounds(t, np.array([64]), np.array([64])).tolist()
    [[502000.0, 4998360.0, 502640.0, 4999000.0]]
    """
    a, b, c, d, e, f = (transforms[:, k : k + 1] for k in range(6))
    h = np.asarray(heights, dtype=np.float64)[:, None]
    w = np.asarray(widths, dtype=np.float64)[:, None]
    zero = np.zeros_like(h)
    rows = np.concatenate([zero, zero, h, h], axis=1)
    cols = np.concatenate([zero, w, zero, w], axis=1)
    xs = c + a * cols + b * rows
    ys = f + d * cols + e * rows
    return np.column_stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)])


def transform_bounds(
    bounds: np.ndarray, src_crs: str, dst_crs: str, densify: int = DENSIFY
) -> np.ndarray:
    """``(n, 4)`` bounds in ``src_crs`` as bounds in ``dst_crs``, vectorized.

    Each edge is densified with ``densify`` points (as ``pyproj``'s
    ``transform_bounds``, which takes one box at a time); boxes whose result
    would wrap around the antimeridian or hold a pole go through
    :func:`~earthstream.geo.reproject_bounds` one by one.

    >>> b = transform_bounds(np.array([[500000., 0, 600000, 100000]]), "EPSG:32633", "EPSG:4326")
    >>> [round(float(v), 3) for v in b[0]]
    [15.0, 0.0, 15.899, 0.905]
    """
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    if src_crs == dst_crs or not len(bounds):
        return bounds.copy()
    steps = densify + 1
    t = np.arange(steps, dtype=np.float64) / steps  # (steps,): corners once each
    left, bottom, right, top = (bounds[:, k : k + 1] for k in range(4))
    xs = np.concatenate(
        [left + (right - left) * t, np.broadcast_to(right, (len(bounds), steps)),
         right - (right - left) * t, np.broadcast_to(left, (len(bounds), steps))],
        axis=1,
    )  # fmt: skip
    ys = np.concatenate(
        [np.broadcast_to(bottom, (len(bounds), steps)), bottom + (top - bottom) * t,
         np.broadcast_to(top, (len(bounds), steps)), top - (top - bottom) * t],
        axis=1,
    )  # fmt: skip
    tx, ty = transformer(src_crs, dst_crs).transform(xs.ravel(), ys.ravel())
    tx = np.asarray(tx, dtype=np.float64).reshape(xs.shape)
    ty = np.asarray(ty, dtype=np.float64).reshape(ys.shape)
    out = np.column_stack([tx.min(1), ty.min(1), tx.max(1), ty.max(1)])
    odd = ~np.isfinite(out).all(axis=1)
    if is_geographic(dst_crs):
        odd |= (out[:, 2] - out[:, 0]) > 180  # across the antimeridian
        odd |= (out[:, 3] > 89.9) | (out[:, 1] < -89.9)  # near a pole
    for i in np.flatnonzero(odd):
        out[i] = reproject_bounds(bounds[i], src_crs, dst_crs)
    return out


@dataclass(frozen=True)
class RasterLevel:
    """A raster's full-resolution grid and the grid of the level read (``level`` None:
    full resolution; else overview ``level``, ``factor`` times coarser)."""

    full: GridSpec
    grid: GridSpec
    level: int | None = None

    @classmethod
    def of(cls, full: GridSpec, level: int | None, shape: tuple[int, int]) -> RasterLevel:
        """Overview ``level`` of shape ``shape`` of the raster on ``full`` (its transform is
        the full one scaled by the size ratio, as GDAL computes it)."""
        if level is None:
            return cls(full, full, None)
        a, b, c, d, e, f = full.transform
        h, w = shape
        sx, sy = full.width / w, full.height / h
        grid = GridSpec(full.crs, (a * sx, b * sy, c, d * sx, e * sy, f), (h, w))
        return cls(full, grid, level)


@dataclass
class Windows:
    """Pixel windows of a raster level for ``n`` chips, as parallel arrays.

    ``row``/``col``/``height``/``width``: the window at the level read (aligned
    chips: the chip itself, possibly reaching past the raster's edges; others:
    clipped to the raster).  ``aligned``: the chip lies on the level's pixel grid
    (a plain copy, no resampling).  ``empty``: the chip needs no pixel of the raster.
    ``scale``: full-resolution raster pixels per chip pixel.  ``span``: ``(n, 2)``
    rows and columns of the level the chip's bounds cover (before the margin).
    """

    row: np.ndarray
    col: np.ndarray
    height: np.ndarray
    width: np.ndarray
    aligned: np.ndarray
    empty: np.ndarray
    scale: np.ndarray
    span: np.ndarray


def _aligned(raster: GridSpec, crs: str, transforms: np.ndarray) -> tuple[np.ndarray, ...]:
    """Which chips lie on ``raster``'s pixel grid (as :meth:`GridSpec.aligned_with`), and
    their ``(row, col)`` offsets there."""
    n = len(transforms)
    no = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if raster.crs != crs or raster.rotated:
        return no
    a, _, c, _, e, f = raster.transform
    tol = 1e-6
    same = (
        (transforms[:, 1] == 0)
        & (transforms[:, 3] == 0)
        & (np.abs(a - transforms[:, 0]) <= tol * abs(a))
        & (np.abs(e - transforms[:, 4]) <= tol * abs(e))
    )
    col = (transforms[:, 2] - c) / a
    row = (transforms[:, 5] - f) / e
    whole = (np.abs(col - np.round(col)) <= 1e-6) & (np.abs(row - np.round(row)) <= 1e-6)
    ok = same & whole
    return ok, np.round(row).astype(np.int64), np.round(col).astype(np.int64)


def raster_windows(
    transforms: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    crs: str,
    raster: RasterLevel,
    radius: int,
    *,
    src_bounds: np.ndarray | None = None,
) -> Windows:
    """The window of ``raster`` each chip needs (see the module's docstring).

    ``transforms`` ``(n, 6)``, ``heights``/``widths`` ``(n,)``: the chips (in ``crs``);
    ``radius``: the widest resampling kernel used (:func:`kernel_radius`).
    ``src_bounds``: the chips' bounds already in the raster's CRS, if known.

    Examples
    --------
    A chip on the raster's own grid is its own window; one at half the resolution
    in another CRS needs a larger window (plus the kernel's margin):

    >>> full = GridSpec.from_bounds("EPSG:32633", (500000, 4980000, 505120, 4985120), 10)
    >>> level = RasterLevel.of(full, None, full.shape)
    >>> t = chip_transforms(full, np.array([10]), np.array([20]))
    >>> w = raster_windows(t, np.array([64]), np.array([64]), full.crs, level, 1)
    >>> bool(w.aligned[0]), int(w.row[0]), int(w.col[0]), int(w.height[0])
    (True, 10, 20, 64)
    >>> geo = GridSpec.from_bounds("EPSG:4326", (15.0, 44.96, 15.06, 45.0), 0.0002)
    >>> t = chip_transforms(geo, np.array([40]), np.array([40]))
    >>> w = raster_windows(t, np.array([32]), np.array([32]), geo.crs, level, 1)
    >>> bool(w.aligned[0]), int(w.height[0]) > 32, round(float(w.scale[0]), 2)
    (False, True, 1.58)
    """
    n = len(transforms)
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    full, grid = raster.full, raster.grid
    if full.rotated or grid.rotated:
        raise WindowError("windows from bounds need a north-up raster (no rotation terms).")
    if src_bounds is None:
        src_bounds = transform_bounds(chip_bounds(transforms, heights, widths), crs, full.crs)
    # fractional window at full resolution -> how many raster pixels a chip pixel spans
    a, _, c, _, e, f = full.transform
    c0, c1 = np.sort(np.stack([(src_bounds[:, 0] - c) / a, (src_bounds[:, 2] - c) / a]), axis=0)
    r0, r1 = np.sort(np.stack([(src_bounds[:, 3] - f) / e, (src_bounds[:, 1] - f) / e]), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.minimum((r1 - r0) / heights, (c1 - c0) / widths)
    aligned, arow, acol = _aligned(grid, crs, transforms)
    # not aligned: the covering window at the level, plus the kernel's margin
    la, _, lc, _, le, lf = grid.transform
    lc0, lc1 = np.sort(np.stack([(src_bounds[:, 0] - lc) / la, (src_bounds[:, 2] - lc) / la]), 0)
    lr0, lr1 = np.sort(np.stack([(src_bounds[:, 3] - lf) / le, (src_bounds[:, 1] - lf) / le]), 0)
    eps = 1e-6
    wrow = np.floor(lr0 + eps)
    wcol = np.floor(lc0 + eps)
    wh = np.ceil(lr1 - eps) - wrow
    ww = np.ceil(lc1 - eps) - wcol
    widen = np.maximum(1.0, scale * full.res[0] / grid.res[0])
    margin = np.ceil(radius * widen) + 2 if radius else np.full(n, 2.0)
    top = np.maximum(wrow - margin, 0)
    left = np.maximum(wcol - margin, 0)
    bottom = np.minimum(wrow + wh + margin, grid.height)
    right = np.minimum(wcol + ww + margin, grid.width)
    ok = np.isfinite(top) & np.isfinite(left) & np.isfinite(bottom) & np.isfinite(right)
    top, left = np.where(ok, top, 0), np.where(ok, left, 0)
    bottom, right = np.where(ok, bottom, 0), np.where(ok, right, 0)
    row = np.where(aligned, arow, top.astype(np.int64))
    col = np.where(aligned, acol, left.astype(np.int64))
    height = np.where(aligned, heights, np.maximum(bottom - top, 0).astype(np.int64))
    width = np.where(aligned, widths, np.maximum(right - left, 0).astype(np.int64))
    inside_h = np.minimum(row + height, grid.height) - np.maximum(row, 0)
    inside_w = np.minimum(col + width, grid.width) - np.maximum(col, 0)
    empty = (inside_h <= 0) | (inside_w <= 0)
    span = np.column_stack([lr1 - lr0, lc1 - lc0])
    return Windows(row, col, height, width, aligned, empty, scale, span)
