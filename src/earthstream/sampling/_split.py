"""Splits without leakage: time ranges with an embargo, spatial blocks with a buffer.

Everything here is pure and works on positions:

- :func:`time_split_spans` turns named label ranges on a time axis (as ``sel``
  takes them) into disjoint position ranges, ordered in time, leaving out the
  steps of each later split that come within ``gap`` of the previous split's
  last step (the *embargo*, counted).  A stream selected to such a range plans
  every window, forecast inputs and targets included, inside it, so no window
  of one split reaches into another's time span.
- :func:`assign_blocks` gives every block of a block grid a split: a
  checkerboard, or a seeded random assignment with exact shares.
- :func:`boxes_in_split` decides for any pixel boxes (window or chip
  footprints) which split they belong to: the one whose blocks hold the whole
  box grown by ``buffer`` pixels on every side; boxes that touch two splits'
  blocks belong to none.  So two splits' samples never share a pixel and lie
  more than ``2 * buffer`` pixels apart (Chebyshev distance, per dim).
  :func:`grid_split_mask` does the same for every window of a
  :class:`~earthstream.sampling.WindowGrid` at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, SelectionError
from ._forecast import parse_timedelta
from ._select import _label_span, format_label
from ._subset import WindowSubset
from ._time import as_datetime64, format_time
from ._windows import WindowGrid

__all__ = [
    "BlockSplit",
    "TimeSplit",
    "assign_blocks",
    "boxes_in_split",
    "grid_split_mask",
    "time_split_spans",
]

BlockKind = Literal["checkerboard", "random"]


# -- time ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeSplit:
    """One split's positions on the time axis: ``start .. stop - 1``; ``embargoed``
    steps were left out at its start to keep ``gap`` from the split before it."""

    name: str
    start: int
    stop: int
    embargoed: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start


def _gap_ok(gap: Any, times: np.ndarray | None, last: int, first: int) -> bool:
    if gap is None:
        return True
    if isinstance(gap, int):
        return first - last > gap
    assert times is not None
    return bool(times[first] - times[last] > gap)


def time_split_spans(
    values: np.ndarray, ranges: Mapping[str, Any], gap: Any = None, *, dim: str = "time"
) -> dict[str, TimeSplit]:
    """Disjoint position ranges of named time ranges, more than ``gap`` apart.

    Parameters
    ----------
    values
        The time coordinate (``datetime64`` or cftime), already cut to any
        selection the splits refine; positions are relative to it.
    ranges
        Split name -> ``slice(first, last)`` of labels (both ends inclusive, as
        ``sel``: strings and partial dates work), or a single partial date
        (``"2020"``).
    gap
        ``None``; a duration (``"24h"``, a ``timedelta``): a split's first step
        comes more than ``gap`` after the previous split's last step; or a whole
        number of steps left out between them.  Steps of a later split closer
        than that are left out (counted in ``embargoed``).
    dim
        Name of the time dim (for messages).

    Returns
    -------
    dict
        Name -> :class:`TimeSplit`, in the order of ``ranges``.

    Examples
    --------
    >>> t = np.arange("2020-01-01", "2020-01-11", dtype="datetime64[D]").astype("datetime64[ns]")
    >>> spans = time_split_spans(t, {"train": slice(None, "2020-01-06"),
    ...                              "val": slice("2020-01-07", None)}, gap="1D")
    >>> [(s.start, s.stop, s.embargoed) for s in spans.values()]
    [(0, 6, 0), (7, 10, 1)]
    """
    values = np.asarray(values)
    if not ranges:
        raise ConfigError("time= names no split; give e.g. {'train': slice(None, '2019')}.")
    times: np.ndarray | None = None
    if gap is not None and not isinstance(gap, int | np.integer):
        gap = parse_timedelta(gap, what="gap")
        times = (
            values.astype("datetime64[ns]") if values.dtype.kind == "M" else as_datetime64(values)
        )
    elif gap is not None:
        if isinstance(gap, bool) or gap < 0:
            raise ConfigError(f"gap={gap!r} must be a duration or a whole number of steps >= 0.")
        gap = int(gap)
    found: list[tuple[str, int, int]] = []
    for name, key in ranges.items():
        if isinstance(key, tuple) and len(key) == 2:
            key = slice(*key)
        a, b, scalar = _label_span(dim, key, values)
        if scalar:
            raise SelectionError(
                f"time[{name!r}]={format_label(key)} selects one step; a split needs a range: "
                f"write slice({format_label(key)}, {format_label(key)}) for one step."
            )
        found.append((str(name), a, b))
    ordered = sorted(found, key=lambda item: item[1])
    out: dict[str, TimeSplit] = {}
    previous: TimeSplit | None = None
    for name, a, b in ordered:
        if previous is not None and a < previous.stop:
            raise SelectionError(
                f"time splits {previous.name!r} "
                f"({_span_text(values, previous.start, previous.stop)}) and {name!r} "
                f"({_span_text(values, a, b)}) overlap; splits must not share a step. Move one "
                "range's bound."
            )
        start = a
        if previous is not None:
            last = previous.stop - 1
            while start < b and not _gap_ok(gap, times, last, start):
                start += 1
            if start >= b:
                raise SelectionError(
                    f"time split {name!r} ({_span_text(values, a, b)}) lies wholly within "
                    f"gap={format_label(gap)} of {previous.name!r}'s last step "
                    f"({format_time(values[last])}); nothing of it is left. Shorten the gap or "
                    "move the range."
                )
        current = TimeSplit(name, start, b, start - a)
        out[name] = current
        previous = current
    return {name: out[name] for name, _, _ in found}


def _span_text(values: np.ndarray, a: int, b: int) -> str:
    return f"{format_time(values[a])} .. {format_time(values[b - 1])}"


# -- spatial blocks --------------------------------------------------------------------
def assign_blocks(
    shape: Sequence[int],
    n_splits: int,
    kind: BlockKind = "checkerboard",
    *,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The split (0 .. n_splits-1) of every block of a block grid of ``shape``.

    ``"checkerboard"``: split ``sum(block index) % n_splits`` (alternating
    along every dim for two splits).  ``"random"``: a seeded permutation of the
    blocks cut into runs of ``round(fraction * n_blocks)`` blocks (largest
    remainders), so each split gets its share of blocks exactly; default
    fractions are equal.

    >>> assign_blocks((2, 3), 2).tolist()
    [[0, 1, 0], [1, 0, 1]]
    >>> np.bincount(assign_blocks((10, 10), 3, "random", fractions=[0.6, 0.2, 0.2]).ravel())
    array([60, 20, 20])
    """
    shape = tuple(int(s) for s in shape)
    if n_splits < 1:
        raise ConfigError("a block split needs at least one split name.")
    if kind == "checkerboard":
        if fractions is not None:
            raise ConfigError(
                "a checkerboard gives every split the same share of blocks; for other shares "
                "use kind='random' with fractions=."
            )
        index = np.indices(shape).sum(axis=0) if shape else np.zeros((), np.int64)
        return np.asarray(index % n_splits, dtype=np.int64)
    if kind != "random":
        raise ConfigError(f"kind={kind!r}: use 'checkerboard' or 'random'.")
    n_blocks = int(np.prod(shape, dtype=np.int64))
    shares = (
        np.full(n_splits, 1.0 / n_splits) if fractions is None else np.asarray(fractions, float)
    )
    if len(shares) != n_splits or (shares < 0).any() or shares.sum() <= 0:
        raise ConfigError(
            f"fractions={list(fractions or [])!r} must give one non-negative share per split "
            f"({n_splits})."
        )
    shares = shares / shares.sum()
    counts = _largest_remainder(shares, n_blocks)
    labels = np.repeat(np.arange(n_splits), counts)
    perm = np.random.default_rng([int(seed), 0x5B1]).permutation(n_blocks)
    out = np.empty(n_blocks, dtype=np.int64)
    out[perm] = labels
    return out.reshape(shape)


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Whole numbers summing to ``total`` closest to ``shares * total``.

    >>> _largest_remainder(np.array([0.5, 0.25, 0.25]), 5).tolist()
    [3, 1, 1]
    """
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    rest = total - int(counts.sum())
    if rest:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:rest]] += 1
    return np.asarray(counts, dtype=np.int64)


def _table(assignment: np.ndarray, split: int) -> np.ndarray:
    """Summed-area table of ``assignment == split`` (one zero row in front per dim)."""
    table = (assignment == split).astype(np.int64)
    for axis in range(table.ndim):
        table = np.cumsum(table, axis=axis)
        pad = [(1, 0) if a == axis else (0, 0) for a in range(table.ndim)]
        table = np.pad(table, pad)
    return np.asarray(table, dtype=np.int64)


def _box_blocks(
    lo: np.ndarray, hi: np.ndarray, size: int, block: int, buffer: int
) -> tuple[np.ndarray, np.ndarray]:
    """First and last+1 block touched by pixel boxes ``[lo, hi)`` grown by ``buffer``,
    clipped to ``[0, size)``."""
    a = np.clip(np.asarray(lo, np.int64) - buffer, 0, size - 1)
    b = np.clip(np.asarray(hi, np.int64) + buffer, 1, size)
    return a // block, (b - 1) // block + 1


def _box_sum(table: np.ndarray, los: Sequence[np.ndarray], his: Sequence[np.ndarray]) -> np.ndarray:
    """Sums of the table's cells over block boxes (broadcasting the per-dim bounds)."""
    total = np.zeros(np.broadcast_shapes(*[np.shape(x) for x in (*los, *his)]), dtype=np.int64)
    for corner in itertools.product((0, 1), repeat=len(los)):
        index = tuple(h if c else lo for c, lo, h in zip(corner, los, his, strict=True))
        sign = (-1) ** (len(los) - sum(corner))
        total += sign * table[index]
    return total


def boxes_in_split(
    lo: np.ndarray,
    hi: np.ndarray,
    assignment: np.ndarray,
    block: Sequence[int],
    sizes: Sequence[int],
    buffer: Sequence[int] | int = 0,
) -> np.ndarray:
    """The split of each pixel box, or -1 where its grown box touches two splits' blocks.

    Parameters
    ----------
    lo, hi
        ``(n, d)`` pixel boxes ``[lo, hi)`` (e.g. chip or window footprints), in
        the positions the blocks are counted from.
    assignment
        The split of every block (:func:`assign_blocks`), ``d`` dims.
    block
        Block size in pixels per dim.
    sizes
        Extent of the domain per dim: pixels outside it (padding) belong to no
        block and are ignored.
    buffer
        Pixels each box is grown by, per dim (or one for all).

    >>> a = assign_blocks((2, 2), 2)                 # [[0, 1], [1, 0]], blocks of 4 x 4
    >>> lo = np.array([[0, 0], [0, 2], [5, 1]]); hi = lo + 2
    >>> boxes_in_split(lo, hi, a, (4, 4), (8, 8)).tolist()
    [0, 0, 1]
    >>> boxes_in_split(lo, hi, a, (4, 4), (8, 8), buffer=1).tolist()  # the 2nd touches block 1
    [0, -1, 1]
    """
    lo, hi = np.atleast_2d(np.asarray(lo, np.int64)), np.atleast_2d(np.asarray(hi, np.int64))
    d = assignment.ndim
    buffers = (
        [int(buffer)] * d if isinstance(buffer, int | np.integer) else [int(b) for b in buffer]
    )
    los, his = [], []
    for axis in range(d):
        a, b = _box_blocks(
            lo[:, axis], hi[:, axis], int(sizes[axis]), int(block[axis]), buffers[axis]
        )
        los.append(a)
        his.append(np.minimum(b, assignment.shape[axis]))
    volume = np.prod([h - a for a, h in zip(los, his, strict=True)], axis=0)
    out = np.full(len(lo), -1, dtype=np.int64)
    for split in np.unique(assignment).tolist():
        inside = _box_sum(_table(assignment, split), los, his) == volume
        out[inside] = split
    return out


def grid_split_mask(
    grid: WindowGrid,
    block: Mapping[str, int],
    assignment: np.ndarray,
    split: int,
    buffer: Mapping[str, int] | int = 0,
) -> np.ndarray:
    """Which windows of ``grid`` belong to ``split`` (boolean, shape ``grid.counts``).

    Blocks tile the grid's block dims from position 0 of the selection; a
    window belongs to ``split`` when its footprint grown by ``buffer`` lies in
    that split's blocks (as :func:`boxes_in_split`), whatever its position on
    the other dims.
    """
    dims = list(block)
    axes = [grid.axis(d) for d in dims]
    los, his = [], []
    for axis_i, (dim, axis) in enumerate(zip(dims, axes, strict=True)):
        b = buffer if isinstance(buffer, int | np.integer) else int(buffer.get(dim, 0))
        starts = axis.starts()
        a, h = _box_blocks(starts, starts + axis.length, axis.size, int(block[dim]), int(b))
        h = np.minimum(h, assignment.shape[axis_i])
        shape = [1] * len(dims)
        shape[axis_i] = len(starts)
        los.append(a.reshape(shape))
        his.append(h.reshape(shape))
    volume = np.ones([1] * len(dims), dtype=np.int64)
    for a, h in zip(los, his, strict=True):
        volume = volume * (h - a)
    inside = _box_sum(_table(assignment, split), los, his) == volume
    # broadcast over the grid's other dims, in grid order
    order = [dims.index(d) for d in grid.dims if d in dims]
    inside = np.transpose(inside, order)
    shape = [grid.axis(d).count if d in dims else 1 for d in grid.dims]
    return np.broadcast_to(inside.reshape(shape), grid.counts)


@dataclass(frozen=True)
class BlockSplit:
    """The windows of one split of a spatial block assignment: a window rule.

    ``block``: block size per dim (pixels of the selection); ``assignment``:
    the split of every block; ``split``: which one this rule keeps; ``buffer``:
    pixels each window is grown by before the check.  ``select`` gives the
    grid's windows of this split, the others counted as excluded.
    """

    name: str
    block: Mapping[str, int]
    assignment: np.ndarray = field(repr=False)
    split: int
    buffer: Mapping[str, int] | int = 0

    def select(self, grid: WindowGrid, context: Any = None) -> WindowSubset:
        mask = grid_split_mask(grid, self.block, self.assignment, self.split, self.buffer)
        ids = np.flatnonzero(mask.reshape(-1))
        return WindowSubset(
            grid.counts,
            ids,
            {f"other splits' blocks or buffer ({self.name})": grid.n_windows - len(ids)},
        )


def block_shape(grid: WindowGrid, block: Mapping[str, int]) -> tuple[int, ...]:
    """Blocks per dim that tile the grid's selection."""
    out = []
    for dim, size in block.items():
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ConfigError(f"block[{dim!r}]={size!r} must be a whole number of pixels >= 1.")
        out.append(-(-grid.axis(dim).size // int(size)))
    return tuple(out)
