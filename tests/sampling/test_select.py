"""Selections resolve to the positions xarray's ``sel``/``isel`` select (xarray is the oracle)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from earthstream.errors import ConfigError, DimensionError, SelectionError
from earthstream.sampling import build_window_grid
from earthstream.sampling._select import Span, resolve_selection

LAT_DOWN = np.linspace(89.5, -89.5, 180)  # ERA5 / HadISST order
LAT_UP = LAT_DOWN[::-1].copy()
TIMES = np.arange("1978-01-01", "2021-01-01", dtype="datetime64[M]").astype("datetime64[ns]")
HOURS = np.arange("2015-01-01", "2015-01-05", dtype="datetime64[h]").astype("datetime64[ns]")


def _oracle(values: np.ndarray, dim: str, key: Any, *, by: str) -> tuple[int, int, bool]:
    """Positions xarray selects: where the selected labels sit in the original coordinate."""
    da = xr.DataArray(np.arange(len(values)), dims=[dim], coords={dim: values})
    picked = da.sel({dim: key}) if by == "sel" else da.isel({dim: key})
    positions = np.atleast_1d(picked.values)
    assert (np.diff(positions) == 1).all()
    return int(positions[0]), int(positions[-1]) + 1, picked.ndim == 0


def _ours(values: np.ndarray, dim: str, key: Any, *, by: str) -> tuple[int, int, bool]:
    spans = resolve_selection({dim: len(values)}, {dim: values}, **{by: {dim: key}})
    span = spans[dim]
    return span.start, span.stop, span.scalar


@pytest.mark.parametrize(
    ("values", "key"),
    [
        (LAT_DOWN, slice(29.5, -29.5)),
        (LAT_DOWN, slice(60, -60)),
        (LAT_DOWN, slice(None, 0)),
        (LAT_DOWN, slice(0, None)),
        (LAT_DOWN, slice(100, 80)),  # partly outside: clipped as xarray clips
        (LAT_DOWN, 29.5),
        (LAT_UP, slice(-29.5, 29.5)),
        (LAT_UP, slice(-60, 60.2)),
        (LAT_UP, -89.5),
        (TIMES, slice("1979", "2015")),  # partial dates: the whole of 2015
        (TIMES, slice("1979-06", "1980-02-15")),
        (TIMES, slice(np.datetime64("2016-01-01"), None)),
        (TIMES, "2016"),  # a partial date selects a period and keeps the dim
        (TIMES, "2016-03-01"),  # exact: scalar
        (HOURS, "2015-01-03"),
        (HOURS, slice("2015-01-02T06", "2015-01-03")),
        (np.array([500, 850, 1000]), 850),
        (np.array([500, 850, 1000]), slice(850, 850)),  # one element, dim kept
    ],
)
def test_sel_matches_xarray(values: np.ndarray, key: Any) -> None:
    dim = "time" if values.dtype.kind == "M" else "lat"
    assert _ours(values, dim, key, by="sel") == _oracle(values, dim, key, by="sel")


@pytest.mark.parametrize("key", [slice(3, 9), slice(-5, None), slice(None, 2), 0, -1, 7])
def test_isel_matches_xarray(key: Any) -> None:
    assert _ours(LAT_DOWN, "lat", key, by="isel") == _oracle(LAT_DOWN, "lat", key, by="isel")


def test_isel_then_sel_compose_as_in_xarray() -> None:
    da = xr.DataArray(np.arange(180), dims=["lat"], coords={"lat": LAT_DOWN})
    expect = da.isel(lat=slice(10, 170)).sel(lat=slice(60, -60)).values
    span = resolve_selection(
        {"lat": 180},
        {"lat": LAT_DOWN},
        isel={"lat": slice(10, 170)},
        sel={"lat": slice(60, -60)},
    )["lat"]
    assert np.arange(180)[span.as_slice()].tolist() == expect.tolist()
    based = resolve_selection(
        {"lat": 180}, {"lat": LAT_DOWN}, isel={"lat": slice(1, 3)}, base={"lat": Span(10, 20)}
    )
    assert based["lat"] == Span(11, 13)


def test_inverted_label_slices_say_which_way_the_coordinate_runs() -> None:
    with pytest.raises(SelectionError, match=r"runs descending.*Write slice\(29.5, -29.5\)"):
        resolve_selection({"lat": 180}, {"lat": LAT_DOWN}, sel={"lat": slice(-29.5, 29.5)})
    with pytest.raises(SelectionError, match=r"runs ascending.*Write slice\(-60, 60\)"):
        resolve_selection({"lat": 180}, {"lat": LAT_UP}, sel={"lat": slice(60, -60)})
    with pytest.raises(SelectionError, match=r"inverted.*Write slice\('1979', '2015'\)"):
        resolve_selection(
            {"time": len(TIMES)}, {"time": TIMES}, sel={"time": slice("2015", "1979")}
        )


def test_empty_and_bad_selections_are_typed() -> None:
    sizes, coords = {"lat": 180}, {"lat": LAT_DOWN}
    with pytest.raises(SelectionError, match=r"selects nothing.*no label lies in that range"):
        resolve_selection(sizes, coords, sel={"lat": slice(120, 100)})
    with pytest.raises(SelectionError, match=r"not a label of 'lat'.*must match exactly"):
        resolve_selection(sizes, coords, sel={"lat": 29.0})
    with pytest.raises(SelectionError, match=r"has a step.*stride=\{'lat': 2\}"):
        resolve_selection(sizes, coords, sel={"lat": slice(60, -60, 2)})
    with pytest.raises(SelectionError, match=r"has a step"):
        resolve_selection(sizes, coords, isel={"lat": slice(0, 10, 3)})
    with pytest.raises(SelectionError, match=r"selects nothing.*Write slice\(2, 9\)"):
        resolve_selection(sizes, coords, isel={"lat": slice(9, 2)})
    with pytest.raises(SelectionError, match="out of range"):
        resolve_selection(sizes, coords, isel={"lat": 180})
    with pytest.raises(SelectionError, match="lists of labels"):
        resolve_selection(sizes, coords, sel={"lat": [29.5, 30.5]})
    with pytest.raises(SelectionError, match="isel takes positions"):
        resolve_selection(sizes, coords, isel={"lat": slice(29.5, -29.5)})
    with pytest.raises(SelectionError, match="no coordinate values"):
        resolve_selection({"x": 4}, {}, sel={"x": slice(1, 2)})
    with pytest.raises(SelectionError, match="already selected by a single"):
        resolve_selection(sizes, coords, isel={"lat": 3}, sel={"lat": slice(None, None)})
    with pytest.raises(DimensionError, match="Did you mean 'lat'"):
        resolve_selection(sizes, coords, sel={"lats": slice(1, 2)})
    with pytest.raises(ConfigError, match="must be a mapping"):
        resolve_selection(sizes, coords, sel=[("lat", 1)])  # type: ignore[arg-type]
    unsorted = np.array([3.0, 1.0, 2.0])
    with pytest.raises(SelectionError, match="cannot be looked up"):
        resolve_selection({"x": 3}, {"x": unsorted}, sel={"x": slice(1.5, 2.5)})


def test_cftime_axis_uses_xarrays_cftimeindex() -> None:
    cftime = pytest.importorskip("cftime")
    times = np.array([cftime.Datetime360Day(2000, m, d) for m in (1, 2, 3) for d in (1, 30)])
    da = xr.DataArray(np.arange(len(times)), dims=["time"], coords={"time": times})
    expect = da.sel(time=slice("2000-01-15", "2000-02")).values
    span = resolve_selection(
        {"time": len(times)}, {"time": times}, sel={"time": slice("2000-01-15", "2000-02")}
    )["time"]
    assert np.arange(len(times))[span.as_slice()].tolist() == expect.tolist()


# -- the window grid over a selection ---------------------------------------------------------
@settings(max_examples=120, deadline=None)
@given(
    full=st.integers(1, 40),
    data=st.data(),
    length=st.integers(1, 9),
    stride=st.integers(1, 6),
    chunk=st.integers(1, 12),
    edges=st.sampled_from(["drop", "pad"]),
)
def test_grid_over_a_selection_covers_it_once_in_real_chunks(
    full: int, data: st.DataObject, length: int, stride: int, chunk: int, edges: str
) -> None:
    """Windows of a selection are those of the selected array (as after xarray's isel),
    each once; chunk groups are the source's chunks the window starts fall in."""
    start = data.draw(st.integers(0, full - 1))
    stop = data.draw(st.integers(start + 1, full))
    size = stop - start
    if edges == "drop" and length > size:
        return
    grid = build_window_grid(
        {"y": size}, {"y": length}, {"y": stride}, edges, {"y": chunk}, origins={"y": start}
    )
    plain = build_window_grid({"y": size}, {"y": length}, {"y": stride}, edges, {"y": size})
    ids = np.arange(grid.n_windows)
    assert grid.starts_of(ids).tolist() == plain.starts_of(ids).tolist()
    groups = grid.block_windows(np.arange(int(np.prod(grid.block_counts()))))
    assert sorted(groups.tolist()) == ids.tolist()  # every window once
    absolute = grid.starts_of(groups)[:, 0] + start
    owner = absolute // chunk
    sizes = grid.block_sizes()
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    for g in range(len(sizes)):  # a group is one source chunk
        assert len(set(owner[bounds[g] : bounds[g + 1]].tolist())) == 1


def test_scalar_labels_on_float32_coordinates_as_xarray() -> None:
    lat = np.linspace(90, -90, 15).astype("f4")  # labels like 77.14286 in float32
    label = float(lat[3])  # what a user copies from a printout, as float64
    assert _ours(lat, "lat", label, by="sel") == _oracle(lat, "lat", label, by="sel")
