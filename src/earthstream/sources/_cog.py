"""Cloud-Optimized GeoTIFFs: open once, read any window or chip grid, tile by tile.

``open_cog`` reads the header (one request for a remote COG, see
:mod:`earthstream.geo._gdal`) and describes the file: grid, bands with nodata
and scale/offset, overviews, internal tiling.  Reads go through
:func:`earthstream.geo._read.read_chip`: only the internal tiles a window
touches are fetched, from the overview that matches the requested resolution.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._names import suggest
from ..errors import ConfigError, VariableNotFoundError
from ..geo._gdal import gdal_env, gdal_path, open_dataset
from ..geo._grid import GridSpec, PixelWindow, normalize_crs, reproject_bounds
from ..geo._read import ChipRead, RasterBand, RasterRef, decode, read_chip
from ..storage import parse_location, redact

__all__ = ["COGSource", "open_cog"]


@dataclass(frozen=True)
class COGSource:
    """A GeoTIFF described by its header; reads windows and chips on demand.

    Picklable: holds no open handle (each thread of each process opens its own).

    Attributes
    ----------
    ref
        The file and its bands (:class:`~earthstream.geo.RasterRef`).
    overviews
        Decimation factor of each overview level (``(2, 4, 8)``: level 0 is 2x coarser).
    block_shape
        Internal tile ``(height, width)``.
    """

    ref: RasterRef
    overviews: tuple[int, ...]
    block_shape: tuple[int, int]
    dtype: np.dtype[Any]
    is_tiled: bool = True
    gdal_options: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def grid(self) -> GridSpec:
        return self.ref.grid

    @property
    def crs(self) -> str:
        return self.ref.grid.crs

    @property
    def bands(self) -> tuple[RasterBand, ...]:
        return self.ref.bands

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.ref.bands)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.ref.grid.bounds

    def select(self, bands: Sequence[str | int]) -> COGSource:
        """The same file restricted to ``bands`` (names or 1-based indexes)."""
        return replace(self, ref=replace(self.ref, bands=_select_bands(self.ref.bands, bands)))

    def read_chip(
        self,
        grid: GridSpec,
        *,
        resampling: str | Sequence[str] = "nearest",
        overview: str | int | None = "auto",
        apply_scale: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bands on ``grid`` (any CRS/resolution): ``(values (C, H, W), valid (C, H, W))``.

        With ``apply_scale`` values are float32 ``raw * scale + offset`` with NaN
        where not valid; otherwise the file's dtype, nodata where not valid.
        """
        values, valid, _ = self.read_chip_info(
            grid, resampling=resampling, overview=overview, apply_scale=apply_scale
        )
        return values, valid

    def read_chip_info(
        self,
        grid: GridSpec,
        *,
        resampling: str | Sequence[str] = "nearest",
        overview: str | int | None = "auto",
        apply_scale: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, ChipRead]:
        """As :meth:`read_chip`, plus what was read (overview level, window)."""
        n = len(self.bands)
        raw = np.empty((n, *grid.shape), dtype=self.dtype)
        for i, band in enumerate(self.bands):
            raw[i] = band.nodata if band.nodata is not None else 0
        valid = np.zeros((n, *grid.shape), dtype=bool)
        raw, valid, info = read_chip(
            self.ref,
            grid,
            resampling=resampling,
            overview=overview,
            out=raw,
            valid=valid,
            gdal_options=self.gdal_options,
        )
        if apply_scale:
            return decode(raw, valid, self.bands), valid, info
        return raw, valid, info

    def read(
        self,
        window: PixelWindow | None = None,
        *,
        bounds: Sequence[float] | None = None,
        bounds_crs: Any = None,
        resolution: float | None = None,
        apply_scale: bool = True,
    ) -> np.ndarray:
        """Values of a pixel ``window`` or of world ``bounds``, in the file's CRS.

        ``resolution`` (CRS units) reads coarser, from the matching overview.
        Pixels outside the file or at nodata are NaN (``apply_scale``) or nodata.

        Examples
        --------
        >>> import numpy as np, rasterio
        >>> from affine import Affine
        >>> path = str(tmp_path / "a.tif")
        >>> with rasterio.open(path, "w", driver="COG", width=64, height=64, count=1,
        ...                    dtype="uint8", crs="EPSG:4326", nodata=0,
        ...                    transform=Affine(0.01, 0, 10, 0, -0.01, 50)) as dst:
        ...     dst.write(np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64) % 250 + 1)
        >>> cog = open_cog(path)
        >>> cog.grid.shape, cog.band_names
        ((64, 64), ('b1',))
        >>> cog.read(PixelWindow(row=0, col=0, height=2, width=3)).tolist()
        [[[1.0, 2.0, 3.0], [65.0, 66.0, 67.0]]]
        """
        if window is not None and bounds is not None:
            raise ConfigError("pass either window= or bounds=, not both.")
        if bounds is not None:
            if bounds_crs is not None:
                bounds = reproject_bounds(bounds, bounds_crs, self.crs)
            window = self.grid.window_from_bounds(bounds)
        chip = self.grid.window(window or self.grid.full_window())
        if resolution is not None:
            xres, _ = self.grid.res
            factor = resolution / xres
            chip = chip.decimated(
                max(1, round(chip.height / factor)), max(1, round(chip.width / factor))
            )
        values, _ = self.read_chip(chip, apply_scale=apply_scale)
        return values

    def __repr__(self) -> str:
        return (
            f"<COGSource {redact(self.ref.href)!r} {self.grid!r} bands={list(self.band_names)} "
            f"{self.dtype} tiles={self.block_shape} overviews={list(self.overviews)}>"
        )


def _select_bands(
    bands: Sequence[RasterBand], wanted: Sequence[str | int]
) -> tuple[RasterBand, ...]:
    by_name = {b.name: b for b in bands}
    by_index = {b.index: b for b in bands}
    out = []
    for w in wanted:
        if isinstance(w, int | np.integer) and not isinstance(w, bool):
            if int(w) not in by_index:
                raise VariableNotFoundError(
                    f"band index {w} is not in the file; it has bands 1..{len(bands)}."
                )
            out.append(by_index[int(w)])
        elif w in by_name:
            out.append(by_name[w])
        else:
            names = list(by_name)
            raise VariableNotFoundError(
                f"band {w!r} is not in the file.{suggest(str(w), names)} Bands: {', '.join(names)}."
            )
    return tuple(out)


def open_cog(
    url_or_path: str | os.PathLike[str],
    bands: Sequence[str | int] | None = None,
    *,
    band_names: Sequence[str] | None = None,
    crs: Any = None,
    nodata: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
    gdal_options: Mapping[str, str] | None = None,
) -> COGSource:
    """Open a (Cloud-Optimized) GeoTIFF: read its header, return a :class:`COGSource`.

    Parameters
    ----------
    url_or_path
        Local path, ``file://``, ``http(s)://``, ``s3://``, ``gs://`` or ``az://`` URL.
    bands
        Bands to read (names or 1-based indexes); default all.
    band_names
        Names for all bands of the file (default: the band descriptions, else ``b1, b2 ...``).
    crs
        The CRS, for files that lack one (overrides the header's).
    nodata
        Nodata value for all bands (overrides the header's).
    storage_options
        Not used for GDAL reads yet; credentials come from GDAL's environment.
    gdal_options
        Extra GDAL configuration options for reads of this file.
    """
    location = parse_location(url_or_path, storage_options)
    path = gdal_path(location)
    options = dict(gdal_options or {})
    with gdal_env(options):
        ds = open_dataset(path)
        if ds.crs is None and crs is None:
            from ..errors import CRSError

            raise CRSError(
                f"{location.display} has no CRS in its header; pass crs= (e.g. "
                "open_cog(path, crs='EPSG:32633'))."
            )
        grid = GridSpec(
            normalize_crs(crs if crs is not None else ds.crs), tuple(ds.transform)[:6], ds.shape
        )
        names = list(band_names) if band_names is not None else None
        if names is not None and len(names) != ds.count:
            raise ConfigError(f"band_names has {len(names)} names; the file has {ds.count} bands.")
        all_bands = []
        for i in range(ds.count):
            desc = ds.descriptions[i]
            name = names[i] if names is not None else (desc or f"b{i + 1}")
            nd = nodata if nodata is not None else ds.nodatavals[i]
            all_bands.append(
                RasterBand(
                    index=i + 1,
                    name=name,
                    nodata=None if nd is None else float(nd),
                    scale=float(ds.scales[i]),
                    offset=float(ds.offsets[i]),
                    dtype=ds.dtypes[i],
                    description=desc,
                )
            )
        overviews = tuple(int(f) for f in ds.overviews(1))
        block = tuple(int(v) for v in ds.block_shapes[0])
        dtype = np.dtype(ds.dtypes[0])
        tiled = bool(ds.profile.get("tiled", False))
    ref = RasterRef(href=location.url, path=path, grid=grid, bands=tuple(all_bands))
    source = COGSource(
        ref=ref,
        overviews=overviews,
        block_shape=(block[0], block[1]),
        dtype=dtype,
        is_tiled=tiled,
        gdal_options=options,
    )
    return source.select(bands) if bands is not None else source
