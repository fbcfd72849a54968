"""A small earth-observation dataset: a static STAC catalog of COGs plus GeoParquet labels.

Scenes are tiles of a UTM zone 33N grid (10 m, three uint16 bands ``red``,
``green``, ``nir`` as single-band COGs with overviews, nodata 0 and a
reflectance scale of 1e-4), acquired on ``n_dates`` dates, with a strip of
nodata along one edge like a real swath border.  Labels are polygons (fields
in three classes) over the same area, in EPSG:4326, written with geopandas
``to_parquet`` (bbox covering column, small row groups).  The reflectances
depend on the class of the field below, so a model can learn the mask.
Needs the ``geo`` extra.  Seeded: the same arguments write the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EOData", "eo_like"]

_BANDS = {"red": (0.665, 0.05), "green": (0.560, 0.07), "nir": (0.842, 0.30)}
_CLASS_REFLECTANCE = {  # red, green, nir of: background, crop, forest, water
    0: (0.12, 0.10, 0.25),
    1: (0.06, 0.09, 0.45),
    2: (0.03, 0.05, 0.30),
    3: (0.02, 0.03, 0.01),
}


@dataclass(frozen=True)
class EOData:
    """Paths of a generated dataset."""

    root: Path
    catalog: Path  # static STAC catalog (catalog.json)
    labels: Path  # GeoParquet polygons, column "class" (1 crop, 2 forest, 3 water)
    cogs: tuple[Path, ...]


def _labels(rng: np.random.Generator, bounds: tuple[float, ...], n: int) -> Any:
    import geopandas as gpd
    from shapely.geometry import Polygon

    left, bottom, right, top = bounds
    geoms, classes = [], []
    for _ in range(n):
        cx, cy = rng.uniform(left, right), rng.uniform(bottom, top)
        r = rng.uniform(100, 600)
        k = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = r * rng.uniform(0.6, 1.0, k)
        geoms.append(
            Polygon(np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]))
        )
        classes.append(int(rng.integers(1, 4)))
    return gpd.GeoDataFrame({"class": classes}, geometry=geoms, crs="EPSG:32633")


def eo_like(
    path: str | os.PathLike[str],
    *,
    tiles: tuple[int, int] = (2, 2),
    tile_size: int = 512,
    n_dates: int = 2,
    n_fields: int = 120,
    seed: int = 0,
) -> EOData:
    """Write a STAC catalog of COG scenes and a GeoParquet label file under ``path``.

    Examples
    --------
    >>> import earthstream as es
    >>> data = es.datasets.eo_like(tmp_path / "eo", tiles=(1, 1), tile_size=128, n_dates=1)
    >>> [p.name for p in data.cogs]
    ['t0-0_d0_red.tif', 't0-0_d0_green.tif', 't0-0_d0_nir.tif']
    >>> data.catalog.name, data.labels.name
    ('catalog.json', 'labels.parquet')
    """
    import pystac
    import rasterio
    from affine import Affine
    from rasterio.features import rasterize
    from shapely.geometry import box, mapping

    from ..geo._grid import reproject_bounds

    root = Path(path)
    (root / "cogs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    res, x0, y0 = 10.0, 500000.0, 4990000.0
    step = tile_size * res * 0.9  # tiles overlap by 10%
    ny, nx = tiles
    extent = (
        x0,
        y0 - step * (ny - 1) - tile_size * res,
        x0 + step * (nx - 1) + tile_size * res,
        y0,
    )
    frame = _labels(rng, extent, n_fields)
    frame = frame.iloc[np.argsort(frame.geometry.bounds["miny"].to_numpy())].reset_index(drop=True)
    shapes = list(zip(frame.geometry, frame["class"], strict=True))

    catalog = pystac.Catalog(id="eo-like", description="earthstream generated EO scenes")
    cogs = []
    for d in range(n_dates):
        when = np.datetime64("2024-05-01") + np.timedelta64(16 * d, "D")
        for ty in range(ny):
            for tx in range(nx):
                transform = Affine(res, 0, x0 + tx * step, 0, -res, y0 - ty * step)
                grid_shape = (tile_size, tile_size)
                cls = rasterize(shapes, out_shape=grid_shape, transform=transform, dtype="uint8")
                sid = f"t{ty}-{tx}_d{d}"
                bounds = (
                    transform.c,
                    transform.f - tile_size * res,
                    transform.c + tile_size * res,
                    transform.f,
                )
                ll = reproject_bounds(bounds, "EPSG:32633", "EPSG:4326")
                item = pystac.Item(
                    id=sid,
                    geometry=mapping(box(*ll)),
                    bbox=list(ll),
                    datetime=pystac.utils.str_to_datetime(f"{when}T10:00:00Z"),
                    properties={"proj:code": "EPSG:32633", "gsd": res, "platform": "eo-like"},
                    stac_extensions=[
                        "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                    ],
                )
                for b, (name, (wavelength, _)) in enumerate(_BANDS.items()):
                    base = np.array([_CLASS_REFLECTANCE[int(c)][b] for c in range(4)])[cls]
                    noise = rng.normal(0, 0.01, grid_shape)
                    value = np.clip((base * (1 + 0.1 * d) + noise) * 1e4, 1, 65535).astype(
                        np.uint16
                    )
                    value[:, : tile_size // 16] = (
                        0 if (tx + d) % 2 == 0 else value[:, : tile_size // 16]
                    )
                    out = root / "cogs" / f"{sid}_{name}.tif"
                    with rasterio.open(
                        out, "w", driver="COG", width=tile_size, height=tile_size, count=1,
                        dtype="uint16", crs="EPSG:32633", transform=transform, nodata=0,
                        blocksize=256, compress="deflate", overviews="auto",
                    ) as dst:  # fmt: skip
                        dst.write(value[None])
                        dst.scales, dst.offsets = (1e-4,), (0.0,)
                    cogs.append(out)
                    item.add_asset(
                        name,
                        pystac.Asset(
                            href=str(out),
                            media_type=pystac.MediaType.COG,
                            roles=["data"],
                            extra_fields={
                                "proj:transform": list(transform)[:6],
                                "proj:shape": list(grid_shape),
                                "raster:bands": [
                                    {"nodata": 0, "data_type": "uint16", "scale": 1e-4}
                                ],
                                "eo:bands": [{"name": name, "center_wavelength": wavelength}],
                            },
                        ),
                    )
                catalog.add_item(item)
    catalog.normalize_hrefs(str(root / "stac"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    labels = root / "labels.parquet"
    frame.to_crs("EPSG:4326").to_parquet(labels, write_covering_bbox=True, row_group_size=32)
    return EOData(root, root / "stac" / "catalog.json", labels, tuple(cogs))
