"""Normalizing a user's path or URL into a picklable store description."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from ..errors import ConfigError
from ._options import Family, StoreOptions, normalize_options, store_family
from ._secrets import redact, secret_values, url_secrets

#: URL schemes served through obstore.
REMOTE_SCHEMES = ("http", "https", "s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss")


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives: a local directory or an object-store URL.

    It is a plain description (it pickles to DataLoader and Dask workers); the
    client that reads from it is created lazily in each process.  ``url`` keeps
    its credentials (requests need them), but what is shown (``repr``, ``str``,
    :attr:`display`, every message) is redacted: URL user info, secret query
    parameters and the values of secret ``options`` never appear.

    >>> loc = parse_location("/data/era5.zarr")
    >>> loc.scheme, loc.is_local
    ('file', True)
    >>> parse_location("s3://bucket/era5.zarr", {"region": "eu-west-1"})
    StoreLocation(url='s3://bucket/era5.zarr')
    >>> parse_location("https://me:hunter22@host/era5.zarr?token=abc")
    StoreLocation(url='https://***@host/era5.zarr?token=***')
    """

    url: str
    scheme: str = field(repr=False)
    path: str = field(repr=False)
    options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def family(self) -> Family:
        """Which kind of object store serves a remote location (s3, gcs, azure, http)."""
        return store_family(self.scheme, self.url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret strings of this location (never shown): URL user info, secret
        query values, secret option values."""
        return url_secrets(self.url) + secret_values(dict(self.options))

    @property
    def display(self) -> str:
        """The URL or path as shown in messages: credentials redacted."""
        return redact(self.url, self.secrets)

    def redact(self, text: str) -> str:
        """``text`` without this location's credentials."""
        return redact(text, self.secrets)

    def store_options(self) -> StoreOptions:
        """The normalized options of a remote location."""
        return normalize_options(self.family, dict(self.options))

    def child(self, relative: str) -> StoreLocation:
        """The location of ``relative`` inside this one."""
        relative = relative.strip("/")
        if not relative:
            return self
        if self.is_local:
            path = os.path.join(self.path, relative)
            return StoreLocation(url=path, scheme="file", path=path, options=self.options)
        url = join_key(self.url, relative)  # a query (signed URLs) stays at the end
        return StoreLocation(url=url, scheme=self.scheme, path=url, options=self.options)

    def split_key(self) -> tuple[StoreLocation, str]:
        """The location holding a remote file, and the file's key in it.

        The query of a signed URL stays with the parent, so the request for the key
        carries it (obstore appends the base URL's query to every request); options
        (with a SAS token taken from an Azure URL) stay too.

        >>> parent, key = parse_location("https://h/a/x.tif?sig=abc").split_key()
        >>> parent.url, key
        ('https://h/a?sig=abc', 'x.tif')
        """
        base, sep, query = self.url.partition("?")
        head, _, name = base.rstrip("/").rpartition("/")
        url = head + sep + query
        return StoreLocation(url=url, scheme=self.scheme, path=url, options=self.options), name

    def __repr__(self) -> str:
        return f"StoreLocation(url={self.display!r})"

    def __str__(self) -> str:
        return self.display


def join_key(url: str, key: str) -> str:
    """``url`` + ``/key``, the query (of a signed URL) kept at the end.

    >>> join_key("https://h/x.zarr?sig=***", "t2m/zarr.json")
    'https://h/x.zarr/t2m/zarr.json?sig=***'
    """
    base, sep, query = url.partition("?")
    return f"{base.rstrip('/')}/{key.lstrip('/')}{sep}{query}"


def parse_location(
    url_or_path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> StoreLocation:
    """Normalize a local path, ``file://`` URL or object-store URL.

    Local paths become absolute.  ``storage_options`` configure the object-store
    client (obstore) of remote URLs, in obstore's or fsspec's spelling (see
    :func:`~earthstream.storage._options.normalize_options`); they are checked
    here and not allowed for local paths.  An Azure URL carrying a SAS token in
    its query string gets it as the ``sas_key`` option.
    """
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise ConfigError(
            f"storage_options must be a mapping of option -> value (a "
            f"{type(storage_options).__name__} was given), e.g. {{'region': 'us-west-2'}}."
        )
    if not isinstance(url_or_path, str | os.PathLike):
        raise ConfigError(
            f"store location {url_or_path!r} must be a path or URL (a "
            f"{type(url_or_path).__name__} was given)."
        )
    text = os.fspath(url_or_path)
    if not isinstance(text, str) or not text:
        raise ConfigError(f"store location {url_or_path!r} must be a non-empty path or URL.")
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        path = unquote(parsed.path) if scheme == "file" else text
        if scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"file URL {text!r} names host {parsed.netloc!r}; write file:///absolute/path."
            )
        path = os.path.abspath(os.path.expanduser(path))
        if storage_options:
            raise ConfigError(
                f"storage_options were given for the local path {path!r}; they only apply to "
                "remote URLs (s3://, gs://, az://, http(s)://). Remove them."
            )
        return StoreLocation(url=path, scheme="file", path=path, options=())
    if scheme in REMOTE_SCHEMES:
        url = text.rstrip("/")
        family = store_family(scheme, url)
        options = dict(storage_options or {})
        split = urlsplit(url)
        if family == "azure" and split.query:
            # obstore's Azure client ignores the query: a SAS token becomes sas_key
            if not any("sas" in k or k in ("credential", "connection_string") for k in options):
                options["sas_key"] = split.query
            url = urlunsplit(split._replace(query="")).rstrip("/")
        normalized = normalize_options(family, options).as_dict()
        return StoreLocation(
            url=url, scheme=scheme, path=url, options=tuple(sorted(normalized.items()))
        )
    raise ConfigError(
        f"unsupported URL scheme {parsed.scheme!r} in {redact(text)!r}; use a local path, "
        "file://, http(s)://, s3://, gs:// or az://."
    )
