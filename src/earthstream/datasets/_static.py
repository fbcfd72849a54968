"""Static fields (land-sea mask, orography) on the grid of a weather store."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ._era5 import written_with

__all__ = ["static_fields"]


def _continents(lat: np.ndarray, lon: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth, seeded 'continents': a land-sea mask and an orography (m) on the grid."""
    rng = np.random.default_rng(seed)
    phi = np.deg2rad(lat)[:, None]
    lam = np.deg2rad(lon)[None, :]
    field = np.zeros((len(lat), len(lon)))
    for _ in range(6):  # a few low-order waves make land masses
        k, m = rng.integers(1, 4), rng.integers(1, 5)
        a, b = rng.uniform(0, 2 * np.pi, 2)
        field += rng.uniform(0.5, 1.0) * np.cos(k * phi + a) * np.cos(m * lam + b)
    field -= np.quantile(field, 0.65)  # about 35% land
    lsm = (field > 0).astype(np.float32)
    orography = np.where(field > 0, 3000.0 * field / field.max(), 0.0).astype(np.float32)
    return lsm, orography


def static_fields(
    path: str | os.PathLike[str],
    *,
    like: str | os.PathLike[str],
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a Zarr store of static fields on the lat/lon grid of the store ``like``.

    Holds ``lsm`` (land-sea mask, 0/1) and ``orography`` (metres), both
    ``(lat, lon)`` float32, chunked in 4 x 4 tiles, with the same ``lat`` and
    ``lon`` coordinates: the static modality of a multi-modal stream.

    >>> import earthstream as es
    >>> weather = es.datasets.era5_like(tmp_path / "w.zarr", n_times=2, n_lat=8, n_lon=16)
    >>> static = es.datasets.static_fields(tmp_path / "static.zarr", like=weather)
    >>> sorted(es.open_zarr(static).variables)
    ['lsm', 'orography']
    """
    import zarr

    path, like = Path(path), Path(like)
    source = zarr.open_group(str(like), mode="r")
    if "lat" not in source or "lon" not in source:
        raise ConfigError(
            f"{str(like)!r} has no 'lat' and 'lon' coordinates to copy the grid from."
        )
    lat = np.asarray(source["lat"][...])  # type: ignore[index]
    lon = np.asarray(source["lon"][...])  # type: ignore[index]
    recipe = {"like": str(like.resolve()), "n_lat": len(lat), "n_lon": len(lon), "seed": seed}
    if not overwrite and written_with(path, recipe):
        return path
    if path.exists():
        shutil.rmtree(path)
    lsm, orography = _continents(lat, lon, seed)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["title"] = "earthstream synthetic static fields"
    tiles = (max(1, -(-len(lat) // 4)), max(1, -(-len(lon) // 4)))
    for name, values, dims, chunks, attrs in (
        ("lat", lat, ("lat",), lat.shape, {"units": "degrees_north", "standard_name": "latitude"}),
        ("lon", lon, ("lon",), lon.shape, {"units": "degrees_east", "standard_name": "longitude"}),
        ("lsm", lsm, ("lat", "lon"), tiles, {"long_name": "Land-sea mask", "units": "1"}),
        (
            "orography",
            orography,
            ("lat", "lon"),
            tiles,
            {"long_name": "Surface height", "units": "m"},
        ),
    ):
        arr = group.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype,
            chunks=chunks,
            fill_value=np.nan,
            dimension_names=dims,
        )
        arr.attrs.update(attrs)
        arr[...] = values
    group.attrs["earthstream_recipe"] = recipe  # type: ignore[assignment]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
    return path
