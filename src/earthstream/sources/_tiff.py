"""TIFF headers: every IFD of a (Cloud-Optimized) GeoTIFF, read through ``storage/``.

A COG keeps all its image file directories (IFDs) and their tag arrays at the
start of the file, before the tiles.  :func:`read_header` reads a prefix of the
file (one request remotely, :data:`HEADER_BYTES` by default) and parses the IFD
chain from it; only IFDs or tag arrays that lie beyond the prefix (a plain
GeoTIFF whose overviews were added later, a file with more tiles than the
prefix holds offsets for) cost more requests: one per round of the chain, with
all missing ranges of a round fetched together.

Classic TIFF and BigTIFF, little and big endian.  Each IFD becomes a frozen
:class:`TiffImage`: size, tiles or strips, samples, bits and sample format,
planar configuration, compression, predictor, and the offset and byte count of
every tile (per plane for planar files).  GeoTIFF georeferencing and GDAL's
band metadata are not decoded here: :mod:`earthstream.sources._tiff_gdal` lets
GDAL read them from the same bytes (no further request).
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CorruptFileError, StoreNotFoundError, UnsupportedFormatError
from ..storage._readers import ByteReader, LocalReader, ObjectStoreReader

__all__ = [
    "HEADER_BYTES",
    "HeaderBytes",
    "TiffHeader",
    "TiffImage",
    "read_header",
]

#: Bytes read from the start of a file for its header (GDAL reads 16 KB; a COG
#: of 100k tiles needs more for its offset arrays, which the extension fetches).
HEADER_BYTES = 64 * 1024

#: Bytes read around an IFD that lies beyond what was read so far.
_BLOCK = 16 * 1024

#: Most IFDs followed in one file (a loop in the chain is a damaged file).
_MAX_IFDS = 4096

# TIFF field types: (struct code, size)
_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1),  # BYTE
    2: ("s", 1),  # ASCII
    3: ("H", 2),  # SHORT
    4: ("I", 4),  # LONG
    5: ("II", 8),  # RATIONAL
    6: ("b", 1),  # SBYTE
    7: ("B", 1),  # UNDEFINED
    8: ("h", 2),  # SSHORT
    9: ("i", 4),  # SLONG
    10: ("ii", 8),  # SRATIONAL
    11: ("f", 4),  # FLOAT
    12: ("d", 8),  # DOUBLE
    13: ("I", 4),  # IFD
    16: ("Q", 8),  # LONG8
    17: ("q", 8),  # SLONG8
    18: ("Q", 8),  # IFD8
}

# Tags this module reads (others are kept only as bytes, for GDAL).
NEW_SUBFILE_TYPE = 254
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
PHOTOMETRIC = 262
STRIP_OFFSETS = 273
ORIENTATION = 274
SAMPLES_PER_PIXEL = 277
ROWS_PER_STRIP = 278
STRIP_BYTE_COUNTS = 279
PLANAR_CONFIG = 284
PREDICTOR = 317
TILE_WIDTH = 322
TILE_LENGTH = 323
TILE_OFFSETS = 324
TILE_BYTE_COUNTS = 325
SAMPLE_FORMAT = 339
JPEG_TABLES = 347
IMAGE_DEPTH = 32997
GDAL_NODATA = 42113

_WANTED = {
    NEW_SUBFILE_TYPE,
    IMAGE_WIDTH,
    IMAGE_LENGTH,
    BITS_PER_SAMPLE,
    COMPRESSION,
    PHOTOMETRIC,
    STRIP_OFFSETS,
    ORIENTATION,
    SAMPLES_PER_PIXEL,
    ROWS_PER_STRIP,
    STRIP_BYTE_COUNTS,
    PLANAR_CONFIG,
    PREDICTOR,
    TILE_WIDTH,
    TILE_LENGTH,
    TILE_OFFSETS,
    TILE_BYTE_COUNTS,
    SAMPLE_FORMAT,
    IMAGE_DEPTH,
    GDAL_NODATA,
    JPEG_TABLES,
}

#: Compression codes by name (TIFF, Adobe and GDAL's registered codes).
COMPRESSIONS: dict[int, str] = {
    1: "none",
    2: "ccittrle",
    3: "ccittfax3",
    4: "ccittfax4",
    5: "lzw",
    6: "ojpeg",
    7: "jpeg",
    8: "deflate",
    32773: "packbits",
    32946: "deflate",
    34676: "sgilog",
    34677: "sgilog24",
    34712: "jpeg2000",
    34887: "lerc",
    34925: "lzma",
    50000: "zstd",
    50001: "webp",
    50002: "jxl",
    52546: "jxl",
}

#: NumPy dtype kind of each SampleFormat.
_KINDS = {1: "u", 2: "i", 3: "f"}


class HeaderBytes:
    """The bytes read of one file so far: sparse, by offset (thread-compatible, not shared)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._parts: list[tuple[int, bytes]] = []

    def add(self, start: int, data: bytes) -> None:
        if data:
            self._parts.append((start, bytes(data)))

    def get(self, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` if read already (clipped to the file size), else ``None``."""
        end = min(end, self.size)
        if start >= end:
            return b""
        for lo, data in self._parts:
            if lo <= start and end <= lo + len(data):
                return data[start - lo : end - lo]
        # a range spread over adjacent parts
        pieces, pos = [], start
        for lo, data in sorted(self._parts):
            if lo <= pos < lo + len(data):
                take = data[pos - lo : min(end, lo + len(data)) - lo]
                pieces.append(take)
                pos += len(take)
                if pos >= end:
                    return b"".join(pieces)
        return None

    def missing(self, start: int, end: int) -> bool:
        return self.get(start, end) is None

    @property
    def nbytes(self) -> int:
        return sum(len(d) for _, d in self._parts)


@dataclass(frozen=True)
class TiffImage:
    """One IFD: an image of the file (full resolution, an overview or a mask).

    Blocks are tiles (``tiled``) or strips (a strip is a block as wide as the
    image, ``block_shape[0]`` rows high; the last one may be stored shorter).
    ``offsets``/``bytecounts`` have shape ``(planes, block rows, block cols)``:
    one plane for pixel-interleaved (chunky) files, one per sample for planar.
    """

    ifd: int
    offset: int  # where the IFD starts in the file
    subfile_type: int
    width: int
    height: int
    block_shape: tuple[int, int]
    tiled: bool
    samples: int
    bits: int
    sample_format: int
    planar: int  # 1: chunky (pixel interleaved), 2: planar (band interleaved)
    compression: int
    predictor: int
    photometric: int
    orientation: int
    offsets: np.ndarray = field(compare=False, repr=False)
    bytecounts: np.ndarray = field(compare=False, repr=False)
    has_jpeg_tables: bool = False
    nodata: str | None = None  # GDAL_NODATA text
    depth: int = 1
    uniform_bits: bool = True

    @property
    def is_reduced(self) -> bool:
        return bool(self.subfile_type & 1)

    @property
    def is_mask(self) -> bool:
        return bool(self.subfile_type & 4)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def grid(self) -> tuple[int, int]:
        """Blocks along rows and columns."""
        return (int(self.offsets.shape[1]), int(self.offsets.shape[2]))

    @property
    def compression_name(self) -> str:
        return COMPRESSIONS.get(self.compression, f"compression {self.compression}")

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """The stored sample type (native byte order), or ``None`` when NumPy has none
        (e.g. 1, 4 or 12 bits, complex)."""
        kind = _KINDS.get(self.sample_format)
        if kind is None or not self.uniform_bits or self.bits not in (8, 16, 32, 64):
            return None
        if kind == "f" and self.bits == 8:
            return None
        return np.dtype(f"{kind}{self.bits // 8}")

    def block_rows(self, row: int) -> int:
        """Rows stored in block row ``row`` (strips: the last one may be short)."""
        if self.tiled:
            return self.block_shape[0]
        return min(self.block_shape[0], self.height - row * self.block_shape[0])


@dataclass(frozen=True)
class TiffHeader:
    """Every IFD of a file, with its byte order, kind and size."""

    url: str
    size: int
    byteorder: str  # "<" or ">"
    bigtiff: bool
    images: tuple[TiffImage, ...]

    @property
    def main(self) -> TiffImage:
        return self.images[0]

    @property
    def overviews(self) -> tuple[TiffImage, ...]:
        """Reduced-resolution images like the main one, largest first (GDAL's overviews)."""
        main = self.main
        found = [
            im
            for im in self.images[1:]
            if im.is_reduced
            and not im.is_mask
            and im.samples == main.samples
            and im.bits == main.bits
            and im.sample_format == main.sample_format
            and im.width < main.width
        ]
        return tuple(sorted(found, key=lambda im: -im.width))

    @property
    def masks(self) -> tuple[TiffImage, ...]:
        return tuple(im for im in self.images if im.is_mask)


# -- reading ---------------------------------------------------------------------------
def read_head(reader: ByteReader, key: str, length: int, url: str) -> tuple[bytes, int]:
    """The first ``length`` bytes of ``key`` (fewer if the file is shorter) and its size,
    in one request.  Missing files raise :class:`StoreNotFoundError`."""
    if isinstance(reader, LocalReader):
        path = os.path.join(reader.root, key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise StoreNotFoundError(f"no file at {url!r}; check the path.") from None
        except IsADirectoryError:
            raise StoreNotFoundError(f"{url!r} is a directory, not a TIFF file.") from None
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, min(length, size), 0)
        finally:
            os.close(fd)
        reader.stats.record(requests=1, nbytes=len(data))
        return data, size
    if isinstance(reader, ObjectStoreReader):
        import obstore

        from ..storage._retry import call_with_retries

        def fetch() -> tuple[bytes, int]:
            result = obstore.get(reader.store, key, options={"range": (0, length)})
            size = int(result.meta["size"])
            return bytes(result.bytes()), size

        try:
            return call_with_retries(
                fetch,
                what=f"{reader.url}/{key}",
                policy=reader.policy,
                stats=reader.stats,
                rng=random.Random(),
                size=lambda r: len(r[0]),
            )
        except FileNotFoundError:
            raise StoreNotFoundError(f"no file at {url!r} (HTTP 404); check the URL.") from None
    raise UnsupportedFormatError(  # pragma: no cover - every reader is one of the two
        f"cannot read the TIFF header of {url!r} with a {type(reader).__name__}."
    )


class _Parser:
    """Walks the IFD chain, fetching what lies beyond the bytes read so far."""

    def __init__(self, reader: ByteReader, key: str, url: str, buf: HeaderBytes) -> None:
        self.reader, self.key, self.url, self.buf = reader, key, url, buf
        self.requests = 0

    def corrupt(self, what: str) -> CorruptFileError:
        return CorruptFileError(
            f"{self.url!r} is not a readable TIFF: {what}. The file is damaged or truncated; "
            "rewrite it (e.g. gdal_translate -of COG)."
        )

    def fetch(self, ranges: Sequence[tuple[int, int]], *, strict: bool = True) -> None:
        """Read ``ranges`` that are not read yet, together.  ``strict``: a range past the
        end of the file is a damaged file; otherwise ranges are clipped to it."""
        size = self.buf.size
        if strict:
            for lo, hi in ranges:
                if hi > size:
                    raise self.corrupt(
                        f"its header points at bytes {lo}-{hi}, past its end ({size} bytes)"
                    )
        todo = sorted(
            {(lo, min(hi, size)) for lo, hi in ranges if lo < size and self.buf.missing(lo, hi)}
        )
        if not todo:
            return
        # merge ranges closer than a block: one range each
        merged: list[list[int]] = []
        for lo, hi in todo:
            if merged and lo <= merged[-1][1] + _BLOCK:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        starts = [m[0] for m in merged]
        ends = [m[1] for m in merged]
        if len(merged) == 1:
            one = self.reader.get_range(self.key, starts[0], ends[0])
            parts = None if one is None else [one]
        else:
            parts = self.reader.get_ranges(self.key, starts, ends)
        self.requests += 1
        if parts is None:
            raise StoreNotFoundError(f"{self.url!r} disappeared while its header was read.")
        for lo, data in zip(starts, parts, strict=True):
            self.buf.add(lo, bytes(data))

    def need(self, start: int, end: int) -> bytes:
        data = self.buf.get(start, end)
        if data is None:
            self.fetch([(start, end)])
            data = self.buf.get(start, end)
        if data is None or len(data) != end - start:
            raise self.corrupt(f"bytes {start}-{end} lie past its end ({self.buf.size} bytes)")
        return data


def read_header(
    reader: ByteReader, key: str, url: str, *, prefix: int = HEADER_BYTES
) -> tuple[TiffHeader, HeaderBytes]:
    """Parse every IFD of ``key``: one request for a COG's header (see the module doc).

    Returns the header and the bytes read (GDAL reads its georeferencing from them).
    """
    head, size = read_head(reader, key, prefix, url)
    buf = HeaderBytes(size)
    buf.add(0, head)
    p = _Parser(reader, key, url, buf)
    if size < 8:
        raise p.corrupt(f"it has {size} bytes, fewer than a TIFF header")
    order = head[:2]
    if order == b"II":
        bo = "<"
    elif order == b"MM":
        bo = ">"
    else:
        raise UnsupportedFormatError(
            f"{url!r} is not a TIFF file (it starts with {bytes(head[:4])!r}, not II*/MM*)."
        )
    (magic,) = struct.unpack(bo + "H", head[2:4])
    if magic == 42:
        bigtiff = False
        (first,) = struct.unpack(bo + "I", head[4:8])
    elif magic == 43:
        bigtiff = True
        if size < 16:
            raise p.corrupt(f"it has {size} bytes, fewer than a BigTIFF header")
        (first,) = struct.unpack(bo + "Q", p.need(8, 16))
    else:
        raise UnsupportedFormatError(f"{url!r} is not a TIFF file (version {magic}, not 42 or 43).")

    images: list[TiffImage] = []
    seen: set[int] = set()
    offset = first
    while offset:
        if offset in seen or len(images) >= _MAX_IFDS:
            raise p.corrupt(f"its IFD chain loops back to offset {offset}")
        seen.add(offset)
        if offset >= size:
            raise p.corrupt(f"IFD {len(images)} is at offset {offset}, past its end ({size})")
        if p.buf.missing(offset, offset + 8):
            p.fetch([(offset, offset + _BLOCK)], strict=False)
        ifd_offset = offset
        entries, offset = _read_ifd(p, bo, bigtiff, offset)
        images.append(_image(p, len(images), ifd_offset, entries))
    if not images:
        raise p.corrupt("it has no image (no IFD)")
    return TiffHeader(url, size, bo, bigtiff, tuple(images)), buf


def _read_ifd(p: _Parser, bo: str, bigtiff: bool, offset: int) -> tuple[dict[int, Any], int]:
    """The wanted tags of the IFD at ``offset`` (values decoded) and the next IFD's offset."""
    count_fmt, count_size = ("Q", 8) if bigtiff else ("H", 2)
    entry_size, inline = (20, 8) if bigtiff else (12, 4)
    (n,) = struct.unpack(bo + count_fmt, p.need(offset, offset + count_size))
    if n > 10000:
        raise p.corrupt(f"the IFD at offset {offset} claims {n} entries")
    table_end = offset + count_size + n * entry_size
    next_size = 8 if bigtiff else 4
    table = p.need(offset + count_size, table_end + next_size)
    (next_offset,) = struct.unpack(bo + ("Q" if bigtiff else "I"), table[-next_size:])
    raw: list[tuple[int, int, int, bytes, int]] = []  # tag, type, count, inline bytes, offset
    far: list[tuple[int, int]] = []
    for i in range(n):
        e = table[i * entry_size : (i + 1) * entry_size]
        if bigtiff:
            tag, typ, count = struct.unpack(bo + "HHQ", e[:12])
            value = e[12:20]
        else:
            tag, typ, count = struct.unpack(bo + "HHI", e[:8])
            value = e[8:12]
        if typ not in _TYPES:
            continue  # unknown field type: skip, as libtiff does
        nbytes = count * _TYPES[typ][1]
        if nbytes > inline:
            (where,) = struct.unpack(bo + ("Q" if bigtiff else "I"), value)
            raw.append((tag, typ, count, b"", where))
            far.append((where, where + nbytes))  # every tag (GDAL reads them all)
        else:
            raw.append((tag, typ, count, value[:nbytes], -1))
    p.fetch(far)  # the tag arrays beyond what was read: one request for all
    entries: dict[int, Any] = {}
    for tag, typ, count, value, where in raw:
        if tag not in _WANTED:
            continue
        if where >= 0:
            value = p.need(where, where + count * _TYPES[typ][1])
        entries[tag] = _decode_value(bo, typ, count, value)
    return entries, int(next_offset)


def _decode_value(bo: str, typ: int, count: int, data: bytes) -> Any:
    code = _TYPES[typ][0]
    if typ == 2:
        return data.split(b"\0", 1)[0].decode("latin-1")
    if typ in (1, 7) and count > 64:
        return bytes(data)
    if len(code) == 2:  # rationals
        values = np.frombuffer(data, dtype=bo + code[0].replace("I", "u4").replace("i", "i4"))
        return tuple(float(a) / float(b) if b else 0.0 for a, b in values.reshape(-1, 2))
    dtype = {
        "B": "u1",
        "b": "i1",
        "H": "u2",
        "h": "i2",
        "I": "u4",
        "i": "i4",
        "Q": "u8",
        "q": "i8",
        "f": "f4",
        "d": "f8",
    }[code]
    arr = np.frombuffer(data, dtype=np.dtype(bo + dtype), count=count)
    return arr.astype(arr.dtype.newbyteorder("="))


def _first(entries: dict[int, Any], tag: int, default: int) -> int:
    value = entries.get(tag)
    if value is None:
        return default
    if isinstance(value, np.ndarray):
        return int(value[0]) if value.size else default
    return int(value)


def _image(p: _Parser, number: int, offset: int, entries: dict[int, Any]) -> TiffImage:
    where = f"IFD {number}"
    if IMAGE_WIDTH not in entries or IMAGE_LENGTH not in entries:
        raise p.corrupt(f"{where} has no image width or length")
    width = _first(entries, IMAGE_WIDTH, 0)
    height = _first(entries, IMAGE_LENGTH, 0)
    samples = _first(entries, SAMPLES_PER_PIXEL, 1)
    bits_arr = np.atleast_1d(np.asarray(entries.get(BITS_PER_SAMPLE, np.array([1]))))
    bits = int(bits_arr[0])
    uniform = bool((bits_arr == bits).all())
    formats = np.atleast_1d(np.asarray(entries.get(SAMPLE_FORMAT, np.array([1]))))
    sample_format = int(formats[0])
    uniform = uniform and bool((formats == sample_format).all())
    planar = _first(entries, PLANAR_CONFIG, 1)
    if planar not in (1, 2):
        raise p.corrupt(f"{where} has planar configuration {planar} (1 or 2)")
    planes = samples if planar == 2 else 1
    tiled = TILE_WIDTH in entries or TILE_OFFSETS in entries
    if tiled:
        tw = _first(entries, TILE_WIDTH, 0)
        th = _first(entries, TILE_LENGTH, 0)
        if tw <= 0 or th <= 0:
            raise p.corrupt(f"{where} is tiled but has no tile width or length")
        offsets = entries.get(TILE_OFFSETS)
        counts = entries.get(TILE_BYTE_COUNTS)
        grid = (-(-height // th), -(-width // tw))
        block = (th, tw)
    else:
        rps = _first(entries, ROWS_PER_STRIP, 2**32 - 1)
        rps = max(1, min(rps, height)) if height else 1
        offsets = entries.get(STRIP_OFFSETS)
        counts = entries.get(STRIP_BYTE_COUNTS)
        grid = (-(-height // rps), 1 if width else 0)
        block = (rps, width)
    n = planes * grid[0] * grid[1]
    if offsets is None or counts is None:
        raise p.corrupt(f"{where} has no {'tile' if tiled else 'strip'} offsets or byte counts")
    offsets = np.asarray(offsets, dtype=np.uint64).reshape(-1)
    counts = np.asarray(counts, dtype=np.uint64).reshape(-1)
    if offsets.size != n or counts.size != n:
        raise p.corrupt(
            f"{where} has {offsets.size} block offsets and {counts.size} byte counts for "
            f"{n} blocks ({planes} planes of {grid[0]} x {grid[1]})"
        )
    nodata = entries.get(GDAL_NODATA)
    return TiffImage(
        ifd=number,
        offset=offset,
        subfile_type=_first(entries, NEW_SUBFILE_TYPE, 0),
        width=width,
        height=height,
        block_shape=block,
        tiled=tiled,
        samples=samples,
        bits=bits,
        sample_format=sample_format,
        planar=planar,
        compression=_first(entries, COMPRESSION, 1),
        predictor=_first(entries, PREDICTOR, 1),
        photometric=_first(entries, PHOTOMETRIC, -1),
        orientation=_first(entries, ORIENTATION, 1),
        offsets=offsets.reshape(planes, *grid),
        bytecounts=counts.reshape(planes, *grid),
        has_jpeg_tables=JPEG_TABLES in entries,
        nodata=str(nodata).strip() if isinstance(nodata, str) and nodata.strip() else None,
        depth=_first(entries, IMAGE_DEPTH, 1),
        uniform_bits=uniform,
    )
