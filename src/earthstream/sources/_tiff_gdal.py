"""Georeferencing and band metadata of a TIFF, read by GDAL from the header bytes already read.

GeoTIFF georeferencing (geokeys, tie points, pixel-is-point, user-defined
CRSs) and GDAL's own band metadata (``GDAL_METADATA``: descriptions, scale,
offset; ``GDAL_NODATA``) have many corner cases that GDAL settles.  Rather than
re-implement them, GDAL opens the file through a Python file object that
serves the bytes :func:`~earthstream.sources._tiff.read_header` read: the
answer is exactly what ``rasterio.open`` would report, at no extra request for
a COG (a read GDAL asks for beyond them goes through the same byte reader).
GDAL is also the fallback decoder for tiles this package does not decode itself
(JPEG, WebP, LERC, 1-bit ...): see :class:`~earthstream.sources.TiffSource`.
"""

from __future__ import annotations

import io
import math
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptFileError
from ._tiff import HeaderBytes

__all__ = ["GdalInfo", "gdal_info"]


@dataclass(frozen=True)
class GdalInfo:
    """What GDAL reports of a file's full-resolution image (as ``rasterio.open`` does)."""

    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    descriptions: tuple[str | None, ...]
    overviews: tuple[int, ...]
    shape: tuple[int, int]
    units: tuple[str | None, ...] = ()
    tags: Mapping[str, str] | None = None


class _HeaderFile(io.RawIOBase):
    """A read-only file over the header bytes; reads beyond them go to ``fetch``."""

    def __init__(self, buf: HeaderBytes, fetch: Callable[[int, int], bytes]) -> None:
        self.buf, self.fetch, self.pos = buf, fetch, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            self.pos = self.buf.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int | None = -1) -> bytes:
        size = self.buf.size
        end = size if n is None or n < 0 else min(size, self.pos + n)
        if end <= self.pos:
            return b""
        data = self.buf.get(self.pos, end)
        if data is None:
            data = self.fetch(self.pos, end)
            self.buf.add(self.pos, data)
        self.pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Container:
    """The one-file "file system" GDAL sees (no sidecars, no listing)."""

    def __init__(self, name: str, buf: HeaderBytes, fetch: Callable[[int, int], bytes]) -> None:
        self.name, self.buf, self.fetch = name, buf, fetch

    def _mine(self, path: str) -> bool:
        return posixpath.basename(path) == self.name

    def open(self, path: str, mode: str = "r", **kwds: Any) -> _HeaderFile:
        if not self._mine(path) or "w" in mode or "+" in mode:
            raise FileNotFoundError(path)
        return _HeaderFile(self.buf, self.fetch)

    def isfile(self, path: str) -> bool:
        return self._mine(path)

    def isdir(self, path: str) -> bool:
        return False

    def ls(self, path: str) -> list[str]:
        return []

    def mtime(self, path: str) -> int:
        return 0

    def rm(self, path: str) -> None:
        raise PermissionError(path)

    def size(self, path: str) -> int:
        if not self._mine(path):
            raise FileNotFoundError(path)
        return self.buf.size


def _container(name: str, buf: HeaderBytes, fetch: Callable[[int, int], bytes]) -> Any:
    from rasterio.abc import FileContainer

    class Container(_Container, FileContainer):  # type: ignore[misc]
        pass

    return Container(name, buf, fetch)


def gdal_info(
    buf: HeaderBytes, name: str, url: str, fetch: Callable[[int, int], bytes]
) -> GdalInfo:
    """GDAL's view of the file whose header bytes are ``buf`` (``name``: its file name)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from ..geo._grid import normalize_crs

    safe = name.replace("/", "_") or "file.tif"
    env = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_PAM_ENABLED": "NO",  # no .aux.xml sidecar
    }
    try:
        with (
            rasterio.Env(**env),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            opener = _container(safe, buf, fetch)
            with rasterio.open(f"/header/{safe}", opener=opener) as ds:
                crs = None if ds.crs is None else normalize_crs(ds.crs)
                factors = tuple(int(f) for f in ds.overviews(1)) if ds.count else ()
                nodata = ds.nodata
                return GdalInfo(
                    crs=crs,
                    transform=tuple(float(v) for v in tuple(ds.transform)[:6]),  # type: ignore[arg-type]
                    count=int(ds.count),
                    dtypes=tuple(str(d) for d in ds.dtypes),
                    nodata=None if nodata is None else float(nodata),
                    scales=tuple(float(s) for s in ds.scales),
                    offsets=tuple(float(o) for o in ds.offsets),
                    descriptions=tuple(ds.descriptions),
                    overviews=factors,
                    shape=(int(ds.height), int(ds.width)),
                    units=tuple(ds.units),
                    tags=dict(ds.tags()),
                )
    except RasterioIOError as exc:
        raise CorruptFileError(
            f"GDAL cannot read the header of {url!r}: {exc}. The file is damaged or not a "
            "GeoTIFF GDAL reads."
        ) from None


def is_nan(value: float | None) -> bool:
    return value is not None and math.isnan(value)
