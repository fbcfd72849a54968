"""The user-facing stream: windows of a source, shuffled, batched, in the background."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._batch import Batch
from ._units import format_bytes, parse_bytes
from .engine import (
    ChunkPolicy,
    Engine,
    EpochReport,
    StreamLayout,
    build_layout,
    plan_budget,
    sweep_size,
    union_dims,
)
from .errors import ConfigError, ResumeError
from .sampling import (
    REMAINDERS,
    Cursor,
    EpochPlan,
    OrderSpec,
    build_window_grid,
    cursor_from_state,
    normalize_shuffle,
    round_robin_index,
    shard_range,
)
from .sources import ChunkedSource, open_zarr

if TYPE_CHECKING:
    from .delivery._torch import TorchStream

__all__ = ["Stream"]

#: Most chunk groups mixed by the automatic shuffle buffer.
MAX_AUTO_SHUFFLE_BUFFER = 128


def detect_placement() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialized ``torch.distributed`` group, else ``(0, 1)``.

    Looks only if torch.distributed is already imported: earthstream never imports torch.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class Stream:
    """Batches of windows cut from a source, in a shuffled order, assembled in the background.

    Parameters
    ----------
    source
        A :class:`~earthstream.sources.ChunkedSource` (e.g. from :func:`open_zarr`),
        or a path/URL that is opened with :func:`open_zarr`.
    window
        Dim -> window length, e.g. ``{"lat": 64, "lon": 64}``; ``None`` as a length
        takes the whole dim.  Dims not named are iterated one index per sample and
        squeezed out of the sample.
    stride
        Dim -> step between window starts.  Default: the window length (windows
        side by side) and 1 on iterated dims; e.g. ``{"time": 6}`` takes every
        6th step.
    variables
        Variables to stream (default: all of the source's).
    edges
        ``"drop"`` (default) drops windows that do not fit; ``"pad"`` covers every
        element, padding with each variable's fill value, and batches carry a
        validity ``mask``.
    stack
        Deliver one ``(B, C, *window)`` array (``batch.stacked``) with channel
        names (``batch.channels``) instead of one array per variable.
    shuffle
        ``"chunks"`` (default): chunk groups in random order, windows of
        ``shuffle_buffer`` groups mixed, each chunk decoded once per epoch.
        ``"full"``: uniform permutation of all windows.  ``False``: grid order.
    seed
        Seed of the order; the order is a pure function of ``(seed, epoch)``.
    batch_size, drop_last
        Windows per batch; whether to drop a last, smaller batch.
    memory_limit
        Bytes for decoded chunks plus queued batches, per process (e.g. ``"1GB"``).
        Batches the consumer holds are its own.
    prefetch
        Batches assembled ahead of the consumer.
    num_threads
        Threads reading and decoding chunks (default: the CPUs available).
    shuffle_buffer
        Chunk groups whose windows are mixed together under ``shuffle="chunks"``.
        Default: as many as fit in 40% of the cache, at most 128.  Set it
        explicitly to keep the order independent of ``memory_limit``.
    missing
        A chunk that is not stored: ``"fill"`` (Zarr's meaning, the fill value) or
        ``"error"`` (:class:`~earthstream.errors.MissingChunkError`).
    corrupt
        A chunk that does not decode: ``"error"`` (default) or ``"skip"``: the
        samples that read it are dropped from their batch, counted and logged with
        the chunk's key (``stream.report.corrupt_chunks``).
    max_corrupt
        With ``corrupt="skip"``, the number of corrupt chunks a pass tolerates
        before it stops with :class:`~earthstream.errors.CorruptChunksError`.
    rank, world_size
        This process's part of a distributed job.  Default: taken from
        ``torch.distributed`` when it is initialized, else ``0`` of ``1``.  Ranks
        serve disjoint contiguous runs of the epoch's batches.
    remainder
        Every rank yields ``len(stream)`` batches.  When the batches do not
        split evenly, ``"pad"`` (default) repeats the last batch on the ranks
        with one less, marking its samples in ``batch.padded``; ``"drop"``
        leaves the extra batches out of the epoch.

    Examples
    --------
    >>> import earthstream as es
    >>> path = es.datasets.era5_like(tmp_path / "s.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> stream = es.Stream(path, window={"lat": 8, "lon": 8}, variables=["t2m", "u10"],
    ...                    batch_size=16, seed=1)
    >>> len(stream), stream.n_windows
    (4, 64)
    >>> batch = next(iter(stream))
    >>> batch["t2m"].shape, batch.starts["time"].shape, batch.coords["time"].dtype
    ((16, 8, 8), (16,), dtype('<M8[ns]'))
    """

    def __init__(
        self,
        source: ChunkedSource | str | os.PathLike[str],
        window: Mapping[str, int | None],
        stride: Mapping[str, int] | None = None,
        *,
        variables: Sequence[str] | str | None = None,
        edges: str = "drop",
        stack: bool = False,
        shuffle: bool | str = "chunks",
        seed: int = 0,
        batch_size: int = 32,
        drop_last: bool = False,
        memory_limit: int | str = "1GB",
        prefetch: int = 2,
        num_threads: int | None = None,
        shuffle_buffer: int | None = None,
        missing: str = "fill",
        corrupt: str = "error",
        max_corrupt: int = 10,
        rank: int | None = None,
        world_size: int | None = None,
        remainder: str = "pad",
    ) -> None:
        if isinstance(source, str | os.PathLike):
            source = open_zarr(source)
        if variables is not None:
            source = source.select([variables] if isinstance(variables, str) else variables)
        infos = list(source.variables.values())
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1.")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch={prefetch!r} must be a whole number >= 1.")
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"num_threads={num_threads!r} must be at least 1 (or None).")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"seed={seed!r} must be a non-negative whole number.")
        order_kind = normalize_shuffle(shuffle)
        self.policy = ChunkPolicy(missing=missing, corrupt=corrupt, max_corrupt=max_corrupt)
        if remainder not in REMAINDERS:
            raise ConfigError(
                f"remainder={remainder!r} is not a policy; use 'pad' (repeat a batch on ranks "
                "with one batch less, flagged in batch.padded) or 'drop' (leave the extra "
                "batches out of the epoch)."
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

        sizes = union_dims(infos)
        chunks: dict[str, int] = {}
        for info in infos:
            for dim, chunk in zip(info.dims, info.chunks, strict=True):
                chunks.setdefault(dim, chunk)
        grid = build_window_grid(sizes, window, stride, edges, chunks)
        self._source = source
        self._coords = {d: np.asarray(v) for d, v in source.coords.items()}
        self.layout: StreamLayout = build_layout(infos, grid, stack=stack, coords=self._coords)
        limit = parse_bytes(memory_limit)
        self.budget = plan_budget(self.layout, batch_size, limit, prefetch)
        self.num_threads = num_threads or default_threads()

        block = max(1, self.layout.block_nbytes())
        if shuffle_buffer is None:
            auto = int(0.4 * self.budget.cache_capacity // block)
            shuffle_buffer = max(1, min(MAX_AUTO_SHUFFLE_BUFFER, auto))
        elif order_kind == "chunks" and 2 * shuffle_buffer * block > self.budget.cache_capacity:
            warnings.warn(
                f"shuffle_buffer={shuffle_buffer} mixes chunk groups of {format_bytes(block)} "
                f"each; two buffers ({format_bytes(2 * shuffle_buffer * block)}) do not fit the "
                f"{format_bytes(self.budget.cache_capacity)} chunk cache, so chunks will be "
                "decoded more than once per epoch. Raise memory_limit or lower shuffle_buffer.",
                ResourceWarning,
                stacklevel=2,
            )
        self.order = OrderSpec(
            grid=grid,
            shuffle=order_kind,
            seed=int(seed),
            batch_size=batch_size,
            drop_last=drop_last,
            shuffle_buffer=int(shuffle_buffer),
        )
        # Fully shuffled batches that touch more chunks than fit: assemble in sweeps.
        self._sweep_batches = (
            sweep_size(self.layout, self.budget, batch_size) if order_kind == "full" else 0
        )
        self._engine: Engine | None = None
        self._engine_key: tuple[int, int] | None = None
        self.remainder = remainder
        self._placement: tuple[int, int] | None = (
            None if rank is None or world_size is None else (rank, world_size)
        )
        self._epoch = 0
        self._report: EpochReport | None = None
        self._pending: Cursor | None = None  # a loaded state, not yet started
        self._live: Cursor | None = None  # the current (or last) iteration's progress
        self._fingerprint: str | None = None

    # -- description ------------------------------------------------------------------
    @property
    def source(self) -> ChunkedSource:
        return self._source

    @property
    def variables(self) -> tuple[str, ...]:
        return self.layout.names

    @property
    def n_windows(self) -> int:
        """Windows (samples) per epoch."""
        return self.order.n_windows

    @property
    def dims(self) -> tuple[str, ...]:
        """Every dim of the stream (windowed and iterated), in order."""
        return self.layout.grid.dims

    @property
    def sample_dims(self) -> dict[str, tuple[str, ...]]:
        """Each variable's sample dims (its windowed dims, in source order)."""
        return {v.name: v.sample_dims for v in self.layout.variables}

    @property
    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {v.name: v.sample_shape for v in self.layout.variables}

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names of the stacked array (``stack=True``)."""
        return self.layout.channels

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        return self._coords

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows (as ``DistributedSampler``).

        A state loaded with :meth:`load_state_dict` resumes its epoch; setting
        that same epoch keeps it, another epoch starts from its beginning.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ConfigError(f"epoch={epoch!r} must be a non-negative whole number.")
        if int(epoch) != self._epoch:
            self._pending = self._live = None
        self._epoch = int(epoch)

    # -- distribution --------------------------------------------------------------
    @property
    def rank(self) -> int:
        """This process's rank (see ``rank`` / ``world_size`` in the constructor)."""
        return self.placement()[0]

    @property
    def world_size(self) -> int:
        return self.placement()[1]

    def placement(self) -> tuple[int, int]:
        """``(rank, world_size)``: as given, else from ``torch.distributed``, else ``(0, 1)``.

        Found in an initialized process group, it is kept: DataLoader workers
        copy it and never call into ``torch.distributed`` themselves.
        """
        if self._placement is not None:
            return self._placement
        found = detect_placement()
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            self._placement = found
        return found

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

        Variables (names, dims, shapes, dtypes, chunks; in any order), the
        window grid and the coordinate values; not the store's location or
        codecs, so a moved or re-encoded copy of the data resumes too.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            described = {
                "variables": sorted(
                    [v.name, list(v.dims), list(v.shape), v.dtype.str, list(v.chunks)]
                    for v in self._source.variables.values()
                ),
                "grid": [dataclasses.astuple(a) for a in self.layout.grid.axes],
                "edges": self.layout.grid.edges,
            }
            h.update(json.dumps(described, sort_keys=True, default=str).encode())
            for dim in sorted(self._coords):
                values = self._coords[dim]
                h.update(f"{dim}:{values.dtype.str}:{values.shape}".encode())
                if values.dtype.kind == "O":
                    h.update(repr(values.tolist()).encode())
                else:
                    h.update(np.ascontiguousarray(values).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def _settings(self) -> dict[str, Any]:
        o = self.order
        return {
            "n_windows": o.n_windows,
            "batch_size": o.batch_size,
            "drop_last": o.drop_last,
            "shuffle": o.shuffle,
            "shuffle_buffer": o.shuffle_buffer,
        }

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
        cursor = pending if pending is not None else Cursor(self._epoch, self._plan())
        cursor = cursor.resume(self.world_size, num_workers, self.remainder)
        self._pending = None
        self._live = cursor
        return cursor

    def _hand_over(self, num_workers: int) -> Cursor:
        """Begin an iteration that worker processes serve: where it starts.

        The loaded state stays until :meth:`_handed_over`: the workers, which
        copy the stream in between, start from it too.
        """
        pending = self._pending
        cursor = self._start(num_workers, None)
        self._pending = pending
        return cursor

    def _handed_over(self) -> None:
        """The workers have their copies of the stream: the loaded state is used up."""
        self._pending = None

    def _consumed(self, cursor: Cursor, position: int) -> None:
        """A main process took batch ``position`` of an iteration its workers serve."""
        self._live = dataclasses.replace(cursor, position=position)

    @property
    def report(self) -> EpochReport | None:
        """What the last (or current) pass in this process did: decodes, bytes, memory."""
        return self._report

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
        if not 0 <= worker < max(1, num_workers):
            raise ConfigError(f"worker {worker} is outside 0..{max(1, num_workers) - 1}.")
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

    def _run(
        self, batches: Sequence[int], shard: int, num_shards: int, num_threads: int | None
    ) -> Iterator[Batch]:
        order = self.order.epoch(self._epoch)
        engine = self._engine_for(num_threads or self.num_threads)
        runner = engine.run(order, batches, shard=shard, num_shards=num_shards)
        self._report = engine.report
        for batch in runner:
            self._report = engine.report
            yield batch

    def iter_shard(
        self, shard: int, num_shards: int, *, num_threads: int | None = None
    ) -> Iterator[Batch]:
        """Low level: the contiguous run ``shard`` of ``num_shards`` of the epoch's global batches.

        Ignores ranks, padding and resume state (``iter(stream)`` and
        :meth:`iter_worker` honour them).  The union over shards is the epoch,
        each window exactly once.
        """
        batches = shard_range(self.order.n_batches, shard, num_shards)
        return self._run(batches, shard, num_shards, num_threads)

    def _engine_for(self, num_threads: int) -> Engine:
        """This process's engine; it keeps its chunk slots from one epoch to the next."""
        key = (os.getpid(), num_threads)
        if self._engine is None or self._engine_key != key:
            self._engine = Engine(
                self._source,
                self.layout,
                self.budget,
                num_threads=num_threads,
                coords=self._coords,
                lookahead=self._lookahead(),
                sweep_batches=self._sweep_batches,
                policy=self.policy,
            )
            self._engine_key = key
        return self._engine

    def close(self) -> None:
        """Free the decoded-chunk slots kept between epochs (iteration can resume later)."""
        self._engine = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lookahead(self) -> int:
        b = self.order.batch_size
        cap = max(16, 32768 // b)  # bound planning state to ~32k windows
        if self.order.shuffle == "chunks":
            sizes = self.layout.grid.block_sizes()
            unit = int(sizes.max(initial=1)) * self.order.shuffle_buffer
            return int(min(cap, max(16, 2 * -(-unit // b) + 16)))
        return int(
            min(cap, max(16, 2 * self.budget.cache_capacity // max(1, self.budget.batch_nbytes)))
        )

    # -- delivery ---------------------------------------------------------------------
    def to_torch(
        self,
        device: str | Any = "cpu",
        *,
        non_blocking: bool = True,
        pin_memory: bool | None = None,
    ) -> TorchStream:
        """A ``torch.utils.data.IterableDataset`` yielding batches as tensors.

        See :class:`earthstream.delivery.TorchStream`.
        """
        from .delivery._torch import TorchStream

        return TorchStream(self, device=device, non_blocking=non_blocking, pin_memory=pin_memory)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_report"] = None
        state["_engine"] = None
        state["_engine_key"] = None
        # Workers started with "spawn" have no torch.distributed group: pin the placement.
        state["_placement"] = self.placement()
        return state

    def __repr__(self) -> str:
        grid = self.layout.grid
        window = ", ".join(f"{a.dim}={a.length}" for a in grid.axes if not a.squeeze)
        iterated = ", ".join(a.dim for a in grid.axes if a.squeeze) or "none"
        return (
            f"<Stream {len(self.variables)} variables ({', '.join(self.variables)}); "
            f"window {window or 'none'}; iterated {iterated}; {self.n_windows} windows in "
            f"{len(self)} batches of {self.order.batch_size}; shuffle={self.order.shuffle!r} "
            f"seed={self.order.seed} epoch={self._epoch}; rank {self.rank} of {self.world_size}; "
            f"memory_limit={format_bytes(self.budget.memory_limit)}>"
        )
