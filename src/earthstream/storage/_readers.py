"""Byte readers: the only place the hot path touches storage.

A reader answers four questions about a key: all its bytes, a byte range,
several byte ranges (merged into fewer requests where they are adjacent), and
its last ``n`` bytes (for shard indexes at the end of a shard).  A missing key
returns ``None`` (Zarr gives missing chunks the fill value); every other
failure raises a typed error.  Readers are thread-safe; they are created lazily
in each process from a :class:`StoreLocation` and never pickled.
"""

from __future__ import annotations

import mmap
import os
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .._validate import check_number, check_whole
from ..errors import ConfigError, ForkError
from ._location import StoreLocation
from ._retry import RequestStats, RetryPolicy, call_with_retries

__all__ = [
    "MMAP_MIN_BYTES",
    "Buffer",
    "ByteReader",
    "LocalReader",
    "ObjectStoreReader",
    "ShortReadError",
    "open_reader",
]

Buffer = bytes | memoryview | mmap.mmap

#: Files at least this large are mapped rather than copied: decoders read the
#: page cache directly (about 10% less CPU per 4 MB chunk than ``read``).
MMAP_MIN_BYTES = 256 * 1024

#: Requests in flight to an object store, by default.
DEFAULT_MAX_REQUESTS = 64


class ByteReader(Protocol):
    """What the engine needs from storage."""

    stats: RequestStats
    #: Requests worth keeping in flight (0: reads are local and cheap).
    max_requests: int

    def get(self, key: str) -> Buffer | None:
        """All bytes of ``key``, or ``None`` if it does not exist."""
        ...

    def get_range(self, key: str, start: int, end: int) -> Buffer | None:
        """Bytes ``[start, end)`` of ``key``, or ``None`` if it does not exist."""
        ...

    def get_ranges(
        self, key: str, starts: Sequence[int], ends: Sequence[int]
    ) -> list[Buffer] | None:
        """Several byte ranges of ``key`` (adjacent ones fetched together)."""
        ...

    def get_suffix(self, key: str, length: int) -> Buffer | None:
        """The last ``length`` bytes of ``key``, or ``None`` if it does not exist."""
        ...

    def get_with_size(self, key: str, length: int, *, from_end: bool) -> tuple[Buffer, int] | None:
        """The first (or last) ``length`` bytes of ``key`` and its size, in one request.

        Fewer bytes when ``key`` is shorter; ``None`` if it does not exist.
        """
        ...


class ShortReadError(OSError):
    """A storage answer had fewer bytes than asked for (retried, never used as data)."""


def _check_length(data: Buffer, expected: int, where: str) -> Buffer:
    if len(data) != expected:
        raise ShortReadError(f"short read of {where}: expected {expected} bytes, got {len(data)}")
    return data


class LocalReader:
    """Reads keys as files under a local directory.

    Small files are read (~4 us each); large ones are memory-mapped, so a
    decoder reads the page cache without a copy.
    """

    max_requests = 0

    def __init__(self, root: str) -> None:
        self.root = root
        self.stats = RequestStats()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def get(self, key: str) -> Buffer | None:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            self.stats.record(requests=1, nbytes=size)
            if size >= MMAP_MIN_BYTES:
                return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            parts = []
            remaining = size
            while remaining > 0:
                part = os.read(fd, remaining)
                if not part:
                    break
                parts.append(part)
                remaining -= len(part)
            return b"".join(parts) if len(parts) != 1 else parts[0]
        finally:
            os.close(fd)

    def get_range(self, key: str, start: int, end: int) -> Buffer | None:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
        self.stats.record(requests=1, nbytes=len(data))
        return _check_length(data, end - start, f"{key}[{start}:{end}]")

    def get_ranges(
        self, key: str, starts: Sequence[int], ends: Sequence[int]
    ) -> list[Buffer] | None:
        out: list[Buffer] = []
        for start, end in zip(starts, ends, strict=True):
            data = self.get_range(key, start, end)
            if data is None:
                return None
            out.append(data)
        return out

    def get_suffix(self, key: str, length: int) -> Buffer | None:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, min(length, size), max(size - length, 0))
        finally:
            os.close(fd)
        self.stats.record(requests=1, nbytes=len(data))
        return data

    def get_with_size(self, key: str, length: int, *, from_end: bool) -> tuple[Buffer, int] | None:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            start = max(size - length, 0) if from_end else 0
            data = os.pread(fd, min(length, size), start)
        finally:
            os.close(fd)
        self.stats.record(requests=1, nbytes=len(data))
        return data, size

    def __repr__(self) -> str:
        return f"LocalReader({self.root!r})"


class ObjectStoreReader:
    """Reads keys through an obstore store (S3, GCS, Azure, HTTP), with classified retries.

    obstore's own retries are switched off so that every attempt is counted
    and classified here (see :mod:`earthstream.storage._retry`).
    """

    def __init__(
        self,
        store: Any,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        max_requests: int = DEFAULT_MAX_REQUESTS,
    ) -> None:
        self.store = store
        self.url = url
        self.policy = policy or RetryPolicy()
        self.max_requests = max_requests
        self.stats = RequestStats()
        self._local = threading.local()

    def _rng(self) -> random.Random:
        rng = getattr(self._local, "rng", None)
        if rng is None:
            rng = self._local.rng = random.Random()
        return rng

    def _call(self, fn: Any, where: str) -> Any:  # Buffer | list[Buffer] | None
        try:
            return call_with_retries(
                fn,
                what=f"{self.url}/{where}",
                policy=self.policy,
                stats=self.stats,
                rng=self._rng(),
                size=_nbytes,
            )
        except FileNotFoundError:
            return None

    def get(self, key: str) -> Buffer | None:
        import obstore

        data: Buffer | None = self._call(
            lambda: memoryview(obstore.get(self.store, key).bytes()), key
        )
        return data

    def get_range(self, key: str, start: int, end: int) -> Buffer | None:
        import obstore

        def fetch() -> Buffer:
            data = memoryview(obstore.get_range(self.store, key, start=start, end=end))
            return _check_length(data, end - start, f"{self.url}/{key}[{start}:{end}]")

        data: Buffer | None = self._call(fetch, f"{key}[{start}:{end}]")
        return data

    def get_ranges(
        self, key: str, starts: Sequence[int], ends: Sequence[int]
    ) -> list[Buffer] | None:
        import obstore

        def fetch() -> list[Buffer]:
            parts = obstore.get_ranges(self.store, key, starts=list(starts), ends=list(ends))
            return [
                _check_length(memoryview(p), e - s, f"{self.url}/{key}[{s}:{e}]")
                for p, s, e in zip(parts, starts, ends, strict=True)
            ]

        parts: list[Buffer] | None = self._call(fetch, f"{key} ({len(starts)} ranges)")
        return parts

    def get_suffix(self, key: str, length: int) -> Buffer | None:
        import obstore

        def fetch() -> Buffer:
            result = obstore.get(self.store, key, options={"range": {"suffix": length}})
            return memoryview(result.bytes())

        data: Buffer | None = self._call(fetch, f"{key}[-{length}:]")
        return data

    def get_with_size(self, key: str, length: int, *, from_end: bool) -> tuple[Buffer, int] | None:
        import obstore

        def fetch() -> tuple[Buffer, int]:
            window: Any = {"suffix": length} if from_end else (0, length)
            result = obstore.get(self.store, key, options={"range": window})
            size = int(result.meta["size"])
            data = memoryview(result.bytes())
            _check_length(data, min(length, size), f"{self.url}/{key} ({length} bytes)")
            return data, size

        found: tuple[Buffer, int] | None = self._call(
            fetch, f"{key}[-{length}:]" if from_end else f"{key}[0:{length}]"
        )
        return found

    def __repr__(self) -> str:
        return f"ObjectStoreReader({self.url!r})"


def _nbytes(result: Any) -> int:
    if isinstance(result, tuple):  # (data, size) of get_with_size
        return len(result[0])
    if isinstance(result, list):
        return sum(len(p) for p in result)
    return len(result)


#: storage_options keys earthstream reads itself; the rest configure obstore.
EARTHSTREAM_OPTIONS = ("retry", "max_requests")


def split_options(options: dict[str, Any]) -> tuple[RetryPolicy, int, dict[str, Any]]:
    """Separate earthstream's own storage options from obstore's."""
    retry = options.get("retry", {}) or {}
    if not isinstance(retry, Mapping):
        raise ConfigError(
            f"storage_options['retry']={retry!r} must be a mapping, e.g. "
            "{'max_attempts': 5, 'budget_s': 30}."
        )
    try:
        policy = RetryPolicy(**retry)
    except TypeError as exc:
        raise ConfigError(
            f"storage_options['retry'] has an unknown key ({exc}); use max_attempts, "
            "base_delay, max_delay and budget_s."
        ) from None
    where = "storage_options['retry']"
    check_whole(policy.max_attempts, f"{where}['max_attempts']", minimum=1, maximum=1000)
    check_number(policy.base_delay, f"{where}['base_delay']", minimum=0)
    check_number(policy.max_delay, f"{where}['max_delay']", minimum=0)
    check_number(policy.budget_s, f"{where}['budget_s']", above=0)
    max_requests = check_whole(
        options.get("max_requests", DEFAULT_MAX_REQUESTS),
        "storage_options['max_requests']",
        minimum=1,
        maximum=4096,
    )
    rest = {k: v for k, v in options.items() if k not in EARTHSTREAM_OPTIONS}
    return policy, max_requests, rest


#: Processes that have started obstore's runtime (inherited by forked children).
_OBSTORE_PIDS: set[int] = set()

#: Clients a forked child inherited: kept, never dropped (see :func:`keep_inherited`).
_INHERITED: list[Any] = []


def keep_inherited(*objects: Any) -> None:
    """Keep objects a forked child inherited from its parent alive for good.

    Dropping an obstore client in a child forked after its parent used it runs
    the client's destructor against a tokio runtime whose threads stayed in the
    parent, and that can block forever.  A child replaces such objects with its
    own and parks the inherited ones here instead of letting them be collected.
    """
    _INHERITED.extend(o for o in objects if o)


def check_fork(url: str) -> None:
    """Refuse to use obstore in a process forked after its parent used it.

    obstore runs on a tokio runtime whose threads do not survive ``fork()``: a
    request from such a child would hang forever.
    """
    pid = os.getpid()
    if _OBSTORE_PIDS and pid not in _OBSTORE_PIDS:
        raise ForkError(
            f"cannot read {url!r} in this process: it was forked from one that had already "
            "used the object-store client (obstore), whose threads do not survive fork(). "
            "Start workers with multiprocessing_context='spawn' or 'forkserver' "
            "(TorchStream.loader() does this for remote stores), or open the store only "
            "inside the workers."
        )
    _OBSTORE_PIDS.add(pid)


def make_object_store(location: StoreLocation, *, retries: bool = False) -> Any:
    """An obstore store for a remote location; credentials from options or environment.

    With ``retries=False`` (chunk reads) obstore's internal retries are disabled:
    :class:`ObjectStoreReader` retries, counts and classifies instead.
    """
    from obstore.store import from_url

    check_fork(location.url)
    _, _, options = split_options(dict(location.options))
    if not retries:
        options.setdefault("retry_config", {"max_retries": 0})
    client = dict(options.pop("client_options", {}) or {})
    if location.scheme == "http":
        client.setdefault("allow_http", True)
    client.setdefault("timeout", "60s")
    client.setdefault("connect_timeout", "10s")
    return from_url(location.url, client_options=client, **options)  # type: ignore[call-overload]


def open_reader(location: StoreLocation) -> ByteReader:
    """The reader for ``location``: plain file reads locally, obstore remotely."""
    if location.is_local:
        return LocalReader(location.path)
    policy, max_requests, _ = split_options(dict(location.options))
    return ObjectStoreReader(
        make_object_store(location), location.url, policy=policy, max_requests=max_requests
    )
