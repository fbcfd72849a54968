"""Which chunks each batch needs, computed for many batches at once.

For a span of batches the window starts are turned into chunk indices with
array arithmetic; one ``np.unique`` over (batch, chunk) pairs gives every
batch's distinct chunks.  A window that lies wholly inside one chunk (the
common case) is cut by a gather; windows across chunk borders or past the
array edge keep a list of (chunk, offset) pieces for the general path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._layout import StreamLayout

__all__ = ["BatchPlan", "VarPlan", "plan_span"]


@dataclass
class VarPlan:
    """One variable's needs for one batch.

    ``keys``/``index``: the distinct chunks (cache keys, chunk-grid indices).
    ``which[i]``/``local[i]``: for window ``i`` wholly inside one chunk, the
    position of that chunk in ``keys`` and the window's start inside it
    (``which`` is -1 for other windows).  ``pieces``: for the other windows,
    ``(row, position in keys, start relative to that chunk)`` per chunk touched.
    """

    keys: list[int]
    index: np.ndarray  # (n keys, ndim) chunk-grid indices
    which: np.ndarray
    local: np.ndarray
    all_inside: bool
    pieces: list[tuple[int, int, list[int]]] = field(default_factory=list)


@dataclass
class BatchPlan:
    """Everything the engine needs to assemble one batch."""

    index: int
    ids: np.ndarray
    starts: np.ndarray
    vars: list[VarPlan]
    padded: bool  # some window reaches past the array edge
    keys: list[int] = field(default_factory=list)  # every chunk of every variable

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [k for v in self.vars for k in v.keys]


def _expand(lo: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and chunk indices of every (window, chunk) pair of multi-chunk windows."""
    total = np.prod(span, axis=1)
    rows = np.repeat(np.arange(len(lo)), total)
    offsets = np.arange(int(total.sum())) - np.repeat(np.cumsum(total) - total, total)
    spans = span[rows]
    index = np.empty((len(rows), lo.shape[1]), dtype=np.int64)
    for d in range(lo.shape[1] - 1, -1, -1):
        index[:, d] = lo[rows, d] + offsets % spans[:, d]
        offsets = offsets // spans[:, d]
    return rows, index


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
    past_edge = (
        (starts + grid.lengths > shape_all).any(axis=1) if len(starts) else np.zeros(0, bool)
    )

    per_batch: list[list[VarPlan]] = [[] for _ in batches]
    for vi, var in enumerate(layout.variables):
        s = absolute[:, list(var.grid_axes)] if var.grid_axes else absolute[:, :0]
        lengths = np.asarray(var.lengths, dtype=np.int64)
        chunks = np.asarray(var.chunks, dtype=np.int64)
        shape = np.asarray(var.end, dtype=np.int64)  # clip at the selection's end
        chunk_grid = var.chunk_grid
        lo = s // chunks
        hi = (np.minimum(s + lengths, shape) - 1) // chunks
        span = hi - lo + 1
        single = (span == 1).all(axis=1)
        inside = single & (s + lengths <= shape).all(axis=1)
        # (batch position, chunk) pairs: inside windows give one, others one per chunk touched
        out_rows = np.flatnonzero(~inside)
        if len(out_rows):
            p_rows, p_index = _expand(lo[out_rows], span[out_rows])
            p_rows = out_rows[p_rows]
        else:
            p_rows, p_index = np.zeros(0, np.int64), np.zeros((0, lo.shape[1]), np.int64)
        in_rows = np.flatnonzero(inside)
        rows_all = np.concatenate([in_rows, p_rows])
        index_all = np.concatenate([lo[in_rows], p_index])
        if index_all.shape[1]:
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
        piece_local = (s[p_rows] - p_index * chunks).tolist() if len(p_rows) else []
        piece_owner = owner[p_rows].tolist()
        piece_rows = (p_rows - bounds[owner[p_rows]]).tolist() if len(p_rows) else []
        pieces_by_batch: list[list[tuple[int, int, list[int]]]] = [[] for _ in batches]
        for b, r, pos, loc in zip(
            piece_owner, piece_rows, piece_pos.tolist(), piece_local, strict=True
        ):
            pieces_by_batch[b].append((r, pos, loc))
        key_bounds_list = key_bounds.tolist()
        for b in range(len(batches)):
            k0, k1 = key_bounds_list[b], key_bounds_list[b + 1]
            r0, r1 = int(bounds[b]), int(bounds[b + 1])
            batch_inside = inside[r0:r1]
            per_batch[b].append(
                VarPlan(
                    keys=keys_all[k0:k1],
                    index=index_first[k0:k1],
                    which=which[r0:r1],
                    local=local[r0:r1],
                    all_inside=bool(batch_inside.all()),
                    pieces=pieces_by_batch[b],
                )
            )
    plans = []
    for b, (j, batch_ids) in enumerate(batches):
        r0, r1 = int(bounds[b]), int(bounds[b + 1])
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
