"""One GeoTIFF: where it is, its parsed header (one request for a COG) and GDAL's view of it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._names import suggest
from ..errors import ConfigError, StoreNotFoundError, UnsupportedFormatError, VariableNotFoundError
from ..storage import StoreLocation, parse_location
from ..storage._readers import open_reader
from ._tiff import COMPRESSIONS, TiffHeader, TiffImage, read_header
from ._tiff_gdal import GdalInfo, gdal_info

__all__ = ["TiffFile", "band_indexes", "open_file"]


@dataclass(frozen=True)
class TiffFile:
    """One GeoTIFF: where it is, its parsed header and GDAL's view of it (picklable)."""

    url: str
    location: StoreLocation  # the directory (or URL prefix) holding it
    key: str  # its name in ``location``
    header: TiffHeader
    info: GdalInfo

    @property
    def size(self) -> int:
        return self.header.size

    @property
    def display(self) -> str:
        """The URL as shown in messages and reprs: credentials redacted."""
        return self.location.redact(self.url)

    @property
    def gdal_path(self) -> str:
        from ..geo._gdal import gdal_path

        return gdal_path(self.url)

    def image(self, level: int | None) -> TiffImage:
        """The full-resolution image (``None``) or overview ``level``."""
        if level is None:
            return self.header.main
        overviews = self.header.overviews
        if not 0 <= level < len(overviews):
            raise ConfigError(
                f"overview={level} but {self.display!r} has {len(overviews)} overviews; use "
                f"0..{len(overviews) - 1} or None (full resolution)."
            )
        return overviews[level]

    def transform(self, level: int | None) -> tuple[float, float, float, float, float, float]:
        """The affine transform of ``level`` (GDAL scales the full one by the size ratio)."""
        a, b, c, d, e, f = self.info.transform
        if level is None:
            return (a, b, c, d, e, f)
        main, image = self.header.main, self.image(level)
        sx, sy = main.width / image.width, main.height / image.height
        return (a * sx, b * sy, c, d * sx, e * sy, f)


def band_indexes(file: TiffFile, bands: Sequence[int | str]) -> list[int]:
    """0-based band indexes of ``bands`` (1-based numbers or descriptions)."""
    names = [d or f"b{i + 1}" for i, d in enumerate(file.info.descriptions)]
    out = []
    for b in bands:
        if isinstance(b, int | np.integer) and not isinstance(b, bool):
            if not 1 <= int(b) <= file.info.count:
                raise VariableNotFoundError(
                    f"band {b} is not in {file.display!r}; it has bands 1..{file.info.count}."
                )
            out.append(int(b) - 1)
        elif b in names:
            out.append(names.index(str(b)))
        else:
            raise VariableNotFoundError(
                f"band {b!r} is not in {file.display!r}.{suggest(str(b), names)} "
                f"Bands: {', '.join(names)}."
            )
    return out


def open_file(
    url_or_path: str | os.PathLike[str], options: Mapping[str, Any] | None, prefix: int
) -> TiffFile:
    location = parse_location(url_or_path, options)
    if location.is_local:
        parent, name = os.path.split(location.path)
        parent_location = parse_location(parent)
    else:
        parent_location, name = location.split_key()
    reader = open_reader(parent_location)
    header, buf = read_header(reader, name, location.display, prefix=prefix)
    for image in (header.main, *header.overviews):
        if image.compression not in COMPRESSIONS:
            raise UnsupportedFormatError(
                f"{location.display!r} uses {image.compression_name}, which neither earthstream "
                "nor GDAL decodes. Convert it (e.g. gdal_translate -of COG -co COMPRESS=DEFLATE)."
            )

    def fetch(start: int, end: int) -> bytes:  # a read GDAL needs beyond the header
        data = reader.get_range(name, start, end)
        if data is None:
            raise StoreNotFoundError(f"{location.display!r} disappeared while it was opened.")
        return bytes(data)

    info = gdal_info(buf, name, location.display, fetch)
    return TiffFile(url=location.url, location=parent_location, key=name, header=header, info=info)
