"""Data sources: what can be streamed, described by variables on a chunk grid."""

from ._base import ChunkedSource, VariableInfo
from ._memory import ArraySource
from ._tiff_source import TiffSource, open_tiff
from ._zarr import ZarrSource, open_zarr

__all__ = [
    "ArraySource",
    "ChunkedSource",
    "TiffSource",
    "VariableInfo",
    "ZarrSource",
    "open_tiff",
    "open_zarr",
]
