"""Data sources: what can be streamed, described by variables on a chunk grid."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

from ._base import ChunkedSource, SelectedSource, VariableInfo, source_selection
from ._memory import ArraySource
from ._tiff_source import TiffSource, open_tiff
from ._xarray import XarraySource, is_xarray, open_xarray
from ._zarr import ZarrSource, is_zarr_input, open_zarr

__all__ = [
    "ArraySource",
    "ChunkedSource",
    "SelectedSource",
    "TiffSource",
    "VariableInfo",
    "XarraySource",
    "ZarrSource",
    "as_source",
    "is_xarray",
    "is_zarr_input",
    "open_tiff",
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

    A path or URL, a zarr-python store/group/array, or an ``xarray.Dataset``/
    ``DataArray`` is opened with :func:`open_zarr`; an object whose type has the
    source members is taken to be a source already (checked on the type, not by
    touching its properties: a remote source's ``coords`` read the store); anything
    else raises :class:`~earthstream.errors.UnsupportedInputError`.
    """
    if isinstance(source, str | os.PathLike) or is_xarray(source) or is_zarr_input(source):
        return open_zarr(source, storage_options=storage_options)
    kind = type(source)
    if all(hasattr(kind, member) for member in ("variables", "coords", "read_chunk", "select")):
        return cast(ChunkedSource, source)
    return open_zarr(source, storage_options=storage_options)  # raises UnsupportedInputError
