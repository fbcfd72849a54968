"""From window ids to chunk needs, and from decoded chunks to batch arrays.

A batch's windows are mapped to the chunks they touch, vectorized over the
windows (:func:`batch_needs`).  When every chunk a variable needs is resident,
one tight loop per variable copies each window out of its chunk
(:meth:`VarNeeds.cut`: one slice copy per window, ~1 us).  Windows across chunk
borders, past the array edge (``edges="pad"``) or in chunks that are not stored
are filled piece by piece from each chunk they touch
(:meth:`VarNeeds.scatter_key`), which is also the path used when memory is too
tight to hold all of a batch's chunks at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._layout import StreamLayout, VarLayout

__all__ = ["BatchArrays", "VarNeeds", "allocate", "batch_needs", "chunk_key", "validity_mask"]


def chunk_key(var: int, flat: int, n_vars: int) -> int:
    """One int per (variable, chunk): cheap to hash in the scheduler's dicts."""
    return flat * n_vars + var


_CUTTERS: dict[tuple[bool, ...], Callable[..., None]] = {}


def _cutter(keep: tuple[bool, ...]) -> Callable[..., None]:
    """A loop specialized to one pattern of kept/iterated dims.

    ``cut(dest, rows, arrays, which, local, lengths)`` copies, for each window,
    ``arrays[which[i]][window at local[i]]`` into ``dest[rows[i]]``.  The loop
    body is generated once per pattern (as ``dataclasses`` does) so that no
    per-window tuple building happens in generic Python.
    """
    fn = _CUTTERS.get(keep)
    if fn is None:
        names = [f"s{i}" for i in range(len(keep))]
        lens = [f"n{i}" for i in range(len(keep))]
        index = ", ".join(
            f"slice({s}, {s} + {n})" if k else s for s, n, k in zip(names, lens, keep, strict=True)
        )
        unpack = (", ".join(names) + ",") if names else "_"
        lens_unpack = (", ".join(lens) + ",") if lens else "_"
        source = (
            "def cut(dest, rows, arrays, which, local, lengths):\n"
            f"    {lens_unpack} = lengths\n"
            f"    for r, c, ({unpack}) in zip(rows, which, local):\n"
            f"        dest[r] = arrays[c][{index or '()'}]\n"
        )
        if not names:
            source = (
                "def cut(dest, rows, arrays, which, local, lengths):\n"
                "    for r, c in zip(rows, which):\n"
                "        dest[r] = arrays[c][()]\n"
            )
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<earthstream cutter {keep}>", "exec"), namespace)
        fn = _CUTTERS[keep] = namespace["cut"]
    return fn


@dataclass
class VarNeeds:
    """The chunks one variable needs for one batch, and which window reads which.

    ``keys``/``index`` list the distinct chunks; for every (window, chunk) pair,
    ``which`` points into them, ``rows`` is the window's row in the batch and
    ``local`` its start relative to the chunk's origin.  ``inside`` is True when
    every window lies wholly inside one chunk (the fast path).
    """

    var: int
    keys: list[int]
    index: list[tuple[int, ...]]
    which: list[int]
    rows: list[int]
    local: list[list[int]]
    inside: bool

    def cut(self, dest: np.ndarray, arrays: Sequence[np.ndarray], layout: VarLayout) -> None:
        """Fast path: every window inside one chunk, every chunk stored and resident."""
        _cutter(layout.keep)(dest, self.rows, arrays, self.which, self.local, layout.lengths)

    def scatter_key(
        self, position: int, chunk: np.ndarray | None, dest: np.ndarray, layout: VarLayout
    ) -> None:
        """General path: copy the parts of windows that lie in chunk ``keys[position]``.

        ``chunk=None`` (a chunk that is not stored) fills those parts with the
        variable's fill value.
        """
        origin = [i * c for i, c in zip(self.index[position], layout.chunks, strict=True)]
        ends = [
            min(o + c, size) - o
            for o, c, size in zip(origin, layout.chunks, layout.shape, strict=True)
        ]
        keep, lengths = layout.keep, layout.lengths
        for r, c, local in zip(self.rows, self.which, self.local, strict=True):
            if c != position:
                continue
            src: list[Any] = []
            dst: list[slice] = []
            for s, e, n, k in zip(local, ends, lengths, keep, strict=True):
                lo, hi = max(s, 0), min(s + n, e)
                src.append(slice(lo, hi) if k else lo)
                if k:
                    dst.append(slice(lo - s, hi - s))
            target = dest[r]
            if chunk is None:
                target[tuple(dst)] = layout.fill
            else:
                target[tuple(dst)] = chunk[tuple(src)]


def _expand(lo: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and chunk indices of every (window, chunk) pair, for windows over many chunks."""
    total = np.prod(span, axis=1)
    rows = np.repeat(np.arange(len(lo)), total)
    offsets = np.arange(int(total.sum())) - np.repeat(np.cumsum(total) - total, total)
    spans = span[rows]
    index = np.empty((len(rows), lo.shape[1]), dtype=np.int64)
    for d in range(lo.shape[1] - 1, -1, -1):
        index[:, d] = lo[rows, d] + offsets % spans[:, d]
        offsets = offsets // spans[:, d]
    return rows, index


def batch_needs(layout: StreamLayout, starts: np.ndarray) -> list[VarNeeds]:
    """Every chunk a batch needs, per variable, with the windows that read from it.

    ``starts`` holds the windows' start along every grid dim, shape ``(n, ndim)``.
    """
    n_vars = len(layout.variables)
    out: list[VarNeeds] = []
    for vi, var in enumerate(layout.variables):
        s = starts[:, list(var.grid_axes)] if var.grid_axes else starts[:, :0]
        lengths = np.asarray(var.lengths, dtype=np.int64)
        chunks = np.asarray(var.chunks, dtype=np.int64)
        shape = np.asarray(var.shape, dtype=np.int64)
        lo = s // chunks
        hi = (np.minimum(s + lengths, shape) - 1) // chunks
        span = hi - lo + 1
        simple = bool((span == 1).all())
        if simple:
            rows, index = np.arange(len(s)), lo
        else:
            rows, index = _expand(lo, span)
        if index.shape[1]:
            flat = np.ravel_multi_index(tuple(index.T), var.chunk_grid)
        else:
            flat = np.zeros(len(rows), dtype=np.int64)
        uniq, first, which = np.unique(flat, return_index=True, return_inverse=True)
        origin = index * chunks
        local = s[rows] - origin
        inside = simple and bool((s + lengths <= shape).all())
        out.append(
            VarNeeds(
                var=vi,
                keys=(uniq * n_vars + vi).tolist(),
                index=[tuple(i) for i in index[first].tolist()],
                which=which.reshape(-1).tolist(),
                rows=rows.tolist(),
                local=local.tolist(),
                inside=inside,
            )
        )
    return out


@dataclass
class BatchArrays:
    """The arrays one batch is assembled into."""

    dest: list[np.ndarray]  # per variable: (B, *sample shape), maybe a view into ``stacked``
    stacked: np.ndarray | None
    own: dict[str, np.ndarray]  # per variable arrays when not stacked
    nbytes: int


def _stacked_view(stacked: np.ndarray, var: VarLayout, layout: StreamLayout) -> np.ndarray:
    """The variable's (B, *sample shape) view into the (B, C, *common) stacked array."""
    b = stacked.shape[0]
    block = stacked[:, var.channel_start : var.channel_start + var.n_channels]
    extra = [d for d in var.sample_dims if d not in layout.common_dims]
    order = extra + list(layout.common_dims)
    sizes = [layout.grid.axis(d).length for d in order]
    view = np.reshape(block, (b, *sizes), copy=False)
    perm = [0] + [1 + order.index(d) for d in var.sample_dims]
    return view.transpose(perm)


def allocate(layout: StreamLayout, n: int, prefill: bool) -> BatchArrays:
    """Fresh arrays for a batch of ``n`` windows.

    ``prefill`` sets every element to its variable's fill value first (needed
    when windows can reach past the array edge).  Arrays are new for every
    batch: they are handed to the consumer without a copy.
    """
    if layout.stack and layout.stacked_dtype is not None:
        stacked = np.empty((n, len(layout.channels), *layout.common_shape), layout.stacked_dtype)
        dest = [_stacked_view(stacked, v, layout) for v in layout.variables]
        if prefill:
            for v, d in zip(layout.variables, dest, strict=True):
                d[...] = v.fill
        return BatchArrays(dest, stacked, {}, stacked.nbytes)
    own = {}
    for v in layout.variables:
        shape = (n, *v.sample_shape)
        own[v.name] = np.full(shape, v.fill, v.dtype) if prefill else np.empty(shape, v.dtype)
    return BatchArrays(list(own.values()), None, own, sum(a.nbytes for a in own.values()))


def validity_mask(layout: StreamLayout, starts: np.ndarray) -> np.ndarray:
    """Boolean ``(n, *window)`` mask: True where a padded window holds real data."""
    mask = np.ones((len(starts), *layout.mask_shape), dtype=bool)
    position = 0
    for a, axis in enumerate(layout.grid.axes):
        if axis.squeeze:
            continue
        inside = (starts[:, a, None] + np.arange(axis.length)) < axis.size  # (n, length)
        shape = [len(starts)] + [1] * len(layout.mask_shape)
        shape[1 + position] = axis.length
        mask &= inside.reshape(shape)
        position += 1
    return mask
