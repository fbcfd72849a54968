"""A subset of a window grid: the windows a split, a mask or a rule keeps.

A :class:`WindowSubset` is the sorted ids of the kept windows of one
:class:`~earthstream.sampling.WindowGrid`, with a count of the windows each
reason left out (a split's blocks, a valid-fraction threshold ...), so a
stream can say how many windows it excluded and why.  Orders
(:class:`~earthstream.sampling.OrderSpec` with ``subset=``) visit only these
windows; window ids stay those of the grid, so the engine plans them as any
other.

:class:`BlockIndex` groups the ids of a subset (or of the whole grid) by chunk
group, which the chunk-aware shuffle and the random sampler need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ._windows import WindowGrid

__all__ = [
    "BlockIndex",
    "StreamContext",
    "WindowRule",
    "WindowSubset",
    "as_subset",
    "block_of_windows",
]


@dataclass(frozen=True, eq=False)
class WindowSubset:
    """The windows of a grid that are kept: sorted, unique window ids.

    Parameters
    ----------
    counts
        The grid's window counts per dim (``WindowGrid.counts``): the subset
        belongs to that grid.
    ids
        Kept window ids, ascending.
    excluded
        Reason -> number of windows it left out (reasons are applied in
        order; a window left out by an earlier reason is not counted again).
    info
        What computing it cost, from rules that read data (time, chunks,
        bytes), for reports.

    Examples
    --------
    >>> from earthstream.sampling import build_window_grid
    >>> grid = build_window_grid({"y": 6}, {"y": 2}, None, "drop", {"y": 2})
    >>> sub = WindowSubset.from_mask(grid, np.array([True, False, True]), "odd rows")
    >>> sub.ids.tolist(), sub.n_excluded, dict(sub.excluded)
    ([0, 2], 1, {'odd rows': 1})
    """

    counts: tuple[int, ...]
    ids: np.ndarray
    excluded: Mapping[str, int] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        if len(ids) > 1 and not (np.diff(ids) > 0).all():
            raise ConfigError("a window subset's ids must be ascending and unique.")
        n = int(np.prod(self.counts, dtype=np.int64))
        if len(ids) and (ids[0] < 0 or ids[-1] >= n):
            raise ConfigError(f"window ids {ids[0]}..{ids[-1]} lie outside the grid's {n}.")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))
        object.__setattr__(self, "excluded", dict(self.excluded))
        object.__setattr__(self, "info", dict(self.info))

    @classmethod
    def from_mask(cls, grid: WindowGrid, mask: np.ndarray, reason: str = "mask") -> WindowSubset:
        """The windows where ``mask`` (shape ``grid.counts``, or flat) is True."""
        mask = np.asarray(mask, dtype=bool)
        if mask.size != grid.n_windows:
            raise ConfigError(
                f"a window mask needs one value per window of the grid {grid.counts} "
                f"({grid.n_windows}); got shape {mask.shape}."
            )
        ids = np.flatnonzero(mask.reshape(-1))
        excluded = {reason: grid.n_windows - len(ids)}
        return cls(grid.counts, ids, excluded)

    @classmethod
    def everything(cls, grid: WindowGrid) -> WindowSubset:
        return cls(grid.counts, np.arange(grid.n_windows, dtype=np.int64), {})

    @property
    def n(self) -> int:
        """Windows kept."""
        return len(self.ids)

    @property
    def n_excluded(self) -> int:
        return int(sum(self.excluded.values()))

    def mask(self) -> np.ndarray:
        """Kept windows as a boolean array of shape ``counts``."""
        out = np.zeros(int(np.prod(self.counts, dtype=np.int64)), dtype=bool)
        out[self.ids] = True
        return out.reshape(self.counts)

    def intersect(self, other: WindowSubset) -> WindowSubset:
        """Windows kept by both; ``other``'s reasons count only what it removes in addition."""
        if other.counts != self.counts:
            raise ConfigError(f"window subsets of grids {self.counts} and {other.counts} differ.")
        ids = np.intersect1d(self.ids, other.ids, assume_unique=True)
        excluded = dict(self.excluded)
        removed = self.n - len(ids)
        for reason, count in other.excluded.items():
            take = min(count, removed)
            if take:
                excluded[reason] = excluded.get(reason, 0) + take
                removed -= take
        if removed:
            excluded["other"] = excluded.get("other", 0) + removed
        return WindowSubset(self.counts, ids, excluded, {**self.info, **other.info})

    def digest(self) -> str:
        """A short hash of the kept ids (part of a stream's resume fingerprint)."""
        h = hashlib.sha256(np.ascontiguousarray(self.ids).tobytes())
        h.update(repr(self.counts).encode())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        """``"kept of total (reason: n, ...)"``."""
        total = self.n + self.n_excluded
        why = ", ".join(f"{r}: {n:,}" for r, n in self.excluded.items() if n)
        return f"{self.n:,} of {total:,} windows" + (f" ({why} excluded)" if why else "")

    def __repr__(self) -> str:
        return f"<WindowSubset {self.describe()}>"


@dataclass(frozen=True, eq=False)
class StreamContext:
    """What a stream hands a :class:`WindowRule` besides its grid: its source (a
    ``ChunkedSource``), its selection (dim -> ``Span``), its coordinates cut to
    the selection, its memory budget in bytes and its thread count."""

    source: Any
    spans: Mapping[str, Any]
    coords: Mapping[str, np.ndarray]
    memory_limit: int
    num_threads: int


@runtime_checkable
class WindowRule(Protocol):
    """Something that chooses windows of a grid, e.g. a split's blocks or a valid fraction.

    ``context`` is what the stream knows besides the grid (its source and
    selection); pure rules ignore it.
    """

    def select(self, grid: WindowGrid, context: Any) -> WindowSubset: ...


def as_subset(value: Any, grid: WindowGrid, context: Any = None) -> WindowSubset:
    """A :class:`WindowSubset` from a subset, a boolean mask, a rule, or a list of those."""
    if isinstance(value, WindowSubset):
        if value.counts != grid.counts:
            raise ConfigError(
                f"the window subset belongs to a grid of {value.counts} windows per dim; this "
                f"stream's grid has {grid.counts}. Build it from this stream's window grid."
            )
        return value
    if isinstance(value, WindowRule):
        return as_subset(value.select(grid, context), grid)
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError("windows=[] names no rule; pass None to keep every window.")
        out = as_subset(value[0], grid, context)
        for item in value[1:]:
            out = out.intersect(as_subset(item, grid, context))
        return out
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return WindowSubset.from_mask(grid, value)
    raise ConfigError(
        f"windows={type(value).__name__} is not a window choice; pass a WindowSubset, a boolean "
        "array with one value per window (shape stream.order.grid.counts), a rule such as "
        "es.MinValid(...), or a list of them."
    )


def block_of_windows(grid: WindowGrid, ids: np.ndarray) -> np.ndarray:
    """The chunk group (flat, as ``WindowGrid.block_sizes``) of each window id.

    >>> from earthstream.sampling import build_window_grid
    >>> g = build_window_grid({"t": 4, "y": 10}, {"y": 2}, None, "drop", {"t": 2, "y": 4})
    >>> block_of_windows(g, np.arange(g.n_windows)).reshape(g.counts).tolist()[0]
    [0, 0, 1, 1, 2]
    """
    ids = np.asarray(ids, dtype=np.int64)
    if not grid.axes:
        return np.zeros(len(ids), dtype=np.int64)
    k = np.unravel_index(ids, grid.counts)
    parts = []
    shape = []
    for axis, kk in zip(grid.axes, k, strict=True):
        _, hi = axis.block_ranges()
        parts.append(np.searchsorted(hi, kk, side="right"))
        shape.append(len(hi))
    return np.asarray(np.ravel_multi_index(tuple(parts), tuple(shape)), dtype=np.int64)


class BlockIndex:
    """The windows of a grid (or of a subset of it) grouped by chunk group.

    ``sizes[b]`` windows lie in group ``b``; :meth:`windows` gives the ids of
    some groups and :meth:`pick` the ``p``-th window of a group, without
    materializing the whole grid.
    """

    def __init__(self, grid: WindowGrid, subset: WindowSubset | None = None) -> None:
        self.grid = grid
        self.subset = subset
        if subset is None:
            self.sizes = grid.block_sizes()
            self._ranges = [a.block_ranges() for a in grid.axes]
            self._shape = tuple(len(lo) for lo, _ in self._ranges)
        else:
            blocks = block_of_windows(grid, subset.ids)
            n_blocks = int(np.prod(grid.block_counts(), dtype=np.int64))
            order = np.argsort(blocks, kind="stable")
            self._grouped = subset.ids[order]
            self.sizes = np.bincount(blocks, minlength=n_blocks).astype(np.int64)
            self._offsets = np.concatenate(([0], np.cumsum(self.sizes)))

    @property
    def n_blocks(self) -> int:
        return len(self.sizes)

    def windows(self, blocks: np.ndarray) -> np.ndarray:
        """Ids of the windows of ``blocks``, group after group, each ascending."""
        if self.subset is None:
            return self.grid.block_windows(blocks)
        parts = [self._grouped[self._offsets[b] : self._offsets[b + 1]] for b in blocks]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def pick(self, block: int, positions: np.ndarray) -> np.ndarray:
        """Ids of the windows at ``positions`` (0 .. sizes[block]-1) of group ``block``."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.subset is not None:
            return np.asarray(self._grouped[self._offsets[block] + positions], dtype=np.int64)
        coords = np.unravel_index(block, self._shape) if self._shape else ()
        los = [lo[c] for (lo, _), c in zip(self._ranges, coords, strict=True)]
        extents = [hi[c] - lo[c] for (lo, hi), c in zip(self._ranges, coords, strict=True)]
        local = np.unravel_index(positions, tuple(int(e) for e in extents)) if extents else ()
        k = tuple(int(lo) + loc for lo, loc in zip(los, local, strict=True))
        if not k:
            return np.zeros(len(positions), dtype=np.int64)
        return np.asarray(np.ravel_multi_index(k, self.grid.counts), dtype=np.int64)
