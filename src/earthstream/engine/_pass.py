"""One pass of the engine over an epoch's batches: the scheduler thread's state and loop.

:class:`Pass` holds what one pass owns (slot cache, loader, pending plans,
corrupt chunks) and runs the slot path: plan spans of batches ahead, start
loads in order of first need, and when every chunk of the next batch is
resident pin them and hand the batch to the cut pool; batches go out in order.
In memory too tight for one batch's chunks a batch is filled chunk by chunk.
The two other modes (``_direct``: whole chunks decoded into the batch;
``_sweep``: many batches per sweep) are functions over a :class:`Pass`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._batch import Batch
from ..errors import ChunkDecodeError, CorruptChunksError, MissingChunkError
from ..protocols import ChunkedSource, SourceCapabilities
from ..sampling import EpochOrder
from ._assemble import BatchArrays, scatter_key
from ._budget import Budget
from ._buffers import BatchBuffers
from ._kind import StreamKind
from ._layout import VarLayout
from ._loader import ChunkLoader
from ._plan import BatchPlan
from ._policy import ChunkPolicy, CorruptCount
from ._report import EpochReport
from ._slots import NEVER, SlotCache, SlotPool

__all__ = ["Delivery", "Held", "Pass", "PassSetup", "Stop"]

log = logging.getLogger("earthstream")

POLL = 0.05  # seconds between checks of the stop flag while blocked
SPAN = 32  # batches planned per vectorized pass


@dataclass(frozen=True)
class PassSetup:
    """What an engine gives each of its passes (fixed when the engine is built)."""

    inputs: tuple[ChunkedSource, ...]
    capabilities: tuple[SourceCapabilities, ...]
    kind: StreamKind
    budget: Budget
    policy: ChunkPolicy
    num_threads: int
    lookahead: int
    max_inflight: int
    sweep_batches: int
    buffers: BatchBuffers


class Held:
    """Batches allocated and not yet taken by the consumer: slots and bytes (thread-safe)."""

    def __init__(self, slots: int, wake: queue.SimpleQueue[Any]) -> None:
        self._lock = threading.Lock()
        self.slots = threading.Semaphore(slots)
        self.value = 0
        self._wake = wake

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.value += nbytes

    def release(self, nbytes: int) -> None:
        self.add(-nbytes)
        self.slots.release()
        self._wake.put(None)  # the scheduler may be waiting for room


@dataclass
class Delivery:
    batch: Batch
    nbytes_alloc: int


@dataclass
class _Cutting:
    plan: BatchPlan
    future: Future[BatchArrays]
    nbytes: int


class Stop(Exception):
    """The consumer went away."""


class Pass:
    """Scheduler-thread state for one epoch pass."""

    def __init__(
        self,
        setup: PassSetup,
        pools: list[SlotPool],
        cuts: ThreadPoolExecutor,
        stop: threading.Event,
        held: Held,
        wake: queue.SimpleQueue[Any],
        report: EpochReport,
        corrupt_count: CorruptCount | None = None,
    ) -> None:
        self.setup = setup
        self.kind = setup.kind
        self.variables = setup.kind.variables
        self.assembler = setup.kind.assembler
        self.corrupt_count = corrupt_count
        self.policy = setup.policy
        self.cuts = cuts
        self.stop = stop
        self.held = held
        self.wake = wake
        self.report = report
        for pool in pools:
            pool.reset()
        self.pools = pools
        self.cache = SlotCache(self.pools)
        self.done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.loader = ChunkLoader(setup.inputs, setup.capabilities, setup.num_threads, self._notify)
        self.index_of: dict[int, tuple[int, ...]] = {}
        self.bad: set[int] = set()  # corrupt chunks skipped this pass
        self._wanted: list[tuple[float, int, int]] = []  # prefetch heap: (next use, tie, key)
        self._tie = itertools.count()
        self.max_cutting = setup.num_threads + 1

    # -- accounting -------------------------------------------------------------------
    def track_peak(self, extra: int = 0) -> None:
        total = self.cache.used_bytes + self.held.value + extra
        if total > self.report.peak_held_bytes:
            self.report.peak_held_bytes = total

    # -- loads ----------------------------------------------------------------------
    def _start(self, key: int, until: float) -> bool:
        if len(self.loader) >= self.setup.max_inflight:
            return False
        found = self.cache.reserve(key, until)
        if found is None:
            return False
        slot, victims = found
        for victim in victims:  # evicted but needed later: read it again in time
            self._want(victim)
        pool = self.cache.pool_of(key)
        self.loader.submit(key, pool.var, self.index_of[key], pool.slab[slot])
        self.track_peak()
        return True

    def _notify(self, key: int) -> None:
        self.done.put(key)
        self.wake.put(None)

    def outcome(self, key: int, future: Future[bool], var: VarLayout) -> None:
        """Apply the chunk policy to a finished load; raise to stop the pass."""
        index = self.index_of[key]
        try:
            stored = future.result()
        except ChunkDecodeError as exc:
            if self.policy.corrupt != "skip":
                raise
            where = self._where(var, index)
            self.bad.add(key)
            self.report.corrupt_chunks.append(where)
            log.warning("earthstream: skipping corrupt chunk %s: %s", where, exc)
            shared = self.corrupt_count
            total = len(self.bad) if shared is None else shared.add(1)
            if total > self.policy.max_corrupt:
                scope = "this pass" if shared is None else "this epoch by the DataLoader workers"
                raise CorruptChunksError(
                    f"{total} chunks failed to decode in {scope}, more than "
                    f"max_corrupt={self.policy.max_corrupt} (the first here: "
                    f"{self.report.corrupt_chunks[0]}). Check the store, or raise max_corrupt."
                ) from exc
            return
        if stored:
            self.report.chunks_decoded += 1
            self.report.bytes_decoded += var.chunk_nbytes
            self.report.decodes[(var.batch_name, index)] += 1
            return
        self.report.chunks_missing += 1
        if self.policy.missing == "error":
            raise MissingChunkError(
                f"chunk {self._where(var, index)} of variable {var.batch_name!r} is "
                "not stored. Pass missing='fill' to read it as the fill value, as Zarr does."
            )

    def _where(self, var: VarLayout, index: tuple[int, ...]) -> str:
        return self.setup.capabilities[var.input].where(var.name, index)

    def _collect(self) -> bool:
        """Move finished loads into the cache; True if any finished."""
        landed = False
        with contextlib.suppress(queue.Empty):
            while True:
                key = self.done.get_nowait()
                future = self.loader.pop(key)
                try:
                    self.outcome(key, future, self.cache.pool_of(key).var)
                except BaseException:
                    self.cache.cancel(key)
                    raise
                self.cache.fulfil(key)
                landed = True
        return landed

    def _want(self, key: int) -> None:
        use = self.cache.next_use(key)
        if use != NEVER:
            heapq.heappush(self._wanted, (use, next(self._tie), key))

    def _prefetch(self) -> None:
        wanted, cache, loader = self._wanted, self.cache, self.loader
        while wanted and len(loader) < self.setup.max_inflight:
            use, _, key = wanted[0]
            if key in cache.resident or key in loader or cache.next_use(key) != use:
                heapq.heappop(wanted)
                continue
            if not self._start(key, use):
                break
            heapq.heappop(wanted)
        loader.flush()

    def wait(self, kind: str) -> None:
        """Block until something happens (a load or cut lands, the consumer takes a batch)."""
        self.loader.flush()
        t0 = time.perf_counter()
        while True:
            if self.stop.is_set():
                raise Stop
            try:
                self.wake.get(timeout=POLL)
                break
            except queue.Empty:
                continue
        with contextlib.suppress(queue.Empty):
            while True:
                self.wake.get_nowait()
        if kind == "stall":
            self.report.stall_s += time.perf_counter() - t0
        else:
            self.report.backpressure_s += time.perf_counter() - t0

    # -- planning -------------------------------------------------------------------
    def plan(self, span: list[tuple[int, np.ndarray]]) -> list[BatchPlan]:
        """The kind's plans of ``span``, their chunk uses recorded in the cache."""
        plans = self.kind.planner.plan(span)
        cache, index_of, resident, loader = (
            self.cache,
            self.index_of,
            self.cache.resident,
            self.loader,
        )
        for plan in plans:
            j = plan.index
            for vplan in plan.vars:
                for position, key in enumerate(vplan.keys):
                    if key not in index_of:
                        index_of[key] = tuple(vplan.index[position].tolist())
                    if cache.add_use(key, j) and key not in resident and key not in loader:
                        self._want(key)
        return plans

    # -- the slot path ------------------------------------------------------------------
    def run(self, order: EpochOrder, batches: Sequence[int], out: queue.Queue[Any]) -> None:
        """Plan ahead, load into slots, cut batches on the cut pool, deliver in order."""
        source = order.iter_batches(batches)
        ahead: deque[BatchPlan] = deque()
        cutting: deque[_Cutting] = deque()
        exhausted = False
        lookahead = self.setup.lookahead
        epoch = order.epoch
        while True:
            progressed = False
            # plan in whole spans (a pass costs about the same for 1 batch as for 32)
            room = lookahead - len(ahead)
            if not exhausted and (not ahead or room >= min(SPAN, max(1, lookahead // 2))):
                span = list(itertools.islice(source, min(SPAN, room)))
                if span:
                    ahead.extend(self.plan(span))
                    progressed = True
                else:
                    exhausted = True
            progressed |= self._collect()
            while ahead and len(cutting) < self.max_cutting:
                head = ahead[0]
                if self._tight(head):
                    if cutting:
                        break  # deliver in order: finish the batches being cut first
                    ahead.popleft()
                    out.put(self._assemble_tight(head, epoch))
                    progressed = True
                    continue
                missing = [k for k in head.keys if k not in self.cache.resident]
                if missing:
                    for key in missing:
                        if key not in self.loader and not self._start(key, head.index):
                            break
                    break
                if not self.held.slots.acquire(blocking=False):
                    break
                ahead.popleft()
                cutting.append(self._cut(head))
                progressed = True
            self._prefetch()
            while cutting and cutting[0].future.done():
                out.put(self._deliver(cutting.popleft(), epoch))
                progressed = True
            if exhausted and not ahead and not cutting:
                return
            if not progressed:
                waiting_for_room = (
                    bool(ahead)
                    and not cutting
                    and all(k in self.cache.resident for k in ahead[0].keys)
                )
                self.wait("backpressure" if waiting_for_room else "stall")

    def _tight(self, plan: BatchPlan) -> bool:
        """Whether the batch needs more chunks of a variable than that variable has slots."""
        if plan.tight is None:
            plan.tight = any(
                len(v.keys) > pool.n_slots for v, pool in zip(plan.vars, self.pools, strict=True)
            )
        return plan.tight

    def _cut(self, plan: BatchPlan) -> _Cutting:
        slots = [self.cache.checkout(vplan.keys) for vplan in plan.vars]
        nbytes = self.setup.budget.batch_nbytes
        self.held.add(nbytes)
        self.track_peak()
        future = self.cuts.submit(self.assembler.cut, self.pools, plan, slots, self.setup.buffers)
        future.add_done_callback(lambda _: self.wake.put(None))
        self.report.chunk_uses += sum(len(v.keys) for v in plan.vars)
        return _Cutting(plan, future, nbytes)

    def _deliver(self, job: _Cutting, epoch: int) -> Delivery:
        arrays = job.future.result()
        self.cache.checkin(job.plan.keys)
        return Delivery(self.finish(job.plan, arrays, epoch), job.nbytes)

    def take_batch_slot(self) -> None:
        if self.held.slots.acquire(blocking=False):
            return
        t0 = time.perf_counter()
        while not self.held.slots.acquire(timeout=POLL):
            if self.stop.is_set():
                raise Stop
            self._collect()
        self.report.backpressure_s += time.perf_counter() - t0

    def _assemble_tight(self, plan: BatchPlan, epoch: int) -> Delivery:
        """Memory too tight to hold a batch's chunks together: fill it chunk by chunk."""
        self.take_batch_slot()
        arrays = self.assembler.allocate(len(plan.ids), plan.padded, self.setup.buffers)
        nbytes = self.setup.budget.batch_nbytes
        self.held.add(nbytes)
        cache = self.cache
        frames = [self.assembler.frame(arrays, vi) for vi in range(len(self.variables))]
        pending = [
            (vplan, pool, frame, position, key)
            for vplan, pool, frame in zip(plan.vars, self.pools, frames, strict=True)
            for position, key in enumerate(vplan.keys)
        ]
        while pending:
            waiting = []
            for vplan, pool, frame, position, key in pending:
                if key in cache.resident:  # fill from it, then let it go
                    scatter_key(pool, vplan, position, cache.chunk(key), frame)
                    cache.consume(key)
                    self.report.chunk_uses += 1
                else:
                    waiting.append((vplan, pool, frame, position, key))
            pending = waiting
            for _, _, _, _, key in pending:
                if key not in self.loader and not self._start(key, plan.index):
                    break
            if pending:
                if not len(self.loader):
                    raise RuntimeError(  # pragma: no cover - prevented by plan_budget
                        "earthstream engine cannot make progress: no slot for a chunk"
                    )
                self.wait("stall")
                self._collect()
        self.track_peak()
        return Delivery(self.finish(plan, arrays, epoch), nbytes)

    # -- batches ----------------------------------------------------------------------
    def finish(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> Batch:
        """The delivered batch: samples that read a chunk skipped as corrupt dropped, then
        the kind's :meth:`~earthstream.engine.Assembler.finish`."""
        if self.bad and any(key in self.bad for key in plan.keys):
            plan, arrays = self._drop_corrupt(plan, arrays)
        return self.assembler.finish(plan, arrays, epoch)

    def _drop_corrupt(self, plan: BatchPlan, arrays: BatchArrays) -> tuple[BatchPlan, BatchArrays]:
        """Remove the samples that read a chunk skipped as corrupt."""
        keep = np.ones(len(plan.ids), dtype=bool)
        for vplan in plan.vars:
            bad = [p for p, key in enumerate(vplan.keys) if key in self.bad]
            if not bad:
                continue
            keep &= ~np.isin(vplan.which, bad)
            pieces = vplan.pieces
            keep[pieces.rows[np.isin(pieces.position, bad)]] = False
        self.report.samples_dropped += int((~keep).sum())
        rows = np.flatnonzero(keep)
        return plan.take(rows), self.assembler.take_rows(arrays, rows)
