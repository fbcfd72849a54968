"""GeoTIFF tiles as chunks: every tile of every level equals rasterio's read of its window.

Files are written by GDAL (rasterio's COG and GTiff drivers) with each compression,
predictor, dtype, band count, interleave, BigTIFF and byte order; the oracle is
``rasterio``'s windowed read (GDAL's decoder, independent of the imagecodecs path),
the header is checked against ``tifffile``'s parser, and remote reads are counted in
nginx's access log.
"""

from __future__ import annotations

import pickle
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import (
    ChunkDecodeError,
    ConfigError,
    CorruptChunksError,
    CorruptFileError,
    DimensionError,
    StoreNotFoundError,
    UnsupportedFormatError,
    VariableNotFoundError,
)
from earthstream.sources import TiffSource, open_tiff
from tests._servers import NginxServer, find_nginx, nginx_server

rasterio = pytest.importorskip("rasterio")
tifffile = pytest.importorskip("tifffile")

H, W, BLOCK = 300, 470, 128  # partial edge tiles on both axes
CRS = "EPSG:32633"
HTTP = {"client_options": {"allow_http": True}, "retry": {"base_delay": 0.001, "max_attempts": 3}}


@dataclass(frozen=True)
class Case:
    id: str
    dtype: str
    count: int
    profile: dict[str, Any] = field(default_factory=dict)
    overviews: tuple[int, ...] = ()  # GTiff: built after writing
    nodata: float | None = None
    native: bool = True  # decoded by earthstream (else through GDAL)


def _cog(**kw: Any) -> dict[str, Any]:
    return {"driver": "COG", "blocksize": BLOCK, "overviews": "auto", **kw}


def _tiled(**kw: Any) -> dict[str, Any]:
    return {"driver": "GTiff", "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, **kw}


CASES = [
    Case("cog-deflate-p2-u16x4", "uint16", 4, _cog(compress="deflate", predictor=2), nodata=0),
    Case("cog-zstd-p2-u16x4", "uint16", 4, _cog(compress="zstd", predictor=2)),
    Case("cog-lzw-p2-i16x3", "int16", 3, _cog(compress="lzw", predictor=2), nodata=-9999),
    Case("cog-none-u8x1", "uint8", 1, _cog(compress="none")),
    Case("cog-deflate-p3-f32x2", "float32", 2, _cog(compress="deflate", predictor=3), nodata=-1),
    Case("cog-zstd-p3-f32x1-nan", "float32", 1, _cog(compress="zstd", predictor=3), nodata=np.nan),
    Case("cog-zstd-f64x1", "float64", 1, _cog(compress="zstd")),
    Case("cog-deflate-p2-u8x3", "uint8", 3, _cog(compress="deflate", predictor=2)),
    Case("cog-deflate-i32x2", "int32", 2, _cog(compress="deflate", predictor=2)),
    Case("cog-lzw-u32x1", "uint32", 1, _cog(compress="lzw")),
    Case("cog-bigtiff-zstd-u16x2", "uint16", 2, _cog(compress="zstd", bigtiff="YES")),
    Case("gtiff-planar-deflate-p2-u16x4", "uint16", 4,
         _tiled(compress="deflate", predictor=2, interleave="band"), overviews=(2, 4)),
    Case("gtiff-planar-zstd-p3-f32x3", "float32", 3,
         _tiled(compress="zstd", predictor=3, interleave="band")),
    Case("gtiff-planar-none-i16x2", "int16", 2, _tiled(interleave="band"), nodata=-1),
    Case("gtiff-lzw-u8x3-bigtiff", "uint8", 3, _tiled(compress="lzw", bigtiff="YES"),
         overviews=(2,)),
    Case("gtiff-be-deflate-p2-u16x2", "uint16", 2,
         _tiled(compress="deflate", predictor=2, endianness="BIG"), overviews=(2,)),
    Case("gtiff-be-zstd-p3-f32x1", "float32", 1,
         _tiled(compress="zstd", predictor=3, endianness="BIG")),
    Case("gtiff-be-none-i16x3", "int16", 3, _tiled(endianness="BIG")),
    Case("gtiff-be-planar-lzw-p3-f64x2", "float64", 2,
         _tiled(compress="lzw", predictor=3, endianness="BIG", interleave="band")),
    Case("gtiff-packbits-u8x2", "uint8", 2, _tiled(compress="packbits")),
    Case("gtiff-lzma-p2-u16x1", "uint16", 1, _tiled(compress="lzma", predictor=2)),
    Case("strips-lzw-p2-u16x2", "uint16", 2,
         {"driver": "GTiff", "compress": "lzw", "predictor": 2, "blockysize": 37}),
    Case("strips-deflate-p3-f32x1", "float32", 1,
         {"driver": "GTiff", "compress": "deflate", "predictor": 3, "blockysize": 64}),
    Case("strips-planar-none-u8x3", "uint8", 3,
         {"driver": "GTiff", "interleave": "band", "blockysize": 50}),
    Case("cog-jpeg-u8x3", "uint8", 3, _cog(compress="jpeg"), native=False),
    Case("cog-webp-u8x3", "uint8", 3, _cog(compress="webp"), native=False),
    Case("cog-lerc-f32x1", "float32", 1, _cog(compress="lerc"), native=False),
]  # fmt: skip


def _data(case: Case, seed: int = 0) -> np.ndarray:
    """Smooth fields plus noise, with a nodata corner: predictors and codecs both matter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    out = np.empty((case.count, H, W), dtype=case.dtype)
    for b in range(case.count):
        field_ = 100 + 60 * np.sin(xx / 17.0 + b) * np.cos(yy / 23.0) + rng.normal(0, 5, (H, W))
        if np.dtype(case.dtype).kind == "f":
            out[b] = field_ * 0.37 - 20
        elif case.dtype == "uint8":
            out[b] = np.clip(field_, 1, 255)
        elif np.dtype(case.dtype).kind == "i":
            out[b] = field_ * 40 - 4000
        else:
            out[b] = np.clip(field_ * 200, 1, None)
    if case.nodata is not None:
        out[:, :40, :50] = case.nodata
    return out


def write_case(path: Path, case: Case, seed: int = 0) -> Path:
    from affine import Affine

    data = _data(case, seed)
    profile = {
        "width": W,
        "height": H,
        "count": case.count,
        "dtype": case.dtype,
        "crs": CRS,
        "transform": Affine(10, 0, 500000, 0, -10, 5000000),
        "nodata": case.nodata,
        **case.profile,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    if case.overviews:
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews(list(case.overviews))
    return path


@pytest.fixture(scope="module")
def tiff_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiffs")


@pytest.fixture(scope="module")
def files(tiff_dir: Path) -> dict[str, Path]:
    return {case.id: write_case(tiff_dir / f"{case.id}.tif", case) for case in CASES}


def _levels(path: Path) -> list[int | None]:
    with rasterio.open(path) as ds:
        return [None, *range(len(ds.overviews(1)))]


def assert_tiles_equal_rasterio(source: TiffSource, path: Path | str) -> int:
    """Every chunk of ``source`` equals rasterio's read of the tile's window (inside the image).

    Returns the number of chunks compared."""
    name = source.name
    info = source.variables[name]
    _, bh, bw = info.chunks
    n = 0
    with rasterio.open(path, overview_level=source.level) as ds:
        assert (ds.height, ds.width) == info.shape[1:]
        assert np.dtype(ds.dtypes[0]) == info.dtype
        for r in range(info.chunk_grid[1]):
            for c in range(info.chunk_grid[2]):
                h, w = min(bh, ds.height - r * bh), min(bw, ds.width - c * bw)
                from rasterio.windows import Window

                want = ds.read([b + 1 for b in source.bands], window=Window(c * bw, r * bh, w, h))
                out = np.full(info.chunks, 77, dtype=info.dtype)
                got = source.read_chunk(name, (0, r, c), out)
                if got is None:  # a sparse tile holds the fill value
                    np.testing.assert_array_equal(want, np.full_like(want, info.fill_value))
                else:
                    assert got is out
                    np.testing.assert_array_equal(got[:, :h, :w], want, err_msg=f"tile {r},{c}")
                n += 1
    return n


# -- every tile of every level ------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_tile_equals_rasterio(case: Case, files: dict[str, Path]) -> None:
    path = files[case.id]
    source = open_tiff(path)
    assert all(r is None for r in source.fallback) == case.native, source.fallback
    levels = _levels(path)
    assert len(source.overviews) == len(levels) - 1
    for level in levels:
        assert_tiles_equal_rasterio(source.overview(level), path)


def test_header_equals_tifffile(files: dict[str, Path]) -> None:
    """The parser's IFDs (offsets, byte counts, tiling, codecs) equal tifffile's, an
    independent TIFF parser, for classic/BigTIFF, both byte orders, tiles and strips."""
    from earthstream.sources._tiff import read_header
    from earthstream.storage import open_reader, parse_location

    for case in CASES:
        path = files[case.id]
        reader = open_reader(parse_location(path.parent))
        header, _ = read_header(reader, path.name, str(path))
        with tifffile.TiffFile(path) as tf:
            assert header.bigtiff == tf.is_bigtiff
            assert header.byteorder == tf.byteorder
            assert len(header.images) == len(tf.pages)
            for image, page in zip(header.images, tf.pages, strict=True):
                assert (image.height, image.width) == (page.imagelength, page.imagewidth)
                assert image.samples == page.samplesperpixel
                assert image.compression == page.compression
                assert image.predictor == page.predictor
                assert image.planar == page.planarconfig
                assert image.tiled == page.is_tiled
                if page.is_tiled:
                    assert image.block_shape == (page.tilelength, page.tilewidth)
                else:
                    assert image.block_shape[0] == min(page.rowsperstrip, page.imagelength)
                assert image.offsets.reshape(-1).tolist() == list(page.dataoffsets)
                assert image.bytecounts.reshape(-1).tolist() == list(page.databytecounts)
                assert image.dtype == np.dtype(page.dtype).newbyteorder("=")


def test_metadata_equals_rasterio(files: dict[str, Path]) -> None:
    for case in CASES:
        path = files[case.id]
        source = open_tiff(path)
        info = source.variables["band_data"]
        with rasterio.open(path) as ds:
            assert source.crs == CRS == ds.crs.to_string()
            assert source.transform == tuple(ds.transform)[:6]
            assert info.dims == ("band", "y", "x")
            assert info.shape == (ds.count, ds.height, ds.width)
            assert source.overviews == tuple(ds.overviews(1))
            assert info.attrs["nodata"] == ds.nodata or (
                np.isnan(ds.nodata) and np.isnan(info.attrs["nodata"])
            )
            coords = source.coords
            np.testing.assert_array_equal(coords["band"], np.arange(1, ds.count + 1))
            xs, _ = rasterio.transform.xy(ds.transform, np.zeros(W), np.arange(W))
            _, ys = rasterio.transform.xy(ds.transform, np.arange(H), np.zeros(H))
            np.testing.assert_allclose(coords["x"], xs, rtol=0, atol=1e-6)
            np.testing.assert_allclose(coords["y"], ys, rtol=0, atol=1e-6)
            for level in range(len(ds.overviews(1))):
                with rasterio.open(path, overview_level=level) as ov:
                    assert source.overview(level).transform == pytest.approx(
                        tuple(ov.transform)[:6], rel=1e-12
                    )
        assert "TiffSource" in repr(source)
        assert ("GDAL" in repr(source)) != case.native


def test_band_selection_and_names(files: dict[str, Path]) -> None:
    path = files["cog-deflate-p2-u16x4"]
    planar = files["gtiff-planar-deflate-p2-u16x4"]
    for p in (path, planar):
        two = open_tiff(p, bands=[3, 1])
        assert two.variables["band_data"].shape == (2, H, W)
        np.testing.assert_array_equal(two.coords["band"], [3, 1])
        chunk = two.read_chunk("band_data", (0, 1, 1))
        with rasterio.open(p) as ds:
            from rasterio.windows import Window

            want = ds.read([3, 1], window=Window(BLOCK, BLOCK, BLOCK, BLOCK))
        assert chunk is not None
        np.testing.assert_array_equal(chunk, want)
    source = open_tiff(path)
    assert source.select(["band_data"]) is source
    with pytest.raises(VariableNotFoundError, match="band_dta"):
        source.select(["band_dta"])
    with pytest.raises(VariableNotFoundError, match=r"1\.\.4"):
        open_tiff(path, bands=[5])
    with pytest.raises(VariableNotFoundError, match="Bands: b1"):
        open_tiff(path, bands=["red"])
    with pytest.raises(ConfigError, match="overview=7"):
        open_tiff(path, overview=7)


def test_source_pickles_without_clients(files: dict[str, Path]) -> None:
    source = open_tiff(files["cog-zstd-p2-u16x4"])
    source.read_chunk("band_data", (0, 0, 0))  # a reader and a decoder exist now
    clone = pickle.loads(pickle.dumps(source))
    a = source.read_chunk("band_data", (0, 2, 3))
    b = clone.read_chunk("band_data", (0, 2, 3))
    assert a is not None and b is not None
    np.testing.assert_array_equal(a, b)


# -- sparse tiles -------------------------------------------------------------------------
@pytest.mark.parametrize("nodata", [None, 7])
def test_sparse_tiles_read_as_gdal_fills_them(tmp_path: Path, nodata: int | None) -> None:
    from affine import Affine
    from rasterio.windows import Window

    path = tmp_path / "sparse.tif"
    data = np.arange(H * W, dtype=np.uint16).reshape(1, H, W) % 1000 + 10
    with rasterio.open(
        path, "w", **_tiled(compress="deflate", sparse_ok=True), width=W, height=H, count=1,
        dtype="uint16", crs=CRS, transform=Affine(10, 0, 0, 0, -10, 0), nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data[:, :BLOCK, :BLOCK], window=Window(0, 0, BLOCK, BLOCK))
        corner = Window(2 * BLOCK, BLOCK, W - 2 * BLOCK, H - BLOCK)
        dst.write(data[:, BLOCK:, 2 * BLOCK :], window=corner)
    source = open_tiff(path)
    assert source.fill_value == (nodata or 0)
    with tifffile.TiffFile(path) as tf:
        counts = np.array(tf.pages[0].databytecounts).reshape(-(-H // BLOCK), -(-W // BLOCK))
    assert (counts == 0).sum() >= 6
    assert source.read_chunk("band_data", (0, 0, 1)) is None  # not stored
    assert_tiles_equal_rasterio(source, path)
    stream = es.Stream(source, window={"band": None, "y": 64, "x": 64}, batch_size=8, shuffle=False)
    with rasterio.open(path) as ds:
        full = ds.read()
    for batch in stream:
        for i in range(batch.size):
            y, x = batch.starts["y"][i], batch.starts["x"][i]
            np.testing.assert_array_equal(batch["band_data"][i], full[:, y : y + 64, x : x + 64])
    touched = counts[: (H // 64 * 64 - 1) // BLOCK + 1, : (W // 64 * 64 - 1) // BLOCK + 1]
    assert stream.report is not None and stream.report.chunks_missing == (touched == 0).sum()


# -- through the engine ------------------------------------------------------------------
def _epoch(stream: es.Stream) -> dict[int, tuple[int, int, int, np.ndarray]]:
    out = {}
    for batch in stream:
        for i, wid in enumerate(batch.window_ids.tolist()):
            starts = tuple(int(batch.starts[d][i]) for d in batch.starts)
            out[wid] = (*starts, batch["band_data"][i].copy())
    return out


@pytest.mark.parametrize("shuffle", [False, "chunks", "full"])
def test_stream_chips_equal_rasterio_and_decode_each_tile_once(
    files: dict[str, Path], shuffle: Any
) -> None:
    path = files["cog-deflate-p2-u16x4"]
    source = open_tiff(path)
    window = {"band": None, "y": 64, "x": 94}  # 94 does not divide 128: chips across tiles
    stream = es.Stream(source, window=window, batch_size=5, shuffle=shuffle, seed=3)
    with rasterio.open(path) as ds:
        full = ds.read()
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        seen = _epoch(stream)
        assert len(seen) == stream.n_windows == (H // 64) * (W // 94)
        for _, y, x, chip in seen.values():
            np.testing.assert_array_equal(chip, full[:, y : y + 64, x : x + 94])
        report = stream.report
        assert report is not None
        tiles_used = {(y // BLOCK, x // BLOCK) for _, y, x, _ in seen.values()} | {
            ((y + 63) // BLOCK, (x + 93) // BLOCK) for _, y, x, _ in seen.values()
        }
        assert report.chunks_decoded >= len(tiles_used)
        assert max(report.decodes.values()) == 1  # each tile decoded once per epoch
        assert report.chunks_decoded == len(report.decodes)


def test_stream_over_a_stack_of_files(tiff_dir: Path) -> None:
    case = CASES[1]
    paths = [write_case(tiff_dir / f"stack-{i}.tif", case, seed=i) for i in range(3)]
    times = np.array(["2024-01-01", "2024-02-01", "2024-03-01"], dtype="datetime64[ns]")
    source = open_tiff(paths, stack_dim="time", stack_coords=times)
    info = source.variables["band_data"]
    assert info.dims == ("time", "band", "y", "x") and info.chunks == (1, 4, BLOCK, BLOCK)
    stream = es.Stream(source, window={"band": None, "y": 100, "x": 100}, batch_size=4, seed=1)
    fulls = []
    for p in paths:
        with rasterio.open(p) as ds:
            fulls.append(ds.read())
    seen = 0
    for batch in stream:
        assert batch["band_data"].shape[1:] == (4, 100, 100)
        for i in range(batch.size):
            t, y, x = (int(batch.starts[d][i]) for d in ("time", "y", "x"))
            np.testing.assert_array_equal(
                batch["band_data"][i], fulls[t][:, y : y + 100, x : x + 100]
            )
            assert batch.coords["time"][i] == times[t]
            seen += 1
    assert seen == 3 * (H // 100) * (W // 100)
    assert stream.report is not None and max(stream.report.decodes.values()) == 1
    other = write_case(tiff_dir / "other.tif", CASES[3])
    with pytest.raises(DimensionError, match="cannot be stacked"):
        open_tiff([paths[0], other])


# -- bad files -----------------------------------------------------------------------------
def test_bad_files_raise_typed_errors_naming_the_file(
    files: dict[str, Path], tmp_path: Path
) -> None:
    src = files["cog-deflate-p2-u16x4"]
    raw = src.read_bytes()
    with pytest.raises(StoreNotFoundError, match=r"missing\.tif"):
        open_tiff(tmp_path / "missing.tif")
    (tmp_path / "text.tif").write_bytes(b"hello, this is not a tiff at all")
    with pytest.raises(UnsupportedFormatError, match=r"text\.tif"):
        open_tiff(tmp_path / "text.tif")
    (tmp_path / "cut-header.tif").write_bytes(raw[:300])  # the IFDs end later
    with pytest.raises(CorruptFileError, match=r"cut-header\.tif"):
        open_tiff(tmp_path / "cut-header.tif")
    (tmp_path / "tiny.tif").write_bytes(raw[:5])
    with pytest.raises(CorruptFileError, match=r"tiny\.tif"):
        open_tiff(tmp_path / "tiny.tif")

    # the tiles of the last rows are gone: the header is fine, those tiles are not
    with tifffile.TiffFile(src) as tf:
        page = tf.pages[0]
        offsets, counts = list(page.dataoffsets), list(page.databytecounts)
        last = int(np.argmax(offsets))
        compression_tag = page.tags[259]
    cut = tmp_path / "cut-tiles.tif"
    cut.write_bytes(raw[: offsets[last] + counts[last] // 2])
    source = open_tiff(cut)
    grid = source.variables["band_data"].chunk_grid
    r, c = divmod(last, grid[2])
    with pytest.raises(ChunkDecodeError, match=r"cut-tiles.tif tile \(row \d, col \d\).*truncated"):
        source.read_chunk("band_data", (0, r, c))
    assert source.read_chunk("band_data", (0, 0, 0)) is not None

    # damaged tile bytes: decoding fails loudly, with the tile's place
    broken = bytearray(raw)
    first = int(np.argmin(offsets))
    broken[offsets[first] + 10 : offsets[first] + 60] = b"\xff" * 50
    (tmp_path / "damaged.tif").write_bytes(bytes(broken))
    source = open_tiff(tmp_path / "damaged.tif")
    r, c = divmod(first, grid[2])
    with pytest.raises(ChunkDecodeError, match=r"damaged.tif tile"):
        source.read_chunk("band_data", (0, r, c))
    stream = es.Stream(
        source, window={"band": None, "y": BLOCK, "x": BLOCK}, batch_size=2, shuffle=False,
        corrupt="skip",
    )  # fmt: skip
    delivered = sum(b.size for b in stream)
    assert stream.report is not None and len(stream.report.corrupt_chunks) == 1
    assert delivered == stream.n_windows - 1
    with pytest.raises(ChunkDecodeError):
        list(es.Stream(source, window={"band": None, "y": BLOCK, "x": BLOCK}, shuffle=False))

    # a compression nobody knows
    unknown = bytearray(raw)
    fmt = "<H"
    unknown[compression_tag.valueoffset : compression_tag.valueoffset + 2] = struct.pack(fmt, 12345)
    (tmp_path / "unknown.tif").write_bytes(bytes(unknown))
    with pytest.raises(UnsupportedFormatError, match=r"unknown\.tif.*compression 12345"):
        open_tiff(tmp_path / "unknown.tif")


def test_corrupt_abort_threshold(files: dict[str, Path], tmp_path: Path) -> None:
    src = files["cog-zstd-p2-u16x4"]
    raw = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tf:
        page = tf.pages[0]
        for off in list(page.dataoffsets)[:3]:
            raw[off + 4 : off + 40] = b"\x00" * 36
    (tmp_path / "bad3.tif").write_bytes(bytes(raw))
    stream = es.Stream(
        open_tiff(tmp_path / "bad3.tif"), window={"band": None, "y": BLOCK, "x": BLOCK},
        shuffle=False, corrupt="skip", max_corrupt=1,
    )  # fmt: skip
    with pytest.raises(CorruptChunksError):
        list(stream)


# -- header requests and remote reads ------------------------------------------------------
def test_header_extension_for_ifds_past_the_prefix(files: dict[str, Path]) -> None:
    """A plain GeoTIFF whose overviews were added later keeps their IFDs at the end: the
    header costs the prefix plus one request per round of the IFD chain beyond it."""
    from earthstream.sources._tiff import read_header
    from earthstream.storage import open_reader, parse_location

    path = files["gtiff-planar-deflate-p2-u16x4"]
    with tifffile.TiffFile(path) as tf:
        assert tf.pages[1].offset > 64 * 1024  # the overview IFDs lie past the prefix
    reader = open_reader(parse_location(path.parent))
    header, _ = read_header(reader, path.name, str(path))
    assert len(header.overviews) == 2
    assert reader.stats.snapshot()["requests"] == 2
    cog = files["cog-deflate-p2-u16x4"]
    reader = open_reader(parse_location(cog.parent))
    read_header(reader, cog.name, str(cog), prefix=16 * 1024)
    assert reader.stats.snapshot()["requests"] == 1


@pytest.fixture(scope="module")
def nginx(tiff_dir: Path, files: dict[str, Path]) -> Iterator[NginxServer]:
    if find_nginx() is None:
        pytest.fail("nginx is not installed; `make test` installs nginx-light.")
    server = nginx_server(tiff_dir)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "case_id", ["cog-deflate-p2-u16x4", "gtiff-planar-zstd-p3-f32x3", "strips-lzw-p2-u16x2"]
)
def test_remote_equals_local_and_header_is_one_request(
    nginx: NginxServer, files: dict[str, Path], tiff_dir: Path, case_id: str
) -> None:
    path = tiff_dir / f"fresh-{case_id}.tif"
    shutil.copy(files[case_id], path)
    url = nginx.url(path)
    nginx.clear_log()
    remote = open_tiff(url, storage_options=HTTP)
    opened = nginx.requests()
    assert [(r.method, r.status) for r in opened] == [("GET", 206)], opened  # no HEAD, no probes
    local = open_tiff(path)
    assert remote.variables["band_data"] == local.variables["band_data"]
    assert remote.io_concurrency > 0 and local.io_concurrency == 0
    for level in [None, *range(len(local.overviews))]:
        r, lo = remote.overview(level), local.overview(level)
        grid = lo.variables["band_data"].chunk_grid
        indices = [(0, i, j) for i in range(grid[1]) for j in range(grid[2])]
        raws = r.fetch_chunks("band_data", indices)
        for index, raw in zip(indices, raws, strict=True):
            a = r.decode_chunk("band_data", index, raw)
            b = lo.read_chunk("band_data", index)
            assert a is not None and b is not None
            np.testing.assert_array_equal(a, b)


def test_signed_url_keeps_its_query_and_hides_it(
    nginx: NginxServer, files: dict[str, Path], tiff_dir: Path
) -> None:
    """A presigned URL (``?X-Amz-Signature=...``): every request carries the query (the
    file is found, not ``x.tif%3FX-Amz-...``), the tiles equal rasterio's read of the local
    file, and the signature is in no repr or message."""
    path = tiff_dir / "fresh-signed.tif"
    shutil.copy(files["cog-zstd-p2-u16x4"], path)
    url = nginx.url(path) + "?X-Amz-Credential=AKIDSECRET1&X-Amz-Signature=deadbeef99"
    remote = open_tiff(url, storage_options=HTTP)
    with rasterio.open(path) as ds:
        full = ds.read()
    stream = es.Stream(remote, window={"band": None, "y": BLOCK, "x": BLOCK}, shuffle=False)
    n = 0
    for batch in stream:
        for i in range(batch.size):
            y, x = int(batch.starts["y"][i]), int(batch.starts["x"][i])
            expected = full[:, y : y + BLOCK, x : x + BLOCK]
            np.testing.assert_array_equal(batch["band_data"][i], expected)
            n += 1
    assert n == (H // BLOCK) * (W // BLOCK)
    shown = repr(remote) + str(remote.variables) + repr(stream.report)
    assert "deadbeef99" not in shown and "AKIDSECRET1" not in shown
    missing = url.replace("fresh-signed", "absent")
    with pytest.raises(es.errors.StoreNotFoundError) as info:
        open_tiff(missing, storage_options=HTTP)
    assert "deadbeef99" not in str(info.value) and "AKIDSECRET1" not in str(info.value)


def test_remote_stream_merges_tile_ranges(
    nginx: NginxServer, files: dict[str, Path], tiff_dir: Path
) -> None:
    path = tiff_dir / "fresh-stream.tif"
    shutil.copy(files["cog-zstd-p2-u16x4"], path)
    remote = open_tiff(nginx.url(path), storage_options=HTTP)
    local = open_tiff(path)
    window = {"band": None, "y": BLOCK, "x": BLOCK}
    nginx.clear_log()
    a = _epoch(es.Stream(remote, window=window, batch_size=4, shuffle=False))
    gets = [r for r in nginx.requests() if r.method == "GET"]
    b = _epoch(es.Stream(local, window=window, batch_size=4, shuffle=False))
    assert a.keys() == b.keys()
    for wid in a:
        np.testing.assert_array_equal(a[wid][-1], b[wid][-1])
    n_tiles = (H // BLOCK) * (W // BLOCK)
    assert 1 <= len(gets) < n_tiles  # adjacent tiles of a row come in one request
    assert all(r.status == 206 for r in gets)


def test_bands_iterated_when_not_windowed(files: dict[str, Path]) -> None:
    """Without ``"band": None`` the band dim is iterated like any other: one-band chips,
    and still one decode per tile (the chunk holds every band)."""
    path = files["cog-zstd-p2-u16x4"]
    stream = es.Stream(open_tiff(path), window={"y": 128, "x": 128}, batch_size=6, seed=2)
    with rasterio.open(path) as ds:
        full = ds.read()
    n = 0
    for batch in stream:
        assert batch["band_data"].shape[1:] == (128, 128)
        for i in range(batch.size):
            b, y, x = (int(batch.starts[d][i]) for d in ("band", "y", "x"))
            np.testing.assert_array_equal(batch["band_data"][i], full[b, y : y + 128, x : x + 128])
            n += 1
    assert n == 4 * (H // 128) * (W // 128)
    assert stream.report is not None and max(stream.report.decodes.values()) == 1


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_their_own_tiles(files: dict[str, Path], context: str) -> None:
    pytest.importorskip("torch")
    path = files["cog-deflate-p2-u16x4"]
    stream = es.Stream(
        open_tiff(path), window={"band": None, "y": 64, "x": 64}, batch_size=4, shuffle="full"
    )
    with rasterio.open(path) as ds:
        full = ds.read()
    ids = []
    for batch in stream.to_torch().loader(num_workers=2, multiprocessing_context=context):
        for i, wid in enumerate(batch.window_ids.tolist()):
            y, x = int(batch.starts["y"][i]), int(batch.starts["x"][i])
            np.testing.assert_array_equal(
                batch["band_data"][i].numpy(), full[:, y : y + 64, x : x + 64]
            )
            ids.append(wid)
    assert sorted(ids) == list(range(stream.n_windows))


def test_remote_tiles_retried_and_in_flight_together(
    nginx: NginxServer, files: dict[str, Path], tiff_dir: Path
) -> None:
    """Tile fetches go through the same reader as Zarr chunks: transient faults are
    retried and counted in the epoch report, and requests overlap (latency hidden)."""
    from tests._faults import FaultProxy

    path = tiff_dir / "fresh-faults.tif"
    shutil.copy(files["cog-deflate-p2-u16x4"], path)
    window = {"band": None, "y": 64, "x": 64}
    with FaultProxy(nginx.base_url) as proxy:
        url = f"{proxy.base_url}/{path.name}"
        remote = open_tiff(url, storage_options=HTTP)
        proxy.add(r"/fresh-faults\.tif$", "status", status=503, times=3)
        proxy.set_delay(0.03)
        stream = es.Stream(remote, window=window, batch_size=4, shuffle="full", seed=5)
        got = _epoch(stream)
        assert proxy.max_in_flight >= 2  # tile rows fetched side by side (3 rows here)
    want = _epoch(es.Stream(open_tiff(path), window=window, batch_size=4, shuffle="full", seed=5))
    assert got.keys() == want.keys()
    for wid in want:
        np.testing.assert_array_equal(got[wid][-1], want[wid][-1])
    report = stream.report
    assert report is not None
    assert report.retries == 3 and report.failures == {"server": 3}
    assert max(report.decodes.values()) == 1
