"""Multi-modal streams: one sample joins several sources over the same footprint."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._batch import Batch
from .._stream import Stream, latlon_dims
from .._units import parse_bytes
from .._validate import check_choice
from ..errors import ConfigError, GridMismatchError, MissingModalityError
from ..sampling._select import selected_coords
from ..sources import ChunkedSource, is_xarray, is_zarr_input, open_zarr, source_selection
from ._gridded import ChunkCache, match_axis, match_times, read_box
from ._spec import (
    MISSING,
    RESOLUTIONS,
    MissingModality,
    Modality,
    RecordInfo,
    Resolution,
    layout_of,
)

__all__ = ["MultiStream"]

log = logging.getLogger("earthstream")


def _spatial_dims(coords: Mapping[str, Any], what: str) -> tuple[str, str]:
    lat, lon = latlon_dims(coords)
    if lat is None or lon is None:
        raise GridMismatchError(
            f"{what} has no latitude/longitude coordinates (dims named lat/latitude and "
            f"lon/longitude; it has {sorted(coords)}), so its footprint is unknown."
        )
    return lat, lon


def _is_raster(source: Any) -> bool:
    from ..sources._cog import COGSource

    return isinstance(source, COGSource)


def _open(source: Any) -> Any:
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

    def __init__(self, name: str, spec: Modality, source: Any, owner: MultiStream) -> None:
        self.name = name
        self.missing = spec.missing or owner.missing_modality
        self.native = (spec.resolution or owner.resolution) == "native"
        self.source = source.select(list(spec.variables)) if spec.variables else source


class _Gridded(_Reader):
    """A second gridded source read over the primary's windows."""

    def __init__(self, name: str, spec: Modality, source: ChunkedSource, owner: MultiStream):
        super().__init__(name, spec, source, owner)
        self.broadcast_time = spec.broadcast_time
        source = self.source
        infos = list(source.variables.values())
        # a source cut to a selection (e.g. a sliced xarray.Dataset): match and read in it
        spans = source_selection(source)
        self.origin = {d: span.start for d, span in spans.items()}
        coords = selected_coords(source.coords, spans)
        lat, lon = _spatial_dims(coords, f"modality {name!r}")
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

    def __init__(self, name: str, spec: Modality, source: Any, owner: MultiStream) -> None:
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

    def grid_for(self, bounds: np.ndarray, owner: MultiStream) -> Any:
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
        self, bounds: np.ndarray, owner: MultiStream
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


class MultiStream(Stream):
    """A stream whose samples join several modalities over the same footprint.

    The first modality (or ``primary``) is a gridded source with latitude and
    longitude: its windows, order, sharding, resume and forecast settings are
    those of a :class:`~earthstream.Stream` (all keyword arguments go to it).
    Every other modality is read over each sample's footprint: gridded sources
    (Zarr) by index on the matched grid, rasters (COG) through GDAL onto the
    primary's grid (``resolution="common"``) or at their own resolution
    (``"native"``).

    A batch holds, per modality ``name``: ``batch[name]`` ``(B, *layout)``
    (stacked channels), ``batch[name + "/present"]`` and, for rasters,
    ``batch[name + "/mask"]``; ``batch.record(name)`` returns a
    :class:`~earthstream.multimodal.Record` with the layout, channel names,
    wavelengths, GSD, CRS and provenance.  With ``forecast=`` the primary's
    targets are ``batch["target"]``.  Shared per-sample context is in
    ``batch.coords``: ``bounds`` (west, south, east, north), ``center_lat``,
    ``center_lon`` and ``reference_time``.

    Parameters
    ----------
    modalities
        Name -> source or :class:`~earthstream.multimodal.Modality`.
    window, stride
        As for :class:`~earthstream.Stream`, on the primary's dims.
    primary
        The modality whose grid and windows define the samples (default: the first).
    resolution
        ``"common"`` (default) or ``"native"`` for every modality not saying otherwise.
    missing_modality
        ``"error"`` (default), ``"skip"`` or ``"zero"``: see :class:`Modality`.
    crs
        CRS of the primary's latitude/longitude coordinates.
    cache_limit
        Bytes of decoded chunks of the other gridded modalities kept per process.

    Examples
    --------
    >>> import earthstream as es
    >>> path = es.datasets.era5_like(tmp_path / "w.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> static = es.datasets.static_fields(tmp_path / "s.zarr", like=path)
    >>> stream = es.MultiStream({"era5": es.open_zarr(path, variables=["t2m", "u10"]),
    ...                          "static": static}, {"lat": 8, "lon": 8}, batch_size=4)
    >>> batch = next(iter(stream))
    >>> batch["era5"].shape, batch["static"].shape, batch.record("static").layout
    ((4, 2, 8, 8), (4, 2, 8, 8), 'CHW')
    """

    def __init__(
        self,
        modalities: Mapping[str, Any],
        window: Mapping[str, int | None],
        stride: Mapping[str, int] | None = None,
        *,
        primary: str | None = None,
        resolution: Resolution = "common",
        missing_modality: MissingModality = "error",
        crs: str = "EPSG:4326",
        cache_limit: int | str = "256MB",
        **kwargs: Any,
    ) -> None:
        if not isinstance(modalities, Mapping) or not modalities:
            raise ConfigError(
                "modalities must be a non-empty mapping of name -> source, e.g. "
                "{'era5': es.open_zarr(...), 'static': es.open_zarr(...)}."
            )
        resolution = check_choice(resolution, "resolution", RESOLUTIONS)
        missing_modality = check_choice(missing_modality, "missing_modality", MISSING)
        if kwargs.get("stack") or kwargs.get("edges", "drop") != "drop":
            raise ConfigError(
                "MultiStream stacks each modality itself and needs whole windows: leave out "
                "stack= and edges=."
            )
        specs = {
            str(k): v if isinstance(v, Modality) else Modality(source=v)
            for k, v in modalities.items()
        }
        for name in specs:
            if "/" in name or name == "target":
                raise ConfigError(f"modality name {name!r} may not contain '/' or be 'target'.")
        primary = primary or next(iter(specs))
        if not isinstance(primary, str) or primary not in specs:
            raise ConfigError(f"primary={primary!r} is not one of the modalities {list(specs)}.")
        self.primary = primary
        self.resolution = resolution
        self.missing_modality = missing_modality
        self.crs = crs
        self.cache_limit = parse_bytes(cache_limit)
        first = specs[primary]
        source = _open(first.source)
        if _is_raster(source):
            raise ConfigError(
                f"the primary modality {primary!r} is a raster; the primary must be gridded "
                "(Zarr with lat/lon). Use earthstream.stream_chips for raster-first sampling, "
                "or put a gridded modality first."
            )
        if first.variables:
            kwargs["variables"] = list(first.variables)
        super().__init__(source, window, stride, **kwargs)
        self.lat_dim, self.lon_dim = _spatial_dims(self.coords, f"the primary modality {primary!r}")
        for dim in (self.lat_dim, self.lon_dim):
            if self.layout.grid.axis(dim).squeeze:
                raise ConfigError(
                    f"window must include {dim!r}: the footprint of a sample is its lat/lon window."
                )
        self.lat_step = float(np.diff(self.coords[self.lat_dim][:2].astype(np.float64))[0])
        self.lon_step = float(np.diff(self.coords[self.lon_dim][:2].astype(np.float64))[0])
        self.time_dim = self._time_dim()
        self.input_steps = self._input_steps()
        infos = [self.source.variables[v] for v in self.variables]
        inputs = [
            v for v in self.variables if self.forecast is None or v in self.forecast.input_variables
        ]
        dims0 = self.sample_dims[inputs[0]]
        for v in inputs[1:]:
            if (
                self.sample_dims[v] != dims0
                or self.sample_shapes[v] != self.sample_shapes[inputs[0]]
            ):
                raise ConfigError(
                    f"the primary modality {primary!r} mixes variables of different sample shapes "
                    f"({inputs[0]}: {dims0}, {v}: {self.sample_dims[v]}); put them in separate "
                    "modalities (e.g. surface and pressure-level variables)."
                )
        first_role = "variable" if "level" in dims0 else "channel"
        lengths = {d: self.window_len(d) for d in dims0}
        if self.forecast is not None:
            lengths[self.forecast.dim] = len(self.forecast.input_offsets)
        self.infos: dict[str, RecordInfo] = {
            primary: RecordInfo(
                name=primary,
                kind="gridded",
                layout=layout_of(dims0, first_role),
                dims=(first_role, *dims0),
                channels=tuple(inputs),
                shape=(len(inputs), *(lengths[d] for d in dims0)),
                source=str(getattr(self.source, "location", "memory")),  # redacted
                crs=crs,
                resolution=(abs(self.lat_step), abs(self.lon_step)),
                static=self.time_dim is None,
                extra={"dtypes": [str(i.dtype) for i in infos]},
            )
        }
        if self.forecast is not None:
            lengths[self.forecast.dim] = len(self.forecast.target_offsets)
            targets = tuple(self.forecast.target_variables)
            self.infos["target"] = dataclasses.replace(
                self.infos[primary],
                name="target",
                channels=targets,
                shape=(len(targets), *(lengths[d] for d in dims0)),
                extra={"leads": [str(x) for x in self.forecast.leads]},
            )
        self.others: dict[str, _Gridded | _Raster] = {}
        for name, spec in specs.items():
            if name == primary:
                continue
            src = _open(spec.source)
            reader: _Gridded | _Raster
            if _is_raster(src):
                reader = _Raster(name, spec, src, self)
            elif hasattr(src, "read_chunk"):
                reader = _Gridded(name, spec, src, self)
            else:
                raise ConfigError(
                    f"modality {name!r} is a {type(src).__name__}; use a Zarr source or path, "
                    "an ArraySource, or a COG (earthstream.open_cog or a .tif path)."
                )
            self.others[name] = reader
            self.infos[name] = reader.info
        self.skipped = 0
        self._cache: ChunkCache | None = None
        self._cache_pid = 0

    # -- geometry ---------------------------------------------------------------------
    def window_len(self, dim: str) -> int:
        return self.layout.grid.axis(dim).length

    def _input_steps(self) -> int:
        if self.forecast is not None:
            return len(self.forecast.input_offsets)
        if self.time_dim is None:
            return 0
        axis = self.layout.grid.axis(self.time_dim)
        return 0 if axis.squeeze else axis.length

    def _bounds(self, starts: Mapping[str, np.ndarray]) -> np.ndarray:
        lat, lon = (
            self.coords[self.lat_dim].astype(np.float64),
            self.coords[self.lon_dim].astype(np.float64),
        )
        h, w = self.window_len(self.lat_dim), self.window_len(self.lon_dim)
        r, c = starts[self.lat_dim], starts[self.lon_dim]
        lat_a, lat_b = lat[r] - self.lat_step / 2, lat[r + h - 1] + self.lat_step / 2
        lon_a, lon_b = lon[c] - self.lon_step / 2, lon[c + w - 1] + self.lon_step / 2
        return np.stack(
            [
                np.minimum(lon_a, lon_b),
                np.minimum(lat_a, lat_b),
                np.maximum(lon_a, lon_b),
                np.maximum(lat_a, lat_b),
            ],
            axis=1,
        )

    def _sample_times(self, batch: Batch) -> np.ndarray | None:
        """Primary time index of every input step of every sample: ``(B, T)``."""
        if self.time_dim is None:
            return None
        s = batch.starts[self.time_dim]
        if self.forecast is not None:
            return np.asarray(s[:, None] + np.asarray(self.forecast.input_offsets))
        axis = self.layout.grid.axis(self.time_dim)
        return s[:, None] + np.arange(1 if axis.squeeze else axis.length)

    # -- the last step, per batch ---------------------------------------------------------
    def _finishes(self) -> bool:
        return True

    def _chunk_cache(self) -> ChunkCache:
        if self._cache is None or self._cache_pid != os.getpid():
            self._cache = ChunkCache(self.cache_limit)
            self._cache_pid = os.getpid()
        return self._cache

    def _finish(self, batch: Batch) -> Batch:
        batch = super()._finish(batch)
        data: dict[str, np.ndarray] = {}
        dims: dict[str, tuple[str, ...]] = {}
        info = self.infos[self.primary]
        data[self.primary] = np.stack([batch[v] for v in info.channels], axis=1)
        dims[self.primary] = info.dims
        if self.forecast is not None:
            t_info = self.infos["target"]
            data["target"] = np.stack([batch["target/" + v] for v in t_info.channels], axis=1)
            dims["target"] = t_info.dims
        for key in ("time_encoding", "position_encoding"):
            if key in batch.data:
                data[key], dims[key] = batch[key], batch.dims[key]
        coords = dict(batch.coords)
        bounds = self._bounds(batch.starts)
        coords["bounds"] = bounds
        coords["center_lon"] = (bounds[:, 0] + bounds[:, 2]) / 2
        coords["center_lat"] = (bounds[:, 1] + bounds[:, 3]) / 2
        times_idx = self._sample_times(batch)
        if times_idx is not None and self.time_dim is not None and "reference_time" not in coords:
            coords["reference_time"] = self.coords[self.time_dim][times_idx[:, -1]]
        keep = np.ones(batch.size, dtype=bool)
        cache = self._chunk_cache()
        for name, reader in self.others.items():
            if isinstance(reader, _Raster):
                values, mask, present, meta = reader.read(bounds, self)
                data[name + "/mask"] = mask
                dims[name + "/mask"] = reader.info.dims
            else:
                starts = {"lat": batch.starts[self.lat_dim], "lon": batch.starts[self.lon_dim]}
                values, present, meta = reader.read(starts, times_idx, cache)
            data[name] = values
            dims[name] = reader.info.dims
            data[name + "/present"] = present
            dims[name + "/present"] = ()
            for k, v in meta.items():
                coords[f"{name}/{k}"] = v
            if not present.all():
                self._missing(reader.missing, name, batch, present, coords)
                if reader.missing == "skip":
                    keep &= present
        attrs = {**batch.attrs, "modalities": dict(self.infos)}
        out = dataclasses.replace(batch, data=data, dims=dims, coords=coords, attrs=attrs)
        if not keep.all():
            self.skipped += int((~keep).sum())
            out = _take_rows(out, keep)
        return out

    def _missing(
        self, policy: str, name: str, batch: Batch, present: np.ndarray, coords: Mapping[str, Any]
    ) -> None:
        b = int(np.flatnonzero(~present)[0])
        where = f"centre lat {coords['center_lat'][b]:.3f}, lon {coords['center_lon'][b]:.3f}"
        if "reference_time" in coords:
            where += f", time {coords['reference_time'][b]}"
        if policy == "error":
            raise MissingModalityError(
                f"modality {name!r} has no data for {int((~present).sum())} sample(s) of batch "
                f"{batch.index} (first: {where}). Pass missing='skip' to drop such samples or "
                f"missing='zero' for zeros with '{name}/present' False (Modality(..., missing=...)"
                " or MultiStream(missing_modality=...))."
            )
        log.debug("modality %r missing for %d samples (%s)", name, int((~present).sum()), where)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {i.layout}{list(i.shape)}" for n, i in self.infos.items())
        return (
            f"<MultiStream primary={self.primary!r} {parts}; {self.n_windows} samples in "
            f"{len(self)} batches>"
        )


def _take_rows(batch: Batch, keep: np.ndarray) -> Batch:
    """The batch without the samples where ``keep`` is False."""

    def rows(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v[keep] if getattr(v, "ndim", 0) else v for k, v in values.items()}

    return dataclasses.replace(
        batch,
        data=rows(batch.data),
        starts=rows(batch.starts),
        coords=rows(batch.coords),
        window_ids=batch.window_ids[keep],
        padded=batch.padded[keep],
        mask=None if batch.mask is None else batch.mask[keep],
    )
