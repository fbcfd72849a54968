"""One epoch's window sequence, readable by position range (see :mod:`._order`).

:class:`EpochOrder` is grid order, block shuffle or a full permutation of the
grid's windows; :mod:`._random` (subsets, random draws) and :mod:`._inference`
(explicit per-rank sequences) extend it.  :class:`~._order.OrderSpec.epoch`
picks the kind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from ._permute import permutation_slice

if TYPE_CHECKING:
    from ._order import OrderSpec

__all__ = ["EpochOrder", "shard_range"]

_BLOCKS, _UNIT, _FULL = 0, 1, 2  # stream ids mixed into every seed


def shard_range(n_batches: int, shard: int, num_shards: int) -> range:
    """The contiguous run of batch indices that ``shard`` of ``num_shards`` serves.

    >>> [list(shard_range(5, s, 2)) for s in range(2)]
    [[0, 1], [2, 3, 4]]
    """
    if not 0 <= shard < num_shards:
        raise ConfigError(f"shard {shard} is outside 0..{num_shards - 1}.")
    return range(shard * n_batches // num_shards, (shard + 1) * n_batches // num_shards)


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
