"""Inference over a whole domain, planned from the output's chunks.

Predictions are written back chunk by chunk, each output chunk once and
complete.  So the plan starts from the output chunk grid (over the stream's
dims, in positions of its selection):

- every chunk has one owner: rank ``r`` of ``world_size`` owns the contiguous
  run ``shard_range(n_chunks, r, world_size)`` of chunks in row-major order
  (fixed, whatever is already written, so two ranks never own one chunk);
- a rank visits its chunks that are not written yet in order and, for each,
  the windows whose output footprint touches it and that it has not visited
  yet; a window touching chunks of two owners is computed by both (halo
  windows are recomputed, never exchanged);
- a chunk is complete when every window touching it has been added
  (:meth:`OutputChunks.expected`), so a writer can finish and write it at once.

:class:`ExplicitSequence` holds every rank's window sequence; each rank gets
the same number of batches (a short rank repeats its last batch, as padding,
so DDP steps match) and global batch ``r * steps + i`` is rank ``r``'s ``i``-th,
so :class:`~earthstream.sampling.EpochPlan` gives each rank exactly its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from ._epoch import EpochOrder, _runs, shard_range
from ._windows import WindowGrid

if TYPE_CHECKING:
    from ._order import OrderSpec

__all__ = ["ExplicitOrder", "ExplicitSequence", "OutputChunks", "plan_inference"]


@dataclass(frozen=True)
class OutputChunks:
    """The output's chunk grid over a window grid's dims, and where windows land on it.

    Window ``k`` along dim ``d`` writes positions ``[start + offsets[d], start +
    offsets[d] + lengths[d])`` (clipped to ``[0, sizes[d])``): the window itself
    on windowed dims, one position on iterated dims, and e.g. the target step
    of a forecast (``offsets`` the target's offset, ``lengths`` 1).

    >>> from earthstream.sampling import build_window_grid
    >>> g = build_window_grid({"y": 10}, {"y": 4}, {"y": 3}, "pad", {"y": 10})
    >>> out = OutputChunks.of(g, {"y": 5})
    >>> out.shape, [out.windows_of(c).tolist() for c in range(2)], out.expected().tolist()
    ((2,), [[0, 1], [1, 2]], [2, 2])
    """

    dims: tuple[str, ...]
    sizes: tuple[int, ...]
    chunks: tuple[int, ...]
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    starts: tuple[np.ndarray, ...]  # window starts per dim (ascending)

    @classmethod
    def of(
        cls,
        grid: WindowGrid,
        chunks: dict[str, int],
        offsets: dict[str, int] | None = None,
        lengths: dict[str, int] | None = None,
    ) -> OutputChunks:
        """Output chunks of ``chunks`` positions per dim (default: the whole dim)."""
        sizes, chunk, offs, lens, starts = [], [], [], [], []
        for axis in grid.axes:
            c = int(chunks.get(axis.dim, axis.size))
            if c < 1:
                raise ConfigError(f"chunks[{axis.dim!r}]={c} must be at least 1.")
            sizes.append(axis.size)
            chunk.append(min(c, max(1, axis.size)))
            offs.append(int((offsets or {}).get(axis.dim, 0)))
            lens.append(int((lengths or {}).get(axis.dim, axis.length)))
            starts.append(axis.starts())
        return cls(grid.dims, tuple(sizes), tuple(chunk), tuple(offs), tuple(lens), tuple(starts))

    @property
    def shape(self) -> tuple[int, ...]:
        """Chunks per dim."""
        return tuple(-(-s // c) for s, c in zip(self.sizes, self.chunks, strict=True))

    @property
    def n_chunks(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.starts)

    def region(self, chunk: int) -> tuple[slice, ...]:
        """Positions of chunk ``chunk`` (flat, row-major) per dim."""
        index = np.unravel_index(chunk, self.shape) if self.shape else ()
        return tuple(
            slice(int(i) * c, min((int(i) + 1) * c, s))
            for i, c, s in zip(index, self.chunks, self.sizes, strict=True)
        )

    def _axis_ranges(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Per chunk along dim ``d``: windows ``[lo, hi)`` whose footprint touches it."""
        s = self.starts[d] + self.offsets[d]
        c = self.chunks[d]
        edges = np.arange(self.shape[d] + 1, dtype=np.int64) * c
        end = np.minimum(s + self.lengths[d], self.sizes[d])
        lo = np.searchsorted(end, edges[:-1], side="right")
        hi = np.searchsorted(s, edges[1:], side="left")
        # a footprint clipped to nothing (past the end) touches no chunk
        return lo, np.maximum(hi, lo)

    def windows_of(self, chunk: int) -> np.ndarray:
        """Ids (of the grid) of the windows whose footprint touches chunk ``chunk``."""
        index = np.unravel_index(chunk, self.shape) if self.shape else ()
        axes = []
        for d, i in enumerate(index):
            lo, hi = self._axis_ranges(d)
            axes.append(np.arange(lo[i], hi[i], dtype=np.int64))
        if not axes:
            return np.zeros(1, dtype=np.int64)
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.ravel_multi_index(tuple(m.reshape(-1) for m in mesh), self.counts)

    def expected(self) -> np.ndarray:
        """Windows touching each chunk (flat, row-major): what completes it."""
        out = np.ones((), dtype=np.int64)
        for d in range(len(self.dims)):
            lo, hi = self._axis_ranges(d)
            out = np.multiply.outer(out, hi - lo)
        return np.asarray(out, dtype=np.int64).reshape(-1)

    def uncovered(self) -> tuple[int, ...]:
        """Positions per dim that no window's footprint covers."""
        out = []
        for d in range(len(self.dims)):
            covered = np.zeros(self.sizes[d] + 1, dtype=np.int64)
            s = np.clip(self.starts[d] + self.offsets[d], 0, self.sizes[d])
            e = np.clip(self.starts[d] + self.offsets[d] + self.lengths[d], 0, self.sizes[d])
            np.add.at(covered, s, 1)
            np.add.at(covered, e, -1)
            out.append(int((np.cumsum(covered)[:-1] == 0).sum()))
        return tuple(out)

    def owner(self, world_size: int) -> np.ndarray:
        """The rank owning each chunk (contiguous runs of the row-major chunk order)."""
        owners = np.empty(self.n_chunks, dtype=np.int64)
        for r in range(world_size):
            run = shard_range(self.n_chunks, r, world_size)
            owners[run.start : run.stop] = r
        return owners


@dataclass(frozen=True, eq=False)
class ExplicitSequence:
    """Every rank's planned window sequence, cut into the same number of batches."""

    runs: tuple[np.ndarray, ...]
    batch_size: int
    steps: int

    @property
    def world_size(self) -> int:
        return len(self.runs)

    @property
    def n_windows(self) -> int:
        """Windows computed over all ranks (halo windows count once per rank)."""
        return int(sum(len(r) for r in self.runs))

    @property
    def n_batches(self) -> int:
        return self.world_size * self.steps

    def real_batches(self, rank: int) -> int:
        return -(-len(self.runs[rank]) // self.batch_size)

    def is_padding(self, index: int) -> bool:
        """Whether global batch ``index`` only repeats a rank's last batch (padding)."""
        rank, i = divmod(int(index), self.steps)
        return i >= self.real_batches(rank)

    def batch(self, index: int) -> np.ndarray:
        rank, i = divmod(int(index), self.steps)
        run, b = self.runs[rank], self.batch_size
        real = self.real_batches(rank)
        if i >= real:  # padding: the rank's last batch again (or window 0 for an idle rank)
            if not real:
                return np.zeros(1, dtype=np.int64)
            i = real - 1
        return np.asarray(run[i * b : (i + 1) * b], dtype=np.int64)

    def digest(self) -> str:
        import hashlib

        h = hashlib.sha256(f"{self.batch_size}:{self.steps}".encode())
        for run in self.runs:
            h.update(np.ascontiguousarray(run).tobytes() + b"|")
        return h.hexdigest()[:16]


def plan_inference(
    out: OutputChunks,
    world_size: int,
    batch_size: int,
    done: np.ndarray | None = None,
) -> tuple[ExplicitSequence, np.ndarray]:
    """Every rank's window sequence over its chunks that are not ``done``.

    Returns the sequence and the owner of every chunk.  The windows a rank
    visits are exactly those touching its chunks still to write.

    >>> from earthstream.sampling import build_window_grid
    >>> g = build_window_grid({"y": 12}, {"y": 4}, {"y": 2}, "pad", {"y": 12})
    >>> seq, owners = plan_inference(OutputChunks.of(g, {"y": 6}), 2, 3)
    >>> [r.tolist() for r in seq.runs], owners.tolist(), seq.steps
    ([[0, 1, 2], [2, 3, 4]], [0, 1], 1)
    """
    if world_size < 1:
        raise ConfigError(f"world_size={world_size} must be at least 1.")
    owners = out.owner(world_size)
    done = np.zeros(out.n_chunks, dtype=bool) if done is None else np.asarray(done, bool)
    n_windows = int(np.prod(out.counts, dtype=np.int64))
    runs = []
    for r in range(world_size):
        seen = np.zeros(n_windows, dtype=bool)
        parts = []
        for c in np.flatnonzero((owners == r) & ~done).tolist():
            ids = out.windows_of(c)
            new = ids[~seen[ids]]
            seen[new] = True
            parts.append(new)
        runs.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
    steps = max((-(-len(r) // batch_size) for r in runs), default=0)
    return ExplicitSequence(tuple(runs), batch_size, steps), owners


class ExplicitOrder(EpochOrder):
    """The planned sequence as an epoch order (the engine reads batches from it)."""

    def __init__(self, spec: OrderSpec, epoch: int) -> None:
        if spec.sequence is None:
            raise ConfigError("an explicit order needs OrderSpec(sequence=...).")
        self.spec = spec
        self.epoch = int(epoch)
        self.sequence = spec.sequence

    @property
    def n_batches(self) -> int:
        return self.sequence.n_batches

    def batch(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_batches:
            raise IndexError(f"batch {index} is outside 0..{self.n_batches - 1}")
        return self.sequence.batch(index)

    def window_ids(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError("an explicit order is read by batch (batch, iter_batches)")

    def iter_batches(self, batches: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for run in _runs(batches):
            for j in run:
                yield j, self.sequence.batch(j)
