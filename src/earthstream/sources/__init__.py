"""Data sources: what can be streamed, described by variables on a chunk grid.

Every source implements the gridded-source contract
(:class:`earthstream.protocols.ChunkedSource`); optional capabilities (remote I/O
in two steps, request counts, chunk locations) are Protocols of their own in
:mod:`earthstream.protocols`.
"""

from __future__ import annotations

from ._base import ChunkedSource, VariableInfo, source_selection
from ._memory import ArraySource
from ._open import as_source, open_zarr
from ._tiff_open import open_tiff
from ._tiff_source import TiffSource
from ._xarray import XarraySource, is_xarray, open_xarray
from ._zarr import ZarrSource
from ._zarr_open import is_zarr_input

__all__ = [
    "ArraySource",
    "ChunkedSource",
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
