"""Window math: which windows exist, where they start, and which chunk group owns them.

Windows form a regular grid over the stream's dims.  Along each dim a window
has a length and a stride; dims the user did not window are *iterated*: length
1, squeezed out of the sample.  A window's id is its row-major position in that
grid, so all of this is integer arithmetic on arrays, never a Python loop per
window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np

from .._names import suggest
from ..errors import ConfigError, DimensionError, WindowError

__all__ = ["EDGES", "AxisWindows", "Edges", "WindowGrid", "build_window_grid"]

Edges = Literal["drop", "pad"]
EDGES: tuple[Edges, ...] = ("drop", "pad")


def _count(size: int, length: int, stride: int, edges: str) -> int:
    if edges == "drop" or length <= 1:
        return 0 if length > size else (size - length) // stride + 1
    # pad: windows until the last one reaches the end, never one starting past it
    needed = -(-(size - length) // stride) + 1 if size > length else 1
    return min(needed, -(-size // stride))


@dataclass(frozen=True)
class AxisWindows:
    """The windows along one dim.

    >>> ax = AxisWindows("lat", size=10, length=4, stride=4, squeeze=False, chunk=5, edges="pad")
    >>> ax.count, ax.starts().tolist()
    (3, [0, 4, 8])
    >>> ax.block_ranges()  # windows starting in chunk 0: k=0,1; in chunk 1: k=2
    (array([0, 2]), array([2, 3]))
    """

    dim: str
    size: int
    length: int
    stride: int
    squeeze: bool
    chunk: int
    edges: str = "drop"
    #: Explicit, ascending window starts (e.g. forecast windows that skip gaps in
    #: the time axis) instead of the regular ``k * stride``.
    explicit: tuple[int, ...] | None = None
    #: Position in the source array where this axis begins (a selection): window
    #: starts are relative to it, ``size`` is the selection's length, and chunk
    #: groups follow the source's chunks (``chunk``) counted from position 0.
    origin: int = 0
    #: The positions a window reads, relative to its start, strictly ascending and
    #: starting at 0 (e.g. a forecast's input and target steps ``(0, 1, 7, 13)``):
    #: the window then holds ``len(offsets)`` elements spread over ``span``.  ``None``:
    #: every position ``0 .. length - 1``.
    offsets: tuple[int, ...] | None = None

    @property
    def span(self) -> int:
        """Positions from a window's start to its last element, plus one (``length``
        unless the window reads selected ``offsets``)."""
        return self.length if self.offsets is None else self.offsets[-1] + 1

    def positions(self) -> np.ndarray:
        """The offsets a window reads, relative to its start.

        >>> AxisWindows("t", 20, 3, 1, False, 1, offsets=(0, 1, 7)).positions().tolist()
        [0, 1, 7]
        """
        if self.offsets is None:
            return np.arange(self.length, dtype=np.int64)
        return np.asarray(self.offsets, dtype=np.int64)

    @property
    def count(self) -> int:
        if self.explicit is not None:
            return len(self.explicit)
        return _count(self.size, self.span, self.stride, self.edges)

    def starts(self) -> np.ndarray:
        if self.explicit is not None:
            return np.asarray(self.explicit, dtype=np.int64)
        return np.arange(self.count, dtype=np.int64) * self.stride

    @property
    def whole(self) -> bool:
        """A single window covers the dim (variables may then lack the dim)."""
        return self.count == 1 and not self.squeeze

    def block_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)``: for every chunk holding window starts, the window indices
        ``k`` in ``[lo, hi)`` whose start lies in it.  Empty chunks are left out."""
        first = self.origin // self.chunk
        last = -(-(self.origin + self.size) // self.chunk)
        edges = np.arange(first, last + 1, dtype=np.int64) * self.chunk - self.origin
        edges = np.maximum(edges, 0)  # a selection may begin inside a chunk
        if self.explicit is not None:
            bounds = np.searchsorted(self.starts(), edges, side="left")
        else:
            bounds = np.minimum(-(-edges // self.stride), self.count)
        lo, hi = bounds[:-1], bounds[1:]
        keep = hi > lo
        return lo[keep], hi[keep]


@dataclass(frozen=True)
class WindowGrid:
    """All windows of a stream: a regular grid of window starts over its dims.

    ``blocks`` group windows by the chunk their start falls in (on the chunk grid
    of the first variable having each dim): the unit of the chunk-aware shuffle.
    """

    axes: tuple[AxisWindows, ...]
    edges: str = "drop"

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.dim for a in self.axes)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(a.count for a in self.axes)

    @property
    def n_windows(self) -> int:
        return int(np.prod(self.counts, dtype=np.int64))

    @property
    def strides(self) -> np.ndarray:
        return np.array([a.stride for a in self.axes], dtype=np.int64)

    @property
    def regular(self) -> bool:
        """Every axis has regular starts (``k * stride``)."""
        return all(a.explicit is None for a in self.axes)

    @property
    def lengths(self) -> np.ndarray:
        """Elements of a window along each dim (the sample shape, squeezed dims 1)."""
        return np.array([a.length for a in self.axes], dtype=np.int64)

    @property
    def origins(self) -> np.ndarray:
        """Where each axis begins in the source arrays (selections); starts add to it."""
        return np.array([a.origin for a in self.axes], dtype=np.int64)

    @property
    def spans(self) -> np.ndarray:
        """Positions a window covers along each dim (``lengths`` unless some axis reads
        selected offsets)."""
        return np.array([a.span for a in self.axes], dtype=np.int64)

    def axis(self, dim: str) -> AxisWindows:
        return self.axes[self.dims.index(dim)]

    def with_starts(self, dim: str, starts: Sequence[int]) -> WindowGrid:
        """This grid with explicit, ascending window starts along ``dim``.

        >>> g = build_window_grid({"t": 10, "y": 4}, {"t": 3}, None, "drop", {"t": 2, "y": 4})
        >>> g2 = g.with_starts("t", [0, 1, 5])
        >>> g2.counts, g2.starts_of([0, 1, 2]).tolist()
        ((3, 4), [[0, 0], [0, 1], [0, 2]])
        >>> g2.starts_of([4, 8]).tolist(), g2.block_sizes().tolist()
        ([[1, 0], [5, 0]], [8, 4])
        """
        axis = self.axis(dim)
        explicit = tuple(int(s) for s in starts)
        if any(b <= a for a, b in pairwise(explicit)):
            raise WindowError(f"window starts along {dim!r} must be strictly ascending.")
        if explicit and (explicit[0] < 0 or explicit[-1] + axis.span > axis.size):
            raise WindowError(
                f"window starts along {dim!r} must keep windows of {axis.span} inside "
                f"0..{axis.size}."
            )
        new = dataclasses.replace(axis, stride=1, explicit=explicit)
        return WindowGrid(
            axes=tuple(new if a.dim == dim else a for a in self.axes), edges=self.edges
        )

    def starts_of(self, ids: np.ndarray) -> np.ndarray:
        """Start index along every dim for each window id: shape ``(n, ndim)``."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.axes:
            return np.zeros((len(ids), 0), dtype=np.int64)
        k = np.stack(np.unravel_index(ids, self.counts), axis=-1)
        if self.regular:
            return np.asarray(k * self.strides, dtype=np.int64)
        return np.stack([a.starts()[k[:, i]] for i, a in enumerate(self.axes)], axis=-1)

    def with_offsets(self, dim: str, offsets: Sequence[int]) -> WindowGrid:
        """This grid with windows along ``dim`` reading only ``offsets`` from their start.

        The window then has ``len(offsets)`` elements along ``dim``; window starts
        are unchanged (set them with :meth:`with_starts`).  Offsets ``0 .. n - 1``
        are a plain window of length ``n``.

        >>> g = build_window_grid({"t": 30, "y": 4}, {"t": 1, "y": 4}, None, "drop", {"t": 1})
        >>> g2 = g.with_offsets("t", [0, 1, 13]).with_starts("t", [0, 5, 16])
        >>> g2.axis("t").length, g2.axis("t").span, g2.lengths.tolist(), g2.spans.tolist()
        (3, 14, [3, 4], [14, 4])
        """
        axis = self.axis(dim)
        values = tuple(int(v) for v in offsets)
        if not values or values[0] != 0 or any(b <= a for a, b in pairwise(values)):
            raise WindowError(
                f"window offsets along {dim!r} must start at 0 and be strictly ascending; "
                f"got {list(values)}."
            )
        if values[-1] + 1 > axis.size:
            raise WindowError(
                f"window offsets along {dim!r} span {values[-1] + 1} positions, more than the "
                f"dim's {axis.size}."
            )
        contiguous = values == tuple(range(len(values)))
        new = dataclasses.replace(
            axis, length=len(values), squeeze=False, offsets=None if contiguous else values
        )
        return WindowGrid(
            axes=tuple(new if a.dim == dim else a for a in self.axes), edges=self.edges
        )

    # -- chunk groups ---------------------------------------------------------------
    def _block_ranges(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [a.block_ranges() for a in self.axes]

    def block_counts(self) -> tuple[int, ...]:
        """Number of non-empty chunk groups along each dim."""
        return tuple(len(lo) for lo, _ in self._block_ranges())

    def block_sizes(self) -> np.ndarray:
        """Number of windows in each chunk group, flattened in row-major order."""
        sizes = np.ones((), dtype=np.int64)
        for lo, hi in self._block_ranges():
            sizes = np.multiply.outer(sizes, hi - lo)
        return np.asarray(sizes, dtype=np.int64).reshape(-1)

    def block_windows(self, blocks: Sequence[int] | np.ndarray) -> np.ndarray:
        """Window ids of the given chunk groups, group after group, each in grid order."""
        ranges = self._block_ranges()
        shape = tuple(len(lo) for lo, _ in ranges)
        blocks = np.asarray(blocks, dtype=np.int64)
        if len(blocks) == 0:
            return np.zeros(0, dtype=np.int64)
        if not shape:
            return np.zeros(len(blocks), dtype=np.int64)
        # every block's windows at once: a mixed-radix count over its ranges (no loop
        # per block; an epoch's order asks for thousands of blocks)
        coords = np.unravel_index(blocks, shape)
        firsts = [lo[c] for (lo, _), c in zip(ranges, coords, strict=True)]
        sizes = [hi[c] - lo[c] for (lo, hi), c in zip(ranges, coords, strict=True)]
        total = np.prod(np.stack(sizes), axis=0)
        owner = np.repeat(np.arange(len(blocks)), total)
        rest = np.arange(int(total.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(total) - total, total
        )
        k: list[np.ndarray] = [np.empty(0, np.int64)] * len(shape)
        for a in range(len(shape) - 1, -1, -1):
            size = sizes[a][owner]
            k[a] = firsts[a][owner] + rest % size
            rest = rest // size
        return np.asarray(np.ravel_multi_index(tuple(k), self.counts), dtype=np.int64)


def _normalize_lengths(
    name: str, values: Mapping[str, int | None] | None, sizes: Mapping[str, int]
) -> dict[str, int | None]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{name} must be a mapping from dim name to length, e.g. {{'lat': 64, 'lon': 64}}; "
            f"got {values!r}."
        )
    out: dict[str, int | None] = {}
    for dim, value in values.items():
        if dim not in sizes:
            raise DimensionError(
                f"{name} names dim {dim!r}, which the selected variables do not have."
                f"{suggest(str(dim), list(sizes))} Dims: {', '.join(sizes)}."
            )
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer)
        ):
            raise WindowError(f"{name}[{dim!r}]={value!r} must be a whole number of elements.")
        out[dim] = None if value is None else int(value)
    return out


def build_window_grid(
    sizes: Mapping[str, int],
    window: Mapping[str, int | None],
    stride: Mapping[str, int] | None,
    edges: str,
    chunks: Mapping[str, int],
    origins: Mapping[str, int] | None = None,
) -> WindowGrid:
    """Validate the user's window settings and build the grid.

    Parameters
    ----------
    sizes
        Every dim of the stream, in order, with its size.
    window
        Dim -> window length (``None``: the whole dim).  Other dims are iterated.
    stride
        Dim -> step between window starts (default: the window length).
    edges
        ``"drop"`` windows that do not fit, or ``"pad"`` them.
    chunks
        Dim -> chunk length, for grouping windows by chunk.
    origins
        Dim -> position in the source arrays where the dim's selection begins
        (``sizes`` are then the selections' lengths).  Default: 0.

    >>> grid = build_window_grid({"t": 4, "y": 10}, {"y": 4}, None, "drop", {"t": 1, "y": 5})
    >>> grid.counts, grid.n_windows
    ((4, 2), 8)

    A selection of positions 3..9 along ``y`` (chunks of 5): windows start at
    3 and 7 in the source, one in each chunk.

    >>> sel = build_window_grid({"y": 7}, {"y": 4}, {"y": 4}, "pad", {"y": 5}, origins={"y": 3})
    >>> sel.starts_of([0, 1]).tolist(), sel.origins.tolist(), sel.block_sizes().tolist()
    ([[0], [4]], [3], [1, 1])
    """
    if edges not in EDGES:
        raise ConfigError(f"edges={edges!r} must be 'drop' or 'pad'.")
    windows = _normalize_lengths("window", window, sizes)
    strides = _normalize_lengths("stride", stride, sizes)
    axes = []
    for dim, size in sizes.items():
        origin = int((origins or {}).get(dim, 0))
        squeeze = dim not in windows
        given_length = windows.get(dim)
        length = 1 if squeeze else (size if given_length is None else given_length)
        if length < 1:
            raise WindowError(
                f"window[{dim!r}]={length} must be at least 1 (or None for the whole dim)."
            )
        given = strides.get(dim)
        if given is not None and given < 1:
            raise WindowError(
                f"stride[{dim!r}]={given} must be at least 1 (1 = every position, "
                f"{length} = windows side by side)."
            )
        step = length if given is None else given
        if length > size and edges == "drop":
            raise WindowError(
                f"window[{dim!r}]={length} is longer than dim {dim!r} ({size}); use a window of at "
                f"most {size}, or edges='pad' to pad it with the fill value."
            )
        axes.append(
            AxisWindows(
                dim=dim,
                size=size,
                length=length,
                stride=step,
                squeeze=squeeze,
                chunk=max(1, min(chunks.get(dim, origin + size), origin + size)),
                edges=edges,
                origin=origin,
            )
        )
    return WindowGrid(axes=tuple(axes), edges=edges)
