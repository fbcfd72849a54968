"""Shared fixtures: small real Zarr stores written by the real writers, and reference reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earthstream import Batch
from earthstream.datasets import era5_like

SMALL = {"n_times": 10, "n_lat": 16, "n_lon": 32}


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stores")


@pytest.fixture(scope="session")
def era5_v3(store_dir: Path) -> Path:
    """Zarr v3, one time step per chunk, zstd (the default layout)."""
    return era5_like(store_dir / "v3.zarr", **SMALL)


@pytest.fixture(scope="session")
def era5_tiled(store_dir: Path) -> Path:
    """Zarr v3 with chunks that do not divide the dims (ragged edge chunks)."""
    return era5_like(
        store_dir / "tiled.zarr",
        n_times=11,
        n_lat=15,
        n_lon=29,
        chunks={"time": 3, "lat": 7, "lon": 10, "level": 2},
        codec="blosc-lz4",
    )


@pytest.fixture(scope="session")
def era5_v2(store_dir: Path) -> Path:
    """Zarr v2 with ragged chunks."""
    return era5_like(
        store_dir / "v2.zarr",
        n_times=9,
        n_lat=15,
        n_lon=20,
        chunks={"time": 2, "lat": 5, "lon": 8},
        zarr_format=2,
    )


@pytest.fixture(scope="session")
def era5_sharded(store_dir: Path) -> Path:
    """Zarr v3 sharded: shards of 2 x 2 x 2 inner chunks."""
    return era5_like(
        store_dir / "sharded.zarr",
        n_times=8,
        n_lat=14,
        n_lon=20,
        chunks={"time": 2, "lat": 7, "lon": 5},
        shards={"time": 4, "lat": 14, "lon": 10},
    )


@pytest.fixture(scope="session")
def open_xr() -> Callable[[Path], Any]:
    import xarray as xr

    cache: dict[Path, Any] = {}

    def _open(path: Path) -> Any:
        if path not in cache:
            cache[path] = xr.open_zarr(path, chunks=None).load()
        return cache[path]

    return _open


def assert_batch_matches(batch: Batch, ds: Any, window: dict[str, int], pad: bool = False) -> None:
    """Every sample of ``batch`` equals xarray's ``isel`` of the same window."""
    for name, data in batch.items():
        var = ds[name]
        sample_dims = batch.dims[name]
        assert data.shape[0] == batch.size
        for i in range(batch.size):
            index = {}
            for dim in var.dims:
                start = int(batch.starts[dim][i])
                if dim in window:
                    index[dim] = slice(start, start + window[dim])
                else:
                    index[dim] = start
            ref = var.isel(index)
            assert tuple(ref.dims) == sample_dims, (ref.dims, sample_dims)
            got = data[i]
            if pad:
                region = tuple(slice(0, n) for n in ref.shape)
                np.testing.assert_array_equal(got[region], ref.values)
                mask = batch.mask_for(name)
                assert mask is not None
                assert mask[i][region].all()
                assert int(mask[i].sum()) == ref.size
                padded = got[~mask[i]]
                assert np.isnan(padded).all()
            else:
                np.testing.assert_array_equal(got, ref.values)
        for dim, values in batch.coords.items():
            np.testing.assert_array_equal(values, ds[dim].values[batch.starts[dim]])


# -- geospatial fixtures (tests/geo, tests/stac, tests/vector) --------------------------
@pytest.fixture(scope="session")
def geo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("geo")


@pytest.fixture(scope="session")
def scenes(geo_dir: Path) -> list[Any]:
    from tests._geodata import write_scenes

    return write_scenes(geo_dir / "cogs")


@pytest.fixture(scope="session")
def stac_items(scenes: list[Any]) -> list[Any]:
    from tests._geodata import stac_items as make

    return make(scenes)


@pytest.fixture(scope="session")
def catalog(geo_dir: Path, stac_items: list[Any]) -> Path:
    from tests._geodata import write_catalog

    return write_catalog(geo_dir / "catalog", stac_items)


@pytest.fixture(scope="session")
def labels(geo_dir: Path) -> dict[str, Path]:
    from tests._geodata import write_labels

    return write_labels(geo_dir / "labels")


@pytest.fixture(scope="session")
def nginx(geo_dir: Path, scenes: list[Any], labels: dict[str, Path]) -> Any:
    """nginx serving the geo test data (COGs, labels, catalogs) on loopback."""
    import os

    from tests._servers import find_nginx, nginx_server

    if find_nginx() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; `make test` installs nginx-light.")
        pytest.skip("nginx is not installed (make test installs nginx-light)")
    server = nginx_server(geo_dir)
    yield server
    server.stop()
