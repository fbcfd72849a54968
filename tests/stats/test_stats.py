"""compute_stats on Dask distributed against NumPy, normalization, the JSON file and the CLI."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import DimensionError, StatsFileError, StatsMismatchError
from earthstream.stats import Digest, Moments, Normalizer, Stats

NODATA = -9999.0
QS = (0.01, 0.25, 0.5, 0.99)


def _write_store(path: Path) -> dict[str, np.ndarray]:
    """A seeded store with NaNs, nodata values, ragged chunks and one chunk never written."""
    import zarr

    rng = np.random.default_rng(42)
    a = rng.normal(280.0, 15.0, (10, 12, 15)).astype("f4")
    a[rng.random(a.shape) < 0.05] = np.nan
    a[rng.random(a.shape) < 0.05] = NODATA
    a[0:3, 0:5, 0:7] = NODATA  # a whole chunk of fill: zarr does not store it
    b = rng.gamma(2.0, 3.0, (10, 3, 12, 15)) * np.array([1.0, 10.0, 100.0])[:, None, None]
    b[rng.random(b.shape) < 0.1] = np.nan
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = group.create_array(
        "a",
        shape=a.shape,
        chunks=(3, 5, 7),
        dtype="f4",
        fill_value=NODATA,
        dimension_names=("time", "lat", "lon"),
        # a v3 fill_value is data for xarray; the CF _FillValue (base64 of a
        # little-endian double, as xarray writes it) is what it masks
        attributes={"_FillValue": base64.b64encode(struct.pack("<d", NODATA)).decode()},
    )
    arr[...] = a
    arr = group.create_array(
        "b",
        shape=b.shape,
        chunks=(4, 2, 6, 8),
        dtype="f8",
        fill_value=np.nan,
        dimension_names=("time", "level", "lat", "lon"),
    )
    arr[...] = b
    for name, values in (("level", np.array([500, 850, 1000])), ("time", np.arange(10))):
        c = group.create_array(
            name, shape=values.shape, dtype=values.dtype, dimension_names=(name,)
        )
        c[...] = values
    return {"a": np.where(a == NODATA, np.nan, a).astype("f8"), "b": b}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("stats") / "nans.zarr"
    return path, _write_store(path)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One LocalCluster of 2 worker processes for the module (startup costs seconds)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def stats2(store: tuple[Path, dict[str, np.ndarray]], client: Any) -> Stats:
    path, _ = store
    # One chunk per task: many partial results, merged in the tree.
    return es.compute_stats(path, scheduler=client, quantiles=QS, task_bytes=1, progress=False)


def _check_against_numpy(stats: Stats, data: dict[str, np.ndarray]) -> None:
    a = data["a"]
    s = stats["a"]
    assert s.per == () and s.shape == ()
    assert int(s.count) == int(np.isfinite(a).sum())
    np.testing.assert_allclose(s.mean, np.nanmean(a), rtol=1e-12)
    np.testing.assert_allclose(s.std, np.nanstd(a), rtol=1e-10)
    assert float(s.min) == np.nanmin(a) and float(s.max) == np.nanmax(a)
    b = data["b"]
    s = stats["b"]
    assert s.per == ("level",) and s.shape == (3,)
    assert s.labels["level"] == (500, 850, 1000)
    axes = (0, 2, 3)
    np.testing.assert_array_equal(s.count, np.isfinite(b).sum(axis=axes))
    np.testing.assert_allclose(s.mean, np.nanmean(b, axis=axes), rtol=1e-12)
    np.testing.assert_allclose(s.std, np.nanstd(b, axis=axes), rtol=1e-10)
    np.testing.assert_array_equal(s.min, np.nanmin(b, axis=axes))
    np.testing.assert_array_equal(s.max, np.nanmax(b, axis=axes))


def _rank_error(values: np.ndarray, estimate: float, q: float) -> float:
    """How far the estimate's rank is from q (0 if it lies between the order statistics)."""
    values = np.sort(values[np.isfinite(values)])
    lo = np.searchsorted(values, estimate, side="left") / len(values)
    hi = np.searchsorted(values, estimate, side="right") / len(values)
    return max(0.0, lo - q, q - hi)


def test_two_workers_equal_numpy(stats2: Stats, store: tuple[Path, Any]) -> None:
    _, data = store
    assert stats2.run["workers"] == 2
    assert stats2.run["tasks"] == stats2.run["chunks"] > 20
    _check_against_numpy(stats2, data)
    # Quantiles are t-digest estimates: within 1/n of the exact rank on this small store.
    for q in QS:
        n = np.isfinite(data["a"]).sum()
        assert _rank_error(data["a"].ravel(), float(stats2["a"].quantiles[q]), q) <= 1.5 / n
        for lev in range(3):
            values = data["b"][:, lev].ravel()
            est = float(stats2["b"].quantiles[q][lev])
            assert _rank_error(values, est, q) <= 1.5 / np.isfinite(values).sum()


def test_one_worker_gives_the_same_result(stats2: Stats, store: tuple[Path, Any]) -> None:
    path, _ = store
    one = es.compute_stats(path, n_workers=1, quantiles=QS, task_bytes=1, progress=False)
    assert one.run["workers"] == 1
    sync = es.compute_stats(path, scheduler="sync", quantiles=QS, task_bytes=1, progress=False)
    for other in (one, sync):
        for name in ("a", "b"):
            x, y = stats2[name], other[name]
            for field in ("count", "mean", "std", "min", "max"):
                np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
            for q in QS:
                np.testing.assert_array_equal(x.quantiles[q], y.quantiles[q])


def test_selection_and_per(store: tuple[Path, Any], client: Any) -> None:
    path, data = store
    stats = es.compute_stats(
        path,
        "b",
        per=(),
        isel={"time": slice(2, 7), "level": slice(1, 3)},
        scheduler=client,
        progress=False,
    )
    part = data["b"][2:7, 1:3]
    assert stats["b"].shape == ()
    np.testing.assert_allclose(stats["b"].mean, np.nanmean(part), rtol=1e-12)
    np.testing.assert_allclose(stats["b"].std, np.nanstd(part), rtol=1e-10)
    assert stats.source["selection"] == {"time": [2, 7], "level": [1, 3]}
    with pytest.raises(DimensionError, match="Did you mean 'level'"):
        es.compute_stats(path, per=("levels",), scheduler="sync", progress=False)


def test_label_selection_on_times(tmp_path: Path) -> None:
    path = es.datasets.era5_like(tmp_path / "e.zarr", n_times=12, n_lat=8, n_lon=16)
    stats = es.compute_stats(
        path,
        "t2m",
        sel={"time": slice("2020-01-01T06", "2020-01-02T00")},
        scheduler="sync",
        progress=False,
    )
    assert stats.source["selection"] == {"time": [1, 5]}
    assert int(stats["t2m"].count) == 4 * 8 * 16


def test_digest_merge_rank_error() -> None:
    """Merged t-digests of 50 overlapping parts: rank error under 0.2% (bound: 0.31%)."""
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.lognormal(0, 1, 100_000), rng.normal(0, 1, 100_000)])
    parts = np.array_split(rng.permutation(values), 50)
    digests = [Digest.from_sorted(np.sort(p)) for p in parts]
    tree = digests
    while len(tree) > 1:
        tree = [Digest.merge(tree[i : i + 8]) for i in range(0, len(tree), 8)]
    merged = tree[0]
    assert merged.count == len(values) and len(merged.means) <= 1000
    qs = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]
    est = merged.quantiles(qs, values.min(), values.max())
    errors = [_rank_error(values, e, q) for e, q in zip(est, qs, strict=True)]
    assert max(errors) < 0.002, errors


def test_moments_merge_is_exact() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(1e4, 3.0, 10_000)
    parts = [Moments.from_groups([p.copy()]) for p in np.array_split(values, 37)]
    m = Moments.merge(parts)
    np.testing.assert_allclose(m.mean, [values.mean()], rtol=1e-14)
    np.testing.assert_allclose(m.std, [values.std()], rtol=1e-10)


def test_json_round_trip(stats2: Stats, tmp_path: Path) -> None:
    path = stats2.to_json(tmp_path / "s.stats.json")
    back = Stats.from_json(path)
    assert list(back) == list(stats2) and set(back) == {"a", "b"}
    assert back.quantile_levels == QS
    assert back.source == json.loads(json.dumps(dict(stats2.source)))
    for name in back:
        for field in ("count", "mean", "std", "min", "max"):
            np.testing.assert_array_equal(getattr(back[name], field), getattr(stats2[name], field))
        assert back[name].labels == stats2[name].labels
    assert "b[level=850]" in back.table()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(StatsFileError, match="not an earthstream statistics file"):
        Stats.from_json(bad)
    with pytest.raises(StatsFileError, match="earthstream stats URL --output"):
        Stats.from_json(tmp_path / "missing.json")


def test_empty_group_is_nan_and_null_in_json(tmp_path: Path) -> None:
    src = es.ArraySource({"x": (("t", "band"), np.array([[1.0, np.nan], [3.0, np.nan]]))})
    stats = es.compute_stats(src, scheduler="sync", progress=False)
    assert stats["x"].count.tolist() == [2, 0]
    assert np.isnan(stats["x"].mean[1]) and np.isnan(stats["x"].quantiles[0.5][1])
    back = Stats.from_json(stats.to_json(tmp_path / "x.json"))
    assert np.isnan(back["x"].std[1]) and float(back["x"].mean[0]) == 2.0


# -- normalization ---------------------------------------------------------------------
def _hand(x: np.ndarray, s: Any, level: np.ndarray | None) -> np.ndarray:
    mean = np.asarray(s.mean)
    std = np.asarray(s.std)
    if level is not None:
        mean, std = mean[level], std[level]
    return (x - mean) / std


@pytest.mark.parametrize("stack", [False, True])
def test_torch_stream_normalized(stats2: Stats, store: tuple[Path, Any], stack: bool) -> None:
    path, _ = store
    window = {"lat": 6, "lon": 5, "level": None}
    kwargs = {"batch_size": 4, "shuffle": False, "stack": stack}
    raw = list(es.Stream(path, window, **kwargs))
    ds = es.Stream(path, window, **kwargs).to_torch("cpu", normalize=stats2)
    got = list(ds)
    assert len(got) == len(raw) > 1
    levels = np.arange(3)[None, :, None, None]
    for r, g in zip(raw, got, strict=True):
        a = _hand(r["a"].astype("f8"), stats2["a"], None)
        b = _hand(r["b"], stats2["b"], levels)
        np.testing.assert_allclose(g["a"].numpy(), a, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g["b"].numpy(), b, rtol=1e-5, atol=1e-5)
        if stack:  # the views and the stacked tensor agree: normalized in place
            assert g.stacked is not None
            c = g.channels.index("b[level=850]")
            np.testing.assert_allclose(g.stacked[:, c].numpy(), b[:, 1], rtol=1e-5, atol=1e-5)


def test_iterated_level_uses_each_samples_level(stats2: Stats, store: tuple[Path, Any]) -> None:
    """Level not in the window: each sample is normalized with its own level's statistics."""
    path, _ = store
    kwargs = {"variables": "b", "batch_size": 8, "shuffle": True, "seed": 3}
    raw = list(es.Stream(path, {"lat": 6, "lon": 5}, **kwargs))
    got = list(es.Stream(path, {"lat": 6, "lon": 5}, **kwargs).to_torch(normalize=stats2))
    for r, g in zip(raw, got, strict=True):
        level = r.starts["level"][:, None, None]
        np.testing.assert_allclose(g["b"].numpy(), _hand(r["b"], stats2["b"], level), rtol=1e-6)
    assert len({int(v) for r in raw for v in r.starts["level"]}) == 3


def test_loader_and_numpy_path(stats2: Stats, store: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = store
    file = stats2.to_json(tmp_path / "n.json")
    window = {"lat": 6, "lon": 5, "level": None}
    # Variables named: open_zarr lists a store's arrays in no fixed order.
    kwargs = {"variables": ["a", "b"], "batch_size": 4, "shuffle": False, "stack": True}
    stream = es.Stream(path, window, **kwargs)
    batch = next(iter(stream.to_torch(normalize=str(file)).loader(num_workers=1)))
    first = next(iter(es.Stream(path, window, **kwargs)))
    out = Normalizer(file).apply_numpy(first)
    assert out.stacked is not None and first.stacked is not None
    assert not np.shares_memory(out.stacked, first.stacked)
    np.testing.assert_allclose(batch.stacked.numpy(), out.stacked, rtol=1e-6)
    c = out.channels.index("b[level=500]")
    np.testing.assert_allclose(out["b"], out.stacked[:, c : c + 3], rtol=0)
    np.testing.assert_allclose(
        out["b"], _hand(first["b"], stats2["b"], np.arange(3)[:, None, None])
    )


def test_mismatched_stats_raise_typed_errors(store: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = store
    window = {"lat": 6, "lon": 5, "level": None}
    only_a = es.compute_stats(path, "a", scheduler="sync", progress=False)
    file = only_a.to_json(tmp_path / "a.json")
    with pytest.raises(StatsMismatchError) as info:
        es.Stream(path, window).to_torch(normalize=file)
    message = str(info.value)
    assert "no entry for b" in message and "Recompute them with those variables" in message
    assert "--variables a,b" in message or "--variables b,a" in message
    assert str(file) in message
    two_levels = es.compute_stats(
        path, "b", isel={"level": slice(0, 2)}, scheduler="sync", progress=False
    )
    with pytest.raises(StatsMismatchError, match="have 2 'level' entries but 'b' here has 3"):
        es.Stream(path, window, variables="b").to_torch(normalize=two_levels)
    with pytest.raises(es.errors.ConfigError, match="normalize="):
        es.Stream(path, window).to_torch(normalize=42)


# -- CLI -----------------------------------------------------------------------------------
def test_cli_writes_the_file(
    store: tuple[Path, Any],
    client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from earthstream.cli import main

    path, data = store
    monkeypatch.chdir(tmp_path)
    address = client.scheduler.address
    argv = ["stats", str(path), "--variables", "a", "--scheduler", address, "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "MB/s" in out and "chunks/s" in out and "written:" in out
    stats = Stats.from_json(tmp_path / "nans.stats.json")
    assert list(stats) == ["a"]
    np.testing.assert_allclose(stats["a"].mean, np.nanmean(data["a"]), rtol=1e-12)
    argv = ["stats", str(path), "--scheduler", "sync", "--per", "", "--time", "0:4"]
    assert main([*argv, "--output", "x.json", "--no-progress"]) == 0
    stats = Stats.from_json(tmp_path / "x.json")
    assert stats["b"].shape == () and stats.source["selection"] == {"time": [0, 4]}


def test_large_chunks_same_in_workers_and_here(client: Any) -> None:
    """Sums do not depend on the process's BLAS threads (np.dot's would)."""
    values = np.random.default_rng(5).normal(300.0, 20.0, (4, 500_000))
    src = es.ArraySource({"x": (("t", "i"), values)}, chunks={"t": 1})
    there = es.compute_stats(src, scheduler=client, progress=False)
    here = es.compute_stats(src, scheduler="sync", progress=False)
    assert float(there["x"].std) == float(here["x"].std)
    np.testing.assert_allclose(there["x"].std, values.std(), rtol=1e-12)
