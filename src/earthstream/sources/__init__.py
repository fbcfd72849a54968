"""Data sources: what can be streamed, described by variables on a chunk grid."""

from ._base import ChunkedSource, VariableInfo
from ._memory import ArraySource
from ._zarr import ZarrSource, is_zarr_input, open_zarr

__all__ = [
    "ArraySource",
    "ChunkedSource",
    "VariableInfo",
    "ZarrSource",
    "is_zarr_input",
    "open_zarr",
]
