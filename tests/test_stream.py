"""The stream end to end: values equal xarray's isel, exactly once, budgets, errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.errors import (
    ConfigError,
    DimensionError,
    MemoryBudgetError,
    StoreNotFoundError,
    VariableNotFoundError,
    WindowError,
)

from .conftest import assert_batch_matches

SHUFFLES = [False, "chunks", "full"]


def collect(stream: es.Stream) -> list[es.Batch]:
    return list(stream)


@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize(
    ("window", "stride"),
    [
        ({"lat": 8, "lon": 8}, None),  # windows side by side
        ({"lat": 6, "lon": 12}, {"lat": 3, "lon": 5, "time": 2}),  # overlap + iterated stride
        ({"time": 3, "lat": 5, "lon": 7}, {"time": 2, "lat": 4, "lon": 9}),  # gaps, time window
    ],
)
def test_samples_equal_xarray(era5_tiled: Path, open_xr, shuffle, window, stride) -> None:
    ds = open_xr(era5_tiled)
    stream = es.Stream(
        era5_tiled, window, stride, variables=["t2m", "u10"], shuffle=shuffle, batch_size=7, seed=5
    )
    ids = []
    for batch in stream:
        assert_batch_matches(batch, ds, window)
        ids.extend(batch.window_ids.tolist())
    assert sorted(ids) == list(range(stream.n_windows))


@pytest.mark.parametrize("shuffle", SHUFFLES)
def test_pad_covers_everything(era5_tiled: Path, open_xr, shuffle) -> None:
    ds = open_xr(era5_tiled)
    window = {"lat": 6, "lon": 8}
    stream = es.Stream(
        era5_tiled, window, variables=["msl"], edges="pad", shuffle=shuffle, batch_size=5
    )
    covered = np.zeros(ds["msl"].shape, dtype=int)
    for batch in stream:
        assert batch.mask is not None and batch.mask_dims == ("lat", "lon")
        assert_batch_matches(batch, ds, window, pad=True)
        for i in range(batch.size):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            covered[t, y : y + 6, x : x + 8] += 1
    assert (covered == 1).all()  # every element exactly once


def test_levels_whole_and_stacked(era5_tiled: Path, open_xr) -> None:
    ds = open_xr(era5_tiled)
    window = {"lat": 5, "lon": 5, "level": None}
    plain = es.Stream(era5_tiled, window, variables=["t2m", "z"], shuffle=False, batch_size=4)
    stacked = es.Stream(
        era5_tiled, window, variables=["t2m", "z"], shuffle=False, batch_size=4, stack=True
    )
    assert stacked.channels == ("t2m", "z[level=500]", "z[level=850]", "z[level=1000]")
    for a, b in zip(plain, stacked, strict=True):
        assert_batch_matches(a, ds, {"lat": 5, "lon": 5, "level": 3})
        assert b.stacked is not None and b.stacked.shape == (a.size, 4, 5, 5)
        np.testing.assert_array_equal(b.stacked[:, 0], a["t2m"])
        np.testing.assert_array_equal(b.stacked[:, 1:], a["z"])
        assert np.shares_memory(b["z"], b.stacked)  # per-variable views, not copies
        np.testing.assert_array_equal(b["z"], a["z"])


def test_stack_time_window_keeps_source_order(era5_v3: Path, open_xr) -> None:
    ds = open_xr(era5_v3)
    window = {"time": 2, "lat": 8, "lon": 8}
    stream = es.Stream(era5_v3, window, {"time": 1}, variables=["u10", "v10"], stack=True)
    batch = next(iter(stream))
    assert batch.stacked is not None and batch.stacked.shape[1:] == (2, 2, 8, 8)
    assert batch.dims["u10"] == ("time", "lat", "lon")
    assert_batch_matches(batch, ds, window)


@pytest.mark.parametrize("fixture", ["era5_v2", "era5_sharded"])
def test_other_layouts(fixture: str, request: pytest.FixtureRequest, open_xr) -> None:
    path = request.getfixturevalue(fixture)
    ds = open_xr(path)
    window = {"lat": 4, "lon": 6, "level": None}
    stream = es.Stream(path, window, {"lat": 3}, variables=["z", "t2m"], shuffle="full", seed=2)
    ids = []
    for batch in stream:
        assert_batch_matches(batch, ds, {"lat": 4, "lon": 6, "level": 3})
        ids.extend(batch.window_ids.tolist())
    assert sorted(ids) == list(range(stream.n_windows))


def test_chunk_shuffle_decodes_each_chunk_once(era5_v3: Path) -> None:
    stream = es.Stream(era5_v3, {"lat": 8, "lon": 8}, variables=["t2m", "msl"], batch_size=6)
    list(stream)
    report = stream.report
    assert report is not None and report.finished
    assert report.chunks_decoded == 2 * 10  # 10 time chunks of two variables
    assert set(report.decodes.values()) == {1}
    assert report.samples == stream.n_windows


def test_order_is_a_function_of_seed_and_epoch(era5_v3: Path) -> None:
    def order(stream: es.Stream) -> list[int]:
        return [i for b in stream for i in b.window_ids.tolist()]

    kwargs = {"variables": ["t2m"], "batch_size": 5, "seed": 11}
    a = es.Stream(era5_v3, {"lat": 4, "lon": 8}, **kwargs)
    b = es.Stream(era5_v3, {"lat": 4, "lon": 8}, **kwargs)
    first = order(a)
    assert first == order(b)
    a.set_epoch(1)
    assert a.epoch == 1
    second = order(a)
    assert second != first and sorted(second) == sorted(first)
    a.set_epoch(0)
    assert order(a) == first


def test_len_and_drop_last(era5_v3: Path) -> None:
    stream = es.Stream(era5_v3, {"lat": 8, "lon": 8}, variables=["t2m"], batch_size=16)
    assert stream.n_windows == 10 * 2 * 4
    assert len(stream) == 5 and len(collect(stream)) == 5
    dropped = es.Stream(
        era5_v3, {"lat": 8, "lon": 8}, variables=["t2m"], batch_size=24, drop_last=True
    )
    batches = collect(dropped)
    assert len(dropped) == len(batches) == 3 and all(b.size == 24 for b in batches)


def test_memory_budget_holds(tmp_path: Path) -> None:
    """A store ~5x larger than the budget streams within it, for every order."""
    path = es.datasets.era5_like(
        tmp_path / "big.zarr", n_times=60, n_lat=32, n_lon=64, variables=["t2m", "u10", "msl"]
    )
    source = es.open_zarr(path)
    store_bytes = sum(v.nbytes for v in source.variables.values())
    limit = 300_000
    assert store_bytes > 4 * limit
    for shuffle in SHUFFLES:
        stream = es.Stream(
            source, {"lat": 8, "lon": 8}, batch_size=8, memory_limit=limit, shuffle=shuffle
        )
        ids = [i for b in stream for i in b.window_ids.tolist()]
        assert sorted(ids) == list(range(stream.n_windows))
        report = stream.report
        assert report is not None
        assert 0 < report.peak_held_bytes <= limit
        assert report.peak_cache_bytes <= stream.budget.cache_capacity
        # the cache had to work: chunks were evicted, or decoded again in sweeps
        assert report.evictions > 0 or report.chunks_decoded > len(report.decodes)


def test_full_shuffle_sweeps_under_tight_memory(tmp_path: Path, open_xr) -> None:
    """When one batch touches more chunks than fit, batches are assembled in sweeps:
    every chunk is read once per sweep, not once per batch."""
    path = es.datasets.era5_like(
        tmp_path / "sweep.zarr", n_times=40, n_lat=32, n_lon=64, variables=["t2m", "u10"]
    )
    ds = open_xr(path)
    limit = 200_000
    stream = es.Stream(
        path, {"lat": 8, "lon": 8}, batch_size=16, shuffle="full", memory_limit=limit, seed=4
    )
    k = stream._sweep_batches
    assert k >= 2
    ids = []
    for batch in stream:
        assert_batch_matches(batch, ds, {"lat": 8, "lon": 8})
        ids.extend(batch.window_ids.tolist())
    assert sorted(ids) == list(range(stream.n_windows))
    report = stream.report
    assert report is not None and report.peak_held_bytes <= limit
    n_chunks = 2 * 40  # two variables, one chunk per time step
    sweeps = -(-len(stream) // k)
    assert report.chunks_decoded <= n_chunks * sweeps


def test_full_shuffle_sweeps_many_small_chunks(tmp_path: Path, open_xr) -> None:
    """Many small chunks (a shard's inner chunks) and a cache of a quarter of the data:
    a batch fits the slots, but random reuse would miss most chunks, so batches are
    assembled in sweeps, each chunk decoded once per sweep; samples equal xarray's."""
    path = es.datasets.era5_like(
        tmp_path / "inner.zarr",
        n_times=40,
        n_lat=32,
        n_lon=64,
        variables=["t2m", "u10"],
        chunks={"time": 1, "lat": 8, "lon": 32},
        shards={"time": 8, "lat": 32, "lon": 64},
    )
    ds = open_xr(path)
    limit = 170_000  # about a quarter of the 655 kB of data
    inner = es.open_zarr(path, read_unit_bytes=0)  # inner chunks one by one, not read units
    stream = es.Stream(
        inner, {"lat": 4, "lon": 4}, batch_size=16, shuffle="full", memory_limit=limit, seed=3
    )
    k = stream._sweep_batches
    assert k >= 2
    ids = []
    for batch in stream:
        assert_batch_matches(batch, ds, {"lat": 4, "lon": 4})
        ids.extend(batch.window_ids.tolist())
    assert sorted(ids) == list(range(stream.n_windows))
    report = stream.report
    assert report is not None and report.peak_held_bytes <= limit
    n_chunks = 2 * 40 * 4 * 2  # two variables, 4 x 2 inner chunks per time step
    assert report.chunks_decoded <= n_chunks * -(-len(stream) // k)


def test_budget_too_small_is_refused(era5_v3: Path) -> None:
    with pytest.raises(MemoryBudgetError, match=r"too small.*Raise memory_limit to at least"):
        es.Stream(
            era5_v3, {"lat": 8, "lon": 8}, variables="t2m", batch_size=64, memory_limit="10kB"
        )


def test_early_stop_releases_threads(era5_v3: Path) -> None:
    stream = es.Stream(era5_v3, {"lat": 4, "lon": 4}, variables="t2m", batch_size=2, prefetch=1)
    for _ in stream:
        break
    deadline = time.time() + 5
    while time.time() < deadline and any(
        t.name.startswith("earthstream") for t in threading.enumerate()
    ):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("earthstream")]


def test_errors_are_typed_and_say_what_to_do(era5_v3: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        es.Stream(tmp_path / "missing.zarr", {"lat": 8})
    with pytest.raises(VariableNotFoundError, match="Available variables"):
        es.Stream(era5_v3, {"lat": 8}, variables=["precip"])
    with pytest.raises(DimensionError, match=r"'latitude'.*Did you mean 'lat'"):
        es.Stream(era5_v3, {"latitude": 8}, variables=["t2m"])
    with pytest.raises(WindowError, match=r"longer than dim 'lat' \(16\)"):
        es.Stream(era5_v3, {"lat": 17}, variables=["t2m"])
    with pytest.raises(WindowError, match="must be at least 1"):
        es.Stream(era5_v3, {"lat": 8}, {"lat": 0}, variables=["t2m"])
    with pytest.raises(DimensionError, match=r"no dim 'level'.*window=\{'level': None\}"):
        es.Stream(era5_v3, {"lat": 8})  # z has levels, t2m does not
    with pytest.raises(ConfigError, match="shuffle"):
        es.Stream(era5_v3, {"lat": 8}, variables=["t2m"], shuffle="random")
    with pytest.raises(ConfigError, match="batch_size"):
        es.Stream(era5_v3, {"lat": 8}, variables=["t2m"], batch_size=0)


def test_incompatible_dims(tmp_path: Path) -> None:
    a = np.zeros((4, 6, 8), "f4")
    source = es.ArraySource(
        {"a": (("t", "y", "x"), a), "b": (("t", "x", "y"), a.transpose(0, 2, 1))}
    )
    with pytest.raises(
        DimensionError, match=r"stack=True needs the shared window dims in one order"
    ):
        es.Stream(source, {"y": 2, "x": 2}, stack=True)
    es.Stream(source, {"y": 2, "x": 2}, stack=False)  # fine without stacking
    sizes = es.ArraySource({"a": (("y",), np.zeros(4)), "b": (("y",), np.zeros(5))})
    with pytest.raises(DimensionError, match=r"dim 'y' has size 4 in variable 'a' but 5 in 'b'"):
        es.Stream(sizes, {"y": 2})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_properties(data: st.DataObject) -> None:
    """Over shapes, chunkings, windows, strides, edges, batch sizes, seeds and orders:
    every window is delivered exactly once with the values of a NumPy slice."""
    ndim = data.draw(st.integers(1, 3), label="ndim")
    shape = tuple(data.draw(st.integers(1, 9), label=f"size{d}") for d in range(ndim))
    dims = tuple(f"d{d}" for d in range(ndim))
    values = np.arange(int(np.prod(shape)), dtype="f4").reshape(shape)
    sizes = dict(zip(dims, shape, strict=True))
    chunks = {d: data.draw(st.integers(1, n), label=f"chunk{d}") for d, n in sizes.items()}
    edges = data.draw(st.sampled_from(["drop", "pad"]), label="edges")
    window = {
        d: data.draw(st.integers(1, n + (2 if edges == "pad" else 0)), label=f"w{d}")
        for d, n in zip(dims, shape, strict=True)
        if data.draw(st.booleans(), label=f"windowed{d}")
    }
    stride = {
        d: data.draw(st.integers(1, 4), label=f"s{d}") for d in dims if data.draw(st.booleans())
    }
    source = es.ArraySource({"v": (dims, values)}, chunks=chunks)
    try:
        stream = es.Stream(
            source,
            window,
            stride,
            edges=edges,
            shuffle=data.draw(st.sampled_from(SHUFFLES), label="shuffle"),
            seed=data.draw(st.integers(0, 100), label="seed"),
            batch_size=data.draw(st.integers(1, 6), label="batch"),
            memory_limit=data.draw(st.sampled_from([4096, 1 << 20]), label="limit"),
            num_threads=2,
        )
    except MemoryBudgetError:
        reject()  # 4 KiB cannot hold 3 large padded batches: refused up front, as it should be
    seen = []
    for batch in stream:
        for i in range(batch.size):
            index = []
            for d in dims:
                s = int(batch.starts[d][i])
                index.append(slice(s, s + window[d]) if d in window else s)
            ref = values[tuple(index)]
            got = batch["v"][i]
            region = tuple(slice(0, n) for n in ref.shape)
            np.testing.assert_array_equal(got[region], ref)
            if edges == "pad":
                outside = np.ones(got.shape, bool)
                outside[region] = False
                assert np.isnan(got[outside]).all()
        seen.extend(batch.window_ids.tolist())
    assert sorted(seen) == list(range(stream.n_windows))


# -- windows across chunks: time stacks, spatial borders, levels (issue: weather models) ----
@pytest.fixture(params=["grouped", "one by one"])
def piece_copies(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of copying pieces: gathered by extent, and one by one (as whole fields are)."""
    if request.param == "one by one":
        monkeypatch.setattr("earthstream.engine._assemble.BIG_PIECE", 1)
    return str(request.param)


@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("stack", [False, True])
@pytest.mark.parametrize(
    ("window", "stride", "variables"),
    [
        # whole fields, time stacks
        ({"time": 3, "lat": 15, "lon": 29, "level": None}, {"time": 1}, ["t2m", "z", "u10"]),
        (
            {"time": 4, "lat": 9, "lon": 13, "level": None},
            {"time": 2, "lat": 3, "lon": 8},
            ["t2m", "z", "u10"],
        ),
        # windows across level chunks too
        ({"time": 2, "lat": 7, "lon": 10, "level": 2}, {"level": 1, "lat": 4, "lon": 6}, ["z"]),
    ],
)
def test_multi_chunk_windows_equal_xarray(
    era5_tiled: Path, open_xr, piece_copies, shuffle, stack, window, stride, variables
) -> None:
    """Windows spanning several chunks along time, lat, lon and level, over surface and
    level variables, stacked or not: every sample equals xarray's isel."""
    ds = open_xr(era5_tiled)
    stream = es.Stream(
        era5_tiled,
        window,
        stride,
        variables=variables,
        shuffle=shuffle,
        stack=stack,
        batch_size=3,
        seed=3,
    )
    full = {d: (ds.sizes[d] if n is None else n) for d, n in window.items()}
    ids = []
    for batch in stream:
        assert_batch_matches(batch, ds, full)
        if stack:
            assert batch.stacked is not None
            for name in batch:
                assert np.shares_memory(batch[name], batch.stacked)
        ids.extend(batch.window_ids.tolist())
    assert sorted(ids) == list(range(stream.n_windows))


def test_multi_chunk_windows_tight_memory_and_pad(era5_tiled: Path, open_xr, piece_copies) -> None:
    """The chunk-by-chunk paths (memory too small for a batch; padded edges) cut the
    same pieces."""
    ds = open_xr(era5_tiled)
    window = {"time": 3, "lat": 8, "lon": 12}
    tight = es.Stream(
        era5_tiled,
        window,
        {"time": 2, "lat": 5, "lon": 9},
        variables=["t2m", "msl"],
        batch_size=16,
        memory_limit="200kB",
        shuffle=False,
    )
    for batch in tight:
        assert_batch_matches(batch, ds, window)
    padded = es.Stream(
        era5_tiled, window, variables=["t2m"], edges="pad", batch_size=5, shuffle="full"
    )
    for batch in padded:
        assert_batch_matches(batch, ds, window, pad=True)


@given(
    t=st.integers(1, 5),
    y=st.integers(1, 15),
    x=st.integers(1, 29),
    sy=st.integers(1, 9),
    sx=st.integers(1, 12),
    batch=st.integers(1, 9),
)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_window_equals_xarray(era5_tiled: Path, open_xr, t, y, x, sy, sx, batch) -> None:
    ds = open_xr(era5_tiled)
    window = {"time": t, "lat": y, "lon": x}
    stream = es.Stream(
        era5_tiled,
        {**window, "level": None},
        {"lat": sy, "lon": sx},
        variables=["u10", "z"],
        batch_size=batch,
        shuffle="full",
        seed=1,
    )
    for b in stream:
        assert_batch_matches(b, ds, {**window, "level": 3})


def test_batch_buffers_are_reused_only_when_free(
    era5_tiled: Path, open_xr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large batch arrays come from a pool of buffers: a batch (or a view of it) still
    held by the consumer is never written again; a dropped one is reused."""
    monkeypatch.setattr("earthstream.engine._buffers.MIN_POOLED", 0)
    ds = open_xr(era5_tiled)
    window = {"time": 2, "lat": 15, "lon": 29, "level": None}
    kwargs = {"variables": ["t2m", "z"], "stack": True, "batch_size": 2, "shuffle": "full"}
    stream = es.Stream(era5_tiled, window, {"time": 1}, **kwargs)
    kept = [batch["z"] for batch in stream]  # views only: they keep their buffers
    views = [b.copy() for b in kept]
    for _ in range(2):  # later passes: buffers still held must not be touched
        for batch in stream:
            assert_batch_matches(batch, ds, {**window, "level": 3})
    for a, b in zip(kept, views, strict=True):
        np.testing.assert_array_equal(a, b)
    engine = stream._engine
    assert engine is not None and engine.buffers.reused == 0  # every pooled buffer is held
    del kept, a
    for batch in stream:  # now dropped batches give their buffers back
        assert_batch_matches(batch, ds, {**window, "level": 3})
    assert engine.buffers.reused > 0


# -- whole chunks decoded straight into the batch ------------------------------------------
@pytest.mark.parametrize("stack", [False, True])
@pytest.mark.parametrize("shuffle", SHUFFLES)
def test_whole_chunk_windows_decode_into_the_batch(era5_v3: Path, open_xr, stack, shuffle) -> None:
    """Whole fields on a store with one step per chunk: each chunk is one window's, so it
    is decoded straight into the batch; samples equal xarray's, each chunk decoded once."""
    ds = open_xr(era5_v3)
    window = {"lat": None, "lon": None, "level": None}
    stream = es.Stream(
        era5_v3, window, variables=["t2m", "z", "u10"], stack=stack, shuffle=shuffle, batch_size=3
    )
    ids = []
    for batch in stream:
        assert_batch_matches(batch, ds, {"lat": 16, "lon": 32, "level": 3})
        ids.extend(batch.window_ids.tolist())
    assert sorted(ids) == list(range(stream.n_windows)) and stream.n_windows == 10
    engine = stream._engine
    assert engine is not None and engine.direct
    report = stream.report
    assert report is not None and report.chunks_decoded == 30
    assert set(report.decodes.values()) == {1}
    # a window that is not whole chunks keeps the slot path
    patches = es.Stream(era5_v3, {"lat": 8, "lon": 32}, variables=["t2m"])
    next(iter(patches))
    assert patches._engine is not None and not patches._engine.direct


def test_whole_chunk_windows_missing_and_corrupt(era5_v3: Path, open_xr, tmp_path: Path) -> None:
    """Chunk policies hold when chunks are decoded into the batch."""
    import shutil

    from earthstream.errors import MissingChunkError

    ds = open_xr(era5_v3)
    store = tmp_path / "holes.zarr"
    shutil.copytree(era5_v3, store)
    (store / "t2m" / "c" / "3" / "0" / "0").unlink()  # step 3 of t2m is not stored
    (store / "u10" / "c" / "5" / "0" / "0").write_bytes(b"not zstd at all")  # step 5 corrupt
    window = {"lat": None, "lon": None}
    filled = es.Stream(store, window, variables=["t2m"], shuffle=False, batch_size=4)
    for batch in filled:
        for i, t in enumerate(batch.starts["time"].tolist()):
            if t == 3:
                assert np.isnan(batch["t2m"][i]).all()
            else:
                np.testing.assert_array_equal(batch["t2m"][i], ds["t2m"].values[t])
    with pytest.raises(MissingChunkError):
        list(es.Stream(store, window, variables=["t2m"], missing="error"))
    skipped = es.Stream(
        store, window, variables=["u10"], corrupt="skip", shuffle=False, batch_size=4, stack=True
    )
    times = [t for b in skipped for t in b.starts["time"].tolist()]
    assert times == [t for t in range(10) if t != 5]
    assert skipped.report is not None and skipped.report.samples_dropped == 1
