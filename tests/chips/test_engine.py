"""Chips through the one engine: COG tiles are chunks decoded once per epoch, chips equal
rasterio's ``reproject`` of the files (an independent read), ``skip_empty`` leaves out only
chips no scene touches (and counts them), the budget bounds GDAL's block cache."""

from __future__ import annotations

import numpy as np
import pytest

import earthstream as es
from earthstream.errors import MemoryBudgetError
from earthstream.geo import RasterBand, decode
from tests._geodata import RES, SCALE, UTM
from tests.geo._reference import reproject_read


def _reference(paths, chip, method="nearest"):
    """Decoded first-valid-pixel mosaic of ``paths`` on ``chip`` (rasterio's reproject of
    each whole file), and its validity."""
    values = np.zeros(chip.shape, np.uint16)
    valid = np.zeros(chip.shape, bool)
    for path in paths:
        v, ok = reproject_read(path, chip, method)
        new = ok[0] & ~valid
        values[new] = v[0][new]
        valid |= new
    band = RasterBand(1, "x", nodata=0, scale=SCALE, offset=-0.1)
    return decode(values[None], valid[None], [band])[0], valid


def _paths(stream, band="red"):
    return [s.rasters[stream.plan.channels.index(band)].href for s in stream.plan.scenes]


def test_tiles_are_decoded_once_per_epoch_and_chips_equal_rasterio(catalog) -> None:
    """Native grid of the UTM scenes (their tiles are cut, not warped; the EPSG:4326 scene is
    warped from its decoded tiles), chips overlapping (stride < chip) in a random order: every
    tile is decoded once per epoch however many chips use it, and every chip equals a
    rasterio reproject of the files."""
    bounds = (500000.0, 4979240.0, 505760.0, 4985000.0)
    stream = es.stream_chips(
        catalog, chip_size=64, stride=48, crs=UTM, resolution=RES, bounds=bounds,
        shuffle="full", batch_size=8, assets=["red"], overview=None, seed=1,
    )  # fmt: skip
    paths = _paths(stream)
    seen = 0
    for batch in stream:
        for i, wid in enumerate(batch.window_ids):
            ref, ok = _reference(paths, stream.chip_grid(int(wid)))
            np.testing.assert_array_equal(batch.mask[i, 0], ok)
            np.testing.assert_array_equal(batch["image"][i, 0], ref)
            seen += 1
    report = stream.report
    assert report is not None and report.finished and seen == report.samples == stream.n_windows
    assert report.chunks_decoded > 0 and max(report.decodes.values()) == 1
    assert report.counts["aligned_reads"] > 0 and report.counts["warped_reads"] > 0
    assert report.counts["raster_reads"] > report.chunks_decoded  # tiles shared by chips
    assert report.peak_cache_bytes <= report.cache_capacity
    assert "raster_reads" in report.summary()
    # the next epoch decodes each tile once again, in another order
    stream.set_epoch(1)
    assert sum(b.size for b in stream) == stream.n_windows
    assert max(stream.report.decodes.values()) == 1


def test_skip_empty_leaves_out_only_chips_no_scene_touches(catalog) -> None:
    """A grid reaching far past the scenes: ``skip_empty`` leaves out chips, counted in
    ``stream.excluded`` and the report; every chip with a valid pixel is kept with the same
    values, and every chip left out has no valid pixel in the default stream."""
    bounds = (494000.0, 4974000.0, 511000.0, 4990000.0)
    kwargs = {
        "chip_size": 32, "crs": UTM, "resolution": 40, "bounds": bounds, "shuffle": False,
        "batch_size": 16, "assets": ["red"],
    }  # fmt: skip
    every = es.stream_chips(catalog, **kwargs)
    skipping = es.stream_chips(catalog, skip_empty=True, **kwargs)
    assert every.excluded == {} and every.n_windows > skipping.n_windows > 0
    left_out = every.n_windows - skipping.n_windows
    assert skipping.excluded == {"touch no scene": left_out}

    def chips(stream):
        out = {}
        for batch in stream:
            for i, wid in enumerate(batch.window_ids):
                out[int(wid)] = (batch["image"][i], batch.mask[i])
        return out

    all_chips, kept = chips(every), chips(skipping)
    assert every.report.counts["chips_empty"] >= left_out
    assert skipping.report.counts["chips_empty"] == 0
    assert skipping.report.excluded == {"touch no scene": left_out}
    assert "touch no scene" in skipping.report.summary()
    for wid, (image, mask) in all_chips.items():
        if wid in kept:
            np.testing.assert_array_equal(kept[wid][0], image)
            np.testing.assert_array_equal(kept[wid][1], mask)
        else:
            assert not mask.any() and np.isnan(image).all()
    # chips touching a scene by a sliver stay, whatever they hold
    assert len(kept) == skipping.n_windows


def test_memory_limit_bounds_slots_and_gdal_cache(catalog) -> None:
    """The budget: too small a limit is a typed error naming what needs the room; iterating
    sets GDAL's block cache (one setting per process) to the stream's share."""
    from rasterio.env import get_gdal_config

    from earthstream.geo._gdal import gdal_cache_share

    kwargs = {"chip_size": 64, "crs": UTM, "resolution": RES, "assets": ["red"]}
    with pytest.raises(MemoryBudgetError, match=r"memory_limit=.* is too small"):
        es.stream_chips(catalog, memory_limit="1MB", **kwargs)
    stream = es.stream_chips(catalog, memory_limit="96MB", shuffle=False, **kwargs)
    assert sum(b.size for b in stream) == stream.n_windows
    assert get_gdal_config("GDAL_CACHEMAX") == gdal_cache_share(96_000_000) == 8 << 20
    report = stream.report
    assert report.memory_limit == 96_000_000 and report.peak_cache_bytes <= report.cache_capacity
