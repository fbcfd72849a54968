"""Grids, windows and CRSs; the geo layer is imported lazily."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from earthstream.errors import CRSError, WindowError
from earthstream.geo import GridSpec, PixelWindow, crs_units, normalize_crs, reproject_bounds


def test_import_earthstream_does_not_load_gdal() -> None:
    code = (
        "import sys, earthstream\n"
        "assert 'rasterio' not in sys.modules and 'pyproj' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_crs_normalization() -> None:
    from pyproj import CRS

    assert normalize_crs(CRS.from_epsg(32633).to_wkt()) == "EPSG:32633"
    assert normalize_crs({"$schema": None, **CRS.from_epsg(4326).to_json_dict()}) == "EPSG:4326"
    with pytest.raises(CRSError, match="EPSG code"):
        normalize_crs("not a crs")
    with pytest.raises(CRSError, match="crs='EPSG:4326'"):
        normalize_crs(None)
    assert crs_units("EPSG:3857") == "metre"


def test_grid_snapping_windows_and_pickling() -> None:
    g = GridSpec.from_bounds("EPSG:32633", (500003, 4990001, 500997, 4990999), 10)
    assert g.bounds == (500000.0, 4990000.0, 501000.0, 4991000.0) and g.shape == (100, 100)
    w = g.window_from_bounds((500015, 4990500, 500035, 4990515))  # partial pixels round outward
    assert w == PixelWindow(row=48, col=1, height=2, width=3)
    sub = g.window(w)
    assert g.aligned_with(sub) == (48, 1)
    assert g.aligned_with(GridSpec("EPSG:32633", (10, 0, 500005, 0, -10, 4991000), (4, 4))) is None
    assert g.decimated(50, 50).res == (20.0, 20.0)
    assert pickle.loads(pickle.dumps(g)) == g and hash(g) == hash(GridSpec(*g.__dict__.values()))
    assert "EPSG:32633" in repr(g)
    with pytest.raises(WindowError, match="right > left"):
        GridSpec.from_bounds("EPSG:4326", (1, 1, 0, 2), 0.1)
    with pytest.raises(WindowError, match="6 numbers"):
        GridSpec("EPSG:4326", (1, 0, 0), (1, 1))


def test_bounds_reprojection_is_densified() -> None:
    utm = (400000, 4900000, 600000, 5100000)
    ll = reproject_bounds(utm, "EPSG:32633", "EPSG:4326")
    corners_only = reproject_bounds(utm, "EPSG:32633", "EPSG:4326", densify=2)
    assert ll[3] >= corners_only[3]  # the curved top edge bulges north of its corners
    assert reproject_bounds(ll, 4326, 4326) == ll
