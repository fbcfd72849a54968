"""The streaming engine: background decode, bounded cache, batch assembly, prefetch.

One scheduler thread walks the batches of an epoch in order.  It looks ahead a
bounded number of batches, so it knows which chunks are needed when; it starts
reads and decodes of those chunks on a thread pool (decoders release the GIL),
keeps decoded chunks in a cache bounded in bytes that evicts by next use, cuts
each batch's windows out of the resident chunks into fresh contiguous arrays,
and puts finished batches on a bounded queue the consumer reads from.

Memory: ``memory_limit`` bounds the decoded chunks (resident and in flight)
plus the batches queued or being assembled.  The split is fixed up front:
``(prefetch + 1)`` batches, the rest for the cache.
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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._batch import Batch
from .._units import format_bytes
from ..errors import MemoryBudgetError
from ..sampling import EpochOrder
from ..sources import ChunkedSource
from ._assemble import VarNeeds, allocate, batch_needs, validity_mask
from ._cache import NEVER, ChunkCache
from ._layout import StreamLayout

__all__ = ["Budget", "Engine", "EpochReport", "plan_budget"]

_POLL = 0.05  # seconds between checks of the stop flag while blocked


@dataclass(frozen=True)
class Budget:
    """How ``memory_limit`` is split between queued batches and the chunk cache."""

    memory_limit: int
    batch_nbytes: int
    prefetch: int
    cache_capacity: int


def plan_budget(layout: StreamLayout, batch_size: int, memory_limit: int, prefetch: int) -> Budget:
    """Split the budget, or refuse one too small for a batch and a chunk."""
    batch_nbytes = layout.batch_nbytes(batch_size)
    queued = (prefetch + 1) * batch_nbytes
    chunk = layout.max_chunk_nbytes
    if memory_limit < queued + chunk:
        raise MemoryBudgetError(
            f"memory_limit={format_bytes(memory_limit)} is too small: {prefetch + 1} batches "
            f"(prefetch={prefetch} queued + 1 being assembled) of {format_bytes(batch_nbytes)} "
            f"each need {format_bytes(queued)}, and one decoded chunk needs "
            f"{format_bytes(chunk)}. Raise memory_limit to at least "
            f"{format_bytes(queued + chunk)}, or lower batch_size or prefetch."
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

    def __init__(self, slots: int) -> None:
        self._lock = threading.Lock()
        self.slots = threading.Semaphore(slots)
        self.value = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.value += nbytes

    def release(self, nbytes: int) -> None:
        self.add(-nbytes)
        self.slots.release()


@dataclass
class _Task:
    index: int
    ids: np.ndarray
    starts: np.ndarray
    needs: list[VarNeeds]
    nbytes: int  # decoded bytes of all the chunks it needs


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
        Threads that read and decode chunks.
    coords
        Coordinate values by dim, to label each sample's start.
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
    ) -> None:
        self.source = source
        self.layout = layout
        self.budget = budget
        self.num_threads = max(1, int(num_threads))
        self.coords = {d: np.asarray(v) for d, v in (coords or {}).items()}
        # Look ahead far enough to see about two cache-fulls of windows.
        per_batch = max(1, budget.batch_nbytes)
        self.lookahead = lookahead or int(min(4096, max(8, 2 * budget.cache_capacity // per_batch)))
        # Enough loads queued that decode threads never wait for the scheduler;
        # the memory they may take is bounded by cache reservations, not by this.
        self.max_inflight = max(32, 8 * self.num_threads)
        self.report: EpochReport | None = None

    # -- consumer side ---------------------------------------------------------------
    def run(
        self, order: EpochOrder, batches: Sequence[int], *, shard: int = 0, num_shards: int = 1
    ) -> Iterator[Batch]:
        """Yield the batches ``batches`` of ``order``, assembled in the background.

        ``batches`` are global batch indices in non-decreasing order (the cache
        uses them as the time of each chunk's next use): a ``range`` or a
        :class:`~earthstream.sampling.BatchRuns`.
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
        # One slot per batch that may exist at once on our side (queued or being
        # assembled): the scheduler takes a slot before allocating a batch, the
        # consumer returns it when it takes the batch over.
        held = _Held(self.budget.prefetch + 1)
        worker = threading.Thread(
            target=self._schedule,
            args=(order, batches, out, stop, held, report),
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
        report: EpochReport,
    ) -> None:
        pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="earthstream-decode")
        state = _SchedulerState(self, pool, stop, held, report)
        try:
            for item in state.batches(order, batches):
                state.put(out, item)
            state.put(out, _DONE)
        except _Stop:
            pass
        except BaseException as exc:
            with contextlib.suppress(_Stop):
                state.put(out, exc)
        finally:
            for future in state.inflight.values():
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            report.peak_cache_bytes = state.cache.peak
            report.evictions = state.cache.evictions


@dataclass
class _Delivery:
    batch: Batch
    nbytes_alloc: int


def _notify(done: queue.SimpleQueue[int], key: int, _: Future[Any]) -> None:
    done.put(key)


def _load(source: ChunkedSource, name: str, index: tuple[int, ...]) -> np.ndarray | None:
    return source.read_chunk(name, index)


class _SchedulerState:
    """Scheduler-thread state for one epoch pass."""

    def __init__(
        self,
        engine: Engine,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
        held: _Held,
        report: EpochReport,
    ) -> None:
        self.engine = engine
        self.layout = engine.layout
        self.pool = pool
        self.stop = stop
        self.held = held
        self.report = report
        self.cache: ChunkCache[int] = ChunkCache(engine.budget.cache_capacity)
        self.inflight: dict[int, Future[np.ndarray | None]] = {}
        self.index_of: dict[int, tuple[int, tuple[int, ...]]] = {}  # key -> (var, chunk index)
        self._wanted: list[tuple[float, int, int]] = []  # prefetch heap: (next use, tie, key)
        self._tie = itertools.count()
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.pad = self.layout.grid.edges == "pad"
        self._sizes = np.array([a.size for a in self.layout.grid.axes], dtype=np.int64)

    # -- memory accounting -------------------------------------------------------
    def _track_peak(self) -> None:
        total = self.cache.used + self.held.value
        if total > self.report.peak_held_bytes:
            self.report.peak_held_bytes = total

    # -- loads ---------------------------------------------------------------------
    def _start(self, key: int, until: float) -> bool:
        vi, index = self.index_of[key]
        var = self.layout.variables[vi]
        victims = self.cache.reserve(key, var.chunk_nbytes, until)
        if victims is None:
            return False
        for victim in victims:  # evicted but needed later: read it again in time
            self._want(victim)
        future = self.pool.submit(_load, self.engine.source, var.name, index)
        self.inflight[key] = future
        future.add_done_callback(functools.partial(_notify, self._done, key))
        self._track_peak()
        return True

    def _finished(self, block: bool) -> list[int]:
        done = []
        if block:
            t0 = time.perf_counter()
            while True:
                if self.stop.is_set():
                    raise _Stop
                try:
                    done.append(self._done.get(timeout=_POLL))
                    break
                except queue.Empty:
                    continue
            self.report.stall_s += time.perf_counter() - t0
        with contextlib.suppress(queue.Empty):
            while True:
                done.append(self._done.get_nowait())
        return done

    def _collect(self, block: bool) -> None:
        """Move finished loads into the cache (waiting for one if ``block``)."""
        if not self.inflight:
            return
        for key in self._finished(block):
            future = self.inflight.pop(key)
            try:
                chunk = future.result()
            except BaseException:
                self.cache.cancel(key)
                raise
            vi, index = self.index_of[key]
            if chunk is None:
                self.report.chunks_missing += 1
                self.cache.fulfil(key, None, 0)
            else:
                self.report.chunks_decoded += 1
                self.report.bytes_decoded += chunk.nbytes
                self.report.decodes[(self.layout.variables[vi].name, index)] += 1
                self.cache.fulfil(key, chunk, chunk.nbytes)
            self._track_peak()

    def _prefetch(self) -> None:
        wanted = self._wanted
        while wanted and len(self.inflight) < self.engine.max_inflight:
            use, _, key = wanted[0]
            if key in self.cache or key in self.inflight or self.cache.next_use(key) != use:
                heapq.heappop(wanted)
                continue
            if not self._start(key, use):
                return
            heapq.heappop(wanted)

    def _want(self, key: int) -> None:
        use = self.cache.next_use(key)
        if use != NEVER:
            heapq.heappush(self._wanted, (use, next(self._tie), key))

    # -- batches ------------------------------------------------------------------
    def _task(self, index: int, ids: np.ndarray) -> _Task:
        starts = self.layout.grid.starts_of(ids)
        needs = batch_needs(self.layout, starts)
        cache = self.cache
        nbytes = 0
        for vn in needs:
            nbytes += len(vn.keys) * self.layout.variables[vn.var].chunk_nbytes
            for key, chunk_index in zip(vn.keys, vn.index, strict=True):
                if key not in self.index_of:
                    self.index_of[key] = (vn.var, chunk_index)
                idle = cache.next_use(key) == NEVER
                cache.add_use(key, index)
                if idle and key not in cache and key not in self.inflight:
                    self._want(key)
        return _Task(index, ids, starts, needs, nbytes)

    def batches(self, order: EpochOrder, batches: Sequence[int]) -> Iterator[Any]:
        source = order.iter_batches(batches)
        ahead: deque[_Task] = deque()
        exhausted = False
        while True:
            # Grow the look-ahead a few batches per step, so the first batch is not
            # held up by planning far ahead.
            room = min(self.engine.lookahead - len(ahead), 32)
            for _ in range(room if not exhausted else 0):
                try:
                    index, ids = next(source)
                except StopIteration:
                    exhausted = True
                    break
                ahead.append(self._task(index, ids))
                if len(ahead) == 1:
                    self._prefetch()  # start reading as soon as the first batch is known
            if not ahead:
                return
            task = ahead.popleft()
            yield self._assemble(task, order.epoch)

    def _ensure(self, keys: list[int], until: int) -> None:
        """Start loads of the not-yet-requested ``keys`` while there is room."""
        for key in keys:
            if key in self.cache or key in self.inflight:
                continue
            if not self._start(key, until):
                return  # no room yet: wait for loads in flight to land

    def _wait(self) -> None:
        self._prefetch()
        if not self.inflight:
            raise RuntimeError(  # pragma: no cover - prevented by plan_budget
                "earthstream engine cannot make progress: the cache cannot hold one chunk"
            )
        self._collect(block=True)

    def _assemble(self, task: _Task, epoch: int) -> _Delivery:
        layout = self.layout
        cache = self.cache
        pad = self.pad and bool(((task.starts + layout.grid.lengths) > self._sizes).any())
        self._take_slot()
        arrays = allocate(layout, len(task.ids), prefill=pad)
        self.held.add(arrays.nbytes)
        self._track_peak()
        keys = [key for vn in task.needs for key in vn.keys]
        if task.nbytes <= cache.capacity:
            # Usual case: bring every chunk of the batch in, then cut in one pass.
            self._collect(block=False)
            missing = [key for key in keys if key not in cache]
            while missing:
                self._ensure(missing, task.index)
                self._wait()
                missing = [key for key in missing if key not in cache]
            for vn in task.needs:
                var, dest = layout.variables[vn.var], arrays.dest[vn.var]
                chunks = [cache.get(key) for key in vn.keys]
                if vn.inside and not any(c is None for c in chunks):
                    vn.cut(dest, chunks, var)
                else:
                    for position, chunk in enumerate(chunks):
                        vn.scatter_key(position, chunk, dest, var)
            for key in keys:
                cache.consume(key)
        else:
            # Tight memory: fill from each chunk as it arrives, then let it go.
            pending = [(vn, p) for vn in task.needs for p in range(len(vn.keys))]
            while pending:
                waiting = []
                for vn, p in pending:
                    key = vn.keys[p]
                    if key in cache:
                        var = layout.variables[vn.var]
                        vn.scatter_key(p, cache.get(key), arrays.dest[vn.var], var)
                        cache.consume(key)
                    else:
                        waiting.append((vn, p))
                pending = waiting
                self._collect(block=False)
                if not pending or any(vn.keys[p] in cache for vn, p in pending):
                    continue
                self._ensure([vn.keys[p] for vn, p in pending], task.index)
                if not any(vn.keys[p] in cache for vn, p in pending):
                    self._wait()
        self.report.chunk_uses += len(keys)
        self._prefetch()
        return _Delivery(self._batch(task, arrays, epoch), arrays.nbytes)

    def _batch(self, task: _Task, arrays: Any, epoch: int) -> Batch:
        layout = self.layout
        grid = layout.grid
        starts = {dim: task.starts[:, a] for a, dim in enumerate(grid.dims)}
        coords = {}
        for dim, values in self.engine.coords.items():
            if dim in starts and len(values) == grid.axis(dim).size:
                coords[dim] = values[starts[dim]]
        if layout.stack:
            data = {v.name: d for v, d in zip(layout.variables, arrays.dest, strict=True)}
        else:
            data = arrays.own
        mask = validity_mask(layout, task.starts) if grid.edges == "pad" else None
        return Batch(
            data=data,
            dims={v.name: v.sample_dims for v in layout.variables},
            starts=starts,
            coords=coords,
            window_ids=task.ids,
            epoch=epoch,
            index=task.index,
            mask=mask,
            mask_dims=layout.mask_dims if mask is not None else (),
            stacked=arrays.stacked,
            channels=layout.channels,
        )

    def _take_slot(self) -> None:
        """Wait for room for one more batch, decoding ahead meanwhile."""
        if self.held.slots.acquire(blocking=False):
            return
        t0 = time.perf_counter()
        while not self.held.slots.acquire(timeout=_POLL / 5):
            if self.stop.is_set():
                raise _Stop
            self._collect(block=False)
            self._prefetch()
        self.report.backpressure_s += time.perf_counter() - t0

    def put(self, out: queue.Queue[Any], item: Any) -> None:
        if self.stop.is_set():
            raise _Stop
        out.put(item)
