"""Cutting windows out of resident chunks into batch arrays.

The fast path is one fancy-index gather per variable over a sliding-window
view of the variable's slot slab: a single NumPy call that copies every window
of the batch (no per-window Python, the GIL released), and whose result *is*
the batch array.  Windows across chunk borders or past the array edge
(``edges="pad"``) are copied piece by piece from every chunk they touch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._layout import StreamLayout, VarLayout
from ._plan import BatchPlan, VarPlan
from ._slots import SlotPool

__all__ = ["BatchArrays", "cut_batch", "scatter_key", "validity_mask"]


@dataclass
class BatchArrays:
    """The arrays of one assembled batch."""

    data: dict[str, np.ndarray]  # per variable (views into ``stacked`` when stacking)
    stacked: np.ndarray | None
    nbytes: int


def _stacked_view(stacked: np.ndarray, var: VarLayout, layout: StreamLayout) -> np.ndarray:
    """The variable's (B, *sample shape) view into the (B, C, *common) stacked array."""
    b = stacked.shape[0]
    block = stacked[:, var.channel_start : var.channel_start + var.n_channels]
    extra = [d for d in var.sample_dims if d not in layout.common_dims]
    order = extra + list(layout.common_dims)
    sizes = [layout.grid.axis(d).length for d in order]
    view = np.reshape(block, (b, *sizes), copy=False)
    perm = [0] + [1 + order.index(d) for d in var.sample_dims]
    return view.transpose(perm)


#: Byte alignment of the stacked batch arrays the engine allocates: JAX aliases a
#: NumPy buffer on CPU (no copy) only when it is 64-byte aligned.
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on an :data:`ALIGNMENT`-byte boundary.

    >>> int(aligned_empty((3, 5), np.float32).ctypes.data % ALIGNMENT)
    0
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    out: np.ndarray = raw[offset : offset + nbytes].view(dtype).reshape(shape)
    return out


def _new(var: VarLayout, n: int, prefill: bool) -> np.ndarray:
    shape = (n, *var.sample_shape)
    return np.full(shape, var.fill, var.dtype) if prefill else np.empty(shape, var.dtype)


def _copy_piece(
    out_row: np.ndarray, chunk: np.ndarray, var: VarLayout, index: Any, local: list[int]
) -> None:
    """Copy the part of a window (starting at ``local`` relative to the chunk) that the
    chunk at grid ``index`` holds inside the array bounds (the selection's end)."""
    src: list[Any] = []
    dst: list[slice] = []
    for s, i, c, size, n, keep in zip(
        local, index.tolist(), var.chunks, var.end, var.lengths, var.keep, strict=True
    ):
        extent = min(c, size - i * c)  # valid part of this chunk along the dim
        lo, hi = max(s, 0), min(s + n, extent)
        src.append(slice(lo, hi) if keep else lo)
        if keep:
            dst.append(slice(lo - s, hi - s))
    out_row[tuple(dst)] = chunk[tuple(src)]


def cut_var(
    pool: SlotPool,
    plan: VarPlan,
    slots: np.ndarray,
    n: int,
    dest: np.ndarray | None,
    prefill: bool,
) -> np.ndarray:
    """One variable of a batch, cut from its resident chunks.

    ``slots[p]`` is the slot holding chunk ``plan.keys[p]``.  Returns ``dest``
    filled, or a new array when ``dest`` is None.
    """
    var = pool.var
    windows = pool.windows
    if plan.all_inside and windows is not None and n:
        gathered = windows[(slots[plan.which], *plan.local.T)]
        gathered = np.asarray(gathered).reshape((n, *var.sample_shape))
        if dest is None:
            return gathered
        dest[...] = gathered
        return dest
    out = dest if dest is not None else _new(var, n, prefill)
    rows = np.flatnonzero(plan.which >= 0)
    if len(rows) and windows is not None:
        picked = windows[(slots[plan.which[rows]], *plan.local[rows].T)]
        out[rows] = picked.reshape((len(rows), *var.sample_shape))
    for row, position, local in plan.pieces:
        chunk = pool.slab[slots[position]]
        _copy_piece(out[row], chunk, var, plan.index[position], local)
    return out


def allocate(layout: StreamLayout, n: int, prefill: bool) -> BatchArrays:
    """Arrays for a batch assembled chunk by chunk (the tight-memory path)."""
    if layout.stack and layout.stacked_dtype is not None:
        stacked = aligned_empty(
            (n, len(layout.channels), *layout.common_shape), layout.stacked_dtype
        )
        data = {v.name: _stacked_view(stacked, v, layout) for v in layout.variables}
        if prefill:
            for v in layout.variables:
                data[v.name][...] = v.fill
        return BatchArrays(data, stacked, stacked.nbytes)
    data = {v.name: _new(v, n, prefill) for v in layout.variables}
    return BatchArrays(data, None, sum(a.nbytes for a in data.values()))


def cut_batch(
    layout: StreamLayout, pools: list[SlotPool], plan: BatchPlan, slots: list[np.ndarray]
) -> BatchArrays:
    """The whole batch, cut from resident chunks (runs on a cut thread)."""
    n = len(plan.ids)
    if layout.stack and layout.stacked_dtype is not None:
        stacked = aligned_empty(
            (n, len(layout.channels), *layout.common_shape), layout.stacked_dtype
        )
        data = {}
        for var, vplan, pool, s in zip(layout.variables, plan.vars, pools, slots, strict=True):
            view = _stacked_view(stacked, var, layout)
            if plan.padded:
                view[...] = var.fill
            data[var.name] = cut_var(pool, vplan, s, n, view, plan.padded)
        return BatchArrays(data, stacked, stacked.nbytes)
    data = {
        var.name: cut_var(pool, vplan, s, n, None, plan.padded)
        for var, vplan, pool, s in zip(layout.variables, plan.vars, pools, slots, strict=True)
    }
    return BatchArrays(data, None, sum(a.nbytes for a in data.values()))


def scatter_key(
    pool: SlotPool, plan: VarPlan, position: int, chunk: np.ndarray, out: np.ndarray
) -> None:
    """Copy what chunk ``plan.keys[position]`` holds of the batch's windows into ``out``."""
    var = pool.var
    index = plan.index[position]
    for row in np.flatnonzero(plan.which == position).tolist():
        _copy_piece(out[row], chunk, var, index, plan.local[row].tolist())
    for row, p, local in plan.pieces:
        if p == position:
            _copy_piece(out[row], chunk, var, index, local)


def validity_mask(layout: StreamLayout, starts: np.ndarray) -> np.ndarray:
    """Boolean ``(n, *window)`` mask: True where a padded window holds real data."""
    mask = np.ones((len(starts), *layout.mask_shape), dtype=bool)
    position = 0
    for a, axis in enumerate(layout.grid.axes):
        if axis.squeeze:
            continue
        inside = (starts[:, a, None] + np.arange(axis.length)) < axis.size  # (n, length)
        shape = [len(starts)] + [1] * len(layout.mask_shape)
        shape[1 + position] = axis.length
        mask &= inside.reshape(shape)
        position += 1
    return mask
