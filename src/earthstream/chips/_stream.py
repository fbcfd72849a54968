"""The chip stream: image chips (and label masks) on one target grid, through the engine.

Chips are planned on the target grid's pixels with :mod:`earthstream.sampling`
(``WindowGrid`` over dims ``("y", "x")``, ``OrderSpec`` for the order, shuffle
and DataLoader sharding), so epochs are exactly-once and a pure function of
``(seed, epoch)`` as for :class:`earthstream.Stream`.  ``shuffle="chunks"``
groups chips by blocks of ``shuffle_block`` x ``shuffle_block`` chips, so
neighbouring chips (which share tiles) are read close in time.

The scenes' rasters are the engine's inputs (COG tiles as chunks, see
:mod:`~earthstream.chips._inputs`); the chip kind (:mod:`~earthstream.chips._kind`)
plans each chip as boxes of tiles and warps, decodes and mosaics them.  So each
tile is fetched through ``storage/`` (merged ranges, many requests in flight,
retries) and decoded once per epoch into the engine's slots, within
``memory_limit``, and the pass has one :class:`~earthstream.engine.EpochReport`
(tiles decoded, requests, bytes; chip counts in ``report.counts``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .._batch import Batch
from .._sharding import ShardedStream
from .._units import format_bytes, parse_bytes
from ..engine import Budget, ChunkPolicy, Engine, EpochReport, SlotPool
from ..errors import ConfigError, MemoryBudgetError
from ..geo._gdal import bound_gdal_cache, gdal_cache_share
from ..geo._grid import GridSpec, PixelWindow
from ..sampling import OrderSpec, Remainder
from ..storage._secrets import redact
from ._inputs import ChipInputs, build_inputs
from ._kind import ChipAssembler, ChipLayout, ChipPlanner, chip_kind, chip_variables
from ._labels import LabelSpec
from ._plan import ChipPlan

__all__ = ["ChipStream", "LabelSpec", "default_threads"]


def default_threads() -> int:
    try:
        return max(2, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 2


class ChipStream(ShardedStream):
    """Batches of chips on a target grid, from STAC items or COGs, with optional label masks.

    Build it with :func:`stream_chips`.  ``batch["image"]`` is
    ``(B, C, H, W)`` float32 (``(B, T, C, H, W)`` with ``time="stack"``), NaN
    where no source has data; ``batch.mask`` is True where it has; with labels,
    ``batch["label"]`` is ``(B, H, W)``.  ``batch.coords`` holds each chip's
    ``crs``, ``transform`` (6 numbers), ``bounds``, centre ``x``/``y`` and
    ``lon``/``lat`` (and ``time`` per slot); ``batch.starts`` its pixel offsets
    ``y``/``x`` on the target grid; ``batch.channels`` the band names.

    ``report`` is the pass's :class:`~earthstream.engine.EpochReport`: tiles
    decoded (``chunks_decoded``, ``decodes`` per tile), requests and bytes read,
    memory, and chip counts in ``report.counts``: ``raster_reads`` (chip, raster)
    pairs read, of which ``aligned_reads`` copied and ``warped_reads``
    resampled, ``rasters_skipped`` (a footprint touched the chip, no pixel did),
    ``chips_empty`` (chips no scene touched); ``report.excluded`` the chips left
    out of the epoch (``skip_empty``, ``windows=``).
    """

    def __init__(
        self,
        plan: ChipPlan,
        order: OrderSpec,
        *,
        inputs: ChipInputs | None = None,
        labels: LabelSpec | None = None,
        prefetch: int = 2,
        num_threads: int | None = None,
        dtype: Any = np.float32,
        apply_scale: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        remainder: Remainder = "pad",
        memory_limit: int | str = "1GB",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        self.order = order
        self.labels = labels
        self.prefetch = prefetch
        self.num_threads = num_threads or default_threads()
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ConfigError(f"dtype={self.dtype} must be a float dtype (NaN marks no data).")
        self.apply_scale = apply_scale
        self.layout = None  # no window layout (TorchStream builds no stacked views)
        self._init_sharding(rank, world_size, remainder)
        g = order.grid
        chip_size = (g.axis("y").length, g.axis("x").length)
        if inputs is None:
            inputs = build_inputs(plan, g, chip_size, storage_options=storage_options)
        self.inputs = inputs
        self.chips = ChipLayout(
            grid=plan.grid,
            chips=g,
            chip_size=chip_size,
            inputs=inputs,
            variables=chip_variables(inputs),
            channels=plan.channels,
            n_time=plan.n_time,
            stack=plan.time == "stack",
            slot_times=plan.slot_times,
            apply_scale=apply_scale,
            dtype=self.dtype,
            labels=labels,
            footprints=plan.footprints(),
        )
        self.memory_limit = parse_bytes(memory_limit)
        self.gdal_cache = gdal_cache_share(self.memory_limit)
        self.budget = self._budget()
        self._engine: Engine | None = None
        self._engine_key: tuple[int, int] | None = None
        self._report: EpochReport | None = None

    def _budget(self) -> Budget:
        """``memory_limit`` split: queued batches (with their raster boxes), GDAL's block
        cache, and the tile slots."""
        chips = self.chips
        b = self.order.batch_size
        batch_nbytes = b * chips.sample_nbytes() + chips.scratch_nbytes(b)
        queued = (self.prefetch + 1) * batch_nbytes
        block = sum(v.chunk_nbytes for v in chips.variables)
        need = queued + self.gdal_cache + block
        if self.memory_limit < need:
            raise MemoryBudgetError(
                f"memory_limit={format_bytes(self.memory_limit)} is too small: "
                f"{self.prefetch + 1} batches of {format_bytes(batch_nbytes)} (chips and the "
                f"raster windows they are cut from), GDAL's block cache "
                f"({format_bytes(self.gdal_cache)}) and one tile of each of "
                f"{len(chips.variables)} inputs ({format_bytes(block)}) need "
                f"{format_bytes(need)}. Raise memory_limit, or lower batch_size or prefetch."
            )
        return Budget(self.memory_limit, batch_nbytes, self.prefetch, self.memory_limit - need)

    # -- description ------------------------------------------------------------------
    @property
    def grid(self) -> GridSpec:
        """The target grid."""
        return self.plan.grid

    @property
    def channels(self) -> tuple[str, ...]:
        return self.plan.channels

    @property
    def chip_shape(self) -> tuple[int, int]:
        return self.chips.chip_size

    @property
    def n_windows(self) -> int:
        """Chips per epoch."""
        return self.order.n_windows

    @property
    def sources(self) -> tuple[Any, ...]:
        """The engine's inputs: the scenes' rasters as stacked tile sources (one per level,
        tiling and dtype)."""
        return self.inputs.sources

    @property
    def source(self) -> Any:
        """The first input (what ``TorchStream.loader`` looks at to tell remote streams)."""
        return self.inputs.sources[0]

    @property
    def excluded(self) -> dict[str, int]:
        """Chips of the grid left out of every epoch, by reason (``skip_empty``: ``"touch no
        scene"``; ``windows=`` rules); empty when none."""
        subset = self.order.subset
        return dict(subset.excluded) if subset is not None else {}

    @property
    def report(self) -> EpochReport | None:
        """What the last (or current) pass did (see the class docstring)."""
        return self._report

    def chip_grid(self, window_id: int) -> GridSpec:
        """The grid of chip ``window_id``."""
        row, col = (int(v) for v in self.order.grid.starts_of(np.array([window_id]))[0])
        h, w = self.chip_shape
        return self.plan.grid.window(PixelWindow(row, col, h, w))

    # -- reading one chip ---------------------------------------------------------------
    def read_chip(self, window_id: int) -> dict[str, np.ndarray]:
        """Image, validity and label of one chip (what a batch holds for it), read on this
        thread (tiles decoded for this call only)."""
        planner, assembler = ChipPlanner(self.chips), ChipAssembler(self.chips)
        (plan,) = planner.plan([(0, np.array([window_id], dtype=np.int64))])
        pools, slots = [], []
        for var, vplan in zip(self.chips.variables, plan.vars, strict=True):
            pool = SlotPool(var, max(1, len(vplan.keys)))
            source = self.inputs.sources[var.input]
            for p, index in enumerate(vplan.index.tolist()):
                if source.read_chunk(var.name, tuple(index), pool.slab[p]) is None:
                    pool.slab[p] = var.fill
            pools.append(pool)
            slots.append(np.arange(len(vplan.keys), dtype=np.intp))
        arrays = assembler.cut(pools, plan, slots, None)
        return {k: v[0] for k, v in arrays.data.items()}

    # -- the engine ---------------------------------------------------------------------
    def _engine_for(self, num_threads: int) -> Engine:
        """This process's engine; it keeps its tile slots from one epoch to the next."""
        key = (os.getpid(), num_threads)
        if self._engine is None or self._engine_key != key:
            self._engine = Engine(
                self.inputs.sources,
                chip_kind(self.chips),
                self.budget,
                num_threads=num_threads,
                lookahead=self._lookahead(),
                policy=ChunkPolicy(missing="fill", corrupt="error"),
            )
            self._engine_key = key
        return self._engine

    def _lookahead(self) -> int:
        b = self.order.batch_size
        cap = max(16, 32768 // b)
        if self.order.shuffle == "chunks":
            sizes = self.order.grid.block_sizes()
            unit = int(sizes.max(initial=1)) * self.order.shuffle_buffer
            return int(min(cap, max(16, 2 * -(-unit // b) + 16)))
        return int(
            min(cap, max(16, 2 * self.budget.cache_capacity // max(1, self.budget.batch_nbytes)))
        )

    def _identity(self) -> tuple[dict[str, Any], Mapping[str, np.ndarray]]:
        described = {
            "scenes": [[s.id, str(s.datetime), list(s.footprint)] for s in self.plan.scenes],
            "grid": repr(self.plan.grid),
            "channels": list(self.plan.channels),
            "time": self.plan.time,
            "chips": [dataclasses.astuple(a) for a in self.order.grid.axes],
        }
        if self.order.subset is not None:
            described["subset"] = self.order.subset.digest()
        return described, {}

    def _run(
        self, batches: Sequence[int], shard: int, num_shards: int, num_threads: int | None
    ) -> Iterator[Batch]:
        """The global batches ``batches`` of the current epoch, through the engine."""
        bound_gdal_cache(self, self.gdal_cache)
        order = self.order.epoch(self._epoch)
        engine = self._engine_for(num_threads or self.num_threads)
        assembler = engine.kind.assembler
        assert isinstance(assembler, ChipAssembler)
        assembler.counts.clear()
        runner = engine.run(
            order, batches, shard=shard, num_shards=num_shards, corrupt_count=self._corrupt_count
        )
        for batch in runner:
            report = engine.report
            assert report is not None
            if self._report is not report:
                report.excluded.update(self.excluded)
                self._report = report
            report.counts.update(assembler.counts.popleft())
            yield batch

    def close(self) -> None:
        """Free the tile slots kept between epochs (iteration can resume later)."""
        self._engine = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_report"] = None
        state["_engine"] = None
        state["_engine_key"] = None
        return self._sharding_state(state)

    def __repr__(self) -> str:
        h, w = self.chip_shape
        levels = ", ".join(f"{k}: {v}" for k, v in self.inputs.levels().items())
        return (
            f"<ChipStream {len(self.plan.scenes)} scenes, channels {list(self.channels)}, "
            f"time={self.plan.time!r} ({self.plan.n_time} slots); chips {h}x{w} on "
            f"{self.plan.grid!r}; {self.n_windows} chips in {len(self)} batches of "
            f"{self.order.batch_size}; shuffle={self.order.shuffle!r} seed={self.order.seed}; "
            f"{len(self.inputs.uses)} rasters in {len(self.inputs.sources)} tile inputs "
            f"({levels}); memory_limit={format_bytes(self.memory_limit)}"
            f"{'; labels ' + repr(redact(self.labels.source.url)) if self.labels else ''}>"
        )
