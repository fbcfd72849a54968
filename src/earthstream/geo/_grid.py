"""Grids: a CRS, an affine transform and a shape; windows in pixels and in the world.

A :class:`GridSpec` is a plain frozen description (it pickles, hashes and
compares by value).  The CRS is kept as a string, ``"EPSG:<code>"`` when the CRS
has an EPSG code and WKT2 otherwise, so grids from a GeoTIFF header, STAC
metadata and user input compare equal when they are the same grid.  Only
pyproj and affine are needed (no GDAL).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CRSError, WindowError

__all__ = [
    "Bounds",
    "GridSpec",
    "PixelWindow",
    "crs_units",
    "normalize_crs",
    "reproject_bounds",
    "transformer",
]

Bounds = tuple[float, float, float, float]  # (left, bottom, right, top) = (xmin, ymin, xmax, ymax)


# -- CRS ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _normalize_text(text: str) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError as ProjCRSError

    try:
        crs = CRS.from_user_input(text)
    except ProjCRSError as exc:
        raise CRSError(
            f"crs={text!r} is not a coordinate reference system pyproj knows: {exc}. Pass an "
            "EPSG code ('EPSG:32633' or 32633), WKT, or PROJJSON."
        ) from None
    code = crs.to_epsg(min_confidence=70)
    if code is not None:
        return f"EPSG:{code}"
    auth = crs.to_authority(min_confidence=70)
    if auth is not None and auth[0] in ("OGC", "ESRI", "IAU_2015"):
        return f"{auth[0]}:{auth[1]}"
    return str(crs.to_wkt())


def normalize_crs(crs: Any, *, what: str = "crs") -> str:
    """A canonical string for any CRS pyproj understands.

    ``"EPSG:<code>"`` when one matches, else an ``"OGC:..."`` code or WKT2.
    ``None`` or an empty value raise :class:`~earthstream.errors.CRSError`.

    >>> normalize_crs(4326), normalize_crs("epsg:32633")
    ('EPSG:4326', 'EPSG:32633')
    >>> normalize_crs("OGC:CRS84")
    'OGC:CRS84'
    """
    if crs is None or (isinstance(crs, str | dict) and not crs):
        raise CRSError(
            f"{what} is missing; pass a CRS, e.g. {what}='EPSG:4326' or an EPSG code like 32633."
        )
    if isinstance(crs, bool):
        raise CRSError(f"{what}={crs!r} is not a CRS; pass e.g. 'EPSG:4326'.")
    if isinstance(crs, int | np.integer):
        return _normalize_text(f"EPSG:{int(crs)}")
    if isinstance(crs, dict):
        import json

        return _normalize_text(json.dumps(crs, sort_keys=True))
    if not isinstance(crs, str):
        to_wkt = getattr(crs, "to_wkt", None)  # pyproj.CRS, rasterio.crs.CRS
        if to_wkt is None:
            raise CRSError(f"{what}={crs!r} is not a CRS; pass e.g. 'EPSG:4326'.")
        crs = str(to_wkt())
    return _normalize_text(crs)


@functools.lru_cache(maxsize=256)
def crs_units(crs: str) -> str:
    """Units of the CRS's first axis: ``"degree"``, ``"metre"``, ``"US survey foot"`` ...

    >>> crs_units("EPSG:4326"), crs_units("EPSG:32633")
    ('degree', 'metre')
    """
    from pyproj import CRS

    info = CRS.from_user_input(crs).axis_info
    return str(info[0].unit_name) if info else "unknown"


def is_geographic(crs: str) -> bool:
    return crs_units(crs) in ("degree", "grad", "radian", "arc-second")


_local = threading.local()


def transformer(src: str, dst: str) -> Any:
    """A cached ``pyproj.Transformer`` (x/y order), one per thread (they are not shareable)."""
    cache: dict[tuple[str, str], Any] | None = getattr(_local, "transformers", None)
    if cache is None:
        cache = _local.transformers = {}
    key = (src, dst)
    found = cache.get(key)
    if found is None:
        from pyproj import Transformer

        found = cache[key] = Transformer.from_crs(src, dst, always_xy=True)
    return found


def reproject_bounds(
    bounds: Sequence[float], src_crs: Any, dst_crs: Any, densify: int = 21
) -> Bounds:
    """Bounds in ``src_crs`` as bounds in ``dst_crs`` (edges densified, so curved edges count).

    >>> b = reproject_bounds((500000, 0, 600000, 100000), "EPSG:32633", "EPSG:4326")
    >>> [round(v, 3) for v in b]
    [15.0, 0.0, 15.899, 0.905]
    """
    src, dst = normalize_crs(src_crs), normalize_crs(dst_crs)
    left, bottom, right, top = (float(v) for v in bounds)
    if src == dst:
        return (left, bottom, right, top)
    out = transformer(src, dst).transform_bounds(left, bottom, right, top, densify_pts=densify)
    return (float(out[0]), float(out[1]), float(out[2]), float(out[3]))


# -- windows -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelWindow:
    """A rectangle of pixels: offsets and size, in rows and columns.

    >>> w = PixelWindow(row=10, col=20, height=4, width=8)
    >>> w.slices()
    (slice(10, 14, None), slice(20, 28, None))
    >>> w.intersection(PixelWindow(0, 0, 12, 24))
    PixelWindow(row=10, col=20, height=2, width=4)
    """

    row: int
    col: int
    height: int
    width: int

    @property
    def empty(self) -> bool:
        return self.height <= 0 or self.width <= 0

    def slices(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    def intersection(self, other: PixelWindow) -> PixelWindow:
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1 = min(self.row + self.height, other.row + other.height)
        c1 = min(self.col + self.width, other.col + other.width)
        return PixelWindow(r0, c0, max(0, r1 - r0), max(0, c1 - c0))

    def pad(self, n: int) -> PixelWindow:
        return PixelWindow(self.row - n, self.col - n, self.height + 2 * n, self.width + 2 * n)


# -- grids -------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridSpec:
    """A raster grid: CRS, affine transform (GDAL order ``a, b, c, d, e, f``) and shape.

    Pixel ``(row, col)`` has its upper-left corner at world
    ``(c + a*col + b*row, f + d*col + e*row)``.

    Examples
    --------
    >>> g = GridSpec.from_bounds("EPSG:32633", (500000, 4990000, 510000, 5000000), 10)
    >>> g.shape, g.res, g.bounds
    ((1000, 1000), (10.0, 10.0), (500000.0, 4990000.0, 510000.0, 5000000.0))
    >>> chip = g.window(PixelWindow(row=100, col=200, height=64, width=64))
    >>> chip.bounds
    (502000.0, 4998360.0, 502640.0, 4999000.0)
    >>> g.window_from_bounds(chip.bounds)
    PixelWindow(row=100, col=200, height=64, width=64)
    >>> [round(v, 4) for v in chip.center_lonlat()]
    [15.0295, 45.1416]
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "crs", normalize_crs(self.crs))
        t = tuple(float(v) for v in self.transform)
        if len(t) == 9:  # a full 3x3 matrix, as proj:transform may give
            t = t[:6]
        if len(t) != 6:
            raise WindowError(
                f"transform {self.transform!r} must have 6 numbers (a, b, c, d, e, f)."
            )
        if t[0] * t[4] - t[1] * t[3] == 0:
            raise WindowError(f"transform {t!r} is degenerate (zero pixel size).")
        object.__setattr__(self, "transform", t)
        h, w = (int(v) for v in self.shape)
        if h < 0 or w < 0:
            raise WindowError(f"shape {self.shape!r} must be (height, width) >= 0.")
        object.__setattr__(self, "shape", (h, w))

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_bounds(
        cls,
        crs: Any,
        bounds: Sequence[float],
        resolution: float | Sequence[float],
        *,
        snap: bool = True,
    ) -> GridSpec:
        """A north-up grid covering ``bounds`` at ``resolution`` (CRS units per pixel).

        With ``snap`` the grid's edges lie on multiples of the resolution (as
        ``gdalwarp -tap``), so grids at the same resolution line up.
        """
        xres, yres = _pair(resolution)
        if not (xres > 0 and yres > 0 and math.isfinite(xres) and math.isfinite(yres)):
            raise WindowError(f"resolution={resolution!r} must be positive numbers.")
        left, bottom, right, top = (float(v) for v in bounds)
        if not (right > left and top > bottom):
            raise WindowError(
                f"bounds={tuple(bounds)!r} are empty; pass (left, bottom, right, top) with "
                "right > left and top > bottom."
            )
        if snap:
            left, right = _snap(left, xres, math.floor), _snap(right, xres, math.ceil)
            bottom, top = _snap(bottom, yres, math.floor), _snap(top, yres, math.ceil)
        width = max(1, round((right - left) / xres)) if snap else math.ceil((right - left) / xres)
        height = max(1, round((top - bottom) / yres)) if snap else math.ceil((top - bottom) / yres)
        return cls(normalize_crs(crs), (xres, 0.0, left, 0.0, -yres, top), (height, width))

    @classmethod
    def from_dataset(cls, dataset: Any) -> GridSpec:
        """The grid of an open rasterio dataset."""
        if dataset.crs is None:
            raise CRSError(
                f"{dataset.name!r} has no CRS; pass the CRS it is in, e.g. crs='EPSG:32633'."
            )
        return cls(normalize_crs(dataset.crs), tuple(dataset.transform)[:6], dataset.shape)

    # -- derived ---------------------------------------------------------------------------
    @property
    def affine(self) -> Any:
        """The transform as an ``affine.Affine``."""
        from affine import Affine

        return Affine(*self.transform)

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def rotated(self) -> bool:
        return self.transform[1] != 0 or self.transform[3] != 0

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units, positive."""
        a, b, _, d, e, _ = self.transform
        return (math.hypot(a, d), math.hypot(b, e))

    @property
    def units(self) -> str:
        return crs_units(self.crs)

    def xy(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """World coordinates of fractional pixel positions ``(row, col)``."""
        a, b, c, d, e, f = self.transform
        r, k = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
        return c + a * k + b * r, f + d * k + e * r

    @property
    def bounds(self) -> Bounds:
        """``(left, bottom, right, top)`` of the whole grid."""
        h, w = self.shape
        xs, ys = self.xy([0, 0, h, h], [0, w, 0, w])
        return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))

    def center(self) -> tuple[float, float]:
        x, y = self.xy(self.height / 2, self.width / 2)
        return float(x), float(y)

    def center_lonlat(self) -> tuple[float, float]:
        """Longitude and latitude (WGS 84) of the grid's centre."""
        x, y = self.center()
        if self.crs in ("EPSG:4326", "OGC:CRS84"):
            return x, y
        lon, lat = transformer(self.crs, "EPSG:4326").transform(x, y)
        return float(lon), float(lat)

    # -- windows ---------------------------------------------------------------------------
    def window(self, window: PixelWindow) -> GridSpec:
        """The sub-grid of ``window`` (which may reach outside this grid)."""
        x, y = self.xy(window.row, window.col)
        a, b, _, d, e, _ = self.transform
        return GridSpec(self.crs, (a, b, float(x), d, e, float(y)), (window.height, window.width))

    def window_bounds(self, window: PixelWindow) -> Bounds:
        return self.window(window).bounds

    def fractional_window(self, bounds: Sequence[float]) -> tuple[float, float, float, float]:
        """``(row0, col0, row1, col1)``: the pixel rectangle of world ``bounds`` (unrounded)."""
        if self.rotated:
            raise WindowError("windows from bounds need a north-up grid (no rotation terms).")
        a, _, c, _, e, f = self.transform
        left, bottom, right, top = (float(v) for v in bounds)
        c0, c1 = sorted(((left - c) / a, (right - c) / a))
        r0, r1 = sorted(((top - f) / e, (bottom - f) / e))
        return r0, c0, r1, c1

    def window_from_bounds(self, bounds: Sequence[float], *, eps: float = 1e-6) -> PixelWindow:
        """The smallest pixel window covering world ``bounds`` (not clipped to the grid)."""
        r0, c0, r1, c1 = self.fractional_window(bounds)
        row, col = math.floor(r0 + eps), math.floor(c0 + eps)
        return PixelWindow(row, col, math.ceil(r1 - eps) - row, math.ceil(c1 - eps) - col)

    def full_window(self) -> PixelWindow:
        return PixelWindow(0, 0, self.height, self.width)

    def decimated(self, height: int, width: int) -> GridSpec:
        """The same extent with ``(height, width)`` pixels (an overview's grid)."""
        a, b, c, d, e, f = self.transform
        sy, sx = self.height / height, self.width / width
        return GridSpec(self.crs, (a * sx, b * sy, c, d * sx, e * sy, f), (height, width))

    def aligned_with(self, other: GridSpec, tol: float = 1e-6) -> tuple[int, int] | None:
        """``(row, col)`` offset of ``other``'s origin in this grid when both share CRS and pixel
        size and ``other`` starts on a whole pixel; ``None`` otherwise."""
        if self.crs != other.crs or self.rotated or other.rotated:
            return None
        a, _, c, _, e, f = self.transform
        oa, _, oc, _, oe, of = other.transform
        if abs(a - oa) > tol * abs(a) or abs(e - oe) > tol * abs(e):
            return None
        col, row = (oc - c) / a, (of - f) / e
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return None
        return round(row), round(col)

    def __repr__(self) -> str:
        h, w = self.shape
        xres, yres = self.res
        left, bottom, right, top = self.bounds
        crs = self.crs if len(self.crs) < 40 else self.crs[:37] + "..."
        return (
            f"GridSpec({crs}, {h}x{w} px at {xres:g} x {yres:g}, "
            f"bounds=({left:g}, {bottom:g}, {right:g}, {top:g}))"
        )


def _pair(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value), float(value)
    x, y = value
    return float(x), float(y)


def _snap(value: float, step: float, rounding: Any) -> float:
    k = value / step
    near = round(k)
    if abs(k - near) < 1e-9 * max(1.0, abs(k)):
        return float(near * step)
    return float(rounding(k) * step)
