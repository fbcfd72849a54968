"""The Zarr source: metadata at open, chunk decoding equal to zarr-python, errors."""

from __future__ import annotations

import itertools
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import earthstream as es
from earthstream.errors import (
    ChunkDecodeError,
    ConfigError,
    StoreNotFoundError,
    VariableNotFoundError,
)


def _all_chunks(source: es.ZarrSource, name: str) -> list[tuple[int, ...]]:
    return list(itertools.product(*[range(g) for g in source.variables[name].chunk_grid]))


def _assert_chunks_equal_zarr(path: Path, source: es.ZarrSource) -> None:
    group = zarr.open_group(str(path), mode="r")
    for name, info in source.variables.items():
        ref = group[name][...]
        for index in _all_chunks(source, name):
            region = tuple(
                slice(i * c, min((i + 1) * c, s))
                for i, c, s in zip(index, info.chunks, info.shape, strict=True)
            )
            chunk = source.read_chunk(name, index)
            assert chunk is not None
            valid = tuple(slice(0, r.stop - r.start) for r in region)
            np.testing.assert_array_equal(chunk[valid], ref[region])


@pytest.mark.parametrize("fixture", ["era5_v3", "era5_tiled", "era5_v2", "era5_sharded"])
def test_every_chunk_decodes_like_zarr_python(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    source = es.open_zarr(path)
    assert all(spec.fast for spec in source.specs.values())
    _assert_chunks_equal_zarr(path, source)


def test_metadata(era5_tiled: Path, open_xr) -> None:
    source = es.open_zarr(era5_tiled)
    ds = open_xr(era5_tiled)
    assert set(source.variables) == set(ds.data_vars)
    for name, info in source.variables.items():
        assert info.dims == ds[name].dims
        assert info.shape == ds[name].shape
        assert info.dtype == ds[name].dtype
        assert np.isnan(info.fill_value)
    assert source.variables["z"].chunks == (3, 2, 7, 10)
    assert source.variables["t2m"].codecs == ("bytes", "blosc")
    for dim in ("time", "lat", "lon", "level"):
        np.testing.assert_array_equal(source.coords[dim], ds[dim].values)
    assert source.coords["time"].dtype == np.dtype("datetime64[ns]")
    assert "Variables:" in repr(source)


def test_sharded_reads_inner_chunks(era5_sharded: Path) -> None:
    source = es.open_zarr(era5_sharded)
    spec = source.specs["t2m"]
    assert spec.shard is not None
    assert spec.chunks == (2, 7, 5) and spec.grid_chunks == (4, 14, 10)
    # by default a read unit is a whole shard here (2 x 2 x 2 inner chunks of 280 bytes)
    assert spec.read_unit == (2, 2, 2) and source.variables["t2m"].chunk_grid == (2, 1, 2)
    assert "read unit (4, 14, 10): 8 inner chunks (2, 7, 5)" in repr(source)
    inner = es.open_zarr(era5_sharded, read_unit_bytes=0)
    assert inner.specs["t2m"].read_unit is None
    assert inner.variables["t2m"].chunk_grid == (4, 2, 4)
    rows = es.open_zarr(era5_sharded, read_unit_bytes=1200)  # 4 inner chunks, one time block
    assert rows.variables["t2m"].chunks == (2, 14, 10)


def test_open_reads_no_chunk(era5_v3: Path, tmp_path: Path) -> None:
    """Chunk files replaced by garbage: open and describe still work (no chunk is read)."""
    copy = tmp_path / "garbage.zarr"
    shutil.copytree(era5_v3, copy)
    for chunk in (copy / "t2m" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"not zstd")
    source = es.open_zarr(copy, variables=["t2m"])
    assert source.variables["t2m"].shape == (10, 16, 32)
    with pytest.raises(ChunkDecodeError, match=r"t2m/c/0/0/0.*zstd"):
        source.read_chunk("t2m", (0, 0, 0))


def test_missing_chunk_is_none(era5_v3: Path, tmp_path: Path) -> None:
    copy = tmp_path / "holes.zarr"
    shutil.copytree(era5_v3, copy)
    (copy / "t2m" / "c" / "3" / "0" / "0").unlink()
    source = es.open_zarr(copy)
    assert source.read_chunk("t2m", (3, 0, 0)) is None
    assert source.read_chunk("t2m", (2, 0, 0)) is not None


def test_single_array_and_file_url(era5_v3: Path) -> None:
    source = es.open_zarr(era5_v3 / "t2m")
    assert list(source.variables) == ["t2m"]
    assert source.read_chunk("t2m", (0, 0, 0)) is not None
    by_url = es.open_zarr("file://" + str(era5_v3), variables="u10")
    assert list(by_url.variables) == ["u10"]


def test_source_pickles_without_clients(era5_v3: Path) -> None:
    source = es.open_zarr(era5_v3, variables=["t2m"])
    first = source.read_chunk("t2m", (1, 0, 0))
    clone = pickle.loads(pickle.dumps(source))
    assert clone._reader is None
    np.testing.assert_array_equal(clone.read_chunk("t2m", (1, 0, 0)), first)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fallback_for_codecs_without_fast_path(tmp_path: Path) -> None:
    from zarr.codecs.numcodecs import Quantize

    data = np.linspace(0, 1, 6 * 8, dtype="f8").reshape(6, 8)
    group = zarr.open_group(str(tmp_path / "q.zarr"), mode="w", zarr_format=3)
    arr = group.create_array(
        "q",
        shape=data.shape,
        chunks=(4, 4),
        dtype="f8",
        filters=[Quantize(digits=3, dtype="f8")],
        dimension_names=("y", "x"),
    )
    arr[...] = data
    source = es.open_zarr(tmp_path / "q.zarr")
    assert not source.specs["q"].fast
    chunk = source.read_chunk("q", (1, 1))
    np.testing.assert_array_equal(chunk, arr[4:6, 4:8])


@pytest.mark.parametrize(
    ("codecs", "filters", "order", "dtype"),
    [
        (None, None, "C", ">i2"),
        ("zstd", None, "F", "<f8"),
        ("blosc", "delta", "C", "<i4"),
        ("gzip", None, "C", "uint8"),
    ],
)
def test_v2_encodings(tmp_path: Path, codecs, filters, order, dtype) -> None:
    import numcodecs

    compressor = {
        None: None,
        "zstd": numcodecs.Zstd(level=1),
        "blosc": numcodecs.Blosc(cname="zstd", shuffle=numcodecs.Blosc.BITSHUFFLE),
        "gzip": numcodecs.GZip(level=1),
    }[codecs]
    filt = [numcodecs.Delta(dtype=dtype)] if filters else None
    data = (np.arange(7 * 9) % 50).astype(dtype).reshape(7, 9)
    group = zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    arr = group.create_array(
        "a",
        shape=data.shape,
        chunks=(3, 4),
        dtype=dtype,
        compressors=compressor,
        filters=filt,
        order=order,
        attributes={"_ARRAY_DIMENSIONS": ["y", "x"]},
        fill_value=0,
    )
    arr[...] = data
    # the codec chain against zarr-python: stored values (xarray would mask v2's fill 0)
    source = es.open_zarr(tmp_path / "v2.zarr", decode_cf=False)
    assert source.specs["a"].fast
    _assert_chunks_equal_zarr(tmp_path / "v2.zarr", source)


def test_v3_transpose_gzip_crc32c(tmp_path: Path) -> None:
    from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, TransposeCodec

    data = np.arange(5 * 6 * 7, dtype=">f4").reshape(5, 6, 7)
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="w", zarr_format=3)
    arr = group.create_array(
        "a",
        shape=data.shape,
        chunks=(2, 3, 4),
        dtype="float32",
        filters=[TransposeCodec(order=(2, 0, 1))],
        serializer=BytesCodec(endian="big"),
        compressors=[GzipCodec(level=1), Crc32cCodec()],
        dimension_names=("t", "y", "x"),
    )
    arr[...] = data
    source = es.open_zarr(tmp_path / "t.zarr")
    assert source.specs["a"].fast and source.specs["a"].transpose == (2, 0, 1)
    _assert_chunks_equal_zarr(tmp_path / "t.zarr", source)


def test_errors(era5_v3: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        es.open_zarr(tmp_path / "nowhere.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFoundError, match=r"zarr\.json"):
        es.open_zarr(tmp_path / "empty")
    with pytest.raises(VariableNotFoundError, match=r"'t2n'.*Did you mean 't2m'"):
        es.open_zarr(era5_v3, variables=["t2n"])
    with pytest.raises(ConfigError, match="unsupported URL scheme"):
        es.open_zarr("ftp://host/store.zarr")
    with pytest.raises(ConfigError, match="only apply to remote"):
        es.open_zarr(era5_v3, storage_options={"region": "x"})
    # the typed errors are also the built-ins callers expect
    with pytest.raises(FileNotFoundError):
        es.open_zarr(tmp_path / "nowhere.zarr")
    with pytest.raises(KeyError):
        es.open_zarr(era5_v3, variables="nope")
