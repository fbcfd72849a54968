"""Decode speed of one GeoTIFF tile with the candidate decoders (the choice behind _tiff_codecs).

    .venv/bin/python benchmarks/tiff_codecs.py [--tile 512] [--bands 4]

Writes a tiled GeoTIFF (rasterio/GDAL: 4 uint16 bands, smooth fields plus sensor
noise) per compression and predictor, takes the stored bytes of one tile and
times each decoder on them in one thread (median CPU time of 30 calls): Python's zlib,
numcodecs, imagecodecs (zlib-ng and libdeflate; zstd; LZW), tifffile's
``TiffPage.decode``, and async-tiff's ``Tile.decode_sync`` when it is installed;
plus the predictor and the chunky -> band-first transpose the engine slot needs.
Single-threaded figures; the machine may be shared, so compare rows, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _time(fn: Callable[[], Any], n: int = 30) -> float:
    """Median CPU seconds of this thread per call (a shared machine disturbs it less than
    wall time: waiting for a core is not counted)."""
    fn()
    runs = []
    for _ in range(n):
        t0 = time.thread_time()
        fn()
        runs.append(time.thread_time() - t0)
    return statistics.median(runs)


def _write(path: Path, compress: str, predictor: int, tile: int, bands: int) -> np.ndarray:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    size = 2 * tile
    yy, xx = np.mgrid[0:size, 0:size]
    base = 1500 + 800 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
    data = np.stack(
        [
            np.clip(base * (1 + 0.25 * b) + rng.normal(0, 40, base.shape), 1, None)
            for b in range(bands)
        ]
    ).astype(np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", tiled=True, blockxsize=tile, blockysize=tile, compress=compress,
        predictor=predictor, width=size, height=size, count=bands, dtype="uint16",
        crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 0),
    ) as dst:  # fmt: skip
        dst.write(data)
    return data


def _rows(path: Path, compress: str, predictor: int, tile: int, bands: int) -> dict[str, Any]:
    """Seconds per tile of each decoder (and step) on the first tile of ``path``."""
    import imagecodecs
    import numcodecs
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        tf.filehandle.seek(page.dataoffsets[0])
        raw = tf.filehandle.read(page.databytecounts[0])
        out = np.empty((tile, tile, bands), np.uint16)
        flat = out.reshape(-1).view(np.uint8)
        rows: dict[str, Any] = {"stored": len(raw)}
        if compress == "deflate":
            rows["python zlib.decompress"] = _time(lambda: zlib.decompress(raw))
            rows["numcodecs Zlib"] = _time(lambda: numcodecs.Zlib().decode(raw))
            rows["imagecodecs zlib_decode (zlib-ng)"] = _time(
                lambda: imagecodecs.zlib_decode(raw, out=flat)
            )
            rows["imagecodecs deflate_decode (libdeflate)"] = _time(
                lambda: imagecodecs.deflate_decode(raw, out=flat)
            )
        elif compress == "zstd":
            rows["numcodecs Zstd"] = _time(lambda: numcodecs.Zstd().decode(raw, out=flat))
            rows["imagecodecs zstd_decode"] = _time(lambda: imagecodecs.zstd_decode(raw, out=flat))
        else:
            rows["imagecodecs lzw_decode"] = _time(lambda: imagecodecs.lzw_decode(raw, out=flat))
        if predictor == 2:
            rows["  + delta_decode (predictor 2)"] = _time(
                lambda: imagecodecs.delta_decode(out, axis=-2, out=out)
            )
        slot = np.empty((bands, tile, tile), np.uint16)
        rows["  + transpose into a (bands, y, x) slot"] = _time(
            lambda: np.copyto(slot, out.transpose(2, 0, 1))
        )
        rows["tifffile TiffPage.decode (all steps)"] = _time(lambda: page.decode(raw, 0))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--bands", type=int, default=4)
    args = p.parse_args()
    tile, bands = args.tile, args.bands
    nbytes = tile * tile * bands * 2
    try:
        import async_tiff
    except ImportError:
        async_tiff = None
    with tempfile.TemporaryDirectory() as tmp:
        for compress, predictor in [("deflate", 2), ("zstd", 2), ("deflate", 1), ("zstd", 1),
                                    ("lzw", 2)]:  # fmt: skip
            path = Path(tmp) / f"{compress}-{predictor}.tif"
            _write(path, compress, predictor, tile, bands)
            rows = _rows(path, compress, predictor, tile, bands)
            stored = rows.pop("stored")
            if async_tiff is not None:
                rows["async-tiff Tile.decode_sync (all steps)"] = _async_tiff(path, async_tiff)
            print(f"{compress} predictor {predictor}: {stored:,} stored bytes "
                  f"({nbytes / stored:.2f}:1)")  # fmt: skip
            for name, seconds in rows.items():
                print(f"  {name:42s} {seconds * 1e3:7.2f} ms  {nbytes / seconds / 1e6:7.0f} MB/s")


def _async_tiff(path: Path, module: Any) -> float:
    from obstore.store import LocalStore

    async def fetch(n: int) -> list[Any]:
        tiff = await module.TIFF.open(path.name, store=LocalStore(str(path.parent)))
        return [await tiff.fetch_tile(0, 0, 0) for _ in range(n)]

    tiles = asyncio.run(fetch(31))
    registry = module.DecoderRegistry()
    runs = []
    for tile in tiles:  # a tile decodes once: fetch one per run
        t0 = time.thread_time()
        tile.decode_sync(decoder_registry=registry)
        runs.append(time.thread_time() - t0)
    return statistics.median(runs[1:])


if __name__ == "__main__":
    main()
