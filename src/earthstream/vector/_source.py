"""Vector labels: features read by bounding box, indexed per worker, rasterized per chip.

``open_vector`` reads metadata only (CRS, columns, bounds).  Features are read
by bounding box:

- **GeoParquet** with pyarrow: row groups are skipped on the statistics of the
  bbox covering column (GeoParquet 1.1, ``to_parquet(write_covering_bbox=True)``),
  then rows are filtered on it; WKB geometries only are decoded.  Remote files
  are read by byte range through :mod:`earthstream.storage`.
- **FlatGeobuf** (and anything else GDAL reads) with pyogrio, whose bbox filter
  uses FlatGeobuf's packed R-tree, so only matching features are read.

For a stream, each worker process reads the features inside the stream's
target bounds once, reprojects them to the target CRS and keeps them in a
shapely STRtree (:class:`LabelIndex`); each chip then burns only the features
its bounds hit.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._names import suggest
from .._validate import check_names
from ..errors import ConfigError, CRSError, UnsupportedGeometryError, VariableNotFoundError
from ..geo._grid import Bounds, GridSpec, normalize_crs, reproject_bounds, transformer
from ..storage import open_reader, parse_location, redact

__all__ = ["Features", "LabelIndex", "VectorSource", "open_vector"]

_PARQUET = (".parquet", ".geoparquet", ".pq")
#: shapely type ids that rasterize: point, line, ring, polygon, multi-*, collection
_LINEAR_TYPES = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint",
                 5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}  # fmt: skip
GEOMETRY_KINDS = {
    "polygon": {3, 6},
    "line": {1, 2, 5},
    "point": {0, 4},
    "collection": {7},
}


@dataclass
class Features:
    """Geometries (shapely, in ``crs``) with their burn values, plus what reading them cost."""

    geometries: np.ndarray
    values: np.ndarray
    crs: str
    row_groups_read: int = 0
    row_groups_total: int = 0


class _RangeFile(io.RawIOBase):
    """A read-only, seekable file over a byte reader (pyarrow reads footer and row groups)."""

    def __init__(self, reader: Any, key: str) -> None:
        self.reader, self.key, self.pos = reader, key, 0
        self.size = self._size()

    def _size(self) -> int:
        store = getattr(self.reader, "store", None)
        if store is not None:
            import obstore

            return int(obstore.head(store, self.key)["size"])
        return os.path.getsize(os.path.join(self.reader.root, self.key))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        data = self.reader.get_range(self.key, self.pos, self.pos + n)
        buffer[:n] = data
        self.pos += n
        return n


@dataclass(frozen=True)
class VectorSource:
    """A vector file of labels (GeoParquet, FlatGeobuf, or any OGR format); a description.

    Attributes
    ----------
    attribute
        Column whose value is burned (``None``: burn 1).
    classes
        For a text ``attribute``: the class names, burned as 1, 2, ... in this order.
    """

    url: str
    format: str  # "geoparquet" or "ogr"
    crs: str
    columns: tuple[str, ...]
    attribute: str | None = None
    classes: tuple[str, ...] = ()
    layer: str | None = None
    geometry_types: tuple[str, ...] = ("polygon", "line", "point", "collection")
    bounds: Bounds | None = None
    options: tuple[tuple[str, Any], ...] = field(default=(), repr=False, compare=False, hash=False)

    # -- reading ----------------------------------------------------------------------
    def read(self, bbox: Sequence[float] | None = None, bbox_crs: Any = None) -> Features:
        """Features intersecting ``bbox`` (in ``bbox_crs``, default the file's CRS)."""
        if bbox is not None and bbox_crs is not None:
            bbox = reproject_bounds(bbox, bbox_crs, self.crs)
        query = None if bbox is None else tuple(float(v) for v in bbox)
        if self.format == "geoparquet":
            geoms, raw, rg_read, rg_total = self._read_parquet(query)
        else:
            geoms, raw = self._read_ogr(query)
            rg_read = rg_total = 0
        self._check_types(geoms)
        return Features(geoms, self._burn_values(raw, len(geoms)), self.crs, rg_read, rg_total)

    def _burn_values(self, raw: np.ndarray | None, n: int) -> np.ndarray:
        if self.attribute is None or raw is None:
            return np.ones(n, dtype=np.int64)
        if self.classes:
            lookup = {c: i + 1 for i, c in enumerate(self.classes)}
            return np.array([lookup.get(v, 0) for v in raw], dtype=np.int64)
        return np.asarray(raw)

    def _open_parquet(self) -> Any:
        import pyarrow.parquet as pq

        location = parse_location(self.url, dict(self.options) or None)
        if location.is_local:
            return pq.ParquetFile(location.path)
        parent, name = location.split_key()
        reader = open_reader(parent)
        return pq.ParquetFile(io.BufferedReader(_RangeFile(reader, name), 1 << 20))

    def _read_parquet(
        self, bbox: tuple[float, ...] | None
    ) -> tuple[np.ndarray, np.ndarray | None, int, int]:
        import shapely

        pf = self._open_parquet()
        geo = json.loads(pf.schema_arrow.metadata[b"geo"])
        column = geo["primary_column"]
        meta = geo["columns"][column]
        cover = (meta.get("covering") or {}).get("bbox")
        n_groups = pf.metadata.num_row_groups
        groups = list(range(n_groups))
        if bbox is not None and cover is not None:
            groups = _row_groups_in(pf, cover, bbox)
        columns = [column] + ([self.attribute] if self.attribute else [])
        if cover is not None:
            columns.append(cover["xmin"][0])
        table = pf.read_row_groups(groups, columns=columns) if groups else None
        if table is None or table.num_rows == 0:
            return np.empty(0, dtype=object), None, len(groups), n_groups
        if bbox is not None and cover is not None:
            box = table.column(cover["xmin"][0]).combine_chunks()
            xmin, ymin = box.field(cover["xmin"][1]), box.field(cover["ymin"][1])
            xmax, ymax = box.field(cover["xmax"][1]), box.field(cover["ymax"][1])
            import pyarrow.compute as pc

            keep = pc.and_(
                pc.and_(pc.less_equal(xmin, bbox[2]), pc.greater_equal(xmax, bbox[0])),
                pc.and_(pc.less_equal(ymin, bbox[3]), pc.greater_equal(ymax, bbox[1])),
            )
            table = table.filter(keep)
        geoms = _from_wkb(np.asarray(table.column(column).to_numpy(zero_copy_only=False)), self.url)
        raw = None
        if self.attribute:
            raw = np.asarray(table.column(self.attribute).to_numpy(zero_copy_only=False))
        if bbox is not None and cover is None:
            keep_np = shapely.intersects(geoms, shapely.box(*bbox))
            geoms = geoms[keep_np]
            raw = raw[keep_np] if raw is not None else None
        return geoms, raw, len(groups), n_groups

    def _read_ogr(self, bbox: tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
        import pyogrio

        meta, table = pyogrio.read_arrow(
            self.url,
            layer=self.layer,
            columns=[self.attribute] if self.attribute else [],
            bbox=bbox,
        )
        name = meta.get("geometry_name") or "wkb_geometry"
        geoms = _from_wkb(np.asarray(table.column(name).to_numpy(zero_copy_only=False)), self.url)
        raw = None
        if self.attribute:
            raw = np.asarray(table.column(self.attribute).to_numpy(zero_copy_only=False))
        return geoms, raw

    def _check_types(self, geoms: np.ndarray) -> None:
        import shapely

        if len(geoms) == 0:
            return
        allowed = set().union(*(GEOMETRY_KINDS[k] for k in self.geometry_types))
        types = shapely.get_type_id(geoms)
        bad = ~np.isin(types, sorted(allowed)) & (types >= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            kind = _LINEAR_TYPES.get(int(types[i]), str(types[i]))
            raise UnsupportedGeometryError(
                f"{redact(self.url)!r}: feature {i} is a {kind}, which geometry_types="
                f"{self.geometry_types} excludes; pass open_vector(..., geometry_types=(...)) "
                f"including {_kind_of(int(types[i]))!r}, or filter those features out."
            )

    # -- streaming ----------------------------------------------------------------------
    def index(self, crs: Any, bounds: Sequence[float]) -> LabelIndex:
        """This process's spatial index of the features in ``bounds``, reprojected to ``crs``."""
        key = (self, normalize_crs(crs), tuple(float(v) for v in bounds))
        with _INDEX_LOCK:
            if _INDEXES.get("pid") != os.getpid():
                _INDEXES.clear()
                _INDEXES["pid"] = os.getpid()
            lock = _INDEX_BUILD.setdefault(key, threading.Lock())
        with lock:
            found = _INDEXES.get(key)
            if found is None:
                found = _INDEXES[key] = LabelIndex.build(self, key[1], key[2])
            return found

    def rasterize(
        self,
        grid: GridSpec,
        *,
        all_touched: bool = False,
        fill: int = 0,
        dtype: Any = np.uint8,
    ) -> np.ndarray:
        """Burn the features onto ``grid`` (reading those inside its bounds)."""
        return self.index(grid.crs, grid.bounds).rasterize(
            grid, all_touched=all_touched, fill=fill, dtype=dtype
        )


def _kind_of(type_id: int) -> str:
    for kind, ids in GEOMETRY_KINDS.items():
        if type_id in ids:
            return kind
    return "?"


def _from_wkb(wkb: np.ndarray, url: str) -> np.ndarray:
    import shapely

    try:
        return np.asarray(shapely.from_wkb(wkb))
    except NotImplementedError as exc:  # curves: CircularString, CurvePolygon, MultiSurface ...
        raise UnsupportedGeometryError(
            f"{url!r} holds curved geometries ({exc}); rasterizing needs linear ones. Convert "
            "them first, e.g. `ogr2ogr -nlt CONVERT_TO_LINEAR out.fgb in.gpkg`, then open that."
        ) from None


def _row_groups_in(
    pf: Any, cover: Mapping[str, Sequence[str]], bbox: tuple[float, ...]
) -> list[int]:
    paths = {k: ".".join(v) for k, v in cover.items()}
    keep = []
    md = pf.metadata
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        stats: dict[str, Any] = {}
        for c in range(rg.num_columns):
            col = rg.column(c)
            for k, p in paths.items():
                if col.path_in_schema == p and col.statistics is not None:
                    stats[k] = col.statistics
        if len(stats) < 4 or not all(s.has_min_max for s in stats.values()):
            keep.append(g)
            continue
        if (
            stats["xmin"].min > bbox[2]
            or stats["xmax"].max < bbox[0]
            or stats["ymin"].min > bbox[3]
            or stats["ymax"].max < bbox[1]
        ):
            continue
        keep.append(g)
    return keep


_INDEX_LOCK = threading.Lock()
_INDEXES: dict[Any, Any] = {}
_INDEX_BUILD: dict[Any, threading.Lock] = {}


@dataclass
class LabelIndex:
    """Features of one area, in one CRS, in an STRtree; built once per process."""

    crs: str
    geometries: np.ndarray
    values: np.ndarray
    tree: Any
    read: Features

    @classmethod
    def build(cls, source: VectorSource, crs: str, bounds: Sequence[float]) -> LabelIndex:
        import shapely

        features = source.read(bounds, bbox_crs=crs)
        geoms = features.geometries
        if len(geoms) and source.crs != crs:
            t = transformer(source.crs, crs)
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(*xy.T)))
        return cls(crs, geoms, features.values, shapely.STRtree(geoms), features)

    def candidates(self, bounds: Sequence[float]) -> np.ndarray:
        import shapely

        hits = self.tree.query(shapely.box(*bounds), predicate="intersects")
        return np.sort(np.asarray(hits, dtype=np.int64))

    def rasterize(
        self, grid: GridSpec, *, all_touched: bool = False, fill: int = 0, dtype: Any = np.uint8
    ) -> np.ndarray:
        """Burn the features hitting ``grid`` (in file order: later features win)."""
        from rasterio.features import rasterize

        from ..geo._gdal import quiet_rasterio_warnings

        quiet_rasterio_warnings()
        if grid.crs != self.crs:
            raise CRSError(f"grid CRS {grid.crs} differs from the index's CRS {self.crs}.")
        hits = self.candidates(grid.bounds)
        if len(hits) == 0:
            return np.full(grid.shape, fill, dtype=dtype)
        shapes = zip(self.geometries[hits], self.values[hits].tolist(), strict=True)
        return np.asarray(
            rasterize(
                shapes,
                out_shape=grid.shape,
                transform=grid.affine,
                fill=fill,
                all_touched=all_touched,
                dtype=dtype,
            )
        )


def open_vector(
    url_or_path: str | os.PathLike[str],
    attribute: str | None = None,
    *,
    classes: Sequence[str] | None = None,
    layer: str | None = None,
    crs: Any = None,
    geometry_types: Sequence[str] = ("polygon", "line", "point", "collection"),
    storage_options: Mapping[str, Any] | None = None,
) -> VectorSource:
    """Open a vector label file (metadata only): GeoParquet, FlatGeobuf or any OGR format.

    Parameters
    ----------
    url_or_path
        Local path or URL (``http(s)://``, ``s3://`` ...).
    attribute
        Column to burn into masks; default: burn 1 where a feature is.
    classes
        For a text ``attribute``: class names, burned as 1, 2, ...  Default:
        the sorted distinct values of the column.
    layer
        Layer of a multi-layer file (OGR formats).
    crs
        The CRS, for files that lack one (overrides the file's).
    geometry_types
        Kinds of geometry accepted: ``"polygon"``, ``"line"``, ``"point"``,
        ``"collection"``; others raise :class:`~earthstream.errors.UnsupportedGeometryError`.
    """
    if attribute is not None and not isinstance(attribute, str):
        raise ConfigError(f"attribute={attribute!r} must be the name of a column (or None).")
    chosen = check_names(classes, "classes")
    classes = list(chosen) if chosen is not None else None
    if layer is not None and not isinstance(layer, str | int):
        raise ConfigError(f"layer={layer!r} must be a layer name or index (or None).")
    geometry_types = check_names(geometry_types, "geometry_types", none=False) or ()
    location = parse_location(url_or_path, storage_options)
    url = location.path if location.is_local else location.url
    if location.is_local and not os.path.exists(url):
        from ..errors import StoreNotFoundError

        raise StoreNotFoundError(f"no vector file at {url!r}: the path does not exist.")
    for kind in geometry_types:
        if kind not in GEOMETRY_KINDS:
            raise ConfigError(
                f"geometry_types has {kind!r}; use any of {', '.join(GEOMETRY_KINDS)}."
            )
    options = tuple(sorted((storage_options or {}).items()))
    if url.lower().endswith(_PARQUET):
        probe = VectorSource(
            url=url, format="geoparquet", crs="EPSG:4326", columns=(), options=options
        )
        pf = probe._open_parquet()
        meta = pf.schema_arrow.metadata or {}
        if b"geo" not in meta:
            from ..errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                f"{url!r} is Parquet without GeoParquet 'geo' metadata; write it with "
                "geopandas `to_parquet` (or another GeoParquet writer)."
            )
        geo = json.loads(meta[b"geo"])
        col = geo["columns"][geo["primary_column"]]
        if col.get("encoding", "WKB").upper() != "WKB":
            from ..errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                f"{url!r} stores geometries as {col['encoding']!r}; write it with WKB encoding "
                "(geopandas `to_parquet(..., geometry_encoding='WKB')`, the default)."
            )
        file_crs: Any = col.get("crs", "OGC:CRS84")  # null: no CRS
        columns = tuple(n for n in pf.schema_arrow.names if n != geo["primary_column"])
        bbox = col.get("bbox")
        fmt = "geoparquet"
        bounds = tuple(float(v) for v in bbox[:4]) if bbox and len(bbox) == 4 else None
    else:
        import pyogrio

        info = pyogrio.read_info(url, layer=layer)
        file_crs = info["crs"]
        columns = tuple(str(c) for c in info["fields"])
        bounds = info.get("total_bounds")
        fmt = "ogr"
    if crs is not None:
        file_crs = crs
    elif file_crs is None:
        raise CRSError(
            f"{url!r} has no CRS; pass the CRS its coordinates are in, e.g. "
            "open_vector(path, crs='EPSG:4326')."
        )
    if attribute is not None and attribute not in columns:
        raise VariableNotFoundError(
            f"attribute {attribute!r} is not a column of {url!r}.{suggest(attribute, columns)} "
            f"Columns: {', '.join(columns)}."
        )
    source = VectorSource(
        url=url,
        format=fmt,
        crs=normalize_crs(file_crs, what="the label file's crs"),
        columns=columns,
        attribute=attribute,
        layer=layer,
        geometry_types=tuple(geometry_types),
        bounds=None if bounds is None else tuple(float(v) for v in bounds),  # type: ignore[arg-type]
        options=options,
    )
    if attribute is not None:
        if classes is None:
            values = _attribute_values(source)
            if values.dtype.kind in "OUS":
                classes = sorted({str(v) for v in values if v is not None})
        if classes is not None:
            source = VectorSource(**{**source.__dict__, "classes": tuple(classes)})
    return source


def _attribute_values(source: VectorSource) -> np.ndarray:
    if source.format == "geoparquet":
        pf = source._open_parquet()
        col = pf.read(columns=[source.attribute]).column(0)
        return np.asarray(col.to_numpy(zero_copy_only=False))
    import pyogrio

    _, table = pyogrio.read_arrow(
        source.url, layer=source.layer, columns=[source.attribute], read_geometry=False
    )
    return np.asarray(table.column(0).to_numpy(zero_copy_only=False))
