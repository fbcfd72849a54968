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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._batch import Batch
from .._sharding import ShardedStream
from .._validate import (
    MAX_SEED,
    Shuffle,
    check_choice,
    check_flag,
    check_names,
    check_numbers,
    check_whole,
)
from ..errors import ConfigError
from ..sampling import (
    EDGES,
    Edges,
    OrderSpec,
    Remainder,
    as_subset,
    build_window_grid,
    normalize_shuffle,
)
from ..storage._secrets import redact
from ._grid import GridSpec, PixelWindow, transformer
from ._plan import GROUP_BY, TIME_MODES, ChipPlan, GroupBy, TimeMode, build_plan
from ._read import decode, read_chip

if TYPE_CHECKING:
    from ..vector._source import VectorSource

__all__ = ["ChipReport", "ChipStream", "LabelSpec", "stream_chips"]


@dataclass(frozen=True)
class LabelSpec:
    """How labels are burned into each chip.

    ``fill`` is the background (no feature); ``ignore`` marks pixels past the
    target grid's edge (``edges="pad"``), where there is no data to label.
    """

    source: VectorSource
    name: str = "label"
    all_touched: bool = False
    fill: int = 0
    dtype: str = "uint8"
    ignore: int = 255


def label_values(dtype: Any, fill: Any, ignore: Any) -> tuple[str, int, int]:
    """Check the label dtype, background and ignore values: ``(dtype, fill, ignore)``.

    ``ignore=None`` takes the dtype's largest value (255 for uint8), or -1 for
    signed dtypes.

    >>> label_values("uint8", 0, None)
    ('uint8', 0, 255)
    >>> label_values("int16", 0, None)
    ('int16', 0, -1)
    """
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = np.dtype("O")
    if np_dtype.kind not in "iu":
        raise ConfigError(
            f"label_dtype={dtype!r} must be an integer dtype, e.g. 'uint8' or 'int32'."
        )
    info = np.iinfo(np_dtype)
    if ignore is None:
        ignore = info.max if np_dtype.kind == "u" else -1
    for name, value in (("label_fill", fill), ("label_ignore", ignore)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"{name}={value!r} must be a whole number.")
        if not info.min <= value <= info.max:
            raise ConfigError(
                f"{name}={value} does not fit label_dtype={np_dtype.name} "
                f"({info.min}..{info.max}); pick another value or a wider dtype."
            )
    if ignore == fill:
        raise ConfigError(
            f"label_ignore={ignore} equals label_fill={fill}: pixels past the grid's edge "
            "(edges='pad') would look like background. Give them different values."
        )
    return np_dtype.name, int(fill), int(ignore)


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
        remainder: str = "pad",
    ) -> None:
        self.plan = plan
        self.order = order
        self.labels = labels
        self.prefetch = prefetch
        self.num_threads = num_threads or _default_threads()
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


def _pixels(value: Any, name: str) -> tuple[int, int]:
    """A size or step in pixels: one whole number, or ``(rows, columns)``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ConfigError(f"{name}={value!r} must be one number of pixels or (rows, columns).")
        return check_whole(value[0], name, minimum=1), check_whole(value[1], name, minimum=1)
    n = check_whole(value, name, minimum=1)
    return n, n


def _file_dtype(ref: Any) -> str:
    dtype = ref.bands[0].dtype
    if dtype is None:
        from ._gdal import gdal_env, open_dataset

        with gdal_env():
            return str(open_dataset(ref.path).dtypes[ref.bands[0].index - 1])
    return str(dtype)


def _default_threads() -> int:
    try:
        return max(2, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 2


def stream_chips(
    sources: Any,
    *,
    chip_size: int | tuple[int, int] = 256,
    stride: int | tuple[int, int] | None = None,
    assets: Sequence[str] | None = None,
    bands: Sequence[str | int] | None = None,
    grid: GridSpec | str | None = None,
    crs: Any = None,
    resolution: float | Sequence[float] | None = None,
    bounds: Sequence[float] | None = None,
    bounds_crs: Any = None,
    resampling: str | Mapping[str, str] = "nearest",
    time: TimeMode = "mosaic",
    group_by: GroupBy = "datetime",
    overview: str | int | None = "auto",
    labels: VectorSource | None = None,
    label_name: str = "label",
    all_touched: bool = False,
    label_fill: int = 0,
    label_dtype: str = "uint8",
    label_ignore: int | None = None,
    projection: Mapping[str, Any] | None = None,
    missing_projection: Literal["error", "read"] = "error",
    edges: Edges = "drop",
    batch_size: int = 16,
    shuffle: Shuffle = "chunks",
    shuffle_block: int = 4,
    shuffle_buffer: int = 4,
    seed: int = 0,
    drop_last: bool = False,
    prefetch: int = 2,
    num_threads: int | None = None,
    apply_scale: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    remainder: Remainder = "pad",
    windows: Any = None,
    samples_per_epoch: int | None = None,
    replacement: bool = False,
) -> ChipStream:
    """Stream chips from STAC items or COGs on one target grid, with optional label masks.

    Parameters
    ----------
    sources
        STAC items (a catalog/collection/ItemCollection/stac-geoparquet path or URL,
        pystac items, an ``ItemSearch``, item dicts), or COGs (paths/URLs or
        :class:`~earthstream.COGSource`).
    chip_size, stride
        Chip height/width in target pixels; step between chips (default: side by side).
    assets, bands
        STAC assets to read (default: the GeoTIFF data assets of the first item),
        or bands of the COGs (names or 1-based indexes).
    grid
        The target grid: a :class:`~earthstream.geo.GridSpec`, ``"first"`` (the
        first source's grid), or ``None`` to build it from ``crs``,
        ``resolution`` (CRS units) and ``bounds`` (in ``bounds_crs``, default
        ``crs``; default bounds: all sources).  ``crs`` defaults to the first
        source's, and with it ``resolution``.
    resampling
        One method, or ``{channel: method, "default": method}``.
    time
        ``"mosaic"``: overlapping scenes mosaicked in the given order, first valid
        pixel wins.  ``"stack"``: one time slot per distinct datetime (or
        ``group_by="day"``), scenes of a slot mosaicked.
    overview
        ``"auto"`` reads the overview matching the target resolution; ``None``
        always full resolution.
    labels
        A :func:`~earthstream.open_vector` source burned per chip into
        ``batch[label_name]`` (``all_touched``, ``label_fill``: the background,
        ``label_dtype``).
    label_ignore
        The label of pixels past the target grid's edge (``edges="pad"``), for a
        loss to ignore; must differ from ``label_fill``.  Default: the dtype's
        largest value (255 for uint8), -1 for signed dtypes.  Also in
        ``batch.attrs["label_ignore"]``.
    projection, missing_projection
        For STAC assets without projection metadata: the grid to assume
        (``{"crs", "transform", "shape"}``), or ``"read"`` the file headers.
    edges
        ``"drop"`` chips reaching past the target grid, or ``"pad"`` them: past
        the grid's edge nothing is read, the image is NaN, ``batch.mask`` False
        and labels ``label_ignore``.
    batch_size, shuffle, shuffle_block, shuffle_buffer, seed, drop_last
        As :class:`earthstream.Stream`; ``shuffle="chunks"`` mixes chips of
        ``shuffle_buffer`` blocks of ``shuffle_block`` x ``shuffle_block`` chips.
    prefetch, num_threads
        Batches read ahead; threads reading chips.
    apply_scale
        Values as ``raw * scale + offset`` (float32); else raw values in float32.
    rank, world_size, remainder
        As :class:`earthstream.Stream`: each rank of a distributed job serves its
        share of the epoch, every rank the same number of batches; the stream
        has ``state_dict`` / ``load_state_dict`` for mid-epoch resume.
    windows
        Which chips of the grid to keep, as :class:`earthstream.Stream`'s
        ``windows=`` (pure rules only): e.g. one split of a spatial block
        assignment, ``earthstream.sampling.BlockSplit(name, {"y": 1024, "x":
        1024}, assign_blocks(...), split, buffer=32)``, or a boolean mask over
        the chip grid.
    samples_per_epoch, replacement
        Random chips per epoch instead of every chip once, as ``Stream``'s
        (with ``stride=1`` any pixel offset can be drawn).
    """
    # -- every argument checked before anything is read (ConfigError) --
    ch, cw = _pixels(chip_size, "chip_size")
    sh, sw = (ch, cw) if stride is None else _pixels(stride, "stride")
    assets = check_names(assets, "assets")
    if bands is not None and (
        isinstance(bands, str)
        or not isinstance(bands, Sequence)
        or not all(isinstance(b, str | int) and not isinstance(b, bool) for b in bands)
    ):
        raise ConfigError(f"bands={bands!r} must be a list of band names or 1-based indexes.")
    if resolution is not None:
        check_numbers(resolution, "resolution", lengths=(2,), scalar=True, above=0)
    if bounds is not None:
        check_numbers(bounds, "bounds", lengths=(4,))
    elif bounds_crs is not None:
        raise ConfigError(
            f"bounds_crs={bounds_crs!r} is the CRS of bounds=, which was not given; pass "
            "bounds=(left, bottom, right, top) too, or leave bounds_crs out."
        )
    if not isinstance(resampling, str | Mapping):
        raise ConfigError(
            f"resampling={resampling!r} must be a method name or {{channel: method}}."
        )
    time = check_choice(time, "time", TIME_MODES)
    group_by = check_choice(group_by, "group_by", GROUP_BY)
    if not (overview is None or (isinstance(overview, str) and overview == "auto")):
        check_whole(overview, "overview", maximum=64)
    if not isinstance(label_name, str) or not label_name:
        raise ConfigError(f"label_name={label_name!r} must be a non-empty name.")
    all_touched = check_flag(all_touched, "all_touched")
    if projection is not None and not isinstance(projection, Mapping):
        raise ConfigError(
            f"projection={projection!r} must be a mapping with 'crs', 'transform' and 'shape'."
        )
    missing_projection = check_choice(missing_projection, "missing_projection", ("error", "read"))
    edges = check_choice(edges, "edges", EDGES)
    batch_size = check_whole(batch_size, "batch_size", minimum=1)
    normalize_shuffle(shuffle)
    shuffle_block = check_whole(shuffle_block, "shuffle_block", minimum=1)
    shuffle_buffer = check_whole(shuffle_buffer, "shuffle_buffer", minimum=1)
    seed = check_whole(seed, "seed", maximum=MAX_SEED)
    drop_last = check_flag(drop_last, "drop_last")
    prefetch = check_whole(prefetch, "prefetch", minimum=1)
    num_threads = check_whole(num_threads, "num_threads", minimum=1, maximum=1024, none=True)
    apply_scale = check_flag(apply_scale, "apply_scale")
    label_values(label_dtype, label_fill, label_ignore)

    plan = build_plan(
        sources,
        assets=assets,
        bands=bands,
        grid=grid,
        crs=crs,
        resolution=resolution,
        bounds=bounds,
        bounds_crs=bounds_crs,
        chip_size=(ch, cw),
        resampling=resampling,
        time=time,
        group_by=group_by,
        overview=overview,
        projection=projection,
        missing_projection=missing_projection,
        edges=edges,
    )
    sizes = {"y": plan.grid.height, "x": plan.grid.width}
    chips = build_window_grid(
        sizes,
        {"y": ch, "x": cw},
        {"y": sh, "x": sw},
        edges,
        {"y": sh * shuffle_block, "x": sw * shuffle_block},
    )
    order = OrderSpec(
        grid=chips,
        shuffle=normalize_shuffle(shuffle),
        seed=int(seed),
        batch_size=batch_size,
        drop_last=drop_last,
        shuffle_buffer=shuffle_buffer,
        subset=None if windows is None else as_subset(windows, chips),
        samples=samples_per_epoch,
        replacement=bool(replacement),
    )
    label_spec = None
    if labels is not None:
        dtype_name, fill, ignore = label_values(label_dtype, label_fill, label_ignore)
        label_spec = LabelSpec(labels, label_name, all_touched, fill, dtype_name, ignore)
    return ChipStream(
        plan,
        order,
        labels=label_spec,
        prefetch=prefetch,
        num_threads=num_threads,
        apply_scale=apply_scale,
        rank=rank,
        world_size=world_size,
        remainder=remainder,
    )
