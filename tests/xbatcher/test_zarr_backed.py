"""The drop-in on Zarr-backed Datasets: every batch as xbatcher 0.4 builds it, each chunk
decoded once.

The stores are written with xarray's ``to_zarr`` (float32, a variable on pressure
levels, a CF-packed int16 variable with ``scale_factor``/``add_offset``/``_FillValue``
and missing values, a static field); the oracle is ``xbatcher.BatchGenerator`` on the
same Dataset (xbatcher reads through xarray).  Decode-once is checked against the
chunks the patches touch, computed here from the store's chunk grid.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

xr = pytest.importorskip("xarray")
xbatcher = pytest.importorskip("xbatcher")

from earthstream.errors import ConfigError  # noqa: E402
from earthstream.xbatcher import BatchAccessor, BatchGenerator, register_accessor  # noqa: E402

CHUNKS = {"time": 2, "level": 3, "lat": 8, "lon": 12}


def _dataset(seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    n_time, n_level, n_lat, n_lon = 12, 3, 32, 48
    time = pd.date_range("2021-03-01", periods=n_time, freq="6h")
    lat = np.linspace(88.0, -88.0, n_lat)
    lon = np.arange(n_lon) * 7.5
    t2m = (280 + 10 * rng.standard_normal((n_time, n_lat, n_lon))).astype(np.float32)
    packed = 250 + 30 * rng.random((n_time, n_lat, n_lon))
    packed[rng.random(packed.shape) < 0.05] = np.nan  # -> _FillValue on disk
    z = rng.standard_normal((n_time, n_level, n_lat, n_lon)).astype(np.float32)
    lsm = (rng.random((n_lat, n_lon)) > 0.5).astype(np.float32)
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), t2m, {"units": "K", "long_name": "2 m temperature"}),
            "skt": (("time", "lat", "lon"), packed, {"units": "K"}),
            "z": (("time", "level", "lat", "lon"), z),
            "lsm": (("lat", "lon"), lsm),
        },
        coords={
            "time": time,
            "level": ("level", [500, 700, 850], {"units": "hPa"}),
            "lat": ("lat", lat, {"units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
        attrs={"title": "xbatcher drop-in test"},
    )
    return ds


@pytest.fixture(scope="module")
def zarr_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xb") / "cube.zarr"
    ds = _dataset()
    encoding = {name: {"chunks": tuple(CHUNKS[d] for d in ds[name].dims)} for name in ds.data_vars}
    encoding["skt"].update(
        {"dtype": "int16", "scale_factor": 0.01, "add_offset": 265.0, "_FillValue": -32767}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, encoding=encoding, consolidated=True)
    return path


def _opened(path: Path, how: str) -> Any:
    if how == "dask":
        return xr.open_zarr(path)
    ds = xr.open_zarr(path, chunks=None)
    if how == "sliced":
        return ds.sel(lat=slice(60, -60)).isel(time=slice(1, 11), lon=slice(3, 45))
    return ds


CONFIGS: dict[str, dict[str, Any]] = {
    "tiles, batch_dims time": {"input_dims": {"lat": 8, "lon": 12}, "batch_dims": {"time": 4}},
    "tiles with overlap, levels stacked into sample": {
        "input_dims": {"lat": 8, "lon": 16},
        "input_overlap": {"lat": 2, "lon": 4},
    },
    "concatenated inputs": {
        "input_dims": {"lat": 8, "lon": 8},
        "batch_dims": {"time": 2},
        "concat_input_dims": True,
    },
    "concatenated, a dim in input_dims and batch_dims": {
        "input_dims": {"lat": 4, "lon": 12},
        "batch_dims": {"lat": 8, "time": 3},
        "concat_input_dims": True,
    },
}


def _pairs(ours: BatchGenerator, theirs: Any) -> Iterator[tuple[Any, Any]]:
    assert len(ours) == len(theirs)
    n = 0
    for a, b in zip(ours, theirs, strict=True):
        n += 1
        yield a, b
    assert n == len(theirs)


def _chunks_touched(bgen: BatchGenerator, name: str) -> set[tuple[int, ...]]:
    """Every chunk of ``name`` some patch reads, from the store's chunk grid (independent
    of the engine: patches from xbatcher's own schema)."""
    ds = bgen.ds if hasattr(bgen.ds, "data_vars") else bgen.ds.to_dataset()
    array = ds[name]
    chunks = array.encoding["preferred_chunks"]
    schema = xbatcher.BatchSchema(
        ds,
        input_dims=bgen.input_dims,
        input_overlap=bgen.input_overlap,
        batch_dims=bgen.batch_dims,
        concat_input_bins=bgen.concat_input_dims,
    )
    origin = dict.fromkeys(array.dims, 0)
    source = bgen.source
    assert source is not None
    for dim, sl in source.selection.items():  # where the Dataset's selection starts
        origin[dim] = sl.start
    touched: set[tuple[int, ...]] = set()
    for selectors in schema.selectors.values():
        for selector in selectors:
            ranges = []
            for dim in array.dims:
                sl = selector.get(dim, slice(0, array.sizes[dim]))
                lo, hi = origin[dim] + sl.start, origin[dim] + sl.stop - 1
                ranges.append(range(lo // chunks[dim], hi // chunks[dim] + 1))
            touched.update(itertools.product(*ranges))
    return touched


@pytest.mark.parametrize("how", ["no dask", "dask", "sliced"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_batch_is_xbatchers(zarr_path: Path, how: str, config: str) -> None:
    ds = _opened(zarr_path, how)
    kwargs = CONFIGS[config]
    ours = BatchGenerator(ds, **kwargs)
    theirs = xbatcher.BatchGenerator(ds, **kwargs)
    for a, b in _pairs(ours, theirs):
        xr.testing.assert_identical(a, b)
        assert a["skt"].dtype == np.float64  # xarray's decoded dtype for packed int16
    # the data variables with every sliced dim come from the store through the fast path
    assert type(ours.source).__name__ == "ZarrSource"
    sliced = set(kwargs.get("input_dims", {})) | set(kwargs.get("batch_dims", {}))
    for name in ("t2m", "skt", "z"):
        assert ours.paths[name] == "engine (ZarrSource)"
    assert ours.paths["lsm"].startswith("xarray") == (not sliced <= {"lat", "lon"})
    # decode-once: every chunk the patches touch, each decoded exactly once
    report = ours.report
    assert report is not None and report.finished
    for name in ("t2m", "skt", "z"):
        decoded = {index: n for (var, index), n in report.decodes.items() if var == name}
        assert set(decoded) == _chunks_touched(ours, name)
        assert set(decoded.values()) == {1}
    assert report.chunks_decoded == sum(report.decodes.values())


def test_indexing_and_dataarrays(zarr_path: Path) -> None:
    ds = _opened(zarr_path, "sliced")
    kwargs = {"input_dims": {"lat": 8, "lon": 14}, "batch_dims": {"time": 5}}
    ours = BatchGenerator(ds, **kwargs)
    theirs = xbatcher.BatchGenerator(ds, **kwargs)
    for i in (0, 3, len(theirs) - 1, -1, -len(theirs)):
        xr.testing.assert_identical(ours[i], theirs[i])
    with pytest.raises(IndexError, match="list index out of range"):
        ours[len(ours)]
    with pytest.raises(NotImplementedError):
        ours[np.int64(0)]  # as xbatcher: a single Python int
    da = ds["skt"]
    ours_da = BatchGenerator(da, input_dims={"lat": 8}, batch_dims={"time": 2})
    theirs_da = xbatcher.BatchGenerator(da, input_dims={"lat": 8}, batch_dims={"time": 2})
    for a, b in _pairs(ours_da, theirs_da):
        assert isinstance(a, xr.DataArray)
        xr.testing.assert_identical(a, b)
    assert ours_da.paths == {"skt": "engine (ZarrSource)"}


def test_concatenated_dataarrays_are_their_datasets_batches(zarr_path: Path) -> None:
    """xbatcher 0.4 outer-joins concatenated DataArray patches (NaN-padded batches; see
    docs/frameworks/xbatcher.md); the drop-in gives the batches xbatcher builds for the
    one-variable Dataset."""
    ds = _opened(zarr_path, "no dask")
    kwargs = {
        "input_dims": {"lat": 8, "lon": 12},
        "input_overlap": {"lat": 2},
        "batch_dims": {"time": 4},
        "concat_input_dims": True,
    }
    ours = BatchGenerator(ds["t2m"], **kwargs)
    theirs = xbatcher.BatchGenerator(ds[["t2m"]], **kwargs)
    for a, b in _pairs(ours, theirs):
        assert isinstance(a, xr.DataArray)
        xr.testing.assert_identical(a, b["t2m"])
        assert not np.isnan(a.values).any()


def test_lazy_batches_are_xarrays_selection(zarr_path: Path) -> None:
    """preload_batch=False: xarray's lazy selection (dask-backed here), as xbatcher's."""
    ds = _opened(zarr_path, "dask")
    kwargs = {"input_dims": {"lat": 16, "lon": 16}, "preload_batch": False}
    ours = BatchGenerator(ds, **kwargs)
    for a, b in _pairs(ours, xbatcher.BatchGenerator(ds, **kwargs)):
        assert a.chunks and b.chunks  # not read
        xr.testing.assert_identical(a, b)
    assert ours.report is None  # the engine read nothing


def test_empty_batches_fail_as_in_xbatcher(zarr_path: Path) -> None:
    ds = _opened(zarr_path, "no dask")
    # lat (32): 2 patches of 12; batches of 13 take ceil(13 / 12) = 2 patches each along
    # lat, and there are 32 // 13 = 2 of them: the second has none.
    kwargs = {"input_dims": {"lat": 12}, "batch_dims": {"lat": 13}, "concat_input_dims": True}
    ours = BatchGenerator(ds, **kwargs)
    theirs = xbatcher.BatchGenerator(ds, **kwargs)
    assert len(ours) == len(theirs) == 2
    xr.testing.assert_identical(ours[0], theirs[0])
    with pytest.raises(ValueError):
        theirs[1]
    with pytest.raises(ValueError, match="holds no patches"):
        ours[1]
    with pytest.raises(ValueError, match="holds no patches"):
        list(ours)


def test_accessor(zarr_path: Path) -> None:
    ds = _opened(zarr_path, "no dask")[["t2m"]]
    assert isinstance(ds.batch, xbatcher.BatchAccessor)  # xbatcher's accessor is untouched
    bgen = ds.es_batch.generator(input_dims={"lat": 16, "lon": 16})
    assert isinstance(bgen, BatchGenerator)
    assert isinstance(ds["t2m"].es_batch.generator({"lat": 16}), BatchGenerator)
    for a, b in _pairs(bgen, ds.batch.generator(input_dims={"lat": 16, "lon": 16})):
        xr.testing.assert_identical(a, b)
    register_accessor("es_batch")  # ours already: a no-op
    with pytest.raises(
        ConfigError, match=r"xbatcher is installed|already has an attribute .batch."
    ):
        register_accessor("batch")
    with pytest.raises(ConfigError, match="already has"):
        register_accessor("sel")
    assert xr.Dataset.es_batch is BatchAccessor


def test_indexing_in_runs_reads_ahead_once(zarr_path: Path) -> None:
    """bgen[i] in a loop (or every k-th, as a DataLoader worker over xbatcher's MapDataset
    asks) becomes one pass: after three calls a constant step apart the rest is read
    ahead with each chunk decoded once; other calls read their batch alone."""
    ds = _opened(zarr_path, "no dask")[["t2m"]]
    kwargs = {"input_dims": {"lat": 8, "lon": 12}, "batch_dims": {"time": 2}}
    theirs = xbatcher.BatchGenerator(ds, **kwargs)
    for step in (1, 3):
        ours = BatchGenerator(ds, **kwargs)
        indices = list(range(1, len(ours), step))
        for i in indices:
            xr.testing.assert_identical(ours[i], theirs[i])
        report = ours.report
        assert report is not None
        # the run began at the third call: one pass over the rest of the indices
        assert report.samples == len(indices) - 2  # (one patch per batch here)
        assert set(report.decodes.values()) == {1}
    ours = BatchGenerator(ds, **kwargs)
    for i in (5, 2, 9, 0, 7):  # no constant step: each batch read alone
        xr.testing.assert_identical(ours[i], theirs[i])
        assert ours.report is not None and ours.report.samples == 1


def test_a_copy_in_another_process_reads_on_its_own(zarr_path: Path) -> None:
    import pickle

    ds = _opened(zarr_path, "no dask")[["t2m"]]
    ours = BatchGenerator(ds, input_dims={"lat": 16, "lon": 16})
    first = ours[0]
    copy = pickle.loads(pickle.dumps(ours))  # as a spawned DataLoader worker gets it
    xr.testing.assert_identical(copy[0], first)
    xr.testing.assert_identical(copy[3], ours[3])
