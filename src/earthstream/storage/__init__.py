"""Where bytes come from: local files and object stores behind one small interface."""

from ._location import StoreLocation, parse_location
from ._readers import ByteReader, LocalReader, ObjectStoreReader, open_reader
from ._secrets import redact
from ._zarr_store import StoreHandle, ZarrStoreReader

__all__ = [
    "ByteReader",
    "LocalReader",
    "ObjectStoreReader",
    "StoreHandle",
    "StoreLocation",
    "ZarrStoreReader",
    "open_reader",
    "parse_location",
    "redact",
]
