"""Every source passes the conformance kit (:class:`earthstream.testing.SourceTests`).

Each subclass builds one source and gives the same values from a reader that
does not share its code: xarray for Zarr (local v2, v3, sharded, over HTTP
through nginx), rasterio for a COG, the arrays themselves for ``ArraySource``.
``XarraySource`` reads through xarray itself, so its reference (xarray's read of
the whole variable) checks its block plumbing: regions, dtypes, ``out``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

import earthstream as es
from earthstream.testing import SourceTests
from tests._servers import NginxServer, find_nginx, nginx_server

HTTP = {"client_options": {"allow_http": True}, "retry": {"base_delay": 0.001}}


def _xarray_values(path: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    ds = xr.open_zarr(path, chunks=None)
    return {str(name): np.asarray(v.values) for name, v in ds.data_vars.items()}


def _xarray_coords(path: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    ds = xr.open_zarr(path, chunks=None)
    return {str(d): np.asarray(ds[d].values) for d in ds.dims if d in ds.coords}


@pytest.fixture(scope="module")
def holes(era5_v2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v2 store with one chunk of ``t2m`` deleted (not stored: xarray reads NaN)."""
    path = tmp_path_factory.mktemp("conformance") / "holes.zarr"
    shutil.copytree(era5_v2, path)
    (path / "t2m" / "1.0.0").unlink()
    return path


class ZarrCase(SourceTests):
    """A local Zarr store (the ``path`` fixture), xarray's read of it as the reference."""

    capabilities = frozenset({"stats", "locate"})

    @pytest.fixture(scope="class")
    @classmethod
    def source(cls, path: Path) -> es.ZarrSource:
        return es.open_zarr(path)

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, path: Path) -> dict[str, np.ndarray]:
        return _xarray_values(path)

    @pytest.fixture(scope="class")
    @classmethod
    def reference_coords(cls, path: Path) -> dict[str, np.ndarray]:
        return _xarray_coords(path)


class TestZarrV2(ZarrCase):
    """Zarr v2, ragged chunks, a chunk missing."""

    missing = (("t2m", (1, 0, 0)),)

    @pytest.fixture(scope="class")
    @classmethod
    def path(cls, holes: Path) -> Path:
        return holes


class TestZarrV3(ZarrCase):
    """Zarr v3, chunks that do not divide the dims, blosc."""

    @pytest.fixture(scope="class")
    @classmethod
    def path(cls, era5_tiled: Path) -> Path:
        return era5_tiled


class TestZarrSharded(ZarrCase):
    """Zarr v3 sharded: the source's chunks are the inner chunks."""

    @pytest.fixture(scope="class")
    @classmethod
    def path(cls, era5_sharded: Path) -> Path:
        return era5_sharded


class TestZarrSelected(SourceTests):
    """A Zarr source opened from a sliced ``xarray.Dataset`` carries its selection."""

    capabilities = frozenset({"stats", "locate"})

    @pytest.fixture(scope="class")
    @classmethod
    def source(cls, era5_v3: Path) -> es.ZarrSource:
        import xarray as xr

        ds = xr.open_zarr(era5_v3, chunks=None).isel(lat=slice(2, 11), time=slice(1, 7))
        source = es.open_zarr(ds[["t2m", "u10"]])
        assert isinstance(source, es.ZarrSource) and source.selection
        return source

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, era5_v3: Path) -> dict[str, np.ndarray]:
        return _xarray_values(era5_v3)  # chunks are the whole store's


@pytest.fixture(scope="module")
def nginx(era5_v3: Path, era5_sharded: Path) -> Iterator[NginxServer]:
    if find_nginx() is None:
        pytest.fail("nginx is not installed; `make test` installs nginx-light.")
    server = nginx_server(era5_v3.parent)  # both stores live in one folder
    yield server
    server.stop()


class TestZarrHTTP(SourceTests):
    """Zarr v3 sharded over HTTP (nginx): fetch and decode in two steps."""

    capabilities = frozenset({"split", "stats", "locate"})
    max_chunks = 16

    @pytest.fixture(scope="class")
    @classmethod
    def source(cls, nginx: NginxServer, era5_sharded: Path) -> es.ZarrSource:
        return es.open_zarr(f"{nginx.base_url}/{era5_sharded.name}", storage_options=HTTP)

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, era5_sharded: Path) -> dict[str, np.ndarray]:
        return _xarray_values(era5_sharded)


class TestArraySource(SourceTests):
    """NumPy arrays cut into a chunk grid; the arrays are the reference."""

    @pytest.fixture(scope="class")
    @classmethod
    def arrays(cls) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(3)
        return {
            "a": rng.normal(size=(7, 10, 9)).astype("f4"),
            "b": rng.integers(0, 100, size=(10, 9)).astype(">i4"),  # big-endian input
        }

    @pytest.fixture(scope="class")
    @classmethod
    def source(cls, arrays: Mapping[str, np.ndarray]) -> es.ArraySource:
        return es.ArraySource(
            {"a": (("t", "y", "x"), arrays["a"]), "b": (("y", "x"), arrays["b"])},
            chunks={"t": 3, "y": 4, "x": 5},
            coords={"t": np.arange(7), "y": np.linspace(0, 1, 10)},
        )

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(arrays)


class TestXarraySource(SourceTests):
    """The general path: a NetCDF file (packed int16) read through xarray block by block."""

    @pytest.fixture(scope="class")
    @classmethod
    def path(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        import xarray as xr

        rng = np.random.default_rng(5)
        t = rng.normal(280.0, 10.0, (6, 10, 12))
        t[rng.random(t.shape) < 0.05] = np.nan
        ds = xr.Dataset(
            {"t": (("time", "lat", "lon"), t), "q": (("lat", "lon"), rng.random((10, 12)))},
            coords={"lat": np.linspace(45, -45, 10), "lon": np.arange(12) * 30.0},
        )
        ds["t"].encoding.update(
            dtype="int16", scale_factor=0.01, add_offset=280.0, _FillValue=np.int16(-32768),
            chunksizes=(2, 5, 12),
        )  # fmt: skip
        path = tmp_path_factory.mktemp("nc") / "t.nc"
        ds.to_netcdf(path, engine="h5netcdf")
        return path

    @pytest.fixture(scope="class")
    @classmethod
    def source(cls, path: Path) -> es.XarraySource:
        import xarray as xr

        source = es.open_xarray(xr.open_dataset(path, engine="h5netcdf"))
        assert isinstance(source, es.XarraySource)
        return source

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, path: Path) -> dict[str, np.ndarray]:
        import xarray as xr

        ds = xr.open_dataset(path, engine="h5netcdf").load()
        return {str(n): np.asarray(v.values) for n, v in ds.data_vars.items()}


class TestTiffSource(SourceTests):
    """A COG (deflate, predictor 2, 4 bands, partial edge tiles) with sparse tiles; rasterio
    reads the reference."""

    capabilities = frozenset({"stats", "locate"})
    # 4 x 5 tiles; written: (0, 0) and rows 1-3 x cols 2-4; the others are sparse
    missing = tuple(
        ("band_data", (0, r, c))
        for r in range(4)
        for c in range(5)
        if (r, c) != (0, 0) and not (r >= 1 and c >= 2)
    )

    @pytest.fixture(scope="class")
    @classmethod
    def path(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        import rasterio
        from affine import Affine
        from rasterio.windows import Window

        path = tmp_path_factory.mktemp("tiff") / "sparse.tif"
        h, w, block = 200, 300, 64
        data = (np.arange(4 * h * w, dtype=np.uint16).reshape(4, h, w) % 997) + 3
        profile = {
            "driver": "GTiff", "tiled": True, "blockxsize": block, "blockysize": block,
            "compress": "deflate", "predictor": 2, "sparse_ok": True,
        }  # fmt: skip
        with rasterio.open(
            path, "w", **profile, width=w, height=h, count=4, dtype="uint16",
            crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4000000), nodata=0,
        ) as dst:  # fmt: skip
            dst.write(data[:, :block, :block], window=Window(0, 0, block, block))
            dst.write(
                data[:, block:, 2 * block :],
                window=Window(2 * block, block, w - 2 * block, h - block),
            )
        return path

    @pytest.fixture(scope="class")
    @classmethod
    def source(cls, path: Path) -> es.TiffSource:
        return es.open_tiff(path)

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, path: Path) -> dict[str, np.ndarray]:
        import rasterio

        with rasterio.open(path) as ds:
            return {"band_data": ds.read()}
