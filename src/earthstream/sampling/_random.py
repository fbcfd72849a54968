"""Epochs over a subset of windows, and random windows per epoch (``samples_per_epoch``).

Both are orders of an :class:`~earthstream.sampling.OrderSpec`: an epoch is
still one global sequence of window ids, read by position range, cut into
batches of consecutive windows, so :class:`~earthstream.sampling.EpochPlan`
splits it over ranks and workers and :class:`~earthstream.sampling.Cursor`
resumes it exactly as any other epoch.  Everything is a pure function of
``(seed, epoch)`` and the settings.

**Subsets** (``subset=``, every kept window once per epoch): grid order is the
kept ids ascending; ``"full"`` a permutation of them; ``"chunks"`` the chunk
groups of the kept windows in random order, ``shuffle_buffer`` groups mixed
per unit, as for the whole grid.

**Random windows** (``samples=N``): ``N`` windows drawn uniformly from the
grid (or the subset), distinct within an epoch (a simple random sample)
unless ``replacement`` (then independent draws, as torchgeo's
``RandomGeoSampler``).

- ``"full"``: the sample in random order: without replacement the first ``N``
  positions of a seeded permutation of the windows (a prefix of a uniform
  permutation is a simple random sample); with replacement, pages of 4096
  seeded draws.
- ``"chunks"`` (default) and ``"none"``: first how many samples fall in each
  chunk group (one multivariate hypergeometric draw without replacement, a
  multinomial with), then, unit by unit (``shuffle_buffer`` groups visited in
  random order; in grid order for ``"none"``), which windows of each group
  (seeded per unit), mixed within the unit (sorted for ``"none"``).  So a
  unit's samples share its chunks and the engine decodes each chunk once per
  epoch, as for the full grid, and the sample is still uniform.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._epoch import EpochOrder
from ._permute import permutation_slice
from ._subset import BlockIndex

if TYPE_CHECKING:
    from ._order import OrderSpec

__all__ = ["SampledOrder", "block_index"]

# stream ids mixed into the seeds, distinct from _order's (0, 1, 2)
_COUNTS, _DRAW, _PAGES, _SUB_BLOCKS, _SUB_UNIT, _SUB_FULL = 10, 11, 12, 13, 14, 15
_PAGE = 4096
#: Totals NumPy's hypergeometric sampler takes (its ``ngood + nbad`` limit).
_HYPERGEOMETRIC_LIMIT = 10**9

_INDEX_CACHE: dict[int, tuple[OrderSpec, BlockIndex]] = {}


def block_index(spec: OrderSpec) -> BlockIndex:
    """The chunk-group index of ``spec``'s windows, kept per process for a few specs."""
    key = id(spec)
    hit = _INDEX_CACHE.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    index = BlockIndex(spec.grid, spec.subset)
    if len(_INDEX_CACHE) >= 4:
        _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
    _INDEX_CACHE[key] = (spec, index)
    return index


def _counts(spec: OrderSpec, epoch: int, sizes: np.ndarray) -> np.ndarray:
    """How many of the epoch's samples fall in each chunk group (uniform over windows)."""
    rng = np.random.default_rng([spec.seed, epoch, _COUNTS])
    n = int(spec.samples or 0)
    total = int(sizes.sum())
    if spec.replacement:
        return np.asarray(rng.multinomial(n, sizes / total), dtype=np.int64)
    if total < _HYPERGEOMETRIC_LIMIT:
        return np.asarray(
            rng.multivariate_hypergeometric(sizes, n, method="marginals"), dtype=np.int64
        )
    # a simple random sample of positions in group order: the first n of a permutation
    positions = permutation_slice(total, (spec.seed, epoch, _COUNTS), 0, n)
    ends = np.cumsum(sizes)
    return np.bincount(np.searchsorted(ends, positions, side="right"), minlength=len(sizes))


class SampledOrder(EpochOrder):
    """The window sequence of one epoch over a subset, or of random windows."""

    def __init__(self, spec: OrderSpec, epoch: int) -> None:
        self.spec = spec
        self.epoch = int(epoch)
        self._unit_cache: dict[int, np.ndarray] = {}
        self._random = spec.samples is not None
        self._positions: np.ndarray | None = None
        if spec.shuffle == "full":
            return
        index = block_index(spec)
        self._index = index
        sizes = index.sizes
        per_block = _counts(spec, self.epoch, sizes) if self._random else sizes
        if spec.shuffle == "chunks":
            rng = np.random.default_rng([spec.seed, self.epoch, _SUB_BLOCKS])
            blocks = rng.permutation(len(sizes))
        else:
            blocks = np.arange(len(sizes))
        blocks = blocks[per_block[blocks] > 0]  # groups with nothing to serve are skipped
        self._blocks = blocks
        self._per_block = per_block
        g = spec.shuffle_buffer if spec.shuffle == "chunks" else 1
        self._g = g
        if len(blocks):
            unit_sizes = np.add.reduceat(per_block[blocks], np.arange(0, len(blocks), g))
            self._unit_ends = np.cumsum(unit_sizes)
        else:
            self._unit_ends = np.zeros(0, np.int64)

    def _unit(self, u: int) -> np.ndarray:
        cached = self._unit_cache.get(u)
        if cached is not None:
            return cached
        spec = self.spec
        blocks = self._blocks[u * self._g : (u + 1) * self._g]
        rng = np.random.default_rng(
            [spec.seed, self.epoch, _DRAW if self._random else _SUB_UNIT, u]
        )
        if not self._random:
            ids = self._index.windows(blocks)
        else:
            parts = []
            for b in blocks.tolist():
                size, k = int(self._index.sizes[b]), int(self._per_block[b])
                if spec.replacement:
                    positions = rng.integers(0, size, k)
                else:
                    positions = rng.choice(size, k, replace=False)
                if spec.shuffle == "none":
                    positions = np.sort(positions)
                parts.append(self._index.pick(b, positions))
            ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if spec.shuffle == "chunks":
            ids = ids[rng.permutation(len(ids))]
        if len(self._unit_cache) >= 4:
            self._unit_cache.pop(next(iter(self._unit_cache)))
        self._unit_cache[u] = ids
        return ids

    def _full(self, start: int, stop: int) -> np.ndarray:
        spec = self.spec
        n_set = spec.n_set
        if not self._random or not spec.replacement:
            positions = permutation_slice(n_set, (spec.seed, self.epoch, _SUB_FULL), start, stop)
        else:
            first, last = start // _PAGE, (stop - 1) // _PAGE
            pages = [
                np.random.default_rng([spec.seed, self.epoch, _PAGES, p]).integers(0, n_set, _PAGE)
                for p in range(first, last + 1)
            ]
            flat = np.concatenate(pages)
            positions = flat[start - first * _PAGE : stop - first * _PAGE]
        if spec.subset is not None:
            return np.asarray(spec.subset.ids[positions], dtype=np.int64)
        return np.asarray(positions, dtype=np.int64)

    def window_ids(self, start: int, stop: int) -> np.ndarray:
        n = self.spec.n_windows
        start, stop = max(0, start), min(stop, n)
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        if self.spec.shuffle == "full":
            return self._full(start, stop)
        if not self._random and self.spec.shuffle == "none":
            assert self.spec.subset is not None
            return np.asarray(self.spec.subset.ids[start:stop], dtype=np.int64)
        ends = self._unit_ends
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(ends, stop - 1, side="right"))
        parts = []
        for u in range(first, last + 1):
            begin = int(ends[u - 1]) if u else 0
            unit = self._unit(u)
            parts.append(unit[max(start - begin, 0) : stop - begin])
        return np.concatenate(parts)
