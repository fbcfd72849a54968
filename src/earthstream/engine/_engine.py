"""The streaming engine: background decode, slot cache, parallel batch cutting, prefetch.

One scheduler thread walks the batches of an epoch in order.  It plans a
bounded number of batches ahead (which chunks each needs, vectorized), so it
knows when every chunk is needed next.  It starts reads + decodes on a load
pool, straight into cache slots (decoders release the GIL); when all chunks of
the next batch are resident it pins them and hands the batch to a cut pool,
where one gather per variable copies every window out (GIL released).  Batches
are delivered in order through a queue.

Memory: ``memory_limit`` bounds the decoded chunks (slots) plus the batches
being cut or waiting for the consumer.  The split is fixed up front:
``prefetch + 1`` batches, the rest for slots.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._batch import Batch
from .._units import format_bytes
from ..errors import MemoryBudgetError
from ..sampling import EpochOrder
from ..sources import ChunkedSource
from ._assemble import (
    BatchArrays,
    _stacked_view,
    allocate,
    cut_batch,
    scatter_key,
    validity_mask,
)
from ._layout import StreamLayout
from ._plan import BatchPlan, plan_span
from ._slots import NEVER, SlotCache, SlotPool
from ._sweep import KeyTargets, SweepOutputs, scatter_sweep, sweep_outputs, sweep_targets

__all__ = ["Budget", "Engine", "EpochReport", "plan_budget", "sweep_size"]

_POLL = 0.05  # seconds between checks of the stop flag while blocked
_SPAN = 32  # batches planned per vectorized pass


@dataclass(frozen=True)
class Budget:
    """How ``memory_limit`` is split between batches and chunk slots."""

    memory_limit: int
    batch_nbytes: int
    prefetch: int
    cache_capacity: int

    @property
    def batch_slots(self) -> int:
        """Batches that may exist at once on the engine's side."""
        return self.prefetch + 1


def plan_budget(layout: StreamLayout, batch_size: int, memory_limit: int, prefetch: int) -> Budget:
    """Split the budget, or refuse one too small for a batch and a chunk of each variable."""
    batch_nbytes = layout.batch_nbytes(batch_size)
    queued = (prefetch + 1) * batch_nbytes
    block = layout.block_nbytes()
    if memory_limit < queued + block:
        raise MemoryBudgetError(
            f"memory_limit={format_bytes(memory_limit)} is too small: {prefetch + 1} batches "
            f"(prefetch={prefetch} queued + 1 being assembled) of {format_bytes(batch_nbytes)} "
            f"each need {format_bytes(queued)}, and one decoded chunk of each variable needs "
            f"{format_bytes(block)}. Raise memory_limit to at least "
            f"{format_bytes(queued + block)}, or lower batch_size or prefetch."
        )
    return Budget(memory_limit, batch_nbytes, prefetch, memory_limit - queued)


@dataclass
class EpochReport:
    """What one pass of the engine did (one process, one shard of an epoch)."""

    epoch: int
    shard: int = 0
    num_shards: int = 1
    batches: int = 0
    samples: int = 0
    chunks_decoded: int = 0
    chunks_missing: int = 0
    chunk_uses: int = 0
    bytes_decoded: int = 0
    bytes_delivered: int = 0
    evictions: int = 0
    decodes: Counter[tuple[str, tuple[int, ...]]] = field(default_factory=Counter)
    memory_limit: int = 0
    cache_capacity: int = 0
    peak_cache_bytes: int = 0
    peak_held_bytes: int = 0
    elapsed_s: float = 0.0
    first_batch_s: float = 0.0
    stall_s: float = 0.0  # scheduler waiting for chunks
    backpressure_s: float = 0.0  # scheduler waiting for the consumer
    finished: bool = False

    @property
    def cache_hits(self) -> int:
        """Chunk uses served without a decode for them."""
        return self.chunk_uses - self.chunks_decoded - self.chunks_missing

    def summary(self) -> str:
        rate = self.samples / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"epoch {self.epoch} shard {self.shard}/{self.num_shards}: {self.batches} batches, "
            f"{self.samples} samples in {self.elapsed_s:.2f} s ({rate:,.0f} samples/s); "
            f"{self.chunks_decoded} chunks decoded ({format_bytes(self.bytes_decoded)}), "
            f"{self.cache_hits} cache hits, {self.evictions} evictions; peak memory "
            f"{format_bytes(self.peak_held_bytes)} of {format_bytes(self.memory_limit)}"
        )


class _Held:
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
class _Delivery:
    batch: Batch
    nbytes_alloc: int


@dataclass
class _Cutting:
    plan: BatchPlan
    future: Future[BatchArrays]
    nbytes: int


class _Stop(Exception):
    """The consumer went away."""


_DONE = object()


class Engine:
    """Runs batches of one epoch through read, decode, cache and assembly.

    Parameters
    ----------
    source
        Where chunks come from.
    layout
        The variables on the window grid.
    budget
        The memory split (see :func:`plan_budget`).
    num_threads
        Threads that read and decode chunks (as many again cut batches).
    coords
        Coordinate values by dim, to label each sample's start.
    lookahead
        Batches planned ahead of the one being assembled.
    """

    def __init__(
        self,
        source: ChunkedSource,
        layout: StreamLayout,
        budget: Budget,
        *,
        num_threads: int,
        coords: Mapping[str, np.ndarray] | None = None,
        lookahead: int | None = None,
        sweep_batches: int = 0,
    ) -> None:
        self.source = source
        self.layout = layout
        self.budget = budget
        self.num_threads = max(1, int(num_threads))
        self.coords = {d: np.asarray(v) for d, v in (coords or {}).items()}
        per_batch = max(1, budget.batch_nbytes)
        self.lookahead = lookahead or int(min(4096, max(8, 2 * budget.cache_capacity // per_batch)))
        # Enough loads queued that decode threads never wait for the scheduler; the
        # memory they may take is bounded by slots, not by this.
        self.max_inflight = max(32, 8 * self.num_threads)
        # The same number of slots for every variable (a chunk group holds one chunk of
        # each), but never more than a variable has chunks.  Sweeps keep a few slots
        # (to overlap decodes) and give the rest of the cache to their outputs.
        self.sweep_batches = int(sweep_batches)
        n_slots = max(1, budget.cache_capacity // max(1, layout.block_nbytes()))
        if self.sweep_batches:
            n_slots = SWEEP_SLOTS
        self.slot_counts = [
            max(1, min(n_slots, int(np.prod(v.chunk_grid, dtype=np.int64))))
            for v in layout.variables
        ]
        self.report: EpochReport | None = None
        self._pools: list[SlotPool] | None = None
        self._busy = threading.Lock()

    def _take_pools(self) -> tuple[list[SlotPool], bool]:
        """The engine's slots, kept across epochs (warm pages, no allocation); a run
        that overlaps another gets its own."""
        if self._busy.acquire(blocking=False):
            if self._pools is None:
                self._pools = self._new_pools()
            return self._pools, True
        return self._new_pools(), False

    def _new_pools(self) -> list[SlotPool]:
        return [
            SlotPool(v, n) for v, n in zip(self.layout.variables, self.slot_counts, strict=True)
        ]

    def release(self) -> None:
        """Drop the kept slots (their memory returns to the system when unused)."""
        self._pools = None

    # -- consumer side ---------------------------------------------------------------
    def run(
        self, order: EpochOrder, batches: range, *, shard: int = 0, num_shards: int = 1
    ) -> Iterator[Batch]:
        """Yield the batches ``batches`` of ``order``, assembled in the background."""
        report = EpochReport(
            epoch=order.epoch,
            shard=shard,
            num_shards=num_shards,
            memory_limit=self.budget.memory_limit,
            cache_capacity=self.budget.cache_capacity,
        )
        self.report = report
        out: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        wake: queue.SimpleQueue[Any] = queue.SimpleQueue()
        held = _Held(self.budget.batch_slots, wake)
        worker = threading.Thread(
            target=self._schedule,
            args=(order, batches, out, stop, held, wake, report),
            name="earthstream-scheduler",
            daemon=True,
        )
        t0 = time.perf_counter()
        worker.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                held.release(item.nbytes_alloc)
                batch: Batch = item.batch
                if report.batches == 0:
                    report.first_batch_s = time.perf_counter() - t0
                report.batches += 1
                report.samples += batch.size
                report.bytes_delivered += batch.nbytes
                yield batch
            report.finished = True
        finally:
            stop.set()
            wake.put(None)
            with contextlib.suppress(queue.Empty):
                while True:
                    out.get_nowait()
            worker.join(timeout=10)
            report.elapsed_s = time.perf_counter() - t0

    # -- scheduler thread ----------------------------------------------------------
    def _schedule(
        self,
        order: EpochOrder,
        batches: range,
        out: queue.Queue[Any],
        stop: threading.Event,
        held: _Held,
        wake: queue.SimpleQueue[Any],
        report: EpochReport,
    ) -> None:
        loads = ThreadPoolExecutor(self.num_threads, thread_name_prefix="earthstream-decode")
        cuts = ThreadPoolExecutor(self.num_threads, thread_name_prefix="earthstream-cut")
        pools, owned = self._take_pools()
        state = _Pass(self, pools, loads, cuts, stop, held, wake, report)
        try:
            state.run(order, batches, out)
            out.put(_DONE)
        except _Stop:
            pass
        except BaseException as exc:
            out.put(exc)
        finally:
            for future in state.inflight.values():
                future.cancel()
            loads.shutdown(wait=True, cancel_futures=True)
            cuts.shutdown(wait=True, cancel_futures=True)
            if owned:
                self._busy.release()
            report.peak_cache_bytes = state.cache.peak_bytes
            report.evictions = state.cache.evictions


def _load(
    source: ChunkedSource, name: str, index: tuple[int, ...], out: np.ndarray, fill: Any
) -> bool:
    """Decode one chunk into its slot; a chunk that is not stored becomes fill values."""
    chunk = source.read_chunk(name, index, out)
    if chunk is None:
        out[...] = fill
        return False
    if chunk is not out:  # a source that ignores ``out``
        out[tuple(slice(0, n) for n in chunk.shape)] = chunk
    return True


class _Pass:
    """Scheduler-thread state for one epoch pass."""

    def __init__(
        self,
        engine: Engine,
        pools: list[SlotPool],
        loads: ThreadPoolExecutor,
        cuts: ThreadPoolExecutor,
        stop: threading.Event,
        held: _Held,
        wake: queue.SimpleQueue[Any],
        report: EpochReport,
    ) -> None:
        self.engine = engine
        self.layout = engine.layout
        self.source = engine.source
        self.loads = loads
        self.cuts = cuts
        self.stop = stop
        self.held = held
        self.wake = wake
        self.report = report
        for pool in pools:
            pool.reset()
        self.pools = pools
        self.cache = SlotCache(self.pools)
        self.inflight: dict[int, Future[bool]] = {}
        self.index_of: dict[int, tuple[int, ...]] = {}
        self._wanted: list[tuple[float, int, int]] = []  # prefetch heap: (next use, tie, key)
        self._tie = itertools.count()
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.max_cutting = engine.num_threads + 1

    # -- accounting -------------------------------------------------------------------
    def _track_peak(self) -> None:
        total = self.cache.used_bytes + self.held.value
        if total > self.report.peak_held_bytes:
            self.report.peak_held_bytes = total

    # -- loads ----------------------------------------------------------------------
    def _start(self, key: int, until: float) -> bool:
        found = self.cache.reserve(key, until)
        if found is None:
            return False
        slot, victims = found
        for victim in victims:  # evicted but needed later: read it again in time
            self._want(victim)
        pool = self.cache.pool_of(key)
        var = pool.var
        future = self.loads.submit(
            _load, self.source, var.name, self.index_of[key], pool.slab[slot], var.fill
        )
        self.inflight[key] = future
        future.add_done_callback(functools.partial(self._notify, key))
        self._track_peak()
        return True

    def _notify(self, key: int, _: object = None) -> None:
        self._done.put(key)
        self.wake.put(None)

    def _collect(self) -> bool:
        """Move finished loads into the cache; True if any finished."""
        landed = False
        with contextlib.suppress(queue.Empty):
            while True:
                key = self._done.get_nowait()
                future = self.inflight.pop(key)
                try:
                    stored = future.result()
                except BaseException:
                    self.cache.cancel(key)
                    raise
                self.cache.fulfil(key)
                pool = self.cache.pool_of(key)
                if stored:
                    self.report.chunks_decoded += 1
                    self.report.bytes_decoded += pool.chunk_nbytes
                    self.report.decodes[(pool.var.name, self.index_of[key])] += 1
                else:
                    self.report.chunks_missing += 1
                landed = True
        return landed

    def _want(self, key: int) -> None:
        use = self.cache.next_use(key)
        if use != NEVER:
            heapq.heappush(self._wanted, (use, next(self._tie), key))

    def _prefetch(self) -> None:
        wanted, cache = self._wanted, self.cache
        while wanted and len(self.inflight) < self.engine.max_inflight:
            use, _, key = wanted[0]
            if key in cache.resident or key in self.inflight or cache.next_use(key) != use:
                heapq.heappop(wanted)
                continue
            if not self._start(key, use):
                return
            heapq.heappop(wanted)

    def _wait(self, kind: str) -> None:
        """Block until something happens (a load or cut lands, the consumer takes a batch)."""
        t0 = time.perf_counter()
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                self.wake.get(timeout=_POLL)
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
    def _plan(self, span: list[tuple[int, np.ndarray]]) -> list[BatchPlan]:
        plans = plan_span(self.layout, span)
        cache, index_of, resident, inflight = (
            self.cache,
            self.index_of,
            self.cache.resident,
            self.inflight,
        )
        for plan in plans:
            j = plan.index
            for vplan in plan.vars:
                for position, key in enumerate(vplan.keys):
                    if key not in index_of:
                        index_of[key] = tuple(vplan.index[position].tolist())
                    if cache.add_use(key, j) and key not in resident and key not in inflight:
                        self._want(key)
        return plans

    # -- the loop -----------------------------------------------------------------------
    def run(self, order: EpochOrder, batches: range, out: queue.Queue[Any]) -> None:
        if self.engine.sweep_batches:
            self._run_sweeps(order, batches, out)
            return
        source = order.iter_batches(batches)
        ahead: deque[BatchPlan] = deque()
        cutting: deque[_Cutting] = deque()
        exhausted = False
        lookahead = self.engine.lookahead
        epoch = order.epoch
        while True:
            progressed = False
            if not exhausted and len(ahead) < lookahead:
                span = list(itertools.islice(source, min(_SPAN, lookahead - len(ahead))))
                if span:
                    ahead.extend(self._plan(span))
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
                        if key not in self.inflight and not self._start(key, head.index):
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
                waiting_for_room = bool(ahead) and not cutting and not missing_any(self, ahead)
                self._wait("backpressure" if waiting_for_room else "stall")

    # -- sweeps ---------------------------------------------------------------------
    def _run_sweeps(self, order: EpochOrder, batches: range, out: queue.Queue[Any]) -> None:
        """Assemble ``sweep_batches`` batches at a time, each chunk decoded once per sweep."""
        source = order.iter_batches(batches)
        layout, pools, report = self.layout, self.pools, self.report
        size = self.engine.sweep_batches
        while True:
            span = list(itertools.islice(source, size))
            if not span:
                return
            plans = plan_span(layout, span)
            outputs = sweep_outputs(layout, plans)
            self.held.add(outputs.nbytes)
            pending = deque(sweep_targets(layout, plans))
            running: dict[int, tuple[KeyTargets, int, Future[bool]]] = {}
            in_use = 0
            while pending or running:
                while pending:
                    target = pending[0]
                    pool = pools[target.var]
                    slot = pool.take()
                    if slot is None:
                        break
                    pending.popleft()
                    var = pool.var
                    index = tuple(target.index.tolist())
                    future = self.loads.submit(
                        _load, self.source, var.name, index, pool.slab[slot], var.fill
                    )
                    future.add_done_callback(functools.partial(self._notify, target.key))
                    running[target.key] = (target, slot, future)
                    in_use += pool.chunk_nbytes
                    total = in_use + self.held.value
                    report.peak_held_bytes = max(report.peak_held_bytes, total)
                    report.peak_cache_bytes = max(report.peak_cache_bytes, in_use)
                if not self._drain_sweep(running, outputs):
                    self._wait("stall")
                    continue
                in_use = sum(pools[t.var].chunk_nbytes for t, _, _ in running.values())
            for i, plan in enumerate(plans):
                self._take_batch_slot()
                lo, hi = outputs.offsets[i], outputs.offsets[i + 1]
                arrays = _rows(layout, outputs, lo, hi)
                nbytes = self.engine.budget.batch_nbytes
                self.held.add(nbytes)
                out.put(_Delivery(self._batch(plan, arrays, order.epoch), nbytes))
            self.held.add(-outputs.nbytes)

    def _drain_sweep(
        self, running: dict[int, tuple[KeyTargets, int, Future[bool]]], outputs: SweepOutputs
    ) -> bool:
        """Scatter every finished load of a sweep and free its slot; True if any."""
        landed = False
        with contextlib.suppress(queue.Empty):
            while True:
                key = self._done.get_nowait()
                target, slot, future = running.pop(key)
                pool = self.pools[target.var]
                stored = future.result()
                scatter_sweep(pool, target, slot, outputs.data[pool.var.name])
                pool.give(slot)
                self.report.chunk_uses += target.uses
                if stored:
                    self.report.chunks_decoded += 1
                    self.report.bytes_decoded += pool.chunk_nbytes
                    self.report.decodes[(pool.var.name, tuple(target.index.tolist()))] += 1
                else:
                    self.report.chunks_missing += 1
                landed = True
        return landed

    def _take_batch_slot(self) -> None:
        if self.held.slots.acquire(blocking=False):
            return
        t0 = time.perf_counter()
        while not self.held.slots.acquire(timeout=_POLL):
            if self.stop.is_set():
                raise _Stop
        self.report.backpressure_s += time.perf_counter() - t0

    # -- assembling -----------------------------------------------------------------
    def _tight(self, plan: BatchPlan) -> bool:
        """Whether the batch needs more chunks of a variable than that variable has slots."""
        return any(
            len(v.keys) > pool.n_slots for v, pool in zip(plan.vars, self.pools, strict=True)
        )

    def _cut(self, plan: BatchPlan) -> _Cutting:
        slots = [self.cache.checkout(vplan.keys) for vplan in plan.vars]
        nbytes = self.engine.budget.batch_nbytes
        self.held.add(nbytes)
        self._track_peak()
        future = self.cuts.submit(cut_batch, self.layout, self.pools, plan, slots)
        future.add_done_callback(lambda _: self.wake.put(None))
        self.report.chunk_uses += sum(len(v.keys) for v in plan.vars)
        return _Cutting(plan, future, nbytes)

    def _deliver(self, job: _Cutting, epoch: int) -> _Delivery:
        arrays = job.future.result()
        self.cache.checkin(job.plan.keys)
        return _Delivery(self._batch(job.plan, arrays, epoch), job.nbytes)

    def _assemble_tight(self, plan: BatchPlan, epoch: int) -> _Delivery:
        """Memory too tight to hold a batch's chunks together: fill it chunk by chunk."""
        t0 = time.perf_counter()
        while not self.held.slots.acquire(timeout=_POLL):
            if self.stop.is_set():
                raise _Stop
            self._collect()
        self.report.backpressure_s += time.perf_counter() - t0
        arrays = allocate(self.layout, len(plan.ids), prefill=plan.padded)
        nbytes = self.engine.budget.batch_nbytes
        self.held.add(nbytes)
        cache = self.cache
        pending = [
            (vplan, pool, position, key)
            for vplan, pool in zip(plan.vars, self.pools, strict=True)
            for position, key in enumerate(vplan.keys)
        ]
        while pending:
            waiting = []
            for vplan, pool, position, key in pending:
                if key in cache.resident:  # fill from it, then let it go
                    out = arrays.data[pool.var.name]
                    scatter_key(pool, vplan, position, cache.chunk(key), out)
                    cache.consume(key)
                    self.report.chunk_uses += 1
                else:
                    waiting.append((vplan, pool, position, key))
            pending = waiting
            for _, _, _, key in pending:
                if key not in self.inflight and not self._start(key, plan.index):
                    break
            if pending:
                if not self.inflight:
                    raise RuntimeError(  # pragma: no cover - prevented by plan_budget
                        "earthstream engine cannot make progress: no slot for a chunk"
                    )
                self._wait("stall")
                self._collect()
        self._track_peak()
        return _Delivery(self._batch(plan, arrays, epoch), nbytes)

    def _batch(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> Batch:
        layout = self.layout
        grid = layout.grid
        starts = {dim: plan.starts[:, a] for a, dim in enumerate(grid.dims)}
        coords = {}
        for dim, values in self.engine.coords.items():
            if dim in starts and len(values) == grid.axis(dim).size:
                coords[dim] = values[starts[dim]]
        mask = validity_mask(layout, plan.starts) if grid.edges == "pad" else None
        return Batch(
            data=arrays.data,
            dims={v.name: v.sample_dims for v in layout.variables},
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


#: Slots per variable in a sweep: enough to overlap decodes, little memory.
SWEEP_SLOTS = 2


def sweep_size(layout: StreamLayout, budget: Budget, batch_size: int) -> int:
    """Batches per sweep for a fully shuffled stream, or 0 when batches fit the slots.

    A batch of uniformly drawn windows touches about ``n (1 - (1 - 1/n)^B)`` of a
    variable's ``n`` chunks.  When that nears the number of slots, batches would
    fight over slots; sweeps give the cache to batch outputs instead.
    """
    block = max(1, layout.block_nbytes())
    n_slots = budget.cache_capacity // block
    expected = 0.0
    for var in layout.variables:
        n = float(np.prod(var.chunk_grid, dtype=np.float64))
        expected = max(expected, n * (1 - (1 - 1 / n) ** batch_size) if n else 0.0)
    if expected <= 0.5 * n_slots:
        return 0
    room = budget.cache_capacity - SWEEP_SLOTS * block
    size = room // max(1, budget.batch_nbytes)
    return int(size) if size >= 2 else 0


def _rows(layout: StreamLayout, outputs: SweepOutputs, lo: int, hi: int) -> BatchArrays:
    """A batch's own copy of its rows of a sweep's outputs."""
    if outputs.stacked is not None:
        stacked = outputs.stacked[lo:hi].copy()
        data = {v.name: _stacked_view(stacked, v, layout) for v in layout.variables}
        return BatchArrays(data, stacked, stacked.nbytes)
    data = {name: array[lo:hi].copy() for name, array in outputs.data.items()}
    return BatchArrays(data, None, sum(a.nbytes for a in data.values()))


def missing_any(state: _Pass, ahead: deque[BatchPlan]) -> bool:
    """Whether the next batch still waits for chunks."""
    return any(k not in state.cache.resident for k in ahead[0].keys)
