"""PredictionWriter: identity models reconstruct the source bit for bit (xarray's read), blends
equal a NumPy reference, stopped runs resume to the same bytes, ranks write disjoint chunks.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.errors import ConfigError, DimensionError


def nan_store(path: Path, chunks: tuple[int, int, int] = (2, 8, 10)) -> Path:
    """A float32 store written by xarray, with NaN holes, ragged chunks, descending latitude."""
    rng = np.random.default_rng(0)
    time = np.datetime64("2021-01-01", "ns") + np.arange(6) * np.timedelta64(6, "h")
    lat = np.linspace(80, -80, 23)
    lon = np.arange(0, 360, 10.0)
    a = rng.normal(280, 10, (6, 23, 36)).astype(np.float32)
    a[:, 3:6, 5:9] = np.nan
    b = rng.normal(0, 5, (6, 23, 36)).astype(np.float32)
    ds = xr.Dataset(
        {"a": (("time", "lat", "lon"), a, {"units": "K"}), "b": (("time", "lat", "lon"), b)},
        coords={"time": time, "lat": lat, "lon": lon},
    )
    enc = {v: {"chunks": chunks} for v in ("a", "b")}
    ds.to_zarr(path, zarr_format=3, encoding=enc, consolidated=True)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nan_store(tmp_path_factory.mktemp("wb") / "src.zarr")


def run(writer: es.PredictionWriter, model: Any = None, stop: int | None = None) -> Any:
    for n, batch in enumerate(writer.stream):
        if stop is not None and n == stop:
            break
        writer.write(batch, model(batch) if model else {k: batch[k] for k in writer.variables})
    return writer.close()


def files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


CASES = [
    # window, stride, output chunks
    ({"lat": 8, "lon": 8}, {"lat": 5, "lon": 6}, {"time": 2, "lat": 7, "lon": 9}),
    ({"lat": 10, "lon": 12}, {"lat": 10, "lon": 12}, None),  # no overlap, padded edges
    ({"time": 2, "lat": 6, "lon": 7}, {"time": 1, "lat": 3, "lon": 4}, {"time": 4, "lat": 23}),
]


@pytest.mark.parametrize("blend", ["mean", "taper"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_identity_reconstructs_the_source(
    source: Path, tmp_path: Path, blend: str, case: int
) -> None:
    window, stride, chunks = CASES[case]
    like = es.Stream(source, window, stride, variables=["a", "b"], edges="pad", batch_size=7)
    target = tmp_path / "out.zarr"
    writer = es.PredictionWriter(
        target,
        like=like,
        blend=blend,
        chunks=chunks,
        variables={"a": {"units": "K", "long_name": "identity of a"}, "b": {}},
        attrs={"title": "identity"},
    )
    report = run(writer)
    assert report.chunks_written == report.chunks_total == writer.out.n_chunks
    assert report.chunks_skipped == 0 and writer.complete
    ref, out = xr.open_zarr(source), xr.open_zarr(target)
    for name in ("a", "b"):
        assert out[name].dtype == np.float32
        np.testing.assert_array_equal(out[name].values, ref[name].values)  # NaN where NaN
        assert out[name].dims == ref[name].dims
    for dim in ("time", "lat", "lon"):
        np.testing.assert_array_equal(out[dim].values, ref[dim].values)
    assert out["a"].attrs == {"units": "K", "long_name": "identity of a"}
    assert out.attrs["title"] == "identity"
    assert out["a"].encoding["chunks"] == tuple(
        writer.out.chunks[writer.out.dims.index(d)] for d in ("time", "lat", "lon")
    )


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(3, 20), st.integers(3, 20)),
    window=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    overlap=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    chunks=st.tuples(st.integers(1, 4), st.integers(2, 12), st.integers(2, 12)),
    blend=st.sampled_from(["mean", "taper"]),
    batch_size=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_identity_any_layout(
    tmp_path_factory, shape, window, overlap, chunks, blend, batch_size, seed
):
    """Any windows, overlaps, edges and output chunks: the identity gives the array back."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=shape).astype(np.float32)
    data[rng.random(shape) < 0.05] = np.nan
    src = es.ArraySource({"v": (("t", "y", "x"), data)}, chunks={"t": 2, "y": 5, "x": 7})
    w = {"y": window[0], "x": window[1]}
    stride = {d: max(1, w[d] - o) for d, o in zip(("y", "x"), overlap, strict=True)}
    like = es.Stream(src, w, stride, edges="pad", batch_size=batch_size, shuffle=False)
    target = tmp_path_factory.mktemp("any") / "o.zarr"
    writer = es.PredictionWriter(
        target,
        like=like,
        variables="v",
        blend=blend,
        chunks=dict(zip(("t", "y", "x"), chunks, strict=True)),
    )
    run(writer)
    import zarr

    np.testing.assert_array_equal(zarr.open_array(target / "v")[...], data)


def taper_ref(n: int) -> np.ndarray:
    return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2


@pytest.mark.parametrize("blend", ["mean", "taper"])
def test_blend_equals_numpy_reference(source: Path, tmp_path: Path, blend: str) -> None:
    """A model whose outputs differ per window: the store equals a NumPy blend of them."""
    like = es.Stream(
        source,
        {"lat": 8, "lon": 10},
        {"lat": 5, "lon": 7},
        variables=["a"],
        edges="pad",
        batch_size=5,
    )
    writer = es.PredictionWriter(
        tmp_path / "o.zarr",
        like=like,
        variables=["p"],
        blend=blend,
        dtype="float64",
        chunks={"lat": 9, "lon": 11},
    )

    def model(batch: Any) -> np.ndarray:
        noise = np.stack(
            [np.random.default_rng(int(i)).normal(size=(8, 10)) for i in batch.window_ids]
        )
        return np.nan_to_num(batch["a"].astype(np.float64)) + noise

    sums = np.zeros((6, 23, 36))
    weights = np.zeros((6, 23, 36))
    w = np.ones((8, 10)) if blend == "mean" else np.outer(taper_ref(8), taper_ref(10))
    for batch in writer.stream:
        out = model(batch)
        writer.write(batch, out)
        for k in range(batch.size):
            if batch.padded[k]:
                continue
            t, y, x = (int(batch.starts[d][k]) for d in ("time", "lat", "lon"))
            h, v = min(8, 23 - y), min(10, 36 - x)
            sums[t, y : y + h, x : x + v] += w[:h, :v] * out[k, :h, :v]
            weights[t, y : y + h, x : x + v] += w[:h, :v]
    writer.close()
    got = xr.open_zarr(tmp_path / "o.zarr")["p"].values
    np.testing.assert_allclose(got, sums / weights, rtol=1e-12, atol=0)


def test_outputs_with_other_channels(source: Path, tmp_path: Path) -> None:
    """Two stacked input channels in, three output variables out."""
    like = es.Stream(
        source,
        {"lat": 8, "lon": 8},
        {"lat": 6, "lon": 6},
        variables=["a", "b"],
        edges="pad",
        stack=True,
        batch_size=6,
    )
    writer = es.PredictionWriter(
        tmp_path / "o.zarr", like=like, variables=["s", "d", "a2"], blend="taper"
    )
    for batch in writer.stream:
        x = batch.stacked
        writer.write(batch, np.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1], 2 * x[:, 0]], axis=1))
    writer.close()
    ref, out = xr.open_zarr(source), xr.open_zarr(tmp_path / "o.zarr")
    a, b = ref["a"].values, ref["b"].values
    np.testing.assert_array_equal(out["s"].values, a + b)
    np.testing.assert_array_equal(out["d"].values, a - b)
    np.testing.assert_array_equal(out["a2"].values, 2 * a)


def test_torch_tensors_and_dataloader_workers(source: Path, tmp_path: Path) -> None:
    """Outputs as tensors from a DataLoader with worker processes: the same store."""
    torch = pytest.importorskip("torch")
    like = es.Stream(
        source,
        {"lat": 8, "lon": 8},
        {"lat": 6, "lon": 6},
        variables=["a"],
        edges="pad",
        batch_size=4,
        num_threads=1,
    )
    one = es.PredictionWriter(tmp_path / "one.zarr", like=like, variables=["a"])
    run(one)
    two = es.PredictionWriter(tmp_path / "two.zarr", like=like, variables=["a"])
    for batch in two.stream.to_torch().loader(num_workers=2):
        with torch.no_grad():
            two.write(batch, batch["a"] * 1.0)
    two.close()
    assert files(tmp_path / "one.zarr") == files(tmp_path / "two.zarr")


def test_forecast_writes_at_the_target_time(source: Path, tmp_path: Path) -> None:
    like = es.Stream(
        source,
        {"lat": 23, "lon": 36},
        variables=["a"],
        batch_size=2,
        forecast={"inputs": 1, "lead": "6h"},
    )
    writer = es.PredictionWriter(tmp_path / "o.zarr", like=like, variables=["a_next"])
    for batch in writer.stream:
        writer.write(batch, batch["a"][:, 0])  # persistence: the input step, at t + 6 h
    report = writer.close()
    assert report.uncovered == {"time": 1, "lat": 0, "lon": 0}
    assert "positions without a prediction" in report.summary()
    ref, out = xr.open_zarr(source)["a"].values, xr.open_zarr(tmp_path / "o.zarr")["a_next"].values
    assert np.isnan(out[0]).all()
    np.testing.assert_array_equal(out[1:], ref[:-1])


def test_stopped_run_resumes_to_the_same_store(source: Path, tmp_path: Path) -> None:
    like = es.Stream(
        source,
        {"lat": 8, "lon": 8},
        {"lat": 5, "lon": 5},
        variables=["a"],
        edges="pad",
        batch_size=6,
    )
    kwargs: dict[str, Any] = {"variables": ["a"], "blend": "taper", "chunks": {"lat": 8, "lon": 12}}
    run(es.PredictionWriter(tmp_path / "whole.zarr", like=like, **kwargs))
    first = es.PredictionWriter(tmp_path / "part.zarr", like=like, **kwargs)
    done = run(first, stop=7)  # "pre-empted" after 7 batches: partial sums are lost
    assert 0 < done.chunks_written < done.chunks_total
    second = es.PredictionWriter(tmp_path / "part.zarr", like=like, **kwargs)
    assert second.report.chunks_skipped == done.chunks_written
    assert len(second.sequence.runs[0]) < len(first.sequence.runs[0])
    report = run(second)
    assert report.chunks_written + report.chunks_skipped == report.chunks_total
    assert files(tmp_path / "part.zarr") == files(tmp_path / "whole.zarr")


CRASH = """
import os, sys
import earthstream as es
like = es.Stream(sys.argv[1], {"lat": 8, "lon": 8}, {"lat": 5, "lon": 5}, variables=["a"],
                 edges="pad", batch_size=6)
writer = es.PredictionWriter(sys.argv[2], like=like, variables=["a"], blend="taper",
                             chunks={"lat": 8, "lon": 12}, write_threads=1)
for n, batch in enumerate(writer.stream):
    writer.write(batch, batch["a"])
    if n == int(sys.argv[3]):
        writer._drain()   # what was finished reaches the store; then the process dies
        os._exit(3)
"""


def test_killed_process_resumes(source: Path, tmp_path: Path) -> None:
    """A process that dies mid-run (os._exit: no cleanup): the next run completes the store."""
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASH))
    done = subprocess.run(
        [sys.executable, str(script), str(source), str(tmp_path / "p.zarr"), "9"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    like = es.Stream(
        source,
        {"lat": 8, "lon": 8},
        {"lat": 5, "lon": 5},
        variables=["a"],
        edges="pad",
        batch_size=6,
    )
    kwargs: dict[str, Any] = {"variables": ["a"], "blend": "taper", "chunks": {"lat": 8, "lon": 12}}
    resumed = es.PredictionWriter(tmp_path / "p.zarr", like=like, **kwargs)
    assert resumed.report.chunks_skipped > 0
    run(resumed)
    run(es.PredictionWriter(tmp_path / "whole.zarr", like=like, **kwargs))
    assert files(tmp_path / "p.zarr") == files(tmp_path / "whole.zarr")


def test_ranks_write_disjoint_chunks(source: Path, tmp_path: Path) -> None:
    """Three ranks (explicit placement, one after the other): every chunk written once,
    the halo windows computed by both neighbours, the store equal to one rank's."""
    kwargs: dict[str, Any] = {"variables": ["a"], "blend": "taper", "chunks": {"time": 6, "lat": 6}}
    window, stride = {"lat": 8, "lon": 8}, {"lat": 5, "lon": 5}
    single = es.Stream(source, window, stride, variables=["a"], edges="pad", batch_size=4)
    run(es.PredictionWriter(tmp_path / "one.zarr", like=single, **kwargs))
    writers = []
    for rank in range(3):  # all plan before any writes, as the barriers of a process group do
        like = es.Stream(
            source,
            window,
            stride,
            variables=["a"],
            edges="pad",
            batch_size=4,
            rank=rank,
            world_size=3,
        )
        writers.append(es.PredictionWriter(tmp_path / "three.zarr", like=like, **kwargs))
    lengths = [len(w.stream) for w in writers]
    written, windows = 0, 0
    for writer in writers:
        report = run(writer)
        written += report.chunks_written
        windows += report.windows
        assert report.chunks_written == report.chunks_owned
    assert written == report.chunks_total
    assert windows > single.n_windows  # halo windows computed on both sides
    assert len(set(lengths)) == 1  # every rank the same number of batches
    assert files(tmp_path / "one.zarr") == files(tmp_path / "three.zarr")


def test_object_store_target(source: Path, tmp_path: Path) -> None:
    """An s3:// target (moto on loopback): the same arrays, and a resumed run skips chunks."""
    pytest.importorskip("moto")
    import zarr
    from obstore.store import from_url

    from earthstream.testing import moto_s3

    s3 = moto_s3()
    try:
        s3.create_bucket("preds")
        like = es.Stream(
            source,
            {"lat": 8, "lon": 8},
            {"lat": 6, "lon": 6},
            variables=["a"],
            edges="pad",
            batch_size=8,
        )
        url = "s3://preds/run/out.zarr"
        writer = es.PredictionWriter(
            url, like=like, variables=["a"], blend="taper", storage_options=s3.options()
        )
        run(writer, stop=3)
        again = es.PredictionWriter(
            url, like=like, variables=["a"], blend="taper", storage_options=s3.options()
        )
        assert again.report.chunks_skipped > 0
        run(again)
        opts = s3.options()
        client = opts.pop("client_options")
        store = zarr.storage.ObjectStore(from_url(url, client_options=client, **opts))
        out = xr.open_zarr(store)
        np.testing.assert_array_equal(out["a"].values, xr.open_zarr(source)["a"].values)
    finally:
        s3.stop()


def test_refusals(source: Path, tmp_path: Path) -> None:
    gappy = es.Stream(source, {"lat": 8, "lon": 8}, variables=["a"])  # edges="drop": rows left
    with pytest.raises(ConfigError, match="without a prediction"):
        es.PredictionWriter(tmp_path / "x.zarr", like=gappy, variables=["a"])
    like = es.Stream(
        source,
        {"lat": 8, "lon": 8},
        {"lat": 6, "lon": 6},
        variables=["a"],
        edges="pad",
        batch_size=4,
    )
    with pytest.raises(ConfigError, match="unpack"):
        es.PredictionWriter(tmp_path / "y.zarr", like=like, variables={"a": {"scale_factor": 2}})
    with pytest.raises(DimensionError, match="window positions"):
        es.PredictionWriter(tmp_path / "z.zarr", like=like, variables=["a"], dims=("lat", "lon"))
    with pytest.raises(ConfigError, match="samples_per_epoch"):
        es.PredictionWriter(
            tmp_path / "w.zarr",
            variables=["a"],
            like=es.Stream(source, {"lat": 8, "lon": 8}, edges="pad", samples_per_epoch=3),
        )
    writer = es.PredictionWriter(tmp_path / "o.zarr", like=like, variables=["a"])
    batch = next(iter(writer.stream))
    with pytest.raises(ConfigError, match="expects"):
        writer.write(batch, np.zeros((batch.size, 3, 3)))
    writer.close()
    with pytest.raises(ConfigError, match="another prediction store"):
        es.PredictionWriter(tmp_path / "o.zarr", like=like, variables=["a"], blend="taper")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="nothing there is deleted"):
        es.PredictionWriter(tmp_path / "busy", like=like, variables=["a"])
    assert (tmp_path / "busy" / "notes.txt").exists()


def test_batch_to_xarray_matches_xarray(source: Path) -> None:
    stream = es.Stream(
        source,
        {"lat": 8, "lon": 10},
        {"lat": 8, "lon": 10},
        variables=["a"],
        edges="pad",
        batch_size=5,
        seed=2,
    )
    ref = xr.open_zarr(source)
    batch = next(iter(stream))
    ds = batch.to_xarray()
    for k in range(batch.size):
        one = ds.isel(sample=k)
        t, y, x = (int(batch.starts[d][k]) for d in ("time", "lat", "lon"))
        want = ref["a"].isel(time=t, lat=slice(y, y + 8), lon=slice(x, x + 10))
        h, w = want.shape
        np.testing.assert_array_equal(one["a"].values[:h, :w], want.values)
        np.testing.assert_array_equal(one["lat"].values[:h], want["lat"].values)
        np.testing.assert_array_equal(one["lon"].values[:w], want["lon"].values)
        assert one["time"].values == want["time"].values
        assert np.isnan(one["lat"].values[h:]).all() and not one["mask"].values[h:].any()


def test_next_step_outputs_land_at_the_offset(source: Path, tmp_path: Path) -> None:
    """Windows of steps (t, t+1) with at={"time": 1}: the second step lands on t+1."""
    like = es.Stream(
        source,
        {"time": 2, "lat": 12, "lon": 12},
        {"time": 1, "lat": 9, "lon": 9},
        variables=["a"],
        edges="pad",
        batch_size=4,
    )
    writer = es.PredictionWriter(
        tmp_path / "o.zarr", like=like, variables=["a"], at={"time": 1}, blend="taper"
    )
    for batch in writer.stream:
        writer.write(batch, batch["a"][:, 1])
    report = writer.close()
    assert report.uncovered["time"] == 1
    ref, out = xr.open_zarr(source)["a"].values, xr.open_zarr(tmp_path / "o.zarr")["a"].values
    assert np.isnan(out[0]).all()
    np.testing.assert_array_equal(out[1:], ref[1:])
    with pytest.raises(ConfigError, match="inside the window"):
        es.PredictionWriter(tmp_path / "p.zarr", like=like, variables=["a"], at={"time": 2})
