"""earthstream: stream cloud-native geospatial and climate data into ML training.

The public API in one place::

    import earthstream as es

    source = es.open_zarr("era5.zarr", variables=["t2m", "u10"])
    stream = es.Stream(source, window={"lat": 64, "lon": 64}, batch_size=32)
    for batch in stream:  # Batch: name -> (32, 64, 64) arrays, plus starts/coords
        ...
"""

from typing import TYPE_CHECKING, Any

from . import errors
from ._batch import Batch
from ._stream import Stream
from .engine import EpochReport
from .experiment import MinValid, SpatialBlocks, Splits, split
from .multimodal import Modality, MultiStream
from .sampling import Forecast
from .sources import (
    ArraySource,
    ChunkedSource,
    VariableInfo,
    XarraySource,
    ZarrSource,
    open_xarray,
    open_zarr,
)
from .stats import Normalizer, Stats, compute_stats
from .writeback import PredictionWriter, WriteReport

if TYPE_CHECKING:
    from . import datasets
    from .chips import ChipStream, stream_chips
    from .delivery._torch import to_torch
    from .geo import GridSpec, PixelWindow
    from .sources._cog import COGSource, open_cog
    from .sources._tiff_open import open_tiff
    from .sources._tiff_source import TiffSource
    from .stac import freeze_items, load_items, search_items
    from .vector import VectorSource, open_vector

__version__ = "0.1.0"

#: Names imported on first use (they need the ``geo`` or ``torch`` extra).
_LAZY = {
    "COGSource": ("earthstream.sources._cog", "COGSource"),
    "ChipStream": ("earthstream.chips._stream", "ChipStream"),
    "GridSpec": ("earthstream.geo._grid", "GridSpec"),
    "PixelWindow": ("earthstream.geo._grid", "PixelWindow"),
    "TiffSource": ("earthstream.sources._tiff_source", "TiffSource"),
    "VectorSource": ("earthstream.vector._source", "VectorSource"),
    "freeze_items": ("earthstream.stac._items", "freeze_items"),
    "load_items": ("earthstream.stac._items", "load_items"),
    "open_cog": ("earthstream.sources._cog", "open_cog"),
    "open_tiff": ("earthstream.sources._tiff_open", "open_tiff"),
    "open_vector": ("earthstream.vector._source", "open_vector"),
    "search_items": ("earthstream.stac._items", "search_items"),
    "stream_chips": ("earthstream.chips._open", "stream_chips"),
    "to_torch": ("earthstream.delivery._torch", "to_torch"),
}

#: Subpackages the library itself never imports (generated data for examples, demos
#: and benchmarks), loaded on first use of ``earthstream.<name>``.
_LAZY_MODULES = ("datasets",)


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY_MODULES:
        package = importlib.import_module(f"earthstream.{name}")
        globals()[name] = package
        return package
    if name in _LAZY:
        module, attr = _LAZY[name]
        try:
            value = getattr(importlib.import_module(module), attr)
        except ImportError as exc:  # pragma: no cover - without the geo extra
            raise ImportError(
                f"earthstream.{name} needs an optional extra: pip install 'earthstream[geo]' "
                f"(rasters, vectors, STAC) or 'earthstream[torch]' ({exc})"
            ) from exc
        globals()[name] = value
        return value
    raise AttributeError(f"module 'earthstream' has no attribute {name!r}")


__all__ = [
    "ArraySource",
    "Batch",
    "COGSource",
    "ChipStream",
    "ChunkedSource",
    "EpochReport",
    "Forecast",
    "MinValid",
    "Modality",
    "MultiStream",
    "GridSpec",
    "Normalizer",
    "PixelWindow",
    "PredictionWriter",
    "SpatialBlocks",
    "Splits",
    "Stats",
    "Stream",
    "TiffSource",
    "VariableInfo",
    "VectorSource",
    "WriteReport",
    "XarraySource",
    "ZarrSource",
    "__version__",
    "compute_stats",
    "datasets",
    "errors",
    "freeze_items",
    "load_items",
    "open_cog",
    "open_tiff",
    "open_vector",
    "open_xarray",
    "open_zarr",
    "search_items",
    "split",
    "stream_chips",
    "to_torch",
]
