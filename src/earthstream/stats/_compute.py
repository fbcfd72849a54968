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

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._names import suggest
from .._units import parse_bytes
from .._validate import check_flag, check_names, check_number, check_whole
from ..errors import ConfigError, DimensionError
from ..sampling._time import format_time, is_cftime_axis
from ..sources import ChunkedSource, as_source
from ._moments import DEFAULT_COMPRESSION, Moments
from ._result import Stats, VariableStats
from ._select import (
    Selection,
    check_nodata,
    check_where,
    legacy_selection,
    nodata_of,
    selection_spans,
)
from ._tasks import make_tasks, run_dask, run_sync, start_client

__all__ = ["DEFAULT_PER", "compute_stats", "selection_spans"]

#: Dims kept as separate statistics when present (``per=None``).
DEFAULT_PER = ("level", "band")


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
    check_nodata(nodata)
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
        sel, isel, instead = legacy_selection(selection)
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
    checked_where = check_where(where, var_dims, spans)
    tasks, var_ranges = make_tasks(
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
            results = run_sync(source, tasks, bar)
            finished = time.perf_counter()
        else:
            client, owned = start_client(scheduler, n_workers, threads_per_worker)
            try:
                nthreads = client.nthreads()
                workers, threads = len(nthreads), sum(nthreads.values())
                ready = time.perf_counter()
                results = run_dask(client, source, tasks, bar)
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
            nodata=_reported(nodata_of(info, nodata)),
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
