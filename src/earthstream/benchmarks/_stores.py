"""The stores the benchmark measures: one ERA5-like cube in several layouts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..datasets import era5_like
from ..errors import ConfigError

__all__ = ["LAYOUTS", "SIZES", "Layout", "make_store"]


@dataclass(frozen=True)
class Layout:
    """How the benchmark cube is chunked and compressed."""

    name: str
    description: str
    chunks: dict[str, int]
    codec: str = "zstd"
    shards: dict[str, int] | None = None
    packed: bool = False  # CF-packed int16, decoded (scale, offset, mask) on the fly


#: Store layouts, the first is the default case of the targets.
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("zstd-t1", "1 time step per chunk, zstd level 3 (default case)", {"time": 1}),
        Layout(
            "zstd-t24",
            "24 steps x 241 x 360 per chunk, zstd level 3",
            {"time": 24, "lat": 241, "lon": 360},
        ),
        Layout("blosc-lz4", "1 step per chunk, blosc-lz4 + byte shuffle", {"time": 1}, "blosc-lz4"),
        Layout("raw", "1 step per chunk, uncompressed", {"time": 1}, "none"),
        Layout(
            "sharded",
            "Zarr v3 shards of 24 x 721 x 1440, inner chunks 1 x 241 x 360, zstd",
            {"time": 1, "lat": 241, "lon": 360},
            shards={"time": 24, "lat": 723, "lon": 1440},
        ),
        Layout(
            "int16-packed",
            "1 step per chunk, CF-packed int16 (scale_factor, add_offset, _FillValue), zstd; "
            "decoded to float32",
            {"time": 1},
            packed=True,
        ),
    )
}

#: Store sizes: time steps of a 721 x 1440 (0.25 degree) grid with two variables.
SIZES: dict[str, dict[str, int]] = {
    "smoke": {"n_times": 40, "n_lat": 130, "n_lon": 256},
    "smoke-x4": {"n_times": 160, "n_lat": 130, "n_lon": 256},
    "small": {"n_times": 24, "n_lat": 721, "n_lon": 1440},
    "default": {"n_times": 48, "n_lat": 721, "n_lon": 1440},  # 398 MB decoded
    "x4": {"n_times": 192, "n_lat": 721, "n_lon": 1440},  # 1.6 GB decoded
    # 1-degree chunks of 260 KB (WeatherBench 2's 1-degree stores, inner chunks of shards)
    "1deg": {"n_times": 1600, "n_lat": 181, "n_lon": 360},  # 834 MB decoded
}

VARIABLES = ("t2m", "u10")


def make_store(folder: Path, layout: str, size: str, *, progress: bool = False) -> Path:
    """Write (or reuse) the benchmark store for ``layout`` and ``size``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}.")
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; choose from {', '.join(SIZES)}.")
    spec = LAYOUTS[layout]
    dims = SIZES[size]
    extent = {"time": dims["n_times"], "lat": dims["n_lat"], "lon": dims["n_lon"]}
    chunks = {d: min(c, extent[d]) for d, c in spec.chunks.items()}
    shards: dict[str, Any] | None = None
    if spec.shards:
        # whole multiples of the inner chunk, no larger than needed for the extent
        shards = {
            d: -(-min(s, extent[d]) // chunks.get(d, extent[d])) * chunks.get(d, extent[d])
            for d, s in spec.shards.items()
        }
    return era5_like(
        folder / f"bench-{size}-{layout}.zarr",
        variables=list(VARIABLES),
        chunks=chunks,
        shards=shards,
        codec=spec.codec,
        packed=spec.packed,
        progress=progress,
        **dims,  # type: ignore[arg-type]
    )
