"""Byte readers: the only place the hot path touches storage.

A reader answers four questions about a key: all its bytes, a byte range,
several byte ranges (merged into fewer requests where they are adjacent), and
its last ``n`` bytes (for shard indexes at the end of a shard).  A missing key
returns ``None`` (Zarr gives missing chunks the fill value); every other
failure raises a typed error.  Readers are thread-safe; they are created lazily
in each process from a :class:`StoreLocation` and never pickled.
"""

from __future__ import annotations

import base64
import mmap
import os
import random
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import ConfigError, ForkError, ShortReadError
from ._location import StoreLocation, join_key
from ._options import DEFAULT_MAX_REQUESTS
from ._retry import RequestStats, RetryPolicy, call_with_retries
from ._secrets import redact

__all__ = [
    "MMAP_MIN_BYTES",
    "Buffer",
    "ByteReader",
    "KeyLister",
    "LocalReader",
    "ObjectStoreReader",
    "ShortReadError",  # defined in errors.py; kept importable from here
    "open_reader",
]

Buffer = bytes | memoryview | mmap.mmap

#: Files at least this large are mapped rather than copied: decoders read the
#: page cache directly (about 10% less CPU per 4 MB chunk than ``read``).
MMAP_MIN_BYTES = 256 * 1024


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


@runtime_checkable
class KeyLister(Protocol):
    """A reader that can also list keys (object stores other than plain HTTP)."""

    def list_dir(self, prefix: str) -> list[str]:
        """Names directly under ``prefix``, relative to it."""
        ...

    def list_prefix(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``."""
        ...


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
    and classified here (see :mod:`earthstream.storage._retry`).  ``url`` is
    only used in messages, redacted (also of ``secrets``, e.g. the values of
    secret storage options).
    """

    def __init__(
        self,
        store: Any,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        secrets: Sequence[str] = (),
        can_list: bool = True,
    ) -> None:
        self.store = store
        self.secrets = tuple(secrets)
        self.url = redact(url, self.secrets)
        self.policy = policy or RetryPolicy()
        self.max_requests = max_requests
        self.can_list = can_list
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
                what=join_key(self.url, where),
                policy=self.policy,
                stats=self.stats,
                rng=self._rng(),
                size=_nbytes,
                secrets=self.secrets,
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
            return _check_length(data, end - start, join_key(self.url, f"{key}[{start}:{end}]"))

        data: Buffer | None = self._call(fetch, f"{key}[{start}:{end}]")
        return data

    def get_ranges(
        self, key: str, starts: Sequence[int], ends: Sequence[int]
    ) -> list[Buffer] | None:
        import obstore

        def fetch() -> list[Buffer]:
            parts = obstore.get_ranges(self.store, key, starts=list(starts), ends=list(ends))
            return [
                _check_length(memoryview(p), e - s, join_key(self.url, f"{key}[{s}:{e}]"))
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

    def list_dir(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (objects and "directories"), relative to it."""
        import obstore

        prefix = prefix.rstrip("/")
        if not self.can_list:
            raise NotImplementedError(f"{self.url} cannot list keys (plain HTTP)")

        def fetch() -> list[str]:
            result = obstore.list_with_delimiter(self.store, prefix=prefix or None)
            paths = [*result["common_prefixes"], *(o["path"] for o in result["objects"])]
            return [p[len(prefix) :].lstrip("/") if prefix else p for p in paths]

        names: list[str] | None = self._call(fetch, f"{prefix}/ (listing)")
        return names or []

    def list_prefix(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (relative to the store's root)."""
        import obstore

        if not self.can_list:
            raise NotImplementedError(f"{self.url} cannot list keys (plain HTTP)")

        def fetch() -> list[str]:
            stream = obstore.list(self.store, prefix=prefix.rstrip("/") or None)
            return [o["path"] for chunk in stream for o in chunk]

        keys: list[str] | None = self._call(fetch, f"{prefix} (listing)")
        return [k for k in keys or [] if k.startswith(prefix)]

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

    For reads obstore's internal retries are disabled: :class:`ObjectStoreReader`
    retries, counts and classifies every request instead.  ``retries=True`` (writers
    that go through zarr-python, e.g. the prediction writer) lets obstore retry with
    the same policy (``max_attempts``, ``budget_s``).  obstore's per-request timeout is
    bounded by the retry budget (:meth:`StoreOptions.client_options`).  Options
    obstore refuses (or panics on) raise :class:`ConfigError`, redacted.
    """
    from obstore.store import from_url

    check_fork(location.display)
    options = location.store_options()
    client = options.client_options()
    if location.scheme == "http":
        client.setdefault("allow_http", True)
    url = location.url
    if location.family == "http":
        url, auth = basic_auth(url)
        headers = dict(client.get("default_headers", {}))
        if auth and not any(k.lower() == "authorization" for k in headers):
            client["default_headers"] = {**headers, "Authorization": auth}
    retry_config: dict[str, Any] = {"max_retries": 0}
    if retries:
        policy = options.retry
        retry_config = {
            "max_retries": max(0, policy.max_attempts - 1),
            "retry_timeout": timedelta(seconds=policy.budget_s),
            "backoff": {
                "init_backoff": timedelta(seconds=policy.base_delay),
                "max_backoff": timedelta(seconds=policy.max_delay),
                "base": 2,
            },
        }
    kwargs: dict[str, Any] = {"client_options": client, "retry_config": retry_config}
    if options.config:
        kwargs["config"] = options.config
    if options.credential_provider is not None:
        kwargs["credential_provider"] = options.credential_provider
    problem: BaseException | None = None
    try:
        return from_url(url, **kwargs)
    except BaseException as exc:  # a Rust panic is a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        problem = exc
    detail = location.redact(str(problem).splitlines()[0] if str(problem) else "")
    kind = type(problem).__name__
    del problem
    raise ConfigError(  # outside the except block: the client's message is not chained
        f"the object-store client for {location.display} refused its configuration "
        f"({kind}: {detail}). Check storage_options (keys and values) and the URL."
    )


def basic_auth(url: str) -> tuple[str, str]:
    """``url`` without its user info, and that user info as an HTTP Basic
    ``Authorization`` value ("" when none): obstore's HTTP client would otherwise
    drop ``https://user:password@host/`` credentials instead of sending them.

    >>> basic_auth("https://me:pw@host/x.zarr")
    ('https://host/x.zarr', 'Basic bWU6cHc=')
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, ""
    userinfo, host = parts.netloc.rsplit("@", 1)
    token = base64.b64encode(unquote(userinfo).encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


def open_reader(location: StoreLocation) -> ByteReader:
    """The reader for ``location``: plain file reads locally, obstore remotely."""
    if location.is_local:
        return LocalReader(location.path)
    options = location.store_options()
    return ObjectStoreReader(
        make_object_store(location),
        location.url,
        policy=options.retry,
        max_requests=options.max_requests,
        secrets=location.secrets,
        can_list=location.family != "http",
    )
