"""earthstream: stream cloud-native geospatial and climate data into ML training.

The public API in one place::

    import earthstream as es

    source = es.open_zarr("era5.zarr", variables=["t2m", "u10"])
    stream = es.Stream(source, window={"lat": 64, "lon": 64}, batch_size=32)
    for batch in stream:  # Batch: name -> (32, 64, 64) arrays, plus starts/coords
        ...
"""

from . import datasets, errors
from ._batch import Batch
from ._stream import Stream
from .engine import EpochReport
from .sources import ArraySource, ChunkedSource, VariableInfo, ZarrSource, open_zarr

__version__ = "0.1.0"

__all__ = [
    "ArraySource",
    "Batch",
    "ChunkedSource",
    "EpochReport",
    "Stream",
    "VariableInfo",
    "ZarrSource",
    "__version__",
    "datasets",
    "errors",
    "open_zarr",
]
