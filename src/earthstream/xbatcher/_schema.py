"""Which windows make each batch, by xbatcher 0.4's rules (pure NumPy, no xarray).

xbatcher cuts *patches*: along every sliced dim (the ``batch_dims`` that are
not ``input_dims``, in ``batch_dims`` order, then the ``input_dims`` in their
order) windows of the given length start at ``0, stride, 2 * stride ...``
(``stride = length - input_overlap[dim]``) as long as they fit; patches are the
Cartesian product of those windows, the last dim varying fastest.  Then:

* ``concat_input_dims=False``: every patch is a batch (``batch_dims`` that are
  also ``input_dims`` play no part, with a warning);
* ``concat_input_dims=True`` and no ``batch_dims``: one batch of all patches;
* ``concat_input_dims=True``, ``batch_dims`` apart from ``input_dims``: one
  batch per window of the batch dims, holding every input patch;
* ``concat_input_dims=True`` with dims in both: each patch goes to the batch its
  position along every dim falls in (``ceil(batch length / stride)`` patches per
  batch along a shared dim), patches past the last whole batch are left out, and
  a batch may be empty.

Patches are numbered by their position in that product (row-major over
:attr:`BatchPlan.dims`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import DimensionError, WindowError

__all__ = ["BatchPlan", "plan_batches"]


@dataclass(frozen=True)
class BatchPlan:
    """The patches and batches of a generator.

    ``dims`` are the sliced dims in patch order, with each window's ``lengths``
    and ``strides`` and the number of windows along each (``counts``).
    ``batches[i]`` holds the patch numbers of batch ``i``, in order.
    """

    dims: tuple[Hashable, ...]
    lengths: tuple[int, ...]
    strides: tuple[int, ...]
    counts: tuple[int, ...]
    batches: tuple[np.ndarray, ...]

    @property
    def n_patches(self) -> int:
        return int(np.prod(self.counts, dtype=np.int64))

    def starts(self, patches: np.ndarray) -> np.ndarray:
        """``(n, len(dims))`` window starts of the given patch numbers."""
        patches = np.asarray(patches, dtype=np.int64)
        if not self.dims:
            return np.zeros((len(patches), 0), dtype=np.int64)
        index = np.stack(np.unravel_index(patches, self.counts), axis=-1)
        return index * np.asarray(self.strides, dtype=np.int64)

    def selector(self, patch: int) -> dict[Hashable, slice]:
        """The ``isel`` selector of one patch, as xbatcher builds it."""
        starts = self.starts(np.asarray([patch]))[0].tolist()
        return {d: slice(s, s + n) for d, s, n in zip(self.dims, starts, self.lengths, strict=True)}


def plan_batches(
    sizes: Mapping[Hashable, int],
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int],
    batch_dims: Mapping[Hashable, int],
    concat_input_dims: bool,
) -> BatchPlan:
    """The batches of ``xbatcher.BatchGenerator(ds, ...)`` for a dataset of ``sizes``.

    Raises
    ------
    DimensionError
        A dim of ``input_dims`` or ``batch_dims`` that the dataset does not have.
    WindowError
        A window longer than its dim, or an overlap not shorter than its window
        (both ``ValueError``, as in xbatcher).

    Examples
    --------
    >>> plan = plan_batches({"x": 10}, {"x": 4}, {"x": 1}, {}, False)
    >>> plan.counts, [b.tolist() for b in plan.batches]
    ((3,), [[0], [1], [2]])
    >>> plan.selector(2)
    {'x': slice(6, 10, None)}
    """
    unique = {d: n for d, n in batch_dims.items() if input_dims.get(d) is None}
    shared = {d: n for d, n in batch_dims.items() if input_dims.get(d) is not None}
    if shared and not concat_input_dims:
        warnings.warn(
            "The following dimensions were included in both ``input_dims`` and "
            "``batch_dims``. Since ``concat_input_dims`` is ``False``, these dimensions will "
            f"not impact batch generation: {shared}",
            UserWarning,
            stacklevel=3,
        )
    sliced = {**unique, **input_dims}
    lengths, strides, counts = [], [], []
    for dim, length in sliced.items():
        if dim not in sizes:
            raise DimensionError(
                f"{dim!r} is in input_dims or batch_dims, but the dataset's dims are {list(sizes)}."
            )
        size = int(sizes[dim])
        length = int(length)
        overlap = int(input_overlap.get(dim, 0))
        if length > size:
            raise WindowError(
                "input sample length must be less than or equal to the dimension length, but "
                f"the sample length of {length} is greater than the dimension length of {size} "
                f"for {dim}"
            )
        if overlap >= length:
            raise WindowError(
                "input overlap must be less than the input sample length, but the input sample "
                f"length is {length} and the overlap is {overlap}"
            )
        stride = length - overlap
        lengths.append(length)
        strides.append(stride)
        counts.append(len(range(0, size - length + 1, stride)))
    n = int(np.prod(counts, dtype=np.int64))
    patches = np.arange(n, dtype=np.int64)
    if not concat_input_dims:
        batches = tuple(patches[i : i + 1] for i in range(n))
    elif not batch_dims:
        batches = (patches,)
    elif not shared:
        per = int(np.prod(counts[len(unique) :], dtype=np.int64))
        batches = tuple(patches[i : i + per] for i in range(0, n, per))
    else:
        batches = _grouped(sizes, sliced, input_dims, input_overlap, batch_dims, counts)
    return BatchPlan(tuple(sliced), tuple(lengths), tuple(strides), tuple(counts), tuple(batches))


def _grouped(
    sizes: Mapping[Hashable, int],
    sliced: Mapping[Hashable, int],
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int],
    batch_dims: Mapping[Hashable, int],
    counts: list[int],
) -> tuple[np.ndarray, ...]:
    """Batches when a dim is in both ``input_dims`` and ``batch_dims`` (concatenated)."""
    for dim in batch_dims:
        if dim not in sizes:
            raise DimensionError(
                f"{dim!r} is in batch_dims, but the dataset's dims are {list(sizes)}."
            )
    per_batch = {}  # patches per batch along each batch dim
    for dim, length in batch_dims.items():
        stride = input_dims[dim] - input_overlap.get(dim, 0) if dim in input_dims else length
        per_batch[dim] = math.ceil(length / stride)
    n_batches = [int(sizes[d]) // int(batch_dims.get(d, sizes[d])) for d in sliced]
    ids = []
    for dim, count in zip(sliced, counts, strict=True):
        ids.append(np.arange(count, dtype=np.int64) // per_batch.get(dim, count + 1))
    grids = np.meshgrid(*ids, indexing="ij")
    multi = np.stack([g.reshape(-1) for g in grids])  # (dims, patches), product order
    inside = np.all(multi < np.asarray(n_batches, dtype=np.int64)[:, None], axis=0)
    flat = np.ravel_multi_index(tuple(multi), tuple(n_batches), mode="clip")
    total = int(np.prod(n_batches, dtype=np.int64))
    patches = np.flatnonzero(inside)
    owner = flat[patches]
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(total + 1))
    return tuple(patches[order[bounds[b] : bounds[b + 1]]] for b in range(total))
