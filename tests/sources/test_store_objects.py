"""Stores users already hold, through the same engine: zarr-python Store objects (local,
memory, zip, fsspec, obstore), Groups and Arrays, real Icechunk repositories, and Kerchunk
and VirtualiZarr references to NetCDF4 files written by h5netcdf.

The oracle is xarray: xarray's read of the same store object, or of the original NetCDF
file (h5netcdf), never earthstream's own decoder.  Failures come from real servers on
loopback (nginx behind the fault proxy) and from real damage (a truncated NetCDF file
behind an Icechunk virtual reference).
"""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import earthstream as es
from earthstream.errors import (
    ConfigError,
    ForkError,
    StoreAccessError,
    StoreRequestError,
    UnsupportedInputError,
)
from tests._faults import FaultProxy
from tests._servers import NginxServer, find_nginx, nginx_server
from tests.conftest import assert_batch_matches

icechunk = pytest.importorskip("icechunk")

pytestmark = pytest.mark.filterwarnings(
    "ignore:Numcodecs codecs are not in the Zarr version 3 specification"
)


# -- writers ---------------------------------------------------------------------------
def copy_keys(src: Path, dst: Any, prefix: str = "") -> None:
    """Copy every key of the store at ``src`` into the zarr store ``dst`` (byte for byte)."""
    source = zarr.storage.LocalStore(src, read_only=True)

    async def run() -> None:
        proto = default_buffer_prototype()
        async for key in source.list():
            await dst.set(prefix + key, await source.get(key, proto))

    sync(run())


def icechunk_repo(path: Path, **kwargs: Any) -> Any:
    return icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)), **kwargs)


@pytest.fixture(scope="module")
def ice_sharded(tmp_path_factory: pytest.TempPathFactory, era5_sharded: Path) -> Any:
    """An Icechunk repository holding a sharded Zarr v3 group (written through icechunk)."""
    repo = icechunk_repo(tmp_path_factory.mktemp("ice") / "sharded")
    session = repo.writable_session("main")
    copy_keys(era5_sharded, session.store)
    session.commit("sharded ERA5-like")
    return repo


@pytest.fixture(scope="module")
def ice_xarray(tmp_path_factory: pytest.TempPathFactory, era5_tiled: Path) -> Any:
    """An Icechunk repository written by xarray's ``to_zarr`` (how users write one)."""
    repo = icechunk_repo(tmp_path_factory.mktemp("ice") / "xarray")
    session = repo.writable_session("main")
    ds = xr.open_zarr(era5_tiled)
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k == "chunks"}
    ds.to_zarr(session.store, consolidated=False, mode="w")
    session.commit("xarray")
    return repo


def reference(store: Any) -> xr.Dataset:
    return xr.open_zarr(store, consolidated=False, chunks=None).load()


def stream_matches(stream: es.Stream, ds: xr.Dataset, window: dict[str, int]) -> None:
    """Every sample equals xarray's, each window once, each chunk its windows touch
    decoded exactly once."""
    ids: list[int] = []
    touched: set[tuple[str, tuple[int, ...]]] = set()
    for batch in stream:
        assert_batch_matches(batch, ds, window)
        ids.extend(batch.window_ids.tolist())
        for name, info in stream.source.variables.items():
            for i in range(batch.size):
                spans = []
                for dim, chunk in zip(info.dims, info.chunks, strict=True):
                    start = int(batch.starts[dim][i])
                    stop = start + window.get(dim, 1)
                    spans.append(range(start // chunk, (stop - 1) // chunk + 1))
                touched.update((name, index) for index in itertools.product(*spans))
    assert sorted(ids) == list(range(stream.n_windows))
    report = stream.report
    assert report is not None and report.decodes
    assert max(report.decodes.values()) == 1
    assert set(report.decodes) == touched
    assert report.chunks_decoded == len(touched)


# -- Icechunk --------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["ice_sharded", "ice_xarray"])
def test_icechunk_repository_streams_like_xarray(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    repo = request.getfixturevalue(fixture)
    store = repo.readonly_session("main").store
    ds = reference(store)
    window = {"lat": 7, "lon": 5} if fixture == "ice_sharded" else {"lat": 7, "lon": 10}
    stream = es.Stream(store, window, variables=["t2m", "u10"], batch_size=8, seed=3)
    assert all(spec.fast for spec in stream.source.specs.values())  # the fast codec path
    assert stream.source.io_concurrency > 0  # requests kept in flight (two stages)
    stream_matches(stream, ds, window)
    report = stream.report
    assert report is not None and report.requests > 0  # bytes came through our reader
    if fixture == "ice_sharded":
        # a read unit's inner chunks are read after the shard's index, with merged byte
        # ranges: at most two requests per unit, fewer than the inner chunks decoded
        spec = stream.source.specs["t2m"]
        assert spec.read_unit is not None
        assert report.requests <= 2 * report.chunks_decoded
        assert report.requests < report.chunks_decoded * int(np.prod(spec.read_unit))


def test_icechunk_session_objects_open_alike(ice_sharded: Any) -> None:
    session = ice_sharded.readonly_session("main")
    group = zarr.open_group(session.store, mode="r")
    by_store = es.open_zarr(session.store)
    by_group = es.open_zarr(group)
    by_array = es.open_zarr(group["t2m"])

    def described(source: es.ZarrSource) -> dict[str, Any]:
        return {
            name: (info.dims, info.shape, info.dtype, info.chunks, info.codecs)
            for name, info in source.variables.items()
        }

    assert list(by_array.variables) == ["t2m"]
    assert described(by_group) == described(by_store)
    assert described(by_array)["t2m"] == described(by_store)["t2m"]
    np.testing.assert_array_equal(by_array.coords["time"], by_store.coords["time"])
    assert "IcechunkStore" in repr(by_store)


# -- every kind of zarr-python store, as Store, Group and Array -----------------------------
STORE_KINDS = ["local", "memory", "zip", "fsspec", "obstore", "icechunk"]


@pytest.fixture
def store_of(tmp_path: Path, era5_v2: Path, era5_sharded: Path) -> Iterator[Any]:
    """``store_of(kind, src)``: a zarr-python store object holding the group at ``src``."""
    opened: list[Any] = []

    def make(kind: str, src: Path) -> Any:
        if kind == "local":
            return zarr.storage.LocalStore(src, read_only=True)
        if kind == "memory":
            store = zarr.storage.MemoryStore()
            copy_keys(src, store)
            return store
        if kind == "zip":
            path = tmp_path / f"{src.name}.zip"
            writer = zarr.storage.ZipStore(path, mode="w")
            copy_keys(src, writer)
            writer.close()
            store = zarr.storage.ZipStore(path, mode="r")
            opened.append(store)
            return store
        if kind == "fsspec":
            import fsspec

            fs = fsspec.filesystem("file", asynchronous=False)
            return zarr.storage.FsspecStore.from_mapper(fs.get_mapper(str(src)), read_only=True)
        if kind == "obstore":
            from obstore.store import LocalStore

            return zarr.storage.ObjectStore(LocalStore(str(src)), read_only=True)
        repo = icechunk_repo(tmp_path / f"{src.name}.ice")
        session = repo.writable_session("main")
        copy_keys(src, session.store)
        session.commit("copy")
        return repo.readonly_session("main").store

    yield make
    for store in opened:
        store.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
@pytest.mark.parametrize("fixture", ["era5_v2", "era5_sharded"])
def test_every_chunk_of_every_store_kind_equals_zarr_python(
    kind: str, fixture: str, store_of: Any, request: pytest.FixtureRequest
) -> None:
    if kind == "icechunk" and fixture == "era5_v2":
        pytest.skip("Icechunk holds Zarr v3 only")
    src = request.getfixturevalue(fixture)
    store = store_of(kind, src)
    group = zarr.open_group(store, mode="r")
    for handed in (store, group):
        source = es.open_zarr(handed)
        assert all(spec.fast for spec in source.specs.values())
        for name, info in source.variables.items():
            expected = group[name][...]
            for index in itertools.product(*[range(g) for g in info.chunk_grid]):
                region = tuple(
                    slice(i * c, min((i + 1) * c, s))
                    for i, c, s in zip(index, info.chunks, info.shape, strict=True)
                )
                chunk = source.read_chunk(name, index)
                assert chunk is not None
                valid = tuple(slice(0, r.stop - r.start) for r in region)
                np.testing.assert_array_equal(chunk[valid], expected[region])
    assert source.location.is_local == (kind in ("local", "memory", "zip"))


def test_a_group_below_the_root_and_its_arrays(era5_v3: Path, open_xr: Any) -> None:
    store = zarr.storage.MemoryStore()
    zarr.open_group(store, path="archive", mode="w")
    copy_keys(era5_v3, store, prefix="archive/era5/")
    group = zarr.open_group(store, path="archive/era5", mode="r")
    ds = open_xr(era5_v3)
    window = {"lat": 8, "lon": 8}
    stream_matches(es.Stream(group, window, variables=["t2m", "u10"], seed=1), ds, window)
    array_stream = es.Stream(group["u10"], window, seed=1)
    assert list(array_stream.source.variables) == ["u10"]
    stream_matches(array_stream, ds, window)  # coordinates from the array's parent group
    with pytest.raises(ConfigError, match="one variable"):
        es.open_zarr(group["u10"], variables=["t2m"])


def test_zarr_objects_are_accepted_wherever_a_path_is(era5_v3: Path, open_xr: Any) -> None:
    group = zarr.open_group(zarr.storage.LocalStore(era5_v3, read_only=True), mode="r")
    stats = es.compute_stats(group, ["t2m"], scheduler="sync", progress=False)
    values = open_xr(era5_v3)["t2m"].values.astype(np.float64)
    np.testing.assert_allclose(float(stats["t2m"].mean), values.mean(), rtol=1e-6)
    assert int(stats["t2m"].count) == values.size
    modality = es.Modality(group, variables=["t2m", "u10"])
    multi = es.MultiStream({"weather": modality}, {"lat": 8, "lon": 8}, batch_size=4)
    assert next(iter(multi))["weather"].shape[0] == 4


# -- virtual references to NetCDF4/HDF5 ----------------------------------------------------
@pytest.fixture(scope="module")
def netcdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NetCDF4 file written by h5netcdf with the usual HDF5 filters (zlib + shuffle),
    chunks that do not divide the dims, and an uncompressed contiguous variable."""
    import pandas as pd

    rng = np.random.default_rng(7)
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), rng.normal(280, 12, (10, 20, 30)).astype("f4")),
            "sp": (("time", "lat", "lon"), rng.normal(1e5, 900, (10, 20, 30))),
            "orog": (("lat", "lon"), rng.uniform(0, 4000, (20, 30)).astype("f4")),
        },
        coords={
            "time": pd.date_range("1990-01-01", periods=10, freq="6h"),
            "lat": np.linspace(90, -90, 20),
            "lon": np.arange(30) * 12.0,
        },
    )
    encoding = {
        "t2m": {"zlib": True, "shuffle": True, "complevel": 4, "chunksizes": (3, 8, 16)},
        "sp": {"zlib": True, "shuffle": True, "complevel": 2, "chunksizes": (2, 20, 30)},
        "orog": {"contiguous": True},
    }
    path = tmp_path_factory.mktemp("netcdf") / "era.nc"
    ds.to_netcdf(path, engine="h5netcdf", encoding=encoding)
    return path


@pytest.fixture(scope="module")
def netcdf_ref(netcdf: Path) -> xr.Dataset:
    with xr.open_dataset(netcdf, engine="h5netcdf") as ds:
        return ds.load()


@pytest.fixture(scope="module")
def kerchunk_json(netcdf: Path) -> Path:
    import json

    from kerchunk.hdf import SingleHdf5ToZarr

    refs = SingleHdf5ToZarr(str(netcdf)).translate()
    path = netcdf.with_suffix(".json")
    path.write_text(json.dumps(refs))
    return path


def virtual_icechunk(netcdf: Path, repo_path: Path) -> Any:
    """VirtualiZarr references to ``netcdf`` committed to an Icechunk repository."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    prefix = f"file://{netcdf.parent}/"
    registry = ObjectStoreRegistry({prefix: LocalStore(prefix=str(netcdf.parent))})
    vds = open_virtual_dataset(
        url=f"file://{netcdf}",
        parser=HDFParser(),
        registry=registry,
        loadable_variables=["time", "lat", "lon"],
    )
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(netcdf.parent)))
    )
    access = icechunk.containers_credentials({prefix: None})
    repo = icechunk_repo(repo_path, config=config, authorize_virtual_chunk_access=access)
    session = repo.writable_session("main")
    vds.vz.to_icechunk(session.store)
    session.commit("virtual references")
    storage = icechunk.local_filesystem_storage(str(repo_path))
    reopened = icechunk.Repository.open(storage, authorize_virtual_chunk_access=access)
    return reopened.readonly_session("main").store


def kerchunk_inputs(kerchunk_json: Path) -> dict[str, Any]:
    import fsspec

    fs = fsspec.filesystem("reference", fo=str(kerchunk_json), asynchronous=True)
    return {
        "mapper": fsspec.get_mapper("reference://", fo=str(kerchunk_json)),
        "store": zarr.storage.FsspecStore(fs, read_only=True, path=""),
    }


@pytest.mark.parametrize("how", ["kerchunk-mapper", "kerchunk-store", "virtualizarr-icechunk"])
def test_virtual_references_to_netcdf_equal_xarray_on_the_file(
    how: str, netcdf: Path, netcdf_ref: xr.Dataset, kerchunk_json: Path, tmp_path: Path
) -> None:
    if how.startswith("kerchunk"):
        handed = kerchunk_inputs(kerchunk_json)[how.split("-")[1]]
        codecs = {"t2m": ("shuffle", "zlib"), "sp": ("shuffle", "zlib")}
    else:
        handed = virtual_icechunk(netcdf, tmp_path / "virtual")
        codecs = dict.fromkeys(("t2m", "sp"), ("bytes", "numcodecs.shuffle", "numcodecs.zlib"))
    source = es.open_zarr(handed)
    assert set(source.variables) == {"t2m", "sp", "orog"}
    assert all(spec.fast for spec in source.specs.values())  # HDF5's filters, fast path
    assert {n: source.variables[n].codecs for n in codecs} == codecs
    window = {"lat": 10, "lon": 15}
    stream = es.Stream(source, window, variables=["t2m", "sp"], batch_size=6, seed=2)
    stream_matches(stream, netcdf_ref, window)
    orog = es.Stream(source, {"lat": 5, "lon": 6}, variables=["orog"], shuffle=False)
    stream_matches(orog, netcdf_ref, {"lat": 5, "lon": 6})


def test_damaged_file_behind_a_virtual_reference_is_a_typed_error(
    netcdf: Path, tmp_path: Path
) -> None:
    own = tmp_path / "data" / "era.nc"
    own.parent.mkdir()
    shutil.copy(netcdf, own)
    source = es.open_zarr(virtual_icechunk(own, tmp_path / "virtual"), variables=["t2m"])
    with open(own, "r+b") as f:  # the archive lost its tail
        f.truncate(4096)
    with pytest.raises(StoreRequestError, match=r"t2m/c/") as info:
        list(es.Stream(source, {"lat": 10, "lon": 15}))
    assert "IcechunkError" not in type(info.value).__name__
    assert info.value.__cause__ is None


# -- codec chains the fast path lacks ----------------------------------------------------
def test_array_to_array_codecs_fall_back_to_zarr_python_and_are_counted() -> None:
    from zarr.codecs.numcodecs import Delta

    store = zarr.storage.MemoryStore()
    group = zarr.open_group(store, mode="w")
    values = np.cumsum(np.random.default_rng(3).normal(size=(6, 12, 10)), axis=0)
    array = group.create_array(
        "q",
        shape=values.shape,
        chunks=(2, 6, 5),
        dtype="f8",
        filters=[Delta(dtype="<f8")],
        dimension_names=("time", "lat", "lon"),
    )
    array[...] = values
    source = es.open_zarr(store)
    assert source.fallback_variables == ["q"]
    assert "read through zarr-python" in repr(source)
    window = {"lat": 6, "lon": 5}
    stream = es.Stream(source, window, batch_size=4, seed=0)
    stream_matches(stream, reference(store), window)
    report = stream.report
    assert report is not None
    assert report.chunks_fallback == report.chunks_decoded == 3 * 2 * 2
    assert "through zarr-python" in report.summary()


# -- what cannot be opened, options that do not apply --------------------------------------
@pytest.mark.parametrize("bad", [123, object(), {"t2m": [1, 2]}, np.zeros(3)])
def test_unsupported_inputs_name_what_is_accepted(bad: Any) -> None:
    for call in (es.open_zarr, lambda x: es.Stream(x, {"lat": 4}), es.compute_stats):
        with pytest.raises(UnsupportedInputError) as info:
            call(bad)
        message = str(info.value)
        assert type(bad).__name__ in message
        for accepted in ("path or URL", "zarr-python Store", "zarr.Group", "Icechunk", "xarray"):
            assert accepted in message
        assert isinstance(info.value, TypeError)


def test_storage_options_of_a_store_object(era5_v3: Path) -> None:
    from obstore.store import LocalStore

    store = zarr.storage.ObjectStore(LocalStore(str(era5_v3)), read_only=True)
    with pytest.raises(ConfigError, match="anon"):
        es.open_zarr(store, storage_options={"anon": True})
    with pytest.raises(ConfigError, match="retry"):
        es.open_zarr(store, storage_options={"retry": {"attempts": 3}})
    source = es.open_zarr(store, storage_options={"max_requests": 5})
    assert source.io_concurrency == 5
    assert es.open_zarr(store).io_concurrency == 64


# -- failures of a store object that reads over HTTP (nginx + fault proxy) ------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served-objects")
    es.datasets.era5_like(root / "plain.zarr", n_times=24, n_lat=16, n_lon=32, variables=["t2m"])
    return root


@pytest.fixture(scope="module")
def proxy(served: Path) -> Iterator[FaultProxy]:
    if find_nginx() is None:
        pytest.fail("nginx is not installed; `make test` installs nginx-light.")
    server: NginxServer = nginx_server(served)
    with FaultProxy(server.base_url) as p:
        yield p
    server.stop()


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.reset()
    yield proxy
    proxy.reset()


def http_store(base_url: str, secret: str = "") -> Any:
    """A user's zarr ObjectStore over obstore's HTTPStore (no obstore retries)."""
    from obstore.store import HTTPStore

    host = base_url.replace("http://", f"http://reader:{secret}@" if secret else "http://")
    client = {"allow_http": True}
    http = HTTPStore.from_url(
        f"{host}/plain.zarr", client_options=client, retry_config={"max_retries": 0}
    )
    return zarr.storage.ObjectStore(http, read_only=True)


def test_http_store_object_equals_xarray_with_requests_in_flight(
    faults: FaultProxy, served: Path, open_xr: Any
) -> None:
    faults.set_delay(0.05)
    source = es.open_zarr(http_store(faults.base_url), variables=["t2m"])
    stream = es.Stream(source, {"lat": 8, "lon": 8}, batch_size=12)
    stream_matches(stream, open_xr(served / "plain.zarr"), {"lat": 8, "lon": 8})
    assert faults.max_in_flight >= 8  # latency hidden by concurrency, not paid serially


@pytest.mark.parametrize(
    ("status", "error", "where"),
    [
        (403, StoreAccessError, "chunk"),
        (500, StoreRequestError, "chunk"),
        (403, StoreAccessError, "metadata"),
        (500, StoreRequestError, "metadata"),
    ],
)
def test_store_object_failures_are_typed_and_redacted(
    faults: FaultProxy, status: int, error: type[Exception], where: str
) -> None:
    secret = "s3cr3t-Pa55"
    key = "t2m/c/1/0/0" if where == "chunk" else "zarr.json"  # (consolidated metadata)
    pattern = f"/plain\\.zarr/{key}$"
    faults.add(pattern, "status", status=status, times=100)
    store = http_store(faults.base_url, secret)

    def run() -> None:
        source = es.open_zarr(store, variables=["t2m"])
        assert secret not in repr(source)
        list(es.Stream(source, {"lat": 8, "lon": 8}, shuffle=False))

    with pytest.raises(error) as info:
        run()
    message = str(info.value)
    assert key in message
    assert secret not in message
    assert info.value.__cause__ is None
    if where == "metadata":  # (chunk reads: call_with_retries, redacted by issue 11's work)
        assert info.value.__context__ is None
    assert isinstance(info.value, es.errors.EarthstreamError)


# -- processes: pickling, spawn, fork ---------------------------------------------------------
def test_read_only_icechunk_source_pickles(ice_sharded: Any) -> None:
    source = es.open_zarr(ice_sharded.readonly_session("main").store, variables=["t2m"])
    copy = pickle.loads(pickle.dumps(source))
    last = tuple(n - 1 for n in source.variables["t2m"].chunk_grid)
    for index in [(0, 0, 0), last]:
        expected = source.read_chunk("t2m", index)
        np.testing.assert_array_equal(copy.read_chunk("t2m", index), expected)


def test_writable_session_cannot_go_to_workers_and_says_why(ice_sharded: Any) -> None:
    source = es.open_zarr(ice_sharded.writable_session("main").store, variables=["t2m"])
    assert source.read_chunk("t2m", (0, 0, 0)) is not None  # fine in this process
    with pytest.raises(UnsupportedInputError, match=r"readonly_session"):
        pickle.dumps(source)


def _read_in_child(source: Any, out: Any) -> None:
    try:
        source.read_chunk("t2m", (0, 0, 0))
        out.put("read")
    except ForkError as exc:
        out.put(f"ForkError: {exc}")
    except BaseException as exc:  # pragma: no cover - reported to the parent
        out.put(f"{type(exc).__name__}: {exc}")


def test_icechunk_in_a_forked_child_is_a_fork_error_not_a_hang(ice_sharded: Any) -> None:
    source = es.open_zarr(ice_sharded.readonly_session("main").store, variables=["t2m"])
    source.read_chunk("t2m", (0, 0, 0))  # the parent used the store's runtime
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(source, out))
    child.start()
    try:
        answer = out.get(timeout=60)
    finally:
        child.join(10)
        if child.is_alive():  # pragma: no cover
            child.kill()
    assert answer.startswith("ForkError") and "spawn" in answer


@pytest.mark.slow
def test_icechunk_through_dataloader_workers(ice_sharded: Any) -> None:
    store = ice_sharded.readonly_session("main").store
    ds = reference(store)
    stream = es.Stream(store, {"lat": 7, "lon": 5}, variables=["t2m"], batch_size=8, seed=4)
    loader = stream.to_torch().loader(num_workers=2)  # spawn: the store's runtime cannot fork
    assert loader.loader.multiprocessing_context.get_start_method() == "spawn"
    ids = []
    for batch in loader:
        ids.extend(batch.window_ids.tolist())
        for i, sample in enumerate(batch["t2m"].numpy()):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            np.testing.assert_array_equal(sample, ds["t2m"].values[t, y : y + 7, x : x + 5])
    assert sorted(ids) == list(range(stream.n_windows))


def test_zip_store_with_forked_dataloader_workers(era5_v3: Path, tmp_path: Path) -> None:
    path = tmp_path / "era5.zip"
    writer = zarr.storage.ZipStore(path, mode="w")
    copy_keys(era5_v3, writer)
    writer.close()
    store = zarr.storage.ZipStore(path, mode="r")
    stream = es.Stream(store, {"lat": 8, "lon": 8}, variables=["t2m"], batch_size=6, seed=1)
    expected = {int(i): s for b in stream for i, s in zip(b.window_ids, b["t2m"], strict=True)}
    loader = stream.to_torch().loader(num_workers=2, multiprocessing_context="fork")
    got = {}
    for batch in loader:
        for i, sample in zip(batch.window_ids.tolist(), batch["t2m"].numpy(), strict=True):
            assert i not in got
            got[i] = sample
    assert sorted(got) == sorted(expected)
    for i, sample in got.items():
        np.testing.assert_array_equal(sample, expected[i])
    store.close()
