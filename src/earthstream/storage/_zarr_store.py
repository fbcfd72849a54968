"""zarr-python store objects as earthstream storage.

Users often hold a store rather than a URL: an Icechunk session's ``.store``, a
``ZipStore``, an ``FsspecStore`` over Kerchunk references, an ``ObjectStore``, a
``MemoryStore``, or a ``zarr.Group``/``zarr.Array`` opened on one of them.
:class:`StoreHandle` describes such a store the way :class:`StoreLocation`
describes a URL: it pickles (when the store does) and gives each process its
own client.  :class:`ZarrStoreReader` reads chunk bytes through the store's own
``get``, with zarr's byte-range requests for shards, behind earthstream's
:class:`ByteReader` protocol, so the engine plans, decodes once, budgets and
reports exactly as for a path.

zarr's stores are asynchronous.  Engine threads call them through zarr's
``sync`` (zarr's one event-loop thread); each thread waits for its own request,
so the engine's fetch pool keeps ``max_requests`` of them in flight.  The store
keeps its own retries (earthstream makes one attempt unless
``storage_options={"retry": ...}`` asks for more); every failure is classified,
counted and raised as :class:`StoreRequestError`/:class:`StoreAccessError`,
with credentials redacted.

Processes: a store whose client runs on a Rust (tokio) runtime (Icechunk,
zarr's obstore-backed ``ObjectStore``) hangs in a child forked after its parent
used it, so such a child raises :class:`ForkError`;
``TorchStream.loader()`` starts workers with ``spawn`` for them.  Stores that
hold a file (``ZipStore``) or a client (``FsspecStore``) are reopened from
their pickle in a forked child; local and in-memory stores are used as they are.
"""

from __future__ import annotations

import functools
import os
import pickle
import random
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from ..errors import (
    ConfigError,
    EarthstreamError,
    ForkError,
    StoreAccessError,
    StoreRequestError,
    UnsupportedInputError,
)
from ._options import own_options
from ._readers import Buffer, LocalReader, ShortReadError
from ._retry import RequestStats, RetryPolicy, call_with_retries, classify, redact

__all__ = ["StoreHandle", "ZarrStoreReader", "is_zarr_store"]

#: Byte ranges of one key closer than this are read with one request (shard inner chunks).
MERGE_GAP = 64 * 1024

#: storage_options a store object accepts: it brings its own client and settings.
HANDLE_OPTIONS = ("retry", "max_requests")


def is_zarr_store(obj: Any) -> bool:
    """Whether ``obj`` is a zarr-python store (``zarr.abc.store.Store``)."""
    from zarr.abc.store import Store

    return isinstance(obj, Store)


def _innermost(store: Any) -> Any:
    from zarr.storage import WrapperStore

    while isinstance(store, WrapperStore):
        store = store._store
    return store


def _store_kind(store: Any) -> str:
    """``"files"`` (a LocalStore), ``"memory"``, ``"zip"``, ``"runtime"`` (a Rust client
    that does not survive fork) or ``"client"`` (anything else: reopened after fork)."""
    from zarr.storage import LocalStore, MemoryStore, ObjectStore, ZipStore

    inner = _innermost(store)
    if isinstance(inner, LocalStore):
        return "files"
    if isinstance(inner, MemoryStore):
        return "memory"
    if isinstance(inner, ZipStore):
        return "zip"
    if isinstance(inner, ObjectStore) or type(inner).__module__.split(".")[0] == "icechunk":
        return "runtime"
    return "client"


def describe_store(store: Any, root: str = "") -> str:
    """A short, credential-free name for messages: the store's URL-like ``str`` or its type."""
    inner = _innermost(store)
    text = str(store)
    if type(inner).__module__.split(".")[0] == "icechunk":
        try:
            session = inner.session
            text = f"<IcechunkStore {session.branch or 'snapshot'}@{session.snapshot_id}>"
        except Exception:
            text = "<IcechunkStore>"
    elif hasattr(inner, "fs") and hasattr(inner, "path"):  # FsspecStore
        protocol = inner.fs.protocol
        protocol = protocol[0] if isinstance(protocol, tuple | list) else protocol
        text = f"{protocol}://{str(inner.path).lstrip('/')}"
    elif type(store).__str__ is object.__str__ or " object at 0x" in text:  # type: ignore[comparison-overlap]
        text = f"<{type(store).__name__}>"
    if not text.endswith("://"):
        text = text.rstrip("/")
    text = redact(text)
    return f"{text}/{root}" if root else text


class StoreHandle:
    """A zarr-python store object as a source location: picklable, reopened per process.

    ``root`` is the path of the opened group (or of an array's parent group)
    inside the store; keys of :meth:`open_reader` are relative to it.
    ``options`` are earthstream's own (``retry``, ``max_requests``): the store
    brings its own client, credentials and retries.

    >>> import zarr
    >>> handle = StoreHandle(zarr.storage.MemoryStore(), "era5")
    >>> handle.is_local, handle.root
    (True, 'era5')
    """

    scheme = "store"

    def __init__(
        self, store: Any, root: str = "", options: Mapping[str, Any] | None = None
    ) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(HANDLE_OPTIONS))
        if unknown:
            raise ConfigError(
                f"storage_options {unknown} do not apply to a store object "
                f"({type(store).__name__}): it brings its own client, so configure "
                "credentials, endpoints and retries when you create it. Only "
                f"{', '.join(HANDLE_OPTIONS)} apply."
            )
        own_options(options)  # validates retry and max_requests
        self.store = store
        self.root = root.strip("/")
        self.options: tuple[tuple[str, Any], ...] = tuple(sorted(options.items()))
        self.kind = _store_kind(store)
        self.url = describe_store(store, self.root)
        self._init_process()

    def _init_process(self) -> None:
        self._owner = os.getpid()
        self._local: Any = self.store
        self._local_pid = self._owner
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        """Reads are cheap and the store survives fork (files, memory, zip)."""
        return self.kind in ("files", "memory", "zip")

    def current(self) -> Any:
        """The store object to use in this process (reopened in a forked child)."""
        pid = os.getpid()
        if self._local_pid == pid:
            return self._local
        with self._lock:
            if self._local_pid != pid:
                self._local = self._reopen()
                self._local_pid = pid
        return self._local

    def _reopen(self) -> Any:
        if self.kind == "runtime":
            raise ForkError(
                f"cannot read the store {self.url!r} in this process: it was forked from one "
                f"that had already used it, and {type(_innermost(self.store)).__name__}'s client "
                "threads do not survive fork(). Start workers with "
                "multiprocessing_context='spawn' or 'forkserver' (TorchStream.loader() does "
                "this for such stores)."
            )
        if self.kind in ("files", "memory"):
            return self.store
        try:  # a fresh file handle or client for this process
            return pickle.loads(pickle.dumps(self.store))
        except Exception:
            return self.store

    def open_reader(self) -> ZarrStoreReader | LocalReader:
        """A chunk reader for this process (a LocalStore reads its files directly)."""
        policy, max_requests = own_options(dict(self.options))
        store = self.current()
        if self.kind == "files":
            inner = _innermost(store)
            return LocalReader(os.path.join(str(inner.root), self.root))
        if "retry" not in dict(self.options):
            policy = RetryPolicy(max_attempts=1)  # the store retries itself
        return ZarrStoreReader(
            store,
            self.root,
            self.url,
            policy=policy,
            max_requests=0 if self.is_local else max_requests,
        )

    def metadata_store(self) -> Any:
        """The store for zarr-python's metadata reads, its failures typed and redacted."""
        return checked_store(self.current(), self.url)

    # -- pickling: the store itself, or a clear error -----------------------------
    def __getstate__(self) -> dict[str, Any]:
        try:
            blob = pickle.dumps(self.store)
        except Exception as exc:
            raise UnsupportedInputError(
                f"the store {self.url!r} ({type(self.store).__name__}) cannot be sent to "
                f"worker processes: it does not pickle ({type(exc).__name__}: "
                f"{redact(str(exc))[:200]}). For Icechunk open a read-only session "
                "(repo.readonly_session('main').store); otherwise stream in this process "
                "(num_workers=0) or pass a path or URL."
            ) from None
        return {"store": blob, "root": self.root, "options": self.options, "kind": self.kind}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.store = pickle.loads(state["store"])
        self.root = state["root"]
        self.options = state["options"]
        self.kind = state["kind"]
        self.url = describe_store(self.store, self.root)
        self._init_process()

    @property
    def max_requests(self) -> int:
        """Requests worth keeping in flight through this store."""
        return own_options(dict(self.options))[1]

    @property
    def display(self) -> str:
        """The store as shown in messages (already free of credentials)."""
        return self.url

    def redact(self, text: str) -> str:
        """``text`` without credentials."""
        return redact(text)

    def __repr__(self) -> str:
        return f"StoreHandle({self.url!r})"

    def __str__(self) -> str:
        return self.url


# -- chunk reads -----------------------------------------------------------------------
def _as_buffer(buf: Any) -> memoryview:
    return memoryview(buf.as_numpy_array())


class _Parts(list[memoryview]):
    """Slices of merged range requests, with the bytes actually fetched."""

    fetched = 0


def _nbytes(result: Any) -> int:
    if isinstance(result, _Parts):
        return result.fetched
    if isinstance(result, tuple):  # get_with_size: (bytes, size)
        return len(result[0])
    return len(result)


def _check(data: memoryview, expected: int, where: str) -> memoryview:
    if len(data) != expected:
        raise ShortReadError(f"short read of {where}: expected {expected} bytes, got {len(data)}")
    return data


def merge_ranges(
    starts: Sequence[int], ends: Sequence[int], gap: int = MERGE_GAP
) -> list[tuple[int, int, list[int]]]:
    """Group byte ranges into requests: ``(start, end, members)`` with ranges less than
    ``gap`` bytes apart read together.

    >>> merge_ranges([0, 10, 500], [10, 20, 600], gap=100)
    [(0, 20, [0, 1]), (500, 600, [2])]
    """
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    groups: list[tuple[int, int, list[int]]] = []
    for i in order:
        if groups and starts[i] - groups[-1][1] <= gap:
            lo, hi, members = groups[-1]
            groups[-1] = (lo, max(hi, ends[i]), [*members, i])
        else:
            groups.append((starts[i], ends[i], [i]))
    return groups


class ZarrStoreReader:
    """Reads keys through a zarr-python store's own ``get`` (a :class:`ByteReader`).

    Byte ranges become zarr's ``RangeByteRequest``/``SuffixByteRequest``; several
    ranges of one key are merged where close and fetched with one
    ``get_partial_values``.  A missing key is ``None``; every failure is counted
    and raised as a typed, redacted error.
    """

    def __init__(
        self,
        store: Any,
        root: str,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        max_requests: int = 0,
    ) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self.store = store
        self.root = root.strip("/")
        self.url = url
        self.policy = policy or RetryPolicy(max_attempts=1)
        self.max_requests = max_requests
        self.stats = RequestStats()
        self._prototype = default_buffer_prototype()
        self._local = threading.local()

    def _key(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _rng(self) -> random.Random:
        rng = getattr(self._local, "rng", None)
        if rng is None:
            rng = self._local.rng = random.Random()
        return rng

    def _call(self, fn: Any, where: str) -> Any:
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

    def _get(self, key: str, byte_range: Any = None) -> memoryview:
        from zarr.core.sync import sync

        buf = sync(self.store.get(self._key(key), self._prototype, byte_range))
        if buf is None:
            raise FileNotFoundError(key)
        return _as_buffer(buf)

    def get(self, key: str) -> Buffer | None:
        data: Buffer | None = self._call(lambda: self._get(key), key)
        return data

    def get_range(self, key: str, start: int, end: int) -> Buffer | None:
        from zarr.abc.store import RangeByteRequest

        where = f"{key}[{start}:{end}]"

        def fetch() -> memoryview:
            data = self._get(key, RangeByteRequest(start, end))
            return _check(data, end - start, f"{self.url}/{where}")

        data: Buffer | None = self._call(fetch, where)
        return data

    def get_suffix(self, key: str, length: int) -> Buffer | None:
        from zarr.abc.store import SuffixByteRequest

        data: Buffer | None = self._call(
            lambda: self._get(key, SuffixByteRequest(length)), f"{key}[-{length}:]"
        )
        return data

    def get_with_size(self, key: str, length: int, *, from_end: bool) -> tuple[Buffer, int] | None:
        """The first (or last) ``length`` bytes of ``key`` and its size.

        A zarr-python store answers a range without the object's size, so this
        costs two requests (the size, then the bytes), both retried.
        """
        from zarr.abc.store import RangeByteRequest, SuffixByteRequest
        from zarr.core.sync import sync

        def fetch() -> tuple[Buffer, int]:
            try:
                size = int(sync(self.store.getsize(self._key(key))))
            except FileNotFoundError:
                raise
            except KeyError:
                raise FileNotFoundError(key) from None
            n = min(length, size)
            request = SuffixByteRequest(n) if from_end else RangeByteRequest(0, n)
            data = _check(self._get(key, request) if n else memoryview(b""), n, f"{self.url}/{key}")
            return data, size

        where = f"{key}[-{length}:]" if from_end else f"{key}[0:{length}]"
        found: tuple[Buffer, int] | None = self._call(fetch, where)
        return found

    def get_ranges(
        self, key: str, starts: Sequence[int], ends: Sequence[int]
    ) -> list[Buffer] | None:
        from zarr.abc.store import RangeByteRequest
        from zarr.core.sync import sync

        groups = merge_ranges(starts, ends)
        full = self._key(key)

        def fetch() -> _Parts:
            requests = [(full, RangeByteRequest(lo, hi)) for lo, hi, _ in groups]
            parts = sync(self.store.get_partial_values(self._prototype, requests))
            if any(p is None for p in parts):
                raise FileNotFoundError(key)
            out = _Parts([memoryview(b"")] * len(starts))
            for (lo, hi, members), part in zip(groups, parts, strict=True):
                data = _check(_as_buffer(part), hi - lo, f"{self.url}/{key}[{lo}:{hi}]")
                out.fetched += len(data)
                for i in members:
                    out[i] = data[starts[i] - lo : ends[i] - lo]
            return out

        parts: list[Buffer] | None = self._call(fetch, f"{key} ({len(starts)} ranges)")
        return parts

    def __repr__(self) -> str:
        return f"ZarrStoreReader({self.url!r})"


# -- metadata reads: zarr-python over the user's store, failures typed ----------------------
def store_error(exc: BaseException, url: str, key: str) -> EarthstreamError:
    """The typed, redacted error for a store failure on ``key``."""
    if isinstance(exc, EarthstreamError):
        return exc
    kind, _, status = classify(exc)
    detail = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    what = f"{url}/{key}" if key else url
    if kind == "denied" or isinstance(exc, PermissionError):
        return StoreAccessError(
            f"access to {what} was refused ({type(exc).__name__}): {detail}. Check the "
            "credentials the store was created with and their permissions."
        )
    status_text = f", HTTP {status}" if status else ""
    return StoreRequestError(
        f"reading {what} failed ({type(exc).__name__}{status_text}): {detail}. Check the "
        "store and its connection; the store object's own retry settings apply."
    )


def checked_store(store: Any, url: str) -> Any:
    """``store`` wrapped so that its failures arrive as earthstream's typed errors."""
    return _checked_store_class()(store, url)


@functools.cache
def _checked_store_class() -> type:
    from zarr.storage import WrapperStore

    class CheckedStore(WrapperStore[Any]):
        """Delegates to the user's store; translates its failures (not its answers)."""

        def __init__(self, store: Any, url: str = "") -> None:
            super().__init__(store)
            self._url = url

        def _with_store(self, store: Any) -> Any:
            return type(self)(store, self._url)

        @property
        def supports_consolidated_metadata(self) -> bool:
            return bool(self._store.supports_consolidated_metadata)

        # Errors are raised outside the ``except`` blocks: the store's own exception
        # (which may name credentials) is neither the cause nor the context.
        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            try:
                return await self._store.get(key, prototype, byte_range)
            except FileNotFoundError:
                return None
            except Exception as exc:
                error = store_error(exc, self._url, key)
            raise error

        async def get_partial_values(
            self, prototype: Any, key_ranges: Iterable[tuple[str, Any]]
        ) -> list[Any]:
            key_ranges = list(key_ranges)
            try:
                return list(await self._store.get_partial_values(prototype, key_ranges))
            except Exception as exc:
                error = store_error(exc, self._url, key_ranges[0][0] if key_ranges else "")
            raise error

        async def exists(self, key: str) -> bool:
            try:
                return bool(await self._store.exists(key))
            except Exception as exc:
                error = store_error(exc, self._url, key)
            raise error

        async def _listed(self, items: AsyncIterator[str], prefix: str) -> AsyncIterator[str]:
            error: EarthstreamError | None = None
            try:
                async for item in items:
                    yield item
            except Exception as exc:
                error = store_error(exc, self._url, prefix)
            if error is not None:
                raise error

        def list(self) -> AsyncIterator[str]:
            return self._listed(self._store.list(), "")

        def list_prefix(self, prefix: str) -> AsyncIterator[str]:
            return self._listed(self._store.list_prefix(prefix), prefix)

        def list_dir(self, prefix: str) -> AsyncIterator[str]:
            return self._listed(self._store.list_dir(prefix), prefix)

        def __str__(self) -> str:
            return self._url

        def __repr__(self) -> str:
            return f"CheckedStore({self._url!r})"

    return CheckedStore
