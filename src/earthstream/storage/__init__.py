"""Where bytes come from: local files and object stores behind one small interface."""

from ._location import StoreLocation, parse_location
from ._readers import ByteReader, LocalReader, ObjectStoreReader, open_reader
from ._secrets import redact

__all__ = [
    "ByteReader",
    "LocalReader",
    "ObjectStoreReader",
    "StoreLocation",
    "open_reader",
    "parse_location",
    "redact",
]
