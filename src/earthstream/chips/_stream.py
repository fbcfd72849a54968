"""The aligned chip stream: image chips (and label masks) on one target grid, in batches.

Windows are planned on the target grid's pixels with :mod:`earthstream.sampling`
(``WindowGrid`` over dims ``("y", "x")``, ``OrderSpec`` for the order, shuffle
and DataLoader sharding), so epochs are exactly-once and a pure function of
``(seed, epoch)`` as for :class:`earthstream.Stream`.  ``shuffle="chunks"``
groups chips by blocks of ``shuffle_block`` x ``shuffle_block`` chips, so
neighbouring chips (which share source tiles) are read close in time.

Each chip is one task on a thread pool (GDAL and the warper release the GIL):
for every time slot, the scenes whose footprint touches the chip are read onto
the chip grid (:func:`earthstream.geo._read.read_chip`) and mosaicked, first
valid pixel wins; the label features hitting the chip are burned.  At most
``prefetch + 1`` batches are in flight.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time as _time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._batch import Batch
from .._sharding import ShardedStream
from ..geo._grid import GridSpec, PixelWindow, transformer
from ..geo._read import decode, read_chip
from ..sampling import OrderSpec, Remainder
from ..storage._secrets import redact
from ._labels import LabelSpec
from ._plan import ChipPlan

if TYPE_CHECKING:
    pass

__all__ = ["ChipReport", "ChipStream", "LabelSpec"]


@dataclass
class ChipReport:
    """What one pass did (one process, one shard): chips, reads, overviews, time."""

    epoch: int
    shard: int = 0
    num_shards: int = 1
    batches: int = 0
    chips: int = 0
    raster_reads: int = 0  # (chip, raster) pairs read
    aligned_reads: int = 0  # of those, plain windowed reads (chip on the raster's grid)
    skipped: int = 0  # footprint overlapped the chip's bounds, but no pixel did
    overview_levels: Counter[int | None] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def merge(
        cls, reports: Sequence[ChipReport], *, shard: int = 0, num_shards: int = 1
    ) -> ChipReport:
        """One report for the DataLoader workers of rank ``shard``: counts add up,
        ``elapsed_s`` is the longest pass."""
        merged = cls(epoch=reports[0].epoch, shard=shard, num_shards=num_shards)
        for r in reports:
            merged.batches += r.batches
            merged.chips += r.chips
            merged.raster_reads += r.raster_reads
            merged.aligned_reads += r.aligned_reads
            merged.skipped += r.skipped
            merged.overview_levels.update(r.overview_levels)
        merged.elapsed_s = max(r.elapsed_s for r in reports)
        return merged

    @property
    def chips_per_s(self) -> float:
        return self.chips / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> str:
        levels = ", ".join(
            f"{'full' if k is None else f'overview {k}'}: {v}"
            for k, v in sorted(
                self.overview_levels.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)
            )
        )
        return (
            f"epoch {self.epoch} shard {self.shard}/{self.num_shards}: {self.batches} batches, "
            f"{self.chips} chips in {self.elapsed_s:.2f} s ({self.chips_per_s:,.1f} chips/s); "
            f"{self.raster_reads} raster reads ({self.aligned_reads} without resampling; "
            f"{levels or 'none'})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class ChipStream(ShardedStream):
    """Batches of chips on a target grid, from STAC items or COGs, with optional label masks.

    Build it with :func:`stream_chips`.  ``batch["image"]`` is
    ``(B, C, H, W)`` float32 (``(B, T, C, H, W)`` with ``time="stack"``), NaN
    where no source has data; ``batch.mask`` is True where it has; with labels,
    ``batch["label"]`` is ``(B, H, W)``.  ``batch.coords`` holds each chip's
    ``crs``, ``transform`` (6 numbers), ``bounds``, centre ``x``/``y`` and
    ``lon``/``lat`` (and ``time`` per slot); ``batch.starts`` its pixel offsets
    ``y``/``x`` on the target grid; ``batch.channels`` the band names.
    """

    def __init__(
        self,
        plan: ChipPlan,
        order: OrderSpec,
        *,
        labels: LabelSpec | None = None,
        prefetch: int = 2,
        num_threads: int | None = None,
        dtype: Any = np.float32,
        apply_scale: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        remainder: Remainder = "pad",
    ) -> None:
        self.plan = plan
        self.order = order
        self.labels = labels
        self.prefetch = prefetch
        self.num_threads = num_threads or default_threads()
        self.dtype = np.dtype(dtype)
        self.apply_scale = apply_scale
        self.layout = None  # no chunk layout (TorchStream builds no stacked views)
        self._init_sharding(rank, world_size, remainder)
        self._report: ChipReport | None = None
        self._footprints = plan.footprints()

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
        g = self.order.grid
        return (g.axis("y").length, g.axis("x").length)

    @property
    def n_windows(self) -> int:
        """Chips per epoch."""
        return self.order.n_windows

    @property
    def report(self) -> ChipReport | None:
        return self._report

    def chip_grid(self, window_id: int) -> GridSpec:
        """The grid of chip ``window_id``."""
        row, col = (int(v) for v in self.order.grid.starts_of(np.array([window_id]))[0])
        h, w = self.chip_shape
        return self.plan.grid.window(PixelWindow(row, col, h, w))

    # -- reading one chip ---------------------------------------------------------------
    def read_chip(self, window_id: int) -> dict[str, np.ndarray]:
        """Image, validity and label of one chip (what a batch holds for it)."""
        out = self._allocate(1)
        row, col = (int(v) for v in self.order.grid.starts_of(np.array([window_id]))[0])
        self._fill(0, PixelWindow(row, col, *self.chip_shape), out, None)
        return {k: v[0] for k, v in out.items()}

    def _allocate(self, n: int) -> dict[str, np.ndarray]:
        h, w = self.chip_shape
        c, t = len(self.plan.channels), self.plan.n_time
        shape = (n, t, c, h, w) if self.plan.time == "stack" else (n, c, h, w)
        out = {
            "image": np.full(shape, np.nan, dtype=self.dtype)
            if self.dtype.kind == "f"
            else np.zeros(shape, dtype=self.dtype),
            "valid": np.zeros(shape, dtype=bool),
        }
        if self.labels is not None:
            out["label"] = np.full((n, h, w), self.labels.fill, dtype=self.labels.dtype)
        return out

    def _fill(
        self, i: int, window: PixelWindow, out: dict[str, np.ndarray], report: ChipReport | None
    ) -> None:
        """Read chip ``window`` (pixels of the target grid) into row ``i`` of ``out``.

        With ``edges="pad"`` the part past the target grid's edge is not read: it stays
        NaN (image), False (mask) and ``label_ignore`` (labels).
        """
        plan = self.plan
        inside = window.intersection(plan.grid.full_window())  # pad chips start inside
        h, w = inside.height, inside.width
        chip = plan.grid.window(inside)
        left, bottom, right, top = chip.bounds
        fp = self._footprints
        touches = (fp[:, 0] < right) & (fp[:, 2] > left) & (fp[:, 1] < top) & (fp[:, 3] > bottom)
        stack = plan.time == "stack"
        reads = aligned = skipped = 0
        levels: Counter[int | None] = Counter()
        for t, slot in enumerate(plan.slots):
            image = (out["image"][i, t] if stack else out["image"][i])[:, :h, :w]
            valid = (out["valid"][i, t] if stack else out["valid"][i])[:, :h, :w]
            for s in slot:
                if not touches[s]:
                    continue
                scene = plan.scenes[s]
                for ref, chans in zip(scene.rasters, scene.channels, strict=True):
                    idx = list(chans)
                    if valid[idx].all():
                        continue  # mosaic: every pixel of these channels already has data
                    raw = np.zeros((len(idx), *chip.shape), dtype=np.dtype(_file_dtype(ref)))
                    ok = np.zeros((len(idx), *chip.shape), dtype=bool)
                    raw, ok, info = read_chip(
                        ref,
                        chip,
                        resampling=[plan.resampling[c] for c in idx],
                        overview=plan.overview,
                        out=raw,
                        valid=ok,
                    )
                    reads += 1
                    aligned += info.aligned
                    skipped += info.skipped
                    levels[info.overview_level] += 1
                    values = decode(raw, ok, ref.bands) if self.apply_scale else raw
                    for j, c in enumerate(idx):
                        new = ok[j] & ~valid[c]
                        np.copyto(image[c], values[j], where=new, casting="unsafe")
                        valid[c] |= new
        if self.labels is not None:
            spec = self.labels
            index = spec.source.index(plan.grid.crs, plan.grid.bounds)
            out["label"][i] = spec.ignore  # past the edge; the inside is burned next
            out["label"][i, :h, :w] = index.rasterize(
                chip, all_touched=spec.all_touched, fill=spec.fill, dtype=spec.dtype
            )
        if report is not None:
            with report._lock:
                report.chips += 1
                report.raster_reads += reads
                report.aligned_reads += aligned
                report.skipped += skipped
                report.overview_levels.update(levels)

    # -- batches ------------------------------------------------------------------------
    def _batch(self, index: int, ids: np.ndarray, out: dict[str, np.ndarray], epoch: int) -> Batch:
        plan = self.plan
        starts = self.order.grid.starts_of(ids)
        rows, cols = starts[:, 0], starts[:, 1]
        h, w = self.chip_shape
        a, b, c, d, e, f = plan.grid.transform
        x0 = c + a * cols + b * rows
        y0 = f + d * cols + e * rows
        transforms = np.column_stack(
            [
                np.full(len(ids), a),
                np.full(len(ids), b),
                x0,
                np.full(len(ids), d),
                np.full(len(ids), e),
                y0,
            ]
        )
        xs = np.stack([x0, x0 + a * w, x0 + b * h, x0 + a * w + b * h])
        ys = np.stack([y0, y0 + d * w, y0 + e * h, y0 + d * w + e * h])
        bounds = np.column_stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)])
        cx = x0 + a * w / 2 + b * h / 2
        cy = y0 + d * w / 2 + e * h / 2
        if plan.grid.crs in ("EPSG:4326", "OGC:CRS84"):
            lon, lat = cx, cy
        else:
            lon, lat = transformer(plan.grid.crs, "EPSG:4326").transform(cx, cy)
        coords: dict[str, np.ndarray] = {
            "crs": np.full(len(ids), plan.grid.crs),
            "transform": transforms,
            "bounds": bounds,
            "x": cx,
            "y": cy,
            "lon": np.asarray(lon, dtype=np.float64),
            "lat": np.asarray(lat, dtype=np.float64),
        }
        stack = plan.time == "stack"
        if stack:
            times = np.array(
                [np.datetime64("NaT", "ns") if t is None else t for t in plan.slot_times],
                dtype="datetime64[ns]",
            )
            coords["time"] = np.broadcast_to(times, (len(ids), len(times))).copy()
        image_dims = ("time", "band", "y", "x") if stack else ("band", "y", "x")
        data = {"image": out["image"]}
        dims: dict[str, tuple[str, ...]] = {"image": image_dims}
        attrs: dict[str, Any] = {"grid": plan.grid, "crs": plan.grid.crs, "time": plan.time}
        if self.labels is not None:
            data[self.labels.name] = out["label"]
            dims[self.labels.name] = ("y", "x")
            attrs["label_fill"] = self.labels.fill
            attrs["label_ignore"] = self.labels.ignore
        return Batch(
            data=data,
            dims=dims,
            starts={"y": rows, "x": cols},
            coords=coords,
            window_ids=ids,
            epoch=epoch,
            index=index,
            mask=out["valid"],
            mask_dims=image_dims,
            channels=plan.channels,
            attrs=attrs,
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
        """The global batches ``batches`` of the current epoch, read on a thread pool."""
        epoch = self._epoch
        order = self.order.epoch(epoch)
        report = ChipReport(epoch=epoch, shard=shard, num_shards=num_shards)
        self._report = report
        threads = num_threads or self.num_threads
        t0 = _time.perf_counter()
        pending: deque[tuple[int, np.ndarray, dict[str, np.ndarray], list[Future[None]]]] = deque()
        source = order.iter_batches(batches)
        h, w = self.chip_shape
        with ThreadPoolExecutor(threads, thread_name_prefix="earthstream-chips") as pool:
            try:
                while True:
                    while len(pending) < self.prefetch + 1:
                        nxt = next(source, None)
                        if nxt is None:
                            break
                        index, ids = nxt
                        out = self._allocate(len(ids))
                        starts = self.order.grid.starts_of(ids)
                        futures = [
                            pool.submit(
                                self._fill, i, PixelWindow(int(r), int(c), h, w), out, report
                            )
                            for i, (r, c) in enumerate(starts)
                        ]
                        pending.append((index, ids, out, futures))
                    if not pending:
                        break
                    index, ids, out, futures = pending.popleft()
                    for fut in futures:
                        fut.result()
                    report.batches += 1
                    report.elapsed_s = _time.perf_counter() - t0
                    yield self._batch(index, ids, out, epoch)
            finally:
                for _, _, _, futures in pending:
                    for fut in futures:
                        fut.cancel()
        report.elapsed_s = _time.perf_counter() - t0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_report"] = None
        return self._sharding_state(state)

    def __repr__(self) -> str:
        h, w = self.chip_shape
        return (
            f"<ChipStream {len(self.plan.scenes)} scenes, channels {list(self.channels)}, "
            f"time={self.plan.time!r} ({self.plan.n_time} slots); chips {h}x{w} on "
            f"{self.plan.grid!r}; {self.n_windows} chips in {len(self)} batches of "
            f"{self.order.batch_size}; shuffle={self.order.shuffle!r} seed={self.order.seed}"
            f"{'; labels ' + repr(redact(self.labels.source.url)) if self.labels else ''}>"
        )


def _file_dtype(ref: Any) -> str:
    dtype = ref.bands[0].dtype
    if dtype is None:
        from ..geo._gdal import gdal_env, open_dataset

        with gdal_env():
            return str(open_dataset(ref.path).dtypes[ref.bands[0].index - 1])
    return str(dtype)


def default_threads() -> int:
    try:
        return max(2, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 2
