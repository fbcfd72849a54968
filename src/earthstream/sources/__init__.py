"""Data sources: what can be streamed, described by variables on a chunk grid."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._base import ChunkedSource, SelectedSource, VariableInfo, source_selection
from ._memory import ArraySource
from ._xarray import XarraySource, is_xarray, open_xarray
from ._zarr import ZarrSource, open_zarr

__all__ = [
    "ArraySource",
    "ChunkedSource",
    "SelectedSource",
    "VariableInfo",
    "XarraySource",
    "ZarrSource",
    "as_source",
    "is_xarray",
    "open_xarray",
    "open_zarr",
    "source_selection",
]


def as_source(
    source: ChunkedSource | str | os.PathLike[str] | Any,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> ChunkedSource:
    """What every stream accepts as a source, as a :class:`ChunkedSource`.

    A source is returned as it is; anything else (a path or URL, an
    ``xarray.Dataset`` or ``DataArray``) is opened with :func:`open_zarr`.
    """
    if isinstance(source, ChunkedSource):
        return source
    return open_zarr(source, storage_options=storage_options)
