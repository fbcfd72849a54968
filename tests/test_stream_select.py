"""Streams over selections: every sample equals xarray's ``ds.sel(...).isel(window)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.errors import DimensionError, ResumeError, SelectionError

from .conftest import assert_batch_matches

SHUFFLES = [False, "chunks", "full"]

#: era5_tiled: 11 times (6-hourly from 2020-01-01), 15 latitudes 90 -> -90, 29 longitudes,
#: chunks time 3, lat 7, lon 10 (ragged edges).
SELECTIONS: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = [
    ({"lat": slice(60, -60)}, None),  # descending latitude, xarray's way round
    ({"time": slice("2020-01-01T12", "2020-01-02T12"), "lon": slice(40, 300)}, None),
    (None, {"lat": slice(3, 12), "lon": slice(-20, None), "time": slice(1, 9)}),
    ({"lat": slice(80, -30)}, {"time": slice(2, None), "lon": slice(5, 26)}),
]


def reference(ds: Any, sel: dict[str, Any] | None, isel: dict[str, Any] | None) -> Any:
    """xarray's selection (isel first, then sel, as the stream applies them)."""
    return ds.isel(isel or {}).sel(sel or {})


@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize(("sel", "isel"), SELECTIONS)
def test_samples_equal_xarray_selection(era5_tiled: Path, open_xr, shuffle, sel, isel) -> None:
    ds = reference(open_xr(era5_tiled), sel, isel)
    window, stride = {"lat": 3, "lon": 4}, {"lat": 2, "lon": 3}
    stream = es.Stream(
        era5_tiled,
        window,
        stride,
        variables=["t2m", "u10"],
        shuffle=shuffle,
        batch_size=7,
        seed=3,
        sel=sel,
        isel=isel,
    )
    for dim in ("time", "lat", "lon"):
        np.testing.assert_array_equal(stream.coords[dim], ds[dim].values)
    ids = []
    for batch in stream:
        assert_batch_matches(batch, ds, window)
        ids.extend(batch.window_ids.tolist())
    assert sorted(ids) == list(range(stream.n_windows))
    n_lat = (ds.sizes["lat"] - 3) // 2 + 1
    n_lon = (ds.sizes["lon"] - 4) // 3 + 1
    assert stream.n_windows == ds.sizes["time"] * n_lat * n_lon


@pytest.mark.parametrize("shuffle", SHUFFLES)
def test_pad_pads_past_the_selection_never_reads_beyond_it(
    era5_tiled: Path, open_xr, shuffle
) -> None:
    """Windows reaching past the selection hold the fill value (mask False), although the
    store has data there: real values outside the selection never enter a sample."""
    sel = {"lat": slice(70, -40), "lon": slice(20, 200)}
    ds = reference(open_xr(era5_tiled), sel, None)
    window = {"lat": 4, "lon": 6}
    stream = es.Stream(
        era5_tiled, window, variables=["msl"], edges="pad", shuffle=shuffle, batch_size=5, sel=sel
    )
    covered = np.zeros(ds["msl"].shape, dtype=int)
    for batch in stream:
        assert_batch_matches(batch, ds, window, pad=True)
        for i in range(batch.size):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            covered[t, y : y + 4, x : x + 6] += 1
    assert (covered == 1).all()


def test_tight_memory_and_sweeps_on_a_selection(era5_tiled: Path, open_xr) -> None:
    sel, isel = {"lat": slice(75, -75)}, {"lon": slice(3, 27)}
    ds = reference(open_xr(era5_tiled), sel, isel)
    window = {"lat": 5, "lon": 7}
    for shuffle, limit in (("full", "40KB"), ("chunks", "40KB")):
        stream = es.Stream(
            era5_tiled,
            window,
            variables=["t2m"],
            shuffle=shuffle,
            batch_size=6,
            memory_limit=limit,
            sel=sel,
            isel=isel,
            edges="pad",
        )
        n = 0
        for batch in stream:
            assert_batch_matches(batch, ds, window, pad=True)
            n += batch.size
        assert n == stream.n_windows


def test_scalar_selection_drops_the_dim_as_xarray(era5_tiled: Path, open_xr) -> None:
    ds = open_xr(era5_tiled)
    window = {"lat": 5, "lon": 5}
    stream = es.Stream(
        era5_tiled, window, variables=["t2m", "z"], sel={"level": 850}, shuffle=False, batch_size=8
    )
    assert stream.sample_dims["z"] == ("lat", "lon")
    for batch in stream:  # level iterated over its one position: samples are ds.sel(level=850)'s
        assert_batch_matches(batch, ds.sel(level=[850]), window)
        assert (batch.coords["level"] == 850).all() and (batch.starts["level"] == 0).all()
        np.testing.assert_array_equal(
            batch["z"][0],
            ds["z"]
            .sel(level=850)
            .isel(
                time=int(batch.starts["time"][0]),
                lat=slice(int(batch.starts["lat"][0]), int(batch.starts["lat"][0]) + 5),
                lon=slice(int(batch.starts["lon"][0]), int(batch.starts["lon"][0]) + 5),
            )
            .values,
        )
    kept = es.Stream(
        era5_tiled,
        {**window, "level": None},
        variables=["z"],
        sel={"level": slice(850, 850)},
        shuffle=False,
    )
    assert kept.sample_shapes["z"] == (1, 5, 5)
    with pytest.raises(DimensionError, match=r"drops the dim.*slice\(850, 850\)"):
        es.Stream(era5_tiled, {**window, "level": None}, variables=["z"], sel={"level": 850})


def test_stacked_selection(era5_tiled: Path, open_xr) -> None:
    sel = {"level": slice(850, 1000), "lat": slice(60, -60)}
    ds = reference(open_xr(era5_tiled), sel, None)
    window = {"lat": 4, "lon": 4, "level": None}
    stream = es.Stream(
        era5_tiled, window, variables=["t2m", "z"], stack=True, sel=sel, shuffle=False
    )
    assert stream.channels == ("t2m", "z[level=850]", "z[level=1000]")
    for batch in stream:
        assert_batch_matches(batch, ds, {"lat": 4, "lon": 4, "level": 2})


def test_chunks_decoded_once_on_a_selection(era5_v3: Path) -> None:
    """era5_v3 has one time step per chunk: a selection of 5 steps decodes 5 chunks per
    variable, once, even where it starts inside the latitude range of a chunk."""
    stream = es.Stream(
        era5_v3,
        {"lat": 3, "lon": 8},
        variables=["t2m", "u10"],
        sel={"time": slice("2020-01-01T06", "2020-01-02T06"), "lat": slice(70, -20)},
        shuffle="chunks",
        batch_size=4,
    )
    n = sum(b.size for b in stream)
    assert n == stream.n_windows
    assert stream.report is not None and stream.report.chunks_decoded == 5 * 2


def test_selection_errors_are_typed(era5_tiled: Path) -> None:
    window = {"lat": 3, "lon": 3}
    with pytest.raises(SelectionError, match=r"runs descending.*Write slice\(60, -60\)"):
        es.Stream(era5_tiled, window, sel={"lat": slice(-60, 60)})
    with pytest.raises(SelectionError, match=r"stride=\{'time': 2\}"):
        es.Stream(era5_tiled, window, isel={"time": slice(0, 10, 2)})
    with pytest.raises(DimensionError, match="Did you mean 'lat'"):
        es.Stream(era5_tiled, window, sel={"latitude": slice(60, -60)})
    with pytest.raises(es.errors.WindowError, match="longer than dim 'lat'"):
        es.Stream(era5_tiled, {"lat": 8}, isel={"lat": slice(0, 5)})


def test_resume_refuses_a_state_of_another_selection(era5_tiled: Path) -> None:
    def make(sel: dict[str, Any]) -> es.Stream:
        return es.Stream(
            era5_tiled, {"lat": 3, "lon": 5}, variables="t2m", batch_size=4, seed=1, sel=sel
        )

    first = make({"lat": slice(60, -60)})
    it = iter(first)
    [next(it) for _ in range(2)]
    state = first.state_dict()
    same = make({"lat": slice(60, -60)})
    same.load_state_dict(state)
    assert [b.index for b in same] == [b.index for b in it]
    # same number of windows, other rows: refused by the fingerprint
    other = make({"lat": slice(70, -50)})
    assert other.n_windows == first.n_windows
    with pytest.raises(ResumeError, match="another dataset"):
        other.load_state_dict(state)


def test_forecast_windows_inside_the_selection(era5_tiled: Path, open_xr) -> None:
    """Forecast samples on a selection are those of xarray's selected dataset: inputs and
    targets all inside it, the same values and times."""
    sel = {"time": slice("2020-01-01T06", "2020-01-03"), "lat": slice(60, -60)}
    ds = reference(open_xr(era5_tiled), sel, None)
    stream = es.Stream(
        era5_tiled,
        {"lat": 4, "lon": 4},
        variables=["t2m"],
        forecast={"inputs": 2, "lead": "12h"},
        sel=sel,
        shuffle=False,
        batch_size=64,
    )
    times = ds["time"].values
    expect = [t for t in times[1:] if t + np.timedelta64(12, "h") in set(times)]
    seen = set()
    for batch in stream:
        for i in range(batch.size):
            ref_t = batch.coords["reference_time"][i]
            seen.add(ref_t)
            y, x = int(batch.starts["lat"][i]), int(batch.starts["lon"][i])
            box = {"lat": slice(y, y + 4), "lon": slice(x, x + 4)}
            inputs = ds["t2m"].sel(time=batch.coords["input_times"][i]).isel(box)
            target = ds["t2m"].sel(time=batch.coords["target_times"][i]).isel(box)
            np.testing.assert_array_equal(batch["t2m"][i], inputs.values)
            np.testing.assert_array_equal(batch["target/t2m"][i], target.values)
            assert batch.coords["input_times"][i][0] == ref_t - np.timedelta64(6, "h")
    assert sorted(seen) == sorted(expect)


@settings(max_examples=15, deadline=None)
@given(
    t=st.integers(2, 7),
    y=st.integers(3, 13),
    data=st.data(),
    chunk_t=st.integers(1, 4),
    chunk_y=st.integers(1, 6),
    shuffle=st.sampled_from(SHUFFLES),
    edges=st.sampled_from(["drop", "pad"]),
    batch_size=st.integers(1, 9),
)
def test_exactly_once_over_shards_on_any_selection(
    t: int,
    y: int,
    data: st.DataObject,
    chunk_t: int,
    chunk_y: int,
    shuffle: Any,
    edges: str,
    batch_size: int,
) -> None:
    """Over 2 shards an epoch serves every window of the selection once, each equal to
    NumPy's slice of the selected array (the oracle: plain indexing of the array)."""
    values = np.arange(t * y * 5, dtype=np.float64).reshape(t, y, 5)
    src = es.ArraySource(
        {"v": (("t", "y", "x"), values)},
        chunks={"t": chunk_t, "y": chunk_y, "x": 2},
        coords={"y": np.linspace(10.0, -10.0, y)},
    )
    y0 = data.draw(st.integers(0, y - 1))
    y1 = data.draw(st.integers(y0 + 1, y))
    t0 = data.draw(st.integers(-t, t - 1))
    length = data.draw(st.integers(1, y1 - y0 if edges == "drop" else y1 - y0 + 2))
    stream = es.Stream(
        src,
        {"y": length, "x": 2},
        {"y": data.draw(st.integers(1, 3))},
        edges=edges,
        shuffle=shuffle,
        batch_size=batch_size,
        isel={"y": slice(y0, y1), "t": slice(t0, None)},
    )
    chosen = values[slice(t0, None), y0:y1]
    ids: list[int] = []
    for shard in range(2):
        for batch in stream.iter_shard(shard, 2):
            ids.extend(batch.window_ids.tolist())
            for i in range(batch.size):
                ti, yi, xi = (int(batch.starts[d][i]) for d in ("t", "y", "x"))
                ref = chosen[ti, yi : yi + length, xi : xi + 2]
                got = batch["v"][i]
                np.testing.assert_array_equal(got[: ref.shape[0], : ref.shape[1]], ref)
                if edges == "pad":
                    assert np.isnan(got[ref.shape[0] :]).all()
                    assert batch.mask is not None
                    assert int(batch.mask[i].sum()) == ref.size
    assert sorted(ids) == list(range(stream.n_windows))


@pytest.mark.parametrize(("start", "direct"), [(8, True), (4, False)])
def test_whole_chunk_windows_in_a_selection(tmp_path: Path, start: int, direct: bool) -> None:
    """Windows the size of a chunk are decoded straight into the batch only when the
    selection keeps them on the chunk grid; shifted by a selection they are cut from
    two chunks.  Either way every sample equals xarray's."""
    import xarray as xr

    rng = np.random.default_rng(5)
    values = rng.normal(size=(6, 24, 32)).astype("f4")
    ds = xr.Dataset({"v": (("time", "y", "x"), values)})
    path = tmp_path / "tiles.zarr"
    ds.to_zarr(path, encoding={"v": {"chunks": (1, 8, 16)}}, zarr_format=3)
    stream = es.Stream(path, {"y": 8, "x": 16}, isel={"y": slice(start, start + 16)})
    expected = xr.open_zarr(path)["v"].isel(y=slice(start, start + 16))
    seen = 0
    for batch in stream:
        for i in range(batch.size):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "y", "x"))
            want = expected.isel(time=t, y=slice(y, y + 8), x=slice(x, x + 16)).values
            np.testing.assert_array_equal(batch["v"][i], want)
            seen += 1
    assert seen == stream.n_windows == 6 * 2 * 2
    assert stream._engine is not None and stream._engine.direct is direct
