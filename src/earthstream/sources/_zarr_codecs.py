"""Decoding Zarr chunks without zarr-python's per-call overhead.

zarr-python costs about 0.5 ms per read call.  The engine reads one chunk at a
time, so it reads the chunk's bytes itself and decodes them with numcodecs,
following the array's own codec chain as the metadata (v2 ``.zarray`` or v3
``zarr.json``) describes it.  This module turns that metadata into a frozen,
picklable :class:`ZarrArraySpec` and decodes bytes with it.  Codec chains it does
not know are marked ``fast=False`` and read through zarr-python instead.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ChunkDecodeError
from ..storage._readers import Buffer, ByteReader

_MISSING = np.uint64(2**64 - 1)
_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclass(frozen=True)
class RawChunk:
    """A chunk's stored bytes and where they came from (for messages)."""

    data: Buffer
    where: str


class _Damaged(bytes):
    """In place of a chunk's bytes: why they cannot be read (a damaged shard index entry).

    Decoding it raises :class:`ChunkDecodeError` for that chunk alone, so
    ``corrupt="skip"`` drops only its samples.
    """

    message: str

    @classmethod
    def because(cls, message: str) -> _Damaged:
        damaged = cls()
        damaged.message = message
        return damaged


@dataclass(frozen=True)
class _ShardIndex:
    """A shard's index (``(*chunks_per_shard, 2)`` offsets and lengths) and the shard's size."""

    table: np.ndarray
    size: int


@dataclass(frozen=True)
class ShardSpec:
    """Layout of a Zarr v3 shard: inner chunks and where their index lives."""

    inner_chunks: tuple[int, ...]
    chunks_per_shard: tuple[int, ...]
    index_location: str  # "start" | "end"
    index_checksum: bool
    index_big_endian: bool

    @property
    def n_inner(self) -> int:
        return int(np.prod(self.chunks_per_shard, dtype=np.int64))

    @property
    def index_nbytes(self) -> int:
        return self.n_inner * 16 + (4 if self.index_checksum else 0)


@dataclass(frozen=True)
class ZarrArraySpec:
    """Everything needed to find and decode one chunk of a Zarr array.

    ``chunks`` is the decode unit (the inner chunk of a sharded array);
    ``grid_chunks`` the unit that has a key in the store (the shard).
    ``read_unit`` (sharded arrays only): inner chunks per *read unit* along each
    dim, the block the engine reads, caches and cuts windows from
    (:attr:`unit_chunks`); ``None``: the inner chunk itself.
    """

    path: str
    shape: tuple[int, ...]
    dtype: str  # NumPy dtype string with byte order, e.g. "<f4"
    chunks: tuple[int, ...]
    grid_chunks: tuple[int, ...]
    fill_value: Any
    zarr_format: int
    key_prefix: str  # "c/" (or "c.") for the v3 default encoding, "" otherwise
    key_separator: str
    bytes_codecs: tuple[Mapping[str, Any], ...]  # numcodecs configs, encode order
    filters: tuple[Mapping[str, Any], ...] = ()  # v2 array filters, encode order
    order: str = "C"
    transpose: tuple[int, ...] | None = None
    shard: ShardSpec | None = None
    fast: bool = True
    codec_names: tuple[str, ...] = ()
    read_unit: tuple[int, ...] | None = None

    @property
    def unit_chunks(self) -> tuple[int, ...]:
        """The shape of the block the engine sees as one chunk (a read unit, or ``chunks``)."""
        if self.read_unit is None:
            return self.chunks
        return tuple(c * k for c, k in zip(self.chunks, self.read_unit, strict=True))

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype)

    def key(self, grid_index: Sequence[int]) -> str:
        """The store key of the chunk (or shard) at ``grid_index``."""
        name = self.key_separator.join(str(i) for i in grid_index)
        if self.zarr_format == 2:
            name = name or "0"
        elif self.key_prefix:
            name = self.key_prefix + name if name else self.key_prefix[0]
        else:
            name = name or "0"
        return f"{self.path}/{name}" if self.path else name


def _v3_bytes_codec(name: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
    if name == "zstd":
        return {"id": "zstd", "level": config.get("level", 0), "checksum": config.get("checksum")}
    if name == "blosc":
        shuffle = config.get("shuffle", "noshuffle")
        return {
            "id": "blosc",
            "cname": config.get("cname", "lz4"),
            "clevel": config.get("clevel", 5),
            "shuffle": _BLOSC_SHUFFLE.get(shuffle, shuffle),
            "blocksize": config.get("blocksize", 0),
        }
    if name == "gzip":
        return {"id": "gzip", "level": config.get("level", 5)}
    if name == "crc32c":
        return {"id": "crc32c"}
    return _numcodecs_v3(name, config)


#: numcodecs' bytes-to-bytes codecs, as Zarr v3 names them (``numcodecs.<id>``): what
#: zarr-python writes for numcodecs codecs and what VirtualiZarr writes for HDF5 filters
#: (``numcodecs.shuffle`` + ``numcodecs.zlib`` for NetCDF4's ``shuffle=True, zlib=True``).
#: Array-to-array codecs (delta, fixedscaleoffset, quantize, bitround, astype ...) are not
#: here: chains with them are read through zarr-python.
NUMCODECS_BYTES_CODECS = frozenset(
    {
        "adler32",
        "blosc",
        "bz2",
        "crc32",
        "crc32c",
        "fletcher32",
        "gzip",
        "jenkins_lookup3",
        "lz4",
        "lzma",
        "shuffle",
        "zlib",
        "zstd",
    }
)


def _numcodecs_v3(name: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The numcodecs config of a v3 ``numcodecs.<id>`` bytes codec (``None``: not one).

    >>> _numcodecs_v3("numcodecs.zlib", {"level": 4})
    {'level': 4, 'id': 'zlib'}
    >>> _numcodecs_v3("numcodecs.delta", {"dtype": "<f4"}) is None
    True
    """
    prefix = "numcodecs."
    if not name.startswith(prefix) or name[len(prefix) :] not in NUMCODECS_BYTES_CODECS:
        return None
    return {**config, "id": name[len(prefix) :]}


def _parse_v3_chain(
    codecs: Sequence[Mapping[str, Any]], ndim: int
) -> tuple[str | None, tuple[int, ...] | None, list[dict[str, Any]], Mapping[str, Any] | None]:
    """Split a v3 chain into (endian, transpose, bytes codecs, sharding config).

    Raises ``LookupError`` for codecs the fast path does not handle.
    """
    endian: str | None = None
    transpose: tuple[int, ...] | None = None
    bytes_codecs: list[dict[str, Any]] = []
    sharding: Mapping[str, Any] | None = None
    stage = "array"
    for codec in codecs:
        name = codec["name"]
        config = codec.get("configuration", {}) or {}
        if stage == "array" and name == "transpose":
            order = config["order"]
            transpose = tuple(order) if not isinstance(order, str) else None
            if transpose is None:  # legacy "C"/"F" strings
                transpose = tuple(range(ndim)) if order == "C" else tuple(range(ndim))[::-1]
        elif stage == "array" and name == "bytes":
            endian = config.get("endian")
            stage = "bytes"
        elif stage == "array" and name == "sharding_indexed":
            sharding = config
            stage = "bytes"
        elif stage == "bytes":
            numcodec = _v3_bytes_codec(name, config)
            if numcodec is None:
                raise LookupError(name)
            bytes_codecs.append(numcodec)
        else:
            raise LookupError(name)
    return endian, transpose, bytes_codecs, sharding


def spec_from_metadata(path: str, meta: Mapping[str, Any], dtype: np.dtype[Any]) -> ZarrArraySpec:
    """Build the decode spec of one array from its metadata document.

    ``meta`` is the array's metadata as JSON (zarr-python's ``metadata.to_dict()``);
    ``dtype`` its NumPy dtype (zarr-python resolves v3 data type names).
    """
    shape = tuple(int(s) for s in meta["shape"])
    ndim = len(shape)
    if meta["zarr_format"] == 2:
        chunks = tuple(int(c) for c in meta["chunks"])
        compressor = meta.get("compressor")
        filters = tuple(dict(f) for f in (meta.get("filters") or ()))
        names = tuple(f["id"] for f in filters) + ((compressor["id"],) if compressor else ())
        return ZarrArraySpec(
            path=path,
            shape=shape,
            dtype=dtype.str,
            chunks=chunks,
            grid_chunks=chunks,
            fill_value=meta.get("fill_value"),
            zarr_format=2,
            key_prefix="",
            key_separator=meta.get("dimension_separator") or ".",
            bytes_codecs=(dict(compressor),) if compressor else (),
            filters=filters,
            order=meta.get("order", "C"),
            fast=dtype.kind not in "OUSV",
            codec_names=names,
        )

    grid = meta["chunk_grid"]
    if grid.get("name") != "regular":
        raise LookupError(f"chunk grid {grid.get('name')!r}")
    grid_chunks = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
    encoding = meta.get("chunk_key_encoding", {"name": "default"})
    enc_config = encoding.get("configuration", {}) or {}
    if encoding.get("name") == "v2":
        prefix, separator = "", enc_config.get("separator", ".")
    else:
        separator = enc_config.get("separator", "/")
        prefix = "c" + separator
    codecs = meta["codecs"]
    names = tuple(c["name"] for c in codecs)
    common: dict[str, Any] = {
        "path": path,
        "shape": shape,
        "grid_chunks": grid_chunks,
        "fill_value": meta.get("fill_value"),
        "zarr_format": 3,
        "key_prefix": prefix,
        "key_separator": separator,
        "codec_names": names,
    }
    try:
        endian, transpose, bytes_codecs, sharding = _parse_v3_chain(codecs, ndim)
        if sharding is not None:
            inner_chunks = tuple(int(c) for c in sharding["chunk_shape"])
            i_endian, i_transpose, i_bytes, i_sharding = _parse_v3_chain(sharding["codecs"], ndim)
            index_codecs = [c["name"] for c in sharding.get("index_codecs", ())]
            if i_sharding is not None or bytes_codecs or transpose is not None:
                raise LookupError("nested sharding")
            if index_codecs not in (["bytes"], ["bytes", "crc32c"]):
                raise LookupError("index codecs " + ",".join(index_codecs))
            index_endian = sharding["index_codecs"][0].get("configuration", {}).get("endian")
            shard = ShardSpec(
                inner_chunks=inner_chunks,
                chunks_per_shard=tuple(
                    g // c for g, c in zip(grid_chunks, inner_chunks, strict=True)
                ),
                index_location=sharding.get("index_location", "end"),
                index_checksum=index_codecs[-1] == "crc32c",
                index_big_endian=index_endian == "big",
            )
            endian, transpose, bytes_codecs = i_endian, i_transpose, i_bytes
            chunks = inner_chunks
        else:
            shard = None
            chunks = grid_chunks
    except LookupError:
        return ZarrArraySpec(
            chunks=grid_chunks, dtype=dtype.str, bytes_codecs=(), fast=False, **common
        )
    if endian is not None and dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    return ZarrArraySpec(
        chunks=chunks,
        dtype=dtype.str,
        bytes_codecs=tuple(bytes_codecs),
        transpose=transpose,
        shard=shard,
        fast=dtype.kind not in "OUSVT",
        **common,
    )


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_DICT_ID_BYTES = (0, 1, 2, 4)


def declared_nbytes(codec_id: str, data: Any) -> int | None:
    """The decoded size a zstd frame or a blosc buffer declares in its header.

    ``None`` when the header does not declare it (a zstd frame written without its
    content size) or is not a header at all (the decoder then reports the damage).

    >>> import numcodecs, numpy as np
    >>> declared_nbytes("zstd", numcodecs.Zstd().encode(np.zeros(16, "f4")))
    64
    >>> declared_nbytes("blosc", numcodecs.Blosc().encode(np.zeros(16, "f4")))
    64
    """
    head = bytes(memoryview(data).cast("B")[:18])
    if codec_id == "blosc":
        return int.from_bytes(head[4:8], "little") if len(head) >= 16 else None
    if len(head) < 6 or head[:4] != _ZSTD_MAGIC:
        return None
    descriptor = head[4]
    single_segment = (descriptor >> 5) & 1
    size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
    if size_bytes == 0:
        return None
    at = 5 + (1 - single_segment) + _ZSTD_DICT_ID_BYTES[descriptor & 3]
    if len(head) < at + size_bytes:
        return None
    value = int.from_bytes(head[at : at + size_bytes], "little")
    return value + 256 if size_bytes == 2 else value


@functools.lru_cache(maxsize=256)
def _codec(config_items: tuple[tuple[str, Any], ...]) -> Any:
    from numcodecs import get_codec

    return get_codec(dict(config_items))


def _codecs(configs: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [_codec(tuple(sorted(c.items()))) for c in configs]


def max_encoded_nbytes(decoded: int, codecs: Sequence[Mapping[str, Any]]) -> int:
    """An upper bound of the stored size of a chunk of ``decoded`` bytes.

    Each codec may grow its input by a little: zstd by ``n/256`` plus a header,
    blosc by 16 bytes, gzip by ``n/4096`` plus 18, crc32c by 4; ``n/64 + 1024``
    per codec bounds them all.  A shard index entry claiming more is damaged.

    >>> max_encoded_nbytes(4096, []), max_encoded_nbytes(4096, [{"id": "zstd"}])
    (4096, 5184)
    """
    bound = decoded
    for _ in codecs:
        bound += bound // 64 + 1024
    return bound


class ChunkDecoder:
    """Decodes and locates the chunks of one array (thread-safe)."""

    def __init__(self, spec: ZarrArraySpec) -> None:
        self.spec = spec
        self.dtype = spec.np_dtype
        self._bytes_codecs = _codecs(spec.bytes_codecs)
        self._filters = _codecs(spec.filters)
        self._nbytes = int(np.prod(spec.chunks, dtype=np.int64)) * self.dtype.itemsize
        self._stored_shape: tuple[int, ...] = spec.chunks
        self._inverse: tuple[int, ...] | None = None
        if spec.transpose is not None:
            self._stored_shape = tuple(spec.chunks[i] for i in spec.transpose)
            self._inverse = tuple(int(i) for i in np.argsort(spec.transpose))
        # Stored layout equal to a C-ordered, native array of the chunk shape.
        self._direct = (
            spec.order == "C" and self._inverse is None and not spec.filters and self.dtype.isnative
        )
        self._max_stored = max_encoded_nbytes(self._nbytes, spec.bytes_codecs)
        self._codec_label = "+".join(spec.codec_names) or "none"
        if spec.shard is not None:  # the inner chunks' own chain
            inner = "+".join(str(c["id"]) for c in spec.bytes_codecs) or "bytes"
            self._codec_label = f"sharding_indexed({inner})"
        self._index_cache: dict[str, _ShardIndex | None] = {}
        self._index_lock = threading.Lock()
        self._index_loading: dict[str, threading.Lock] = {}

    # -- decoding ---------------------------------------------------------------
    @property
    def chunk_nbytes(self) -> int:
        """Decoded bytes of one chunk (the size of an ``out`` buffer)."""
        return self._nbytes

    def decode(self, data: Buffer, where: str, out: np.ndarray | None = None) -> np.ndarray:
        """Decode one stored chunk into an array of the chunk's full shape.

        With ``out`` (an array of the chunk's shape, e.g. a cache slot) the
        result is written there and ``out`` is returned.  When the stored layout
        equals ``out``'s (C order, native byte order, no transpose or filters)
        the last codec decodes straight into it (zstd, blosc): no temporary, no
        page faults of a fresh allocation.
        """
        spec = self.spec
        if isinstance(data, _Damaged):
            raise ChunkDecodeError(data.message)
        direct = (
            out is not None
            and self._direct
            and out.dtype == self.dtype
            and out.flags.c_contiguous
            and out.nbytes == self._nbytes
        )
        try:
            buf: Any = data
            n = len(self._bytes_codecs)
            for i, codec in enumerate(reversed(self._bytes_codecs)):
                if i == n - 1 and not self._filters and codec.codec_id in ("zstd", "blosc"):
                    # zstd and blosc accept a destination larger than what the frame holds
                    # and return all of it: check the size the frame declares first, so a
                    # short frame never leaves the rest of the slot as it was.
                    declared = declared_nbytes(codec.codec_id, buf)
                    if declared is None:  # not declared: decode, then measure the result
                        buf = codec.decode(buf)
                    elif declared != self._nbytes:
                        raise ValueError(
                            f"the {codec.codec_id} frame holds {declared} bytes, a chunk of "
                            f"shape {spec.chunks} and dtype {self.dtype} is {self._nbytes} bytes"
                        )
                    else:
                        target = (
                            out.reshape(-1).view(np.uint8)
                            if direct and out is not None
                            else np.empty(self._nbytes, dtype=np.uint8)
                        )
                        buf = codec.decode(buf, out=target)
                else:
                    buf = codec.decode(buf)
            for f in reversed(self._filters):
                buf = f.decode(buf)
            flat = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf
            flat = flat.reshape(-1).view(np.uint8).view(self.dtype)
            if flat.size != int(np.prod(self._stored_shape)):
                raise ValueError(
                    f"decoded {flat.size} elements, the chunk shape {spec.chunks} needs "
                    f"{int(np.prod(self._stored_shape))}"
                )
            arr = flat.reshape(self._stored_shape, order=spec.order)  # type: ignore[call-overload]
        except ChunkDecodeError:
            raise
        except Exception as exc:
            raise ChunkDecodeError(
                f"chunk {where!r} could not be decoded with codecs {self._codec_label}: {exc}. "
                "The stored bytes are damaged or "
                "do not match the array metadata; rewrite the chunk or check the store."
            ) from exc
        if self._inverse is not None:
            arr = arr.transpose(self._inverse)
        if out is None:
            return np.asarray(arr)
        if not np.shares_memory(arr, out):
            out[...] = arr  # converts byte order and layout
        return out

    # -- reading ----------------------------------------------------------------
    def where(self, index: Sequence[int]) -> str:
        """The store key holding chunk ``index`` (and its place in the shard)."""
        shard = self.spec.shard
        if shard is None:
            return self.spec.key(index)
        outer = tuple(i // n for i, n in zip(index, shard.chunks_per_shard, strict=True))
        inner = tuple(i % n for i, n in zip(index, shard.chunks_per_shard, strict=True))
        return f"{self.spec.key(outer)} (inner chunk {inner})"

    def fetch(self, reader: ByteReader, index: tuple[int, ...]) -> RawChunk | None:
        """The stored bytes of chunk ``index`` (I/O only); ``None`` when not stored."""
        return self.fetch_many(reader, [index])[0]

    def fetch_many(
        self, reader: ByteReader, indices: Sequence[tuple[int, ...]]
    ) -> list[RawChunk | None]:
        """The stored bytes of several chunks.  Inner chunks of one shard are read
        with one merged range request after the (cached) shard index."""
        shard = self.spec.shard
        out: list[RawChunk | None] = [None] * len(indices)
        if shard is None:
            for i, index in enumerate(indices):
                key = self.spec.key(index)
                data = reader.get(key)
                out[i] = None if data is None else RawChunk(data, key)
            return out
        by_shard: dict[tuple[int, ...], list[int]] = {}
        for i, index in enumerate(indices):
            outer = tuple(j // n for j, n in zip(index, shard.chunks_per_shard, strict=True))
            by_shard.setdefault(outer, []).append(i)
        for outer, members in by_shard.items():
            key = self.spec.key(outer)
            shard_index = self._shard_index(reader, key)
            if shard_index is None:
                continue
            wanted, starts, ends = [], [], []
            for i in members:
                inner = tuple(
                    j % n for j, n in zip(indices[i], shard.chunks_per_shard, strict=True)
                )
                offset, nbytes = shard_index.table[inner]
                if offset == _MISSING and nbytes == _MISSING:
                    continue
                damage = self._check_entry(int(offset), int(nbytes), shard_index.size)
                if damage:
                    out[i] = RawChunk(
                        _Damaged.because(
                            f"the index of shard {key!r} is damaged: inner chunk {inner} {damage}; "
                            "rewrite the shard."
                        ),
                        f"{key} (inner chunk {inner})",
                    )
                    continue
                wanted.append(i)
                starts.append(int(offset))
                ends.append(int(offset) + int(nbytes))
            if not wanted:
                continue
            if len(wanted) == 1:
                one = reader.get_range(key, starts[0], ends[0])
                parts = None if one is None else [one]
            else:
                parts = reader.get_ranges(key, starts, ends)
            if parts is None:  # the shard vanished after its index was read
                continue
            for i, data, lo, hi in zip(wanted, parts, starts, ends, strict=True):
                inner = tuple(
                    j % n for j, n in zip(indices[i], shard.chunks_per_shard, strict=True)
                )
                out[i] = RawChunk(data, f"{key}[{lo}:{hi}] (inner chunk {inner})")
        return out

    def read(
        self, reader: ByteReader, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Read and decode the chunk at ``index``; ``None`` when it is not stored."""
        raw = self.fetch(reader, index)
        return None if raw is None else self.decode(raw.data, raw.where, out)

    def _check_entry(self, offset: int, nbytes: int, size: int) -> str:
        """What is wrong with a shard index entry ('' if nothing), checked before reading."""
        if nbytes > self._max_stored:
            return (
                f"claims {nbytes} stored bytes, more than a chunk of {self._nbytes} bytes can "
                f"take with codecs {'+'.join(c['id'] for c in self.spec.bytes_codecs) or 'none'} "
                f"(at most {self._max_stored})"
            )
        if offset + nbytes > size:
            end = offset + nbytes
            return f"lies at bytes [{offset}:{end}], past the end of the shard ({size} bytes)"
        return ""

    def _shard_index(self, reader: ByteReader, key: str) -> _ShardIndex | None:
        """The shard's index, read once per process even when many threads ask at once."""
        with self._index_lock:
            if key in self._index_cache:
                return self._index_cache[key]
            loading = self._index_loading.setdefault(key, threading.Lock())
        with loading:
            with self._index_lock:
                if key in self._index_cache:
                    return self._index_cache[key]
            table = self._read_shard_index(reader, key)
            with self._index_lock:
                self._index_cache[key] = table
                self._index_loading.pop(key, None)
            return table

    def _read_shard_index(self, reader: ByteReader, key: str) -> _ShardIndex | None:
        shard = self.spec.shard
        assert shard is not None
        size = shard.index_nbytes
        found = reader.get_with_size(key, size, from_end=shard.index_location == "end")
        index: _ShardIndex | None = None
        if found is not None:
            raw, shard_size = bytes(found[0]), found[1]
            if len(raw) != size:
                raise ChunkDecodeError(
                    f"shard {key!r} is {shard_size} bytes, shorter than its index ({size} "
                    "bytes); the shard is truncated, rewrite it."
                )
            if shard.index_checksum:
                from numcodecs import CRC32C

                try:
                    raw = bytes(CRC32C().decode(raw))
                except Exception as exc:
                    raise ChunkDecodeError(
                        f"the index of shard {key!r} fails its crc32c checksum ({exc}); the shard "
                        "is damaged, rewrite it."
                    ) from exc
            dtype = ">u8" if shard.index_big_endian else "<u8"
            table = np.frombuffer(raw, dtype=dtype).reshape(*shard.chunks_per_shard, 2)
            index = _ShardIndex(table, shard_size)
        return index
