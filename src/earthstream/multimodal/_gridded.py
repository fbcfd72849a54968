"""Windows of a second gridded source (Zarr) for the footprints of the primary's samples.

Grids are matched once, from the 1-D coordinates: along lat and lon the
secondary index of a primary cell is ``offset + factor * index`` (``factor`` 1
on the same grid, ``k`` when the secondary is ``k`` times finer and its cells
nest in the primary's).  Anything else cannot be matched without resampling
and raises :class:`~earthstream.errors.GridMismatchError`.  Chunks are read
with the source's own decoder and kept in a small per-process cache bounded in
bytes, so static fields are decoded once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import GridMismatchError, TimeAxisError
from ..sampling._time import format_time, is_time_axis, time_numbers
from ..sources import ChunkedSource

__all__ = ["AxisMatch", "ChunkCache", "match_axis", "read_box"]


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


class ChunkCache:
    """Decoded chunks of secondary sources, least recently used first out; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.nbytes = 0
        self.decodes = 0
        self._chunks: OrderedDict[tuple[int, str, tuple[int, ...]], np.ndarray | None] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, source: ChunkedSource, name: str, index: tuple[int, ...]) -> np.ndarray | None:
        key = (id(source), name, index)
        with self._lock:
            if key in self._chunks:
                self._chunks.move_to_end(key)
                return self._chunks[key]
        info = source.variables[name]
        # decoded into an array of our own: a source may hand out a reused buffer
        chunk = source.read_chunk(name, index, np.empty(info.chunks, dtype=info.dtype))
        size = 0 if chunk is None else chunk.nbytes
        with self._lock:
            self.decodes += 1
            if key not in self._chunks:
                self._chunks[key] = chunk
                self.nbytes += size
            while self.nbytes > self.capacity and len(self._chunks) > 1:
                _, old = self._chunks.popitem(last=False)
                self.nbytes -= 0 if old is None else old.nbytes
        return chunk


def read_box(
    source: ChunkedSource,
    name: str,
    starts: Sequence[int],
    lengths: Sequence[int],
    cache: ChunkCache,
    out: np.ndarray,
) -> None:
    """Copy the box ``starts .. starts + lengths`` of ``name`` into ``out``.

    Parts outside the array keep what ``out`` holds (the caller fills it).
    """
    info = source.variables[name]
    lo = [max(0, s) for s in starts]
    hi = [min(n, s + k) for s, k, n in zip(starts, lengths, info.shape, strict=True)]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return
    first = [low // c for low, c in zip(lo, info.chunks, strict=True)]
    last = [(h - 1) // c for h, c in zip(hi, info.chunks, strict=True)]
    for index in np.ndindex(*(b - a + 1 for a, b in zip(first, last, strict=True))):
        chunk_index = tuple(a + i for a, i in zip(first, index, strict=True))
        chunk = cache.get(source, name, chunk_index)
        src: list[slice] = []
        dst: list[slice] = []
        for d, (ci, c) in enumerate(zip(chunk_index, info.chunks, strict=True)):
            c0 = ci * c
            a, b = max(lo[d], c0), min(hi[d], c0 + c)
            src.append(slice(a - c0, b - c0))
            dst.append(slice(a - starts[d], b - starts[d]))
        if chunk is None:
            out[tuple(dst)] = info.fill_value if info.fill_value is not None else 0
        else:
            out[tuple(dst)] = chunk[tuple(src)]
