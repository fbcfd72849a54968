"""Batch.to_xarray: each sample's coordinate labels equal xarray's isel of its window."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import xarray as xr

import earthstream as es


def test_to_xarray_labels_equal_isel_with_padding(tmp_path: Path) -> None:
    """Labels are cut from the span the batch covers (no per-batch copy); padded
    positions are NaN / NaT; a pickled batch (DataLoader workers) carries only that span."""
    path = es.datasets.era5_like(tmp_path / "b.zarr", n_times=5, n_lat=18, n_lon=30)
    ds = xr.open_zarr(path)
    window = {"time": 2, "lat": 8, "lon": 8}
    stream = es.Stream(
        path, window, variables="t2m", batch_size=5, edges="pad", shuffle=True, seed=3
    )
    n = 0
    for batch in stream:
        batch = pickle.loads(pickle.dumps(batch))
        x = batch.to_xarray()
        for i in range(batch.size):
            at = {d: int(batch.starts[d][i]) for d in window}
            ref = ds.isel({d: slice(at[d], at[d] + window[d]) for d in window})
            got = x.isel(sample=i)
            for dim in ("lat", "lon"):
                k = ref.sizes[dim]
                np.testing.assert_array_equal(got[dim].values[:k], ref[dim].values)
                assert np.isnan(got[dim].values[k:]).all()
            k = ref.sizes["time"]
            np.testing.assert_array_equal(got["time"].values[:k], ref["time"].values)
            assert np.isnat(got["time"].values[k:]).all()
            np.testing.assert_array_equal(
                got["t2m"].values[:k, : ref.sizes["lat"], : ref.sizes["lon"]], ref["t2m"].values
            )
            n += 1
    assert n == stream.n_windows
