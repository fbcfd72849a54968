"""The aligned chip stream: chips from a STAC catalog of COGs on a target grid equal
independent rasterio reprojection (mosaic and time stack), masks equal
rasterio.features.rasterize, epochs are exactly once, DataLoader workers split them."""

from __future__ import annotations

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import ConfigError, CRSError, VariableNotFoundError, WindowError
from earthstream.geo import GridSpec, decode
from tests._geodata import SCALE, UTM, WGS84
from tests.geo._reference import reproject_read


def _reference_mosaic(paths, chip, method="nearest"):
    """First valid pixel over ``paths`` in order, each read with rasterio's reproject."""
    values = np.zeros(chip.shape, np.uint16)
    valid = np.zeros(chip.shape, bool)
    for path in paths:
        v, ok = reproject_read(path, chip, method)
        new = ok[0] & ~valid
        values[new] = v[0][new]
        valid |= new
    return values, valid


def _check_batch(stream, batch, scenes, method="nearest"):
    from earthstream.geo._read import RasterBand

    band = RasterBand(1, "x", nodata=0, scale=SCALE, offset=-0.1)
    for i, wid in enumerate(batch.window_ids):
        chip = stream.chip_grid(int(wid))
        assert tuple(batch.coords["transform"][i]) == chip.transform
        np.testing.assert_allclose(batch.coords["bounds"][i], chip.bounds)
        lon, lat = chip.center_lonlat()
        assert batch.coords["lon"][i] == pytest.approx(lon) and batch.coords["lat"][
            i
        ] == pytest.approx(lat)
        for c, name in enumerate(stream.channels):
            paths = [s.assets[name] for s in scenes]
            raw, ok = _reference_mosaic(paths, chip, method)
            ref = decode(raw[None], ok[None], [band])[0]
            np.testing.assert_array_equal(batch.mask[i, c], ok)
            np.testing.assert_array_equal(batch["image"][i, c], ref)


def test_mosaic_on_a_utm_grid_equals_reference(catalog, scenes) -> None:
    stream = es.stream_chips(
        catalog, chip_size=48, crs=UTM, resolution=15, batch_size=4, shuffle=False,
        num_threads=2,
    )  # fmt: skip
    assert stream.channels == ("red", "nir")
    assert stream.grid.crs == UTM and stream.grid.res == (15.0, 15.0)
    batches = list(stream)
    assert (
        sum(b.size for b in batches)
        == stream.n_windows
        == len(stream) * 4 - (-stream.n_windows % 4)
    )
    b = batches[len(batches) // 2]
    assert b["image"].shape == (b.size, 2, 48, 48) and b["image"].dtype == np.float32
    assert b.channels == ("red", "nir") and b.coords["crs"][0] == UTM
    order = {s.id: s for s in scenes}
    items_order = [order[s.id] for s in stream.plan.scenes]  # mosaic in catalog order
    _check_batch(stream, b, items_order)
    assert stream.report is not None and stream.report.samples == stream.n_windows
    assert stream.report.counts["raster_reads"] > 0 and stream.report.chunks_decoded > 0


def test_mosaic_on_a_geographic_grid_bilinear(catalog, scenes) -> None:
    stream = es.stream_chips(
        catalog, chip_size=40, crs=WGS84, resolution=0.00015, resampling="bilinear",
        bounds=(15.0, 44.96, 15.06, 45.01), batch_size=3, shuffle="full", seed=2,
    )  # fmt: skip
    order = {s.id: s for s in scenes}
    batch = next(iter(stream))
    _check_batch(stream, batch, [order[s.id] for s in stream.plan.scenes], "bilinear")


def test_first_grid_reads_without_resampling(scenes, catalog) -> None:
    stream = es.stream_chips(catalog, grid="first", chip_size=64, assets=["nir"], shuffle=False)
    first = stream.plan.scenes[0]
    assert stream.grid == first.rasters[0].grid
    batch = next(iter(stream))
    scene = next(s for s in scenes if s.id == first.id)
    chip = stream.chip_grid(int(batch.window_ids[0]))
    r, c = int(batch.starts["y"][0]), int(batch.starts["x"][0])
    raw = scene.data["nir"][0, r : r + 64, c : c + 64]
    assert stream.report.counts["aligned_reads"] >= 1
    np.testing.assert_array_equal(batch.mask[0, 0], raw != 0)
    assert chip.shape == (64, 64)


def test_time_stack_groups_by_date(catalog, scenes) -> None:
    stream = es.stream_chips(
        catalog,
        chip_size=32,
        crs=UTM,
        resolution=20,
        time="stack",
        shuffle=False,
        batch_size=8,
        overview=None,
    )
    assert stream.plan.n_time == 2  # 2024-06-01 (utm-a + geo-c mosaicked) and 2024-06-11
    batch = next(iter(stream))
    assert batch["image"].shape == (batch.size, 2, 2, 32, 32)
    assert batch.coords["time"].shape == (batch.size, 2)
    assert str(batch.coords["time"][0, 0])[:10] == "2024-06-01"
    by_id = {s.id: s for s in scenes}
    slots = [[by_id[stream.plan.scenes[k].id] for k in slot] for slot in stream.plan.slots]
    from earthstream.geo._read import RasterBand

    band = RasterBand(1, "x", nodata=0, scale=SCALE, offset=-0.1)
    for i, wid in enumerate(batch.window_ids):
        chip = stream.chip_grid(int(wid))
        for t, slot in enumerate(slots):
            raw, ok = _reference_mosaic([s.assets["red"] for s in slot], chip)
            np.testing.assert_array_equal(
                batch["image"][i, t, 0], decode(raw[None], ok[None], [band])[0]
            )


def test_labels_are_rasterized_on_the_chip_grid(catalog, labels) -> None:
    import geopandas as gpd
    from rasterio.features import rasterize

    vec = es.open_vector(labels["parquet"], "class")
    stream = es.stream_chips(
        catalog, chip_size=64, crs=UTM, resolution=10, labels=vec, all_touched=True,
        shuffle=False, batch_size=8,
    )  # fmt: skip
    frame = gpd.read_parquet(labels["parquet"]).to_crs(UTM)
    shapes = list(zip(frame.geometry, frame["class"], strict=True))
    burned = 0
    for batch in stream:
        assert batch["label"].shape == (batch.size, 64, 64) and batch["label"].dtype == np.uint8
        for i, wid in enumerate(batch.window_ids):
            chip = stream.chip_grid(int(wid))
            ref = rasterize(
                shapes, out_shape=chip.shape, transform=chip.affine, all_touched=True, dtype="uint8"
            )
            np.testing.assert_array_equal(batch["label"][i], ref)
            burned += int((ref > 0).sum())
    assert burned > 1000


def test_epochs_are_exact_and_deterministic(catalog) -> None:
    stream = es.stream_chips(catalog, chip_size=32, crs=UTM, resolution=40, batch_size=5, seed=4)
    first = [int(i) for b in stream for i in b.window_ids]
    assert sorted(first) == list(range(stream.n_windows))
    stream.set_epoch(0)  # the same epoch again: the same order
    assert [int(i) for b in stream for i in b.window_ids] == first
    second = [int(i) for b in stream for i in b.window_ids]  # the next epoch by itself
    assert sorted(second) == sorted(first) and second != first
    stream.set_epoch(1)
    assert [int(i) for b in stream for i in b.window_ids] == second


def test_cog_paths_as_sources(scenes) -> None:
    paths = [scenes[0].assets["red"], scenes[1].assets["red"]]
    stream = es.stream_chips(paths, chip_size=32, shuffle=False)  # crs and resolution of the first
    assert stream.grid.crs == UTM and stream.grid.res == (10.0, 10.0)
    assert stream.channels == ("b1",)
    batch = next(iter(stream))
    chip = stream.chip_grid(int(batch.window_ids[0]))
    raw, ok = _reference_mosaic(paths, chip)
    np.testing.assert_array_equal(batch.mask[0, 0], ok)
    np.testing.assert_allclose(
        batch["image"][0, 0][ok], (raw * np.float32(SCALE) - np.float32(0.1))[ok], atol=1e-6
    )


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_two_workers_cover_the_epoch(catalog, labels, context) -> None:
    import torch

    vec = es.open_vector(labels["fgb"], "class")
    stream = es.stream_chips(
        catalog, chip_size=32, crs=UTM, resolution=30, labels=vec, batch_size=4, seed=1
    )
    reference = {
        int(i): (b["image"][k], b["label"][k]) for b in stream for k, i in enumerate(b.window_ids)
    }
    loader = stream.to_torch().loader(num_workers=2, multiprocessing_context=context)
    seen = []
    for batch in loader:
        assert isinstance(batch["image"], torch.Tensor) and batch["image"].shape[1:] == (2, 32, 32)
        assert batch.coords["transform"].shape == (batch.size, 6)
        for k, i in enumerate(batch.window_ids.tolist()):
            img, lab = reference[i]
            np.testing.assert_array_equal(batch["image"][k].numpy(), img)
            np.testing.assert_array_equal(batch["label"][k].numpy(), lab)
            seen.append(i)
    assert sorted(seen) == list(range(stream.n_windows))


def test_typed_errors_say_what_to_pass(catalog, labels) -> None:
    with pytest.raises(CRSError, match="bounds_crs='EPSG:4326'"):
        es.stream_chips(catalog, crs=UTM, resolution=10, bounds=(15.0, 44.9, 15.1, 45.0))
    with pytest.raises(CRSError, match=r"resolution=0\.0001"):
        es.stream_chips(catalog, crs=WGS84, resolution=10)
    with pytest.raises(CRSError, match="looks like degrees"):
        es.stream_chips(catalog, crs=UTM, resolution=0.0001)
    with pytest.raises(WindowError, match="chip_size <="):
        es.stream_chips(catalog, crs=UTM, resolution=500, chip_size=64)
    with pytest.raises(VariableNotFoundError, match="Did you mean 'red'"):
        es.stream_chips(catalog, assets=["redd"])
    with pytest.raises(ConfigError, match="'mosaic'"):
        es.stream_chips(catalog, time="sometimes")
    with pytest.raises(VariableNotFoundError, match="channels: red, nir"):
        es.stream_chips(catalog, chip_size=16, resampling={"blue": "bilinear"})
    with pytest.raises(CRSError, match="crs="):
        es.stream_chips(catalog, grid=None, crs="EPSG:999999", resolution=1)
    g = GridSpec.from_bounds(UTM, (500000, 4981000, 501000, 4982000), 10)
    assert es.stream_chips(catalog, grid=g, chip_size=50).n_windows == 4


def test_stream_over_http_equals_local_and_counts_requests(nginx, catalog, labels) -> None:
    """The catalog, its COGs and the labels served by nginx: same batches, few requests."""
    http = {"client_options": {"allow_http": True}}
    remote_labels = es.open_vector(nginx.url(labels["parquet"]), "class", storage_options=http)
    kwargs = {"chip_size": 32, "crs": UTM, "resolution": 20, "batch_size": 8, "seed": 3}
    local = es.stream_chips(catalog, labels=es.open_vector(labels["parquet"], "class"), **kwargs)
    nginx.clear_log()
    remote = es.stream_chips(nginx.url(catalog), labels=remote_labels, **kwargs)
    assert remote.plan.scenes[0].rasters[0].href.startswith("http://127.0.0.1")
    got = {
        int(i): (b["image"][k], b["label"][k]) for b in remote for k, i in enumerate(b.window_ids)
    }
    requests = nginx.requests()
    for b in local:
        for k, i in enumerate(b.window_ids):
            np.testing.assert_array_equal(got[int(i)][0], b["image"][k])
            np.testing.assert_array_equal(got[int(i)][1], b["label"][k])
    tiles = [r for r in requests if r.path.endswith(".tif") and r.method == "GET"]
    assert all(r.status in (200, 206) for r in requests)
    assert not [r for r in requests if r.path.endswith((".aux.xml", ".ovr", ".msk"))]
    # 6 COGs: a header each (one GET), then the tiles, each fetched once per epoch
    # (the ranges of adjacent tiles merged); the report counts those requests
    report = remote.report
    assert not [r for r in requests if r.method == "HEAD" and r.path.endswith(".tif")]
    assert len(tiles) == 6 + report.requests
    assert 0 < report.requests <= report.chunks_decoded + report.chunks_missing
    assert max(report.decodes.values()) == 1


def test_ranks_share_the_epoch_and_resume(catalog) -> None:
    """Chip streams shard over ranks and resume mid-epoch like `Stream` (shared code)."""
    kwargs = {"chip_size": 32, "crs": UTM, "resolution": 40, "batch_size": 3, "seed": 2}
    whole = es.stream_chips(catalog, **kwargs)
    everything = sorted(i for b in whole for i in b.window_ids.tolist())
    assert everything == list(range(whole.n_windows))
    per_rank = []
    for rank in range(3):
        part = es.stream_chips(catalog, rank=rank, world_size=3, **kwargs)
        batches = list(part)
        assert len(batches) == len(part)  # every rank the same number of batches
        per_rank.append(
            [i for b in batches for i, p in zip(b.window_ids, b.padded, strict=True) if not p]
        )
    assert sorted(i for ids in per_rank for i in ids) == everything  # padding aside: exactly once
    stream = es.stream_chips(catalog, **kwargs)
    it = iter(stream)
    head = [next(it).window_ids.tolist() for _ in range(2)]
    state = stream.state_dict()
    tail = [b.window_ids.tolist() for b in it]
    resumed = es.stream_chips(catalog, **kwargs)
    resumed.load_state_dict(state)
    assert [b.window_ids.tolist() for b in resumed] == tail
    assert head and tail
    other = es.stream_chips(catalog, **{**kwargs, "seed": 3})
    with pytest.raises(es.errors.ResumeError):
        other.load_state_dict(state)


def _edge_labels(path):
    """Points, lines and polygons in UTM: inside the target grid, crossing its right and
    bottom edges, and wholly past them (over real image pixels of scene utm-a)."""
    import geopandas as gpd
    from shapely.geometry import LineString, Point, box

    x1, y0 = 502130.0, 4982000.0  # the target grid's right and bottom edges
    geoms = [
        box(500600, 4983000, 500900, 4983300),  # inside
        box(x1 - 100, 4983000, x1 + 150, 4983200),  # crossing the right edge
        box(x1 + 40, 4983400, x1 + 300, 4983700),  # wholly past the right edge
        box(500800, y0 - 300, 501100, y0 - 50),  # wholly past the bottom edge
        LineString([(x1 - 200, 4982500), (x1 + 300, 4982600)]),  # crossing
        LineString([(x1 + 50, 4984000), (x1 + 320, 4984200)]),  # past
        Point(x1 - 15, 4983900),  # inside, one pixel from the edge
        Point(x1 + 25, 4983905),  # past the edge
        Point(501500, y0 - 35),  # past the bottom edge
    ]
    frame = gpd.GeoDataFrame({"class": range(1, len(geoms) + 1)}, geometry=geoms, crs=UTM)
    frame.to_crs(WGS84).to_parquet(path)  # stored in 4326: reprojected on both sides
    return path


@pytest.mark.parametrize("all_touched", [False, True])
def test_pad_chips_are_nan_masked_and_ignored_past_the_grid(catalog, tmp_path, all_touched):
    """edges="pad": past the target grid's edge the image is NaN, the mask False and the
    labels label_ignore; inside it, chips equal rasterio's reproject and labels equal
    rasterio.features.rasterize of the same features reprojected by geopandas."""
    import geopandas as gpd
    from rasterio.features import rasterize

    from earthstream.geo._read import RasterBand

    path = _edge_labels(tmp_path / "edge.parquet")
    vec = es.open_vector(path, "class")
    bounds = (500500.0, 4982000.0, 502130.0, 4984410.0)  # 163 x 241 px: chips of 64 overhang
    stream = es.stream_chips(
        catalog, chip_size=64, crs=UTM, resolution=10, bounds=bounds, edges="pad",
        labels=vec, all_touched=all_touched, shuffle=False, batch_size=4, assets=["red"],
    )  # fmt: skip
    height, width = stream.grid.height, stream.grid.width
    assert (height, width) == (241, 163)
    frame = gpd.read_parquet(path).to_crs(UTM)
    shapes = list(zip(frame.geometry, frame["class"], strict=True))
    band = RasterBand(1, "x", nodata=0, scale=SCALE, offset=-0.1)
    order = {s.id: i for i, s in enumerate(stream.plan.scenes)}
    paths = [s.rasters[0].href for s in sorted(stream.plan.scenes, key=lambda s: order[s.id])]
    seen, past_pixels, past_features, past_data = 0, 0, 0, 0
    for batch in stream:
        assert batch.attrs["label_ignore"] == 255 and batch.attrs["label_fill"] == 0
        for i, wid in enumerate(batch.window_ids):
            chip = stream.chip_grid(int(wid))
            r, c = int(batch.starts["y"][i]), int(batch.starts["x"][i])
            inside = np.zeros(chip.shape, bool)
            inside[: height - r, : width - c] = True
            raw, ok = _reference_mosaic(paths, chip)
            ref = decode(raw[None], ok[None], [band])[0]
            past_data += int((ok & ~inside).sum())  # real pixels there, to be hidden
            ref[~inside] = np.nan
            np.testing.assert_array_equal(batch["image"][i, 0], ref)
            np.testing.assert_array_equal(batch.mask[i, 0], ok & inside)
            burned = rasterize(
                shapes, out_shape=chip.shape, transform=chip.affine, fill=0,
                all_touched=all_touched, dtype="uint8",
            )  # fmt: skip
            past_features += int((burned[~inside] > 0).sum())
            burned[~inside] = 255
            np.testing.assert_array_equal(batch["label"][i], burned)
            past_pixels += int((~inside).sum())
            seen += 1
    assert seen == stream.n_windows == 4 * 3
    # the edge, source pixels past it and features past it exist
    assert past_pixels > 0 and past_data > 0 and past_features > 0


def test_label_values_are_checked(catalog, labels) -> None:
    vec = es.open_vector(labels["parquet"], "class")
    kwargs = {"chip_size": 32, "crs": UTM, "resolution": 40, "labels": vec}
    with pytest.raises(ConfigError, match="label_ignore=0 equals label_fill=0"):
        es.stream_chips(catalog, label_ignore=0, **kwargs)
    with pytest.raises(ConfigError, match="label_ignore=300 does not fit label_dtype=uint8"):
        es.stream_chips(catalog, label_ignore=300, **kwargs)
    with pytest.raises(ConfigError, match="label_dtype='float32' must be an integer dtype"):
        es.stream_chips(catalog, label_dtype="float32", **kwargs)
    assert es.stream_chips(catalog, label_dtype="int16", **kwargs).labels.ignore == -1


def test_block_splits_and_random_chips(catalog) -> None:
    """Chips of two block splits never come within 2 * buffer pixels of each other; random
    chips are distinct and a pure function of (seed, epoch)."""
    from earthstream.sampling import BlockSplit, assign_blocks

    kwargs = {"chip_size": 32, "stride": 16, "crs": UTM, "resolution": 40, "batch_size": 8}
    probe = es.stream_chips(catalog, shuffle=False, **kwargs)
    h, w = probe.grid.height, probe.grid.width
    assignment = assign_blocks((-(-h // 64), -(-w // 64)), 2)
    boxes = []
    for i, name in enumerate(("train", "val")):
        rule = BlockSplit(name, {"y": 64, "x": 64}, assignment, i, buffer=4)
        stream = es.stream_chips(catalog, windows=rule, **kwargs)
        starts = [
            (int(y), int(x))
            for b in stream
            for y, x in zip(b.starts["y"], b.starts["x"], strict=True)
        ]
        assert (
            len(starts) == stream.n_windows > 0 and sum(stream.order.subset.excluded.values()) > 0
        )
        boxes.append(np.array(starts))
    a, b = boxes
    between_y = np.maximum(
        a[:, None, 0] - (b[None, :, 0] + 32), b[None, :, 0] - (a[:, None, 0] + 32)
    )
    between_x = np.maximum(
        a[:, None, 1] - (b[None, :, 1] + 32), b[None, :, 1] - (a[:, None, 1] + 32)
    )
    assert (np.maximum(between_y, between_x) >= 2 * 4).all()  # pixels strictly between them

    random = es.stream_chips(catalog, samples_per_epoch=12, seed=3, **kwargs)
    ids = [int(i) for batch in random for i in batch.window_ids]
    assert len(ids) == len(set(ids)) == 12
    random.set_epoch(0)
    assert [int(i) for batch in random for i in batch.window_ids] == ids
    assert [int(i) for batch in random for i in batch.window_ids] != ids  # epoch 1
