"""The streaming engine: background loads, slot cache, parallel batch cutting, prefetch.

One scheduler thread walks the batches of an epoch in order.  It asks the
stream kind's planner for a bounded number of batches ahead (which chunks each
needs, vectorized), so it knows when every chunk is needed next.  It starts
loads (see ``_loader``) straight into cache slots, from whichever input each
variable reads; when all chunks of the next batch are resident it pins them
and hands the batch to the kind's assembler on a cut pool (GIL released).
Batches are delivered in order through a queue.  Fully shuffled streams under
tight memory are assembled in sweeps instead (``_sweep``), and samples that are
whole chunks used once are decoded straight into the batch (``_direct``).

Memory: ``memory_limit`` bounds the decoded chunks (slots), the stored bytes
of loads in flight (remote inputs), and the batches being cut or waiting for
the consumer.  The split is fixed up front (see ``_budget``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._batch import Batch
from ..errors import ConfigError
from ..protocols import ChunkedSource, RequestCounts, SourceCapabilities
from ..sampling import EpochOrder
from ._alloc import HOST, Memory
from ._budget import Budget, sweep_slots
from ._buffers import BatchBuffers
from ._direct import run_direct
from ._kind import StreamKind
from ._pass import Held, Pass, PassSetup, Stop
from ._policy import ChunkPolicy, CorruptCount
from ._report import EpochReport
from ._slots import SlotPool
from ._sweep import run_sweeps

__all__ = ["Engine"]

#: Share of the chunk cache that stored (not yet decoded) bytes of remote loads may take.
_FETCH_SHARE = 0.25

_DONE = object()


class Engine:
    """Runs batches of one epoch through load, cache and assembly.

    Parameters
    ----------
    inputs
        The sources chunks come from; ``VarLayout.input`` indexes them.  Each
        one's capabilities are resolved here, once
        (:class:`~earthstream.protocols.SourceCapabilities`).
    kind
        The stream kind: its variables, planner and assembler (see
        :mod:`earthstream.engine._kind`).
    budget
        The memory split (see :func:`~earthstream.engine.plan_budget`).
    num_threads
        Threads that decode chunks (as many again cut batches).
    lookahead
        Batches planned ahead of the one being assembled.
    sweep_batches
        Assemble this many batches per sweep (fully shuffled, tight memory); 0: off.
    policy
        Missing and corrupt chunk handling.
    memory
        Where slots and batch arrays live (:class:`~earthstream.engine.Memory`;
        default: host NumPy memory).  Every array the engine allocates comes from
        it: the slot slabs and, through :attr:`buffers`, the batch arrays.
    """

    def __init__(
        self,
        inputs: Sequence[ChunkedSource],
        kind: StreamKind,
        budget: Budget,
        *,
        num_threads: int,
        lookahead: int | None = None,
        sweep_batches: int = 0,
        policy: ChunkPolicy | None = None,
        memory: Memory | None = None,
    ) -> None:
        variables = kind.variables
        if not variables:
            raise ConfigError("an engine needs at least one variable to read.")
        bad = sorted({v.input for v in variables if not 0 <= v.input < len(inputs)})
        if bad:
            raise ConfigError(
                f"variables read inputs {bad}, but the engine has {len(inputs)} inputs."
            )
        self.inputs = tuple(inputs)
        self.capabilities = tuple(SourceCapabilities.of(s) for s in self.inputs)
        self.kind = kind
        self.budget = budget
        self.policy = policy or ChunkPolicy()
        self.num_threads = max(1, int(num_threads))
        per_batch = max(1, budget.batch_nbytes)
        self.lookahead = lookahead or int(min(4096, max(8, 2 * budget.cache_capacity // per_batch)))
        block = max(1, kind.block_nbytes())
        capacity = budget.cache_capacity
        # Remote inputs: many requests in flight, each holding its stored bytes until
        # decoded; they take a share of the cache, and no more requests than fit.
        self.io_concurrency = sum(c.io_concurrency for c in self.capabilities)
        if self.io_concurrency:
            largest = max(v.chunk_nbytes for v in variables)
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
        n_slots = (
            sweep_slots(block, budget.cache_capacity)
            if self.sweep_batches
            else max(1, capacity // block)
        )
        self.slot_counts = [
            max(1, min(n_slots, int(np.prod(v.chunk_grid, dtype=np.int64)))) for v in variables
        ]
        if self.sweep_batches:
            self.max_inflight = min(self.max_inflight, n_slots * len(variables))
        # samples that are whole chunks, each used once: decoded straight into the batch
        self.direct = not self.sweep_batches and kind.direct
        if self.direct:
            self.slot_counts = [1 for _ in variables]
        self.report: EpochReport | None = None
        self.memory = memory if memory is not None else HOST
        # large batch arrays reused once the consumer lets them go (no page faults)
        self.buffers = batch_buffers(self.memory, budget)
        self._pools: list[SlotPool] | None = None
        self._busy = threading.Lock()

    @property
    def source(self) -> ChunkedSource:
        """The first input (the only one of a single-source stream)."""
        return self.inputs[0]

    def _setup(self) -> PassSetup:
        return PassSetup(
            inputs=self.inputs,
            capabilities=self.capabilities,
            kind=self.kind,
            budget=self.budget,
            policy=self.policy,
            num_threads=self.num_threads,
            lookahead=self.lookahead,
            max_inflight=self.max_inflight,
            sweep_batches=self.sweep_batches,
            buffers=self.buffers,
        )

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
            SlotPool(v, n, self.memory)
            for v, n in zip(self.kind.variables, self.slot_counts, strict=True)
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
        held = Held(self.budget.batch_slots, wake)
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
        held: Held,
        wake: queue.SimpleQueue[Any],
        report: EpochReport,
        corrupt_count: CorruptCount | None = None,
    ) -> None:
        cuts = ThreadPoolExecutor(self.num_threads, thread_name_prefix="earthstream-cut")
        pools, owned = self._take_pools()
        before = [c.counts() for c in self.capabilities]
        state = Pass(self._setup(), pools, cuts, stop, held, wake, report, corrupt_count)
        # Block shuffle and grid order visit each chunk's uses within the look-ahead,
        # so a chunk without planned uses is done for the epoch: reuse its slot first.
        state.cache.reuse_dead = order.spec.shuffle != "full"
        try:
            if self.sweep_batches:
                run_sweeps(state, order, batches, out)
            elif self.direct:
                run_direct(state, order, batches, out)
            else:
                state.run(order, batches, out)
            out.put(_DONE)
        except Stop:
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
            for caps, start in zip(self.capabilities, before, strict=True):
                end = caps.counts()
                if start is not None and end is not None:
                    _count_requests(report, start, end)


#: Batches a consumer outside the engine's process may hold besides the engine's own
#: (a DataLoader's prefetched batches, the training step's): pooled buffers of a memory
#: that crosses processes are sized for them too.
CONSUMER_BATCHES = 6


def batch_buffers(memory: Memory, budget: Budget) -> BatchBuffers:
    """The engine's pool of batch arrays in ``memory``.

    Host memory keeps one buffer per batch the engine may hold, plus one.  A
    memory whose batches are held elsewhere (``placed``: shared memory read by a
    DataLoader's main process) pools every array, up to the bytes of the
    engine's batches and those a consumer may hold besides.
    """
    if not memory.placed:
        return BatchBuffers(keep=budget.batch_slots + 1, memory=memory)
    held = (budget.batch_slots + CONSUMER_BATCHES) * max(1, budget.batch_nbytes)
    return BatchBuffers(keep=1024, memory=memory, max_nbytes=held + held // 4)


def _count_requests(report: EpochReport, before: RequestCounts, after: RequestCounts) -> None:
    """Add one input's requests during the pass to the report."""
    report.requests += after["requests"] - before["requests"]
    report.retries += after["retries"] - before["retries"]
    report.bytes_read += after["bytes"] - before["bytes"]
    report.chunks_fallback += after.get("fallback", 0) - before.get("fallback", 0)
    for kind, n in after["failures"].items():
        delta = n - before["failures"].get(kind, 0)
        if delta:
            report.failures[kind] = report.failures.get(kind, 0) + delta
