"""The order of an epoch: a pure function of (seed, epoch, windows, settings).

An epoch is one global sequence of window ids, cut into batches of
``batch_size`` consecutive windows.  Three orders exist:

``"none"`` (``shuffle=False``)
    Grid order: window ids ascending (row-major over the stream's dims).
``"chunks"`` (the default)
    Block shuffle.  Windows are grouped by the chunk their start lies in
    (a *chunk group*).  The groups are visited in a random order; every
    ``shuffle_buffer`` consecutive groups form a *unit* whose windows are fully
    mixed.  The engine keeps a unit's chunks resident while its windows are
    served, so each chunk is decoded once per epoch.
``"full"``
    A uniform random permutation of all windows.  A bounded chunk cache limits
    how often a chunk is decoded again.

Sharding (distributed ranks, DataLoader workers; see :mod:`._plan`) splits the
*batches* into contiguous runs, so the batches themselves do not depend on the
number of shards, and shards touch disjoint chunk groups except at run
boundaries.
The sequence is never materialized whole: any range of it is computed on
demand from per-unit seeds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from ._permute import permutation_slice
from ._windows import WindowGrid

if TYPE_CHECKING:
    from ._inference import ExplicitSequence
    from ._subset import WindowSubset

__all__ = ["SHUFFLES", "EpochOrder", "OrderSpec", "normalize_shuffle", "shard_range"]

SHUFFLES = ("none", "chunks", "full")
_BLOCKS, _UNIT, _FULL = 0, 1, 2  # stream ids mixed into every seed


def normalize_shuffle(shuffle: bool | str | None) -> str:
    """Map the user's ``shuffle`` argument to one of :data:`SHUFFLES`.

    >>> normalize_shuffle(False), normalize_shuffle("chunks"), normalize_shuffle(True)
    ('none', 'chunks', 'chunks')
    """
    if shuffle is False or shuffle is None or shuffle == "none":
        return "none"
    if shuffle is True or shuffle == "chunks":
        return "chunks"
    if shuffle == "full":
        return "full"
    raise ConfigError(
        f"shuffle={shuffle!r} is not an order; use False (grid order), 'chunks' (block "
        "shuffle, the default) or 'full' (uniform permutation)."
    )


def shard_range(n_batches: int, shard: int, num_shards: int) -> range:
    """The contiguous run of batch indices that ``shard`` of ``num_shards`` serves.

    >>> [list(shard_range(5, s, 2)) for s in range(2)]
    [[0, 1], [2, 3, 4]]
    """
    if not 0 <= shard < num_shards:
        raise ConfigError(f"shard {shard} is outside 0..{num_shards - 1}.")
    return range(shard * n_batches // num_shards, (shard + 1) * n_batches // num_shards)


@dataclass(frozen=True)
class OrderSpec:
    """How windows are ordered and batched; frozen and picklable.

    ``subset`` restricts the epoch to some windows of the grid (a split, a
    valid-fraction threshold); ``samples`` draws that many windows per epoch
    at random from the grid (or the subset) instead of visiting each once,
    without ``replacement`` by default (see :mod:`earthstream.sampling._random`);
    ``sequence`` is an explicit, planned window sequence per rank (inference
    over output chunks, :mod:`earthstream.sampling._inference`).
    """

    grid: WindowGrid
    shuffle: str = "chunks"
    seed: int = 0
    batch_size: int = 32
    drop_last: bool = False
    shuffle_buffer: int = 16
    subset: WindowSubset | None = None
    samples: int | None = None
    replacement: bool = False
    sequence: ExplicitSequence | None = None

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLES:
            raise ConfigError(f"shuffle={self.shuffle!r} must be one of {SHUFFLES}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 1.")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"shuffle_buffer={self.shuffle_buffer} must be at least 1.")
        if self.subset is not None and self.subset.counts != self.grid.counts:
            raise ConfigError(
                f"the window subset belongs to a grid of {self.subset.counts} windows per dim, "
                f"not this grid's {self.grid.counts}."
            )
        if self.samples is not None:
            if isinstance(self.samples, bool) or not isinstance(self.samples, int | np.integer):
                raise ConfigError(f"samples_per_epoch={self.samples!r} must be a whole number.")
            if self.samples < 1:
                raise ConfigError(f"samples_per_epoch={self.samples} must be at least 1.")
            if not self.replacement and self.samples > self.n_set:
                raise ConfigError(
                    f"samples_per_epoch={self.samples} distinct windows, but only "
                    f"{self.n_set} windows exist; lower it, or pass replacement=True to "
                    "draw windows with replacement."
                )
            if self.n_set == 0:
                raise ConfigError("samples_per_epoch needs at least one window to draw from.")

    @property
    def n_set(self) -> int:
        """Windows the epoch draws from (the subset's, else the grid's)."""
        return self.subset.n if self.subset is not None else self.grid.n_windows

    @property
    def n_windows(self) -> int:
        """Windows (samples) per epoch."""
        if self.sequence is not None:
            return self.sequence.n_windows
        if self.samples is not None:
            return int(self.samples)
        return self.n_set

    @property
    def n_batches(self) -> int:
        if self.sequence is not None:
            return self.sequence.n_batches
        n, b = self.n_windows, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def epoch(self, epoch: int) -> EpochOrder:
        if self.sequence is not None:
            from ._inference import ExplicitOrder

            return ExplicitOrder(self, epoch)
        if self.subset is not None or self.samples is not None:
            from ._random import SampledOrder

            return SampledOrder(self, epoch)
        return EpochOrder(self, epoch)


class EpochOrder:
    """The window sequence of one epoch, readable by position range."""

    def __init__(self, spec: OrderSpec, epoch: int) -> None:
        self.spec = spec
        self.epoch = int(epoch)
        self._unit_cache: dict[int, np.ndarray] = {}
        if spec.shuffle == "chunks":
            grid = spec.grid
            sizes = grid.block_sizes()
            rng = np.random.default_rng([spec.seed, self.epoch, _BLOCKS])
            self._blocks = rng.permutation(len(sizes))
            g = spec.shuffle_buffer
            unit_sizes = np.add.reduceat(sizes[self._blocks], np.arange(0, len(sizes), g))
            self._unit_ends = np.cumsum(unit_sizes) if len(sizes) else np.zeros(0, np.int64)

    @property
    def n_batches(self) -> int:
        return self.spec.n_batches

    def _unit(self, u: int) -> np.ndarray:
        cached = self._unit_cache.get(u)
        if cached is None:
            g = self.spec.shuffle_buffer
            ids = self.spec.grid.block_windows(self._blocks[u * g : (u + 1) * g])
            rng = np.random.default_rng([self.spec.seed, self.epoch, _UNIT, u])
            cached = ids[rng.permutation(len(ids))]
            if len(self._unit_cache) >= 4:
                self._unit_cache.pop(next(iter(self._unit_cache)))
            self._unit_cache[u] = cached
        return cached

    def window_ids(self, start: int, stop: int) -> np.ndarray:
        """Window ids at sequence positions ``start:stop`` of this epoch."""
        n = self.spec.n_windows
        start, stop = max(0, start), min(stop, n)
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        shuffle = self.spec.shuffle
        if shuffle == "none":
            return np.arange(start, stop, dtype=np.int64)
        if shuffle == "full":
            return permutation_slice(n, (self.spec.seed, self.epoch, _FULL), start, stop)
        ends = self._unit_ends
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(ends, stop - 1, side="right"))
        parts = []
        for u in range(first, last + 1):
            begin = int(ends[u - 1]) if u else 0
            unit = self._unit(u)
            parts.append(unit[max(start - begin, 0) : stop - begin])
        return np.concatenate(parts)

    def batch(self, index: int) -> np.ndarray:
        """Window ids of batch ``index``."""
        if not 0 <= index < self.n_batches:
            raise IndexError(f"batch {index} is outside 0..{self.n_batches - 1}")
        b = self.spec.batch_size
        return self.window_ids(index * b, (index + 1) * b)

    def iter_batches(self, batches: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, window ids)`` for each batch index in ``batches``, in that order.

        ``batches`` is usually a ``range`` or a :class:`~earthstream.sampling.BatchRuns`
        (a few runs of consecutive indices, e.g. one rank's part of an epoch);
        each run is read in spans.
        """
        b = self.spec.batch_size
        span = max(1, 8192 // b)  # read the sequence in spans of ~8k windows
        for run in _runs(batches):
            for first in range(run.start, run.stop, span):
                last = min(first + span, run.stop)
                ids = self.window_ids(first * b, last * b)
                for j in range(first, last):
                    yield j, ids[(j - first) * b : (j - first + 1) * b]


def _runs(batches: Sequence[int]) -> Iterator[range]:
    """``batches`` as maximal runs of consecutive indices."""
    if isinstance(batches, range) and batches.step == 1:
        yield batches
        return
    ranges = getattr(batches, "ranges", None)
    if ranges is not None:
        yield from ranges
        return
    start = prev = None
    for j in batches:
        j = int(j)
        if prev is not None and j == prev + 1:
            prev = j
            continue
        if start is not None and prev is not None:
            yield range(start, prev + 1)
        start = prev = j
    if start is not None and prev is not None:
        yield range(start, prev + 1)
