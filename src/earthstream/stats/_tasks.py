"""The work of ``compute_stats``: tasks of consecutive chunks, read on workers, merged in a
fixed tree (the same bits on any number of workers)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DimensionError
from ..protocols import ChunkedSource, VariableInfo
from ._moments import Moments
from ._select import nodata_of

__all__ = ["FAN_IN", "Task", "make_tasks", "run_dask", "run_sync", "start_client"]

#: Partial results merged per node of the tree.
FAN_IN = 8


@dataclass(frozen=True)
class Task:
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
def _read_task(source: ChunkedSource, task: Task) -> dict[str, Moments]:
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
def make_tasks(
    source: ChunkedSource,
    names: Sequence[str],
    ranges: Mapping[str, tuple[int, int]],
    per: Sequence[str],
    nodata: Any,
    task_bytes: int,
    compression: float,
    where: tuple[tuple[str, ...], np.ndarray] | None = None,
) -> tuple[list[Task], dict[str, tuple[tuple[int, int], ...]]]:
    tasks: list[Task] = []
    var_ranges: dict[str, tuple[tuple[int, int], ...]] = {}
    for name in names:
        info = source.variables[name]
        vr = tuple(ranges.get(d, (0, n)) for d, n in zip(info.dims, info.shape, strict=True))
        var_ranges[name] = vr
        per_axes = tuple(info.dims.index(d) for d in per if d in info.dims)
        value = nodata_of(info, nodata)
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
            task = Task(name, run, vr, per_axes, value, compression, nbytes)
            if where is not None:
                task = _with_where(task, info, where)
            tasks.append(task)
    return tasks, var_ranges


def _with_where(task: Task, info: VariableInfo, where: tuple[tuple[str, ...], np.ndarray]) -> Task:
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


# -- drivers ------------------------------------------------------------------------------
class _Tree:
    """A fixed merge tree: nodes merge ``FAN_IN`` consecutive results of the level below."""

    def __init__(self, submit: Callable[..., Any]) -> None:
        self.submit = submit
        self.levels: list[list[Any]] = []

    def push(self, item: Any, level: int = 0) -> None:
        if level == len(self.levels):
            self.levels.append([])
        self.levels[level].append(item)
        if len(self.levels[level]) == FAN_IN:
            items, self.levels[level] = self.levels[level], []
            self.push(self.submit(_merge, *items), level + 1)

    def root(self) -> Any:
        carry: list[Any] = []
        for items in self.levels:
            items = items + carry  # lower levels hold later data: keep data order
            carry = [self.submit(_merge, *items)] if len(items) > 1 else items
        return carry[0] if carry else None


def run_sync(source: ChunkedSource, tasks: Sequence[Task], bar: Any) -> dict[str, Moments]:
    tree = _Tree(lambda fn, *args: fn(*args))
    for task in tasks:
        tree.push(_read_task(source, task))
        if bar is not None:
            bar.update(task.nbytes)
    root = tree.root()
    return {} if root is None else dict(root)


def run_dask(
    client: Any, source: ChunkedSource, tasks: Sequence[Task], bar: Any
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


def start_client(scheduler: Any, n_workers: int, threads_per_worker: int) -> tuple[Any, list[Any]]:
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
