"""The multi-modal stream kind: the primary's windows and every other modality in one engine.

What :class:`~earthstream.MultiStream` gives the engine (:func:`multi_kind`).
Inputs: the primary's source first, then one per other modality (a part, see
:mod:`._part`).  Engine variables: the primary's (on its window grid), then
each part's.  The planner plans the primary's windows as the window-grid kind
does and, for the same samples, each part's boxes (the index map between the
primary's windows and the part's grid is computed once, when the part is
built); every variable goes through :func:`~earthstream.engine.plan_var`, so
chunks are deduplicated across the batch, decoded once into the engine's slots
within the one ``memory_limit`` and counted in the one epoch report.

The assembler cuts every variable straight into its place in the batch's
records: the primary's channels into its ``(B, C, ...)`` record (forecasts: per
variable, then the input and target steps into their records), each gridded
part's into its record; rasters into frames that are then decoded or warped
onto the footprint.  That last step (:meth:`Part.complete`) runs on the cut
thread with the cut; in the engine's other modes (tight memory, sweeps) in
``finish``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._batch import Batch
from .._units import format_bytes
from ..engine import (
    BatchArrays,
    BatchBuffers,
    BatchPlan,
    Budget,
    SlotPool,
    StreamKind,
    StreamLayout,
    VarLayout,
    cut_var,
    frame_of,
    plan_var,
)
from ..engine._budget import SWEEP_SLOTS
from ..engine._buffers import aligned_empty
from ..errors import MemoryBudgetError
from ..sampling._forecast import ForecastPlan
from ._open import Primary
from ._part import ArraySpec, Part, Samples
from ._spec import RecordInfo

__all__ = ["MultiArrays", "MultiAssembler", "MultiPlanner", "PrimaryRecords", "multi_kind"]

#: Prefix of the keys of frames the engine fills but the batch does not deliver.
FRAME = "\0"


@dataclass
class MultiArrays(BatchArrays):
    """A multi-modal batch's arrays; ``complete``: the records are made."""

    complete: bool = False


@dataclass(frozen=True)
class PrimaryRecords:
    """Where the primary's variables go: its record ``(B, C, ...)`` (channels in the
    order of the variables), and with a forecast the input and ``target`` records,
    cut from each variable's steps."""

    layout: StreamLayout
    info: RecordInfo
    target: RecordInfo | None = None
    forecast: ForecastPlan | None = None

    def arrays(self) -> tuple[ArraySpec, ...]:
        variables = {v.name: v for v in self.layout.variables}
        out = [_record_spec(self.info, [variables[c] for c in self.info.channels])]
        if self.forecast is not None:
            assert self.target is not None
            out.append(_record_spec(self.target, [variables[c] for c in self.target.channels]))
            out.extend(
                ArraySpec(FRAME + v.name, v.sample_shape, v.dtype, output=False)
                for v in self.layout.variables
            )
        return tuple(out)

    def dest(self, data: Mapping[str, np.ndarray], vi: int) -> np.ndarray:
        var = self.layout.variables[vi]
        if self.forecast is not None:
            return data[FRAME + var.name]
        return data[self.info.name][:, self.info.channels.index(var.name)]

    def complete(self, data: MutableMapping[str, np.ndarray]) -> None:
        plan = self.forecast
        if plan is None:
            return
        variables = {v.name: v for v in self.layout.variables}
        assert self.target is not None
        for info, offsets in ((self.info, plan.input_offsets), (self.target, plan.target_offsets)):
            record = data[info.name]
            steps = plan.positions(offsets)
            for c, name in enumerate(info.channels):
                var = variables[name]
                axis = 1 + var.sample_dims.index(plan.dim)
                source = data[FRAME + name]
                index: list[Any] = [slice(None)] * source.ndim
                first, last = steps[0], steps[-1]
                if steps == list(range(first, last + 1)):
                    index[axis] = slice(first, last + 1)
                    record[:, c] = source[tuple(index)]
                else:
                    record[:, c] = np.take(source, steps, axis=axis)
        for var in self.layout.variables:
            del data[FRAME + var.name]


def _record_spec(info: RecordInfo, variables: Sequence[VarLayout]) -> ArraySpec:
    dtype = np.result_type(*[v.dtype for v in variables])
    return ArraySpec(info.name, info.shape, np.dtype(dtype), dims=info.dims)


def _positions(var: VarLayout) -> tuple[np.ndarray | None, ...]:
    """Offsets read along each dim (a forecast's steps), ``()`` for contiguous windows."""
    if not var.reads_offsets:
        return ()
    return tuple(None if o is None else np.asarray(o, dtype=np.int64) for o in var.offsets)


@dataclass(frozen=True)
class MultiPlanner:
    """The primary's windows (as the window-grid kind plans them) and every part's boxes
    for the same samples."""

    layout: StreamLayout
    owner: Primary
    parts: tuple[Part, ...]
    variables: tuple[VarLayout, ...]  # every engine variable, primary first
    time_offsets: np.ndarray | None  # input steps of a sample from its time start

    def plan(self, batches: Sequence[tuple[int, np.ndarray]]) -> list[BatchPlan]:
        grid = self.layout.grid
        sizes = np.array([len(ids) for _, ids in batches], dtype=np.int64)
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        ids = np.concatenate([i for _, i in batches]) if len(batches) else np.zeros(0, np.int64)
        starts = grid.starts_of(ids)  # relative to the selection; + origins: in the source
        absolute = starts + grid.origins if len(starts) else starts
        n_vars = len(self.variables)
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
            for vi, var in enumerate(self.layout.variables)
        ]
        owner = self.owner
        dims = grid.dims
        times = None
        if owner.time_dim is not None and self.time_offsets is not None:
            times = starts[:, dims.index(owner.time_dim)][:, None] + self.time_offsets
        samples = Samples(
            owner,
            starts[:, dims.index(owner.lat_dim)],
            starts[:, dims.index(owner.lon_dim)],
            times,
        )
        extra: dict[str, np.ndarray] = {}
        vi = len(per_var)
        for part in self.parts:
            part_plan = part.plan(samples)
            for j in range(len(part.variables)):
                per_var.append(
                    plan_var(
                        self.variables[vi],
                        vi,
                        n_vars,
                        part_plan.starts[j],
                        bounds,
                        extents=part_plan.extents[j],
                        positions=part_plan.positions[j],
                    )
                )
                vi += 1
            for key, values in part_plan.extra.items():
                extra[f"{part.name}/{key}"] = values
        edges = bounds.tolist()
        return [
            BatchPlan(
                index=j,
                ids=batch_ids,
                starts=starts[edges[b] : edges[b + 1]],
                vars=[plans[b] for plans in per_var],
                padded=False,  # whole windows; parts read whole boxes or nothing
                extra={k: v[edges[b] : edges[b + 1]] for k, v in extra.items()},
            )
            for b, (j, batch_ids) in enumerate(batches)
        ]


@dataclass(frozen=True)
class MultiAssembler:
    """The records of every modality, cut from resident chunks."""

    layout: StreamLayout
    primary: PrimaryRecords
    parts: tuple[Part, ...]
    variables: tuple[VarLayout, ...]
    coords: Mapping[str, np.ndarray] = field(default_factory=dict)

    def _specs(self) -> tuple[ArraySpec, ...]:
        return self.primary.arrays() + tuple(s for p in self.parts for s in p.arrays())

    def sample_nbytes(self) -> int:
        """Bytes one sample takes in a batch (records, masks, frames, flags)."""
        return sum(s.sample_nbytes for s in self._specs())

    def _dest(self, data: Mapping[str, np.ndarray], vi: int) -> np.ndarray:
        n_primary = len(self.layout.variables)
        if vi < n_primary:
            return self.primary.dest(data, vi)
        j = vi - n_primary
        for part in self.parts:
            if j < len(part.variables):
                return part.dest(data, j)
            j -= len(part.variables)
        raise IndexError(vi)  # pragma: no cover - the engine asks for its own variables

    def allocate(self, n: int, prefill: bool, buffers: BatchBuffers | None) -> BatchArrays:
        data: dict[str, np.ndarray] = {}
        for spec in self._specs():
            shape = (n, *spec.shape)
            data[spec.key] = (
                buffers.empty(shape, spec.dtype)
                if buffers is not None
                else aligned_empty(shape, spec.dtype)
            )
        if prefill:
            for vi, var in enumerate(self.variables):
                self._dest(data, vi)[...] = var.fill
        return MultiArrays(data, None, sum(a.nbytes for a in data.values()))

    def frame(self, arrays: BatchArrays, var: int) -> np.ndarray:
        return frame_of(self._dest(arrays.data, var), self.variables[var])

    def cut(
        self,
        pools: Sequence[SlotPool],
        plan: BatchPlan,
        slots: Sequence[np.ndarray],
        buffers: BatchBuffers | None,
    ) -> BatchArrays:
        n = len(plan.ids)
        arrays = self.allocate(n, False, buffers)
        for vi, (vplan, pool, s) in enumerate(zip(plan.vars, pools, slots, strict=True)):
            cut_var(pool, vplan, s, n, self._dest(arrays.data, vi), False)
        self._complete(arrays, plan)
        return arrays

    def _complete(self, arrays: BatchArrays, plan: BatchPlan) -> None:
        data = arrays.data
        self.primary.complete(data)
        for part in self.parts:
            prefix = part.name + "/"
            extra = {k[len(prefix) :]: v for k, v in plan.extra.items() if k.startswith(prefix)}
            part.complete(data, extra)
        if isinstance(arrays, MultiArrays):
            arrays.complete = True

    def take_rows(self, arrays: BatchArrays, rows: np.ndarray | slice) -> BatchArrays:
        def own(a: np.ndarray) -> np.ndarray:
            return a[rows].copy() if isinstance(rows, slice) else a[rows]

        data = {k: own(a) for k, a in arrays.data.items()}
        done = isinstance(arrays, MultiArrays) and arrays.complete
        return MultiArrays(data, None, sum(a.nbytes for a in data.values()), complete=done)

    def finish(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> Batch:
        if not (isinstance(arrays, MultiArrays) and arrays.complete):
            self._complete(arrays, plan)  # filled by the engine chunk by chunk
        grid = self.layout.grid
        starts = {dim: plan.starts[:, a] for a, dim in enumerate(grid.dims)}
        coords: dict[str, np.ndarray] = {}
        for dim, values in self.coords.items():
            if dim in starts and len(values) == grid.axis(dim).size:
                coords[dim] = values[starts[dim]]
        data: dict[str, np.ndarray] = {}
        dims: dict[str, tuple[str, ...]] = {}
        for spec in self._specs():
            if spec.output:
                data[spec.key] = arrays.data[spec.key]
                dims[spec.key] = spec.dims
        for part in self.parts:
            for key in part.meta:
                coords[f"{part.name}/{key}"] = plan.extra[f"{part.name}/{key}"]
        return Batch(
            data=data,
            dims=dims,
            starts=starts,
            coords=coords,
            window_ids=plan.ids,
            epoch=epoch,
            index=plan.index,
        )


def multi_kind(
    layout: StreamLayout,
    owner: Primary,
    primary: PrimaryRecords,
    parts: Sequence[Part],
    coords: Mapping[str, np.ndarray],
    time_offsets: np.ndarray | None,
) -> StreamKind:
    """The multi-modal kind: input 0 is the primary's source, input ``k`` part ``k - 1``'s."""
    variables = list(layout.variables)
    for k, part in enumerate(parts, start=1):
        variables.extend(replace(v, input=k) for v in part.variables)
    all_vars = tuple(variables)
    parts = tuple(parts)
    return StreamKind(
        variables=all_vars,
        planner=MultiPlanner(layout, owner, parts, all_vars, time_offsets),
        assembler=MultiAssembler(
            layout, primary, parts, all_vars, {d: np.asarray(v) for d, v in coords.items()}
        ),
        direct=False,
    )


def multi_budget(kind: StreamKind, batch_size: int, memory_limit: int, prefetch: int) -> Budget:
    """``memory_limit`` split between batches (every modality's records) and the chunk
    slots of every modality's variables; refused when too small for a batch and one
    chunk of each variable."""
    assembler = kind.assembler
    assert isinstance(assembler, MultiAssembler)
    per_sample = assembler.sample_nbytes() + 8 * len(assembler.layout.grid.axes) + 8
    batch_nbytes = per_sample * batch_size
    queued = (prefetch + 1) * batch_nbytes
    block = kind.block_nbytes()
    if memory_limit < queued + block:
        raise MemoryBudgetError(
            f"memory_limit={format_bytes(memory_limit)} is too small: {prefetch + 1} batches "
            f"(prefetch={prefetch} queued + 1 being assembled) of every modality's records, "
            f"{format_bytes(batch_nbytes)} each, need {format_bytes(queued)}, and one decoded "
            f"chunk of each variable of every modality needs {format_bytes(block)}. Raise "
            f"memory_limit to at least {format_bytes(queued + block)}, or lower batch_size or "
            "prefetch."
        )
    return Budget(memory_limit, batch_nbytes, prefetch, memory_limit - queued)


def multi_sweep_size(kind: StreamKind, budget: Budget, batch_size: int) -> int:
    """Batches per sweep for a fully shuffled stream (0: batches fit the slots); as
    :func:`~earthstream.engine.sweep_size`, over every modality's variables."""
    block = max(1, kind.block_nbytes())
    n_slots = budget.cache_capacity // block
    expected = 0.0
    for var in kind.variables:
        n = float(np.prod(var.chunk_grid, dtype=np.float64))
        expected = max(expected, n * (1 - (1 - 1 / n) ** batch_size) if n else 0.0)
    if expected <= 0.5 * n_slots:
        return 0
    room = budget.cache_capacity - SWEEP_SLOTS * block
    size = room // max(1, budget.batch_nbytes)
    return int(size) if size >= 2 else 0
