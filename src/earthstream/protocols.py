"""The contracts between earthstream's parts, as Protocols: the bottom floor.

A *source* is anything that describes named N-D arrays on a regular chunk grid
and decodes one chunk at a time into a buffer the caller gives it
(:class:`ChunkedSource`: the gridded-source contract).  Everything else a
source may do is optional and narrow, one Protocol per capability:

* :class:`SplitFetch`: fetch stored bytes and decode them in separate steps, so
  that many requests are in flight on an I/O pool while a CPU pool decodes
  (remote stores), and say how many requests are worth keeping in flight;
* :class:`CountsRequests`: storage requests, retries, bytes and failures so far
  (and chunks read through a slower general path), for the epoch report;
* :class:`LocatesChunks`: where a chunk is stored, for messages and reports.

Capabilities are looked up once, when a consumer (the engine) is built:
:meth:`SourceCapabilities.of` checks the source's members *without calling
them* (:func:`inspect.getattr_static`: a remote source's ``coords`` reads the
store, and ``isinstance`` with a runtime-checkable Protocol evaluates
properties on Python 3.11) and keeps typed references, so the hot path neither
probes attributes nor needs ``type: ignore``.

This module imports nothing of earthstream's but :mod:`earthstream.errors`.

Examples
--------
>>> import numpy as np, earthstream as es
>>> src = es.ArraySource({"x": (("t", "y"), np.zeros((4, 6)))}, chunks={"t": 2})
>>> is_chunked_source(src), is_chunked_source("a path")
(True, False)
>>> caps = SourceCapabilities.of(src)
>>> caps.split is None, caps.io_concurrency, caps.stats is None
(True, 0, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, Protocol, TypedDict, TypeGuard

import numpy as np

__all__ = [
    "ChunkedSource",
    "CountsRequests",
    "LocatesChunks",
    "RequestCounts",
    "SourceCapabilities",
    "Span",
    "SplitFetch",
    "ValueCoder",
    "VariableInfo",
    "is_chunked_source",
    "missing_members",
    "provides_locations",
    "provides_split_fetch",
    "provides_stats",
]


@dataclass(frozen=True)
class Span:
    """Positions ``start .. stop - 1`` of one dim in the source arrays.

    ``scalar``: selected by a single label or position (xarray drops such a dim).

    >>> Span(2, 7).size
    5
    """

    start: int
    stop: int
    scalar: bool = False

    @property
    def size(self) -> int:
        return self.stop - self.start

    def as_slice(self) -> slice:
        return slice(self.start, self.stop)


class ValueCoder(Protocol):
    """Turns stored values into delivered ones (CF decoding: scale, offset, masks).

    ``raw_dtype`` is the stored dtype; :meth:`decode` writes the decoded values
    into ``out`` (same shape, the variable's ``dtype``) when given, else returns
    a new array.
    """

    @property
    def raw_dtype(self) -> str: ...

    def decode(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class VariableInfo:
    """Static description of one variable of a source.

    ``chunks`` is the shape of the unit the engine reads and caches: the chunk, or
    for a sharded Zarr v3 array a read unit of whole inner chunks of one shard.
    ``dtype`` is the dtype of the values the source delivers: after CF decoding
    (``cf``), e.g. float32 for a packed int16 variable.  ``fill_value`` is what
    missing chunks and padded window edges hold, decoded too (NaN where xarray
    masks the stored fill value).
    ``attrs`` are the attributes as xarray's backend reads them (for Zarr v2 the
    array's ``fill_value`` is the ``_FillValue``).

    >>> info = VariableInfo("t2m", ("time", "lat"), (10, 7), np.dtype("f4"), (4, 7), None)
    >>> info.chunk_grid, info.chunk_nbytes, info.sizes()
    ((3, 1), 112, {'time': 10, 'lat': 7})
    """

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[int, ...]
    fill_value: Any
    codecs: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    cf: ValueCoder | None = field(default=None, compare=False, hash=False)

    @property
    def stored_dtype(self) -> np.dtype[Any]:
        """The dtype of the stored values (before CF decoding)."""
        return np.dtype(self.cf.raw_dtype) if self.cf is not None else self.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Number of chunks along each dim."""
        return tuple(-(-s // c) if c else 0 for s, c in zip(self.shape, self.chunks, strict=True))

    @property
    def chunk_nbytes(self) -> int:
        """Decoded bytes of one full chunk."""
        return int(np.prod(self.chunks, dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def sizes(self) -> dict[str, int]:
        return dict(zip(self.dims, self.shape, strict=True))


class ChunkedSource(Protocol):
    """The gridded-source contract: named N-D arrays on a regular chunk grid, readable
    chunk by chunk.

    Sources are descriptions: they pickle (to DataLoader and Dask workers) without
    open connections, and create readers lazily in each process.  A new source
    implements these five members and passes :class:`earthstream.testing.SourceTests`;
    the engine needs nothing else.  What is optional (remote I/O in two stages,
    request counts, chunk locations) is a capability of its own (:class:`SplitFetch`,
    :class:`CountsRequests`, :class:`LocatesChunks`).
    """

    @property
    def variables(self) -> Mapping[str, VariableInfo]:
        """The data variables, by name."""
        ...

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        """1-D coordinate values by dim name (time decoded to ``datetime64``)."""
        ...

    @property
    def selection(self) -> Mapping[str, Span]:
        """Position ranges per dim the source is already cut to (e.g. a source opened
        from a sliced ``xarray.Dataset``); empty for the whole source.  Variables,
        chunks and ``read_chunk`` indices are those of the whole arrays: streams start
        their windows (and refine ``sel``/``isel``) from this selection."""
        ...

    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode one chunk of ``name`` at chunk-grid ``index``.

        Returns an array whose shape covers at least the part of the chunk inside
        the array bounds, or ``None`` if the chunk is not stored (it then holds
        ``fill_value`` everywhere).  Values are decoded: in the variable's
        ``dtype``, CF decoding applied.  With ``out`` (an array of the full chunk
        shape and the variable's dtype, e.g. an engine cache slot) the chunk is
        written into it, from its origin, and ``out`` is returned.  Must be
        thread-safe.
        """
        ...

    def select(self, variables: Sequence[str]) -> ChunkedSource:
        """The same source restricted to ``variables`` (in that order)."""
        ...


#: The members of :class:`ChunkedSource`.
SOURCE_MEMBERS = ("variables", "coords", "selection", "read_chunk", "select")


class SplitFetch(Protocol):
    """Fetch and decode in two steps (remote I/O).

    The engine keeps up to ``io_concurrency`` fetches in flight on an I/O pool
    (network waits release the GIL) and decodes what they return on a CPU pool.
    ``io_concurrency`` 0 means one step is enough (local files): the engine then
    calls :meth:`ChunkedSource.read_chunk`.
    """

    @property
    def io_concurrency(self) -> int:
        """Requests worth keeping in flight (0: read and decode in one step)."""
        ...

    def fetch_chunks(self, name: str, indices: Sequence[tuple[int, ...]]) -> list[Any]:
        """The stored form of several chunks of ``name`` (I/O only), one entry per index,
        in order; ``None`` for a chunk that is not stored.  Opaque to the caller, which
        hands each entry to :meth:`decode_chunk` unchanged.  Raises for the whole call
        (every chunk of it fails alike)."""
        ...

    def fetch_group(self, name: str, index: tuple[int, ...]) -> Hashable:
        """Chunks with equal groups are best fetched in one :meth:`fetch_chunks` call
        (e.g. the inner chunks of one shard, the tiles of one tile row: their byte
        ranges merge)."""
        ...

    def decode_chunk(
        self, name: str, index: tuple[int, ...], raw: Any, out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode what :meth:`fetch_chunks` returned for chunk ``index`` as
        :meth:`ChunkedSource.read_chunk` would (``None``: not stored)."""
        ...


class RequestCounts(TypedDict):
    """Counts of storage requests in one process, since the source was created there.

    ``fallback`` (optional): chunks read through a slower general path (e.g.
    zarr-python for codec chains the fast path lacks).
    """

    requests: int
    retries: int
    bytes: int
    failures: dict[str, int]
    fallback: NotRequired[int]


class CountsRequests(Protocol):
    """Storage request statistics (the epoch report takes the difference over a pass)."""

    def request_stats(self) -> RequestCounts:
        """This process's counts so far (every reader of the source together)."""
        ...


class LocatesChunks(Protocol):
    """Where a chunk is stored, in words (messages and reports; credentials redacted)."""

    def chunk_location(self, name: str, index: tuple[int, ...]) -> str: ...


def _has(obj: object, names: Sequence[str]) -> bool:
    """Whether ``obj`` has every member, looked up without calling properties."""
    return all(inspect.getattr_static(obj, name, None) is not None for name in names)


def missing_members(obj: object, names: Sequence[str] = SOURCE_MEMBERS) -> list[str]:
    """The members of ``names`` that ``obj`` lacks (looked up without calling them)."""
    return [name for name in names if inspect.getattr_static(obj, name, None) is None]


def is_chunked_source(obj: object) -> TypeGuard[ChunkedSource]:
    """Whether ``obj`` implements the gridded-source contract (checked on its members,
    never calling them: a remote source's ``coords`` reads the store)."""
    return _has(obj, SOURCE_MEMBERS)


def provides_split_fetch(obj: object) -> TypeGuard[SplitFetch]:
    """Whether ``obj`` fetches and decodes in two steps (:class:`SplitFetch`)."""
    return _has(obj, ("io_concurrency", "fetch_chunks", "fetch_group", "decode_chunk"))


def provides_stats(obj: object) -> TypeGuard[CountsRequests]:
    """Whether ``obj`` counts its storage requests (:class:`CountsRequests`)."""
    return _has(obj, ("request_stats",))


def provides_locations(obj: object) -> TypeGuard[LocatesChunks]:
    """Whether ``obj`` says where its chunks are stored (:class:`LocatesChunks`)."""
    return _has(obj, ("chunk_location",))


@dataclass(frozen=True)
class SourceCapabilities:
    """What one input source can do beyond the contract, resolved once.

    ``split`` is the source itself when it fetches and decodes in two steps and
    has requests worth keeping in flight (``io_concurrency`` > 0), else ``None``;
    ``stats`` and ``locate`` are the source when it counts requests or locates
    chunks.  Build it with :meth:`of`.
    """

    split: SplitFetch | None = None
    io_concurrency: int = 0
    stats: CountsRequests | None = None
    locate: LocatesChunks | None = None

    @classmethod
    def of(cls, source: object) -> SourceCapabilities:
        """Look up ``source``'s capabilities (its members, without calling properties;
        ``io_concurrency`` is read once here)."""
        split: SplitFetch | None = None
        concurrency = 0
        if provides_split_fetch(source):
            concurrency = max(0, int(source.io_concurrency))
            split = source if concurrency else None
        return cls(
            split=split,
            io_concurrency=concurrency if split is not None else 0,
            stats=source if provides_stats(source) else None,
            locate=source if provides_locations(source) else None,
        )

    def where(self, name: str, index: tuple[int, ...]) -> str:
        """Where chunk ``index`` of ``name`` is stored, or ``name(index)`` when the source
        does not say."""
        return self.locate.chunk_location(name, index) if self.locate else f"{name}{index}"

    def counts(self) -> RequestCounts | None:
        """The source's request counts now, or ``None`` when it does not count."""
        return self.stats.request_stats() if self.stats is not None else None
