"""Forecast windows: inputs up to t and targets at t + lead, checked against the time axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import earthstream as es
from earthstream.errors import ConfigError, ForecastError, TimeAxisError

H6 = np.timedelta64(6, "h")


def write_store(path: Path, times: np.ndarray, *, seed: int = 0) -> Path:
    """A (time, lat, lon) store written by xarray: 2 variables, chunked one step per chunk."""
    rng = np.random.default_rng(seed)
    shape = (len(times), 12, 16)
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), rng.normal(280, 10, shape).astype("f4")),
            "tp": (("time", "lat", "lon"), rng.gamma(1.0, 1.0, shape).astype("f4")),
        },
        coords={
            "time": times,
            "lat": np.linspace(60, 38, 12),
            "lon": np.linspace(-10, 20, 16),
        },
    )
    encoding = {v: {"chunks": (1, 6, 8)} for v in ds.data_vars}
    ds.to_zarr(path, zarr_format=3, encoding=encoding, consolidated=False)
    return path


def six_hourly(n: int, missing: tuple[int, ...] = ()) -> np.ndarray:
    times = np.datetime64("2020-01-01T00", "ns") + np.arange(n) * H6
    return np.delete(times, list(missing))


@pytest.fixture(scope="module")
def gappy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 40 six-hourly steps with steps 10 and 23..24 missing
    return write_store(tmp_path_factory.mktemp("fc") / "gap.zarr", six_hourly(40, (10, 23, 24)))


@pytest.mark.parametrize("shuffle", [False, "chunks", "full"])
@pytest.mark.parametrize(
    ("inputs", "lead"), [(2, "6h"), (2, "24h"), (3, ("6h", "24h")), (1, "12h")]
)
def test_pairs_match_the_time_axis(gappy: Path, shuffle, inputs, lead) -> None:
    ds = xr.open_zarr(gappy, chunks=None, consolidated=False).load()
    time = ds["time"].values
    present = set(time.tolist())
    forecast = es.Forecast(inputs=inputs, lead=lead)
    stream = es.Stream(
        gappy, {"lat": 6, "lon": 8}, forecast=forecast, shuffle=shuffle, batch_size=5, seed=2
    )
    leads = forecast.leads
    seen = set()
    for batch in stream:
        ref = batch.coords["reference_time"]
        for b in range(batch.size):
            t = ref[b]
            wanted_in = [t - (inputs - 1 - j) * H6 for j in range(inputs)]
            wanted_out = [t + lead_ for lead_ in leads]
            # every step of the sample, and every step between, exists
            span = np.arange(wanted_in[0], wanted_out[-1] + H6, H6)
            assert all(s in present for s in span.tolist())
            np.testing.assert_array_equal(batch.coords["input_times"][b], np.array(wanted_in))
            np.testing.assert_array_equal(batch.coords["target_times"][b], np.array(wanted_out))
            lat, lon = int(batch.starts["lat"][b]), int(batch.starts["lon"][b])
            cut = {"lat": slice(lat, lat + 6), "lon": slice(lon, lon + 8)}
            for name in ("t2m", "tp"):
                np.testing.assert_array_equal(
                    batch[name][b], ds[name].isel(cut).sel(time=wanted_in).values
                )
                np.testing.assert_array_equal(
                    batch["target/" + name][b], ds[name].isel(cut).sel(time=wanted_out).values
                )
            seen.add((t, lat, lon))
    # every reference time with a gap-free span is delivered once per window position
    expected = 0
    for t in time:
        span = np.arange(t - (inputs - 1) * H6, t + max(leads) + H6, H6)
        expected += all(s in present for s in span.tolist())
    assert len(seen) == stream.n_windows == expected * 2 * 2
    assert stream.forecast is not None and stream.forecast.dropped > 0


def test_variables_split_between_inputs_and_targets(gappy: Path) -> None:
    stream = es.Stream(
        gappy,
        {"lat": 12, "lon": 16},
        forecast={"inputs": 2, "lead": "6h", "targets": ["tp"], "input_variables": ["t2m"]},
        batch_size=4,
        shuffle=False,
    )
    batch = next(iter(stream))
    assert set(batch) == {"t2m", "target/tp"}
    assert batch["t2m"].shape == (4, 2, 12, 16)
    assert batch["target/tp"].shape == (4, 1, 12, 16)
    assert batch.dims["target/tp"] == ("time", "lat", "lon")


def test_every_thins_reference_times(gappy: Path) -> None:
    all_refs = es.Stream(gappy, {"lat": 12, "lon": 16}, forecast={"lead": "6h"}, shuffle=False)
    daily = es.Stream(
        gappy, {"lat": 12, "lon": 16}, forecast={"lead": "6h", "every": 4}, shuffle=False
    )
    refs = np.concatenate([b.coords["reference_time"] for b in daily])
    assert 0 < len(refs) < all_refs.n_windows
    hours = (refs - refs.astype("datetime64[D]")) / np.timedelta64(1, "h")
    assert set(hours.tolist()) == {0.0}


def test_encodings(gappy: Path) -> None:
    stream = es.Stream(
        gappy,
        {"lat": 6, "lon": 8},
        forecast={"inputs": 2, "lead": "6h"},
        encodings=("time", "position"),
        batch_size=8,
        shuffle=False,
    )
    batch = next(iter(stream))
    ref = batch.coords["reference_time"]
    day = (ref - ref.astype("datetime64[Y]")) / np.timedelta64(1, "D")
    hour = (ref - ref.astype("datetime64[D]")) / np.timedelta64(1, "h")
    enc = batch["time_encoding"]
    assert enc.shape == (8, 4) and enc.dtype == np.float32
    np.testing.assert_allclose(enc[:, 0], np.sin(2 * np.pi * day / 365.25), atol=1e-6)
    np.testing.assert_allclose(enc[:, 3], np.cos(2 * np.pi * hour / 24), atol=1e-6)
    lat = stream.coords["lat"]
    centre = (lat[batch.starts["lat"]] + lat[batch.starts["lat"] + 5]) / 2
    np.testing.assert_allclose(
        batch["position_encoding"][:, 0], np.sin(np.deg2rad(centre)), atol=1e-6
    )


def test_forecast_through_torch_workers(gappy: Path) -> None:
    stream = es.Stream(
        gappy, {"lat": 6, "lon": 8}, forecast={"inputs": 2, "lead": "12h"}, batch_size=8, seed=1
    )
    loader = stream.to_torch().loader(num_workers=2)
    n = 0
    for batch in loader:
        assert batch["t2m"].shape[1:] == (2, 6, 8)
        assert batch["target/t2m"].shape[1:] == (1, 6, 8)
        n += batch["t2m"].shape[0]
    assert n == stream.n_windows


def test_errors_say_what_to_fix(gappy: Path, tmp_path: Path) -> None:
    with pytest.raises(ForecastError, match="multiple of 6h"):
        es.Stream(gappy, {"lat": 6, "lon": 8}, forecast={"lead": "5h"})
    with pytest.raises(ForecastError, match="covers only"):
        es.Stream(gappy, {"lat": 6, "lon": 8}, forecast={"inputs": 40, "lead": "24h"})
    with pytest.raises(ForecastError, match="must be positive"):
        es.Forecast(lead=np.timedelta64(-6, "h"))
    with pytest.raises(ForecastError, match="does not deliver"):
        es.Stream(gappy, {"lat": 6, "lon": 8}, forecast={"targets": ["msl"]})
    with pytest.raises(ConfigError, match="leave 'time' out"):
        es.Stream(gappy, {"time": 2, "lat": 6, "lon": 8}, forecast={"lead": "6h"})
    with pytest.raises(ConfigError, match="unknown keys"):
        es.Stream(gappy, {"lat": 6, "lon": 8}, forecast={"leads": "6h"})
    # no gap-free span of 3 steps at all: every third step missing
    sparse = write_store(tmp_path / "sparse.zarr", six_hourly(20, tuple(range(2, 20, 3))))
    with pytest.raises(ForecastError, match="missing steps"):
        es.Stream(sparse, {"lat": 6, "lon": 8}, forecast={"inputs": 2, "lead": "6h"})
    # a time axis that goes backwards
    backwards = write_store(tmp_path / "back.zarr", six_hourly(8)[::-1].copy())
    with pytest.raises(TimeAxisError, match="not strictly increasing"):
        es.Stream(backwards, {"lat": 6, "lon": 8}, forecast={"lead": "6h"})


# -- stacked forecasts and rollouts (issue: weather models at the decode limit) ------------
def write_levels(path: Path, times: np.ndarray, *, seed: int = 1) -> Path:
    """Surface variables and a level variable, written by xarray; one step per chunk,
    levels whole per chunk (the ARCO-ERA5 layout), fields split in two lon chunks."""
    rng = np.random.default_rng(seed)
    n = len(times)
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), rng.normal(280, 10, (n, 10, 14)).astype("f4")),
            "z": (
                ("time", "level", "lat", "lon"),
                rng.normal(5e4, 1e3, (n, 3, 10, 14)).astype("f4"),
            ),
            "u10": (("time", "lat", "lon"), rng.normal(0, 5, (n, 10, 14)).astype("f4")),
        },
        coords={
            "time": times,
            "level": np.array([500, 850, 1000], dtype="i4"),
            "lat": np.linspace(60, 38, 10),
            "lon": np.linspace(-10, 20, 14),
        },
    )
    encoding = {
        "t2m": {"chunks": (1, 10, 7)},
        "u10": {"chunks": (1, 10, 7)},
        "z": {"chunks": (1, 3, 10, 7)},
    }
    ds.to_zarr(path, zarr_format=3, encoding=encoding, consolidated=False)
    return path


@pytest.fixture(scope="module")
def levels_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 30 six-hourly steps with step 17 missing
    return write_levels(tmp_path_factory.mktemp("fc") / "levels.zarr", six_hourly(30, (17,)))


@pytest.mark.parametrize("shuffle", [False, "chunks", "full"])
@pytest.mark.parametrize(
    ("inputs", "lead", "step"),
    [
        (2, "6h", None),
        (2, ("6h", "24h", "48h"), None),
        (3, ("12h", "36h"), "12h"),
        (1, "30h", None),
    ],
)
def test_stacked_forecast_equals_xarray(levels_store: Path, shuffle, inputs, lead, step) -> None:
    """stack=True with forecast=: one (B, C, T, H, W) array, C in the declared order (levels
    expanded), T the steps the samples read; inputs and targets are views of it, and every
    value equals xarray's isel of the same steps."""
    ds = xr.open_zarr(levels_store, chunks=None, consolidated=False).load()
    time = ds["time"].values
    forecast = es.Forecast(inputs=inputs, lead=lead, step=step)
    stream = es.Stream(
        levels_store,
        {"lat": None, "lon": None, "level": None},
        variables=["u10", "z", "t2m"],
        forecast=forecast,
        stack=True,
        shuffle=shuffle,
        batch_size=3,
        seed=4,
    )
    plan = stream.forecast
    assert plan is not None
    assert stream.channels == ("u10", "z[level=500]", "z[level=850]", "z[level=1000]", "t2m")
    n_steps = len(plan.steps)
    assert n_steps == inputs + len(forecast.leads)  # only the steps used, not the whole span
    n = 0
    for batch in stream:
        x = batch.stacked
        assert x is not None and x.shape == (batch.size, 5, n_steps, 10, 14)
        assert batch.channels == stream.channels
        for key in ("u10", "z", "t2m", "target/u10", "target/z", "target/t2m"):
            assert np.shares_memory(batch[key], x), key
        ins, outs = batch.coords["input_times"], batch.coords["target_times"]
        for b in range(batch.size):
            t_in = [int(np.flatnonzero(time == t)[0]) for t in ins[b]]
            t_out = [int(np.flatnonzero(time == t)[0]) for t in outs[b]]
            for name in ("u10", "z", "t2m"):
                np.testing.assert_array_equal(batch[name][b], ds[name].isel(time=t_in).values)
                np.testing.assert_array_equal(
                    batch["target/" + name][b], ds[name].isel(time=t_out).values
                )
            # the stacked array itself: inputs then targets along T, channels in order
            ref = np.concatenate(
                [
                    ds["u10"].isel(time=t_in + t_out).values[None],
                    ds["z"].isel(time=t_in + t_out).values.transpose(1, 0, 2, 3),
                    ds["t2m"].isel(time=t_in + t_out).values[None],
                ]
            )
            np.testing.assert_array_equal(x[b], ref)
            np.testing.assert_array_equal(x[b, :, :inputs], ref[:, :inputs])
        n += batch.size
    assert n == stream.n_windows


def test_rollout_reads_only_the_steps_it_uses(levels_store: Path) -> None:
    """A rollout of leads 6h and 42h thinned to one sample a day reads the steps of its
    inputs and leads, not every step in between; gap rules are those of the whole span."""
    ds = xr.open_zarr(levels_store, chunks=None, consolidated=False).load()
    time = ds["time"].values
    present = set(time.tolist())
    stream = es.Stream(
        levels_store,
        {"lat": 10, "lon": 14},
        variables=["t2m"],
        forecast={"inputs": 1, "lead": ("6h", "42h"), "every": 4},
        shuffle=False,
        batch_size=2,
    )
    plan = stream.forecast
    assert plan is not None and plan.steps == (0, 1, 7) and plan.length == 8
    used = set()
    for batch in stream:
        assert batch["t2m"].shape[1:] == (1, 10, 14)
        assert batch["target/t2m"].shape[1:] == (2, 10, 14)
        for b in range(batch.size):
            t = batch.coords["reference_time"][b]
            span = np.arange(t, t + 43 * np.timedelta64(1, "h"), H6)
            assert all(s in present for s in span.tolist())  # no gap anywhere in the span
            idx = [int(np.flatnonzero(time == s)[0]) for s in (t, t + H6, t + 7 * H6)]
            used.update(idx)
            np.testing.assert_array_equal(batch["t2m"][b, 0], ds["t2m"].values[idx[0]])
            np.testing.assert_array_equal(batch["target/t2m"][b], ds["t2m"].values[idx[1:]])
    report = stream.report
    assert report is not None
    decoded_steps = {index[0] for (_, index) in report.decodes}
    assert decoded_steps == used
    assert len(decoded_steps) < len(time) - 8  # the steps between leads were not read
    assert set(report.decodes.values()) == {1}


def test_stacked_forecast_through_torch(levels_store: Path) -> None:
    """Torch batches keep inputs and targets as views of the stacked tensor."""
    stream = es.Stream(
        levels_store,
        {"lat": None, "lon": None, "level": None},
        variables=["t2m", "z"],
        forecast={"inputs": 2, "lead": ("6h", "18h")},
        stack=True,
        batch_size=4,
        shuffle=False,
    )
    ref = next(iter(stream))
    batch = next(iter(stream.to_torch()))
    assert batch.stacked is not None and tuple(batch.stacked.shape) == ref.stacked.shape
    for key in ("t2m", "z", "target/t2m", "target/z"):
        tensor = batch[key]
        assert tensor.data_ptr() >= batch.stacked.data_ptr()  # a view, not a copy
        np.testing.assert_array_equal(tensor.numpy(), ref[key])
    moved = batch.to("cpu")
    np.testing.assert_array_equal(moved["target/z"].numpy(), ref["target/z"])
