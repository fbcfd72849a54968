"""STAC items from a static catalog, an ItemCollection, stac-geoparquet and a STAC API on
loopback (real pystac-client), and the projection/raster/eo metadata read from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import MissingProjectionError, StoreNotFoundError, UnsupportedFormatError
from earthstream.stac import asset_raster, raster_assets
from tests._geodata import OFFSET, SCALE, UTM, item_dicts, write_item_collection
from tests._servers import StacApiServer


def _ids(items) -> list[str]:
    return [i["id"] for i in items]


def test_static_catalog_with_relative_hrefs(catalog, scenes) -> None:
    items = es.load_items(catalog)
    assert sorted(_ids(items)) == sorted(s.id for s in scenes)
    for item in items:  # relative asset hrefs were resolved against the item file
        scene = next(s for s in scenes if s.id == item["id"])
        assert item["assets"]["red"]["href"] == str(scene.assets["red"])
    assert es.load_items(catalog, max_items=2) == items[:2]


def test_item_collection_and_objects(geo_dir, stac_items) -> None:
    path = write_item_collection(geo_dir / "items.json", stac_items)
    from_file = es.load_items(path)
    assert _ids(from_file) == [i.id for i in stac_items]
    assert _ids(es.load_items(stac_items)) == _ids(from_file)
    assert _ids(es.load_items(stac_items[0])) == [stac_items[0].id]
    assert _ids(es.load_items(item_dicts(stac_items))) == _ids(from_file)


def test_unsupported_and_missing(geo_dir) -> None:
    bad = geo_dir / "notstac.json"
    bad.write_text(json.dumps({"type": "Polygon", "coordinates": []}))
    with pytest.raises(UnsupportedFormatError, match="stac-geoparquet"):
        es.load_items(bad)
    with pytest.raises(StoreNotFoundError):
        es.load_items(geo_dir / "nothing.json")


def test_projection_raster_eo_metadata(stac_items, scenes) -> None:
    items = item_dicts(stac_items)
    assert raster_assets(items[0]) == ["red", "nir"]  # the thumbnail is left out
    for item, scene in zip(items, scenes, strict=True):
        ref = asset_raster(item, "red")
        assert ref.grid.crs == scene.crs  # proj:code on some items, proj:epsg on another
        assert ref.grid.transform == scene.transform and ref.grid.shape == scene.shape
        (band,) = ref.bands
        assert (band.name, band.nodata, band.scale, band.offset) == ("red", 0.0, SCALE, OFFSET)
        assert band.center_wavelength == pytest.approx(0.665) and band.gsd == 10.0
        assert ref.datetime == np.datetime64(scene.datetime.rstrip("Z"), "ns")
    assert "proj:epsg" in items[1]["properties"] and "proj:code" in items[0]["properties"]


def test_stac_11_bands_layout(stac_items) -> None:
    item = item_dicts(stac_items)[0]
    asset = item["assets"]["nir"]
    for key in ("raster:bands", "eo:bands"):
        asset.pop(key)
    asset.update(
        {"nodata": 0, "data_type": "uint16",
         "bands": [{"name": "nir", "eo:center_wavelength": 0.842, "raster:scale": 0.5}]}
    )  # fmt: skip
    (band,) = asset_raster(item, "nir").bands
    assert (band.nodata, band.scale, band.center_wavelength) == (0.0, 0.5, 0.842)


def test_missing_projection_says_what_to_pass(stac_items, scenes) -> None:
    item = item_dicts(stac_items)[0]
    for key in ("proj:code", "proj:epsg"):
        item["properties"].pop(key, None)
    with pytest.raises(MissingProjectionError, match=r"projection=.*missing_projection='read'"):
        asset_raster(item, "red")
    with pytest.raises(MissingProjectionError):
        es.stream_chips([item], chip_size=32)
    read = asset_raster(item, "red", missing_projection="read")  # from the COG header
    assert read.grid.crs == UTM
    given = asset_raster(item, "red", projection={"crs": 32633})
    assert given.grid == read.grid
    stream = es.stream_chips([item], chip_size=32, projection={"crs": "EPSG:32633"})
    assert stream.grid.crs == UTM


def test_freeze_to_stac_geoparquet_and_back(geo_dir, stac_items) -> None:
    path = es.freeze_items(stac_items, geo_dir / "frozen.parquet")
    back = es.load_items(path)
    assert _ids(back) == [i.id for i in stac_items]
    for a, b in zip(back, item_dicts(stac_items), strict=True):
        assert a["assets"]["red"]["href"] == b["assets"]["red"]["href"]
        assert asset_raster(a, "nir").grid == asset_raster(b, "nir").grid
        assert asset_raster(a, "nir").bands == asset_raster(b, "nir").bands


@pytest.fixture(scope="module")
def stac_api(stac_items):
    items = item_dicts(stac_items)
    collection = {
        "type": "Collection", "id": "testsat", "stac_version": "1.0.0", "description": "t",
        "license": "proprietary", "links": [],
        "extent": {"spatial": {"bbox": [[14.9, 44.9, 15.2, 45.1]]},
                   "temporal": {"interval": [["2024-06-01T00:00:00Z", None]]}},
    }  # fmt: skip
    server = StacApiServer(items, [collection])
    yield server
    server.stop()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_api_search_by_bbox_and_datetime(stac_api, stac_items, method, geo_dir) -> None:
    found = es.search_items(stac_api.url, collections="testsat", method=method, limit=1)
    assert sorted(_ids(found)) == sorted(i.id for i in stac_items)  # paged, one per page
    june1 = es.search_items(
        stac_api.url, datetime="2024-06-01T00:00:00Z/2024-06-02T00:00:00Z", method=method
    )
    assert sorted(_ids(june1)) == ["geo-c", "utm-a"]
    west = es.search_items(stac_api.url, bbox=[14.9, 44.9, 15.015, 45.1], method=method)
    assert _ids(west) == ["utm-a"]
    assert ("POST" if method == "POST" else "GET", "/search") in stac_api.requests
    by_property = es.search_items(
        stac_api.url, query={"platform": {"eq": "testsat-2"}}, method=method
    )
    assert _ids(by_property) == ["utm-b"]
    # a search result frozen to stac-geoparquet streams without the API
    frozen = es.freeze_items(found, geo_dir / f"search-{method}.parquet")
    stream = es.stream_chips(frozen, chip_size=32, crs=UTM, resolution=20)
    assert stream.channels == ("red", "nir") and len(stream.plan.scenes) == 3


def test_search_with_pystac_client_itemsearch(stac_api) -> None:
    from pystac_client import Client

    search = Client.open(stac_api.url).search(bbox=[15.0, 44.9, 15.1, 45.1], max_items=10)
    assert len(es.load_items(search)) == 3
