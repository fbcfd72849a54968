"""The streaming engine: background loads, slot cache, parallel batch cutting, prefetch.

One scheduler thread walks the batches of an epoch in order.  It plans a
bounded number of batches ahead (which chunks each needs, vectorized), so it
knows when every chunk is needed next.  It starts loads (see ``_loader``)
straight into cache slots; when all chunks of the next batch are resident it
pins them and hands the batch to a cut pool, where one gather per variable
copies every window out (GIL released).  Batches are delivered in order
through a queue.  Fully shuffled streams under tight memory are assembled in
sweeps instead (see ``_sweep``).

Memory: ``memory_limit`` bounds the decoded chunks (slots), the stored bytes
of loads in flight (remote stores), and the batches being cut or waiting for
the consumer.  The split is fixed up front (see ``_budget``).
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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from .._batch import Batch
from ..errors import ChunkDecodeError, ConfigError, CorruptChunksError, MissingChunkError
from ..sampling import EpochOrder
from ..sources import ChunkedSource
from ._assemble import (
    BatchArrays,
    _full,
    _stacked_view,
    allocate,
    cut_batch,
    scatter_key,
    validity_mask,
)
from ._budget import SWEEP_SLOTS, Budget
from ._buffers import BatchBuffers
from ._direct import direct_decode_ok
from ._layout import StreamLayout
from ._loader import ChunkLoader
from ._plan import BatchPlan, plan_span
from ._report import EpochReport
from ._slots import NEVER, SlotCache, SlotPool
from ._sweep import KeyTargets, SweepOutputs, scatter_sweep, sweep_outputs, sweep_targets

__all__ = ["ChunkPolicy", "Engine"]

log = logging.getLogger("earthstream")

_POLL = 0.05  # seconds between checks of the stop flag while blocked
_SPAN = 32  # batches planned per vectorized pass
#: Share of the chunk cache that stored (not yet decoded) bytes of remote loads may take.
_FETCH_SHARE = 0.25


@dataclass(frozen=True)
class ChunkPolicy:
    """What to do with chunks that are not stored, or do not decode.

    ``missing``: ``"fill"`` (Zarr's meaning: the fill value) or ``"error"``.
    ``corrupt``: ``"error"`` or ``"skip"`` (the samples that read the chunk are
    dropped, counted and logged; more than ``max_corrupt`` corrupt chunks in a
    pass stop it).
    """

    missing: str = "fill"
    corrupt: str = "error"
    max_corrupt: int = 10

    def __post_init__(self) -> None:
        if self.missing not in ("fill", "error"):
            raise ConfigError(f"missing={self.missing!r} must be 'fill' or 'error'.")
        if self.corrupt not in ("error", "skip"):
            raise ConfigError(f"corrupt={self.corrupt!r} must be 'error' or 'skip'.")
        if self.max_corrupt < 0:
            raise ConfigError(f"max_corrupt={self.max_corrupt} must be 0 or more.")


class CorruptCount(Protocol):
    """Corrupt chunks counted across processes (the DataLoader workers of one rank)."""

    def add(self, n: int) -> int:
        """Count ``n`` more; the total so far."""
        ...


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
    """Runs batches of one epoch through load, cache and assembly.

    Parameters
    ----------
    source
        Where chunks come from.
    layout
        The variables on the window grid.
    budget
        The memory split (see :func:`~earthstream.engine.plan_budget`).
    num_threads
        Threads that decode chunks (as many again cut batches).
    coords
        Coordinate values by dim, to label each sample's start.
    lookahead
        Batches planned ahead of the one being assembled.
    sweep_batches
        Assemble this many batches per sweep (fully shuffled, tight memory); 0: off.
    policy
        Missing and corrupt chunk handling.
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
        policy: ChunkPolicy | None = None,
    ) -> None:
        self.source = source
        self.layout = layout
        self.budget = budget
        self.policy = policy or ChunkPolicy()
        self.num_threads = max(1, int(num_threads))
        self.coords = {d: np.asarray(v) for d, v in (coords or {}).items()}
        per_batch = max(1, budget.batch_nbytes)
        self.lookahead = lookahead or int(min(4096, max(8, 2 * budget.cache_capacity // per_batch)))
        block = max(1, layout.block_nbytes())
        capacity = budget.cache_capacity
        # Remote stores: many requests in flight, each holding its stored bytes until
        # decoded; they take a share of the cache, and no more requests than fit.
        self.io_concurrency = int(getattr(source, "io_concurrency", 0) or 0)
        if self.io_concurrency:
            largest = max(v.chunk_nbytes for v in layout.variables)
            fetch_bytes = min(int(_FETCH_SHARE * capacity), self.io_concurrency * largest)
            fetch_bytes = max(fetch_bytes, largest)
            self.max_inflight = max(2, min(self.io_concurrency, fetch_bytes // largest))
            capacity = max(block, capacity - fetch_bytes)
        else:
            # Enough loads queued that decode threads never wait for the scheduler;
            # the memory they may take is bounded by slots, not by this.
            self.max_inflight = max(32, 8 * self.num_threads)
        # The same number of slots for every variable (a chunk group holds one chunk
        # of each), never more than a variable has chunks.  Sweeps keep a few slots
        # (to overlap loads) and give the rest of the cache to their outputs.
        self.sweep_batches = int(sweep_batches)
        n_slots = SWEEP_SLOTS if self.sweep_batches else max(1, capacity // block)
        self.slot_counts = [
            max(1, min(n_slots, int(np.prod(v.chunk_grid, dtype=np.int64))))
            for v in layout.variables
        ]
        if self.sweep_batches:
            self.max_inflight = min(self.max_inflight, SWEEP_SLOTS * len(layout.variables))
        # windows that are whole chunks, each used once: decoded straight into the batch
        self.direct = not self.sweep_batches and direct_decode_ok(layout)
        if self.direct:
            self.slot_counts = [1 for _ in layout.variables]
        self.report: EpochReport | None = None
        # large batch arrays reused once the consumer lets them go (no page faults)
        self.buffers = BatchBuffers(keep=budget.batch_slots + 1)
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
        self.buffers.clear()

    # -- consumer side ---------------------------------------------------------------
    def run(
        self,
        order: EpochOrder,
        batches: Sequence[int],
        *,
        shard: int = 0,
        num_shards: int = 1,
        corrupt_count: CorruptCount | None = None,
    ) -> Iterator[Batch]:
        """Yield the batches ``batches`` of ``order``, assembled in the background.

        ``batches`` are global batch indices in non-decreasing order (the cache
        uses them as the time of each chunk's next use): a ``range`` or a
        :class:`~earthstream.sampling.BatchRuns`.  ``corrupt_count``, shared by
        several processes, makes ``max_corrupt`` hold for all of them together.
        """
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
            args=(order, batches, out, stop, held, wake, report, corrupt_count),
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
        batches: Sequence[int],
        out: queue.Queue[Any],
        stop: threading.Event,
        held: _Held,
        wake: queue.SimpleQueue[Any],
        report: EpochReport,
        corrupt_count: CorruptCount | None = None,
    ) -> None:
        cuts = ThreadPoolExecutor(self.num_threads, thread_name_prefix="earthstream-cut")
        pools, owned = self._take_pools()
        stats = getattr(self.source, "request_stats", None)
        before = stats() if stats else None
        state = _Pass(self, pools, cuts, stop, held, wake, report, corrupt_count)
        try:
            state.run(order, batches, out)
            out.put(_DONE)
        except _Stop:
            pass
        except BaseException as exc:
            out.put(exc)
        finally:
            state.loader.shutdown()
            cuts.shutdown(wait=True, cancel_futures=True)
            if owned:
                self._busy.release()
            report.peak_cache_bytes = max(report.peak_cache_bytes, state.cache.peak_bytes)
            report.evictions = state.cache.evictions
            if stats and before is not None:
                after = stats()
                report.requests = after["requests"] - before["requests"]
                report.retries = after["retries"] - before["retries"]
                report.bytes_read = after["bytes"] - before["bytes"]
                report.chunks_fallback = after.get("fallback", 0) - before.get("fallback", 0)
                report.failures = {
                    kind: n - before["failures"].get(kind, 0)
                    for kind, n in after["failures"].items()
                    if n - before["failures"].get(kind, 0)
                }


class _Pass:
    """Scheduler-thread state for one epoch pass."""

    def __init__(
        self,
        engine: Engine,
        pools: list[SlotPool],
        cuts: ThreadPoolExecutor,
        stop: threading.Event,
        held: _Held,
        wake: queue.SimpleQueue[Any],
        report: EpochReport,
        corrupt_count: CorruptCount | None = None,
    ) -> None:
        self.engine = engine
        self.corrupt_count = corrupt_count
        self.layout = engine.layout
        self.source = engine.source
        self.policy = engine.policy
        self.cuts = cuts
        self.stop = stop
        self.held = held
        self.wake = wake
        self.report = report
        for pool in pools:
            pool.reset()
        self.pools = pools
        self.cache = SlotCache(self.pools)
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.loader = ChunkLoader(
            self.source, engine.num_threads, engine.io_concurrency, self._notify
        )
        self.slot_of: dict[int, int] = {}  # sweeps: slot of each load in flight
        self.index_of: dict[int, tuple[int, ...]] = {}
        self.bad: set[int] = set()  # corrupt chunks skipped this pass
        self._wanted: list[tuple[float, int, int]] = []  # prefetch heap: (next use, tie, key)
        self._tie = itertools.count()
        self.max_cutting = engine.num_threads + 1

    # -- accounting -------------------------------------------------------------------
    def _track_peak(self, extra: int = 0) -> None:
        total = self.cache.used_bytes + self.held.value + extra
        if total > self.report.peak_held_bytes:
            self.report.peak_held_bytes = total

    # -- loads ----------------------------------------------------------------------
    def _start(self, key: int, until: float) -> bool:
        if len(self.loader) >= self.engine.max_inflight:
            return False
        found = self.cache.reserve(key, until)
        if found is None:
            return False
        slot, victims = found
        for victim in victims:  # evicted but needed later: read it again in time
            self._want(victim)
        pool = self.cache.pool_of(key)
        var = pool.var
        self.loader.submit(key, var.name, self.index_of[key], pool.slab[slot], var.fill)
        self._track_peak()
        return True

    def _notify(self, key: int) -> None:
        self._done.put(key)
        self.wake.put(None)

    def _outcome(self, key: int, future: Future[bool], pool: SlotPool) -> None:
        """Apply the chunk policy to a finished load; raise to stop the pass."""
        index = self.index_of[key]
        try:
            stored = future.result()
        except ChunkDecodeError as exc:
            if self.policy.corrupt != "skip":
                raise
            where = self._where(pool.var.name, index)
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
            self.report.bytes_decoded += pool.chunk_nbytes
            self.report.decodes[(pool.var.name, index)] += 1
            return
        self.report.chunks_missing += 1
        if self.policy.missing == "error":
            raise MissingChunkError(
                f"chunk {self._where(pool.var.name, index)} of variable {pool.var.name!r} is "
                "not stored. Pass missing='fill' to read it as the fill value, as Zarr does."
            )

    def _where(self, name: str, index: tuple[int, ...]) -> str:
        locate = getattr(self.source, "chunk_location", None)
        return str(locate(name, index)) if locate else f"{name}{index}"

    def _collect(self) -> bool:
        """Move finished loads into the cache; True if any finished."""
        landed = False
        with contextlib.suppress(queue.Empty):
            while True:
                key = self._done.get_nowait()
                future = self.loader.pop(key)
                pool = self.cache.pool_of(key)
                try:
                    self._outcome(key, future, pool)
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
        while wanted and len(loader) < self.engine.max_inflight:
            use, _, key = wanted[0]
            if key in cache.resident or key in loader or cache.next_use(key) != use:
                heapq.heappop(wanted)
                continue
            if not self._start(key, use):
                break
            heapq.heappop(wanted)
        loader.flush()

    def _wait(self, kind: str) -> None:
        """Block until something happens (a load or cut lands, the consumer takes a batch)."""
        self.loader.flush()
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

    # -- the loop -----------------------------------------------------------------------
    def run(self, order: EpochOrder, batches: Sequence[int], out: queue.Queue[Any]) -> None:
        # Block shuffle and grid order visit each chunk's uses within the look-ahead,
        # so a chunk without planned uses is done for the epoch: reuse its slot first.
        self.cache.reuse_dead = getattr(getattr(order, "spec", None), "shuffle", "") != "full"
        if self.engine.sweep_batches:
            self._run_sweeps(order, batches, out)
            return
        if self.engine.direct:
            self._run_direct(order, batches, out)
            return
        source = order.iter_batches(batches)
        ahead: deque[BatchPlan] = deque()
        cutting: deque[_Cutting] = deque()
        exhausted = False
        lookahead = self.engine.lookahead
        epoch = order.epoch
        while True:
            progressed = False
            # plan in whole spans (a pass costs about the same for 1 batch as for 32)
            room = lookahead - len(ahead)
            if not exhausted and (not ahead or room >= min(_SPAN, max(1, lookahead // 2))):
                span = list(itertools.islice(source, min(_SPAN, room)))
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
                self._wait("backpressure" if waiting_for_room else "stall")

    # -- assembling -----------------------------------------------------------------
    def _tight(self, plan: BatchPlan) -> bool:
        """Whether the batch needs more chunks of a variable than that variable has slots."""
        if plan.tight is None:
            plan.tight = any(
                len(v.keys) > pool.n_slots for v, pool in zip(plan.vars, self.pools, strict=True)
            )
        return plan.tight

    def _cut(self, plan: BatchPlan) -> _Cutting:
        slots = [self.cache.checkout(vplan.keys) for vplan in plan.vars]
        nbytes = self.engine.budget.batch_nbytes
        self.held.add(nbytes)
        self._track_peak()
        buffers = self.engine.buffers
        future = self.cuts.submit(cut_batch, self.layout, self.pools, plan, slots, buffers)
        future.add_done_callback(lambda _: self.wake.put(None))
        self.report.chunk_uses += sum(len(v.keys) for v in plan.vars)
        return _Cutting(plan, future, nbytes)

    def _deliver(self, job: _Cutting, epoch: int) -> _Delivery:
        arrays = job.future.result()
        self.cache.checkin(job.plan.keys)
        return _Delivery(self._batch(job.plan, arrays, epoch), job.nbytes)

    def _take_batch_slot(self) -> None:
        if self.held.slots.acquire(blocking=False):
            return
        t0 = time.perf_counter()
        while not self.held.slots.acquire(timeout=_POLL):
            if self.stop.is_set():
                raise _Stop
            self._collect()
        self.report.backpressure_s += time.perf_counter() - t0

    def _assemble_tight(self, plan: BatchPlan, epoch: int) -> _Delivery:
        """Memory too tight to hold a batch's chunks together: fill it chunk by chunk."""
        self._take_batch_slot()
        arrays = allocate(self.layout, len(plan.ids), plan.padded, self.engine.buffers)
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
                if key not in self.loader and not self._start(key, plan.index):
                    break
            if pending:
                if not len(self.loader):
                    raise RuntimeError(  # pragma: no cover - prevented by plan_budget
                        "earthstream engine cannot make progress: no slot for a chunk"
                    )
                self._wait("stall")
                self._collect()
        self._track_peak()
        return _Delivery(self._batch(plan, arrays, epoch), nbytes)

    # -- whole chunks decoded into the batch ---------------------------------------
    def _run_direct(self, order: EpochOrder, batches: Sequence[int], out: queue.Queue[Any]) -> None:
        """Every window is one chunk of each variable, no chunk in two windows: allocate
        the next batches and decode each chunk into its place (see ``_direct``)."""
        source = order.iter_batches(batches)
        layout, engine, report = self.layout, self.engine, self.report
        plans: deque[BatchPlan] = deque()
        filling: deque[tuple[BatchPlan, BatchArrays, set[int], int]] = deque()
        owner: dict[int, tuple[set[int], int, int]] = {}  # load id -> (batch's loads, key, var)
        ids = itertools.count()
        exhausted = False
        while True:
            progressed = False
            if not exhausted and len(plans) < _SPAN:
                span = list(itertools.islice(source, _SPAN))
                if span:
                    plans.extend(plan_span(layout, span))
                else:
                    exhausted = True
            while (
                plans
                and len(filling) < engine.budget.batch_slots
                and len(self.loader) < engine.max_inflight
                and self.held.slots.acquire(blocking=False)
            ):
                plan = plans.popleft()
                arrays = allocate(layout, len(plan.ids), False, engine.buffers)
                nbytes = engine.budget.batch_nbytes
                self.held.add(nbytes)
                loads: set[int] = set()
                for vi, (var, vplan) in enumerate(zip(layout.variables, plan.vars, strict=True)):
                    if not vplan.all_inside or vplan.local.any():  # pragma: no cover
                        raise RuntimeError("earthstream: a window is not one whole chunk")
                    full = _full(arrays.data[var.name], var)
                    index_rows = vplan.index.tolist()
                    for row, position in enumerate(vplan.which.tolist()):
                        key = vplan.keys[position]
                        self.index_of[key] = tuple(index_rows[position])
                        load = next(ids)
                        owner[load] = (loads, key, vi)
                        loads.add(load)
                        self.loader.submit(load, var.name, self.index_of[key], full[row], var.fill)
                    report.chunk_uses += len(vplan.keys)
                self.loader.flush()
                filling.append((plan, arrays, loads, nbytes))
                self._track_peak()
                progressed = True
            with contextlib.suppress(queue.Empty):
                while True:
                    load = self._done.get_nowait()
                    loads, key, vi = owner.pop(load)
                    self._outcome(key, self.loader.pop(load), self.pools[vi])
                    loads.discard(load)
                    progressed = True
            while filling and not filling[0][2]:
                plan, arrays, _, nbytes = filling.popleft()
                out.put(_Delivery(self._batch(plan, arrays, order.epoch), nbytes))
                progressed = True
            if exhausted and not plans and not filling:
                return
            if not progressed:
                self._wait("stall")

    # -- sweeps ---------------------------------------------------------------------
    def _run_sweeps(self, order: EpochOrder, batches: Sequence[int], out: queue.Queue[Any]) -> None:
        """Assemble ``sweep_batches`` batches at a time, each chunk loaded once per sweep."""
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
            running: dict[int, KeyTargets] = {}
            while pending or running:
                while pending and len(self.loader) < self.engine.max_inflight:
                    target = pending[0]
                    pool = pools[target.var]
                    slot = pool.take()
                    if slot is None:
                        break
                    pending.popleft()
                    index = tuple(target.index.tolist())
                    self.index_of[target.key] = index
                    self.slot_of[target.key] = slot
                    self.loader.submit(
                        target.key, pool.var.name, index, pool.slab[slot], pool.var.fill
                    )
                    running[target.key] = target
                in_use = sum(pools[t.var].chunk_nbytes for t in running.values())
                report.peak_cache_bytes = max(report.peak_cache_bytes, in_use)
                self._track_peak(in_use)
                self.loader.flush()
                if not self._drain_sweep(running, outputs):
                    self._wait("stall")
            for i, plan in enumerate(plans):
                self._take_batch_slot()
                lo, hi = outputs.offsets[i], outputs.offsets[i + 1]
                arrays = _rows(layout, outputs, lo, hi)
                nbytes = self.engine.budget.batch_nbytes
                self.held.add(nbytes)
                out.put(_Delivery(self._batch(plan, arrays, order.epoch), nbytes))
            self.held.add(-outputs.nbytes)

    def _drain_sweep(self, running: dict[int, KeyTargets], outputs: SweepOutputs) -> bool:
        """Scatter every finished load of a sweep and free its slot; True if any."""
        landed = False
        with contextlib.suppress(queue.Empty):
            while True:
                key = self._done.get_nowait()
                target = running.pop(key)
                pool = self.pools[target.var]
                slot = self.slot_of.pop(key)
                try:
                    self._outcome(key, self.loader.pop(key), pool)
                    if key not in self.bad:
                        scatter_sweep(pool, target, slot, outputs.data[pool.var.name])
                finally:
                    pool.give(slot)
                self.report.chunk_uses += target.uses
                landed = True
        return landed

    # -- batches ----------------------------------------------------------------------
    def _batch(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> Batch:
        if self.bad and any(key in self.bad for key in plan.keys):
            plan, arrays = self._drop_corrupt(plan, arrays)
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
        dropped = int((~keep).sum())
        self.report.samples_dropped += dropped
        rows = np.flatnonzero(keep)
        if arrays.stacked is not None:
            stacked = arrays.stacked[rows]
            data = {v.name: _stacked_view(stacked, v, self.layout) for v in self.layout.variables}
            arrays = BatchArrays(data, stacked, stacked.nbytes)
        else:
            data = {name: a[rows] for name, a in arrays.data.items()}
            arrays = BatchArrays(data, None, sum(a.nbytes for a in data.values()))
        return replace(plan, ids=plan.ids[rows], starts=plan.starts[rows], keys=plan.keys), arrays


def _rows(layout: StreamLayout, outputs: SweepOutputs, lo: int, hi: int) -> BatchArrays:
    """A batch's own copy of its rows of a sweep's outputs."""
    if outputs.stacked is not None:
        stacked = outputs.stacked[lo:hi].copy()
        data = {v.name: _stacked_view(stacked, v, layout) for v in layout.variables}
        return BatchArrays(data, stacked, stacked.nbytes)
    data = {name: array[lo:hi].copy() for name, array in outputs.data.items()}
    return BatchArrays(data, None, sum(a.nbytes for a in data.values()))
