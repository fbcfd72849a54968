"""Multi-modal streams: one sample joins several sources over the same footprint."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._batch import Batch
from .._stream import MAX_AUTO_SHUFFLE_BUFFER, Stream
from .._validate import check_choice
from ..engine import Engine, StreamKind
from ..errors import ConfigError, MissingModalityError
from ..protocols import is_chunked_source
from ._gridded import GriddedModality
from ._kind import PrimaryRecords, multi_budget, multi_kind, multi_sweep_size
from ._open import is_raster, open_modality, spatial_dims
from ._part import Part
from ._raster import RasterModality
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
    (Zarr) by index on the matched grid, rasters (GeoTIFF/COG) from their tiles
    onto the primary's grid (``resolution="common"``, warped with GDAL's warper
    when the grids differ) or at their own resolution (``"native"``).

    One engine reads every modality: each modality's variables are engine
    variables of their own input, planned with the primary's windows (the index
    map to each grid computed once), each chunk or tile decoded once into the
    engine's slots within ``memory_limit`` (which bounds every modality's chunks
    and batches together), and ``stream.report`` counts them all.

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
        Deprecated and ignored: every modality's chunks share ``memory_limit``.

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
        cache_limit: int | str | None = None,
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
        if cache_limit is not None:
            warnings.warn(
                "MultiStream(cache_limit=...) is ignored: every modality is read through the "
                "one engine, whose chunk slots share memory_limit; pass memory_limit instead.",
                DeprecationWarning,
                stacklevel=2,
            )
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
        self.parts: dict[str, Part] = {}
        for name, spec in specs.items():
            if name == primary:
                continue
            src = open_modality(spec.source)
            part: Part
            if is_raster(src):
                part = RasterModality(name, spec, src, self)
            elif is_chunked_source(src):
                part = GriddedModality(name, spec, src, self)
            else:
                raise ConfigError(
                    f"modality {name!r} is a {type(src).__name__}; use a Zarr source or path, "
                    "an ArraySource, or a GeoTIFF (a .tif path, earthstream.open_tiff or "
                    "earthstream.open_cog)."
                )
            self.parts[name] = part
            self.infos[name] = part.info
        self.skipped = 0
        self._kind = self._build_kind()
        batch_size = self.order.batch_size
        self.budget = multi_budget(
            self._kind, batch_size, self.budget.memory_limit, self.budget.prefetch
        )
        if kwargs.get("shuffle_buffer") is None:  # mix as many chunk groups as fit all modalities
            group = self.layout.block_nbytes() + sum(
                p.group_nbytes(self._primary_chunks()) for p in self.parts.values()
            )
            auto = int(0.4 * self.budget.cache_capacity // max(1, group))
            buffer = max(1, min(MAX_AUTO_SHUFFLE_BUFFER, auto))
            self.order = dataclasses.replace(self.order, shuffle_buffer=buffer)
        self._sweep_batches = (
            multi_sweep_size(self._kind, self.budget, batch_size)
            if self.order.shuffle == "full"
            else 0
        )

    @property
    def others(self) -> dict[str, Part]:
        """The modalities other than the primary (as the engine reads them)."""
        return self.parts

    def _primary_chunks(self) -> dict[str, int]:
        return {a.dim: a.chunk for a in self.layout.grid.axes}

    def _time_offsets(self) -> np.ndarray | None:
        """Each input step of a sample, from its start along the time dim."""
        if self.time_dim is None:
            return None
        if self.forecast is not None:
            return np.asarray(self.forecast.input_offsets, dtype=np.int64)
        axis = self.layout.grid.axis(self.time_dim)
        return np.arange(1 if axis.squeeze else axis.length, dtype=np.int64)

    def _build_kind(self) -> StreamKind:
        info = self.infos[self.primary]
        records = PrimaryRecords(
            self.layout,
            info,
            self.infos.get("target") if self.forecast is not None else None,
            self.forecast,
        )
        return multi_kind(
            self.layout,
            self,
            records,
            list(self.parts.values()),
            self._coords,
            self._time_offsets(),
        )

    def _engine_for(self, num_threads: int) -> Engine:
        """This process's engine: the primary's source and every other modality's, one
        kind, one budget; it keeps its chunk slots from one epoch to the next."""
        key = (os.getpid(), num_threads)
        if self._engine is None or self._engine_key != key:
            self._engine = Engine(
                [self._source, *(p.source for p in self.parts.values())],
                self._kind,
                self.budget,
                num_threads=num_threads,
                lookahead=self._lookahead(),
                sweep_batches=self._sweep_batches,
                policy=self.policy,
            )
            self._engine_key = key
        return self._engine

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

    def window_starts(self, dim: str) -> np.ndarray:
        """Every window start along ``dim`` (positions in the selection)."""
        return self.layout.grid.axis(dim).starts()

    def footprints(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``(n, 4)`` west, south, east, north of the windows starting at rows ``lat`` and
        columns ``lon`` (cell edges, in the primary's CRS)."""
        lat_c, lon_c = (
            self.coords[self.lat_dim].astype(np.float64),
            self.coords[self.lon_dim].astype(np.float64),
        )
        h, w = self.window_len(self.lat_dim), self.window_len(self.lon_dim)
        r, c = np.asarray(lat, dtype=np.int64), np.asarray(lon, dtype=np.int64)
        lat_a, lat_b = lat_c[r] - self.lat_step / 2, lat_c[r + h - 1] + self.lat_step / 2
        lon_a, lon_b = lon_c[c] - self.lon_step / 2, lon_c[c + w - 1] + self.lon_step / 2
        return np.stack(
            [
                np.minimum(lon_a, lon_b),
                np.minimum(lat_a, lat_b),
                np.maximum(lon_a, lon_b),
                np.maximum(lat_a, lat_b),
            ],
            axis=1,
        )

    # -- the last step, per batch ---------------------------------------------------------
    def _finishes(self) -> bool:
        return True

    def _finish(self, batch: Batch) -> Batch:
        """Per-sample context (footprints, times, encodings) and the missing-modality
        policies, on the records the engine made."""
        # the forecast coords and encodings of a Stream, on the primary's starts
        base = super()._finish(dataclasses.replace(batch, data={}, dims={}))
        data: dict[str, np.ndarray] = {}
        dims: dict[str, tuple[str, ...]] = {}
        for key in (self.primary, "target", "time_encoding", "position_encoding"):
            source = batch if key in batch.data else base
            if key in source.data:
                data[key], dims[key] = source.data[key], source.dims[key]
        coords = dict(base.coords)
        bounds = self.footprints(batch.starts[self.lat_dim], batch.starts[self.lon_dim])
        coords["bounds"] = bounds
        coords["center_lon"] = (bounds[:, 0] + bounds[:, 2]) / 2
        coords["center_lat"] = (bounds[:, 1] + bounds[:, 3]) / 2
        offsets = self._time_offsets()
        if offsets is not None and self.time_dim is not None and "reference_time" not in coords:
            last = batch.starts[self.time_dim] + offsets[-1]
            coords["reference_time"] = self.coords[self.time_dim][last]
        keep = np.ones(batch.size, dtype=bool)
        for name, part in self.parts.items():
            for key in (name + "/mask", name, name + "/present"):
                if key in batch.data:
                    data[key], dims[key] = batch.data[key], batch.dims[key]
            present = batch.data[name + "/present"]
            if not present.all():
                self._missing(part.missing, name, batch, present, coords)
                if part.missing == "skip":
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
