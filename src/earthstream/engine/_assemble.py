"""Cutting samples out of resident chunks: the copy primitives every assembler uses.

Samples whose box is the frame inside one chunk are cut by one fancy-index
gather per variable over a sliding-window view of the variable's slot slab: a
single NumPy call that copies every sample of the batch (no per-sample Python,
the GIL released), and whose result *is* the batch array.  Other samples come
as *pieces* (see ``_plan``): a uniform batch (time stacks of whole fields, a
forecast's steps) is one gather of all its pieces; otherwise pieces of one
extent are copied together (a gather from the slab and a scatter into the
batch).  Pieces of whole fields are large: they are copied one by one, straight
from the slot into the batch (stacked or not): one copy per use, no
intermediate array, each copy a single memcpy-like NumPy call that releases the
GIL.

Pieces are placed in a variable's *frame*: the ``(n, *box)`` view over all of
its dims (iterated dims as length 1, :func:`frame_of`) of the array its samples
go to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ._alloc import HOST, namespace_of
from ._buffers import BatchBuffers
from ._layout import VarLayout
from ._plan import Pieces, VarPlan
from ._slots import SlotPool

__all__ = [
    "BIG_PIECE",
    "BatchArrays",
    "copy_pieces",
    "cut_var",
    "frame_of",
    "new_array",
    "placed_copy",
    "scatter_key",
]

#: Pieces of at least this many elements are copied one by one (the copy dwarfs
#: the Python around it); smaller ones of one extent are gathered together.
BIG_PIECE = 1 << 15
#: Fewer pieces of one extent than this are copied one by one, too.
_FEW = 6
#: Pieces of many extents are grouped by extent only when there are this many.
_GROUPED = 64
#: Pieces of fewer elements than this (of any extents) are copied as rows
#: (:func:`copy_rows`): below it a row costs less than a piece's own copy call.
ROW_PIECE = 256


@dataclass
class BatchArrays:
    """The arrays of one assembled batch, as its assembler lays them out.

    ``data``: per variable (by its batch name), or per output of the stream kind;
    ``stacked``: one array the entries of ``data`` are views of, if any;
    ``nbytes``: what the arrays hold (the engine counts it against the budget);
    ``buffers``: the pool they came from, if any (copies of them go there too).
    """

    data: dict[str, np.ndarray]
    stacked: np.ndarray | None
    nbytes: int
    buffers: BatchBuffers | None = None


def new_array(
    var: VarLayout, n: int, prefill: bool, buffers: BatchBuffers | None = None
) -> np.ndarray:
    """A ``(n, *sample shape)`` array for ``var`` (from ``buffers`` when given, else from
    host memory), filled with its fill value when ``prefill``."""
    shape = (n, *var.sample_shape)
    out = (buffers if buffers is not None else HOST).empty(shape, var.dtype)
    if prefill:
        out[...] = var.fill
    return out


def placed_copy(
    a: np.ndarray, buffers: BatchBuffers | None, rows: np.ndarray | slice | None = None
) -> np.ndarray:
    """``a`` (its ``rows`` along the first axis) copied into an array of ``buffers``
    (host memory without them); one copy, never a view of ``a``."""
    memory = buffers if buffers is not None else HOST
    if rows is None or isinstance(rows, slice):
        src = a if rows is None else a[rows]
        out = memory.empty(src.shape, src.dtype)
        out[...] = src
        return out
    out = memory.empty((len(rows), *a.shape[1:]), a.dtype)
    np.take(a, rows, axis=0, out=out)
    return out


def frame_of(out: np.ndarray, var: VarLayout) -> np.ndarray:
    """``out`` (n, *sample shape) as a view over all of the variable's dims (iterated
    dims as length 1): the frame pieces are placed in."""
    squeezed = tuple(1 + d for d, k in enumerate(var.keep) if not k)
    if not squeezed:
        return out
    frame: np.ndarray = namespace_of(out).expand_dims(out, axis=squeezed)
    return frame


def _slices(start: list[int], size: list[int]) -> tuple[slice, ...]:
    return tuple(slice(a, a + k) for a, k in zip(start, size, strict=True))


def copy_pieces(slab: np.ndarray, slots: np.ndarray, pieces: Pieces, out_full: np.ndarray) -> None:
    """Copy ``pieces`` from ``slab`` (piece ``i`` from slot ``slots[i]``) into ``out_full``.

    Pieces of one extent, when there are many, are gathered from the slab and
    scattered into the output together.  Tiny pieces (fewer than ``ROW_PIECE``
    elements) of many extents are copied as rows of their last dim
    (:func:`copy_rows`).  The others (large ones, or a few of an extent) are
    copied one by one, each a single NumPy copy.
    """
    if not len(pieces):
        return
    sizes = pieces.size
    if len(pieces) == 1 or (sizes == sizes[0]).all():
        if len(pieces) < _FEW or int(np.prod(sizes[0])) >= BIG_PIECE:
            _copy_each(slab, slots, pieces, out_full)
        else:
            _gather(slab, slots, pieces, out_full)
        return
    tiny = np.prod(sizes, axis=1) < ROW_PIECE
    n_tiny = int(tiny.sum())
    if n_tiny >= _FEW and copy_rows(slab, slots[tiny], pieces.take(tiny), out_full):
        if n_tiny == len(pieces):
            return
        rest = np.flatnonzero(~tiny)
        slots, pieces, sizes = slots[rest], pieces.take(rest), sizes[rest]
    if len(pieces) < _GROUPED:  # grouping would cost more than it saves
        _copy_each(slab, slots, pieces, out_full)
        return
    groups, loose = _extent_groups(sizes)
    for group in groups:
        _gather(slab, slots[group], pieces.take(group), out_full)
    if len(loose):
        _copy_each(slab, slots[loose], pieces.take(loose), out_full)


def _copy_each(slab: np.ndarray, slots: np.ndarray, pieces: Pieces, out_full: np.ndarray) -> None:
    """Copy ``pieces`` one by one (any extents)."""
    for r, w, a, b, k in zip(
        pieces.rows.tolist(),
        slots.tolist(),
        pieces.src.tolist(),
        pieces.dst.tolist(),
        pieces.size.tolist(),
        strict=True,
    ):
        out_full[(r, *_slices(b, k))] = slab[(w, *_slices(a, k))]


def _gather(slab: np.ndarray, slots: np.ndarray, pieces: Pieces, out_full: np.ndarray) -> None:
    """Copy ``pieces`` of one extent with one gather and one scatter."""
    extent = pieces.size[0].tolist()
    got = sliding_window_view(slab, (1, *extent))[(slots, *pieces.src.T)]
    target = sliding_window_view(out_full, (1, *extent), writeable=True)
    target[(pieces.rows, *pieces.dst.T)] = got


def _extent_groups(sizes: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The pieces (rows of ``sizes``) gathered by extent: index arrays of the extents
    with at least ``_FEW`` pieces of fewer than ``BIG_PIECE`` elements each; and the
    indices of all other pieces (copied one by one)."""
    span = sizes.max(axis=0) + 1
    if float(np.prod(span, dtype=np.float64)) < 2.0**62:  # one integer key per extent
        key = np.ravel_multi_index(tuple(sizes.T), tuple(span.tolist()))
    else:  # pragma: no cover - extents too large to pack
        _, key = np.unique(sizes, axis=0, return_inverse=True)
        key = key.reshape(-1)
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    starts = np.concatenate([[0], bounds])
    counts = np.diff(np.concatenate([starts, [len(order)]]))
    many = (counts >= _FEW) & (np.prod(sizes[order[starts]], axis=1) < BIG_PIECE)
    if not many.any():
        return [], np.arange(len(sizes))
    parts = np.split(order, bounds)
    groups = [part for part, m in zip(parts, many.tolist(), strict=True) if m]
    rest = [part for part, m in zip(parts, many.tolist(), strict=True) if not m]
    return groups, np.concatenate(rest) if rest else np.zeros(0, np.intp)


def _element_strides(a: np.ndarray) -> np.ndarray | None:
    """``a``'s strides in elements (0 along dims of length 1), or ``None`` when one is
    negative or not a whole number of elements."""
    item = a.itemsize
    out = []
    for n, s in zip(a.shape, a.strides, strict=True):
        if n == 1:
            s = 0
        if s < 0 or s % item:
            return None
        out.append(s // item)
    return np.array(out, dtype=np.int64)


def _runs(a: np.ndarray, strides: np.ndarray, length: int) -> np.ndarray:
    """Every run of ``length`` elements along ``a``'s last dim, indexed by the element
    offset of its first element from ``a``'s first: an ``(offsets, length)`` view."""
    span = int(np.dot(np.asarray(a.shape, dtype=np.int64) - 1, strides)) + 1
    step = int(strides[-1])
    return as_strided(
        a,
        shape=(max(1, span - (length - 1) * step), length),
        strides=(a.itemsize, step * a.itemsize),
    )


def copy_rows(slab: np.ndarray, slots: np.ndarray, pieces: Pieces, out_full: np.ndarray) -> bool:
    """Copy small ``pieces`` of any extents as rows of their last dim: the rows'
    offsets computed with array arithmetic, then per row length one gather from the
    slab and one scatter into ``out_full`` (no Python per piece).  ``False`` (nothing
    copied) when an array's strides do not allow it (negative, or not whole elements).
    """
    src_el = _element_strides(slab)
    dst_el = _element_strides(out_full)
    sizes = pieces.size
    ndim = sizes.shape[1]
    if src_el is None or dst_el is None or ndim == 0:
        return False
    src_base = slots * src_el[0] + pieces.src @ src_el[1:]
    dst_base = pieces.rows * dst_el[0] + pieces.dst @ dst_el[1:]
    lengths = sizes[:, -1]
    outer = [d for d in range(ndim - 1) if (sizes[:, d] != 1).any()]
    if outer:
        per_piece = np.prod(sizes[:, outer], axis=1)
        piece = np.repeat(np.arange(len(pieces)), per_piece)
        rem = np.arange(len(piece), dtype=np.int64) - np.repeat(
            np.cumsum(per_piece) - per_piece, per_piece
        )
        src_off = src_base[piece]
        dst_off = dst_base[piece]
        for d in reversed(outer):
            n_d = sizes[piece, d]
            at = rem % n_d
            rem //= n_d
            src_off += at * src_el[1 + d]
            dst_off += at * dst_el[1 + d]
        row_lengths = lengths[piece]
    else:
        src_off, dst_off, row_lengths = src_base, dst_base, lengths
    distinct = np.unique(lengths).tolist()
    for length in distinct:
        if length <= 0:
            continue
        if len(distinct) == 1:
            s, t = src_off, dst_off
        else:
            chosen = row_lengths == length
            s, t = src_off[chosen], dst_off[chosen]
        _runs(out_full, dst_el, length)[t] = _runs(slab, src_el, length)[s]
    return True


def _inside_pieces(plan: VarPlan, var: VarLayout, rows: np.ndarray) -> Pieces:
    """Windows wholly inside one chunk, as one piece each."""
    ndim = len(var.chunks)
    size = np.broadcast_to(np.asarray(var.lengths, dtype=np.int64), (len(rows), ndim))
    return Pieces(rows, plan.which[rows], plan.local[rows], np.zeros_like(size), size)


def _cut_uniform(
    pool: SlotPool,
    plan: VarPlan,
    slots: np.ndarray,
    n: int,
    dest: np.ndarray | None,
    buffers: BatchBuffers | None,
) -> np.ndarray:
    """A uniform batch: every window made of pieces of one extent, the same number of
    them along each dim, in row-major order."""
    var = pool.var
    pieces = plan.pieces
    counts = plan.counts
    assert counts is not None
    extent = pieces.size[0].tolist()
    if int(np.prod(extent)) >= BIG_PIECE or len(pieces) < _FEW:
        out = dest if dest is not None else new_array(var, n, False, buffers)
        copy_pieces(pool.slab, slots[pieces.position], pieces, frame_of(out, var))
        return out
    got = sliding_window_view(pool.slab, (1, *extent))[(slots[pieces.position], *pieces.src.T)]
    ndim = len(extent)
    got = got.reshape((n, *counts, *extent))
    perm = [0] + [axis for d in range(ndim) for axis in (1 + d, 1 + ndim + d)]
    # a view of the gathered array unless dims with several pieces follow whole ones
    xp = namespace_of(got)
    result: np.ndarray = xp.reshape(xp.permute_dims(got, tuple(perm)), (n, *var.sample_shape))
    if dest is None:
        return result
    dest[...] = result
    return dest


def cut_var(
    pool: SlotPool,
    plan: VarPlan,
    slots: np.ndarray,
    n: int,
    dest: np.ndarray | None,
    prefill: bool,
    buffers: BatchBuffers | None = None,
) -> np.ndarray:
    """One variable of a batch, cut from its resident chunks.

    ``slots[p]`` is the slot holding chunk ``plan.keys[p]``.  Returns ``dest``
    filled, or a new array when ``dest`` is None: from ``buffers`` when their memory
    must hold every batch array (``placed``: the gather's result is copied there),
    else possibly the gather's own result.
    """
    var = pool.var
    windows = pool.windows
    if dest is None and buffers is not None and buffers.placed:
        dest = new_array(var, n, prefill, buffers)
    if not n:
        return dest if dest is not None else new_array(var, n, prefill)
    big = int(np.prod(var.lengths, dtype=np.int64)) >= BIG_PIECE
    if plan.all_inside and windows is not None and not big:
        gathered = windows[(slots[plan.which], *plan.local.T)]
        gathered = np.asarray(gathered).reshape((n, *var.sample_shape))
        if dest is None:
            return gathered
        dest[...] = gathered
        return dest
    if plan.counts is not None:
        return _cut_uniform(pool, plan, slots, n, dest, buffers)
    out = dest if dest is not None else new_array(var, n, prefill, buffers)
    rows = np.flatnonzero(plan.which >= 0)
    if len(rows):
        if windows is not None and not big:
            picked = windows[(slots[plan.which[rows]], *plan.local[rows].T)]
            out[rows] = picked.reshape((len(rows), *var.sample_shape))
        else:
            inside = _inside_pieces(plan, var, rows)
            copy_pieces(pool.slab, slots[inside.position], inside, frame_of(out, var))
    pieces = plan.pieces
    copy_pieces(pool.slab, slots[pieces.position], pieces, frame_of(out, var))
    return out


def scatter_key(
    pool: SlotPool, plan: VarPlan, position: int, chunk: np.ndarray, full: np.ndarray
) -> None:
    """Copy what chunk ``plan.keys[position]`` holds of the batch's samples into ``full``
    (the variable's frame, :func:`frame_of`)."""
    var = pool.var
    slab = chunk[None]
    inside = _inside_pieces(plan, var, np.flatnonzero(plan.which == position))
    copy_pieces(slab, np.zeros(len(inside), np.intp), inside, full)
    mine = plan.pieces.take(plan.pieces.position == position)
    copy_pieces(slab, np.zeros(len(mine), np.intp), mine, full)
