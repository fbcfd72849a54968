"""A second gridded source (Zarr, arrays) over the footprints of the primary's samples.

Grids are matched once, from the 1-D coordinates: along lat and lon the
secondary index of a primary cell is ``offset + factor * index`` (``factor`` 1
on the same grid, ``k`` when the secondary is ``k`` times finer and its cells
nest in the primary's).  Anything else cannot be matched without resampling
and raises :class:`~earthstream.errors.GridMismatchError`.  Time steps are
matched by timestamp (:func:`match_times`).  The modality's variables are
engine variables of their own input (:class:`GriddedModality`): planned,
deduplicated, decoded once into the engine's slots within ``memory_limit`` and
counted in the one epoch report.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..engine import VarLayout
from ..errors import ConfigError, GridMismatchError, TimeAxisError
from ..sampling._select import selected_coords
from ..sampling._time import format_time, is_time_axis, time_numbers
from ..sources import ChunkedSource, source_selection
from ._open import Primary, spatial_dims
from ._part import ArraySpec, PartPlan, Samples
from ._spec import MissingModality, Modality, RecordInfo, layout_of

__all__ = ["AxisMatch", "GriddedModality", "match_axis", "match_times"]


@dataclass(frozen=True)
class AxisMatch:
    """Secondary index of primary cell ``i``'s first sub-cell: ``offset + factor * i``."""

    dim: str  # the secondary's dim
    offset: int
    factor: int


def _spacing(values: np.ndarray, what: str) -> float:
    if len(values) < 2:
        raise GridMismatchError(f"{what} has {len(values)} cell(s); a grid needs at least two.")
    steps = np.diff(values.astype(np.float64))
    step = float(np.median(steps))
    if step == 0 or not np.allclose(steps, step, rtol=1e-4, atol=1e-9):
        raise GridMismatchError(f"{what} is not regularly spaced; only regular grids are matched.")
    return step


def match_axis(
    primary: np.ndarray, secondary: np.ndarray, *, name: str, dim: str, native: bool
) -> AxisMatch:
    """How the secondary's cells along one axis line up with the primary's.

    >>> p = np.array([10.0, 9.0, 8.0])          # 1-degree cells, descending
    >>> s = np.arange(11.375, 6.5, -0.25)       # 0.25-degree cells, one more row on top
    >>> match_axis(p, s, name="dem", dim="lat", native=True)
    AxisMatch(dim='lat', offset=4, factor=4)
    """
    p_step = _spacing(primary, f"the primary's {dim!r} coordinate")
    s_step = _spacing(secondary, f"modality {name!r}'s {dim!r} coordinate")
    if np.sign(p_step) != np.sign(s_step):
        raise GridMismatchError(
            f"modality {name!r} runs {dim!r} the other way ({'de' if s_step < 0 else 'a'}"
            f"scending) from the primary; write it in the same order or flip it first."
        )
    ratio = p_step / s_step
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-4:
        raise GridMismatchError(
            f"modality {name!r} has {dim!r} cells of {abs(s_step):g}, the primary "
            f"{abs(p_step):g}: {'not a whole fraction' if ratio > 1 else 'coarser'}, so its cells "
            "cannot be cut to the same footprints. Regrid it to the primary's grid (or to a "
            "whole-number finer one) first."
        )
    if factor > 1 and not native:
        raise GridMismatchError(
            f"modality {name!r} is {factor}x finer than the primary along {dim!r}; pass "
            "resolution='native' to read it at its own resolution over the same footprint, "
            "or regrid it to the primary's grid."
        )
    # the first sub-cell of primary cell 0 starts at the primary cell's edge
    first = float(primary[0]) - p_step / 2 + s_step / 2
    position = (first - float(secondary[0])) / s_step
    offset = round(position)
    if abs(position - offset) > 1e-3:
        raise GridMismatchError(
            f"modality {name!r}'s {dim!r} cells are offset by {abs(position - offset):.3f} of a "
            "cell from the primary's; the grids do not nest. Regrid it onto the primary's grid."
        )
    return AxisMatch(dim=dim, offset=offset, factor=factor)


def match_times(
    primary: np.ndarray, secondary: np.ndarray | None, *, name: str, dim: str
) -> np.ndarray:
    """Secondary time index of every primary time step (-1 where it has none)."""
    if secondary is None:
        raise TimeAxisError(
            f"modality {name!r} has a {dim!r} dim but no {dim!r} coordinate, so its steps "
            "cannot be matched to the primary's; add the coordinate to the store."
        )
    if not (is_time_axis(primary) and is_time_axis(secondary)):
        raise TimeAxisError(
            f"modality {name!r}'s {dim!r} coordinate holds {secondary.dtype}, the primary's "
            f"{primary.dtype}; both need decoded datetimes."
        )
    if primary.dtype.kind == "M" and secondary.dtype.kind == "M":
        p = primary.astype("datetime64[ns]").astype(np.int64)
        s = secondary.astype("datetime64[ns]").astype(np.int64)
    else:  # cftime (any CF calendar): compared in the calendar both axes share
        p_calendar, p = time_numbers(primary)
        s_calendar, s = time_numbers(secondary)
        if p_calendar != s_calendar:
            raise TimeAxisError(
                f"modality {name!r}'s {dim!r} axis is in the {s_calendar!r} calendar, the "
                f"primary's in {p_calendar!r}: their dates cannot be matched. Convert one of "
                "them (e.g. xarray's convert_calendar) first."
            )
    nat = np.iinfo(np.int64).min
    order = np.argsort(s, kind="stable")
    pos = np.searchsorted(s[order], p)
    pos = np.minimum(pos, len(s) - 1)
    found = (s[order][pos] == p) & (p != nat)
    if not found.any():
        raise TimeAxisError(
            f"modality {name!r} shares no {dim!r} step with the primary "
            f"({format_time(secondary.min())}..{format_time(secondary.max())} against "
            f"{format_time(primary.min())}..{format_time(primary.max())}); the time axes do "
            "not overlap."
        )
    return np.where(found, order[pos], -1).astype(np.int64)


class GriddedModality:
    """A second gridded source (Zarr, arrays) read over the primary's windows by the engine.

    Its variables are engine variables of their own input.  The box each sample
    reads is computed once per span, vectorized: along lat and lon
    ``offset + factor * start`` (:func:`match_axis`, computed here once); along a
    time dim the primary shares, the matched steps (:func:`match_times`: a
    contiguous box when they follow each other, else per-sample positions);
    other dims whole.  A sample without data (footprint outside the grid, a step
    the modality lacks) reads nothing and holds zeros with ``present`` False.
    """

    def __init__(self, name: str, spec: Modality, source: ChunkedSource, owner: Primary) -> None:
        self.name = name
        self.missing: MissingModality = spec.missing or owner.missing_modality
        native = (spec.resolution or owner.resolution) == "native"
        self.source = source.select(list(spec.variables)) if spec.variables else source
        self.broadcast_time = spec.broadcast_time
        source = self.source
        infos = list(source.variables.values())
        # a source cut to a selection (e.g. a sliced xarray.Dataset): match and read in it
        spans = source_selection(source)
        self.origin = {d: span.start for d, span in spans.items()}
        coords = selected_coords(source.coords, spans)
        lat, lon = spatial_dims(coords, f"modality {name!r}")
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
        frame: list[int] = []
        keep: list[bool] = []
        for d, n in zip(dims, self.shape, strict=True):
            if d == lat:
                length = self.height
            elif d == lon:
                length = self.width
            elif d == self.time_dim:
                length = steps if self.keeps_time else 1
            else:
                length = n  # other dims (levels, bands) whole
            frame.append(length)
            keep.append(d != self.time_dim or self.keeps_time)
            if keep[-1]:
                sample.append((d, length))
        self.broadcast = self.time_dim is None and self.broadcast_time and steps > 0
        if self.broadcast:
            sample.insert(0, (owner.time_dim or "time", steps))
        self.sample = tuple(sample)
        limit = tuple(self.origin.get(d, 0) + n for d, n in zip(dims, self.shape, strict=True))
        self.variables = tuple(
            replace(VarLayout.of(info, frame, label=f"{name}/{info.name}", keep=keep), limit=limit)
            for info in infos
        )
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
        self.meta: tuple[str, ...] = ("starts",) + (
            ("time_index",) if self.time_index is not None else ()
        )
        self._axis = {d: i for i, d in enumerate(dims)}
        self._owner_dims = (owner.lat_dim, owner.lon_dim)

    # -- what a batch holds -------------------------------------------------------------
    def arrays(self) -> tuple[ArraySpec, ...]:
        return (
            ArraySpec(self.name, self.info.shape, np.dtype(self.dtype), dims=self.info.dims),
            ArraySpec(self.name + "/present", (), np.dtype(bool)),
        )

    def group_nbytes(self, chunks: Mapping[str, int]) -> int:
        owner_dims = {self.lat.dim: self._owner_dims[0], self.lon.dim: self._owner_dims[1]}
        factor = {self.lat.dim: self.lat.factor, self.lon.dim: self.lon.factor}
        total = 0
        for var in self.variables:
            elements = 1
            for d, n, c in zip(self.dims, self.shape, var.chunks, strict=True):
                if d in owner_dims:  # the group's footprint, in whole chunks at least
                    extent = chunks.get(owner_dims[d], n) * factor[d]
                elif d == self.time_dim:
                    extent = chunks.get(d, 1)
                else:
                    extent = n
                elements *= min(n, max(c, extent))
            total += elements * var.dtype.itemsize
        return total

    def dest(self, data: Mapping[str, np.ndarray], j: int) -> np.ndarray:
        record = data[self.name]
        return record[:, j, 0] if self.broadcast else record[:, j]

    # -- boxes --------------------------------------------------------------------------
    def plan(self, samples: Samples) -> PartPlan:
        n = len(samples)
        lat0 = self.lat.offset + self.lat.factor * samples.lat
        lon0 = self.lon.offset + self.lon.factor * samples.lon
        sizes = dict(zip(self.dims, self.shape, strict=True))
        present = (
            (lat0 >= 0)
            & (lat0 + self.height <= sizes[self.lat.dim])
            & (lon0 >= 0)
            & (lon0 + self.width <= sizes[self.lon.dim])
        )
        extra: dict[str, np.ndarray] = {"starts": np.stack([lat0, lon0], axis=1)}
        tidx = None
        if self.time_index is not None and samples.times is not None:
            tidx = self.time_index[samples.times]  # (n, T) secondary steps of each input step
            present &= (tidx >= 0).all(axis=1)
            extra["time_index"] = tidx
        extra["present"] = present
        starts = np.empty((n, len(self.dims)), dtype=np.int64)
        for d, i in self._axis.items():
            starts[:, i] = self.origin.get(d, 0)  # positions in the selection -> in the source
        starts[:, self._axis[self.lat.dim]] += lat0
        starts[:, self._axis[self.lon.dim]] += lon0
        # a sample without data reads nothing: its box lies wholly before the array
        starts[~present, self._axis[self.lat.dim]] = -self.height
        positions: tuple[np.ndarray | None, ...] = ()
        if tidx is not None and self.time_dim is not None:
            t_axis = self._axis[self.time_dim]
            steps = np.where(present[:, None], tidx, 0)
            contiguous = steps.shape[1] == 1 or bool((np.diff(steps, axis=1) == 1)[present].all())
            if contiguous:  # the matched steps follow each other: one box
                starts[:, t_axis] += steps[:, 0]
            else:  # each sample reads its own steps
                chosen: list[np.ndarray | None] = [None] * len(self.dims)
                chosen[t_axis] = steps
                positions = tuple(chosen)
        k = len(self.variables)
        return PartPlan([starts] * k, [None] * k, [positions] * k, extra)

    # -- records ------------------------------------------------------------------------
    def complete(self, data: MutableMapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        record = data[self.name]
        present = extra["present"]
        data[self.name + "/present"][...] = present
        if not present.all():
            record[~present] = 0
        if self.broadcast:  # the static field repeated over the steps
            record[:, :, 1:] = record[:, :, :1]
