"""How the selected variables map onto the window grid and into batch arrays.

Built once per stream from the source's variable descriptions and the window
grid; frozen and picklable.  Rules, checked here with errors that say what to
change:

* every dim name has one size across the selected variables;
* a variable may lack a dim of the stream only when a single window covers
  that dim whole (``window={"level": None}``): otherwise the variable would be
  repeated along it;
* with ``stack=True`` the windowed dims that all variables share come in the
  same order in each of them; dims only some variables have are flattened into
  the channel axis (``z[level=500]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DimensionError
from ..protocols import VariableInfo
from ..sampling import WindowGrid

__all__ = ["StreamLayout", "VarLayout", "build_layout", "union_dims"]


@dataclass(frozen=True)
class VarLayout:
    """One variable of one input source, as the engine reads, caches and cuts it.

    The engine's unit: ``input`` is the position of its source among the
    engine's inputs, ``name`` its name there (what ``read_chunk`` is given),
    ``shape``/``chunks``/``dtype``/``fill`` as the source describes it (``fill``
    cast to the dtype the batch holds).  ``lengths`` is the variable's *frame*:
    the box one sample holds along each of its dims (1 where iterated; for
    windows on a grid the window, for boxes of varying size the largest), and
    ``keep`` which of its dims stay in the sample (the others are squeezed).
    ``label`` is the name in batches and reports when it differs from ``name``
    (two inputs with a variable of one name).

    For window grids (:func:`build_layout`): ``grid_axes[i]`` is the window-grid
    axis of the variable's dim ``i``; ``spans`` are the positions a window covers
    from its start (``lengths`` unless a dim reads selected ``offsets``, e.g. a
    forecast's steps; ``None`` there for every position); ``limit`` where the
    stream's selection ends.
    """

    name: str
    dims: tuple[str, ...]
    grid_axes: tuple[int, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    lengths: tuple[int, ...]
    keep: tuple[bool, ...]
    dtype: np.dtype[Any]
    fill: Any
    channel_start: int = 0
    n_channels: int = 1
    spans: tuple[int, ...] = ()
    offsets: tuple[tuple[int, ...] | None, ...] = ()

    @property
    def reads_offsets(self) -> bool:
        """Some dim reads selected offsets, not a contiguous run."""
        return any(o is not None for o in self.offsets)

    def positions(self, dim: int) -> np.ndarray:
        """Offsets from the window start read along the variable's dim ``dim``."""
        chosen = self.offsets[dim] if self.offsets else None
        if chosen is None:
            return np.arange(self.lengths[dim], dtype=np.int64)
        return np.asarray(chosen, dtype=np.int64)

    #: Where the stream's selection ends along each dim (default: the array's end);
    #: windows padded past it are filled, never read from beyond it.
    limit: tuple[int, ...] = ()
    #: Position of the variable's source among the engine's inputs.
    input: int = 0
    #: Name in batches and reports, when not ``name``.
    label: str = ""

    @property
    def batch_name(self) -> str:
        """The variable's name in batches and reports."""
        return self.label or self.name

    @classmethod
    def of(
        cls,
        info: VariableInfo,
        frame: Sequence[int],
        *,
        input: int = 0,
        label: str = "",
        keep: Sequence[bool] | None = None,
    ) -> VarLayout:
        """Variable ``info`` of input ``input`` with a ``frame`` (the box one sample
        holds along each of its dims), for stream kinds other than the window grid.

        >>> info = VariableInfo("dem", ("y", "x"), (90, 120), np.dtype("f4"), (30, 40), None)
        >>> var = VarLayout.of(info, (8, 8), input=1, label="static/dem")
        >>> var.batch_name, var.sample_shape, var.chunk_grid, var.fill
        ('static/dem', (8, 8), (3, 3), nan)
        """
        dtype = np.dtype(info.dtype).newbyteorder("=")
        return cls(
            name=info.name,
            dims=info.dims,
            grid_axes=(),
            shape=info.shape,
            chunks=info.chunks,
            lengths=tuple(int(n) for n in frame),
            keep=tuple(keep) if keep is not None else (True,) * len(info.dims),
            dtype=dtype,
            fill=_fill_for(dtype, info.fill_value),
            input=input,
            label=label,
        )

    @property
    def end(self) -> tuple[int, ...]:
        return self.limit or self.shape

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))

    @property
    def sample_dims(self) -> tuple[str, ...]:
        return tuple(d for d, k in zip(self.dims, self.keep, strict=True) if k)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(n for n, k in zip(self.lengths, self.keep, strict=True) if k)

    @property
    def chunk_nbytes(self) -> int:
        return int(np.prod(self.chunks, dtype=np.int64)) * self.dtype.itemsize

    def flat_chunk(self, index: Sequence[int]) -> int:
        return int(np.ravel_multi_index(tuple(index), self.chunk_grid)) if index else 0


@dataclass(frozen=True)
class StreamLayout:
    """The window grid plus every variable's layout, and the batch arrays they fill."""

    grid: WindowGrid
    variables: tuple[VarLayout, ...]
    stack: bool
    common_dims: tuple[str, ...]
    channels: tuple[str, ...]
    stacked_dtype: np.dtype[Any] | None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def mask_dims(self) -> tuple[str, ...]:
        return tuple(a.dim for a in self.grid.axes if not a.squeeze)

    @property
    def mask_shape(self) -> tuple[int, ...]:
        return tuple(a.length for a in self.grid.axes if not a.squeeze)

    @property
    def common_shape(self) -> tuple[int, ...]:
        return tuple(self.grid.axis(d).length for d in self.common_dims)

    def sample_nbytes(self) -> int:
        """Bytes of one sample across all variables (plus its mask when padding)."""
        if self.stack and self.stacked_dtype is not None:
            n = len(self.channels) * int(np.prod(self.common_shape, dtype=np.int64))
            total = n * self.stacked_dtype.itemsize
        else:
            total = sum(
                int(np.prod(v.sample_shape, dtype=np.int64)) * v.dtype.itemsize
                for v in self.variables
            )
        if self.grid.edges == "pad":
            total += int(np.prod(self.mask_shape, dtype=np.int64))
        return total + 8 * len(self.grid.axes) + 8

    def batch_nbytes(self, batch_size: int) -> int:
        return self.sample_nbytes() * batch_size

    @property
    def max_chunk_nbytes(self) -> int:
        return max(v.chunk_nbytes for v in self.variables)

    def block_nbytes(self) -> int:
        """Decoded bytes of one chunk group: one chunk of every variable."""
        return sum(v.chunk_nbytes for v in self.variables)


def union_dims(variables: Sequence[VariableInfo]) -> dict[str, int]:
    """Every dim of ``variables`` with its size.

    The order is that of the variable with the most dims, then any others in
    first-seen order.  Raises :class:`DimensionError` when one dim name has two
    sizes.
    """
    sizes: dict[str, int] = {}
    owner: dict[str, str] = {}
    widest = max(variables, key=lambda v: len(v.dims), default=None)
    ordered = [widest, *[v for v in variables if v is not widest]] if widest else []
    for info in ordered:
        for dim, size in zip(info.dims, info.shape, strict=True):
            if dim in sizes and sizes[dim] != size:
                raise DimensionError(
                    f"dim {dim!r} has size {sizes[dim]} in variable {owner[dim]!r} but {size} in "
                    f"{info.name!r}; stream them separately or select variables on the same grid."
                )
            sizes.setdefault(dim, size)
            owner.setdefault(dim, info.name)
    return sizes


def _fill_for(dtype: np.dtype[Any], fill: Any) -> Any:
    if fill is None:
        return np.nan if dtype.kind in "fc" else 0
    try:
        value = np.asarray(fill).astype(dtype)
    except (TypeError, ValueError, OverflowError):
        return np.nan if dtype.kind in "fc" else 0
    return value.item()


def _channel_names(
    name: str, extra: Sequence[str], sizes: Sequence[int], coords: Mapping[str, np.ndarray]
) -> list[str]:
    if not extra:
        return [name]
    labels = []
    for dim, size in zip(extra, sizes, strict=True):
        values = coords.get(dim)
        if values is not None and len(values) == size:
            labels.append([f"{dim}={v}" for v in np.asarray(values).tolist()])
        else:
            labels.append([f"{dim}={i}" for i in range(size)])
    grids = np.meshgrid(*[np.arange(len(lab)) for lab in labels], indexing="ij")
    flat = [g.reshape(-1) for g in grids]
    return [
        f"{name}[{','.join(labels[d][int(flat[d][i])] for d in range(len(extra)))}]"
        for i in range(len(flat[0]))
    ]


def build_layout(
    variables: Sequence[VariableInfo],
    grid: WindowGrid,
    *,
    stack: bool = False,
    coords: Mapping[str, np.ndarray] | None = None,
    input: int = 0,
) -> StreamLayout:
    """Check that ``variables`` (of input ``input``) fit ``grid`` and describe their batch
    arrays."""
    dims = grid.dims
    layouts: list[VarLayout] = []
    for info in variables:
        for axis in grid.axes:
            if axis.dim not in info.dims and axis.count != 1:
                how = "iterates over it" if axis.squeeze else f"cuts {axis.count} windows along it"
                raise DimensionError(
                    f"variable {info.name!r} {info.dims} has no dim {axis.dim!r}, but the stream "
                    f"{how}, so {info.name!r} would be repeated. Window the whole dim "
                    f"(window={{{axis.dim!r}: None}}), or stream {info.name!r} separately."
                )
        grid_axes = tuple(dims.index(d) for d in info.dims)
        lengths = tuple(grid.axes[a].length for a in grid_axes)
        keep = tuple(not grid.axes[a].squeeze for a in grid_axes)
        dtype = np.dtype(info.dtype).newbyteorder("=")
        layouts.append(
            VarLayout(
                name=info.name,
                dims=info.dims,
                grid_axes=grid_axes,
                shape=info.shape,
                chunks=info.chunks,
                lengths=lengths,
                keep=keep,
                spans=tuple(grid.axes[a].span for a in grid_axes),
                offsets=tuple(grid.axes[a].offsets for a in grid_axes),
                dtype=dtype,
                fill=_fill_for(dtype, info.fill_value),
                limit=tuple(grid.axes[a].origin + grid.axes[a].size for a in grid_axes),
                input=input,
            )
        )
    if not stack:
        return StreamLayout(grid, tuple(layouts), False, (), (), None)

    windowed = [a.dim for a in grid.axes if not a.squeeze]
    common = tuple(d for d in windowed if all(d in v.sample_dims for v in layouts))
    for v in layouts:
        order = tuple(d for d in v.sample_dims if d in common)
        if order != tuple(d for d in common if d in order):
            raise DimensionError(
                f"stack=True needs the shared window dims in one order, but variable "
                f"{v.name!r} has them as {order} and the others as {common}. Stack variables "
                "with the same dim order, or use stack=False."
            )
    dtype = np.result_type(*[v.dtype for v in layouts])
    channels: list[str] = []
    stacked: list[VarLayout] = []
    for v in layouts:
        extra = [d for d in v.sample_dims if d not in common]
        extra_sizes = [grid.axis(d).length for d in extra]
        names = _channel_names(v.name, extra, extra_sizes, coords or {})
        stacked.append(
            VarLayout(
                **{
                    **v.__dict__,
                    "channel_start": len(channels),
                    "n_channels": len(names),
                    "fill": _fill_for(np.dtype(dtype), v.fill),
                }
            )
        )
        channels.extend(names)
    return StreamLayout(grid, tuple(stacked), True, common, tuple(channels), np.dtype(dtype))
