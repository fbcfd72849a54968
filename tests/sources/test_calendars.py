"""Time coordinates of every CF calendar and reference date, against xarray's decoding.

Each store is written by xarray (numeric times with ``units``/``calendar``
attributes, as archives hold them).  ``source.coords["time"]`` must equal what
``xarray.open_zarr`` gives by default (``datetime64[ns]`` or cftime objects, the
same type and values), and the forecast sample times, time encodings, stats
time selections and multimodal time matching must work on both kinds of axes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import cftime
import numpy as np
import pytest
import xarray as xr

import earthstream as es
from earthstream.errors import TimeAxisError, TimeDecodeError
from earthstream.sources._cftime import decode_cf_time

N_T = 40

# id -> (units, calendar, first value, step, expected kind)
CASES: dict[str, tuple[str, str | None, float, float, str]] = {
    "hadisst-hours-since-1-1-1": ("hours since 1-1-1 00:00:0.0", "gregorian", 16382280, 24, "M"),
    "days-since-1000-standard": ("days since 1000-01-01", "standard", 365000, 1, "M"),
    "days-since-1000-proleptic": ("days since 1000-01-01", "proleptic_gregorian", 365000, 1, "M"),
    "standard-before-1582": ("days since 1500-01-01", "standard", 0, 1, "O"),
    "past-2262": ("days since 2000-01-01", "standard", 100_000, 1, "O"),
    "default-calendar": ("hours since 1979-01-01 00:00:00", None, 0, 6, "M"),
    "360_day": ("days since 2000-01-01", "360_day", 340, 1, "O"),
    "noleap": ("hours since 2001-02-25", "noleap", 0, 6, "O"),
    "365_day": ("days since 2000-02-20", "365_day", 0, 1, "O"),
    "all_leap": ("days since 2001-02-20", "all_leap", 0, 1, "O"),
    "366_day": ("days since 2001-02-20", "366_day", 0, 1, "O"),
    "julian": ("days since 1900-02-20", "julian", 0, 1, "O"),
    "float-hours": ("hours since 1900-01-01", "standard", 0.5, 0.25, "M"),
}


def _write(path: Path, units: str, calendar: str | None, first: float, step: float) -> Path:
    values = first + step * np.arange(N_T)
    if float(step).is_integer() and float(first).is_integer():
        values = values.astype("i8")
    attrs = {"units": units} | ({"calendar": calendar} if calendar else {})
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), rng.normal(280, 5, (N_T, 4, 6)).astype("f4"))},
        coords={
            "time": ("time", values, attrs),
            "lat": np.linspace(10.0, 7.0, 4),
            "lon": np.arange(6.0),
        },
    )
    ds.to_zarr(path, zarr_format=3, consolidated=False, encoding={"t2m": {"chunks": (8, 4, 6)}})
    return path


@pytest.fixture(scope="module")
def calendar_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calendars")
    return {
        case: _write(root / f"{case}.zarr", units, calendar, first, step)
        for case, (units, calendar, first, step, _) in CASES.items()
    }


def _xr_times(path: Path, use_cftime: bool | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decode: Any = True if use_cftime is None else xr.coders.CFDatetimeCoder(use_cftime=True)
        return xr.open_zarr(path, consolidated=False, decode_times=decode)["time"].values


@pytest.mark.parametrize("case", list(CASES))
def test_time_coordinate_equals_xarray(calendar_stores: dict[str, Path], case: str) -> None:
    path = calendar_stores[case]
    kind = CASES[case][4]
    expected = _xr_times(path)
    assert expected.dtype.kind == kind  # what xarray's default gives: the test's premise
    got = es.open_zarr(path).coords["time"]
    assert got.dtype == expected.dtype
    if kind == "O":
        assert [type(v) for v in got] == [type(v) for v in expected]
        # and what xarray gives when asked for cftime objects explicitly
        np.testing.assert_array_equal(got, _xr_times(path, use_cftime=True))
    np.testing.assert_array_equal(got, expected)
    raw = es.open_zarr(path, decode_times=False).coords["time"]
    assert raw.dtype.kind in "iuf"


@pytest.mark.parametrize("case", list(CASES))
def test_forecast_times_equal_xarray(calendar_stores: dict[str, Path], case: str) -> None:
    """Forecast windows on every calendar: no gaps on a regular axis (a 360_day year has
    none), input and target times equal xarray's time labels, targets its values."""
    path = calendar_stores[case]
    times = _xr_times(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path, consolidated=False).load()
    step = CASES[case][3]
    unit = CASES[case][0].split()[0]
    lead_hours = 2 * step * {"days": 24, "hours": 1}[unit]
    stream = es.Stream(
        path,
        {"lat": 4, "lon": 6},
        forecast=es.Forecast(inputs=2, lead=f"{round(lead_hours * 60)}min"),
        encodings=("time",),
        batch_size=8,
        shuffle="chunks",
        seed=1,
    )
    assert stream.forecast is not None and stream.forecast.dropped == 0
    n = 0
    for batch in stream:
        inputs, targets = batch.coords["input_times"], batch.coords["target_times"]
        assert inputs.dtype == times.dtype
        for i in range(batch.size):
            t0 = int(batch.starts["time"][i])
            np.testing.assert_array_equal(inputs[i], times[[t0, t0 + 1]])
            np.testing.assert_array_equal(targets[i], times[[t0 + 3]])
            np.testing.assert_array_equal(batch["target/t2m"][i, 0], ds["t2m"].values[t0 + 3])
        reference = batch.coords["reference_time"]
        enc = batch["time_encoding"]
        for i, ref in enumerate(reference):
            if isinstance(ref, cftime.datetime):
                year = {"360_day": 360, "noleap": 365, "all_leap": 366}.get(
                    {"365_day": "noleap", "366_day": "all_leap"}.get(ref.calendar, ref.calendar),
                    365.25,
                )
                hour = ref.hour + ref.minute / 60 + ref.second / 3600
                day = ref.dayofyr - 1 + hour / 24
            else:
                stamp = ref.astype("datetime64[us]").item()
                hour = stamp.hour + stamp.minute / 60 + stamp.second / 3600
                day = stamp.timetuple().tm_yday - 1 + hour / 24
                year = 365.25
            np.testing.assert_allclose(
                enc[i],
                [
                    np.sin(2 * np.pi * day / year),
                    np.cos(2 * np.pi * day / year),
                    np.sin(2 * np.pi * hour / 24),
                    np.cos(2 * np.pi * hour / 24),
                ],
                atol=1e-6,
            )
        n += batch.size
    assert n == N_T - 3 == stream.n_windows


def test_360_day_gaps_and_stats_selection(calendar_stores: dict[str, Path], tmp_path: Path) -> None:
    path = calendar_stores["360_day"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path, consolidated=False).load()
    # a month of a 360_day year by its label, as xarray's sel on its CFTimeIndex
    part = ds["t2m"].sel(time=slice("2000-12", "2001-01-05")).values.astype("f8")
    stats = es.compute_stats(
        path,
        per=(),
        selection={"time": slice("2000-12", "2001-01-05")},
        scheduler="sync",
        progress=False,
    )
    assert int(stats["t2m"].count) == part.size
    np.testing.assert_allclose(float(stats["t2m"].mean), part.mean(), rtol=1e-10)
    # a missing day is a gap: the samples spanning it are dropped
    gappy = tmp_path / "gappy.zarr"
    ds.isel(time=[i for i in range(N_T) if i != 20]).to_zarr(gappy, consolidated=False)
    stream = es.Stream(gappy, {"lat": 4, "lon": 6}, forecast={"inputs": 2, "lead": "1D"})
    assert stream.forecast is not None and stream.forecast.dropped == 2
    assert stream.n_windows == N_T - 1 - 2 - 2


def test_multistream_matches_cftime_steps(calendar_stores: dict[str, Path], tmp_path: Path) -> None:
    """A second 360_day store holding every other step: matched by date, not position."""
    primary = calendar_stores["360_day"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(primary, consolidated=False).load()
    other = ds.rename({"t2m": "sst"}).isel(time=slice(1, None, 2))
    other["sst"] = other["sst"] + 1000
    secondary = tmp_path / "sst.zarr"
    other.to_zarr(secondary, consolidated=False)
    stream = es.MultiStream(
        {"era5": primary, "ocean": es.Modality(secondary, missing="skip")},
        {"lat": 4, "lon": 6},
        batch_size=8,
        shuffle=False,
    )
    n = 0
    for batch in stream:
        times = batch.coords["time"]
        for i, when in enumerate(times):
            np.testing.assert_array_equal(batch["ocean"][i, 0], other["sst"].sel(time=when).values)
            n += 1
    assert n == len(other["time"])
    with pytest.raises(TimeAxisError, match="calendar"):
        es.MultiStream({"era5": primary, "other": calendar_stores["noleap"]}, {"lat": 4, "lon": 6})


@pytest.mark.parametrize(
    ("units", "calendar", "values"),
    [
        ("months since 2000-01-01", "standard", np.array([0, 1])),
        ("hours since yesterday", "standard", np.array([0, 1])),
        ("days since 2000-01-01", "no_such_calendar", np.array([0, 1])),
        ("days since 2000-01-01", "360_day", np.array([0.0, np.nan])),
    ],
)
def test_undecodable_times_raise_naming_variable(units: str, calendar: str, values) -> None:
    from xarray.coding.times import decode_cf_datetime

    with pytest.raises(TimeDecodeError) as info:
        decode_cf_time(values, {"units": units, "calendar": calendar}, name="valid_time")
    message = str(info.value)
    assert "valid_time" in message and units in message and calendar in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if np.isnan(values).any():
            # xarray turns the missing time into a real date (cftime's num2date of NaN):
            # the silent wrong date earthstream refuses
            decoded = decode_cf_datetime(values, units, calendar)
            assert decoded[1] == cftime.Datetime360Day(2000, 1, 1)
        else:
            with pytest.raises(ValueError):  # xarray cannot decode them either
                decode_cf_datetime(values, units, calendar)
