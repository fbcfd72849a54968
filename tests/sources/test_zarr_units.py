"""Read units of sharded Zarr v3 arrays: several inner chunks of a shard read, cached and
cut as one chunk.  Oracles: zarr-python (the array read whole) and xarray's ``isel``;
inner chunks missing (all fill value, never written) or damaged inside a unit."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import earthstream as es
from earthstream.errors import ChunkDecodeError, ConfigError

from ..conftest import assert_batch_matches

SHAPE = (6, 30, 44)  # edge shards and edge inner chunks along lat and lon
INNER = (1, 8, 12)
SHARD = (3, 16, 24)


def _write(path: Path) -> dict[str, np.ndarray]:
    """``t`` float32 (fill -9999) and ``p`` packed int16 (scale, offset, _FillValue); the
    inner chunks of ``holes`` are all fill value, so zarr-python does not write them."""
    rng = np.random.default_rng(5)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    dims = ("time", "lat", "lon")
    for name, values in {
        "time": np.arange(SHAPE[0], dtype="i8"),
        "lat": np.linspace(-60, 60, SHAPE[1]),
        "lon": np.arange(SHAPE[2], dtype="f8"),
    }.items():
        coord = group.create_array(
            name, shape=values.shape, dtype=values.dtype, dimension_names=(name,)
        )
        coord[...] = values
    t = rng.normal(280, 10, SHAPE).astype("f4")
    p = rng.integers(-3000, 3000, SHAPE).astype("i2")
    holes = [(0, 0, 0), (0, 1, 1), (4, 3, 3), (5, 0, 2)]  # inner chunk indices
    for i, j, k in holes:
        region = (i, slice(j * 8, (j + 1) * 8), slice(k * 12, (k + 1) * 12))
        t[region] = -9999.0
        p[region] = -32768
    arrays = {}
    for name, values, fill, attrs in (
        ("t", t, -9999.0, {}),
        ("p", p, -32768, {"scale_factor": 0.5, "add_offset": 10.0, "_FillValue": -32768}),
    ):
        arr = group.create_array(
            name,
            shape=SHAPE,
            dtype=values.dtype,
            chunks=INNER,
            shards=SHARD,
            fill_value=fill,
            dimension_names=dims,
        )
        arr[...] = values
        arr.attrs.update(attrs)
        arrays[name] = values
    zarr.consolidate_metadata(str(path))
    return arrays


@pytest.fixture
def holes(tmp_path: Path) -> Path:
    path = tmp_path / "holes.zarr"
    _write(path)
    return path


def _inner_is_stored(path: Path, name: str, inner: tuple[int, ...]) -> bool:
    shard = tuple(i // (s // c) for i, s, c in zip(inner, SHARD, INNER, strict=True))
    data = (path / name / "c" / "/".join(map(str, shard))).read_bytes()
    cps = tuple(s // c for s, c in zip(SHARD, INNER, strict=True))
    table = np.frombuffer(data[-(np.prod(cps) * 16 + 4) : -4], "<u8").reshape(*cps, 2)
    at = tuple(i % n for i, n in zip(inner, cps, strict=True))
    return bool(table[at][0] != 2**64 - 1)


@pytest.mark.parametrize("unit_bytes", [0, 800, 3000, 1 << 20])
def test_units_equal_zarr_python(holes: Path, unit_bytes: int) -> None:
    """Every read unit equals zarr-python's read of its region, missing inner chunks
    (not written: all fill value) included, whatever the unit's size."""
    assert not _inner_is_stored(holes, "t", (0, 0, 0))
    assert _inner_is_stored(holes, "t", (0, 0, 1))
    source = es.open_zarr(holes, read_unit_bytes=unit_bytes)
    group = zarr.open_group(str(holes), mode="r")
    for name, info in source.variables.items():
        ref = np.asarray(group[name][...])
        if name == "p":  # CF decoding as xarray does it, float32
            ref = np.where(ref == -32768, np.nan, ref.astype("f4") * np.float32(0.5) + 10)
        for index in itertools.product(*[range(g) for g in info.chunk_grid]):
            region = tuple(
                slice(i * c, min((i + 1) * c, s))
                for i, c, s in zip(index, info.chunks, info.shape, strict=True)
            )
            chunk = source.read_chunk(name, index)
            if chunk is None:  # not stored: the engine fills it with the fill value
                chunk = np.full(info.chunks, info.fill_value, info.dtype)
            valid = tuple(slice(0, r.stop - r.start) for r in region)
            np.testing.assert_allclose(chunk[valid], ref[region], rtol=1e-6)


def test_unit_with_every_inner_chunk_missing_is_none(tmp_path: Path) -> None:
    path = tmp_path / "empty.zarr"
    arr = zarr.create_array(
        str(path), shape=SHAPE, dtype="f4", chunks=INNER, shards=SHARD, fill_value=1.5
    )
    arr[1] = 2.0  # time step 1 only: units of time step 0 are not stored at all
    source = es.open_zarr(path, read_unit_bytes=1536)  # one time step of a shard
    (name,) = source.variables
    assert source.variables[name].chunks == (1, 16, 24)
    assert source.read_chunk(name, (0, 0, 0)) is None
    np.testing.assert_array_equal(source.read_chunk(name, (1, 0, 0)), 2.0)


def _damage(path: Path, name: str, inner: tuple[int, ...]) -> None:
    """Overwrite inner chunk ``inner``'s bytes in its shard (the index stays valid)."""
    cps = tuple(s // c for s, c in zip(SHARD, INNER, strict=True))
    shard = tuple(i // n for i, n in zip(inner, cps, strict=True))
    file = path / name / "c" / "/".join(map(str, shard))
    data = bytearray(file.read_bytes())
    table = np.frombuffer(bytes(data[-(np.prod(cps) * 16 + 4) : -4]), "<u8").reshape(*cps, 2)
    offset, nbytes = (int(v) for v in table[tuple(i % n for i, n in zip(inner, cps, strict=True))])
    data[offset : offset + nbytes] = b"\x00" * nbytes
    file.write_bytes(bytes(data))


def test_damaged_inner_chunk_fails_its_unit(holes: Path, open_xr: Any) -> None:
    """A damaged inner chunk fails the read unit holding it (ChunkDecodeError naming the
    inner chunk); corrupt="skip" drops exactly that unit's windows, every other sample
    equals xarray's isel."""
    damaged = holes.parent / "damaged.zarr"
    shutil.copytree(holes, damaged)
    _damage(damaged, "t", (2, 1, 1))  # shard (0, 0, 0); unit (2, 0, 0) of 1 x 16 x 24
    source = es.open_zarr(damaged, variables=["t"], read_unit_bytes=1536)
    assert source.variables["t"].chunks == (1, 16, 24)
    with pytest.raises(ChunkDecodeError, match=r"t/c/0/0/0.*inner chunk \(2, 1, 1\)"):
        source.read_chunk("t", (2, 0, 0))
    assert "read unit (2, 0, 0): inner chunks (2, 0, 0) to (2, 1, 1)" in (
        source.chunk_location("t", (2, 0, 0))
    )
    assert source.read_chunk("t", (1, 0, 0)) is not None
    ds = open_xr(holes)  # the undamaged store
    window = {"lat": 8, "lon": 8}
    stream = es.Stream(source, window, batch_size=5, corrupt="skip", seed=1)
    kept = []
    for batch in stream:
        assert_batch_matches(batch, ds, window)
        kept.extend(batch.window_ids.tolist())
    report = stream.report
    assert report is not None
    lost = set(range(stream.n_windows)) - set(kept)
    assert lost and report.samples_dropped == len(lost)
    assert len(report.corrupt_chunks) == 1 and "read unit (2, 0, 0)" in report.corrupt_chunks[0]
    # the lost windows are those of time step 2 inside the damaged unit (lat < 16, lon < 24)
    per_step = stream.n_windows // SHAPE[0]
    assert all(2 * per_step <= i < 3 * per_step for i in lost)


def test_stream_over_units_equals_xarray(holes: Path, open_xr: Any) -> None:
    ds = open_xr(holes)
    window = {"lat": 7, "lon": 10}
    for unit_bytes in (0, 1 << 20):
        source = es.open_zarr(holes, read_unit_bytes=unit_bytes)
        stream = es.Stream(source, window, {"lat": 3, "lon": 5}, batch_size=7, shuffle="full")
        ids = []
        for batch in stream:
            assert_batch_matches(batch, ds, window)
            ids.extend(batch.window_ids.tolist())
        assert sorted(ids) == list(range(stream.n_windows))


@pytest.mark.parametrize("bad", [-1, 1.5, "8MB", True])
def test_read_unit_bytes_checked(holes: Path, bad: Any) -> None:
    with pytest.raises(ConfigError, match="read_unit_bytes"):
        es.open_zarr(holes, read_unit_bytes=bad)
