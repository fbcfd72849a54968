"""A GeoTIFF (COG) modality: its tiles through the engine, onto each sample's footprint.

The raster is a :class:`~earthstream.TiffSource` input of the engine (its tiles
are chunks: fetched through ``storage/``, decoded once per epoch into the
engine's slots within ``memory_limit``, counted in the epoch report).  For each
sample the planner computes the chip grid (on the primary's grid,
``resolution="common"``, or at the raster's own resolution snapped to its
pixel grid, ``"native"``) and the box of the raster to read:

* a chip on the raster's pixel grid (same CRS and pixel size, whole-pixel
  offset) reads exactly its pixels (parts outside the raster are not read and
  are not valid);
* any other chip reads the pixel window covering its bounds in the raster's
  CRS plus a margin for the resampling kernel (widened by the downsampling
  factor, as GDAL's warper widens its kernel), and the assembler warps it onto
  the chip with :func:`~earthstream.geo._warp.warp_bands` (GDAL's warper, on its
  fast kernel where a window holds no nodata pixel), one call per group of
  bands sharing a nodata value: the same window and warp a windowed
  :func:`~earthstream.geo.read_chip` makes, so results equal
  ``rasterio.warp.reproject`` of the whole file.

Values are decoded (``raw * scale + offset``, float32), 0 where not valid, with
the validity mask; a sample whose chip holds no valid pixel has no data for the
missing-modality policy.  With ``resolution="common"`` the overview level is
chosen once per modality, the coarsest whose pixels are not larger than the
chips' (the finest any chip of the grid needs, when they differ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from ..engine import VarLayout
from ..errors import ConfigError, WindowError
from ..geo._boxes import RADIUS
from ..geo._grid import GridSpec, PixelWindow, normalize_crs, reproject_bounds, transformer
from ..geo._read import RasterBand, check_resampling, pick_overview
from ..geo._warp import valid_of, warp_bands
from ..sources._tiff_source import TiffSource
from ._kind import FRAME
from ._open import Primary
from ._part import ArraySpec, PartPlan, Samples
from ._spec import MissingModality, Modality, RecordInfo

__all__ = ["RasterModality", "raster_input"]

#: Tolerances of :meth:`GridSpec.aligned_with`.
_TOL = 1e-6
_EPS = 1e-6  # of GridSpec.window_from_bounds
#: Points added along each edge when footprints are reprojected in bulk (as
#: :func:`~earthstream.geo.reproject_bounds`).
_DENSIFY = 21
_ALIGNED, _WARP = 0, 1


def raster_input(
    source: Any, bands: Sequence[str | int] | None
) -> tuple[TiffSource, tuple[RasterBand, ...], GridSpec, str, str | None]:
    """The tiles, bands, full-resolution grid, href and item id of a raster modality.

    A :class:`~earthstream.COGSource` keeps its band metadata (names, nodata,
    scale, offset, wavelengths) and grid (which may carry a CRS its header lacks);
    its tiles are read through :func:`~earthstream.open_tiff` (one header request).
    """
    from ..sources._cog import COGSource
    from ..sources._tiff_open import open_tiff

    if isinstance(source, COGSource):
        cog = source.select(list(bands)) if bands else source
        tiff = open_tiff(cog.ref.href, bands=[b.index for b in cog.bands])
        return tiff, cog.bands, cog.grid, cog.ref.href, cog.ref.item_id
    if source.stacked:
        raise ConfigError(
            f"a raster modality is one GeoTIFF; this TiffSource stacks {len(source.files)} files "
            f"along {source.stack_dim!r}. Give each file its own modality."
        )
    tiff = source.overview(None)
    if bands:
        tiff = tiff.select_bands(list(bands))
    info = tiff.files[0].info
    out = []
    for b in tiff.bands:
        desc = info.descriptions[b]
        out.append(
            RasterBand(
                index=b + 1,
                name=desc or f"b{b + 1}",
                nodata=info.nodata,
                scale=float(info.scales[b]),
                offset=float(info.offsets[b]),
                dtype=info.dtypes[b],
                description=desc,
            )
        )
    return tiff, tuple(out), tiff.grid, tiff.files[0].url, None


class RasterModality:
    """A GeoTIFF read over the primary's footprints through the engine (see the module)."""

    def __init__(self, name: str, spec: Modality, source: Any, owner: Primary) -> None:
        self.name = name
        self.missing: MissingModality = spec.missing or owner.missing_modality
        self.native = (spec.resolution or owner.resolution) == "native"
        self.resampling = check_resampling(spec.resampling)
        tiff, bands, grid, href, item_id = raster_input(source, spec.variables)
        if grid.rotated:
            raise WindowError(
                f"modality {name!r}: {href!r} has a rotated grid; only north-up rasters can be "
                "cut to footprints. Warp it north-up first (gdalwarp)."
            )
        self.bands = bands
        self.full = grid
        self.owner = owner
        self.owner_crs = normalize_crs(owner.crs)
        self.same_crs = self.owner_crs == grid.crs
        self.crs = grid.crs if self.native else owner.crs
        h, w = owner.window_len(owner.lat_dim), owner.window_len(owner.lon_dim)
        if self.native:
            # one fixed chip shape: the footprint of the window at the centre of the grid
            lat_c = owner.coords[owner.lat_dim][len(owner.coords[owner.lat_dim]) // 2]
            lon_c = owner.coords[owner.lon_dim][len(owner.coords[owner.lon_dim]) // 2]
            half_h = abs(owner.lat_step) * h / 2
            half_w = abs(owner.lon_step) * w / 2
            box = (lon_c - half_w, lat_c - half_h, lon_c + half_w, lat_c + half_h)
            left, bottom, right, top = reproject_bounds(box, owner.crs, grid.crs)
            h = max(1, round((top - bottom) / grid.res[1]))
            w = max(1, round((right - left) / grid.res[0]))
        self.height, self.width = h, w
        self.flip = owner.lat_step > 0 and not self.native  # primary rows run south to north
        self._origins: dict[tuple[int, int], tuple[float, float]] = {}  # native, other CRS
        self._table: np.ndarray | None = None  # common, other CRS: footprints in the raster's
        # the level read and the frame: the largest box any chip of the grid reads
        self.level: int | None = None
        frame, aligned = (h, w), True  # native chips are on the raster's pixel grid
        if not self.native:
            self.level, frame, aligned = self._common_plan(tiff)
        self.tiff = tiff.overview(self.level) if self.level is not None else tiff
        self.source = self.tiff
        image = self.tiff.images[0]
        self.grid = GridSpec(grid.crs, self.tiff.transform, image.shape)  # the level's
        self.frame = (max(frame[0], h), max(frame[1], w))
        #: some chip is warped: the frames hold read windows, the chips are made apart
        self.warps = not aligned
        info = self.tiff.variables[self.tiff.name]
        self.dtype = np.dtype(info.dtype)
        self.variables: tuple[VarLayout, ...] = (
            VarLayout.of(info, (len(bands), *self.frame), label=f"{name}/{self.tiff.name}"),
        )
        self.meta: tuple[str, ...] = ("transform",)
        self.info = RecordInfo(
            name=name,
            kind="raster",
            layout="CHW",
            dims=("channel", "lat", "lon") if not self.native else ("channel", "y", "x"),
            channels=tuple(b.name for b in bands),
            shape=(len(bands), h, w),
            source=href,
            crs=self.crs,
            resolution=grid.res if self.native else (owner.lat_step, owner.lon_step),
            wavelengths=tuple(b.center_wavelength for b in bands),
            gsd=tuple(b.gsd for b in bands),
            extra={"item_id": item_id, "resampling": self.resampling},
        )

    # -- geometry -------------------------------------------------------------------------
    def _chips(self, bounds: np.ndarray) -> np.ndarray:
        """``(n, 6)`` chip transforms on the primary's grid (``resolution="common"``)."""
        west, south, east, north = bounds.T
        xres = (east - west) / self.width
        yres = (north - south) / self.height
        zero = np.zeros_like(west)
        return np.stack([xres, zero, west, zero, -yres, north], axis=1)

    def _src_bounds(
        self, samples_lat: np.ndarray, samples_lon: np.ndarray, bounds: np.ndarray
    ) -> np.ndarray:
        """Each chip's bounds in the raster's CRS (left, bottom, right, top)."""
        if self.same_crs:
            return bounds
        assert self._table is not None
        k_lat = np.searchsorted(self._lat_starts, samples_lat)
        k_lon = np.searchsorted(self._lon_starts, samples_lon)
        return self._table[k_lat, k_lon]

    def _common_plan(self, tiff: TiffSource) -> tuple[int | None, tuple[int, int], bool]:
        """For chips on the primary's grid: the overview level read, the largest box any
        chip of the grid reads, and whether every chip lies on the raster's pixel grid."""
        owner = self.owner
        self._lat_starts = owner.window_starts(owner.lat_dim)
        self._lon_starts = owner.window_starts(owner.lon_dim)
        if self.same_crs:  # rows follow the latitude start, columns the longitude start
            first_lon = np.full_like(self._lat_starts, self._lon_starts[0])
            first_lat = np.full_like(self._lon_starts, self._lat_starts[0])
            src_lat = owner.footprints(self._lat_starts, first_lon)
            src_lon = owner.footprints(first_lat, self._lon_starts)
            rows = self.full_fraction(src_lat)
            cols = self.full_fraction(src_lon)
            row_scale = (rows[:, 2] - rows[:, 0]) / self.height
            col_scale = (cols[:, 3] - cols[:, 1]) / self.width
            scales = np.array([min(row_scale.min(), col_scale.min())])
            biggest = min(float(row_scale.max()), float(col_scale.max()))
        else:
            lat, lon = np.meshgrid(self._lat_starts, self._lon_starts, indexing="ij")
            src = reproject_many(
                owner.footprints(lat.ravel(), lon.ravel()), self.owner_crs, self.full.crs
            )
            self._table = src.reshape(len(self._lat_starts), len(self._lon_starts), 4)
            frac = self.full_fraction(src)
            scales = np.minimum(
                (frac[:, 2] - frac[:, 0]) / self.height, (frac[:, 3] - frac[:, 1]) / self.width
            )
            biggest = float(scales.max(initial=1.0))
            src_lat = src_lon = src
        levels = {pick_overview(tiff.overviews, float(s)) for s in scales}
        level = None if None in levels else min(lv for lv in levels if lv is not None)
        read = tiff.overview(level)
        grid = GridSpec(self.full.crs, read.transform, read.images[0].shape)
        aligned = False
        if self.same_crs:
            lat_chips = self._chips(src_lat)
            lon_chips = self._chips(src_lon)
            a, _, c, _, e, f = grid.transform
            col = (lon_chips[:, 2] - c) / a
            row = (lat_chips[:, 5] - f) / e
            aligned = bool(
                (np.abs(a - lon_chips[:, 0]) <= _TOL * abs(a)).all()
                and (np.abs(e - lat_chips[:, 4]) <= _TOL * abs(e)).all()
                and (np.abs(col - np.round(col)) <= _TOL).all()
                and (np.abs(row - np.round(row)) <= _TOL).all()
            )
        if aligned:
            return level, (self.height, self.width), True
        margin = self._margin(biggest, grid)
        rows_b = _windows(grid, src_lat, margin)
        cols_b = _windows(grid, src_lon, margin)
        return level, (int(rows_b[:, 2].max(initial=0)), int(cols_b[:, 3].max(initial=0))), False

    def full_fraction(self, bounds: np.ndarray) -> np.ndarray:
        """``(n, 4)`` fractional pixel windows (row0, col0, row1, col1) at full resolution."""
        return _fraction(self.full, bounds)

    def _margin(self, scale: float | np.ndarray, grid: GridSpec) -> Any:
        widen = np.maximum(1.0, np.asarray(scale) * self.full.res[0] / grid.res[0])
        return np.ceil(RADIUS.get(self.resampling, 1) * widen).astype(np.int64) + 2

    def _native_origins(self, samples: Samples) -> tuple[np.ndarray, np.ndarray]:
        """Upper-left corner of each native chip, snapped to the raster's pixel grid."""
        full = self.full
        xres, yres = full.res
        t = full.transform
        if self.same_crs:
            left, bottom, right, top = samples.bounds.T
        else:  # each footprint once, exactly as reproject_bounds gives it
            keys = list(zip(samples.lat.tolist(), samples.lon.tolist(), strict=True))
            missing = [i for i, key in enumerate(keys) if key not in self._origins]
            if missing:
                bounds = samples.bounds
                for i in missing:
                    b = reproject_bounds(bounds[i], self.owner_crs, full.crs)
                    self._origins[keys[i]] = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
            centre = np.array([self._origins[key] for key in keys], dtype=np.float64)
            cx, cy = (centre[:, 0], centre[:, 1]) if len(keys) else (np.zeros(0), np.zeros(0))
            return self._snap(cx, cy, xres, yres, t)
        return self._snap((left + right) / 2, (bottom + top) / 2, xres, yres, t)

    def _snap(
        self,
        cx: np.ndarray,
        cy: np.ndarray,
        xres: float,
        yres: float,
        t: tuple[float, ...],
    ) -> tuple[np.ndarray, np.ndarray]:
        x0 = t[2] + np.round((cx - xres * self.width / 2 - t[2]) / xres) * xres
        y0 = t[5] - np.round((t[5] - (cy + yres * self.height / 2)) / yres) * yres
        return x0, y0

    # -- what a batch holds ---------------------------------------------------------------
    def arrays(self) -> tuple[ArraySpec, ...]:
        shape = self.info.shape
        out = [
            ArraySpec(self.name + "/mask", shape, np.dtype(bool), dims=self.info.dims),
            ArraySpec(self.name, shape, np.dtype(np.float32), dims=self.info.dims),
            ArraySpec(self.name + "/present", (), np.dtype(bool)),
            ArraySpec(FRAME + self.name, (len(self.bands), *self.frame), self.dtype, output=False),
        ]
        if self.warps:
            out.append(ArraySpec(FRAME + self.name + "/chip", shape, self.dtype, output=False))
        return tuple(out)

    def group_nbytes(self, chunks: Mapping[str, int]) -> int:
        owner = self.owner
        tile_h, tile_w = self.tiff.images[0].block_shape
        rows = chunks.get(owner.lat_dim, 1) * self.frame[0] / owner.window_len(owner.lat_dim)
        cols = chunks.get(owner.lon_dim, 1) * self.frame[1] / owner.window_len(owner.lon_dim)
        rows = min(self.grid.height, max(tile_h, math.ceil(rows)))
        cols = min(self.grid.width, max(tile_w, math.ceil(cols)))
        return len(self.bands) * rows * cols * self.dtype.itemsize

    def dest(self, data: Mapping[str, np.ndarray], j: int) -> np.ndarray:
        return data[FRAME + self.name]

    # -- boxes ----------------------------------------------------------------------------
    def plan(self, samples: Samples) -> PartPlan:
        n = len(samples)
        grid = self.grid
        a, _, c, _, e, f = grid.transform
        h, w = self.height, self.width
        mode = np.full(n, _WARP, dtype=np.int8)
        window = np.zeros((n, 4), dtype=np.int64)  # row, col, height, width at the level read
        if self.native:
            x0, y0 = self._native_origins(samples)
            xres, yres = self.full.res
            chips = np.stack(
                [np.full(n, xres), np.zeros(n), x0, np.zeros(n), np.full(n, -yres), y0], axis=1
            )
            col, row = (x0 - c) / a, (y0 - f) / e
            mode[:] = _ALIGNED
            window[:] = np.stack([np.round(row), np.round(col), np.full(n, h), np.full(n, w)], 1)
        else:
            bounds = samples.bounds
            chips = self._chips(bounds)
            if self.same_crs:  # on the raster's pixel grid: its pixels, no resampling
                oa, oc, oe, of = chips[:, 0], chips[:, 2], chips[:, 4], chips[:, 5]
                col, row = (oc - c) / a, (of - f) / e
                aligned = (
                    (np.abs(a - oa) <= _TOL * abs(a))
                    & (np.abs(e - oe) <= _TOL * abs(e))
                    & (np.abs(col - np.round(col)) <= _TOL)
                    & (np.abs(row - np.round(row)) <= _TOL)
                )
                mode[aligned] = _ALIGNED
                window[aligned] = np.stack(
                    [np.round(row), np.round(col), np.full(n, h), np.full(n, w)], 1
                )[aligned]
            warp = mode == _WARP
            if warp.any():
                src = self._src_bounds(samples.lat[warp], samples.lon[warp], bounds[warp])
                frac = self.full_fraction(src)
                scale = np.minimum((frac[:, 2] - frac[:, 0]) / h, (frac[:, 3] - frac[:, 1]) / w)
                window[warp] = _windows(grid, src, self._margin(scale, grid))
        starts = np.zeros((n, 3), dtype=np.int64)
        starts[:, 1:] = window[:, :2]
        extents = np.zeros((n, 3), dtype=np.int64)
        extents[:, 0] = len(self.bands)
        extents[:, 1:] = window[:, 2:]
        if (extents[:, 1] > self.frame[0]).any() or (extents[:, 2] > self.frame[1]).any():
            raise RuntimeError(  # pragma: no cover - the frame bounds every window of the grid
                f"modality {self.name!r}: a chip needs a window larger than planned"
            )
        extra = {"transform": chips, "_mode": mode, "_window": window}
        return PartPlan([starts], [extents], [()], extra)

    # -- records --------------------------------------------------------------------------
    def complete(self, data: MutableMapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        frame = data.pop(FRAME + self.name)
        chip = data.pop(FRAME + self.name + "/chip", None)
        out, valid = data[self.name], data[self.name + "/mask"]
        mode, window = extra["_mode"], extra["_window"]
        h, w = self.height, self.width
        n = len(mode)
        grid = self.grid
        if chip is None:
            chip = frame  # every chip is a box of the raster's own pixels
        nodatas = [b.nodata for b in self.bands]
        aligned = np.flatnonzero(mode == _ALIGNED)
        valid[...] = False
        if len(aligned):
            if chip is not frame:
                chip[aligned] = frame[aligned, :, :h, :w]
            rows = window[aligned, :1] + np.arange(h)  # (k, h) rows of the level read
            cols = window[aligned, 1:2] + np.arange(w)
            inside = ((rows >= 0) & (rows < grid.height))[:, :, None] & (
                (cols >= 0) & (cols < grid.width)
            )[:, None, :]
            for i, nodata in enumerate(nodatas):
                valid[aligned, i] = inside & valid_of(chip[aligned, i], nodata)
        for r in np.flatnonzero(mode == _WARP).tolist():
            row, col, hh, ww = (int(v) for v in window[r])
            if hh <= 0 or ww <= 0:  # the chip does not touch the raster
                for i, nodata in enumerate(nodatas):
                    chip[r, i] = nodata if nodata is not None else 0
                continue
            src = grid.window(PixelWindow(row, col, hh, ww))
            chip[r], valid[r] = warp_bands(
                frame[r][:, :hh, :ww], src.transform, src.crs, tuple(extra["transform"][r]),
                self.crs, (h, w), [self.resampling] * len(nodatas), nodatas,
            )  # fmt: skip
        for i, band in enumerate(self.bands):  # raw * scale + offset, 0 where not valid
            # only valid pixels are computed: the others may hold whatever the frame
            # held (memory past a raster's edge is not filled), never read
            target, where = out[:, i], valid[:, i]
            target[...] = 0.0
            np.multiply(chip[:, i, :h, :w], band.scale, out=target, where=where, casting="unsafe")
            np.add(target, band.offset, out=target, where=where)
        if self.flip:
            out[...] = out[:, :, ::-1]
            valid[...] = valid[:, :, ::-1]
        data[self.name + "/present"][...] = valid.reshape(n, -1).any(axis=1)


def _fraction(grid: GridSpec, bounds: np.ndarray) -> np.ndarray:
    """``GridSpec.fractional_window`` of many bounds: ``(n, 4)`` row0, col0, row1, col1."""
    a, _, c, _, e, f = grid.transform
    left, bottom, right, top = np.asarray(bounds, dtype=np.float64).T
    ca, cb = (left - c) / a, (right - c) / a
    ra, rb = (top - f) / e, (bottom - f) / e
    return np.stack(
        [np.minimum(ra, rb), np.minimum(ca, cb), np.maximum(ra, rb), np.maximum(ca, cb)], axis=1
    )


def _windows(grid: GridSpec, bounds: np.ndarray, margin: Any) -> np.ndarray:
    """``(n, 4)`` row, col, height, width: the pixel windows covering ``bounds`` in ``grid``
    (``window_from_bounds``), padded by ``margin`` and clipped to the grid."""
    frac = _fraction(grid, bounds)
    row = np.floor(frac[:, 0] + _EPS).astype(np.int64)
    col = np.floor(frac[:, 1] + _EPS).astype(np.int64)
    height = np.ceil(frac[:, 2] - _EPS).astype(np.int64) - row
    width = np.ceil(frac[:, 3] - _EPS).astype(np.int64) - col
    m = np.broadcast_to(np.asarray(margin, dtype=np.int64), row.shape)
    r0, c0 = np.maximum(row - m, 0), np.maximum(col - m, 0)
    r1 = np.minimum(row + height + m, grid.height)
    c1 = np.minimum(col + width + m, grid.width)
    empty = (r1 <= r0) | (c1 <= c0)
    out = np.stack([r0, c0, np.maximum(r1 - r0, 0), np.maximum(c1 - c0, 0)], axis=1)
    out[empty, 2:] = 0
    return out


def reproject_many(bounds: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Many bounds from ``src`` into ``dst``, each edge densified (one vectorized transform:
    the bounds of the transformed edge points, as ``reproject_bounds`` away from the
    antimeridian and poles, where these are wider)."""
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    t = np.linspace(0.0, 1.0, _DENSIFY + 2)
    out = np.empty_like(bounds)
    step = max(1, 200_000 // len(t))
    for lo in range(0, len(bounds), step):
        part = bounds[lo : lo + step]
        left, bottom, right, top = (part[:, i : i + 1] for i in range(4))
        ones = np.ones_like(t)
        xs = np.concatenate(
            [left + (right - left) * t, right * ones, right - (right - left) * t, left * ones],
            axis=1,
        )
        ys = np.concatenate(
            [bottom * ones, bottom + (top - bottom) * t, top * ones, top - (top - bottom) * t],
            axis=1,
        )
        x, y = transformer(src, dst).transform(xs, ys)
        x, y = np.asarray(x), np.asarray(y)
        out[lo : lo + step] = np.stack(
            [np.nanmin(x, 1), np.nanmin(y, 1), np.nanmax(x, 1), np.nanmax(y, 1)], axis=1
        )
    return out
