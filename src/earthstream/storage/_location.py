"""Normalizing a user's path or URL into a picklable store description."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import ConfigError

#: URL schemes served through obstore.
REMOTE_SCHEMES = ("http", "https", "s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss")


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives: a local directory or an object-store URL.

    It is a plain description (it pickles to DataLoader and Dask workers); the
    client that reads from it is created lazily in each process.  ``options``
    (credentials, endpoints) are kept out of ``repr`` so they are never logged.

    >>> loc = parse_location("/data/era5.zarr")
    >>> loc.scheme, loc.is_local
    ('file', True)
    >>> parse_location("s3://bucket/era5.zarr", {"region": "eu-west-1"})
    StoreLocation(url='s3://bucket/era5.zarr')
    """

    url: str
    scheme: str = field(repr=False)
    path: str = field(repr=False)
    options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def child(self, relative: str) -> StoreLocation:
        """The location of ``relative`` inside this one."""
        relative = relative.strip("/")
        if not relative:
            return self
        if self.is_local:
            path = os.path.join(self.path, relative)
            return StoreLocation(url=path, scheme="file", path=path, options=self.options)
        url = self.url.rstrip("/") + "/" + relative
        return StoreLocation(url=url, scheme=self.scheme, path=url, options=self.options)

    def __str__(self) -> str:
        return self.url


def parse_location(
    url_or_path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> StoreLocation:
    """Normalize a local path, ``file://`` URL or object-store URL.

    Local paths become absolute.  ``storage_options`` are passed to the object
    store client (obstore) for remote URLs; they are not allowed for local paths.
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
    options = tuple(sorted((storage_options or {}).items()))
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
        if options:
            raise ConfigError(
                f"storage_options were given for the local path {path!r}; they only apply to "
                "remote URLs (s3://, gs://, az://, http(s)://). Remove them."
            )
        return StoreLocation(url=path, scheme="file", path=path, options=())
    if scheme in REMOTE_SCHEMES:
        url = text.rstrip("/")
        return StoreLocation(url=url, scheme=scheme, path=url, options=options)
    raise ConfigError(
        f"unsupported URL scheme {parsed.scheme!r} in {text!r}; use a local path, file://, "
        "http(s)://, s3://, gs:// or az://."
    )
