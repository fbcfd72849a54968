"""The contract between a data source and the streaming engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._cf import CFCoder

__all__ = ["ChunkedSource", "VariableInfo"]


@dataclass(frozen=True)
class VariableInfo:
    """Static description of one variable of a source.

    ``chunks`` is the shape of the unit the engine decodes: the chunk, or for a
    sharded Zarr v3 array the inner chunk.  ``dtype`` is the dtype of the values
    the source delivers: after CF decoding (``cf``), e.g. float32 for a packed
    int16 variable.  ``fill_value`` is what missing chunks and padded window
    edges hold, decoded too (NaN where xarray masks the stored fill value).
    ``attrs`` are the attributes as xarray's backend reads them (for Zarr v2 the
    array's ``fill_value`` is the ``_FillValue``).
    """

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[int, ...]
    fill_value: Any
    codecs: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    cf: CFCoder | None = field(default=None, compare=False, hash=False)

    @property
    def stored_dtype(self) -> np.dtype[Any]:
        """The dtype of the stored values (before CF decoding)."""
        return np.dtype(self.cf.raw_dtype) if self.cf is not None else self.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Number of chunks along each dim."""
        return tuple(-(-s // c) if c else 0 for s, c in zip(self.shape, self.chunks, strict=True))

    @property
    def chunk_nbytes(self) -> int:
        """Decoded bytes of one full chunk."""
        return int(np.prod(self.chunks, dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def sizes(self) -> dict[str, int]:
        return dict(zip(self.dims, self.shape, strict=True))


@runtime_checkable
class ChunkedSource(Protocol):
    """A set of named N-D arrays on a regular chunk grid, readable chunk by chunk.

    Sources are descriptions: they pickle (to DataLoader and Dask workers) without
    open connections, and create readers lazily in each process.
    """

    @property
    def variables(self) -> Mapping[str, VariableInfo]:
        """The data variables, by name."""
        ...

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        """1-D coordinate values by dim name (time decoded to ``datetime64``)."""
        ...

    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode one chunk of ``name`` at chunk-grid ``index``.

        Returns an array whose shape covers at least the part of the chunk inside
        the array bounds, or ``None`` if the chunk is not stored (it then holds
        ``fill_value`` everywhere).  Values are decoded: in the variable's
        ``dtype``, CF decoding applied.  With ``out`` (an array of the full chunk
        shape and the variable's dtype, e.g. an engine cache slot) the chunk is
        written into it, from its origin, and ``out`` is returned.  Must be
        thread-safe.
        """
        ...

    def select(self, variables: Sequence[str]) -> ChunkedSource:
        """The same source restricted to ``variables``."""
        ...


def source_selection(source: ChunkedSource) -> dict[str, Any]:
    """The position ranges (:class:`~earthstream.sampling._select.Span` per dim) a source
    is already cut to, e.g. a :class:`~earthstream.ZarrSource` opened from a sliced
    ``xarray.Dataset``; empty for the whole source."""
    return dict(source.selection) if isinstance(source, SelectedSource) else {}


@runtime_checkable
class SelectedSource(Protocol):
    """A source that carries a selection of positions of its arrays."""

    @property
    def selection(self) -> Mapping[str, Any]: ...
