"""Which chunks each batch needs, and how its windows are cut, for many batches at once.

For a span of batches the window starts are turned into chunk indices with
array arithmetic; one ``np.unique`` over (batch, chunk) pairs gives every
batch's distinct chunks.  A window that lies wholly inside one chunk (the
common case for small patches) is cut by a gather.  Every other window (time
stacks on time-chunked stores, windows across spatial chunk borders or past
the array edge, windows reading selected steps) is split into *pieces*, one
per (window, chunk, segment): arrays of rows, chunk positions, start in the
chunk, start in the sample and extent, computed without a Python loop per
window or piece.  When every piece of a batch has the same extent and every
window the same number of them (a time stack of whole fields, a rollout's
steps) the batch is *uniform*: one gather cuts all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._layout import StreamLayout, VarLayout

__all__ = ["BatchPlan", "Pieces", "VarPlan", "plan_span"]


def _empty(ndim: int) -> np.ndarray:
    return np.zeros((0, ndim), dtype=np.int64)


@dataclass
class Pieces:
    """Parts of windows, each inside one chunk, as parallel arrays.

    ``rows[i]``: the window's row in the batch; ``position[i]``: the chunk's
    position in the variable's ``keys``; ``src[i]``: start inside the chunk;
    ``dst[i]``: start inside the window (over all of the variable's dims,
    iterated ones included); ``size[i]``: extent.  Sorted by row, and within a
    window row-major over its segments.
    """

    rows: np.ndarray
    position: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    size: np.ndarray

    @classmethod
    def empty(cls, ndim: int) -> Pieces:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, _empty(ndim), _empty(ndim), _empty(ndim))

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, which: np.ndarray | slice) -> Pieces:
        return Pieces(
            self.rows[which],
            self.position[which],
            self.src[which],
            self.dst[which],
            self.size[which],
        )


@dataclass
class VarPlan:
    """One variable's needs for one batch.

    ``keys``/``index``: the distinct chunks (cache keys, chunk-grid indices).
    ``which[i]``/``local[i]``: for window ``i`` wholly inside one chunk, the
    position of that chunk in ``keys`` and the window's start inside it
    (``which`` is -1 for other windows).  ``pieces``: the parts of the other
    windows.  ``counts``: when the batch is uniform (every window made of pieces
    of one extent, the same number along each dim), that number per dim; else
    ``None``.
    """

    keys: list[int]
    index: np.ndarray  # (n keys, ndim) chunk-grid indices
    which: np.ndarray
    local: np.ndarray
    all_inside: bool
    pieces: Pieces
    counts: tuple[int, ...] | None = None


@dataclass
class BatchPlan:
    """Everything the engine needs to assemble one batch."""

    index: int
    ids: np.ndarray
    starts: np.ndarray
    vars: list[VarPlan]
    padded: bool  # some window reaches past the array edge
    keys: list[int] = field(default_factory=list)  # every chunk of every variable
    tight: bool | None = None  # needs more chunks than slots (set by the engine)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [k for v in self.vars for k in v.keys]


def _split_dims(var: VarLayout) -> tuple[bool, ...]:
    """Dims cut into single elements (one piece per element read): those reading
    selected offsets (a forecast's steps).  Along the others a window's range is
    cut at chunk borders."""
    return tuple(o is not None for o in var.offsets) if var.offsets else (False,) * len(var.chunks)


def _pieces_of(
    var: VarLayout, s: np.ndarray, rows: np.ndarray, split: tuple[bool, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of the windows ``rows`` (starts ``s[rows]``), vectorized.

    Returns ``(piece rows, chunk index, src, dst, size, counts)`` where ``counts``
    is ``(len(rows), ndim)``: segments of each window along each dim.  Along a
    split dim every read element is its own segment; along the others a
    window's range (clipped to the array) is cut at chunk borders.
    """
    ndim = len(var.chunks)
    starts = s[rows]
    n = len(rows)
    chunks = np.asarray(var.chunks, dtype=np.int64)
    shape = np.asarray(var.end, dtype=np.int64)  # clip at the selection's end
    lengths = np.asarray(var.lengths, dtype=np.int64)
    counts = np.empty((n, ndim), dtype=np.int64)
    first = np.empty((n, ndim), dtype=np.int64)
    for d in range(ndim):
        if split[d]:
            counts[:, d] = lengths[d]
            first[:, d] = 0
        else:
            lo = starts[:, d]
            hi = np.minimum(lo + lengths[d], shape[d])  # exclusive, clipped to the selection
            first[:, d] = lo // chunks[d]
            counts[:, d] = np.where(hi > lo, (hi - 1) // chunks[d] - first[:, d] + 1, 0)
    total = np.prod(counts, axis=1)
    piece_rows = np.repeat(np.arange(n), total)
    offsets = np.arange(int(total.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(total) - total, total
    )
    index = np.empty((len(piece_rows), ndim), dtype=np.int64)
    src = np.empty_like(index)
    dst = np.empty_like(index)
    size = np.empty_like(index)
    for d in range(ndim - 1, -1, -1):
        cd = counts[piece_rows, d]
        j = offsets % np.maximum(cd, 1)
        offsets = offsets // np.maximum(cd, 1)
        lo = starts[piece_rows, d]
        c = chunks[d]
        if split[d]:
            g = lo + var.positions(d)[j]
            index[:, d] = g // c
            src[:, d] = g - index[:, d] * c
            dst[:, d] = j
            size[:, d] = 1
        else:
            k = first[piece_rows, d] + j
            a = np.maximum(lo, k * c)
            b = np.minimum(np.minimum(lo + lengths[d], (k + 1) * c), shape[d])
            index[:, d] = k
            src[:, d] = a - k * c
            dst[:, d] = a - lo
            size[:, d] = b - a
    return rows[piece_rows], index, src, dst, size, counts


def plan_span(layout: StreamLayout, batches: Sequence[tuple[int, np.ndarray]]) -> list[BatchPlan]:
    """Plan consecutive batches ``(index, window ids)`` in one vectorized pass."""
    grid = layout.grid
    sizes = np.array([len(ids) for _, ids in batches], dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    ids = np.concatenate([ids for _, ids in batches]) if len(batches) else np.zeros(0, np.int64)
    starts = grid.starts_of(ids)  # relative to the selection; + origins: in the source
    absolute = starts + grid.origins if len(starts) else starts
    owner = np.repeat(np.arange(len(batches)), sizes)  # batch position of every window
    n_vars = len(layout.variables)
    shape_all = np.array([a.size for a in grid.axes], dtype=np.int64)
    past_edge = (starts + grid.spans > shape_all).any(axis=1) if len(starts) else np.zeros(0, bool)
    bounds_list = bounds.tolist()

    per_batch: list[list[VarPlan]] = [[] for _ in batches]
    for vi, var in enumerate(layout.variables):
        ndim = len(var.chunks)
        s = absolute[:, list(var.grid_axes)] if var.grid_axes else absolute[:, :0]
        spans = np.asarray(var.spans or var.lengths, dtype=np.int64)
        lengths = np.asarray(var.lengths, dtype=np.int64)
        chunks = np.asarray(var.chunks, dtype=np.int64)
        shape = np.asarray(var.end, dtype=np.int64)  # clip at the selection's end
        chunk_grid = var.chunk_grid
        lo = s // chunks
        hi = (np.minimum(s + spans, shape) - 1) // chunks
        single = (hi == lo).all(axis=1)
        inside = single & (s + spans <= shape).all(axis=1)
        if var.reads_offsets:
            inside[:] = False
        split = _split_dims(var)
        out_rows = np.flatnonzero(~inside)
        if len(out_rows):
            p_rows, p_index, p_src, p_dst, p_size, p_counts = _pieces_of(var, s, out_rows, split)
        else:
            p_rows, p_index = np.zeros(0, np.int64), _empty(ndim)
            p_src, p_dst, p_size, p_counts = _empty(ndim), _empty(ndim), _empty(ndim), _empty(ndim)
        in_rows = np.flatnonzero(inside)
        rows_all = np.concatenate([in_rows, p_rows])
        index_all = np.concatenate([lo[in_rows], p_index])
        if ndim:
            flat = np.ravel_multi_index(tuple(index_all.T), chunk_grid)
        else:
            flat = np.zeros(len(rows_all), dtype=np.int64)
        n_chunks = int(np.prod(chunk_grid, dtype=np.int64))
        combined = owner[rows_all] * n_chunks + flat
        uniq, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        uniq_batch = uniq // n_chunks
        key_bounds = np.searchsorted(uniq_batch, np.arange(len(batches) + 1))
        keys_all = ((uniq % n_chunks) * n_vars + vi).tolist()
        index_first = index_all[first]
        # position of each pair's chunk within its own batch's key list
        position = inverse - key_bounds[owner[rows_all]]
        which = np.full(len(s), -1, dtype=np.int64)
        which[in_rows] = position[: len(in_rows)]
        local = s - lo * chunks
        piece_pos = position[len(in_rows) :]
        piece_owner = owner[p_rows]
        piece_bounds = np.searchsorted(piece_owner, np.arange(len(batches) + 1)).tolist()
        out_owner = owner[out_rows]
        out_bounds = np.searchsorted(out_owner, np.arange(len(batches) + 1)).tolist()
        key_bounds_list = key_bounds.tolist()
        for b in range(len(batches)):
            k0, k1 = key_bounds_list[b], key_bounds_list[b + 1]
            r0, r1 = bounds_list[b], bounds_list[b + 1]
            q0, q1 = piece_bounds[b], piece_bounds[b + 1]
            pieces = Pieces(
                p_rows[q0:q1] - r0, piece_pos[q0:q1], p_src[q0:q1], p_dst[q0:q1], p_size[q0:q1]
            )
            batch_inside = inside[r0:r1]
            counts = None
            o0, o1 = out_bounds[b], out_bounds[b + 1]
            if o1 - o0 == r1 - r0 and r1 > r0 and q1 > q0:
                c = p_counts[o0:o1]
                sz = pieces.size
                if (
                    (c == c[0]).all()
                    and (sz == sz[0]).all()
                    and (c[0] * sz[0] == lengths).all()  # the pieces tile the window
                ):
                    counts = tuple(c[0].tolist())
            per_batch[b].append(
                VarPlan(
                    keys=keys_all[k0:k1],
                    index=index_first[k0:k1],
                    which=which[r0:r1],
                    local=local[r0:r1],
                    all_inside=bool(batch_inside.all()),
                    pieces=pieces,
                    counts=counts,
                )
            )
    plans = []
    for b, (j, batch_ids) in enumerate(batches):
        r0, r1 = bounds_list[b], bounds_list[b + 1]
        plans.append(
            BatchPlan(
                index=j,
                ids=batch_ids,
                starts=starts[r0:r1],
                vars=per_batch[b],
                padded=bool(past_edge[r0:r1].any()),
            )
        )
    return plans
