"""Data sources: what can be streamed, described by variables on a chunk grid."""

from ._base import ChunkedSource, VariableInfo
from ._memory import ArraySource
from ._zarr import ZarrSource, open_zarr

__all__ = ["ArraySource", "ChunkedSource", "VariableInfo", "ZarrSource", "open_zarr"]
