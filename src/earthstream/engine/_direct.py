"""Decoding chunks straight into the batch, for samples that are whole chunks used once.

When every sample is exactly one chunk of every variable (whole fields on a
store with one step per chunk, iterated over time; tiles equal to the chunk
grid) and no two samples share a chunk, a chunk's one use is known before it
is read: it is decoded into its place in the batch (stacked or not), with no
slot and no copy.  The source's own decode-into-``out`` step does the work, so
codecs, CF decoding, missing and corrupt chunk policies are those of every
other read.  Whether a stream kind qualifies is its own call
(:attr:`~earthstream.engine.StreamKind.direct`; for window grids
``_windows.direct_decode_ok``); the places come from its assembler's frames.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..sampling import EpochOrder
from ._assemble import BatchArrays
from ._pass import SPAN, Delivery, Pass
from ._plan import BatchPlan

__all__ = ["run_direct"]


def run_direct(p: Pass, order: EpochOrder, batches: Sequence[int], out: queue.Queue[Any]) -> None:
    """Allocate the next batches and decode each of their chunks into its place."""
    source = order.iter_batches(batches)
    setup, report, assembler = p.setup, p.report, p.assembler
    plans: deque[BatchPlan] = deque()
    filling: deque[tuple[BatchPlan, BatchArrays, set[int], int]] = deque()
    owner: dict[int, tuple[set[int], int, int]] = {}  # load id -> (batch's loads, key, var)
    ids = itertools.count()
    exhausted = False
    while True:
        progressed = False
        if not exhausted and len(plans) < SPAN:
            span = list(itertools.islice(source, SPAN))
            if span:
                plans.extend(p.kind.planner.plan(span))
            else:
                exhausted = True
        while (
            plans
            and len(filling) < setup.budget.batch_slots
            and len(p.loader) < setup.max_inflight
            and p.held.slots.acquire(blocking=False)
        ):
            plan = plans.popleft()
            arrays = assembler.allocate(len(plan.ids), False, setup.buffers)
            nbytes = setup.budget.batch_nbytes
            p.held.add(nbytes)
            loads: set[int] = set()
            for vi, (var, vplan) in enumerate(zip(p.variables, plan.vars, strict=True)):
                if not vplan.all_inside or vplan.local.any():  # pragma: no cover
                    raise RuntimeError("earthstream: a sample is not one whole chunk")
                frame = assembler.frame(arrays, vi)
                index_rows = vplan.index.tolist()
                for row, position in enumerate(vplan.which.tolist()):
                    key = vplan.keys[position]
                    p.index_of[key] = tuple(index_rows[position])
                    load = next(ids)
                    owner[load] = (loads, key, vi)
                    loads.add(load)
                    p.loader.submit(load, var, p.index_of[key], frame[row])
                report.chunk_uses += len(vplan.keys)
            p.loader.flush()
            filling.append((plan, arrays, loads, nbytes))
            p.track_peak()
            progressed = True
        with contextlib.suppress(queue.Empty):
            while True:
                load = p.done.get_nowait()
                loads, key, vi = owner.pop(load)
                p.outcome(key, p.loader.pop(load), p.variables[vi])
                loads.discard(load)
                progressed = True
        while filling and not filling[0][2]:
            plan, arrays, _, nbytes = filling.popleft()
            out.put(Delivery(p.finish(plan, arrays, order.epoch), nbytes))
            progressed = True
        if exhausted and not plans and not filling:
            return
        if not progressed:
            p.wait("stall")
