"""Where STAC items come from: static catalogs, ItemCollections, stac-geoparquet, STAC APIs.

Everything becomes a list of plain item dicts (``item.to_dict()`` form) with
absolute asset hrefs, the form the planner reads; it pickles cheaply to
DataLoader workers.  A search result can be frozen to stac-geoparquet
(:func:`freeze_items`) and trained from later without the API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreNotFoundError, UnsupportedFormatError
from ..storage import open_reader, parse_location
from ._assets import resolve_href

__all__ = ["ItemsLike", "freeze_items", "load_items", "search_items"]

ItemsLike = Any  # path/URL, pystac Item(s)/ItemCollection/ItemSearch, dict(s)

_PARQUET = (".parquet", ".geoparquet", ".pq")


def _absolute(item: dict[str, Any], base: str | None) -> dict[str, Any]:
    if base is None:
        for link in item.get("links", []):
            if link.get("rel") == "self" and link.get("href"):
                base = link["href"]
                break
    for asset in item.get("assets", {}).values():
        if "href" in asset:
            asset["href"] = resolve_href(asset["href"], base)
    return item


def _read_bytes(url_or_path: str) -> bytes:
    """A whole (small) document: a local file, an http(s) URL (plain or TLS, as pystac
    reads them), or an object-store URL through :mod:`earthstream.storage`."""
    location = parse_location(url_or_path)
    if location.is_local:
        try:
            return Path(location.path).read_bytes()
        except FileNotFoundError:
            raise StoreNotFoundError(f"no STAC file at {location.path!r}.") from None
    if location.scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(location.url) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise StoreNotFoundError(f"no STAC file at {location.display}.") from None
            raise
    parent, name = location.split_key()
    data = open_reader(parent).get(name)
    if data is None:
        raise StoreNotFoundError(f"no STAC file at {location.display}.")
    return bytes(data)


def _read_text(url_or_path: str) -> str:
    return _read_bytes(url_or_path).decode()


def _read_parquet(url_or_path: str) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import stac_table_to_items

    location = parse_location(url_or_path)
    if location.is_local:
        if not os.path.exists(location.path):
            raise StoreNotFoundError(f"no stac-geoparquet file at {location.path!r}.")
        table = pq.read_table(location.path)
    else:
        table = pq.read_table(pa.BufferReader(_read_bytes(location.url)))
    return [dict(item) for item in stac_table_to_items(table)]


def _from_path(text: str, max_items: int | None) -> list[dict[str, Any]]:
    if text.lower().endswith(_PARQUET):
        return [_absolute(i, text) for i in _read_parquet(text)][:max_items]
    doc = json.loads(_read_text(text))
    kind = doc.get("type")
    if kind == "Feature":
        return [_absolute(doc, text)]
    if kind == "FeatureCollection":
        return [_absolute(f, text) for f in doc.get("features", [])][:max_items]
    if kind in ("Catalog", "Collection"):
        import pystac

        location = parse_location(text)
        root: Any = pystac.read_file(location.path if location.is_local else location.url)
        out = []
        for item in root.get_items(recursive=True):
            d = item.to_dict(include_self_link=True, transform_hrefs=False)
            for asset_key, asset in item.assets.items():
                d["assets"][asset_key]["href"] = asset.get_absolute_href() or asset.href
            out.append(d)
            if max_items is not None and len(out) >= max_items:
                break
        return out
    raise UnsupportedFormatError(
        f"{text!r} is a {kind!r} document; pass a STAC Catalog, Collection, Item, "
        "ItemCollection (FeatureCollection) JSON, or a stac-geoparquet file (.parquet)."
    )


def load_items(source: ItemsLike, *, max_items: int | None = None) -> list[dict[str, Any]]:
    """STAC items as dicts with absolute asset hrefs, from any of:

    - a path or URL of a static catalog or collection (walked recursively), an
      ItemCollection / FeatureCollection JSON, a single item JSON, or a
      stac-geoparquet file (``.parquet``);
    - ``pystac.Item``, ``pystac.ItemCollection``, ``pystac_client.ItemSearch``,
      item dicts, or a list of any of these.
    """
    if isinstance(source, str | os.PathLike):
        return _from_path(os.fspath(source), max_items)
    if isinstance(source, Mapping):
        if source.get("type") == "FeatureCollection":
            return [_absolute(dict(f), None) for f in source["features"]][:max_items]
        return [_absolute(json.loads(json.dumps(source)), None)]
    if hasattr(source, "item_collection") and hasattr(source, "url"):  # pystac_client.ItemSearch
        source = source.item_collection()
    if hasattr(source, "to_dict") and hasattr(source, "assets"):  # pystac.Item
        source = [source]
    out: list[dict[str, Any]] = []
    for entry in source if isinstance(source, Iterable) else [source]:
        if hasattr(entry, "to_dict") and hasattr(entry, "assets"):
            d = entry.to_dict(transform_hrefs=False)
            for key, asset in entry.assets.items():
                d["assets"][key]["href"] = asset.get_absolute_href() or asset.href
            out.append(d)
        elif isinstance(entry, Mapping):
            out.append(_absolute(json.loads(json.dumps(entry)), None))
        elif isinstance(entry, str | os.PathLike):
            out.extend(_from_path(os.fspath(entry), None))
        else:
            raise ConfigError(
                f"cannot read STAC items from {type(entry).__name__}; pass a path or URL, "
                "pystac items, an ItemCollection, an ItemSearch, or item dicts."
            )
        if max_items is not None and len(out) >= max_items:
            return out[:max_items]
    return out


def _list(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def search_items(
    url: str,
    *,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    collections: Sequence[str] | str | None = None,
    intersects: Mapping[str, Any] | None = None,
    query: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | str | None = None,
    ids: Sequence[str] | None = None,
    max_items: int | None = None,
    limit: int = 100,
    method: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Search a STAC API (with pystac-client) and return the matching items as dicts.

    ``bbox`` is ``(west, south, east, north)`` in degrees; ``datetime`` an RFC
    3339 instant or interval (``"2024-01-01/2024-02-01"``); ``query`` the query
    extension, ``filter`` CQL2 (``properties`` filters); ``method`` ``"GET"``
    or ``"POST"`` (default: what the API supports).
    """
    from pystac_client import Client

    client = Client.open(url, headers=dict(headers) if headers else None)
    search = client.search(
        bbox=list(bbox) if bbox is not None else None,
        datetime=datetime,
        collections=[collections] if isinstance(collections, str) else _list(collections),
        intersects=dict(intersects) if intersects is not None else None,
        query=dict(query) if query is not None else None,
        filter=filter,  # type: ignore[arg-type]
        ids=list(ids) if ids is not None else None,
        max_items=max_items,
        limit=limit,
        method=method,
    )
    out = []
    for item in search.items_as_dicts():
        out.append(_absolute(item, None))
    return out


def freeze_items(items: ItemsLike, path: str | os.PathLike[str]) -> Path:
    """Write items (e.g. a search result) to a stac-geoparquet file; returns its path.

    :func:`load_items` (and ``stream_chips``) read it back without the API.
    """
    from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

    dicts = load_items(items)
    if not dicts:
        raise ConfigError("there are no items to freeze; the search or catalog returned none.")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    reader = parse_stac_items_to_arrow(dicts)
    to_parquet(reader, out)
    return out
