"""Geospatial test data written by the real writers: COGs (rasterio's COG driver, with
overviews and nodata), STAC items and a static catalog (pystac), labels (geopandas
``to_parquet``, pyogrio FlatGeobuf), in a UTM zone and in EPSG:4326."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

UTM = "EPSG:32633"
WGS84 = "EPSG:4326"
# Scene origins (upper-left) and sizes; all near 15.0 E, 45.0 N, inside UTM zone 33N.
SIZE = 384
BLOCK = 128
RES = 10.0
SCALE, OFFSET = 0.0001, -0.1
WAVELENGTHS = {"red": 0.665, "nir": 0.842}


@dataclass(frozen=True)
class SceneFiles:
    id: str
    datetime: str
    crs: str
    transform: tuple[float, ...]
    shape: tuple[int, int]
    assets: dict[str, Path]
    data: dict[str, np.ndarray]


def write_cog(path: Path, data: np.ndarray, crs: str, transform: Any, nodata: float | None) -> Path:
    import rasterio

    count = data.shape[0]
    profile = {
        "driver": "COG",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": count,
        "dtype": str(data.dtype),
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "blocksize": BLOCK,
        "compress": "deflate",
        "overviews": "auto",
        "overview_resampling": "average",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.scales = (SCALE,) * count
        dst.offsets = (OFFSET,) * count
    return path


def scene_data(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Noisy uint16 reflectances with a nodata (0) corner: resampling errors show up."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 10000, size=(1, *shape), dtype=np.uint16)
    data[:, : shape[0] // 8, : shape[1] // 8] = 0
    return data


def write_scenes(root: Path) -> list[SceneFiles]:
    """Three scenes: two overlapping in UTM 33N (different dates), one in EPSG:4326."""
    from affine import Affine

    root.mkdir(parents=True, exist_ok=True)
    specs = [
        ("utm-a", "2024-06-01T10:00:00Z", UTM, Affine(RES, 0, 500000.0, 0, -RES, 4985000.0)),
        ("utm-b", "2024-06-11T10:00:00Z", UTM, Affine(RES, 0, 501920.0, 0, -RES, 4983080.0)),
        ("geo-c", "2024-06-01T10:00:00Z", WGS84, Affine(0.0001, 0, 15.02, 0, -0.0001, 45.0)),
    ]
    scenes = []
    for k, (sid, dt, crs, transform) in enumerate(specs):
        assets, data = {}, {}
        for j, band in enumerate(("red", "nir")):
            arr = scene_data(100 * k + j, (SIZE, SIZE))
            path = write_cog(root / f"{sid}_{band}.tif", arr, crs, transform, nodata=0)
            assets[band], data[band] = path, arr
        scenes.append(SceneFiles(sid, dt, crs, tuple(transform)[:6], (SIZE, SIZE), assets, data))
    return scenes


def stac_items(scenes: list[SceneFiles], *, epsg_style: bool = False) -> list[Any]:
    """pystac Items with projection (proj:code, or proj:epsg for the older style), raster
    and eo metadata per asset."""
    import pystac
    from shapely.geometry import box, mapping

    from earthstream.geo import GridSpec, reproject_bounds

    items = []
    for i, s in enumerate(scenes):
        grid = GridSpec(s.crs, s.transform, s.shape)
        ll = reproject_bounds(grid.bounds, s.crs, WGS84)
        item = pystac.Item(
            id=s.id,
            geometry=mapping(box(*ll)),
            bbox=list(ll),
            datetime=pystac.utils.str_to_datetime(s.datetime),
            properties={"platform": "testsat-1" if i % 2 == 0 else "testsat-2", "gsd": RES},
            stac_extensions=[
                "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            ],
            collection="testsat",
        )
        if epsg_style or i == 1:  # one item written the older way on each run
            item.properties["proj:epsg"] = int(s.crs.split(":")[1])
        else:
            item.properties["proj:code"] = s.crs
        for band, path in s.assets.items():
            item.add_asset(
                band,
                pystac.Asset(
                    href=str(path),
                    media_type=pystac.MediaType.COG,
                    roles=["data"],
                    extra_fields={
                        "proj:transform": list(s.transform),
                        "proj:shape": list(s.shape),
                        "raster:bands": [
                            {"nodata": 0, "data_type": "uint16", "scale": SCALE, "offset": OFFSET}
                        ],
                        "eo:bands": [
                            {
                                "name": band,
                                "common_name": band,
                                "center_wavelength": WAVELENGTHS[band],
                            }
                        ],
                    },
                ),
            )
        item.add_asset(
            "thumbnail",
            pystac.Asset(
                href=str(path.with_suffix(".png")), media_type="image/png", roles=["thumbnail"]
            ),
        )
        items.append(item)
    return items


def write_catalog(root: Path, items: list[Any]) -> Path:
    """A self-contained static catalog with a collection and relative asset hrefs."""
    import pystac

    catalog = pystac.Catalog(id="test-catalog", description="earthstream test scenes")
    extent = pystac.Extent(
        pystac.SpatialExtent([[14.9, 44.9, 15.2, 45.1]]),
        pystac.TemporalExtent([[items[0].datetime, items[-1].datetime]]),
    )
    collection = pystac.Collection(id="testsat", description="test", extent=extent)
    for item in items:
        collection.add_item(item.clone())
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def write_item_collection(path: Path, items: list[Any]) -> Path:
    import pystac

    pystac.ItemCollection([i.clone() for i in items]).save_object(dest_href=str(path))
    return path


def label_frame(n: int = 60, seed: int = 7) -> Any:
    """Polygons (plus a few lines and points) over the scenes, in EPSG:4326."""
    import geopandas as gpd
    from shapely.geometry import LineString, Point

    rng = np.random.default_rng(seed)
    geoms, classes = [], []
    for _ in range(n):
        x, y = rng.uniform(15.0, 15.08), rng.uniform(44.95, 45.0)
        geoms.append(Point(x, y).buffer(rng.uniform(0.0005, 0.003), quad_segs=4))
        classes.append(int(rng.integers(1, 4)))
    geoms.append(LineString([(15.0, 44.96), (15.07, 44.99)]))
    classes.append(4)
    kinds = np.array(["crop", "forest", "water", "road"])[np.array(classes) - 1]
    return gpd.GeoDataFrame({"class": classes, "kind": kinds}, geometry=geoms, crs=WGS84)


def write_labels(root: Path) -> dict[str, Path]:
    """GeoParquet (EPSG:4326 and UTM, bbox covering, small row groups) and FlatGeobuf."""
    root.mkdir(parents=True, exist_ok=True)
    frame = label_frame()
    # sort by y so row groups are spatially compact and bbox statistics can skip them
    frame = frame.iloc[np.argsort(frame.geometry.bounds["miny"].to_numpy())].reset_index(drop=True)
    out = {
        "parquet": root / "labels.parquet",
        "parquet_utm": root / "labels_utm.parquet",
        "fgb": root / "labels.fgb",
    }
    frame.to_parquet(out["parquet"], write_covering_bbox=True, row_group_size=10)
    frame.to_crs(UTM).to_parquet(out["parquet_utm"], write_covering_bbox=True, row_group_size=10)
    frame.to_file(out["fgb"], driver="FlatGeobuf", engine="pyogrio")
    return out


def natural_earth() -> Path | None:
    """The Natural Earth countries that pyogrio ships for its own tests (public data)."""
    import pyogrio

    path = Path(pyogrio.__file__).parent / "tests" / "fixtures" / "naturalearth_lowres"
    shp = path / "naturalearth_lowres.shp"
    return shp if shp.exists() else None


def pyogrio_fixture(name: str) -> Path | None:
    import pyogrio

    path = Path(pyogrio.__file__).parent / "tests" / "fixtures" / name
    return path if path.exists() else None


def item_dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(i.to_dict(transform_hrefs=False))) for i in items]
