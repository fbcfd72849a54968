"""Opening GeoTIFFs (COGs) as chunked sources of their tiles: :func:`open_tiff`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ConfigError
from ..storage import parse_location
from ._tiff import HEADER_BYTES
from ._tiff_file import open_file
from ._tiff_source import TiffSource

__all__ = ["open_tiff"]


def open_tiff(
    url_or_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    bands: Sequence[int | str] | None = None,
    overview: int | None = None,
    name: str = "band_data",
    stack_dim: str = "scene",
    stack_coords: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    header_bytes: int = HEADER_BYTES,
) -> TiffSource:
    """Open a (Cloud-Optimized) GeoTIFF, or a stack of them, as a chunked source of its tiles.

    Reads each file's header (one request for a COG) and nothing else; the source
    keeps it, so DataLoader workers do not read it again.  In a ``Stream``, name
    ``"band": None`` in the window to keep every band in each chip; a dim left out
    of the window is iterated, so without it each sample is one band.

    Parameters
    ----------
    url_or_path
        A local path, ``file://`` or object-store URL (``s3://``, ``gs://``, ``az://``,
        ``http(s)://``); or a list of them with one shape, tiling, band count and
        dtype, stacked along ``stack_dim``.
    bands
        Bands to read (1-based numbers or descriptions); default all.
    overview
        Overview level to read (0: the first, 2x coarser, as rasterio's
        ``overview_level``); default full resolution.  ``source.overview(k)``
        gives another level without reading again.
    name
        The variable's name.
    stack_dim, stack_coords
        With several files: the name of the leading dim and its coordinate values
        (default ``0 .. n-1``).
    storage_options
        Options for the object-store client of remote URLs (never logged).
    header_bytes
        Bytes read from the start of each file for its header.

    Examples
    --------
    >>> import numpy as np, rasterio
    >>> from affine import Affine
    >>> path = str(tmp_path / "a.tif")
    >>> data = np.arange(2 * 600 * 700, dtype=np.uint16).reshape(2, 600, 700)
    >>> with rasterio.open(path, "w", driver="COG", width=700, height=600, count=2,
    ...                    dtype="uint16", crs="EPSG:32633", blocksize=256,
    ...                    compress="zstd", transform=Affine(10, 0, 5e5, 0, -10, 5e6)) as dst:
    ...     dst.write(data)
    >>> source = open_tiff(path)
    >>> info = source.variables["band_data"]
    >>> info.dims, info.shape, info.chunks
    (('band', 'y', 'x'), (2, 600, 700), (2, 256, 256))
    >>> source.overviews, source.coords["x"][:2]
    ((2, 4), array([500005., 500015.]))
    >>> tile = source.read_chunk("band_data", (0, 1, 2))   # tile row 1, column 2
    >>> bool((tile[:, :, :700 - 512] == data[:, 256:512, 512:700]).all())
    True

    Chips on the file's own grid stream through the engine, each tile decoded once:

    >>> import earthstream as es
    >>> stream = es.Stream(source, window={"band": None, "y": 128, "x": 128},
    ...                    batch_size=4, shuffle=False)
    >>> batch = next(iter(stream))
    >>> batch["band_data"].shape
    (4, 2, 128, 128)
    """
    if isinstance(url_or_path, str | os.PathLike):
        paths = [url_or_path]
        stacked = False
    else:
        paths = list(url_or_path)
        stacked = True
        if not paths:
            raise ConfigError("open_tiff got an empty list of files.")
    if header_bytes < 16:
        raise ConfigError(f"header_bytes={header_bytes} must be at least 16.")
    remote = not parse_location(paths[0], storage_options).is_local
    if len(paths) > 1 and remote:
        with ThreadPoolExecutor(min(len(paths), 16)) as pool:
            files = list(pool.map(lambda p: open_file(p, storage_options, header_bytes), paths))
    else:
        files = [open_file(p, storage_options, header_bytes) for p in paths]
    source = TiffSource(
        files,
        level=overview,
        name=name,
        stack_dim=stack_dim if stacked else None,
        stack_coords=stack_coords,
    )
    if bands is not None:
        source = source.select_bands(bands)
    return source
