"""Sweep assembly: many batches at once when one batch needs more chunks than fit.

Under ``shuffle="full"`` every batch draws windows from chunks all over the
dataset.  When memory holds fewer chunks than a single batch touches, filling
batches one at a time decodes nearly every chunk for every batch.  A sweep
turns the loop around: it allocates the outputs of the next ``K`` batches (as
much as the budget allows), then reads each chunk those batches need once,
copies its windows into all of them, and lets it go.  Each chunk is decoded
once per sweep instead of once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._assemble import _full, allocate, copy_pieces
from ._layout import StreamLayout
from ._plan import BatchPlan, Pieces
from ._slots import SlotPool

__all__ = ["SweepOutputs", "sweep_outputs", "sweep_targets"]


@dataclass
class SweepOutputs:
    """The outputs of the batches of one sweep, stacked along the sample axis."""

    data: dict[str, np.ndarray]  # per variable: (total windows, *sample shape)
    stacked: np.ndarray | None
    offsets: list[int]  # row where each batch starts (plus the end)
    nbytes: int


def sweep_outputs(layout: StreamLayout, plans: Sequence[BatchPlan]) -> SweepOutputs:
    offsets = [0]
    for plan in plans:
        offsets.append(offsets[-1] + len(plan.ids))
    arrays = allocate(layout, offsets[-1], prefill=any(plan.padded for plan in plans))
    return SweepOutputs(arrays.data, arrays.stacked, offsets, arrays.nbytes)


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


def sweep_targets(layout: StreamLayout, plans: Sequence[BatchPlan]) -> list[KeyTargets]:
    """Group every window of the sweep by the chunk(s) it reads from."""
    n_vars = len(layout.variables)
    out: list[KeyTargets] = []
    offset = 0
    per_var: list[dict[int, dict[str, Any]]] = [{} for _ in range(n_vars)]
    for plan in plans:
        for vi, vplan in enumerate(plan.vars):
            table = per_var[vi]
            keys = vplan.keys
            inside = np.flatnonzero(vplan.which >= 0)
            order = np.argsort(vplan.which[inside], kind="stable")
            counts = np.bincount(vplan.which[inside], minlength=len(keys)).tolist()
            grouped = inside[order]
            start = 0
            for position, key in enumerate(keys):
                entry = table.get(key)
                if entry is None:
                    entry = table[key] = {
                        "index": vplan.index[position],
                        "rows": [],
                        "local": [],
                        "pieces": [],
                        "uses": 0,
                    }
                entry["uses"] += 1
                picked = grouped[start : start + counts[position]]
                start += counts[position]
                if len(picked):
                    entry["rows"].append(picked + offset)
                    entry["local"].append(vplan.local[picked])
            pieces = vplan.pieces
            if len(pieces):
                order = np.argsort(pieces.position, kind="stable")
                cuts = np.flatnonzero(np.diff(pieces.position[order])) + 1
                for group in np.split(order, cuts):
                    part = pieces.take(group)
                    part.rows = part.rows + offset
                    table[keys[int(part.position[0])]]["pieces"].append(part)
        offset += len(plan.ids)
    for vi, table in enumerate(per_var):
        ndim = len(layout.variables[vi].chunks)
        for key in table:
            entry = table[key]
            rows: np.ndarray = (
                np.concatenate(entry["rows"]) if entry["rows"] else np.zeros(0, np.intp)
            )
            starts: np.ndarray = (
                np.concatenate(entry["local"]) if entry["local"] else np.zeros((0, ndim), np.int64)
            )
            parts: list[Pieces] = entry["pieces"]
            pieces = (
                Pieces(
                    np.concatenate([p.rows for p in parts]),
                    np.concatenate([p.position for p in parts]),
                    np.concatenate([p.src for p in parts]),
                    np.concatenate([p.dst for p in parts]),
                    np.concatenate([p.size for p in parts]),
                )
                if parts
                else Pieces.empty(ndim)
            )
            out.append(KeyTargets(key, vi, entry["index"], rows, starts, pieces, entry["uses"]))
    out.sort(key=lambda t: t.key)  # chunk by chunk, the variables of each chunk together
    return out


def scatter_sweep(pool: SlotPool, target: KeyTargets, slot: int, dest: np.ndarray) -> None:
    """Copy everything chunk ``target`` holds into the sweep's output rows."""
    var = pool.var
    full = _full(dest, var)
    if len(target.rows) and pool.windows is not None:
        picked = pool.windows[(np.full(len(target.rows), slot), *target.local.T)]
        dest[target.rows] = picked.reshape((len(target.rows), *var.sample_shape))
    elif len(target.rows):
        ndim = len(var.chunks)
        size = np.broadcast_to(np.asarray(var.lengths, dtype=np.int64), (len(target.rows), ndim))
        inside = Pieces(target.rows, target.rows * 0, target.local, np.zeros_like(size), size)
        copy_pieces(pool.slab, np.full(len(inside), slot), inside, full)
    copy_pieces(pool.slab, np.full(len(target.pieces), slot), target.pieces, full)
