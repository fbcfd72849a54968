"""What every non-primary modality needs: the primary's geometry, and opening what was handed in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from .._stream import latlon_dims
from ..errors import GridMismatchError
from ..sources import is_xarray, is_zarr_input, open_zarr
from ._spec import MissingModality, Resolution

__all__ = ["Primary", "is_raster", "open_modality", "spatial_dims"]


class Primary(Protocol):
    """What the modalities need of the primary modality's stream (fixed when it is built)."""

    @property
    def coords(self) -> Mapping[str, np.ndarray]: ...

    lat_dim: str
    lon_dim: str
    time_dim: str | None
    lat_step: float
    lon_step: float
    input_steps: int
    crs: str
    missing_modality: MissingModality
    resolution: Resolution

    def window_len(self, dim: str) -> int: ...

    def window_starts(self, dim: str) -> np.ndarray:
        """Every window start along ``dim`` (positions in the selection)."""
        ...

    def footprints(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``(n, 4)`` west, south, east, north of the windows starting at ``lat``/``lon``."""
        ...


def spatial_dims(coords: Mapping[str, Any], what: str) -> tuple[str, str]:
    lat, lon = latlon_dims(coords)
    if lat is None or lon is None:
        raise GridMismatchError(
            f"{what} has no latitude/longitude coordinates (dims named lat/latitude and "
            f"lon/longitude; it has {sorted(coords)}), so its footprint is unknown."
        )
    return lat, lon


def is_raster(source: Any) -> bool:
    """A GeoTIFF: a :class:`~earthstream.COGSource` or a :class:`~earthstream.TiffSource`."""
    from ..sources._cog import COGSource
    from ..sources._tiff_source import TiffSource

    return isinstance(source, COGSource | TiffSource)


def open_modality(source: Any) -> Any:
    """What a modality's ``source`` names, opened: GeoTIFF paths as
    :class:`~earthstream.TiffSource` (their tiles are chunks), Zarr paths, stores and
    xarray objects as :class:`~earthstream.ZarrSource`; sources as they are."""
    if isinstance(source, str | os.PathLike):
        text = str(source)
        if text.lower().endswith((".tif", ".tiff")):
            from ..sources._tiff_open import open_tiff

            return open_tiff(text)
        return open_zarr(text)
    if is_xarray(source) or is_zarr_input(source):
        return open_zarr(source)
    return source
