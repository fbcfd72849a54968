"""STAC asset metadata -> what to read: grid (projection extension), bands (raster, eo).

Both the STAC 1.0 layout (``raster:bands``, ``eo:bands``, ``proj:epsg``) and the
1.1 one (``bands`` with ``eo:``/``raster:`` fields, ``nodata``/``data_type`` on
the asset, ``proj:code``) are read.  Asset fields win over item properties.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urljoin, urlparse

import numpy as np

from ..errors import MissingProjectionError
from ..geo._gdal import gdal_env, gdal_path, open_dataset
from ..geo._grid import GridSpec, normalize_crs
from ..geo._read import RasterBand, RasterRef

__all__ = [
    "MISSING_PROJECTION",
    "MissingProjection",
    "asset_raster",
    "item_datetime",
    "resolve_href",
]

#: An asset without projection metadata: raise, or read the file's header.
MissingProjection = Literal["error", "read"]
MISSING_PROJECTION: tuple[MissingProjection, ...] = ("error", "read")


def resolve_href(href: str, base: str | None) -> str:
    """``href`` made absolute against the document it came from.

    >>> resolve_href("./B04.tif", "/data/items/x.json")
    '/data/items/B04.tif'
    >>> resolve_href("B04.tif", "http://h/items/x.json")
    'http://h/items/B04.tif'
    """
    if urlparse(href).scheme or href.startswith("/") or base is None:
        return href
    if urlparse(base).scheme in ("http", "https", "s3", "gs", "az"):
        return urljoin(base, href)
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), href))


def item_datetime(item: Mapping[str, Any]) -> np.datetime64 | None:
    props = item.get("properties", {})
    value = props.get("datetime") or props.get("start_datetime")
    if not value:
        return None
    return np.datetime64(str(value).replace("Z", "").split("+")[0], "ns")


def _field(asset: Mapping[str, Any], props: Mapping[str, Any], *names: str) -> Any:
    for source in (asset, props):
        for name in names:
            value = source.get(name)
            if value is not None:
                return value
    return None


def _band_entries(asset: Mapping[str, Any], props: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One merged dict per band from ``bands`` (1.1), ``raster:bands`` and ``eo:bands`` (1.0)."""
    lists = [
        asset.get("bands"),
        asset.get("raster:bands"),
        asset.get("eo:bands"),
        props.get("eo:bands") if not asset.get("eo:bands") else None,
    ]
    n = max((len(x) for x in lists if isinstance(x, list)), default=0)
    merged: list[dict[str, Any]] = [{} for _ in range(max(n, 1))]
    for entries in lists:
        if not isinstance(entries, list) or len(entries) != len(merged):
            continue
        for target, entry in zip(merged, entries, strict=True):
            for k, v in entry.items():
                target.setdefault(k, v)
    return merged


def _number(value: Any) -> float | None:
    """A float, or None; STAC allows the strings "nan", "inf", "-inf" as nodata."""
    return None if value is None else float(value)


def _grid_from_metadata(
    asset: Mapping[str, Any], props: Mapping[str, Any], override: Mapping[str, Any] | None
) -> GridSpec | None:
    o = dict(override or {})
    code = o.get("crs") or _field(
        asset, props, "proj:code", "proj:epsg", "proj:wkt2", "proj:projjson"
    )
    transform = o.get("transform") or _field(asset, props, "proj:transform")
    shape = o.get("shape") or _field(asset, props, "proj:shape")
    if code is None or shape is None:
        return None
    if transform is None:
        bbox = o.get("bbox") or _field(asset, props, "proj:bbox")
        if bbox is None:
            return None
        left, bottom, right, top = (float(v) for v in bbox[:4])
        h, w = int(shape[0]), int(shape[1])
        transform = ((right - left) / w, 0.0, left, 0.0, -(top - bottom) / h, top)
    return GridSpec(normalize_crs(code, what="proj:code"), tuple(transform)[:6], tuple(shape)[:2])


def asset_raster(
    item: Mapping[str, Any],
    key: str,
    *,
    base_href: str | None = None,
    projection: Mapping[str, Any] | None = None,
    missing_projection: MissingProjection = "error",
) -> RasterRef:
    """The :class:`RasterRef` of asset ``key`` of a STAC item (a dict).

    ``projection`` (``{"crs", "transform", "shape"}`` or ``{"crs", "bbox",
    "shape"}``) fills in what the metadata lacks; ``missing_projection="read"``
    reads the file's header instead (one request per asset).
    """
    asset = item["assets"][key]
    props = item.get("properties", {})
    href = resolve_href(asset["href"], base_href)
    path = gdal_path(href)
    grid = _grid_from_metadata(asset, props, projection)
    entries = _band_entries(asset, props)
    header: dict[str, Any] = {}
    if grid is None:
        if missing_projection != "read":
            raise MissingProjectionError(
                f"asset {key!r} of item {item.get('id')!r} has no projection metadata (it needs "
                "proj:code or proj:epsg, proj:transform or proj:bbox, and proj:shape). Pass "
                "projection={'crs': 'EPSG:32633', 'transform': [a, b, c, d, e, f], 'shape': "
                "[height, width]} if you know the grid, or missing_projection='read' to read "
                "each file's header (one request per asset)."
            )
        with gdal_env():
            ds = open_dataset(path)
            grid = GridSpec.from_dataset(ds)
            header = {"count": ds.count, "nodata": ds.nodatavals, "dtypes": ds.dtypes}
        if len(entries) == 1 and header["count"] > 1:
            entries = [{} for _ in range(header["count"])]
    gsd = _field(asset, props, "gsd")
    bands = []
    for i, e in enumerate(entries):
        name = key if len(entries) == 1 else f"{key}.{e.get('name') or i + 1}"
        nodata = e.get("nodata", asset.get("nodata"))
        if nodata is None and header:
            nodata = header["nodata"][i]
        scale = e.get("scale", e.get("raster:scale", asset.get("raster:scale", 1.0)))
        offset = e.get("offset", e.get("raster:offset", asset.get("raster:offset", 0.0)))
        bands.append(
            RasterBand(
                index=i + 1,
                name=name,
                nodata=_number(nodata),
                scale=float(scale if scale is not None else 1.0),
                offset=float(offset if offset is not None else 0.0),
                dtype=e.get("data_type", asset.get("data_type")),
                center_wavelength=_number(
                    e.get("center_wavelength", e.get("eo:center_wavelength"))
                    or asset.get("eo:center_wavelength")
                ),
                common_name=e.get("common_name", e.get("eo:common_name"))
                or asset.get("eo:common_name"),
                gsd=_number(e.get("spatial_resolution", e.get("raster:spatial_resolution", gsd))),
                description=e.get("description"),
            )
        )
    return RasterRef(
        href=href,
        path=path,
        grid=grid,
        bands=tuple(bands),
        datetime=item_datetime(item),
        item_id=item.get("id"),
        asset=key,
    )


def raster_assets(item: Mapping[str, Any]) -> list[str]:
    """Keys of the assets that look like rasters to stream (GeoTIFF, role ``data`` or no role)."""
    keys = []
    for key, asset in item.get("assets", {}).items():
        media = str(asset.get("type", ""))
        roles: Sequence[str] = asset.get("roles") or ["data"]
        href = str(asset.get("href", "")).lower()
        tiff = "tiff" in media or href.endswith((".tif", ".tiff"))
        if tiff and "data" in roles and "overview" not in roles and "thumbnail" not in roles:
            keys.append(key)
    return keys
