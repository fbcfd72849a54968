"""Vector labels: GeoParquet (bbox covering, row-group skipping) and FlatGeobuf (spatial
index) read by bbox, locally and over HTTP; masks equal rasterio.features.rasterize;
Natural Earth (shipped with pyogrio) as real public data; typed errors."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.features import rasterize

import earthstream as es
from earthstream.errors import CRSError, UnsupportedGeometryError, VariableNotFoundError
from earthstream.geo import GridSpec, PixelWindow, reproject_bounds
from tests._geodata import UTM, WGS84, natural_earth, pyogrio_fixture

BOX = (15.0, 44.95, 15.03, 44.97)


def _expected_ids(frame, box):
    return set(frame.index[frame.intersects(shapely.box(*box))])


@pytest.mark.parametrize("kind", ["parquet", "fgb"])
def test_bbox_reads_return_the_intersecting_features(labels, kind) -> None:
    vec = es.open_vector(labels[kind], "class")
    assert vec.crs == WGS84 and "class" in vec.columns
    frame = gpd.read_parquet(labels["parquet"])
    features = vec.read(BOX)
    got = {g.wkb for g in features.geometries}
    want = {frame.geometry[i].wkb for i in _expected_ids(frame, BOX)}
    # bbox filters keep features whose bounding box hits, a superset of true intersections
    assert want <= got
    boxes = shapely.bounds(features.geometries)
    assert ((boxes[:, 0] <= BOX[2]) & (boxes[:, 2] >= BOX[0])).all()
    assert len(features.geometries) < len(frame)
    assert set(features.values.tolist()) <= {1, 2, 3, 4}


def test_geoparquet_skips_row_groups_on_bbox_statistics(labels) -> None:
    vec = es.open_vector(labels["parquet"])
    everything = vec.read()
    assert everything.row_groups_read == everything.row_groups_total == 7  # 61 rows / 10
    south = vec.read((15.0, 44.9, 15.1, 44.955))
    assert 0 < south.row_groups_read < south.row_groups_total
    assert len(south.geometries) < len(everything.geometries)
    nothing = vec.read((0.0, 0.0, 1.0, 1.0))
    assert nothing.row_groups_read == 0 and len(nothing.geometries) == 0


def test_remote_geoparquet_and_flatgeobuf(nginx, labels) -> None:
    local = es.open_vector(labels["parquet"], "class").read(BOX)
    nginx.clear_log()
    http = {"client_options": {"allow_http": True}}  # obstore refuses plain http by default
    remote_pq = es.open_vector(nginx.url(labels["parquet"]), "class", storage_options=http)
    remote_pq = remote_pq.read(BOX)
    assert [g.wkb for g in remote_pq.geometries] == [g.wkb for g in local.geometries]
    assert all(r.status == 206 for r in nginx.requests() if r.method == "GET")  # byte ranges
    remote_fgb = es.open_vector(nginx.url(labels["fgb"]), "class").read(BOX)
    assert {g.wkb for g in remote_fgb.geometries} == {g.wkb for g in local.geometries}


@pytest.mark.parametrize(("crs", "res"), [(UTM, 5.0), (WGS84, 0.00005)])
@pytest.mark.parametrize("all_touched", [False, True])
@pytest.mark.parametrize("kind", ["parquet", "parquet_utm", "fgb"])
def test_rasterized_masks_equal_rasterio(labels, crs, res, all_touched, kind) -> None:
    vec = es.open_vector(labels[kind], "class")
    grid = GridSpec.from_bounds(crs, reproject_bounds((15.0, 44.95, 15.08, 45.0), WGS84, crs), res)
    frame = gpd.read_parquet(labels["parquet"]).to_crs(crs)
    if kind == "parquet_utm":  # reprojected twice: compare against the file's own geometries
        frame = gpd.read_parquet(labels["parquet_utm"]).to_crs(crs)
    shapes = list(zip(frame.geometry, frame["class"], strict=True))
    index = vec.index(crs, grid.bounds)
    for row, col in [(0, 0), (100, 200), (grid.height // 2, grid.width // 2)]:
        chip = grid.window(PixelWindow(row, col, 64, 64))
        got = index.rasterize(chip, all_touched=all_touched)
        ref = rasterize(shapes, out_shape=chip.shape, transform=chip.affine,
                        all_touched=all_touched, dtype="uint8")  # fmt: skip
        np.testing.assert_array_equal(got, ref)
    assert vec.index(crs, grid.bounds) is index  # one index per process


def test_text_attribute_becomes_classes(labels) -> None:
    vec = es.open_vector(labels["parquet"], "kind")
    assert vec.classes == ("crop", "forest", "road", "water")
    frame = gpd.read_parquet(labels["parquet"])
    values = vec.read().values
    lookup = {c: i + 1 for i, c in enumerate(vec.classes)}
    assert values.tolist() == [lookup[k] for k in frame["kind"]]


def test_natural_earth_countries() -> None:
    shp = natural_earth()
    if shp is None:
        pytest.skip("pyogrio's Natural Earth test data is not installed")
    vec = es.open_vector(shp, "iso_a3")
    assert vec.crs == WGS84 and len(vec.classes) > 150
    grid = GridSpec.from_bounds(WGS84, (5.0, 45.0, 16.0, 55.0), 0.05)  # central Europe
    got = vec.rasterize(grid, dtype="uint16")
    frame = gpd.read_file(shp)
    lookup = {c: i + 1 for i, c in enumerate(vec.classes)}
    shapes = [(g, lookup[c]) for g, c in zip(frame.geometry, frame["iso_a3"], strict=True)]
    ref = rasterize(shapes, out_shape=grid.shape, transform=grid.affine, dtype="uint16")
    np.testing.assert_array_equal(got, ref)
    assert lookup["DEU"] in np.unique(got) and lookup["CHE"] in np.unique(got)
    # the same countries on a UTM grid
    utm = GridSpec.from_bounds("EPSG:32632", (300000, 5200000, 700000, 5600000), 5000)
    ref_utm = rasterize(
        [(g, v) for g, (_, v) in zip(frame.to_crs("EPSG:32632").geometry, shapes, strict=True)],
        out_shape=utm.shape, transform=utm.affine, dtype="uint16",
    )  # fmt: skip
    np.testing.assert_array_equal(vec.rasterize(utm, dtype="uint16"), ref_utm)


def test_unsupported_geometries_and_missing_crs(labels, tmp_path) -> None:
    curved = pyogrio_fixture("curvepolygon.gpkg")
    if curved is not None:  # real curved geometries from pyogrio's test fixtures
        with pytest.raises(UnsupportedGeometryError, match="CONVERT_TO_LINEAR"):
            es.open_vector(curved).read()
    polygons_only = es.open_vector(labels["parquet"], geometry_types=("polygon",))
    with pytest.raises(UnsupportedGeometryError, match=r"LineString.*'line'"):
        polygons_only.read()
    with pytest.raises(VariableNotFoundError, match="Did you mean 'class'"):
        es.open_vector(labels["parquet"], "clas")
    frame = gpd.read_parquet(labels["parquet"]).set_crs(None, allow_override=True)
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        frame.to_file(tmp_path / "nocrs.fgb", driver="FlatGeobuf", engine="pyogrio")
    with pytest.raises(CRSError, match="crs='EPSG:4326'"):
        es.open_vector(tmp_path / "nocrs.fgb")
    assert es.open_vector(tmp_path / "nocrs.fgb", crs=4326).crs == WGS84
