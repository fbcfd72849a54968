"""Reading one raster onto one chip grid: window, overview, read, reproject.

The unit of work of the chip stream.  For a chip (a small :class:`GridSpec`)
and a raster file (:class:`RasterRef`):

1. the chip's bounds are reprojected into the raster's CRS;
2. the overview is chosen: the coarsest whose pixels are not larger than the
   chip's pixels seen in the raster's CRS (``overview="auto"``);
3. the pixel window covering those bounds (plus a margin for the resampling
   kernel) is read, so GDAL fetches only the internal tiles it touches;
4. if the chip lies on the raster's pixel grid (same CRS and pixel size, whole
   pixel offset) the window is the chip; otherwise it is reprojected onto the
   chip with GDAL's warper (``rasterio.warp.reproject``), one call per group
   of bands sharing a resampling method and nodata value.

The result is the raw values (the file's dtype) and a validity mask; scale,
offset and mosaicking are the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._boxes import RADIUS
from ._gdal import gdal_env, open_dataset
from ._grid import GridSpec, PixelWindow, reproject_bounds
from ._warp import valid_of, warp_bands

__all__ = [
    "RESAMPLING",
    "ChipRead",
    "RasterBand",
    "RasterRef",
    "check_resampling",
    "pick_overview",
    "read_chip",
]

#: Resampling methods (GDAL's names).
RESAMPLING = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "max",
    "min",
    "med",
    "q1",
    "q3",
    "sum",
    "rms",
)


def check_resampling(name: str) -> str:
    if name not in RESAMPLING:
        raise ConfigError(
            f"resampling={name!r} is not a method; use one of {', '.join(RESAMPLING)}."
        )
    return name


@dataclass(frozen=True)
class RasterBand:
    """One band of a raster file: where it is, what it is called, how to decode it."""

    index: int  # 1-based band index in the file
    name: str
    nodata: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    dtype: str | None = None
    center_wavelength: float | None = None  # micrometres (eo:center_wavelength)
    common_name: str | None = None
    gsd: float | None = None
    description: str | None = None


@dataclass(frozen=True)
class RasterRef:
    """One raster file and the bands to take from it; plain and picklable.

    ``grid`` is the full-resolution grid (from STAC projection metadata or the
    file's header).  ``datetime`` orders and groups rasters in time.
    """

    href: str
    path: str  # what GDAL opens (``/vsicurl/...`` for URLs)
    grid: GridSpec
    bands: tuple[RasterBand, ...]
    datetime: np.datetime64 | None = None
    item_id: str | None = None
    asset: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.grid.bounds


@dataclass
class ChipRead:
    """What reading one raster for one chip cost and chose (for reports and tests)."""

    overview_level: int | None = None  # None: full resolution
    window: PixelWindow | None = None  # read window at that level
    aligned: bool = False  # the chip lies on the raster's pixel grid (no resampling)
    skipped: bool = False  # the chip does not touch the raster


def pick_overview(factors: Sequence[int], scale: float) -> int | None:
    """The overview level to read when each chip pixel spans ``scale`` raster pixels.

    The coarsest overview whose decimation factor is at most ``scale``;
    ``None`` for full resolution.

    >>> pick_overview([2, 4, 8], 1.0), pick_overview([2, 4, 8], 4.5), pick_overview([2, 4, 8], 99)
    (None, 1, 2)
    """
    level = None
    for i, f in enumerate(factors):
        if f <= scale * (1 + 1e-6):
            level = i
    return level


def _nodata(band: RasterBand, file_nodata: Any) -> float | None:
    if band.nodata is not None:
        return band.nodata
    return None if file_nodata is None else float(file_nodata)


def read_chip(
    ref: RasterRef,
    chip: GridSpec,
    *,
    resampling: Sequence[str] | str = "nearest",
    overview: str | int | None = "auto",
    out: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    gdal_options: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, ChipRead]:
    """Read ``ref``'s bands onto ``chip``.

    Parameters
    ----------
    ref
        The raster and its bands.
    chip
        The target grid (any CRS, resolution and alignment).
    resampling
        One method for all bands, or one per band (see :data:`RESAMPLING`).
    overview
        ``"auto"`` picks the overview matching the chip's resolution, ``None``
        always reads full resolution, an int reads that overview level.
    out, valid
        Optional ``(C, H, W)`` arrays to fill (``out`` in the file's dtype);
        pixels the raster does not cover are left as they are.

    Returns
    -------
    (values, valid, info)
        Raw values ``(C, H, W)``, validity ``(C, H, W)`` (inside the raster and
        not nodata), and what was read.
    """
    n = len(ref.bands)
    methods = (resampling,) * n if isinstance(resampling, str) else tuple(resampling)
    if len(methods) != n:
        raise ConfigError(
            f"resampling has {len(methods)} methods for {n} bands; give one per band."
        )
    info = ChipRead()
    with gdal_env(gdal_options):
        ds = open_dataset(ref.path)
        dtype = np.dtype(ds.dtypes[ref.bands[0].index - 1])
        if out is None:
            out = np.zeros((n, *chip.shape), dtype=dtype)
        if valid is None:
            valid = np.zeros((n, *chip.shape), dtype=bool)
        nodatas = [_nodata(b, ds.nodatavals[b.index - 1]) for b in ref.bands]
        grid = ref.grid  # from the header or STAC metadata (which may override a missing CRS)
        src_bounds = reproject_bounds(chip.bounds, chip.crs, grid.crs)
        r0, c0, r1, c1 = grid.fractional_window(src_bounds)
        scale = min((r1 - r0) / chip.height, (c1 - c0) / chip.width)
        level = _level(ds, overview, scale)
        if level is not None:
            ds = open_dataset(ref.path, level)
            grid = GridSpec(grid.crs, tuple(ds.transform)[:6], ds.shape)
        info.overview_level = level

        offset = grid.aligned_with(chip)
        if offset is not None:  # the chip is on the raster's pixel grid: a plain windowed read
            info.aligned = True
            want = PixelWindow(offset[0], offset[1], chip.height, chip.width)
            win = want.intersection(grid.full_window())
            info.window = win
            if win.empty:
                info.skipped = True
                return out, valid, info
            data = _read(ds, ref.bands, win)
            rows = slice(win.row - want.row, win.row - want.row + win.height)
            cols = slice(win.col - want.col, win.col - want.col + win.width)
            for i, nodata in enumerate(nodatas):
                ok = valid_of(data[i], nodata) & ~valid[i, rows, cols]  # first valid pixel wins
                np.copyto(out[i, rows, cols], data[i], where=ok, casting="unsafe")
                valid[i, rows, cols] |= ok
            return out, valid, info

        # GDAL widens the kernel by the downsampling factor; read that much around the chip
        widen = max(1.0, scale * ref.grid.res[0] / grid.res[0])
        margin = max(math.ceil(RADIUS.get(m, 1) * widen) for m in methods) + 2
        win = grid.window_from_bounds(src_bounds).pad(margin).intersection(grid.full_window())
        info.window = win
        if win.empty:
            info.skipped = True
            return out, valid, info
        data = _read(ds, ref.bands, win)
        src = grid.window(win)
        raw, ok = warp_bands(
            data, src.transform, src.crs, chip.transform, chip.crs, chip.shape, methods, nodatas
        )
        for i in range(n):
            np.copyto(out[i], raw[i], where=ok[i] & ~valid[i], casting="unsafe")
            valid[i] |= ok[i]
    return out, valid, info


def _level(ds: Any, overview: str | int | None, scale: float) -> int | None:
    if overview is None:
        return None
    factors = ds.overviews(1)
    if overview == "auto":
        return pick_overview(factors, scale)
    if isinstance(overview, int) and not isinstance(overview, bool):
        if not 0 <= overview < len(factors):
            raise ConfigError(
                f"overview={overview} but {ds.name!r} has {len(factors)} overviews "
                f"(factors {factors}); use 0..{len(factors) - 1}, 'auto' or None."
            )
        return overview
    raise ConfigError(f"overview={overview!r} must be 'auto', None or an overview level.")


def _read(ds: Any, bands: Sequence[RasterBand], win: PixelWindow) -> np.ndarray:
    from rasterio.windows import Window

    window = Window(win.col, win.row, win.width, win.height)
    return np.asarray(ds.read([b.index for b in bands], window=window))


def decode(
    values: np.ndarray,
    valid: np.ndarray,
    bands: Sequence[RasterBand],
    dtype: Any = np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Physical values: ``raw * scale + offset`` per band, NaN where not valid.

    >>> b = RasterBand(1, "b", nodata=0, scale=0.5, offset=1.0)
    >>> decode(np.array([[[0, 4]]], np.uint16), np.array([[[False, True]]]), [b]).tolist()
    [[[nan, 3.0]]]
    """
    if out is None:
        out = np.empty(values.shape, dtype=dtype)
    for i, band in enumerate(bands):
        np.multiply(values[i], band.scale, out=out[i], casting="unsafe")
        out[i] += band.offset
        out[i][~valid[i]] = np.nan
    return out
