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
from numpy.lib.stride_tricks import sliding_window_view

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

    Pieces of one extent are gathered from the slab and scattered into the
    output together; large ones, or a few, are copied one by one.
    """
    if not len(pieces):
        return
    sizes = pieces.size
    if len(pieces) == 1 or (sizes == sizes[0]).all():
        groups: list[np.ndarray | slice] = [slice(None)]
    else:
        _, inverse = np.unique(sizes, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        cuts = np.flatnonzero(np.diff(inverse[order])) + 1
        groups = list(np.split(order, cuts))
    for group in groups:
        rows, src, dst, size = (
            pieces.rows[group],
            pieces.src[group],
            pieces.dst[group],
            sizes[group],
        )
        where = slots[group]
        extent = size[0].tolist()
        if len(rows) < _FEW or int(np.prod(extent)) >= BIG_PIECE:
            for r, w, a, b in zip(
                rows.tolist(), where.tolist(), src.tolist(), dst.tolist(), strict=True
            ):
                out_full[(r, *_slices(b, extent))] = slab[(w, *_slices(a, extent))]
            continue
        got = sliding_window_view(slab, (1, *extent))[(where, *src.T)]
        target = sliding_window_view(out_full, (1, *extent), writeable=True)
        target[(rows, *dst.T)] = got


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
