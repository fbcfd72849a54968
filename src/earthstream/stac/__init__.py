"""STAC: items from catalogs, ItemCollections, stac-geoparquet and STAC APIs, and the rasters
their assets describe (projection, raster and eo/bands metadata).

Needs the ``geo`` extra.  ``import earthstream`` does not import this package.
"""

from ._assets import MISSING_PROJECTION, asset_raster, item_datetime, raster_assets, resolve_href
from ._items import freeze_items, load_items, search_items

__all__ = [
    "MISSING_PROJECTION",
    "asset_raster",
    "freeze_items",
    "item_datetime",
    "load_items",
    "raster_assets",
    "resolve_href",
    "search_items",
]
