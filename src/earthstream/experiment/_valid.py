"""Windows with enough valid data: a window rule computed once from the data.

:class:`MinValid` keeps the windows whose *valid fraction* reaches a
threshold.  A pixel is valid where a variable is not NaN (what xarray masks:
``_FillValue``, ``missing_value``, nodata), or where ``where(values)`` is True
(a land/sea mask: ``where=lambda lsm: lsm > 0.5``).  The fraction is taken over
the window's whole footprint on the variable's dims (padding past an edge
counts as invalid), so with a static mask ``(lat, lon)`` every time step of a
spatial window has the same fraction, and with a time-varying variable each
``(time, window)`` has its own.

How, and what it costs: the variable is read once, in grid order, through a
:class:`~earthstream.Stream` over the stream's selection (each chunk decoded
once, within the stream's memory budget), one position of its first dim at a
time; each step's valid pixels are summed over every window of the other dims
with a summed-area table, and the steps over windows of the first dim with a
running sum.  That is one pass over the variable's chunks in the selection
(a static ``(lat, lon)`` mask: one field) plus 8 bytes per (step of the first
dim, window of the others) in memory; the time, chunks and bytes are recorded
in the subset's ``info`` (``stream.subset.info``) and the windows excluded in
``stream.excluded``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DimensionError, GridMismatchError
from ..sampling import AxisWindows, WindowGrid, WindowSubset
from ..sampling._select import Span
from ..sampling._subset import StreamContext
from ..sources import ChunkedSource, as_source, source_selection

__all__ = ["MinValid", "window_sums"]


def window_sums(valid: np.ndarray, axes: list[AxisWindows]) -> np.ndarray:
    """Sums of ``valid`` ``(B, *dims)`` over every window of ``axes`` (one per dim).

    Returns ``(B, *[axis.count])``: for each leading row, the number of True
    values in each window (parts past the edge count as 0).

    >>> from earthstream.sampling import build_window_grid
    >>> g = build_window_grid({"y": 5}, {"y": 2}, None, "pad", {"y": 5})
    >>> window_sums(np.array([[1, 1, 0, 1, 1]], bool), list(g.axes)).tolist()
    [[2, 1, 1]]
    """
    table = np.asarray(valid, dtype=np.int64)
    d = table.ndim - 1
    for axis in range(1, d + 1):
        table = np.cumsum(table, axis=axis)
        pad = [(1, 0) if a == axis else (0, 0) for a in range(d + 1)]
        table = np.pad(table, pad)
    los, his = [], []
    for i, ax in enumerate(axes):
        starts = ax.starts()
        shape = [1] * (d + 1)
        shape[i + 1] = len(starts)
        los.append(np.minimum(starts, ax.size).reshape(shape))
        his.append(np.minimum(starts + ax.length, ax.size).reshape(shape))
    rows = np.arange(table.shape[0]).reshape([-1] + [1] * d)
    out = np.zeros((table.shape[0], *[ax.count for ax in axes]), dtype=np.int64)
    for corner in range(1 << d):
        index = [rows]
        sign = 1
        for i in range(d):
            if corner >> i & 1:
                index.append(his[i])
            else:
                index.append(los[i])
                sign = -sign
        out += sign * table[tuple(index)]
    return out


@dataclass(frozen=True, eq=False)
class MinValid:
    """Keep the windows whose valid fraction is at least ``fraction``: a window rule.

    Pass it as ``Stream(..., windows=es.MinValid(0.8, "sst"))`` (or to
    :func:`~earthstream.split`); it is evaluated once, when the stream is
    built.

    Parameters
    ----------
    fraction
        Threshold in ``[0, 1]``: windows with fewer valid pixels are left out.
    variable
        The variable that marks validity (default: the stream's variable, when
        it streams one).  Its dims must be dims of the stream.
    source
        Where ``variable`` lives, when it is not in the stream's source (e.g. a
        land/sea mask in a static-fields store): a source or path on the same
        grid; its coordinates must contain the stream's selected ones.
    where
        ``values -> bool array``: which values are valid (default: not NaN).
        E.g. ``lambda lsm: lsm >= 0.5`` for land.
    batch_bytes
        Decoded bytes read per batch while computing (bounds memory).

    Examples
    --------
    >>> import earthstream as es
    >>> path = es.datasets.era5_like(tmp_path / "e.zarr", n_times=4, n_lat=16, n_lon=32)
    >>> static = es.datasets.static_fields(tmp_path / "st.zarr", like=path)
    >>> land = es.MinValid(0.5, "lsm", source=static, where=lambda lsm: lsm >= 0.5)
    >>> stream = es.Stream(path, {"lat": 8, "lon": 8}, variables="t2m", windows=land)
    >>> stream.n_windows + sum(stream.excluded.values()) == 4 * 2 * 4
    True
    """

    fraction: float
    variable: str | None = None
    source: Any = None
    where: Callable[[np.ndarray], np.ndarray] | None = None
    batch_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if not isinstance(self.fraction, int | float) or not 0.0 <= float(self.fraction) <= 1.0:
            raise ConfigError(f"MinValid(fraction={self.fraction!r}) must lie in [0, 1].")

    def _variable(self, source: ChunkedSource, context: StreamContext) -> str:
        if self.variable is not None:
            if self.variable not in source.variables:
                raise ConfigError(
                    f"MinValid(variable={self.variable!r}): the source has no such variable; it "
                    f"has {', '.join(source.variables)}. Pass source= where it lives."
                )
            return self.variable
        names = list(source.variables)
        if len(names) != 1:
            raise ConfigError(
                f"MinValid: name the variable that marks valid pixels (variable=...); the source "
                f"has {', '.join(names)}."
            )
        return names[0]

    def _selection(
        self, source: ChunkedSource, dims: tuple[str, ...], context: StreamContext
    ) -> dict[str, slice]:
        """``isel`` for the mask source that selects the stream's positions on ``dims``."""
        base = source_selection(source)
        sizes: dict[str, int] = {}
        for info in source.variables.values():
            sizes.update(zip(info.dims, info.shape, strict=True))
        same = self.source is None
        isel: dict[str, slice] = {}
        for dim in dims:
            span: Span | None = context.spans.get(dim)
            wanted = context.coords.get(dim)
            if same:
                start = span.start if span is not None else 0
                stop = span.stop if span is not None else sizes[dim]
            else:
                have = source.coords.get(dim)
                n = len(wanted) if wanted is not None else None
                if wanted is None or have is None:
                    start, stop = 0, sizes[dim]
                    if span is not None and (stop - start) != span.size:
                        raise GridMismatchError(
                            f"MinValid: {dim!r} has no coordinate to match the mask's positions "
                            "with the stream's selection; select the mask's source the same way."
                        )
                else:
                    have = np.asarray(have)
                    hits = np.flatnonzero(have == wanted[0])
                    start = int(hits[0]) if len(hits) else -1
                    if (
                        start < 0
                        or n is None
                        or not np.array_equal(have[start : start + n], wanted)
                    ):
                        raise GridMismatchError(
                            f"MinValid: the mask's {dim!r} coordinate does not contain the "
                            f"stream's {n} selected values ({wanted[0]!r} ...); put the mask on "
                            "the stream's grid."
                        )
                    stop = start + n
            origin = base[dim].start if dim in base else 0
            isel[dim] = slice(start - origin, stop - origin)
        return isel

    def select(self, grid: WindowGrid, context: Any) -> WindowSubset:
        from .._stream import Stream

        if not isinstance(context, StreamContext):
            raise ConfigError("MinValid reads data: it needs a stream's context (use windows=).")
        t0 = time.perf_counter()
        source = as_source(self.source) if self.source is not None else context.source
        name = self._variable(source, context)
        source = source.select([name])
        info = source.variables[name]
        dims = info.dims
        missing = [d for d in dims if d not in grid.dims]
        if missing or not dims:
            raise DimensionError(
                f"MinValid: {name!r} has dims {dims}; every one must be a dim of the stream "
                f"({', '.join(grid.dims)}). {', '.join(missing)} is not."
            )
        isel = self._selection(source, dims, context)
        axes = [grid.axis(d) for d in dims]
        first, rest = axes[0], axes[1:]
        row_bytes = max(
            1, info.dtype.itemsize * int(np.prod([a.size for a in rest], dtype=np.int64))
        )
        reader = Stream(
            source,
            {a.dim: None for a in rest},
            variables=[name],
            isel=isel,
            shuffle=False,
            batch_size=max(1, min(first.size, self.batch_bytes // row_bytes)),
            memory_limit=max(
                context.memory_limit, 4 * min(self.batch_bytes, first.size * row_bytes)
            ),
            num_threads=context.num_threads,
        )
        per_step = np.zeros((first.size, *[a.count for a in rest]), dtype=np.int64)
        for batch in reader:
            values = batch[name]
            valid = np.asarray(self.where(values) if self.where is not None else _not_nan(values))
            if valid.shape != values.shape:
                raise ConfigError(
                    f"MinValid(where=...) returned shape {valid.shape} for values of shape "
                    f"{values.shape}; return one bool per value."
                )
            rows = batch.starts[first.dim]
            per_step[rows] = window_sums(valid.astype(bool), rest)
        running = np.concatenate(
            [np.zeros((1, *per_step.shape[1:]), np.int64), np.cumsum(per_step, 0)]
        )
        starts = first.starts()
        counts = running[np.minimum(starts + first.length, first.size)] - running[starts]
        area = int(np.prod([a.length for a in axes], dtype=np.int64))
        fraction = counts / area
        keep = fraction >= float(self.fraction)
        order = [dims.index(d) for d in grid.dims if d in dims]
        keep = np.transpose(keep, order).reshape(
            [grid.axis(d).count if d in dims else 1 for d in grid.dims]
        )
        mask = np.broadcast_to(keep, grid.counts)
        ids = np.flatnonzero(mask.reshape(-1))
        report = reader.report
        info_out = {
            "rule": f"valid fraction of {name!r} >= {float(self.fraction):g}",
            "seconds": time.perf_counter() - t0,
            "chunks_decoded": report.chunks_decoded if report is not None else 0,
            "bytes_decoded": report.bytes_decoded if report is not None else 0,
            "memory_bytes": per_step.nbytes,
            "fraction_quantiles": {q: float(np.quantile(fraction, q)) for q in (0.0, 0.5, 1.0)},
        }
        reason = f"valid fraction of {name} < {float(self.fraction):g}"
        return WindowSubset(grid.counts, ids, {reason: grid.n_windows - len(ids)}, info_out)


def _not_nan(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        return np.asarray(~np.isnan(values), dtype=bool)
    return np.ones(values.shape, dtype=bool)
