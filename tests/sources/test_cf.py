"""CF decoding (scale, offset, fill values, _Unsigned) equals xarray.open_zarr's.

Every store here is written by xarray (``to_zarr``, Zarr v2 and v3) and read back
by ``xarray.open_zarr`` with its defaults: that read is the reference for every
sample earthstream delivers (exact, NaN for NaN; rounded to float32 where
earthstream delivers float32), for ``compute_stats`` (NumPy over xarray's
values) and for the decode-once count.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.sources._cf import CFOptions, cf_coder, decode_reference

SHAPE = (6, 10, 12)
CHUNKS = (2, 5, 4)
WINDOW = {"y": 5, "x": 6}  # crosses chunk borders along x


def _field(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    values = rng.uniform(lo, hi, SHAPE)
    values[rng.random(SHAPE) < 0.1] = np.nan
    values[2:4, 5:10, 8:12] = np.nan  # one whole chunk missing (v2: not even stored)
    return values


# name -> (physical values between, in-memory dtype, encoding)
CASES: dict[str, tuple[tuple[float, float], str, dict[str, Any]]] = {
    "int16-packed": (
        (230.0, 320.0),
        "f8",
        {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32768},
    ),
    "int8-packed": (
        (-20.0, 40.0),
        "f8",
        {"dtype": "int8", "scale_factor": 0.25, "add_offset": 10.0, "_FillValue": -128},
    ),
    "uint16-packed": (
        (0.0, 60.0),
        "f8",
        {"dtype": "uint16", "scale_factor": 0.001, "_FillValue": 65535},
    ),
    "unsigned-int8": (
        (0.0, 120.0),
        "f8",
        {"dtype": "int8", "_Unsigned": "true", "scale_factor": 0.5, "_FillValue": -1},
    ),
    "int32-packed": (
        (-1000.0, 1000.0),
        "f8",
        {"dtype": "int32", "scale_factor": 1e-4, "add_offset": 5.0, "_FillValue": -(2**31)},
    ),
    "int16-fill-only": ((-300.0, 300.0), "f8", {"dtype": "int16", "_FillValue": -999}),
    "float-fill": ((-50.0, 50.0), "f4", {"_FillValue": -1e30}),
    "float-missing-value": ((-50.0, 50.0), "f4", {"missing_value": -9999.0}),
    "float-nan-fill": ((-50.0, 50.0), "f4", {}),
    "float64-packed-float32": (
        (0.0, 1.0),
        "f8",
        {"dtype": "float32", "scale_factor": 0.5, "add_offset": 1.0, "_FillValue": -1.0},
    ),
}


@pytest.fixture(scope="module")
def cf_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    root = tmp_path_factory.mktemp("cf")
    stores: dict[tuple[str, int], Path] = {}
    for i, (case, ((lo, hi), dtype, encoding)) in enumerate(CASES.items()):
        rng = np.random.default_rng(i)
        values = _field(rng, lo, hi)
        if encoding.get("dtype", "").startswith(("int", "uint")) and "scale_factor" not in encoding:
            values = np.round(values)
        ds = xr.Dataset(
            {"v": (("time", "y", "x"), values.astype(dtype))},
            coords={
                "time": np.datetime64("2020-01-01", "ns")
                + np.arange(SHAPE[0]) * np.timedelta64(6, "h"),
                "y": np.linspace(50.0, 40.0, SHAPE[1]),
                "x": np.arange(SHAPE[2], dtype="f8"),
            },
        )
        for fmt in (2, 3):
            path = root / f"{case}-v{fmt}.zarr"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.to_zarr(
                    path,
                    zarr_format=fmt,
                    consolidated=False,
                    encoding={"v": {**encoding, "chunks": CHUNKS}},
                )
            # and one chunk that holds data deleted: it reads as the Zarr fill value
            key = ("v/0.1.0" if fmt == 2 else "v/c/0/1/0").split("/")
            (path.joinpath(*key)).unlink()
            stores[case, fmt] = path
    return stores


def _xr(path: Path) -> xr.DataArray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(path, consolidated=False, chunks=None)["v"].load()


def _expected(ref: xr.DataArray, delivered: np.dtype[Any]) -> np.ndarray:
    """xarray's values, rounded once to the dtype earthstream delivers."""
    return ref.values.astype(delivered)


PARAMS = [(case, fmt) for case in CASES for fmt in (2, 3)]


@pytest.mark.parametrize(("case", "fmt"), PARAMS)
@pytest.mark.parametrize("decoded_dtype", ["float32", "xarray"])
def test_every_sample_equals_xarray(
    cf_stores: dict[tuple[str, int], Path], case: str, fmt: int, decoded_dtype: str
) -> None:
    path = cf_stores[case, fmt]
    ref = _xr(path)
    source = es.open_zarr(path, decoded_dtype=decoded_dtype)
    info = source.variables["v"]
    if decoded_dtype == "xarray":
        assert info.dtype == ref.dtype, (info.dtype, ref.dtype)
    elif ref.dtype == np.float64 and info.stored_dtype != np.float64:
        assert info.dtype == np.float32
    else:
        assert info.dtype == ref.dtype
    expected = _expected(ref, info.dtype)
    stream = es.Stream(source, WINDOW, batch_size=7, shuffle="chunks", seed=1)
    seen = 0
    for batch in stream:
        data = batch["v"]
        assert data.dtype == info.dtype
        for i in range(batch.size):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "y", "x"))
            np.testing.assert_array_equal(data[i], expected[t, y : y + 5, x : x + 6])
            seen += 1
    assert seen == stream.n_windows
    # every chunk on its own, the missing ones included (read_chunk -> fill_value)
    for index in itertools.product(*(range(n) for n in info.chunk_grid)):
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, CHUNKS, strict=True))
        chunk = source.read_chunk("v", index)
        got = np.full(CHUNKS, info.fill_value, info.dtype) if chunk is None else chunk
        np.testing.assert_array_equal(got, expected[region])


@pytest.mark.parametrize(("case", "fmt"), PARAMS)
def test_raw_values_without_decoding(
    cf_stores: dict[tuple[str, int], Path], case: str, fmt: int
) -> None:
    """decode_cf=False and mask_and_scale=False give the stored values (zarr-python's read)."""
    path = cf_stores[case, fmt]
    stored = zarr.open_array(str(path), path="v", mode="r")[...]
    for source in (
        es.open_zarr(path, decode_cf=False),
        es.open_zarr(path, mask_and_scale=False),
    ):
        info = source.variables["v"]
        assert info.cf is None and info.dtype == stored.dtype.newbyteorder("=")
        batch = next(iter(es.Stream(source, {"y": 10, "x": 12}, batch_size=6, shuffle=False)))
        np.testing.assert_array_equal(batch["v"], stored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = xr.open_zarr(path, consolidated=False, mask_and_scale=False)["v"].values
    np.testing.assert_array_equal(raw, stored)


@pytest.mark.parametrize(("case", "fmt"), PARAMS)
def test_stats_equal_numpy_over_xarray(
    cf_stores: dict[tuple[str, int], Path], case: str, fmt: int
) -> None:
    path = cf_stores[case, fmt]
    source = es.open_zarr(path)
    values = _expected(_xr(path), source.variables["v"].dtype).astype(np.float64)
    stats = es.compute_stats(source, scheduler="sync", per=(), progress=False, task_bytes=1)
    s = stats["v"]
    finite = values[np.isfinite(values)]
    assert int(s.count) == finite.size
    np.testing.assert_allclose(float(s.mean), finite.mean(), rtol=1e-10)
    np.testing.assert_allclose(float(s.std), finite.std(), rtol=1e-8, atol=1e-12)
    assert float(s.min) == finite.min() and float(s.max) == finite.max()
    # raw values with nodata="fill": what xarray masks is left out, in stored units
    raw = es.compute_stats(
        es.open_zarr(path, decode_cf=False), scheduler="sync", per=(), progress=False
    )
    assert int(raw["v"].count) == finite.size


def test_decoding_keeps_decode_once(cf_stores: dict[tuple[str, int], Path]) -> None:
    """Decoded and raw streams decode the same chunks, each once (windows inside chunks)."""
    counts = []
    for decode in (True, False):
        source = es.open_zarr(cf_stores["int16-packed", 2], decode_cf=decode)
        stream = es.Stream(source, {"y": 5, "x": 4}, batch_size=5, shuffle="chunks", seed=3)
        n = sum(batch.size for batch in stream)
        report = stream.report
        assert n == stream.n_windows
        assert report is not None
        assert max(report.decodes.values()) == 1
        counts.append((report.chunks_decoded, report.chunks_missing))
    assert counts[0] == counts[1]


def test_v3_fill_value_is_data_v2_fill_value_is_masked(tmp_path: Path) -> None:
    """xarray's Zarr backend: a v2 fill_value masks, a v3 fill_value does not."""
    data = np.array([[0.0, 1.0, 2.0, 0.0]], dtype="f4")
    for fmt in (2, 3):
        group = zarr.open_group(str(tmp_path / f"z{fmt}.zarr"), mode="w", zarr_format=fmt)
        extra = (
            {"dimension_names": ("y", "x")}
            if fmt == 3
            else {"attributes": {"_ARRAY_DIMENSIONS": ["y", "x"]}}
        )
        arr = group.create_array(
            "v", shape=(1, 8), chunks=(1, 4), dtype="f4", fill_value=0, **extra
        )
        arr[:, :4] = data  # the second chunk is never written
        ref = _xr(tmp_path / f"z{fmt}.zarr")
        source = es.open_zarr(tmp_path / f"z{fmt}.zarr")
        got = next(iter(es.Stream(source, {"y": 1, "x": 8}, shuffle=False)))["v"][0]
        np.testing.assert_array_equal(got, ref.values)
        zeros = int((ref.values == 0).sum())
        assert zeros == (0 if fmt == 2 else 6)
        stats = es.compute_stats(source, scheduler="sync", per=(), progress=False)
        assert int(stats["v"].count) == int(np.isfinite(ref.values).sum())


def test_reference_and_fast_paths_agree() -> None:
    """The lookup table, the fused passes and the step-by-step reference give the same
    bits, and the reference equals xarray's coders (``decode_cf_variable``)."""
    rng = np.random.default_rng(0)
    cases = [
        ({"scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32768}, "int16"),
        ({"scale_factor": np.float32(0.1), "add_offset": np.float32(3.0)}, "int32"),
        ({"scale_factor": 0.5, "missing_value": [1, 2]}, "int32"),
        ({"_FillValue": np.float32(-9999.0)}, "float32"),
        ({"missing_value": -9999.0}, "float32"),
        ({"scale_factor": 2.0}, "float32"),
        ({"_Unsigned": "true", "_FillValue": -1}, "int32"),
        ({"_Unsigned": "true", "_FillValue": -1, "scale_factor": 0.5}, "int8"),
        ({"_Unsigned": "false", "_FillValue": np.uint8(255)}, "uint8"),
        ({"add_offset": 10}, "int64"),
        ({"_FillValue": 7}, "uint16"),
    ]
    for attrs, dtype in cases:
        kind = np.dtype(dtype).kind
        if kind in "iu":
            info = np.iinfo(dtype)
            raw = rng.integers(info.min, info.max, 5000, dtype=dtype, endpoint=True)
            raw[:3] = [1, 2, 7]
            raw[3:6] = np.array([-1, -1, -32768]).astype(dtype)
        else:
            raw = rng.normal(0, 100, 5000).astype(dtype)
            raw[::7] = -9999.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xr_values = xr.conventions.decode_cf_variable(
                "v", xr.Variable(("x",), raw, dict(attrs))
            ).values
        for decoded in ("float32", "xarray"):
            coder = cf_coder("v", attrs, np.dtype(dtype), CFOptions(decoded_dtype=decoded))
            assert coder is not None, attrs
            expected = decode_reference(coder, raw)
            if decoded == "xarray":
                assert expected.dtype == xr_values.dtype, (attrs, dtype)
            np.testing.assert_array_equal(expected, xr_values.astype(expected.dtype))
            got = coder.decode(raw, np.empty(raw.shape, coder.dtype))
            np.testing.assert_array_equal(got, expected)
            strided = np.empty((raw.size, 2), coder.dtype)[:, 0]
            np.testing.assert_array_equal(coder.decode(raw, strided), expected)


def test_forecast_targets_are_decoded(cf_stores: dict[tuple[str, int], Path]) -> None:
    path = cf_stores["int16-packed", 2]
    expected = _expected(_xr(path), np.dtype(np.float32))
    stream = es.Stream(
        path, {"y": 10, "x": 12}, forecast={"inputs": 2, "lead": "12h"}, batch_size=4
    )
    n = 0
    for batch in stream:
        for i in range(batch.size):
            t0 = int(batch.starts["time"][i])
            np.testing.assert_array_equal(batch["v"][i], expected[t0 : t0 + 2])
            np.testing.assert_array_equal(batch["target/v"][i, 0], expected[t0 + 3])
            n += 1
    assert n == SHAPE[0] - 3


def test_multistream_secondary_is_decoded(tmp_path: Path) -> None:
    """A packed int16 store as the second modality: its windows equal xarray's values."""
    rng = np.random.default_rng(5)
    coords = {
        "time": np.datetime64("2020-01-01", "ns") + np.arange(4) * np.timedelta64(6, "h"),
        "lat": 50.0 - np.arange(8.0),
        "lon": np.arange(12.0),
    }
    shape = (4, 8, 12)
    xr.Dataset({"t2m": (("time", "lat", "lon"), rng.normal(280, 5, shape))}, coords=coords).to_zarr(
        tmp_path / "primary.zarr", zarr_format=3, consolidated=False
    )
    sst = rng.uniform(270, 300, shape)
    sst[:, :3, :4] = np.nan  # land: a whole chunk of fill values
    xr.Dataset({"sst": (("time", "lat", "lon"), sst)}, coords=coords).to_zarr(
        tmp_path / "sst.zarr",
        zarr_format=2,
        consolidated=False,
        encoding={
            "sst": {
                "dtype": "int16",
                "scale_factor": 0.001,
                "add_offset": 285.0,
                "_FillValue": -32768,
                "chunks": (1, 3, 4),
            }
        },
    )
    expected = _expected(
        xr.open_zarr(tmp_path / "sst.zarr", consolidated=False)["sst"].load(), np.dtype("f4")
    )
    stream = es.MultiStream(
        {"era5": tmp_path / "primary.zarr", "ocean": tmp_path / "sst.zarr"},
        {"lat": 4, "lon": 6},
        batch_size=5,
        shuffle="chunks",
    )
    n = 0
    for batch in stream:
        assert batch["ocean"].dtype == np.float32
        for i in range(batch.size):
            t, r, c = (int(batch.starts[d][i]) for d in ("time", "lat", "lon"))
            np.testing.assert_array_equal(batch["ocean"][i, 0], expected[t, r : r + 4, c : c + 6])
            n += 1
    assert n == stream.n_windows
    assert np.isnan(expected).any()


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(["int8", "uint8", "int16", "uint16", "int32", "float32"]),
    scale=st.one_of(st.none(), st.floats(1e-4, 1e3, allow_nan=False)),
    offset=st.one_of(st.none(), st.floats(-1e5, 1e5, allow_nan=False)),
    fill=st.one_of(st.none(), st.integers(-128, 127)),
    missing=st.one_of(st.none(), st.integers(0, 100)),
    unsigned=st.sampled_from([None, "true", "false"]),
    seed=st.integers(0, 2**16),
)
def test_any_cf_attributes_decode_as_xarray(dtype, scale, offset, fill, missing, unsigned, seed):
    """Property: for any mix of CF attributes, the chunk decoder's values (table or fused
    passes) equal xarray's coders (``decode_cf_variable``), NaN for NaN, in xarray's dtype."""
    attrs: dict[str, Any] = {}
    for key, value in (
        ("scale_factor", scale),
        ("add_offset", offset),
        ("_FillValue", fill),
        ("missing_value", missing),
        ("_Unsigned", unsigned),
    ):
        if value is not None:
            attrs[key] = value
    kind = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    if kind.kind in "iu":
        info = np.iinfo(kind)
        raw = rng.integers(info.min, info.max, 300, dtype=kind, endpoint=True)
        if fill is not None and info.min <= fill <= info.max:
            raw[::5] = fill
    else:
        raw = rng.normal(0, 100, 300).astype(kind)
        if fill is not None:
            raw[::5] = fill
    if missing is not None:
        raw[1::7] = missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reference = xr.conventions.decode_cf_variable(
                "v", xr.Variable(("x",), raw, dict(attrs))
            ).values
        except (OverflowError, ValueError):
            return  # xarray refuses the attributes (e.g. a fill value the type cannot hold)
    coder = cf_coder("v", attrs, kind, CFOptions(decoded_dtype="xarray"))
    if coder is None:
        np.testing.assert_array_equal(raw, reference)
        return
    got = coder.decode(raw)
    assert got.dtype == reference.dtype
    np.testing.assert_array_equal(got, reference)
