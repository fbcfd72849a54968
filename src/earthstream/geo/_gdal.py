"""GDAL access: paths for remote files, the options that keep reads lean, per-thread handles.

GDAL (through rasterio) reads the GeoTIFFs.  Its defaults are made for local
files: on a URL it would list the directory and probe for sidecar files
(``.aux.xml``, ``.ovr``, ``.msk``) before reading a byte of the image.
:data:`GDAL_OPTIONS` turns that off, reads the header in one request, merges
adjacent tile ranges into one request and caches what was read per handle.

Dataset handles are not thread-safe, so each thread keeps its own (opened on
first use, at most :data:`MAX_HANDLES` per thread).  The handles of a parent
process are never used after a fork.  GDAL's ``/vsicurl/`` layer caches file
sizes and header bytes per process, so the header is fetched once per file and
process, not once per thread.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..errors import StoreNotFoundError
from ..storage import StoreLocation, parse_location
from ..storage._readers import keep_inherited
from ..storage._secrets import redact, url_secrets

__all__ = [
    "GDAL_OPTIONS",
    "MAX_HANDLES",
    "bound_gdal_cache",
    "gdal_cache_share",
    "gdal_env",
    "gdal_path",
    "open_dataset",
]

#: GDAL configuration used for every read (overridable per call).
GDAL_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing, no sidecar probing
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # adjacent tiles in one range request
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",  # the header (IFDs of all overviews) in one GET
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(16 << 20),
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 << 20),
    "GDAL_NUM_THREADS": "1",  # parallelism is ours: one chip per thread
    "CHECK_DISK_FREE_SPACE": "FALSE",
}

#: Open dataset handles kept per thread.
MAX_HANDLES = 64

_VSI_PREFIX = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "s3": "/vsis3/",
    "s3a": "/vsis3/",
    "gs": "/vsigs/",
    "gcs": "/vsigs/",
    "az": "/vsiaz/",
    "azure": "/vsiaz/",
    "abfs": "/vsiaz/",
    "abfss": "/vsiaz/",
}


def gdal_path(location: StoreLocation | str | os.PathLike[str]) -> str:
    """The path GDAL opens for a local path or URL.

    >>> gdal_path("https://example.com/a/b.tif")
    '/vsicurl/https://example.com/a/b.tif'
    >>> gdal_path("s3://bucket/key.tif")
    '/vsis3/bucket/key.tif'
    """
    if not isinstance(location, StoreLocation):
        text = os.fspath(location)
        if text.startswith("/vsi"):
            return text
        location = parse_location(text)
    if location.is_local:
        return location.path
    prefix = _VSI_PREFIX[location.scheme]
    if prefix == "/vsicurl/":
        return prefix + location.url
    return prefix + location.url.split("://", 1)[1]


@contextmanager
def gdal_env(options: Mapping[str, str] | None = None) -> Iterator[None]:
    """``rasterio.Env`` with :data:`GDAL_OPTIONS` plus ``options``."""
    import rasterio

    with rasterio.Env(**{**GDAL_OPTIONS, **(options or {})}):
        yield


class _Handles(threading.local):
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: OrderedDict[tuple[str, int | None], Any] = OrderedDict()


_handles = _Handles()


def open_dataset(path: str, overview_level: int | None = None) -> Any:
    """This thread's open rasterio dataset for ``path`` (an overview with ``overview_level``).

    Call inside :func:`gdal_env`.  Missing files raise
    :class:`~earthstream.errors.StoreNotFoundError`.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    h = _handles
    if h.pid != os.getpid():  # forked: the parent's handles are not ours to use or close
        keep_inherited(h.open)  # closing them here would run GDAL's close on parent state
        h.pid, h.open = os.getpid(), OrderedDict()
    key = (path, overview_level)
    ds = h.open.get(key)
    if ds is not None:
        h.open.move_to_end(key)
        return ds
    try:
        if overview_level is None:
            ds = rasterio.open(path)
        else:
            ds = rasterio.open(path, overview_level=overview_level)
    except RasterioIOError as exc:
        shown = redact(path, url_secrets(path.removeprefix("/vsicurl/")))
        message = redact(str(exc), url_secrets(path.removeprefix("/vsicurl/")))
        raise StoreNotFoundError(f"cannot open raster {shown!r}: {message}") from None
    h.open[key] = ds
    while len(h.open) > MAX_HANDLES:
        _, old = h.open.popitem(last=False)
        old.close()
    return ds


def close_handles() -> None:
    """Close this thread's handles (tests and benchmarks that want a cold start)."""
    h = _handles
    if h.pid == os.getpid():
        for ds in h.open.values():
            ds.close()
    else:
        keep_inherited(h.open)
    h.open = OrderedDict()
    h.pid = os.getpid()


@functools.cache
def quiet_rasterio_warnings() -> None:
    """rasterio warns while it builds the in-memory datasets of a warp or a rasterize (before
    it sets their transform); the transforms are always given here, so the warning is noise."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings(
        "ignore", message="Dataset has no geotransform", category=NotGeoreferencedWarning
    )


# -- GDAL's block cache: bounded by the memory budgets of the streams using GDAL -----------
#: The smallest and largest block cache a stream asks for (bytes).
GDAL_CACHE_MIN = 8 << 20
GDAL_CACHE_MAX = 256 << 20

_cache_lock = threading.Lock()
_cache_owners: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_cache_state: dict[str, int] = {}


def gdal_cache_share(memory_limit: int) -> int:
    """The part of a stream's ``memory_limit`` set aside for GDAL's block cache: 1/16,
    between 8 and 256 MB.

    >>> gdal_cache_share(1 << 30) >> 20, gdal_cache_share(64 << 20) >> 20
    (64, 8)
    """
    return int(min(GDAL_CACHE_MAX, max(GDAL_CACHE_MIN, memory_limit // 16)))


def bound_gdal_cache(owner: Any, nbytes: int) -> int:
    """Bound GDAL's block cache (``GDAL_CACHEMAX``, one setting per process) by the largest
    share ``nbytes`` of the streams alive in this process that registered one.

    GDAL's default is 5% of the machine's RAM per process, outside any budget; a
    stream calls this where it iterates (in each DataLoader worker), with its share
    (:func:`gdal_cache_share`).  Returns the setting in bytes.
    """
    from rasterio.env import get_gdal_config, set_gdal_config

    with _cache_lock:
        if _cache_state.get("pid") != os.getpid():  # forked: this process's own setting
            _cache_state.clear()
            _cache_state["pid"] = os.getpid()
        _cache_owners[owner] = int(nbytes)
        value = max(_cache_owners.values())
        if _cache_state.get("value") != value or get_gdal_config("GDAL_CACHEMAX") != value:
            set_gdal_config("GDAL_CACHEMAX", value)  # an int: bytes (GDALSetCacheMax64)
            _cache_state["value"] = value
        return value
