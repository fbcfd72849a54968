"""A read-only zarr-python store over a :class:`ByteReader`.

zarr-python parses metadata (and reads the chunks of codec chains the fast path
does not know), but every byte it asks for comes through earthstream's reader:
the same retry policy and budget, per-request timeout, error classes
(:class:`~earthstream.errors.StoreRequestError`, ``StoreAccessError``),
redaction and request counts as chunk reads.  A missing key is ``None``, as
zarr-python expects.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from ._readers import Buffer as Bytes
from ._readers import ByteReader, KeyLister

__all__ = ["ReaderStore"]

T = TypeVar("T")


def _capture(
    fn: Callable[..., T], args: tuple[object, ...]
) -> tuple[T | None, BaseException | None]:
    """``fn(*args)`` as ``(value, None)``, or ``(None, error)`` when it raises."""
    try:
        return fn(*args), None
    except BaseException as error:  # re-raised by the awaiting coroutine
        return None, error


class ReaderStore(Store):
    """zarr-python's ``Store`` interface, read-only, answered by ``reader``.

    ``name`` is what ``str()`` and ``repr()`` show (a redacted URL).  Listing
    works when the reader can list (``list_dir``/``list_prefix``, e.g. S3, GCS,
    Azure); plain HTTP cannot, and says so with ``NotImplementedError``.
    """

    supports_writes = False
    supports_deletes = False
    supports_listing = True

    def __init__(self, reader: ByteReader, name: str) -> None:
        super().__init__(read_only=True)
        self.reader = reader
        self.name = name
        self._lister = reader if isinstance(reader, KeyLister) else None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking reader call off zarr-python's event loop, with as many in
        flight as the reader wants (``max_requests``), not the loop's default few."""
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    workers = max(4, min(self.reader.max_requests or 4, 32))
                    self._pool = ThreadPoolExecutor(workers, thread_name_prefix="es-zarrstore")
        # The pool thread never raises into the loop's future: zarr-python gathers
        # several reads (".zarray", ".zattrs", ...) and, when one fails, returns
        # before the others finish; a failure of theirs set on a future nobody awaits
        # any more would be logged as "Future exception was never retrieved" (with a
        # traceback, on stderr of a one-line CLI error).  The error is re-raised here,
        # in the coroutine that asked for it.
        value, error = await asyncio.get_running_loop().run_in_executor(
            self._pool, _capture, fn, args
        )
        if error is not None:
            raise error
        return value  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReaderStore) and other.reader is self.reader

    def __hash__(self) -> int:
        return id(self.reader)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"ReaderStore({self.name!r})"

    def with_read_only(self, read_only: bool = False) -> ReaderStore:
        if not read_only:
            raise ValueError(f"{self.name} is read-only")
        return self

    # -- reads --------------------------------------------------------------------------
    def _read(self, key: str, byte_range: ByteRequest | None) -> Bytes | None:
        reader = self.reader
        if byte_range is None:
            return reader.get(key)
        if isinstance(byte_range, RangeByteRequest):
            return reader.get_range(key, byte_range.start, byte_range.end)
        if isinstance(byte_range, SuffixByteRequest):
            return reader.get_suffix(key, byte_range.suffix)
        if isinstance(byte_range, OffsetByteRequest):
            data = reader.get(key)
            return None if data is None else memoryview(data)[byte_range.offset :]
        raise TypeError(f"unexpected byte range {byte_range!r}")

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        data = await self._run(self._read, key, byte_range)
        if data is None:
            return None
        return prototype.buffer.from_bytes(bytes(data))

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(
            await asyncio.gather(*(self.get(key, prototype, rng) for key, rng in key_ranges))
        )

    async def exists(self, key: str) -> bool:
        return await self._run(self.reader.get, key) is not None

    # -- no writes ----------------------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    # -- listing ------------------------------------------------------------------------
    def _listing(self) -> KeyLister:
        if self._lister is None:
            raise NotImplementedError(f"{self.name} cannot list keys")
        return self._lister

    async def list(self) -> AsyncIterator[str]:
        for key in await self._run(self._listing().list_prefix, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await self._run(self._listing().list_prefix, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for name in await self._run(self._listing().list_dir, prefix):
            yield name
