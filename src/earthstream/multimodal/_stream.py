"""Multi-modal streams: one sample joins several sources over the same footprint."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._batch import Batch
from .._stream import Stream
from .._units import parse_bytes
from .._validate import check_choice
from ..errors import ConfigError, MissingModalityError
from ..protocols import is_chunked_source
from ._gridded import ChunkCache
from ._readers import _Gridded, _Raster, is_raster, open_modality, spatial_dims
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
        source = open_modality(first.source)
        if is_raster(source):
            raise ConfigError(
                f"the primary modality {primary!r} is a raster; the primary must be gridded "
                "(Zarr with lat/lon). Use earthstream.stream_chips for raster-first sampling, "
                "or put a gridded modality first."
            )
        if first.variables:
            kwargs["variables"] = list(first.variables)
        super().__init__(source, window, stride, **kwargs)
        self.lat_dim, self.lon_dim = spatial_dims(self.coords, f"the primary modality {primary!r}")
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
            src = open_modality(spec.source)
            reader: _Gridded | _Raster
            if is_raster(src):
                reader = _Raster(name, spec, src, self)
            elif is_chunked_source(src):
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
