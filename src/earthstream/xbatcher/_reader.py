"""Reading xbatcher's patches with earthstream's engine.

Every patch of a :class:`~earthstream.xbatcher._schema.BatchPlan` is a window of
one :class:`~earthstream.Stream` over the dataset's streamable variables:
the sliced dims are windowed with xbatcher's lengths and strides (edges
dropped), every other dim is taken whole.  A patch's window id follows from its
position along each sliced dim, so the engine is handed the exact windows of
each batch, in xbatcher's order, and decodes each chunk once while its uses
are in sight (the look-ahead covers ``2 x`` the cache in batches; chunks are
kept by next use).  Several small batches are read together (one engine batch
of up to a few MB) and split again.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._stream import Stream
from ..engine import Engine, EpochReport, window_kind
from ..errors import EarthstreamError
from ..sampling import EpochOrder, OrderSpec
from ..sources import open_xarray
from ._schema import BatchPlan

__all__ = ["PatchReader", "streamable"]

log = logging.getLogger("earthstream")

#: Bytes of one engine read when batches are small (several batches are read at once).
READ_BYTES = 8 * 2**20
#: Most windows in one engine read made of several batches.
READ_WINDOWS = 256
#: The default memory_limit, raised when one batch needs more.
DEFAULT_LIMIT = 2**30


def streamable(dataset: Any, sliced: Sequence[Hashable]) -> tuple[list[str], dict[str, str]]:
    """Data variables the engine can read (numeric, having every sliced dim), and why the
    others are read by xarray."""
    names, why = [], {}
    for name, array in dataset.data_vars.items():
        key = str(name)
        if array.ndim == 0:
            why[key] = "has no dims"
        elif np.dtype(array.dtype).kind not in "biuf":
            why[key] = f"is {array.dtype}"
        elif any(d not in array.dims for d in sliced):
            missing = [d for d in sliced if d not in array.dims]
            why[key] = f"lacks the sliced dims {missing}"
        else:
            names.append(key)
    return names, why


class _ReadOrder(EpochOrder):
    """The engine's view of a list of reads: read ``j`` is the window ids ``reads[j]``."""

    def __init__(self, spec: OrderSpec, reads: Sequence[np.ndarray]) -> None:
        super().__init__(spec, 0)
        self._reads = list(reads)

    @property
    def n_batches(self) -> int:
        return len(self._reads)

    def batch(self, index: int) -> np.ndarray:
        return self._reads[index]

    def iter_batches(self, batches: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for j in batches:
            yield int(j), self._reads[int(j)]


@dataclass(frozen=True)
class _Read:
    """One engine read: the windows of consecutive batches ``first .. first + len(counts)``."""

    first: int
    counts: tuple[int, ...]
    ids: np.ndarray


class PatchReader:
    """Reads the patches of a plan's batches as NumPy arrays, with the engine.

    ``names`` are the variables it reads; ``arrays[name]`` of a batch is
    ``(n patches, *the variable's dims in a patch)``.
    """

    def __init__(
        self,
        dataset: Any,
        plan: BatchPlan,
        names: Sequence[str],
        *,
        memory_limit: int | str | None,
        num_threads: int | None,
        prefetch: int,
    ) -> None:
        self.plan = plan
        source = open_xarray(dataset[list(names)], dtype="float64")  # xarray's own dtypes
        differ = [n for n in names if source.variables[n].dtype != np.dtype(dataset[n].dtype)]
        if differ:  # pragma: no cover - open_xarray delivers xarray's dtypes
            raise EarthstreamError(f"the engine would deliver other dtypes for {differ}")
        self.source = source
        self.names = tuple(names)
        sliced = dict(zip(plan.dims, zip(plan.lengths, plan.strides, strict=True), strict=True))
        dims: list[str] = []
        for name in names:
            dims += [str(d) for d in dataset[name].dims if str(d) not in dims]
        window: dict[str, int | None] = {d: sliced[d][0] if d in sliced else None for d in dims}
        stride = {d: sliced[d][1] for d in dims if d in sliced}
        sizes = [len(b) for b in plan.batches]
        window_bytes = self._window_bytes(dataset, window)
        self.read_windows = max(
            max(sizes, default=1), min(READ_WINDOWS, READ_BYTES // max(1, window_bytes))
        )
        if memory_limit is None:
            blocks = sum(
                int(np.prod(v.chunks, dtype=np.int64)) * v.dtype.itemsize
                for v in source.variables.values()
            )
            need = (prefetch + 1) * self.read_windows * window_bytes + 8 * blocks
            memory_limit = max(DEFAULT_LIMIT, need)
        self.stream = Stream(
            source,
            window,
            stride,
            shuffle=False,
            batch_size=self.read_windows,
            memory_limit=memory_limit,
            num_threads=num_threads,
            prefetch=prefetch,
        )
        grid = self.stream.layout.grid
        positions = {d: i for i, d in enumerate(plan.dims)}
        for d in grid.dims:
            if d in positions and grid.axis(d).count != plan.counts[positions[d]]:
                raise EarthstreamError(  # pragma: no cover - the same arithmetic
                    f"the stream has {grid.axis(d).count} windows along {d!r}, xbatcher "
                    f"{plan.counts[positions[d]]}"
                )
        self._grid_of_plan = [positions.get(d) for d in grid.dims]
        self._grid_counts = grid.counts
        budget = self.stream.budget
        self.engine = Engine(
            [source],
            window_kind(self.stream.layout, self.stream.coords),
            budget,
            num_threads=self.stream.num_threads,
            lookahead=int(min(4096, max(16, 2 * budget.cache_capacity // budget.batch_nbytes))),
            policy=self.stream.policy,
        )
        self.report: EpochReport | None = None

    @staticmethod
    def _window_bytes(dataset: Any, window: Mapping[str, int | None]) -> int:
        total = 0
        for name in dataset.data_vars:
            array = dataset[name]
            if all(d in window for d in array.dims):
                shape = [window[str(d)] or array.sizes[d] for d in array.dims]
                total += int(np.prod(shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
        return total

    def window_ids(self, patches: np.ndarray) -> np.ndarray:
        """The stream's window ids of the given patch numbers."""
        patches = np.asarray(patches, dtype=np.int64)
        if not self.plan.dims:
            index = np.zeros((len(patches), 0), dtype=np.int64)
        else:
            index = np.stack(np.unravel_index(patches, self.plan.counts), axis=-1)
        columns = [
            index[:, p] if p is not None else np.zeros(len(patches), dtype=np.int64)
            for p in self._grid_of_plan
        ]
        if not columns:
            return np.zeros(len(patches), dtype=np.int64)
        return np.asarray(np.ravel_multi_index(tuple(columns), self._grid_counts), dtype=np.int64)

    def _reads(self, batches: Sequence[int]) -> list[_Read]:
        reads: list[_Read] = []
        first, total = -1, 0
        counts: list[int] = []
        parts: list[np.ndarray] = []
        for b in batches:
            patches = self.plan.batches[b]
            n = len(patches)
            if counts and (b != first + len(counts) or total + n > self.read_windows):
                reads.append(_Read(first, tuple(counts), np.concatenate(parts)))
                counts, parts, total = [], [], 0
            if not counts:
                first = b
            counts.append(n)
            parts.append(self.window_ids(patches))
            total += n
        if counts:
            reads.append(_Read(first, tuple(counts), np.concatenate(parts)))
        return reads

    def iter_arrays(
        self, batches: Sequence[int]
    ) -> Generator[tuple[int, dict[str, np.ndarray]], None, None]:
        """``(batch, arrays)`` for each of ``batches`` (in the given order)."""
        reads = self._reads(batches)
        order = _ReadOrder(self.stream.order, [r.ids for r in reads])
        for batch in self.engine.run(order, range(len(reads))):
            self.report = self.engine.report
            read = reads[batch.index]
            offset = 0
            for k, n in enumerate(read.counts):
                arrays = {name: batch[name][offset : offset + n] for name in self.names}
                offset += n
                yield read.first + k, arrays
        self.report = self.engine.report

    def close(self) -> None:
        self.engine.release()
