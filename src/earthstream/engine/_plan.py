"""Plans: which chunks each batch needs and how its samples are cut, for many batches at once.

A planner (see :mod:`~earthstream.engine._kind`) turns a span of batches into
:class:`BatchPlan` objects.  The one primitive every planner uses is
:func:`plan_var`: given, for one variable, the box each sample reads (its start
in the variable's index space, optionally its own extent and its own selected
positions along some dims), it finds every batch's distinct chunks and says how
each sample is cut out of them, with array arithmetic and one ``np.unique`` over
(batch, chunk) pairs: no Python loop per sample or piece.

A sample whose box is the variable's whole frame and lies inside one chunk (the
common case for small patches) is cut by a gather (``which``/``local``).  Every
other sample (time stacks on time-chunked stores, boxes across chunk borders,
past the array's edges or of their own size, samples reading selected steps) is
split into *pieces*, one per (sample, chunk, segment): rows, chunk positions,
start in the chunk, start in the frame and extent.  When every piece of a batch
has one extent and every sample the same number of them, tiling the frame (a
time stack of whole fields, a rollout's steps), the batch is *uniform*: one
gather cuts all of it.  Parts of a box outside the array are not read: the frame
keeps the variable's fill value there (``BatchPlan.padded``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ._layout import VarLayout

__all__ = ["BatchPlan", "Pieces", "VarPlan", "cut_pieces", "plan_var"]


def _empty(ndim: int) -> np.ndarray:
    return np.zeros((0, ndim), dtype=np.int64)


@dataclass
class Pieces:
    """Parts of samples, each inside one chunk, as parallel arrays.

    ``rows[i]``: the sample's row in the batch; ``position[i]``: the chunk's
    position in the variable's ``keys``; ``src[i]``: start inside the chunk;
    ``dst[i]``: start inside the sample's frame (over all of the variable's dims,
    iterated ones included); ``size[i]``: extent.  Sorted by row, and within a
    sample row-major over its segments.
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
    ``which[i]``/``local[i]``: for sample ``i`` whose box is the whole frame
    inside one chunk, the position of that chunk in ``keys`` and the box's start
    inside it (``which`` is -1 for other samples).  ``pieces``: the parts of the
    other samples.  ``counts``: when the batch is uniform (every sample made of
    pieces of one extent, the same number along each dim, tiling the frame), that
    number per dim; else ``None``.
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
    """Everything the engine needs to assemble one batch, and what its assembler needs
    to finish it.

    ``index`` is the global batch index (the time of each chunk's next use);
    ``ids`` the sample (window) ids from the epoch order; ``starts`` each sample's
    start on the planner's sample grid (for window grids ``(n, axes)``, relative
    to the selection); ``vars`` one :class:`VarPlan` per engine variable, in the
    engine's order; ``padded`` True when some sample's frame is not wholly read
    (frames are then filled with each variable's fill value first); ``extra``
    per-sample arrays (first axis ``n``) a planner hands to its assembler (e.g. a
    chip's transform, a secondary's matched time steps).  ``keys`` and ``tight``
    are the engine's.
    """

    index: int
    ids: np.ndarray
    starts: np.ndarray
    vars: list[VarPlan]
    padded: bool
    keys: list[int] = field(default_factory=list)  # every chunk of every variable
    tight: bool | None = None  # needs more chunks than slots (set by the engine)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [k for v in self.vars for k in v.keys]

    def take(self, rows: np.ndarray) -> BatchPlan:
        """The plan of the samples ``rows`` only (per-sample fields; the variables'
        plans and keys stay those of the whole batch, already cut)."""
        return replace(
            self,
            ids=self.ids[rows],
            starts=self.starts[rows],
            keys=self.keys,
            extra={k: v[rows] for k, v in self.extra.items()},
        )


#: Positions along a dim read one element at a time: ``None`` (a contiguous range),
#: the same offsets for every sample ``(P,)``, or each sample's own ``(n, P)``.
Positions = np.ndarray | None


def cut_pieces(
    chunks: Sequence[int],
    end: Sequence[int],
    starts: np.ndarray,
    lengths: np.ndarray,
    positions: Sequence[Positions] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut boxes at chunk borders, vectorized.

    Box ``i`` starts at ``starts[i]`` (in the variable's index space; parts before 0
    or from ``end`` on are not read) and has extent ``lengths[i]`` (``lengths`` is
    ``(ndim,)`` or ``(n, ndim)``).  Along a dim with ``positions[d]`` the box reads
    only the elements at those offsets from its start, each its own segment (a
    forecast's steps, a secondary's matched times); along the others its range is
    cut at chunk borders.

    Returns ``(box, chunk index, src, dst, size, counts)``: for every piece the box
    it belongs to, its chunk's grid index, its start in that chunk and in the box's
    frame, and its extent; ``counts`` ``(n, ndim)`` is the number of segments of
    each box along each dim (-1 along a dim where a selected position was outside
    the array).  Pieces are sorted by box, row-major over segments within a box.

    >>> box, index, src, dst, size, counts = cut_pieces(
    ...     (4,), (10,), np.array([[2], [-1]]), np.array([5]))
    >>> box.tolist(), index.ravel().tolist(), src.ravel().tolist()
    ([0, 0, 1], [0, 1, 0], [2, 0, 0])
    >>> dst.ravel().tolist(), size.ravel().tolist()
    ([0, 2, 1], [2, 3, 4])
    """
    ndim = len(chunks)
    n = len(starts)
    chunk = np.asarray(chunks, dtype=np.int64)
    shape = np.asarray(end, dtype=np.int64)
    length = np.broadcast_to(np.asarray(lengths, dtype=np.int64), (n, ndim))
    chosen = list(positions) if positions else [None] * ndim
    counts = np.empty((n, ndim), dtype=np.int64)
    first = np.empty((n, ndim), dtype=np.int64)
    for d in range(ndim):
        lo = starts[:, d]
        chosen_d = chosen[d]
        if chosen_d is not None:
            counts[:, d] = np.shape(chosen_d)[-1]  # one segment per selected position
            first[:, d] = 0
        else:
            clipped = np.maximum(lo, 0)
            hi = np.minimum(lo + length[:, d], shape[d])  # exclusive, clipped to the end
            first[:, d] = clipped // chunk[d]
            counts[:, d] = np.where(hi > clipped, (hi - 1) // chunk[d] - first[:, d] + 1, 0)
    total = np.prod(counts, axis=1)
    box = np.repeat(np.arange(n), total)
    offsets = np.arange(int(total.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(total) - total, total
    )
    index = np.empty((len(box), ndim), dtype=np.int64)
    src = np.empty_like(index)
    dst = np.empty_like(index)
    size = np.empty_like(index)
    outside: np.ndarray | None = None
    for d in range(ndim - 1, -1, -1):
        cd = counts[box, d]
        j = offsets % np.maximum(cd, 1)
        offsets = offsets // np.maximum(cd, 1)
        lo = starts[box, d]
        c = chunk[d]
        chosen_d = chosen[d]
        if chosen_d is not None:
            at = np.asarray(chosen_d, dtype=np.int64)
            g = lo + (at[box, j] if at.ndim == 2 else at[j])
            index[:, d] = g // c
            src[:, d] = g - index[:, d] * c
            dst[:, d] = j
            size[:, d] = 1
            off = (g < 0) | (g >= shape[d])
            if off.any():
                outside = off if outside is None else outside | off
        else:
            k = first[box, d] + j
            a = np.maximum(lo, k * c)
            b = np.minimum(np.minimum(lo + length[box, d], (k + 1) * c), shape[d])
            index[:, d] = k
            src[:, d] = a - k * c
            dst[:, d] = a - lo
            size[:, d] = b - a
    if outside is not None:  # selected positions outside the array: padding, not read
        keep = ~outside
        counts[np.unique(box[outside])] = -1
        box, index, src, dst, size = box[keep], index[keep], src[keep], dst[keep], size[keep]
    return box, index, src, dst, size, counts


def plan_var(
    var: VarLayout,
    vi: int,
    n_vars: int,
    starts: np.ndarray,
    bounds: Sequence[int] | np.ndarray,
    *,
    extents: np.ndarray | None = None,
    positions: Sequence[Positions] = (),
    spans: Sequence[int] | None = None,
) -> list[VarPlan]:
    """Plan variable ``vi`` (of ``n_vars``: cache keys are ``flat chunk * n_vars + vi``)
    for a span of batches, vectorized.

    ``starts`` ``(n, ndim)``: each sample's box start in the variable's index space
    (absolute: selections already added; negative or past the end where the box
    is padded); samples of batch ``b`` are ``bounds[b]:bounds[b + 1]``.  The box is
    the variable's frame (``var.lengths``) unless ``extents`` ``(n, ndim)`` gives
    each sample its own (at most the frame; the rest of the frame is padding).
    ``positions[d]``: offsets read along dim ``d`` (see :func:`cut_pieces`).
    ``spans``: positions a box covers from its start along each dim (for the
    one-chunk test; default the frame).  Reading stops at ``var.end``.

    Returns one :class:`VarPlan` per batch.
    """
    ndim = len(var.chunks)
    n_batches = len(bounds) - 1
    edges = np.asarray(bounds, dtype=np.int64)
    bounds_list = edges.tolist()
    owner = np.repeat(np.arange(n_batches), edges[1:] - edges[:-1])
    lengths = np.asarray(var.lengths, dtype=np.int64)
    chunks = np.asarray(var.chunks, dtype=np.int64)
    shape = np.asarray(var.end, dtype=np.int64)  # clip at the selection's end
    covered = np.asarray(spans or var.lengths, dtype=np.int64)
    s = starts
    chosen = list(positions) if positions else [None] * ndim
    lo = s // chunks
    if any(p is not None for p in chosen):
        inside = np.zeros(len(s), dtype=bool)  # selected positions: always pieces
    else:
        hi = (np.minimum(s + covered, shape) - 1) // chunks
        inside = (hi == lo).all(axis=1) & (s + covered <= shape).all(axis=1)
        if len(s) and (s < 0).any():
            inside &= (s >= 0).all(axis=1)
        if extents is not None:
            inside &= (extents == lengths).all(axis=1)
    out_rows = np.flatnonzero(~inside)
    if len(out_rows):
        box, p_index, p_src, p_dst, p_size, p_counts = cut_pieces(
            var.chunks,
            var.end,
            s[out_rows],
            lengths if extents is None else extents[out_rows],
            [p if p is None or np.ndim(p) == 1 else np.asarray(p)[out_rows] for p in chosen]
            if positions
            else (),
        )
        p_rows = out_rows[box]
    else:
        p_rows, p_index = np.zeros(0, np.int64), _empty(ndim)
        p_src, p_dst, p_size, p_counts = _empty(ndim), _empty(ndim), _empty(ndim), _empty(ndim)
    in_rows = np.flatnonzero(inside)
    rows_all = np.concatenate([in_rows, p_rows])
    index_all = np.concatenate([lo[in_rows], p_index])
    chunk_grid = var.chunk_grid
    if ndim:
        flat = np.ravel_multi_index(tuple(index_all.T), chunk_grid)
    else:
        flat = np.zeros(len(rows_all), dtype=np.int64)
    n_chunks = int(np.prod(chunk_grid, dtype=np.int64))
    combined = owner[rows_all] * n_chunks + flat
    uniq, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    uniq_batch = uniq // n_chunks
    key_bounds = np.searchsorted(uniq_batch, np.arange(n_batches + 1))
    keys_all = ((uniq % n_chunks) * n_vars + vi).tolist()
    index_first = index_all[first]
    # position of each pair's chunk within its own batch's key list
    position = inverse - key_bounds[owner[rows_all]]
    which = np.full(len(s), -1, dtype=np.int64)
    which[in_rows] = position[: len(in_rows)]
    local = s - lo * chunks
    piece_pos = position[len(in_rows) :]
    piece_bounds = np.searchsorted(owner[p_rows], np.arange(n_batches + 1)).tolist()
    out_bounds = np.searchsorted(owner[out_rows], np.arange(n_batches + 1)).tolist()
    key_bounds_list = key_bounds.tolist()
    plans = []
    for b in range(n_batches):
        k0, k1 = key_bounds_list[b], key_bounds_list[b + 1]
        r0, r1 = bounds_list[b], bounds_list[b + 1]
        q0, q1 = piece_bounds[b], piece_bounds[b + 1]
        pieces = Pieces(
            p_rows[q0:q1] - r0, piece_pos[q0:q1], p_src[q0:q1], p_dst[q0:q1], p_size[q0:q1]
        )
        counts = None
        o0, o1 = out_bounds[b], out_bounds[b + 1]
        if o1 - o0 == r1 - r0 and r1 > r0 and q1 > q0:
            c = p_counts[o0:o1]
            sz = pieces.size
            if (
                (c == c[0]).all()
                and (sz == sz[0]).all()
                and (c[0] * sz[0] == lengths).all()  # the pieces tile the frame
            ):
                counts = tuple(c[0].tolist())
        plans.append(
            VarPlan(
                keys=keys_all[k0:k1],
                index=index_first[k0:k1],
                which=which[r0:r1],
                local=local[r0:r1],
                all_inside=bool(inside[r0:r1].all()),
                pieces=pieces,
                counts=counts,
            )
        )
    return plans
