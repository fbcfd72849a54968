"""Sweep assembly: many batches at once when one batch needs more chunks than fit.

Under ``shuffle="full"`` every batch draws windows from chunks all over the
dataset.  When memory holds fewer chunks than a single batch touches, filling
batches one at a time decodes nearly every chunk for every batch.  A sweep
turns the loop around: it allocates the outputs of the next ``K`` batches (as
much as the budget allows), then reads each chunk those batches need once,
copies its windows into all of them, and lets it go.  Each chunk is decoded
once per sweep instead of once per batch.  The outputs are laid out by the
stream kind's assembler (:meth:`~earthstream.engine.Assembler.allocate`), each
variable's pieces copied into its frame; each batch then takes its own rows.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sampling import EpochOrder
from ._assemble import BatchArrays, copy_pieces
from ._kind import Assembler
from ._layout import VarLayout
from ._pass import Delivery, Pass
from ._plan import BatchPlan, Pieces
from ._slots import SlotPool

#: Windows inside a chunk are gathered together from this many (fewer: one by one).
_GATHER = 8

__all__ = ["KeyTargets", "SweepOutputs", "run_sweeps", "sweep_outputs", "sweep_targets"]


@dataclass
class SweepOutputs:
    """The outputs of the batches of one sweep, one after the other along the sample axis."""

    arrays: BatchArrays  # (total samples, ...) as the assembler lays them out
    offsets: list[int]  # row where each batch starts (plus the end)

    @property
    def nbytes(self) -> int:
        return self.arrays.nbytes


def sweep_outputs(assembler: Assembler, plans: Sequence[BatchPlan]) -> SweepOutputs:
    offsets = [0]
    for plan in plans:
        offsets.append(offsets[-1] + len(plan.ids))
    prefill = any(plan.padded for plan in plans)
    return SweepOutputs(assembler.allocate(offsets[-1], prefill, None), offsets)


@dataclass
class KeyTargets:
    """Everything one chunk contributes to a sweep."""

    key: int
    var: int
    index: np.ndarray  # chunk-grid index
    rows: np.ndarray  # rows (in the sweep's outputs) of windows inside this chunk
    local: np.ndarray  # (n, ndim) their starts relative to the chunk
    pieces: Pieces  # parts of other windows it holds (rows in the sweep's outputs)
    uses: int  # batches of the sweep that use it


def sweep_targets(variables: Sequence[VarLayout], plans: Sequence[BatchPlan]) -> list[KeyTargets]:
    """Group every sample of the sweep by the chunk(s) it reads from (vectorized: a few
    array operations per batch, then one sort per variable)."""
    out: list[KeyTargets] = []
    for vi, var in enumerate(variables):
        ndim = len(var.chunks)
        used, grid, in_key, in_row, in_local = [], [], [], [], []
        p_key, p_parts = [], []
        offset = 0
        for plan in plans:
            vplan = plan.vars[vi]
            keys = np.asarray(vplan.keys, dtype=np.int64)
            used.append(keys)
            grid.append(np.asarray(vplan.index, dtype=np.int64).reshape(len(keys), ndim))
            inside = np.flatnonzero(vplan.which >= 0)
            if len(inside):
                in_key.append(keys[vplan.which[inside]])
                in_row.append(inside + offset)
                in_local.append(vplan.local[inside])
            pieces = vplan.pieces
            if len(pieces):
                p_key.append(keys[pieces.position])
                p_parts.append(
                    Pieces(pieces.rows + offset, pieces.position, pieces.src, pieces.dst,
                           pieces.size)
                )  # fmt: skip
            offset += len(plan.ids)
        if not used:
            continue
        all_keys = np.concatenate(used)
        uniq, first, uses = np.unique(all_keys, return_index=True, return_counts=True)
        index = np.concatenate(grid)[first]
        rows_of, local_of = _split_by_key(
            uniq,
            np.concatenate(in_key) if in_key else np.zeros(0, np.int64),
            [
                np.concatenate(in_row) if in_row else np.zeros(0, np.intp),
                np.concatenate(in_local) if in_local else np.zeros((0, ndim), np.int64),
            ],
        )
        if p_parts:
            fields = [
                np.concatenate([getattr(p, f) for p in p_parts])
                for f in ("rows", "position", "src", "dst", "size")
            ]
            split = _split_by_key(uniq, np.concatenate(p_key), fields)
        else:
            split = None
        for j, key in enumerate(uniq.tolist()):
            pieces = (
                Pieces(*(field[j] for field in split)) if split is not None else Pieces.empty(ndim)
            )
            out.append(KeyTargets(key, vi, index[j], rows_of[j], local_of[j], pieces, int(uses[j])))
    out.sort(key=lambda t: t.key)  # chunk by chunk, the variables of each chunk together
    return out


def _split_by_key(
    uniq: np.ndarray, keys: np.ndarray, fields: list[np.ndarray]
) -> list[list[np.ndarray]]:
    """``fields`` (parallel to ``keys``) split by key: for each field, one array per
    entry of ``uniq`` (sorted; every key is in it), in the order the entries came."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], uniq, side="left").tolist()
    bounds.append(len(keys))
    out = []
    for field in fields:
        ordered = field[order]
        out.append([ordered[bounds[j] : bounds[j + 1]] for j in range(len(uniq))])
    return out


def scatter_sweep(pool: SlotPool, target: KeyTargets, slot: int, full: np.ndarray) -> None:
    """Copy everything chunk ``target`` holds into the sweep's output rows (``full``: the
    variable's frame in the outputs)."""
    var = pool.var
    if len(target.rows) >= _GATHER and pool.windows is not None:
        picked = pool.windows[(np.full(len(target.rows), slot), *target.local.T)]
        full[target.rows] = picked.reshape((len(target.rows), *var.lengths))
    elif len(target.rows):
        ndim = len(var.chunks)
        size = np.broadcast_to(np.asarray(var.lengths, dtype=np.int64), (len(target.rows), ndim))
        inside = Pieces(target.rows, target.rows * 0, target.local, np.zeros_like(size), size)
        copy_pieces(pool.slab, np.full(len(inside), slot), inside, full)
    copy_pieces(pool.slab, np.full(len(target.pieces), slot), target.pieces, full)


def run_sweeps(p: Pass, order: EpochOrder, batches: Sequence[int], out: queue.Queue[Any]) -> None:
    """Assemble ``sweep_batches`` batches at a time, each chunk loaded once per sweep."""
    source = order.iter_batches(batches)
    pools, report, assembler = p.pools, p.report, p.assembler
    size = p.setup.sweep_batches
    slot_of: dict[int, int] = {}  # slot of each load in flight
    while True:
        span = list(itertools.islice(source, size))
        if not span:
            return
        plans = p.kind.planner.plan(span)
        outputs = sweep_outputs(assembler, plans)
        frames = [assembler.frame(outputs.arrays, vi) for vi in range(len(pools))]
        p.held.add(outputs.nbytes)
        pending = deque(sweep_targets(p.variables, plans))
        running: dict[int, KeyTargets] = {}
        while pending or running:
            while pending and len(p.loader) < p.setup.max_inflight:
                target = pending[0]
                pool = pools[target.var]
                slot = pool.take()
                if slot is None:
                    break
                pending.popleft()
                index = tuple(target.index.tolist())
                p.index_of[target.key] = index
                slot_of[target.key] = slot
                p.loader.submit(target.key, pool.var, index, pool.slab[slot])
                running[target.key] = target
            in_use = sum(pools[t.var].chunk_nbytes for t in running.values())
            report.peak_cache_bytes = max(report.peak_cache_bytes, in_use)
            p.track_peak(in_use)
            p.loader.flush()
            if not _drain(p, running, slot_of, frames):
                p.wait("stall")
        for i, plan in enumerate(plans):
            p.take_batch_slot()
            lo, hi = outputs.offsets[i], outputs.offsets[i + 1]
            arrays = assembler.take_rows(outputs.arrays, slice(lo, hi))
            nbytes = p.setup.budget.batch_nbytes
            p.held.add(nbytes)
            out.put(Delivery(p.finish(plan, arrays, order.epoch), nbytes))
        p.held.add(-outputs.nbytes)


def _drain(
    p: Pass, running: dict[int, KeyTargets], slot_of: dict[int, int], frames: list[np.ndarray]
) -> bool:
    """Scatter every finished load of a sweep and free its slot; True if any."""
    landed = False
    with contextlib.suppress(queue.Empty):
        while True:
            key = p.done.get_nowait()
            target = running.pop(key)
            pool = p.pools[target.var]
            slot = slot_of.pop(key)
            try:
                p.outcome(key, p.loader.pop(key), pool.var)
                if key not in p.bad:
                    scatter_sweep(pool, target, slot, frames[target.var])
            finally:
                pool.give(slot)
            p.report.chunk_uses += target.uses
            landed = True
    return landed
