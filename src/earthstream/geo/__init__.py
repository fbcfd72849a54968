"""Geometry and geospatial reading: grids, windows, CRSs, reading rasters onto chip grids.

Needs the ``geo`` extra (``pip install earthstream[geo]``): pyproj, rasterio,
shapely.  ``import earthstream`` does not import this package.
"""

from ._gdal import GDAL_OPTIONS, gdal_env, gdal_path
from ._grid import (
    Bounds,
    GridSpec,
    PixelWindow,
    crs_units,
    normalize_crs,
    reproject_bounds,
)
from ._read import RESAMPLING, ChipRead, RasterBand, RasterRef, decode, pick_overview, read_chip

__all__ = [
    "GDAL_OPTIONS",
    "RESAMPLING",
    "Bounds",
    "ChipRead",
    "GridSpec",
    "PixelWindow",
    "RasterBand",
    "RasterRef",
    "crs_units",
    "decode",
    "gdal_env",
    "gdal_path",
    "normalize_crs",
    "pick_overview",
    "read_chip",
    "reproject_bounds",
]
