"""How each non-primary modality of a :class:`~earthstream.MultiStream` is read per batch.

Gridded modalities (Zarr, arrays) are matched to the primary's grid once
(:mod:`._gridded`) and read box by box through a per-process chunk cache;
rasters (COGs) through GDAL onto each sample's footprint.  (Step 2 of the
one-engine redesign moves these reads into the engine as variable groups of its
inputs.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from .._stream import latlon_dims
from ..errors import ConfigError, GridMismatchError
from ..sampling._select import selected_coords
from ..sources import ChunkedSource, is_xarray, is_zarr_input, open_zarr, source_selection
from ._gridded import ChunkCache, match_axis, match_times, read_box
from ._spec import MissingModality, Modality, RecordInfo, Resolution, layout_of

__all__ = ["Primary", "is_raster", "open_modality", "spatial_dims"]


class Primary(Protocol):
    """What the readers need of the primary modality's stream."""

    @property
    def coords(self) -> Mapping[str, np.ndarray]: ...

    lat_dim: str
    lon_dim: str
    time_dim: str | None
    lat_step: float
    lon_step: float
    input_steps: int
    crs: str
    missing_modality: MissingModality
    resolution: Resolution

    def window_len(self, dim: str) -> int: ...


def spatial_dims(coords: Mapping[str, Any], what: str) -> tuple[str, str]:
    lat, lon = latlon_dims(coords)
    if lat is None or lon is None:
        raise GridMismatchError(
            f"{what} has no latitude/longitude coordinates (dims named lat/latitude and "
            f"lon/longitude; it has {sorted(coords)}), so its footprint is unknown."
        )
    return lat, lon


def is_raster(source: Any) -> bool:
    from ..sources._cog import COGSource

    return isinstance(source, COGSource)


def open_modality(source: Any) -> Any:
    if isinstance(source, str | os.PathLike):
        text = str(source)
        if text.lower().endswith((".tif", ".tiff")):
            from ..sources._cog import open_cog

            return open_cog(text)
        return open_zarr(text)
    if is_xarray(source) or is_zarr_input(source):
        return open_zarr(source)
    return source


class _Reader:
    """What every non-primary modality settles from its spec and the stream's defaults."""

    def __init__(self, name: str, spec: Modality, source: Any, owner: Primary) -> None:
        self.name = name
        self.missing = spec.missing or owner.missing_modality
        self.native = (spec.resolution or owner.resolution) == "native"
        self.source = source.select(list(spec.variables)) if spec.variables else source


class _Gridded(_Reader):
    """A second gridded source read over the primary's windows."""

    def __init__(self, name: str, spec: Modality, source: ChunkedSource, owner: Primary):
        super().__init__(name, spec, source, owner)
        self.broadcast_time = spec.broadcast_time
        source = self.source
        infos = list(source.variables.values())
        # a source cut to a selection (e.g. a sliced xarray.Dataset): match and read in it
        spans = source_selection(source)
        self.origin = {d: span.start for d, span in spans.items()}
        coords = selected_coords(source.coords, spans)
        lat, lon = spatial_dims(coords, f"modality {name!r}")
        native = self.native
        self.lat = match_axis(
            owner.coords[owner.lat_dim], coords[lat], name=name, dim=lat, native=native
        )
        self.lon = match_axis(
            owner.coords[owner.lon_dim], coords[lon], name=name, dim=lon, native=native
        )
        time_dim = owner.time_dim
        self.time_dim = (
            time_dim if time_dim is not None and any(time_dim in v.dims for v in infos) else None
        )
        self.time_index = (
            match_times(owner.coords[time_dim], coords.get(time_dim), name=name, dim=time_dim)
            if self.time_dim is not None and time_dim is not None
            else None
        )
        dims = infos[0].dims
        for v in infos[1:]:
            if v.dims != dims or v.shape != infos[0].shape:
                raise ConfigError(
                    f"modality {name!r} mixes variables of different dims ({infos[0].name}: "
                    f"{dims}, {v.name}: {v.dims}); split them into two modalities."
                )
        self.dims = dims
        self.shape = tuple(  # every variable's (checked above), within the selection
            spans[d].size if d in spans else n for d, n in zip(dims, infos[0].shape, strict=True)
        )
        self.dtype = np.result_type(*[v.dtype for v in infos])
        self.height = owner.window_len(owner.lat_dim) * self.lat.factor
        self.width = owner.window_len(owner.lon_dim) * self.lon.factor
        steps = owner.input_steps
        self.keeps_time = steps > 0
        sample: list[tuple[str, int]] = []
        for d, n in zip(dims, self.shape, strict=True):
            if d == lat:
                sample.append((lat, self.height))
            elif d == lon:
                sample.append((lon, self.width))
            elif d == self.time_dim:
                if self.keeps_time:
                    sample.append((d, steps))
            else:
                sample.append((d, n))  # other dims (levels, bands) whole
        self.broadcast = self.time_dim is None and self.broadcast_time and steps > 0
        if self.broadcast:
            sample.insert(0, (owner.time_dim or "time", steps))
        self.sample = tuple(sample)
        shape = (len(infos), *(n for _, n in sample))
        first = "variable" if any(d == "level" for d, _ in sample) else "channel"
        self.info = RecordInfo(
            name=name,
            kind="gridded",
            layout=layout_of(tuple(d for d, _ in sample), first),
            dims=(first, *(d for d, _ in sample)),
            channels=tuple(v.name for v in infos),
            shape=shape,
            source=str(getattr(source, "location", type(source).__name__)),  # redacted
            resolution=(
                abs(float(np.diff(coords[lat][:2])[0])),
                abs(float(np.diff(coords[lon][:2])[0])),
            ),
            crs=owner.crs,
            static=self.time_dim is None,
        )

    def read(
        self, starts: Mapping[str, np.ndarray], times: np.ndarray | None, cache: ChunkCache
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        n = len(next(iter(starts.values())))
        names = list(self.source.variables)
        out = np.zeros((n, *self.info.shape), dtype=self.dtype)
        present = np.ones(n, dtype=bool)
        meta: dict[str, np.ndarray] = {}
        lat0 = self.lat.offset + self.lat.factor * starts["lat"]
        lon0 = self.lon.offset + self.lon.factor * starts["lon"]
        sizes = dict(zip(self.dims, self.shape, strict=True))
        inside = (
            (lat0 >= 0)
            & (lat0 + self.height <= sizes[self.lat.dim])
            & (lon0 >= 0)
            & (lon0 + self.width <= sizes[self.lon.dim])
        )
        present &= inside
        tidx = None
        if self.time_index is not None and times is not None:
            tidx = self.time_index[times]  # (n, T) secondary steps of each input step
            present &= (tidx >= 0).all(axis=1)
            meta["time_index"] = tidx
        meta["starts"] = np.stack([lat0, lon0], axis=1)
        spatial = {self.lat.dim: (lat0, self.height), self.lon.dim: (lon0, self.width)}
        t_axis = self.dims.index(self.time_dim) if self.time_dim is not None else None
        for b in np.flatnonzero(present).tolist():
            for c, var in enumerate(names):
                target = out[b, c]
                if t_axis is not None and tidx is not None:
                    for k, t in enumerate(tidx[b]):
                        lead: tuple[Any, ...] = (slice(None),) * t_axis
                        # the sample keeps a time axis of the input steps, or (time iterated
                        # by the primary) none: read the one step through a new axis
                        view = (
                            target[(*lead, slice(k, k + 1))]
                            if self.keeps_time
                            else target[(*lead, None)]
                        )
                        box_starts, box_lengths = self._box(spatial, b, t_axis, int(t))
                        read_box(self.source, var, box_starts, box_lengths, cache, view)
                elif self.broadcast:
                    box_starts, box_lengths = self._box(spatial, b, None, 0)
                    read_box(self.source, var, box_starts, box_lengths, cache, target[0])
                    target[1:] = target[0]  # the static field repeated over the steps
                else:
                    box_starts, box_lengths = self._box(spatial, b, None, 0)
                    read_box(self.source, var, box_starts, box_lengths, cache, target)
        return out, present, meta

    def _box(
        self,
        spatial: Mapping[str, tuple[np.ndarray, int]],
        b: int,
        t_axis: int | None,
        t: int,
    ) -> tuple[list[int], list[int]]:
        starts, lengths = [], []
        shape = self.shape
        for i, d in enumerate(self.dims):
            origin = self.origin.get(d, 0)  # positions in the selection -> in the source
            if d in spatial:
                first, length = spatial[d]
                starts.append(origin + int(first[b]))
                lengths.append(length)
            elif i == t_axis:
                starts.append(origin + t)
                lengths.append(1)
            else:
                starts.append(origin)
                lengths.append(shape[i])
        return starts, lengths


class _Raster(_Reader):
    """A GeoTIFF (COG) read over each sample's footprint."""

    def __init__(self, name: str, spec: Modality, source: Any, owner: Primary) -> None:
        from ..geo import GridSpec, reproject_bounds

        super().__init__(name, spec, source, owner)
        self.resampling = spec.resampling
        source = self.source
        self.crs = source.crs if self.native else owner.crs
        h, w = owner.window_len(owner.lat_dim), owner.window_len(owner.lon_dim)
        if self.native:
            # one fixed chip shape: the footprint of the window at the centre of the grid
            lat_c = owner.coords[owner.lat_dim][len(owner.coords[owner.lat_dim]) // 2]
            lon_c = owner.coords[owner.lon_dim][len(owner.coords[owner.lon_dim]) // 2]
            half_h = abs(owner.lat_step) * h / 2
            half_w = abs(owner.lon_step) * w / 2
            box = (lon_c - half_w, lat_c - half_h, lon_c + half_w, lat_c + half_h)
            res = source.grid.res
            left, bottom, right, top = reproject_bounds(box, owner.crs, source.crs)
            h = max(1, round((top - bottom) / res[1]))
            w = max(1, round((right - left) / res[0]))
            self.res = res
        self.height, self.width = h, w
        self._grid_type = GridSpec
        bands = source.bands
        self.info = RecordInfo(
            name=name,
            kind="raster",
            layout="CHW",
            dims=("channel", "lat", "lon") if not self.native else ("channel", "y", "x"),
            channels=tuple(b.name for b in bands),
            shape=(len(bands), h, w),
            source=source.ref.href,
            crs=self.crs,
            resolution=tuple(source.grid.res) if self.native else (owner.lat_step, owner.lon_step),
            wavelengths=tuple(b.center_wavelength for b in bands),
            gsd=tuple(b.gsd for b in bands),
            extra={"item_id": source.ref.item_id, "resampling": self.resampling},
        )

    def grid_for(self, bounds: np.ndarray, owner: Primary) -> Any:
        GridSpec = self._grid_type
        west, south, east, north = (float(v) for v in bounds)
        if not self.native:
            xres = (east - west) / self.width
            yres = (north - south) / self.height
            return GridSpec(
                owner.crs, (xres, 0.0, west, 0.0, -yres, north), (self.height, self.width)
            )
        from ..geo import reproject_bounds

        left, bottom, right, top = reproject_bounds((west, south, east, north), owner.crs, self.crs)
        cx, cy = (left + right) / 2, (bottom + top) / 2
        xres, yres = self.res
        t = self.source.grid.transform
        # snap the chip's corner to the raster's own pixel grid: no resampling when aligned
        x0 = t[2] + round((cx - xres * self.width / 2 - t[2]) / xres) * xres
        y0 = t[5] - round((t[5] - (cy + yres * self.height / 2)) / yres) * yres
        return GridSpec(self.crs, (xres, 0.0, x0, 0.0, -yres, y0), (self.height, self.width))

    def read(
        self, bounds: np.ndarray, owner: Primary
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        n = len(bounds)
        out = np.zeros((n, *self.info.shape), dtype=np.float32)
        mask = np.zeros((n, *self.info.shape), dtype=bool)
        transforms = np.zeros((n, 6), dtype=np.float64)
        for b in range(n):
            grid = self.grid_for(bounds[b], owner)
            transforms[b] = grid.transform
            values, valid = self.source.read_chip(grid, resampling=self.resampling)
            if owner.lat_step > 0 and not self.native:  # primary rows run south to north
                values, valid = values[:, ::-1], valid[:, ::-1]
            out[b] = np.where(valid, values, 0.0)
            mask[b] = valid
        present = np.asarray(mask.reshape(n, -1).any(axis=1))
        return out, mask, present, {"transform": transforms}
