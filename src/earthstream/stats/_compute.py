"""``compute_stats``: per-variable statistics of a store on Dask distributed.

The work is split by chunk: each task reads a run of consecutive chunks of one
variable with ``source.read_chunk`` (no dask arrays, no xarray) and returns a
small :class:`~earthstream.stats._moments.Moments`.  Partial results are merged
on the workers in a fixed tree (fan-in 8, in task order), and reads are
submitted a bounded number at a time, so memory stays bounded on any store
size.  Tasks and the merge tree depend only on the data and ``task_bytes``,
never on the cluster, so the result is the same (bit for bit) with any number
of workers.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._names import suggest
from .._units import parse_bytes
from .._validate import check_flag, check_names, check_number, check_whole
from ..errors import ConfigError, DimensionError
from ..sampling._select import Span, format_label, resolve_selection
from ..sampling._time import format_time, is_cftime_axis
from ..sources import ChunkedSource, VariableInfo, as_source, source_selection
from ..sources._cf import fill_values
from ..sources._xarray import is_xarray
from ._moments import DEFAULT_COMPRESSION, Moments
from ._result import Stats, VariableStats

__all__ = ["DEFAULT_PER", "compute_stats", "selection_spans"]

#: Dims kept as separate statistics when present (``per=None``).
DEFAULT_PER = ("level", "band")
_FAN_IN = 8

Selection = Mapping[str, "slice | tuple[Any, Any] | int"]


@dataclass(frozen=True)
class _Task:
    """Consecutive chunks of one variable, with what the reader needs to crop and group."""

    name: str
    indices: tuple[tuple[int, ...], ...]
    ranges: tuple[tuple[int, int], ...]  # selected index range along each dim
    per_axes: tuple[int, ...]
    nodata: tuple[float, ...]
    compression: float
    nbytes: int  # decoded bytes of the selection these chunks cover
    # where=: a boolean mask over some axes, cropped to these chunks (selection positions
    # from where_origin), in the order of where_axes
    where_axes: tuple[int, ...] = ()
    where_mask: np.ndarray | None = None
    where_origin: tuple[int, ...] = ()


# -- worker side ------------------------------------------------------------------------
def _read_task(source: ChunkedSource, task: _Task) -> dict[str, Moments]:
    """Read the task's chunks and return the moments of their valid values per group."""
    info = source.variables[task.name]
    group_shape = tuple(task.ranges[a][1] - task.ranges[a][0] for a in task.per_axes)
    n_groups = math.prod(group_shape)
    found: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
    rest = [a for a in range(info.ndim) if a not in task.per_axes]
    for index in task.indices:
        data = source.read_chunk(task.name, index)
        if data is None:  # not stored: the (decoded) fill value everywhere, as xarray reads it
            fill = info.fill_value
            if fill is None or (isinstance(fill, float) and math.isnan(fill)):
                continue  # NaN is never counted
            data = np.full(info.chunks, fill, info.dtype)
        region = []
        offsets = []
        for axis, (i, c) in enumerate(zip(index, info.chunks, strict=True)):
            lo, hi = task.ranges[axis]
            start = max(lo, i * c)
            stop = min(hi, (i + 1) * c)
            region.append(slice(start - i * c, stop - i * c))
            offsets.append(start - lo)
        block = np.asarray(data)[tuple(region)]
        where = None
        if task.where_mask is not None:
            axes = task.where_axes
            cut = tuple(
                slice(offsets[a] - o, offsets[a] - o + block.shape[a])
                for a, o in zip(axes, task.where_origin, strict=True)
            )
            part = task.where_mask[cut].transpose(np.argsort(axes))
            shape = [block.shape[a] if a in axes else 1 for a in range(block.ndim)]
            where = np.broadcast_to(part.reshape(shape), block.shape)
            where = where.transpose(*task.per_axes, *rest)
        block = block.transpose(*task.per_axes, *rest)
        local = block.shape[: len(task.per_axes)]
        rows = block.reshape(math.prod(local), -1)
        where_rows = None if where is None else where.reshape(math.prod(local), -1)
        for r, local_index in enumerate(np.ndindex(*local)):
            row = rows[r]
            valid = np.isfinite(row) if row.dtype.kind in "fc" else None
            for value in task.nodata:
                keep = row != value
                valid = keep if valid is None else valid & keep
            if where_rows is not None:
                valid = where_rows[r] if valid is None else valid & where_rows[r]
            values = row if valid is None else row[valid]
            if not len(values):
                continue
            glob = tuple(offsets[a] + j for a, j in zip(task.per_axes, local_index, strict=True))
            g = int(np.ravel_multi_index(glob, group_shape)) if glob else 0
            found[g].append(np.array(values, copy=True) if valid is None else values)
    groups = [
        np.concatenate(v) if len(v) > 1 else (v[0] if v else np.zeros(0, info.dtype)) for v in found
    ]
    return {task.name: Moments.from_groups(groups, task.compression)}


def _merge(*parts: dict[str, Moments]) -> dict[str, Moments]:
    """Merge partial results variable by variable, in the given order."""
    by_name: dict[str, list[Moments]] = {}
    for part in parts:
        for name, moments in part.items():
            by_name.setdefault(name, []).append(moments)
    return {name: Moments.merge(ms) if len(ms) > 1 else ms[0] for name, ms in by_name.items()}


# -- planning -------------------------------------------------------------------------
def _is_label(value: Any) -> bool:
    return value is not None and not isinstance(value, int | np.integer)


def _legacy_selection(
    selection: Selection,
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The old ``selection=`` (integers are positions, end exclusive; anything else
    labels, end inclusive) as ``sel``/``isel``, and the call to write instead."""
    if not isinstance(selection, Mapping):
        raise ConfigError(f"selection={selection!r} must be a mapping from dim to a range.")
    sel: dict[str, Any] = {}
    isel: dict[str, Any] = {}
    for dim, value in selection.items():
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            isel[dim] = slice(int(value), int(value) + 1)
            continue
        if isinstance(value, tuple) and len(value) == 2:
            value = slice(*value)
        if not isinstance(value, slice):
            raise ConfigError(
                f"selection[{dim!r}]={value!r} is not a selection; write "
                f"sel={{{dim!r}: slice(first, last)}} (labels) or isel={{{dim!r}: slice(start, "
                "stop)}} (positions)."
            )
        if _is_label(value.start) or _is_label(value.stop):
            sel[dim] = value
        else:
            isel[dim] = value
    parts = []
    for name, given in (("sel", sel), ("isel", isel)):
        if given:
            body = ", ".join(f"{d!r}: {_slice_text(v)}" for d, v in given.items())
            parts.append(f"{name}={{{body}}}")
    return sel, isel, ", ".join(parts)


def _slice_text(value: slice) -> str:
    bounds = [format_label(value.start), format_label(value.stop)]
    if value.step is not None:
        bounds.append(format_label(value.step))
    return f"slice({', '.join(bounds)})"


def selection_spans(
    source: ChunkedSource,
    sel: Mapping[str, Any] | None = None,
    isel: Mapping[str, Any] | None = None,
) -> dict[str, Span]:
    """The position ranges ``sel``/``isel`` select in ``source`` (after its own selection).

    The same rules as :class:`~earthstream.Stream`'s ``sel``/``isel`` (xarray's).

    >>> import numpy as np, earthstream as es
    >>> lat = np.linspace(89.5, -89.5, 180)
    >>> src = es.ArraySource({"x": (("lat",), np.zeros(180))}, coords={"lat": lat})
    >>> selection_spans(src, sel={"lat": slice(29.5, -29.5)})
    {'lat': Span(start=60, stop=120, scalar=False)}
    """
    sizes: dict[str, int] = {}
    for info in source.variables.values():
        for dim, size in zip(info.dims, info.shape, strict=True):
            sizes.setdefault(dim, size)
    base = source_selection(source)
    if not sel and not isel and not base:
        return {}
    coords = source.coords if sel else {}
    return resolve_selection(sizes, coords, sel=sel, isel=isel, base=base)


def _check_nodata(nodata: Any) -> None:
    """``"fill"``, ``None``, a finite number, or a name -> one of those; else ConfigError."""
    values = nodata.values() if isinstance(nodata, Mapping) else [nodata]
    for value in values:
        if value is None or (isinstance(value, str) and value == "fill"):
            continue
        if isinstance(value, str):
            raise ConfigError(
                f"nodata={nodata!r}: use 'fill' (each variable's fill value and nodata "
                "attributes), None (only NaN is excluded), a number, or a name -> value mapping."
            )
        check_number(value, "nodata")


def _nodata_of(info: VariableInfo, nodata: Any) -> tuple[float, ...]:
    """The values left out besides NaN.

    ``"fill"``: what xarray masks.  A CF-decoded variable already holds NaN
    there, so nothing more; a variable read raw (``mask_and_scale=False``) leaves
    out its stored ``_FillValue``/``missing_value`` (and a Zarr v2 ``fill_value``).
    """
    if isinstance(nodata, Mapping):
        nodata = nodata.get(info.name, "fill")
    if nodata is None:
        return ()
    if isinstance(nodata, str):
        if nodata != "fill":
            raise ConfigError(
                f"nodata={nodata!r}: use 'fill' (the values xarray masks), None (only NaN "
                "is excluded), a number, or a name -> value mapping."
            )
        if info.cf is not None:
            return ()
        values = []
        for value in fill_values(info.attrs, info.dtype):
            number = isinstance(value, int | float | np.number) and not isinstance(value, bool)
            if number:
                values.append(float(value))
        return tuple(values)
    return (float(nodata),)


def _tasks(
    source: ChunkedSource,
    names: Sequence[str],
    ranges: Mapping[str, tuple[int, int]],
    per: Sequence[str],
    nodata: Any,
    task_bytes: int,
    compression: float,
    where: tuple[tuple[str, ...], np.ndarray] | None = None,
) -> tuple[list[_Task], dict[str, tuple[tuple[int, int], ...]]]:
    tasks: list[_Task] = []
    var_ranges: dict[str, tuple[tuple[int, int], ...]] = {}
    for name in names:
        info = source.variables[name]
        vr = tuple(ranges.get(d, (0, n)) for d, n in zip(info.dims, info.shape, strict=True))
        var_ranges[name] = vr
        per_axes = tuple(info.dims.index(d) for d in per if d in info.dims)
        value = _nodata_of(info, nodata)
        axes = [range(lo // c, -(-hi // c)) for (lo, hi), c in zip(vr, info.chunks, strict=True)]
        step = max(1, task_bytes // max(1, info.chunk_nbytes))
        itemsize = info.dtype.itemsize
        it: Iterator[tuple[int, ...]] = itertools.product(*axes)
        while run := tuple(itertools.islice(it, step)):
            nbytes = 0
            for index in run:
                n = itemsize
                for (lo, hi), i, c in zip(vr, index, info.chunks, strict=True):
                    n *= min(hi, (i + 1) * c) - max(lo, i * c)
                nbytes += n
            task = _Task(name, run, vr, per_axes, value, compression, nbytes)
            if where is not None:
                task = _with_where(task, info, where)
            tasks.append(task)
    return tasks, var_ranges


def _with_where(
    task: _Task, info: VariableInfo, where: tuple[tuple[str, ...], np.ndarray]
) -> _Task:
    """The task with the part of the ``where`` mask its chunks cover."""
    dims, mask = where
    missing = [d for d in dims if d not in info.dims]
    if missing:
        raise DimensionError(
            f"where= is a mask over {dims}, but {info.name!r} has no {', '.join(missing)} dim "
            f"(dims {info.dims}); measure it separately without where=."
        )
    axes = tuple(info.dims.index(d) for d in dims)
    cut, origin = [], []
    for a in axes:
        lo, hi = task.ranges[a]
        c = info.chunks[a]
        first = min(index[a] for index in task.indices)
        last = max(index[a] for index in task.indices)
        start, stop = max(lo, first * c) - lo, min(hi, (last + 1) * c) - lo
        cut.append(slice(start, stop))
        origin.append(start)
    return dataclasses.replace(
        task,
        where_axes=axes,
        where_mask=np.ascontiguousarray(mask[tuple(cut)]),
        where_origin=tuple(origin),
    )


def _check_where(
    where: Any, var_dims: Mapping[str, int], spans: Mapping[str, Span]
) -> tuple[tuple[str, ...], np.ndarray] | None:
    """``where=`` as ``(dims, bool mask)`` over the selection, checked."""
    if where is None:
        return None
    if isinstance(where, tuple) and len(where) == 2:
        dims, mask = tuple(str(d) for d in where[0]), np.asarray(where[1])
    elif is_xarray(where) and isinstance(where, sys.modules["xarray"].DataArray):
        dims, mask = tuple(str(d) for d in where.dims), np.asarray(where.values)
    else:
        raise ConfigError(
            "where= must be (dims, boolean array) or a boolean xarray.DataArray over some dims "
            "of the selection."
        )
    if mask.dtype != bool or mask.ndim != len(dims):
        raise ConfigError(
            f"where= needs a boolean array with one axis per dim {dims}; got {mask.dtype} with "
            f"shape {mask.shape}."
        )
    for dim, n in zip(dims, mask.shape, strict=True):
        if dim not in var_dims:
            raise DimensionError(f"where= names dim {dim!r}, which no selected variable has.")
        size = spans[dim].size if dim in spans else var_dims[dim]
        if dim in spans and spans[dim].scalar:
            raise DimensionError(f"where= names {dim!r}, which the selection drops.")
        if n != size:
            raise ConfigError(
                f"where= has {n} positions along {dim!r}; the selection has {size}. The mask "
                "covers the selection (positions after sel/isel)."
            )
    return dims, mask


# -- drivers ------------------------------------------------------------------------------
class _Tree:
    """A fixed merge tree: nodes merge ``_FAN_IN`` consecutive results of the level below."""

    def __init__(self, submit: Callable[..., Any]) -> None:
        self.submit = submit
        self.levels: list[list[Any]] = []

    def push(self, item: Any, level: int = 0) -> None:
        if level == len(self.levels):
            self.levels.append([])
        self.levels[level].append(item)
        if len(self.levels[level]) == _FAN_IN:
            items, self.levels[level] = self.levels[level], []
            self.push(self.submit(_merge, *items), level + 1)

    def root(self) -> Any:
        carry: list[Any] = []
        for items in self.levels:
            items = items + carry  # lower levels hold later data: keep data order
            carry = [self.submit(_merge, *items)] if len(items) > 1 else items
        return carry[0] if carry else None


def _run_sync(source: ChunkedSource, tasks: Sequence[_Task], bar: Any) -> dict[str, Moments]:
    tree = _Tree(lambda fn, *args: fn(*args))
    for task in tasks:
        tree.push(_read_task(source, task))
        if bar is not None:
            bar.update(task.nbytes)
    root = tree.root()
    return {} if root is None else dict(root)


def _run_dask(
    client: Any, source: ChunkedSource, tasks: Sequence[_Task], bar: Any
) -> dict[str, Moments]:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    counter = itertools.count()

    def submit(fn: Callable[..., Any], *args: Any) -> Any:
        kind = "read" if fn is _read_task else "merge"
        return client.submit(fn, *args, key=f"earthstream-stats-{kind}-{token}-{next(counter)}")

    threads = sum(client.nthreads().values()) or 1
    max_in_flight = max(8, 4 * threads)
    src = client.scatter(source, broadcast=True, hash=False)
    tree = _Tree(submit)
    sizes: dict[str, int] = {}
    pending = iter(tasks)

    def next_read() -> Any:
        task = next(pending, None)
        if task is None:
            return None
        future = submit(_read_task, src, task)
        sizes[future.key] = task.nbytes
        tree.push(future)  # its merge is submitted as soon as 8 reads are
        return future

    first = [f for f in (next_read() for _ in range(max_in_flight)) if f is not None]
    done = as_completed(first)
    for future in done:
        if future.status == "error":
            future.result()  # raises the task's exception here
        if bar is not None:
            bar.update(sizes.pop(future.key, 0))
        else:
            sizes.pop(future.key, None)
        following = next_read()
        if following is not None:
            done.add(following)
    root = tree.root()
    return {} if root is None else dict(root.result())


def _client(scheduler: Any, n_workers: int, threads_per_worker: int) -> tuple[Any, list[Any]]:
    """The client to use and what to close afterwards."""
    if not isinstance(scheduler, str | type(None)):
        return scheduler, []  # an existing distributed.Client: the caller owns it
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - distributed is in the bench extra
        raise ImportError(
            "compute_stats needs dask.distributed: pip install 'dask[distributed]' "
            "(or pass scheduler='sync' to compute in this process)."
        ) from exc
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=":0",  # any free port: never clashes
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        return client, [client, cluster]
    client = Client(scheduler)
    return client, [client]


def compute_stats(
    source: ChunkedSource | str | os.PathLike[str] | Any,
    variables: Sequence[str] | str | None = None,
    *,
    per: Sequence[str] | None = None,
    sel: Mapping[str, Any] | None = None,
    isel: Mapping[str, Any] | None = None,
    selection: Selection | None = None,
    quantiles: Sequence[float] = (0.01, 0.5, 0.99),
    nodata: Any = "fill",
    scheduler: Any = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    task_bytes: int | str = "16MB",
    compression: float = DEFAULT_COMPRESSION,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    where: Any = None,
) -> Stats:
    """Count, mean, std, min, max and quantiles of each variable, streamed over the chunks.

    Every chunk of the selection is read once, in parallel on Dask distributed
    workers; each task reads a run of chunks (about ``task_bytes`` decoded)
    and returns a small mergeable accumulator, so memory stays bounded.  Mean,
    std (population, ``ddof=0``), min, max and count are exact up to
    floating-point rounding; quantiles come from a merging t-digest (rank
    error typically below 0.1%, see :mod:`earthstream.stats`).

    Parameters
    ----------
    source
        A source (e.g. from :func:`~earthstream.open_zarr`), or anything ``open_zarr``
        opens: a path/URL, a zarr-python store, group or array, or an
        ``xarray.Dataset``/``DataArray`` (see :func:`~earthstream.open_xarray`).
    variables
        Variables to measure (default: all).
    per
        Dims whose positions get separate statistics (e.g. pressure levels);
        default ``("level", "band")`` wherever a variable has them; ``()`` for one
        set of statistics per variable.
    sel, isel
        What to measure, as :class:`~earthstream.Stream` and xarray select it:
        ``sel`` by labels (``slice(first, last)``, both ends inclusive, in the
        coordinate's own direction, e.g. ``{"time": slice("1979", "2015"),
        "lat": slice(60, -60)}``), ``isel`` by positions.  A single label or
        position drops the dim, so a ``per`` dim selected that way gives one
        set of statistics; a one-element slice keeps it.
    selection
        Deprecated: use ``sel``/``isel``.  Integers (and pairs of them) are
        positions, anything else labels; it warns with the ``sel``/``isel`` to
        write instead, and is resolved by their rules.
    quantiles
        Quantile levels in ``[0, 1]``.
    nodata
        Values left out besides NaN: ``"fill"`` (default: what xarray masks,
        which CF decoding has already turned into NaN; for a source opened with
        ``mask_and_scale=False`` the stored ``_FillValue``/``missing_value``),
        ``None``, a number, or a name -> value mapping.  The statistics are those
        of the values ``xarray.open_zarr`` gives (a Zarr v3 array's
        ``fill_value`` is data, as in xarray).
    scheduler
        ``None``: a ``LocalCluster`` of ``n_workers`` processes with
        ``threads_per_worker`` threads, closed afterwards; an address
        (``"tcp://host:8786"``) of a running scheduler; a ``distributed.Client``;
        or ``"sync"`` to compute in this process without Dask.
    n_workers, threads_per_worker
        Size of the ``LocalCluster`` (only with ``scheduler=None``).
    task_bytes
        Decoded bytes each task reads (whole chunks, at least one).  The
        result depends on it (in the last bits, and the quantile sketch), not
        on the cluster.
    compression
        Size of the quantile sketch (centroids per group, at most).
    progress
        Show a progress bar (decoded bytes).
    storage_options
        Passed to :func:`~earthstream.open_zarr` when ``source`` is a URL.
    where
        Only values where this boolean mask is True: ``(dims, array)`` or a
        boolean ``xarray.DataArray`` over some dims of the selection (positions
        after ``sel``/``isel``), e.g. the pixels a spatial split's training
        windows cover (:meth:`earthstream.Splits.compute_stats`).

    Returns
    -------
    Stats

    Examples
    --------
    >>> import earthstream as es
    >>> path = es.datasets.era5_like(tmp_path / "s.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> stats = es.compute_stats(path, ["t2m", "z"], scheduler="sync", progress=False)
    >>> stats["z"].per, stats["z"].shape, stats["t2m"].shape
    (('level',), (3,), ())
    >>> 250 < float(stats["t2m"].mean) < 300
    True
    """
    # -- every argument checked before anything is read (ConfigError) --
    chosen = check_names(variables, "variables")
    per = check_names(per, "per")
    if not isinstance(quantiles, Sequence) or isinstance(quantiles, str):  # type: ignore[unreachable]
        raise ConfigError(f"quantiles={quantiles!r} must be a list of levels in [0, 1].")
    qs = tuple(check_number(q, "quantiles", minimum=0.0, maximum=1.0) for q in quantiles)
    _check_nodata(nodata)
    if not (scheduler is None or isinstance(scheduler, str) or hasattr(scheduler, "submit")):
        raise ConfigError(
            f"scheduler={scheduler!r}: pass a scheduler address such as 'tcp://host:8786', "
            "a distributed.Client, 'sync' (this process), or None (a LocalCluster)."
        )
    n_workers = check_whole(n_workers, "n_workers", minimum=1, maximum=1024)
    threads_per_worker = check_whole(
        threads_per_worker, "threads_per_worker", minimum=1, maximum=1024
    )
    task_nbytes = parse_bytes(task_bytes, name="task_bytes")
    compression = check_number(compression, "compression", minimum=10, maximum=10_000)
    progress = check_flag(progress, "progress")

    if selection is not None:
        if sel is not None or isel is not None:
            raise ConfigError("pass sel=/isel=, not selection= as well (selection= is deprecated).")
        sel, isel, instead = _legacy_selection(selection)
        warnings.warn(
            f"compute_stats(selection=...) is deprecated and will be removed in the next "
            f"release; write {instead} (labels with sel, both ends inclusive as xarray's sel; "
            "positions with isel).",
            DeprecationWarning,
            stacklevel=2,
        )
    source = as_source(source, storage_options=storage_options)
    if chosen is not None:
        source = source.select(list(chosen))
    names = list(source.variables)
    all_dims = {d for info in source.variables.values() for d in info.dims}
    spans = selection_spans(source, sel, isel)
    scalar = {d for d, span in spans.items() if span.scalar}  # dropped, as in xarray
    if per is None:
        per = tuple(d for d in DEFAULT_PER if d in all_dims and d not in scalar)
    else:
        for dim in per:
            if dim not in all_dims:
                raise DimensionError(
                    f"per={dim!r}: no selected variable has that dim.{suggest(dim, list(all_dims))}"
                    f" Dims: {', '.join(sorted(all_dims))}."
                )
            if dim in scalar:
                raise DimensionError(
                    f"per={dim!r}, but {dim!r} is selected by a single label or position, which "
                    f"drops it (as xarray does); select a range (a one-element slice) to keep it."
                )
    if isinstance(scheduler, str) and scheduler != "sync" and "://" not in scheduler:
        raise ConfigError(
            f"scheduler={scheduler!r}: pass a scheduler address such as 'tcp://host:8786', "
            "a distributed.Client, 'sync' (this process), or None (a LocalCluster)."
        )
    ranges = {d: (span.start, span.stop) for d, span in spans.items()}
    var_dims: dict[str, int] = {}
    for info in source.variables.values():
        var_dims.update(zip(info.dims, info.shape, strict=True))
    checked_where = _check_where(where, var_dims, spans)
    tasks, var_ranges = _tasks(
        source,
        names,
        ranges,
        per,
        nodata,
        task_nbytes,
        compression,
        checked_where,
    )
    total = sum(t.nbytes for t in tasks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc="stats", dynamic_ncols=True)

    start = ready = time.perf_counter()
    workers = 1
    threads = 1
    try:
        if scheduler == "sync":
            results = _run_sync(source, tasks, bar)
            finished = time.perf_counter()
        else:
            client, owned = _client(scheduler, n_workers, threads_per_worker)
            try:
                nthreads = client.nthreads()
                workers, threads = len(nthreads), sum(nthreads.values())
                ready = time.perf_counter()
                results = _run_dask(client, source, tasks, bar)
                finished = time.perf_counter()
            finally:
                for thing in owned:
                    thing.close()
    finally:
        if bar is not None:
            bar.close()
    seconds = finished - start  # the cluster's shutdown is not counted

    coords = source.coords
    out: dict[str, VariableStats] = {}
    described: dict[str, Any] = {}
    for name in names:
        info = source.variables[name]
        vr = var_ranges[name]
        var_per = tuple(d for d in per if d in info.dims)
        shape = tuple(vr[info.dims.index(d)][1] - vr[info.dims.index(d)][0] for d in var_per)
        groups = math.prod(shape)
        m = results.get(name) or Moments.empty(groups, compression)
        labels: dict[str, tuple[Any, ...]] = {}
        for d in var_per:
            lo, hi = vr[info.dims.index(d)]
            if d in coords:
                labels[d] = tuple(_label(v) for v in np.asarray(coords[d])[lo:hi])
        with np.errstate(invalid="ignore"):
            mean = np.where(m.count > 0, m.mean, np.nan)
        qv = m.quantiles(qs)
        out[name] = VariableStats(
            name=name,
            dims=info.dims,
            per=var_per,
            count=m.count.reshape(shape),
            mean=mean.reshape(shape),
            std=m.std.reshape(shape),
            min=np.where(m.count > 0, m.min, np.nan).reshape(shape),
            max=np.where(m.count > 0, m.max, np.nan).reshape(shape),
            quantiles={q: qv[i].reshape(shape) for i, q in enumerate(qs)},
            labels=labels,
            nodata=_reported(_nodata_of(info, nodata)),
        )
        described[name] = {
            "dims": list(info.dims),
            "shape": list(info.shape),
            "dtype": str(info.dtype),
        }
    location = getattr(source, "location", None)
    url = str(location) if location is not None else type(source).__name__  # redacted
    chunks = sum(len(t.indices) for t in tasks)
    return Stats(
        variables=out,
        source={
            "url": url,
            "variables": described,
            "selection": {d: list(r) for d, r in ranges.items()},
            **(
                {
                    "where": {
                        "dims": list(checked_where[0]),
                        "kept": int(checked_where[1].sum()),
                        "of": int(checked_where[1].size),
                    }
                }
                if checked_where is not None
                else {}
            ),
        },
        quantile_levels=qs,
        method={
            "std_ddof": 0,
            "excluded": "NaN and nodata",
            "quantiles": "merging t-digest (k1 scale), interpolated between centroids",
            "compression": compression,
            "task_bytes": max(1, parse_bytes(task_bytes, name="task_bytes")),
        },
        run={
            "seconds": seconds,
            "startup_seconds": ready - start,
            "compute_seconds": seconds - (ready - start),
            "bytes": total,
            "chunks": chunks,
            "tasks": len(tasks),
            "workers": workers,
            "threads": threads,
            "scheduler": "sync" if scheduler == "sync" else "distributed",
        },
    )


def _reported(values: tuple[float, ...]) -> float | list[float] | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _label(value: Any) -> Any:
    """A JSON-able coordinate label."""
    if isinstance(value, np.datetime64):
        return str(value)
    if is_cftime_axis(np.asarray([value], dtype=object)):
        return format_time(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
