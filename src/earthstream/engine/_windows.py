"""The window-grid stream kind: windows of a ``WindowGrid``, cut from variables on that grid.

What :class:`~earthstream.Stream` gives the engine (:func:`window_kind`).  The
planner (:func:`plan_span`) takes every window's start from the grid (plus the
selection's origin) and plans each variable with
:func:`~earthstream.engine.plan_var`; the assembler (:class:`WindowAssembler`)
cuts one array per variable, or one stacked ``(B, C, *window)`` array whose
channels the variables' arrays are views of, and makes the
:class:`~earthstream.Batch` with starts, coordinates and, when padding, the
validity mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._batch import Batch
from ._alloc import HOST, namespace_of
from ._assemble import BatchArrays, cut_var, frame_of, new_array, placed_copy
from ._buffers import BatchBuffers
from ._kind import StreamKind
from ._layout import StreamLayout, VarLayout
from ._plan import BatchPlan, VarPlan, plan_var
from ._slots import SlotPool

__all__ = [
    "WindowAssembler",
    "WindowPlanner",
    "direct_decode_ok",
    "plan_span",
    "validity_mask",
    "window_kind",
]


def plan_span(layout: StreamLayout, batches: Sequence[tuple[int, np.ndarray]]) -> list[BatchPlan]:
    """Plan consecutive batches ``(index, window ids)`` in one vectorized pass."""
    grid = layout.grid
    sizes = np.array([len(ids) for _, ids in batches], dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    ids = np.concatenate([ids for _, ids in batches]) if len(batches) else np.zeros(0, np.int64)
    starts = grid.starts_of(ids)  # relative to the selection; + origins: in the source
    absolute = starts + grid.origins if len(starts) else starts
    shape_all = np.array([a.size for a in grid.axes], dtype=np.int64)
    past_edge = (starts + grid.spans > shape_all).any(axis=1) if len(starts) else np.zeros(0, bool)
    n_vars = len(layout.variables)
    per_var = [
        plan_var(
            var,
            vi,
            n_vars,
            absolute[:, list(var.grid_axes)] if var.grid_axes else absolute[:, :0],
            bounds,
            positions=_positions(var),
            spans=var.spans or None,
        )
        for vi, var in enumerate(layout.variables)
    ]
    bounds_list = bounds.tolist()
    plans = []
    for b, (j, batch_ids) in enumerate(batches):
        r0, r1 = bounds_list[b], bounds_list[b + 1]
        plans.append(
            BatchPlan(
                index=j,
                ids=batch_ids,
                starts=starts[r0:r1],
                vars=[var_plans[b] for var_plans in per_var],
                padded=bool(past_edge[r0:r1].any()),
            )
        )
    return plans


def _positions(var: VarLayout) -> tuple[np.ndarray | None, ...]:
    """Offsets read along each dim: those of dims reading selected offsets (a forecast's
    steps); ``()`` when every dim reads a contiguous range."""
    if not var.reads_offsets:
        return ()
    return tuple(None if o is None else np.asarray(o, dtype=np.int64) for o in var.offsets)


@dataclass(frozen=True)
class WindowPlanner:
    """The window-grid planner (:func:`plan_span` over ``layout``)."""

    layout: StreamLayout

    def plan(self, batches: Sequence[tuple[int, np.ndarray]]) -> list[BatchPlan]:
        return plan_span(self.layout, batches)


def _stacked_view(stacked: np.ndarray, var: VarLayout, layout: StreamLayout) -> np.ndarray:
    """The variable's (B, *sample shape) view into the (B, C, *common) stacked array."""
    b = stacked.shape[0]
    block = stacked[:, var.channel_start : var.channel_start + var.n_channels]
    extra = [d for d in var.sample_dims if d not in layout.common_dims]
    order = extra + list(layout.common_dims)
    sizes = [layout.grid.axis(d).length for d in order]
    xp = namespace_of(stacked)
    view = xp.reshape(block, (b, *sizes), copy=False)
    perm = [0] + [1 + order.index(d) for d in var.sample_dims]
    out: np.ndarray = xp.permute_dims(view, tuple(perm))
    return out


def _stacked(layout: StreamLayout, n: int, buffers: BatchBuffers | None) -> np.ndarray:
    shape = (n, len(layout.channels), *layout.common_shape)
    return (buffers if buffers is not None else HOST).empty(shape, layout.stacked_dtype)


def _stacks(layout: StreamLayout) -> bool:
    return layout.stack and layout.stacked_dtype is not None


def allocate(
    layout: StreamLayout, n: int, prefill: bool, buffers: BatchBuffers | None = None
) -> BatchArrays:
    """Arrays for a batch the engine fills piece by piece (tight memory, sweeps, direct)."""
    if _stacks(layout):
        stacked = _stacked(layout, n, buffers)
        data = {v.batch_name: _stacked_view(stacked, v, layout) for v in layout.variables}
        if prefill:
            for v in layout.variables:
                data[v.batch_name][...] = v.fill
        return BatchArrays(data, stacked, stacked.nbytes, buffers)
    data = {v.batch_name: new_array(v, n, prefill, buffers) for v in layout.variables}
    return BatchArrays(data, None, sum(a.nbytes for a in data.values()), buffers)


def cut_batch(
    layout: StreamLayout,
    pools: Sequence[SlotPool],
    plan: BatchPlan,
    slots: Sequence[np.ndarray],
    buffers: BatchBuffers | None = None,
) -> BatchArrays:
    """The whole batch, cut from resident chunks (runs on a cut thread)."""
    n = len(plan.ids)
    each: Sequence[tuple[VarLayout, VarPlan, SlotPool, np.ndarray]] = list(
        zip(layout.variables, plan.vars, pools, slots, strict=True)
    )
    if _stacks(layout):
        stacked = _stacked(layout, n, buffers)
        data = {}
        for var, vplan, pool, s in each:
            view = _stacked_view(stacked, var, layout)
            if plan.padded:
                view[...] = var.fill
            data[var.batch_name] = cut_var(pool, vplan, s, n, view, plan.padded)
        return BatchArrays(data, stacked, stacked.nbytes, buffers)
    data = {
        var.batch_name: cut_var(pool, vplan, s, n, None, plan.padded, buffers)
        for var, vplan, pool, s in each
    }
    return BatchArrays(data, None, sum(a.nbytes for a in data.values()), buffers)


def validity_mask(layout: StreamLayout, starts: np.ndarray) -> np.ndarray:
    """Boolean ``(n, *window)`` mask: True where a padded window holds real data."""
    mask = np.ones((len(starts), *layout.mask_shape), dtype=bool)
    position = 0
    for a, axis in enumerate(layout.grid.axes):
        if axis.squeeze:
            continue
        inside = (starts[:, a, None] + axis.positions()) < axis.size  # (n, length)
        shape = [len(starts)] + [1] * len(layout.mask_shape)
        shape[1 + position] = axis.length
        mask &= inside.reshape(shape)
        position += 1
    return mask


@dataclass(frozen=True)
class WindowAssembler:
    """The window-grid assembler: one array per variable, or one stacked array.

    ``coords`` label each sample's start along the dims that have them.
    """

    layout: StreamLayout
    coords: Mapping[str, np.ndarray] = field(default_factory=dict)

    def cut(
        self,
        pools: Sequence[SlotPool],
        plan: BatchPlan,
        slots: Sequence[np.ndarray],
        buffers: BatchBuffers | None,
    ) -> BatchArrays:
        return cut_batch(self.layout, pools, plan, slots, buffers)

    def allocate(self, n: int, prefill: bool, buffers: BatchBuffers | None) -> BatchArrays:
        return allocate(self.layout, n, prefill, buffers)

    def frame(self, arrays: BatchArrays, var: int) -> np.ndarray:
        v = self.layout.variables[var]
        return frame_of(arrays.data[v.batch_name], v)

    def take_rows(self, arrays: BatchArrays, rows: np.ndarray | slice) -> BatchArrays:
        layout = self.layout
        buffers = arrays.buffers

        def own(a: np.ndarray) -> np.ndarray:
            # in the arrays' own memory (pooled, pinned, shared), never a view of them
            if buffers is None:
                return a[rows].copy() if isinstance(rows, slice) else a[rows]
            return placed_copy(a, buffers, rows)

        if arrays.stacked is not None:
            stacked = own(arrays.stacked)
            data = {v.batch_name: _stacked_view(stacked, v, layout) for v in layout.variables}
            return BatchArrays(data, stacked, stacked.nbytes, buffers)
        data = {name: own(a) for name, a in arrays.data.items()}
        return BatchArrays(data, None, sum(a.nbytes for a in data.values()), buffers)

    def finish(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> Batch:
        layout = self.layout
        grid = layout.grid
        starts = {dim: plan.starts[:, a] for a, dim in enumerate(grid.dims)}
        coords = {}
        for dim, values in self.coords.items():
            if dim in starts and len(values) == grid.axis(dim).size:
                coords[dim] = values[starts[dim]]
        mask = validity_mask(layout, plan.starts) if grid.edges == "pad" else None
        return Batch(
            data=arrays.data,
            dims={v.batch_name: v.sample_dims for v in layout.variables},
            starts=starts,
            coords=coords,
            window_ids=plan.ids,
            epoch=epoch,
            index=plan.index,
            mask=mask,
            mask_dims=layout.mask_dims if mask is not None else (),
            stacked=arrays.stacked,
            channels=layout.channels,
        )


def direct_decode_ok(layout: StreamLayout) -> bool:
    """Whether every window of ``layout`` is exactly one chunk of every variable, no
    chunk is in two windows, and a chunk's place in the batch is one C-ordered block
    of the variable's dtype (so the decoder can write it there)."""
    grid = layout.grid
    if grid.edges != "drop" or not layout.variables:
        return False
    for var in layout.variables:
        if var.reads_offsets:
            return False
        for a, c, n in zip(var.grid_axes, var.chunks, var.lengths, strict=True):
            axis = grid.axes[a]
            if axis.squeeze:
                if c != 1:  # an iterated dim: each position must be its own chunk
                    return False
            elif n != c or axis.explicit is not None or axis.stride != c or axis.origin % c:
                return False  # windows must be the chunks (a selection may shift them)
        for axis in grid.axes:  # dims the variable lacks: one window covers them
            if axis.dim not in var.dims and not axis.whole:
                return False
    try:
        probe = allocate(layout, 1, prefill=False)
    except (ValueError, MemoryError):  # pragma: no cover - a layout too large to probe
        return False
    for var in layout.variables:
        block = frame_of(probe.data[var.batch_name], var)[0]
        if (
            block.dtype != var.dtype
            or not block.flags.c_contiguous
            or block.shape != tuple(var.chunks)
        ):
            return False
    return bool(np.prod([a.count for a in grid.axes], dtype=np.int64) > 0)


def window_kind(layout: StreamLayout, coords: Mapping[str, np.ndarray] | None = None) -> StreamKind:
    """The window-grid stream kind of ``layout`` (one input), labelling samples with
    ``coords``."""
    return StreamKind(
        variables=layout.variables,
        planner=WindowPlanner(layout),
        assembler=WindowAssembler(layout, {d: np.asarray(v) for d, v in (coords or {}).items()}),
        direct=direct_decode_ok(layout),
    )
