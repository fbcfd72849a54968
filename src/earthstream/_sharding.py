"""Ranks, DataLoader workers, padding and mid-epoch resume, shared by every stream.

A stream whose epoch is one sequence of global batches (an
:class:`~earthstream.sampling.OrderSpec`) inherits :class:`ShardedStream`: it
then serves its rank's share of each epoch, split over DataLoader workers,
with equal batch counts on every rank, and can save and restore its place in
the epoch.  The planning itself is pure (``sampling/_plan.py`` and
``sampling/_resume.py``); this class keeps the per-process state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._batch import Batch
from ._validate import check_choice, check_whole
from .errors import ConfigError, ResumeError
from .sampling import (
    REMAINDERS,
    Cursor,
    EpochPlan,
    OrderSpec,
    Remainder,
    cursor_from_state,
    round_robin_index,
    shard_range,
)

if TYPE_CHECKING:
    from .delivery._jax import JaxStream
    from .delivery._torch import TorchStream
    from .engine import CorruptCount, Memory

__all__ = ["ShardedStream", "detect_placement", "framework_placement"]

#: Most DataLoader workers per rank (a plan is built per worker).
MAX_WORKERS = 4096
#: Largest epoch number (kept in resume states as a JSON integer).
MAX_EPOCH = 2**62


def framework_placement() -> tuple[int, int] | None:
    """``(rank, world_size)`` of an initialized ``torch.distributed`` group, else of a
    multi-process JAX job (``jax.distributed.initialize``: ``jax.process_index()`` of
    ``jax.process_count()``), else None.

    Looks only at frameworks already imported: earthstream never imports torch or jax.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    jax = sys.modules.get("jax")
    if jax is not None:
        initialized = getattr(getattr(jax, "distributed", None), "is_initialized", None)
        if initialized is not None and initialized():
            return int(jax.process_index()), int(jax.process_count())
    return None


def detect_placement() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialized ``torch.distributed`` group or multi-process
    JAX job (see :func:`framework_placement`), else ``(0, 1)``."""
    return framework_placement() or (0, 1)


class ShardedStream:
    """Distribution and resume for streams (mixin).

    Subclasses set ``order`` and ``num_threads``, call :meth:`_init_sharding`
    in their constructor, and implement :meth:`_run` (assemble the given global
    batches, in order) and :meth:`_identity` (what the fingerprint covers).
    """

    order: OrderSpec
    num_threads: int
    _report: Any = None
    #: Where this process's engine places slots and batch arrays (None: host memory).
    #: The framework adapters set it: pinned memory for CUDA, shared memory in
    #: DataLoader workers (see :class:`~earthstream.engine.Memory`).
    _memory: Memory | None = None

    @property
    def memory(self) -> Memory | None:
        """Where this process's engine places slots and batch arrays (None: host memory)."""
        return self._memory

    def _use_memory(self, memory: Memory | None) -> None:
        """Place this process's slots and batches in ``memory`` from the next iteration on
        (a stream kind's engine takes it from :attr:`memory`)."""
        self._memory = memory

    @property
    def report(self) -> Any:
        """What the last (or current) pass did (the subclass's report type)."""
        return self._report

    def _init_sharding(
        self, rank: int | None, world_size: int | None, remainder: Remainder
    ) -> None:
        remainder = check_choice(
            remainder,
            "remainder",
            REMAINDERS,
            meaning="'pad' repeats a batch on ranks with one batch less, flagged in "
            "batch.padded; 'drop' leaves the extra batches out of the epoch",
        )
        if (rank is None) != (world_size is None):
            raise ConfigError(
                f"rank={rank!r} and world_size={world_size!r}: give both, or neither to take "
                "them from torch.distributed."
            )
        if world_size is not None and rank is not None:
            if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
                raise ConfigError(f"world_size={world_size!r} must be a whole number >= 1.")
            if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
                raise ConfigError(f"rank={rank!r} must be a whole number in 0..{world_size - 1}.")
        self.remainder = remainder
        self._placement: tuple[int, int] | None = (
            None if rank is None or world_size is None else (rank, world_size)
        )
        self._epoch = 0
        #: An iteration of ``_epoch`` has started: the next one moves to the next epoch
        #: (unless ``set_epoch`` or ``load_state_dict`` say otherwise).
        self._advance = False
        self._pending: Cursor | None = None  # a loaded state, not yet started
        self._live: Cursor | None = None  # the current (or last) iteration's progress
        self._fingerprint: str | None = None
        #: Corrupt chunks counted with the other DataLoader workers (set by DeviceLoader).
        self._corrupt_count: CorruptCount | None = None

    def _merge_reports(self, reports: Sequence[Any]) -> None:
        """The main process of DataLoader workers: its report is the sum of theirs."""
        self._report = type(reports[0]).merge(reports, shard=self.rank, num_shards=self.world_size)

    def _identity(self) -> tuple[dict[str, Any], Mapping[str, np.ndarray]]:
        """A JSON-able description and named arrays the order depends on."""
        raise NotImplementedError

    def _run(
        self, batches: Sequence[int], shard: int, num_shards: int, num_threads: int | None
    ) -> Iterator[Batch]:
        """Assemble the global batches ``batches`` (non-decreasing) of the current epoch."""
        raise NotImplementedError

    def to_torch(
        self,
        device: str | Any = "cpu",
        *,
        non_blocking: bool = True,
        pin_memory: bool | None = None,
        normalize: Any = None,
    ) -> TorchStream:
        """A ``torch.utils.data.IterableDataset`` yielding batches as tensors: a thin
        forwarder to :func:`earthstream.delivery.to_torch` (see there).

        The PyTorch delivery lives on the framework floor (``delivery/``); it is
        imported here only when asked for, so streams never import torch.
        """
        from .delivery._torch import to_torch

        return to_torch(
            self,
            device,
            non_blocking=non_blocking,
            pin_memory=pin_memory,
            normalize=normalize,
        )

    def to_jax(self, placement: Any = None, *, prefetch: int = 2) -> JaxStream:
        """Batches as ``jax.Array``s on a device or with a ``jax.sharding.Sharding``.

        Transfers run ``prefetch`` batches ahead of the training step (double
        buffering by default).  Under a multi-process JAX job each process
        streams its own part of the epoch (``jax.process_index()`` of
        ``jax.process_count()``) and a sharding that spans every process makes
        one global batch of them.  See :class:`earthstream.delivery.JaxStream`.
        """
        from .delivery._jax import JaxStream

        return JaxStream(self, placement, prefetch=prefetch)

    def _sharding_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Pickled state: workers started with "spawn" have no torch.distributed group,
        so the placement is pinned."""
        state["_placement"] = self.placement()
        state["_memory"] = None  # a placement belongs to its process
        return state

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) iteration; before the first, the one it will
        follow."""
        return self._epoch

    @property
    def next_epoch(self) -> int:
        """The epoch the next iteration follows: ``epoch + 1`` once an iteration of
        ``epoch`` has started (finished or not), unless :meth:`set_epoch` or
        :meth:`load_state_dict` chose another."""
        if not self._advance:
            return self._epoch
        return (self._epoch if self._pending is None else self._pending.epoch) + 1

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows (as ``DistributedSampler``).

        Not needed in a loop: each new iteration after one has started follows the
        next epoch's order by itself (whether the previous one finished or was
        abandoned).  ``set_epoch(n)`` before iterating makes that iteration follow
        epoch ``n``.  A state loaded with :meth:`load_state_dict` resumes its epoch;
        setting that same epoch keeps it, another epoch starts from its beginning.

        Examples
        --------
        >>> import earthstream as es, numpy as np
        >>> src = es.ArraySource({"x": (("t", "y"), np.zeros((8, 4)))})
        >>> stream = es.Stream(src, {"y": 4}, batch_size=4, shuffle="full", seed=0)
        >>> [b.epoch for b in stream], [b.epoch for b in stream]  # a new order each time
        ([0, 0], [1, 1])
        >>> stream.set_epoch(7)
        >>> [b.epoch for b in stream], stream.next_epoch
        ([7, 7], 8)
        """
        epoch = check_whole(epoch, "epoch", maximum=MAX_EPOCH)
        if int(epoch) != self._epoch:
            self._pending = self._live = None
        self._epoch = int(epoch)
        self._advance = False

    # -- distribution --------------------------------------------------------------
    @property
    def rank(self) -> int:
        """This process's rank (see ``rank`` / ``world_size`` in the constructor)."""
        return self.placement()[0]

    @property
    def world_size(self) -> int:
        return self.placement()[1]

    def placement(self) -> tuple[int, int]:
        """``(rank, world_size)``: as given, else from ``torch.distributed`` or a
        multi-process JAX job, else ``(0, 1)``.

        Found in an initialized process group, it is kept: DataLoader workers
        copy it and never call into ``torch.distributed`` themselves.
        """
        if self._placement is not None:
            return self._placement
        found = framework_placement()
        if found is not None:
            self._placement = found
        return found or (0, 1)

    def _join(self, rank: int, world_size: int, by: str) -> None:
        """Take this process's rank and world size from a framework (``by``, e.g. a
        Lightning trainer) before iterating; a placement given to the stream must agree."""
        if self._placement is not None and self._placement != (rank, world_size):
            raise ConfigError(
                f"this stream was given rank {self._placement[0]} of {self._placement[1]}, but "
                f"{by} runs it as rank {rank} of {world_size}: leave rank/world_size out of the "
                "stream and let the trainer place it."
            )
        self._placement = (rank, world_size)

    @property
    def n_batches(self) -> int:
        """Global batches per epoch, over all ranks (``len(stream)`` is one rank's share)."""
        return self.order.n_batches

    def _plan(self) -> EpochPlan:
        return EpochPlan.full(self.order.n_batches, self.world_size, self.remainder)

    # -- resume -----------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """A hash of what the epoch order depends on besides the settings.

        What :meth:`_identity` describes (for a :class:`~earthstream.Stream`: the
        variables' names, dims, shapes, dtypes and chunks in any order, the
        window grid and the coordinate values; not the store's location or
        codecs, so a moved or re-encoded copy of the data resumes too).
        """
        if self._fingerprint is None:
            described, arrays = self._identity()
            h = hashlib.sha256()
            h.update(json.dumps(described, sort_keys=True, default=str).encode())
            for name in sorted(arrays):
                values = np.asarray(arrays[name])
                h.update(f"{name}:{values.dtype.str}:{values.shape}".encode())
                if values.dtype.kind == "O":
                    h.update(repr(values.tolist()).encode())
                else:
                    h.update(np.ascontiguousarray(values).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def _settings(self) -> dict[str, Any]:
        o = self.order
        settings: dict[str, Any] = {
            "n_windows": o.n_windows,
            "batch_size": o.batch_size,
            "drop_last": o.drop_last,
            "shuffle": o.shuffle,
            "shuffle_buffer": o.shuffle_buffer,
        }
        if o.samples is not None:  # random windows per epoch (absent otherwise: old states load)
            settings["samples_per_epoch"] = o.samples
            settings["replacement"] = o.replacement
        return settings

    def _cursor(self) -> Cursor:
        if self._pending is not None:
            return self._pending
        if self._live is not None and self._live.epoch == self._epoch:
            return self._live
        return Cursor(self._epoch, self._plan())

    def state_dict(self) -> dict[str, Any]:
        """Where this stream stands in its epoch, as a small JSON-able dict.

        ``seed``, ``epoch``, ``position`` (batches this rank has consumed),
        the epoch's remaining batches and how they are split, plus a fingerprint
        of the dataset and the order settings so that :meth:`load_state_dict`
        can refuse a state that belongs elsewhere.  All ranks of a DDP job hold
        the same state (every step takes one batch on each rank), so saving it
        on rank 0 is enough.

        Examples
        --------
        >>> import earthstream as es, numpy as np
        >>> src = es.ArraySource({"x": (("t", "y"), np.zeros((10, 8)))}, chunks={"t": 2})
        >>> stream = es.Stream(src, {"y": 8}, batch_size=2, seed=1)
        >>> it = iter(stream)
        >>> seen = [next(it).index for _ in range(2)]
        >>> state = stream.state_dict()
        >>> state["epoch"], state["position"], state["seed"]
        (0, 2, 1)
        >>> fresh = es.Stream(src, {"y": 8}, batch_size=2, seed=1)
        >>> fresh.load_state_dict(state)
        >>> [b.index for b in fresh] == [b.index for b in it]
        True
        """
        return self._cursor().to_state(self.fingerprint, self._settings(), self.order.seed)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the epoch a :meth:`state_dict` describes on the next iteration.

        With the same world size and workers, the batches that follow are
        exactly those an uninterrupted run would have yielded next; with
        another world size or number of workers, the batches no rank has
        served yet are split over the new ranks (nothing repeated, nothing
        lost).

        Raises
        ------
        ResumeError
            The state belongs to another dataset, order settings or seed, or is damaged.
        """
        cursor = cursor_from_state(
            state, self.fingerprint, self._settings(), self.order.seed, self.order.n_batches
        )
        self._epoch = cursor.epoch
        self._pending = cursor
        self._live = None
        # a state taken after its epoch ended: the next iteration starts the next epoch
        # (set_epoch(cursor.epoch) keeps the finished epoch instead, which yields nothing)
        self._advance = cursor.finished

    def _start(self, num_workers: int, worker: int | None) -> Cursor:
        """Begin an iteration by ``num_workers`` workers per rank: where it starts.

        ``worker`` is the DataLoader worker iterating in this process, or None
        in a main process whose workers iterate.
        """
        pending = self._pending
        if pending is not None and pending.worker not in (None, worker):
            raise ResumeError(
                f"this state was taken inside DataLoader worker {pending.worker} (by torchdata's "
                "StatefulDataLoader) and resumes only that worker. Load the loader's whole "
                "state into the StatefulDataLoader, or into the dataset "
                "(dataset.load_state_dict(loader.state_dict())) to resume on another layout."
            )
        if self._advance:  # an iteration of this epoch has started: on to the next
            if pending is None:
                self._epoch += 1
            else:  # a loaded state of a finished epoch
                self._epoch = pending.epoch + 1
                pending = None
        cursor = pending if pending is not None else Cursor(self._epoch, self._plan())
        cursor = cursor.resume(self.world_size, num_workers, self.remainder)
        self._epoch = cursor.epoch
        self._pending = None
        self._live = cursor
        self._advance = True
        return cursor

    def _hand_over(self, num_workers: int) -> Cursor:
        """Begin an iteration that worker processes serve: where it starts (the main
        process decides; :meth:`_take_over` gives it to each worker)."""
        return self._start(num_workers, None)

    def _take_over(self, cursor: Cursor) -> None:
        """In a worker process: the next iteration starts where the main process's
        :meth:`_hand_over` said."""
        self._epoch = cursor.epoch
        self._pending = cursor
        self._live = None
        self._advance = False

    def _consumed(self, cursor: Cursor, position: int) -> None:
        """A main process took batch ``position`` of an iteration its workers serve."""
        self._live = dataclasses.replace(cursor, position=position)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (all ranks yield the same number)."""
        return self._plan().steps

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        """This rank's batches of the current epoch (resuming a loaded state)."""
        return self.iter_worker(0, 1)

    def iter_worker(
        self, worker: int, num_workers: int, *, num_threads: int | None = None
    ) -> Iterator[Batch]:
        """The batches DataLoader worker ``worker`` of ``num_workers`` streams on this rank.

        The rank's batches are split into ``num_workers`` contiguous runs; a
        ``DataLoader`` takes one batch from each worker in turn.  Over all
        workers and ranks an epoch serves every window once (plus the declared
        padding).  Progress is recorded for :meth:`state_dict`.
        """
        num_workers = check_whole(num_workers, "num_workers", maximum=MAX_WORKERS)
        worker = check_whole(worker, "worker", maximum=max(1, num_workers) - 1)
        num_threads = check_whole(num_threads, "num_threads", minimum=1, maximum=1024, none=True)
        return self._iter_worker(worker, num_workers, num_threads)

    def _iter_worker(
        self, worker: int, num_workers: int, num_threads: int | None
    ) -> Iterator[Batch]:
        rank = self.rank
        cursor = self._start(num_workers, worker)
        logical, start = cursor.worker_start(worker)
        lengths = cursor.lengths
        batches, n_padded = cursor.plan.worker_batches(rank, logical, cursor.num_workers, start)
        in_worker = cursor.num_workers > 1
        padded_from = len(batches) - n_padded
        for n, batch in enumerate(
            self._run(
                batches,
                rank * cursor.num_workers + logical,
                self.world_size * cursor.num_workers,
                num_threads,
            )
        ):
            if n >= padded_from:
                batch = dataclasses.replace(batch, padded=np.ones(batch.size, dtype=bool))
            position = round_robin_index(lengths, logical, start + n) + 1
            self._live = dataclasses.replace(
                cursor, position=position, worker=worker if in_worker else None
            )
            yield batch

    def iter_shard(
        self, shard: int, num_shards: int, *, num_threads: int | None = None
    ) -> Iterator[Batch]:
        """Low level: the contiguous run ``shard`` of ``num_shards`` of the epoch's global batches.

        Ignores ranks, padding and resume state (``iter(stream)`` and
        :meth:`iter_worker` honour them).  The union over shards is the epoch,
        each window exactly once.
        """
        num_shards = check_whole(num_shards, "num_shards", minimum=1, maximum=2**31)
        shard = check_whole(shard, "shard", maximum=num_shards - 1)
        num_threads = check_whole(num_threads, "num_threads", minimum=1, maximum=1024, none=True)
        batches = shard_range(self.order.n_batches, shard, num_shards)
        return self._run(batches, shard, num_shards, num_threads)
