"""The user-facing stream: windows of a source, shuffled, batched, in the background."""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ._batch import Batch, WindowLabels
from ._sharding import ShardedStream
from ._units import format_bytes, parse_bytes
from ._validate import (
    CORRUPT,
    MAX_SEED,
    MISSING,
    Corrupt,
    Missing,
    Shuffle,
    check_choice,
    check_flag,
    check_names,
    check_whole,
)
from .engine import (
    ChunkPolicy,
    Engine,
    EpochReport,
    StreamLayout,
    build_layout,
    plan_budget,
    sweep_size,
    union_dims,
    window_kind,
)
from .errors import ConfigError, DimensionError
from .sampling import EDGES, Edges, OrderSpec, Remainder, build_window_grid, normalize_shuffle
from .sampling._forecast import (
    Forecast,
    ForecastPlan,
    plan_forecast,
    position_encoding,
    split_forecast,
    time_encoding,
)
from .sampling._select import format_label, resolve_selection, selected_coords
from .sampling._subset import StreamContext, WindowSubset, as_subset
from .sampling._time import is_time_axis
from .sources import ChunkedSource, as_source, source_selection

__all__ = ["Stream"]

#: Most chunk groups mixed by the automatic shuffle buffer.
MAX_AUTO_SHUFFLE_BUFFER = 128


def latlon_dims(coords: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The names of the latitude and longitude dims among ``coords`` (None if absent)."""
    lat = next((d for d in ("lat", "latitude") if d in coords), None)
    lon = next((d for d in ("lon", "longitude") if d in coords), None)
    return lat, lon


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class Stream(ShardedStream):
    """Batches of windows cut from a source, in a shuffled order, assembled in the background.

    Parameters
    ----------
    source
        A :class:`~earthstream.sources.ChunkedSource` (e.g. from :func:`open_zarr`),
        a path/URL that is opened with :func:`open_zarr`, a zarr-python store (e.g.
        an Icechunk session's ``.store``), group or array, or an ``xarray.Dataset``
        / ``DataArray`` (see :func:`~earthstream.open_xarray`: a lazy Zarr-backed
        dataset streams through the store's chunks with the dataset's selection).
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
        names (``batch.channels``) instead of one array per variable: channels
        in the order of ``variables``, dims only some variables have (levels)
        expanded (``z[level=500]``); ``batch[name]`` are views of it.  With
        ``forecast=`` it is ``(B, C, T, *window)``, ``T`` the steps the samples
        read (``stream.forecast.steps``): the input steps first
        (``stacked[:, :, :inputs]``), then the targets
        (``stacked[:, :, inputs:]``), both views, as are ``batch[name]`` and
        ``batch["target/" + name]``.
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
        With ``corrupt="skip"``, the number of corrupt chunks an epoch tolerates
        before it stops with :class:`~earthstream.errors.CorruptChunksError`: per
        process, and for all DataLoader workers of :meth:`TorchStream.loader
        <earthstream.delivery.TorchStream.loader>` together (a counter they
        share); per rank under ``torch.distributed``.  A plain ``DataLoader``
        over ``stream.to_torch()`` counts per worker.
    rank, world_size
        This process's part of a distributed job.  Default: taken from
        ``torch.distributed`` when it is initialized, else from a multi-process
        JAX job (``jax.process_index()`` of ``jax.process_count()``), else ``0`` of ``1``.  Ranks
        serve disjoint contiguous runs of the epoch's batches.
    remainder
        Every rank yields ``len(stream)`` batches.  When the batches do not
        split evenly, ``"pad"`` (default) repeats the last batch on the ranks
        with one less, marking its samples in ``batch.padded``; ``"drop"``
        leaves the extra batches out of the epoch.
    forecast
        A :class:`~earthstream.Forecast` (or a mapping of its fields, e.g.
        ``{"inputs": 2, "lead": "24h"}``): each sample holds ``inputs`` steps up
        to a reference time ``t`` under each variable's name and the steps at
        ``t + lead`` under ``"target/<name>"``.  Reference times whose steps are
        not all present without a gap in the time coordinate are left out
        (counted in ``stream.forecast.dropped``).  ``batch.coords`` gains
        ``reference_time``, ``input_times`` and ``target_times``.
    sel, isel
        Dim -> label selection (``sel``, as ``xarray.Dataset.sel``: labels,
        ``slice(first, last)`` with both ends inclusive, in the coordinate's own
        direction, strings and partial dates on time axes) and dim -> position
        selection (``isel``), applied ``isel`` first, e.g.
        ``sel={"time": slice("1979", "2015"), "lat": slice(60, -60)}``.  Windows
        lie inside the selection (``edges="pad"`` pads past its end, never reads
        beyond it), ``batch.starts`` are positions within it (as after xarray's
        ``isel``) and ``coords`` its labels.  A single label or position drops the
        dim from the samples, as in xarray (it is iterated over its one
        position); a one-element slice keeps it.  Empty, inverted or stepped
        selections raise :class:`~earthstream.errors.SelectionError`.
    windows
        Which windows of the grid to keep: a rule such as
        :class:`~earthstream.MinValid` (windows whose valid fraction, from
        NaNs or a land/sea mask, reaches a threshold; read once, here) or a
        split's blocks (see :func:`~earthstream.split`), a
        :class:`~earthstream.sampling.WindowSubset`, a boolean array of shape
        ``stream.order.grid.counts``, or a list of them (all must keep a
        window).  What each left out is counted in ``stream.excluded``.
    samples_per_epoch
        Draw this many windows per epoch at random (uniformly over the
        windows kept; a pure function of ``(seed, epoch)``) instead of visiting
        every window once.  With ``stride=1`` on the windowed dims any offset
        can be drawn, as torchgeo's ``RandomGeoSampler``.  ``shuffle="chunks"``
        draws the sample chunk group by chunk group so each chunk is still
        decoded once per epoch.
    replacement
        With ``samples_per_epoch``: draw independently (windows may repeat
        within an epoch); default False: distinct windows (a simple random
        sample).
    encodings
        Extra per-sample features: ``"time"`` adds ``batch["time_encoding"]``
        ``(B, 4)``: sin/cos of day of year and hour of the reference time (the
        forecast's ``t``, else the window's first time step); ``"position"``
        adds ``batch["position_encoding"]`` ``(B, 4)``: sin/cos of the latitude
        and longitude of the window centre.

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

    Train on a period and a latitude band (latitude runs 90 -> -90 here):

    >>> train = es.Stream(path, window={"lat": 4, "lon": 8}, variables="t2m",
    ...                   sel={"time": slice("2020-01-01", "2020-01-01T12"),
    ...                        "lat": slice(60, -60)})
    >>> train.coords["time"].size, train.coords["lat"][[0, -1]].tolist(), train.n_windows
    (3, [54.0, -54.0], 24)
    """

    def __init__(
        self,
        source: ChunkedSource | str | os.PathLike[str] | Any,
        window: Mapping[str, int | None],
        stride: Mapping[str, int] | None = None,
        *,
        variables: Sequence[str] | str | None = None,
        edges: Edges = "drop",
        stack: bool = False,
        shuffle: Shuffle = "chunks",
        seed: int = 0,
        batch_size: int = 32,
        drop_last: bool = False,
        memory_limit: int | str = "1GB",
        prefetch: int = 2,
        num_threads: int | None = None,
        shuffle_buffer: int | None = None,
        missing: Missing = "fill",
        corrupt: Corrupt = "error",
        max_corrupt: int = 10,
        rank: int | None = None,
        world_size: int | None = None,
        remainder: Remainder = "pad",
        forecast: Forecast | Mapping[str, Any] | None = None,
        encodings: Sequence[str] = (),
        sel: Mapping[str, Any] | None = None,
        isel: Mapping[str, Any] | None = None,
        windows: Any = None,
        samples_per_epoch: int | None = None,
        replacement: bool = False,
    ) -> None:
        # -- every argument checked before anything is read (ConfigError) --
        chosen = check_names(variables, "variables")
        edges = check_choice(edges, "edges", EDGES)
        stack = check_flag(stack, "stack")
        seed = check_whole(seed, "seed", maximum=MAX_SEED)
        batch_size = check_whole(batch_size, "batch_size", minimum=1)
        drop_last = check_flag(drop_last, "drop_last")
        limit = parse_bytes(memory_limit)
        prefetch = check_whole(prefetch, "prefetch", minimum=1)
        num_threads = check_whole(num_threads, "num_threads", minimum=1, maximum=1024, none=True)
        shuffle_buffer = check_whole(shuffle_buffer, "shuffle_buffer", minimum=1, none=True)
        missing = check_choice(missing, "missing", MISSING)
        corrupt = check_choice(corrupt, "corrupt", CORRUPT)
        max_corrupt = check_whole(max_corrupt, "max_corrupt")
        encodings = check_names(encodings, "encodings", none=False) or ()
        order_kind = normalize_shuffle(shuffle)

        source = as_source(source)
        if chosen is not None:
            source = source.select(list(chosen))
        infos = list(source.variables.values())
        self.policy = ChunkPolicy(missing=missing, corrupt=corrupt, max_corrupt=max_corrupt)
        self._init_sharding(rank, world_size, remainder)

        full = union_dims(infos)
        chunks: dict[str, int] = {}
        for info in infos:
            for dim, chunk in zip(info.dims, info.chunks, strict=True):
                chunks.setdefault(dim, chunk)
        self._source = source
        self._spans = resolve_selection(
            full, source.coords, sel=sel, isel=isel, base=source_selection(source)
        )
        self._check_scalars(window, stride)
        sizes = {d: self._spans[d].size if d in self._spans else n for d, n in full.items()}
        origins = {d: span.start for d, span in self._spans.items()}
        self._coords = selected_coords(source.coords, self._spans)
        self.forecast: ForecastPlan | None = None
        if forecast is not None:
            forecast = Forecast.coerce(forecast)
            window = self._forecast_window(forecast, window, stride, edges)
            self.forecast = plan_forecast(forecast, self._coords, {v.name: v.dims for v in infos})
            window = {**window, forecast.dim: self.forecast.length}
        grid = build_window_grid(sizes, window, stride, edges, chunks, origins)
        if self.forecast is not None:
            # the window reads only the steps a sample uses, from each gap-free start
            grid = grid.with_offsets(self.forecast.dim, self.forecast.steps)
            grid = grid.with_starts(self.forecast.dim, self.forecast.starts)
        self.encodings = self._check_encodings(encodings, sizes)
        self.layout: StreamLayout = build_layout(infos, grid, stack=stack, coords=self._coords)
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
        self.subset: WindowSubset | None = None
        if windows is not None:
            context = StreamContext(
                source, dict(self._spans), self._coords, limit, self.num_threads
            )
            self.subset = as_subset(windows, grid, context)
        self.order = OrderSpec(
            grid=grid,
            shuffle=order_kind,
            seed=int(seed),
            batch_size=batch_size,
            drop_last=drop_last,
            shuffle_buffer=int(shuffle_buffer),
            subset=self.subset,
            samples=samples_per_epoch,
            replacement=bool(replacement),
        )
        # Fully shuffled batches that touch more chunks than fit: assemble in sweeps.
        self._sweep_batches = (
            sweep_size(self.layout, self.budget, batch_size) if order_kind == "full" else 0
        )
        self._engine: Engine | None = None
        self._engine_key: tuple[int, int, int] | None = None
        self._report: EpochReport | None = None

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
    def excluded(self) -> dict[str, int]:
        """Windows of the grid left out by ``windows=`` rules, by reason (empty: none)."""
        return dict(self.subset.excluded) if self.subset is not None else {}

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
        """1-D coordinates of the stream's dims, cut to the selection."""
        return self._coords

    @property
    def selection(self) -> dict[str, slice]:
        """The selected positions of the source's arrays per dim (``sel``/``isel`` resolved)."""
        return {d: span.as_slice() for d, span in self._spans.items()}

    def _check_scalars(
        self, window: Mapping[str, int | None] | None, stride: Mapping[str, int] | None
    ) -> None:
        for dim, span in self._spans.items():
            if span.scalar and (dim in (window or {}) or dim in (stride or {})):
                values = self._source.coords.get(dim)
                label = format_label(values[span.start]) if values is not None else "..."
                raise DimensionError(
                    f"{dim!r} is selected by a single label or position, which drops the dim "
                    f"as xarray does, so window= and stride= cannot name it. To keep {dim!r}, "
                    f"select a range: sel={{{dim!r}: slice({label}, {label})}} or "
                    f"isel={{{dim!r}: slice({span.start}, {span.stop})}} (positions in the "
                    "source)."
                )

    def _identity(self) -> tuple[dict[str, Any], Mapping[str, np.ndarray]]:
        described = {
            "variables": sorted(
                [v.name, list(v.dims), list(v.shape), v.dtype.str, list(v.chunks)]
                for v in self._source.variables.values()
            ),
            "grid": [dataclasses.astuple(a) for a in self.layout.grid.axes],
            "edges": self.layout.grid.edges,
            "selection": {d: [s.start, s.stop, s.scalar] for d, s in sorted(self._spans.items())},
        }
        if self.subset is not None:
            described["windows"] = self.subset.digest()
        if self.order.sequence is not None:
            described["sequence"] = self.order.sequence.digest()
        return described, self._coords

    @property
    def report(self) -> EpochReport | None:
        """What the last (or current) pass did: decodes, bytes, memory, requests, corrupt
        chunks.  After an epoch through :meth:`TorchStream.loader
        <earthstream.delivery.TorchStream.loader>` with workers: the sum of its workers'."""
        return self._report

    def _run(
        self, batches: Sequence[int], shard: int, num_shards: int, num_threads: int | None
    ) -> Iterator[Batch]:
        order = self.order.epoch(self._epoch)
        engine = self._engine_for(num_threads or self.num_threads)
        runner = engine.run(
            order,
            batches,
            shard=shard,
            num_shards=num_shards,
            corrupt_count=self._corrupt_count,
        )
        self._report = engine.report
        finish = self._finishes()
        sequence = self.order.sequence
        for batch in runner:
            self._report = engine.report
            if sequence is not None and sequence.is_padding(batch.index):
                batch = dataclasses.replace(batch, padded=np.ones(batch.size, dtype=bool))
            batch = self._with_window_coords(batch)
            yield self._finish(batch) if finish else batch

    def _with_window_coords(self, batch: Batch) -> Batch:
        """What each sample's coordinate labels along its windowed dims are cut from
        (``attrs["window_coords"]``, for :meth:`Batch.to_xarray`, which cuts them):
        per dim the span of labels the batch's windows cover (a view, no copy per
        batch) with its offset and the window length."""
        spans = {}
        for axis in self.layout.grid.axes:
            values = self._coords.get(axis.dim)
            if axis.squeeze or values is None or axis.dim not in batch.starts:
                continue
            starts = np.asarray(batch.starts[axis.dim])
            lo = int(starts.min()) if len(starts) else 0
            hi = int(starts.max()) + axis.length if len(starts) else 0
            spans[axis.dim] = WindowLabels(values[lo:hi], lo, axis.length)
        attrs = {**batch.attrs, "window_coords": spans}
        if self.forecast is not None:
            attrs["forecast_dim"] = self.forecast.dim
        return dataclasses.replace(batch, attrs=attrs)

    # -- forecasts and encodings ------------------------------------------------------
    def _finishes(self) -> bool:
        """Whether batches get a last step (:meth:`_finish`) after the engine."""
        return self.forecast is not None or bool(self.encodings)

    @staticmethod
    def _forecast_window(
        forecast: Forecast,
        window: Mapping[str, int | None],
        stride: Mapping[str, int] | None,
        edges: Edges,
    ) -> Mapping[str, int | None]:
        dim = forecast.dim
        if dim in (window or {}) or dim in (stride or {}):
            raise ConfigError(
                f"forecast sets the window along {dim!r} (inputs up to the lead); leave {dim!r} "
                "out of window= and stride= (use Forecast(every=n) to thin reference times)."
            )
        if edges != "drop":
            raise ConfigError(
                "edges='pad' with forecast= is not supported; forecast samples are whole "
                "windows. Use edges='drop' (the default)."
            )
        return dict(window or {})

    def _check_encodings(
        self, encodings: Sequence[str], sizes: Mapping[str, int]
    ) -> tuple[str, ...]:
        chosen = (encodings,) if isinstance(encodings, str) else tuple(encodings)
        for name in chosen:
            if name not in ("time", "position"):
                raise ConfigError(
                    f"encodings has {name!r}; the encodings are 'time' and 'position'."
                )
        if "time" in chosen and self._time_dim() is None:
            raise ConfigError(
                "encodings=('time',) needs a dim with a datetime coordinate; the stream has "
                f"coordinates {sorted(self._coords)}."
            )
        if "position" in chosen and None in self._latlon_dims():
            raise ConfigError(
                "encodings=('position',) needs latitude and longitude coordinates (dims named "
                f"lat/latitude and lon/longitude); the stream has {sorted(self._coords)}."
            )
        return chosen

    def _time_dim(self) -> str | None:
        if self.forecast is not None:
            return self.forecast.dim
        for dim, values in self._coords.items():
            if is_time_axis(values):
                return dim
        return None

    def _latlon_dims(self) -> tuple[str | None, str | None]:
        return latlon_dims(self._coords)

    def _centre(self, dim: str, starts: np.ndarray) -> np.ndarray:
        axis = self.layout.grid.axis(dim)
        values = self._coords[dim]
        lo = np.minimum(starts, len(values) - 1)
        hi = np.minimum(starts + axis.length - 1, len(values) - 1)
        return np.asarray((values[lo] + values[hi]) / 2.0)

    def _finish(self, batch: Batch) -> Batch:
        """Forecast split and encodings: the last step in the worker, on whole batches."""
        data: dict[str, np.ndarray] = dict(batch.data)
        dims: dict[str, tuple[str, ...]] = dict(batch.dims)
        coords = dict(batch.coords)
        reference = None
        plan = self.forecast
        if plan is not None:
            data, dims = split_forecast(data, dims, plan)
            time = self._coords[plan.dim]
            s = batch.starts[plan.dim]
            reference = time[s + plan.reference_offset]
            coords["reference_time"] = reference
            coords["input_times"] = time[s[:, None] + np.asarray(plan.input_offsets)]
            coords["target_times"] = time[s[:, None] + np.asarray(plan.target_offsets)]
        if "time" in self.encodings:
            if reference is None:
                dim = self._time_dim()
                assert dim is not None  # checked at construction
                reference = self._coords[dim][batch.starts[dim]]
            data["time_encoding"] = time_encoding(reference)
            dims["time_encoding"] = ("encoding",)
        if "position" in self.encodings:
            lat, lon = self._latlon_dims()
            assert lat is not None and lon is not None  # checked at construction
            data["position_encoding"] = position_encoding(
                self._centre(lat, batch.starts[lat]), self._centre(lon, batch.starts[lon])
            )
            dims["position_encoding"] = ("encoding",)
        return dataclasses.replace(batch, data=data, dims=dims, coords=coords)

    def _engine_for(self, num_threads: int) -> Engine:
        """This process's engine; it keeps its chunk slots from one epoch to the next."""
        key = (os.getpid(), num_threads, id(self._memory))
        if self._engine is None or self._engine_key != key:
            self._engine = Engine(
                [self._source],
                window_kind(self.layout, self._coords),
                self.budget,
                num_threads=num_threads,
                lookahead=self._lookahead(),
                sweep_batches=self._sweep_batches,
                policy=self.policy,
                memory=self._memory,
            )
            self._engine_key = key
        return self._engine

    def with_order(self, order: OrderSpec) -> Stream:
        """This stream (source, windows, budget, placement) following another order.

        ``order`` must be over the same window grid, e.g. a planned inference
        sequence (:class:`~earthstream.PredictionWriter` builds one).  The copy
        starts at epoch 0 with no resume state and its own engine.
        """
        if order.grid != self.order.grid:
            raise ConfigError("with_order() needs an order over this stream's window grid.")
        new = copy.copy(self)
        new.order = order
        new._engine = None
        new._engine_key = None
        new._report = None
        new._epoch = 0
        new._advance = False
        new._pending = new._live = None
        new._fingerprint = None
        new._sweep_batches = self._sweep_batches if order.shuffle == "full" else 0
        return new

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

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_report"] = None
        state["_engine"] = None
        state["_engine_key"] = None
        return self._sharding_state(state)

    def _count_text(self) -> str:
        o = self.order
        if o.samples is None:
            return f"{self.n_windows} windows"
        how = "with" if o.replacement else "without"
        return f"{o.samples} random windows of {o.n_set} ({how} replacement)"

    def __repr__(self) -> str:
        grid = self.layout.grid
        window = ", ".join(f"{a.dim}={a.length}" for a in grid.axes if not a.squeeze)
        iterated = ", ".join(a.dim for a in grid.axes if a.squeeze) or "none"
        selected = ", ".join(f"{d}={s.start}:{s.stop}" for d, s in self._spans.items())
        return (
            f"<Stream {len(self.variables)} variables ({', '.join(self.variables)}); "
            f"window {window or 'none'}; iterated {iterated}; "
            f"{f'selection {selected}; ' if selected else ''}"
            f"{f'{self.subset.describe()}; ' if self.subset is not None else ''}"
            f"{self._count_text()} in "
            f"{len(self)} batches of {self.order.batch_size}; shuffle={self.order.shuffle!r} "
            f"seed={self.order.seed} epoch={self._epoch}; rank {self.rank} of {self.world_size}; "
            f"memory_limit={format_bytes(self.budget.memory_limit)}>"
        )
