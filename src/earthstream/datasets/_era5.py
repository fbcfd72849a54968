"""A synthetic ERA5-like climate cube, written as a real Zarr store.

The fields have the structure that makes weather data what it is, so that a
model trained on them learns something: a latitude gradient, a seasonal and a
diurnal cycle, eastward-travelling waves (predictable from one 6-hourly step to
the next), winds in balance with the pressure field, geopotential on pressure
levels, and a little noise.  Everything is seeded: the same arguments write the
same bytes.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["ERA5_VARIABLES", "era5_like", "written_with"]


def written_with(path: Path, recipe: Mapping[str, Any]) -> bool:
    """Whether ``path`` holds a finished store written with exactly ``recipe``.

    The recipe is recorded last, so an interrupted write never matches.
    """
    import zarr

    if not path.exists():
        return False
    try:
        return dict(zarr.open_group(str(path), mode="r").attrs).get("earthstream_recipe") == recipe
    except Exception:  # not a store, or another one: rewrite it
        return False


@dataclass(frozen=True)
class _Var:
    long_name: str
    units: str
    levels: bool = False


ERA5_VARIABLES: Mapping[str, _Var] = {
    "t2m": _Var("2 metre temperature", "K"),
    "u10": _Var("10 metre U wind component", "m s**-1"),
    "v10": _Var("10 metre V wind component", "m s**-1"),
    "msl": _Var("Mean sea level pressure", "Pa"),
    "z": _Var("Geopotential", "m**2 s**-2", levels=True),
    # upper-air variables of the ARCO-ERA5 / WeatherBench layout (not written by default)
    "t": _Var("Temperature", "K", levels=True),
    "u": _Var("U component of wind", "m s**-1", levels=True),
    "v": _Var("V component of wind", "m s**-1", levels=True),
    "q": _Var("Specific humidity", "kg kg**-1", levels=True),
}
#: What ``era5_like`` writes when ``variables`` is not given.
DEFAULT_VARIABLES = ("t2m", "u10", "v10", "msl", "z")
#: Elements of float64 work arrays per block of steps written at once (~256 MB).
_BLOCK_ELEMENTS = 32 * 2**20
_CODECS = ("zstd", "blosc-lz4", "none")
#: Physical range each variable is packed into int16 over (``packed=True``), as
#: ERA5's NetCDF files pack them: ``value = stored * scale_factor + add_offset``.
_PACK_RANGE = {
    "t2m": (170.0, 350.0),
    "u10": (-90.0, 90.0),
    "v10": (-90.0, 90.0),
    "msl": (85_000.0, 110_000.0),
    "z": (-5_000.0, 200_000.0),
}
_PACK_FILL = -32768
_OMEGA = 2 * np.pi / 24.0  # rad per hour (one wave crest passes a point per day)
_G = 9.80665


def _compressors(codec: str, level: int, zarr_format: int) -> Any:
    if codec == "none":
        return None
    if zarr_format == 2:
        import numcodecs

        if codec == "zstd":
            return numcodecs.Zstd(level=level)
        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    import zarr.codecs

    if codec == "zstd":
        return zarr.codecs.ZstdCodec(level=level)
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _fields(
    name: str,
    hours: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    levels: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Values of one variable for the given hours (float32, (t, [level,] lat, lon))."""
    t = hours[:, None, None].astype(np.float64)
    phi = np.deg2rad(lat)[None, :, None]
    lam = np.deg2rad(lon)[None, None, :]
    day = t / 24.0
    season = np.cos(2 * np.pi * (day - 15.0) / 365.25)
    # Two eastward-travelling waves at different speeds, confined to mid-latitudes.
    envelope = np.cos(phi) ** 2
    wave = envelope * (
        np.sin(4 * lam - _OMEGA * t * 0.5 + 3 * phi) + 0.6 * np.sin(7 * lam - _OMEGA * t * 0.35)
    )
    shape = (len(hours), len(lat), len(lon))
    if name == "t2m":
        base = 300.0 - 45.0 * np.sin(phi) ** 2 - 15.0 * season * np.sin(phi)
        local_hour = (t + np.rad2deg(lam) / 15.0) % 24.0
        diurnal = 4.0 * np.cos(phi) * np.cos(2 * np.pi * (local_hour - 14.0) / 24.0)
        out = base + diurnal + 6.0 * wave + rng.normal(0.0, 0.4, shape)
    elif name == "msl":
        out = 101_325.0 - 800.0 * np.cos(2 * phi) + 1_200.0 * wave + rng.normal(0.0, 30.0, shape)
    elif name in ("u10", "v10"):
        # Geostrophic-like winds from the wave part of the pressure field.
        dpdlam = envelope * (
            4 * np.cos(4 * lam - _OMEGA * t * 0.5 + 3 * phi)
            + 4.2 * np.cos(7 * lam - _OMEGA * t * 0.35)
        )
        dpdphi = envelope * 3 * np.cos(4 * lam - _OMEGA * t * 0.5 + 3 * phi)
        if name == "u10":
            out = 5.0 * np.cos(2 * phi) - 4.0 * dpdphi + rng.normal(0.0, 0.5, shape)
        else:
            out = 4.0 * dpdlam * np.ones_like(phi) + rng.normal(0.0, 0.5, shape)
    elif name == "z":
        lev = levels.astype(np.float64)[None, :, None, None]
        height = 7_000.0 * np.log(1_013.25 / lev)  # scale-height approximation (m)
        z = _G * (
            height
            - 120.0 * np.sin(phi)[:, None] ** 2 * (1_000.0 / lev)
            + 60.0 * wave[:, None] * (1_000.0 / lev) ** 0.5
        )
        out = z + rng.normal(0.0, 20.0, (len(hours), len(levels), len(lat), len(lon)))
    elif name in ("t", "u", "v", "q"):
        ratio = (levels.astype(np.float64) / 1_000.0)[None, :, None, None]
        wave4 = wave[:, None]
        noise = rng.normal(0.0, 1.0, (len(hours), len(levels), len(lat), len(lon)))
        if name == "t":
            base = (300.0 - 45.0 * np.sin(phi) ** 2)[:, None] * ratio**0.19
            out = base + 3.0 * wave4 + 0.4 * noise
        elif name == "q":
            out = 0.018 * np.cos(phi)[:, None] ** 2 * ratio**3 * (1.0 + 0.2 * wave4)
            out = out + 1e-5 * noise
        else:
            jet = (30.0 if name == "u" else 0.0) * np.cos(2 * phi)[:, None] / ratio**0.5
            out = jet + 8.0 * wave4 * (1.0 if name == "u" else -1.0) + 0.8 * noise
    else:  # pragma: no cover - guarded by the caller
        raise ConfigError(f"unknown variable {name!r}")
    return np.asarray(out, dtype=np.float32)


def _pack(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """CF packing into int16 (NaN to the fill value), as xarray's encoder does."""
    packed = np.round((values.astype(np.float64) - offset) / scale)
    packed = np.clip(packed, -32767, 32767)
    return np.where(np.isnan(values), _PACK_FILL, packed).astype(np.int16)


def era5_like(
    path: str | os.PathLike[str],
    *,
    n_times: int = 1464,
    n_lat: int = 96,
    n_lon: int = 192,
    levels: Sequence[int] = (500, 850, 1000),
    variables: Sequence[str] | None = None,
    start: str = "2020-01-01",
    step_hours: int = 6,
    chunks: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | None = None,
    codec: str = "zstd",
    level: int = 3,
    zarr_format: int = 3,
    seed: int = 0,
    packed: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write an ERA5-like Zarr store and return its path.

    The default (1464 six-hourly steps of 2020 on a 96 x 192 grid, 2 m
    temperature, 10 m winds, sea-level pressure and geopotential on three
    levels) holds about 755 MB decoded.  If ``path`` already holds a store
    written with the same arguments it is reused (the arguments are recorded in
    the store's attributes).

    Parameters
    ----------
    path
        Directory to write (a local path).
    n_times, n_lat, n_lon, levels
        Sizes of the time, latitude and longitude axes and the pressure levels (hPa).
    variables
        Any of ``t2m``, ``u10``, ``v10``, ``msl`` (surface) and ``z``, ``t``, ``u``,
        ``v``, ``q`` (on ``levels``); default: the surface variables and ``z``.
    chunks
        Chunk length per dim (default one time step per chunk, whole extent
        otherwise), e.g. ``{"time": 24}`` or ``{"time": 1, "lat": 48, "lon": 48}``.
    shards
        Shard length per dim for a sharded Zarr v3 store (multiples of ``chunks``).
    codec
        ``"zstd"`` (at ``level``), ``"blosc-lz4"`` (with byte shuffle) or ``"none"``.
    zarr_format
        2 or 3.
    seed
        Seed of the noise.
    packed
        Store the variables as CF-packed int16 (``scale_factor``, ``add_offset``,
        ``_FillValue`` -32768, as ERA5's NetCDF files and many reanalyses), which
        readers decode to floats; default float32.
    overwrite
        Rewrite even when a matching store exists.
    progress
        Show a progress bar.

    Examples
    --------
    >>> from earthstream.datasets import era5_like
    >>> path = era5_like(tmp_path / "tiny.zarr", n_times=4, n_lat=8, n_lon=16)
    >>> sorted(p.name for p in path.iterdir())[:3]
    ['lat', 'level', 'lon']
    """
    import zarr

    names = list(variables) if variables is not None else list(DEFAULT_VARIABLES)
    for name in names:
        if name not in ERA5_VARIABLES:
            raise ConfigError(
                f"era5_like has no variable {name!r}; choose from {', '.join(ERA5_VARIABLES)}."
            )
    if codec not in _CODECS:
        raise ConfigError(f"codec={codec!r} is not one of {', '.join(_CODECS)}.")
    if zarr_format not in (2, 3):
        raise ConfigError(f"zarr_format={zarr_format!r} must be 2 or 3.")
    if shards and zarr_format != 3:
        raise ConfigError("shards need zarr_format=3 (Zarr v2 has no sharding).")
    if min(n_times, n_lat, n_lon) < 1:
        raise ConfigError("n_times, n_lat and n_lon must be at least 1.")

    path = Path(path)
    sizes = {"time": n_times, "level": len(levels), "lat": n_lat, "lon": n_lon}
    chunk_len = {d: sizes[d] for d in sizes} | {"time": 1} | dict(chunks or {})
    shard_len = dict(shards or {})
    recipe: dict[str, Any] = {
        "n_times": n_times,
        "n_lat": n_lat,
        "n_lon": n_lon,
        "levels": list(levels),
        "variables": names,
        "start": start,
        "step_hours": step_hours,
        "chunks": chunk_len,
        "shards": shard_len,
        "codec": codec,
        "level": level,
        "zarr_format": zarr_format,
        "seed": seed,
    }
    if packed:
        recipe["packed"] = "int16"
    if not overwrite and written_with(path, recipe):
        return path
    if path.exists():
        shutil.rmtree(path)

    lat = np.linspace(90.0, -90.0, n_lat, dtype=np.float32) if n_lat > 1 else np.zeros(1, "f4")
    lon = np.arange(n_lon, dtype=np.float32) * np.float32(360.0 / n_lon)
    level_values = np.asarray(levels, dtype=np.int32)
    hours = np.arange(n_times, dtype=np.int64) * step_hours

    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    group.attrs.update(
        {
            "title": "earthstream synthetic ERA5-like reanalysis",
            "Conventions": "CF-1.8",
        }
    )

    def create(name: str, dims: tuple[str, ...], data_shape: tuple[int, ...], **kw: Any) -> Any:
        dim_chunks = tuple(min(chunk_len[d], sizes[d]) for d in dims)
        extra: dict[str, Any] = {}
        if zarr_format == 3:
            extra["dimension_names"] = dims
        else:
            kw.setdefault("attributes", {})["_ARRAY_DIMENSIONS"] = list(dims)
        if shard_len:
            extra["shards"] = tuple(
                max(shard_len.get(d, c) // c, 1) * c for d, c in zip(dims, dim_chunks, strict=True)
            )
        return group.create_array(
            name,
            shape=data_shape,
            chunks=dim_chunks,
            compressors=_compressors(codec, level, zarr_format),
            **extra,
            **kw,
        )

    def coord(name: str, values: np.ndarray, attrs: dict[str, Any]) -> None:
        arr = group.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype,
            chunks=values.shape,
            # No fill value that a real coordinate could equal (xarray masks it).
            fill_value=np.nan if values.dtype.kind == "f" else None,
            **(
                {"dimension_names": (name,)}
                if zarr_format == 3
                else {"attributes": {"_ARRAY_DIMENSIONS": [name]}}
            ),
        )
        arr.attrs.update(attrs)
        arr[...] = values

    coord(
        "time",
        hours,
        {
            "units": f"hours since {start} 00:00:00",
            "calendar": "proleptic_gregorian",
            "standard_name": "time",
        },
    )
    coord("lat", lat, {"units": "degrees_north", "standard_name": "latitude"})
    coord("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})
    if any(ERA5_VARIABLES[n].levels for n in names):
        coord("level", level_values, {"units": "hPa", "standard_name": "air_pressure"})

    arrays = {}
    for name in names:
        var = ERA5_VARIABLES[name]
        dims = ("time", "level", "lat", "lon") if var.levels else ("time", "lat", "lon")
        shape = tuple(sizes[d] for d in dims)
        attributes: dict[str, Any] = {"units": var.units, "long_name": var.long_name}
        if packed:
            lo, hi = _PACK_RANGE[name]
            attributes |= {
                "scale_factor": (hi - lo) / (2**16 - 2),
                "add_offset": (hi + lo) / 2,
                "_FillValue": _PACK_FILL,
            }
        arrays[name] = create(
            name,
            dims,
            shape,
            dtype="int16" if packed else "float32",
            fill_value=_PACK_FILL if packed else np.float32("nan"),
            attributes=attributes,
        )

    # blocks of up to 24 steps, fewer on large grids (float64 work arrays stay ~256 MB)
    per_step = n_lat * n_lon * (len(levels) if any(ERA5_VARIABLES[n].levels for n in names) else 1)
    step = max(chunk_len["time"], shard_len.get("time", 1), min(24, _BLOCK_ELEMENTS // per_step))
    step = -(-step // chunk_len["time"]) * chunk_len["time"]
    blocks = range(0, n_times, step)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_times * len(names), unit="step", desc=f"writing {path.name}")
    for vi, name in enumerate(names):
        for t0 in blocks:
            t1 = min(t0 + step, n_times)
            rng = np.random.default_rng([seed, vi, t0])
            values = _fields(name, hours[t0:t1], lat, lon, level_values, rng)
            if packed:
                attrs = arrays[name].attrs
                values = _pack(values, attrs["scale_factor"], attrs["add_offset"])
            arrays[name][t0:t1] = values
            if bar is not None:
                bar.update(t1 - t0)
    if bar is not None:
        bar.close()
    # Recorded last: an interrupted write is never mistaken for a finished store.
    group.attrs["earthstream_recipe"] = recipe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
    return path
