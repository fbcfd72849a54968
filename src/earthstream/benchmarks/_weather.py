"""Weather-model rows of ``earthstream bench``: whole-field, multi-step, many-variable samples.

Stores in the ARCO-ERA5 layout (one time step per chunk, levels whole in a
chunk, zstd): a 1-degree store of 4 surface variables, and a 0.25-degree store of
4 surface variables plus 5 upper-air variables on 13 pressure levels (69
channels).  Each sample is the whole field at 2 input steps and 1 target step
(``forecast={"inputs": 2, "lead": "6h"}``), stacked ``(B, C, T, H, W)``.  Measured
side by side, in rounds: the decode limit (every chunk decoded once, all cores),
earthstream (plain, and through its torch loader), and the plain loader a user
writes: a torch ``Dataset`` over ``xr.open_zarr(...).isel(time=...)`` in a
``DataLoader`` with 2 workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..datasets import era5_like

__all__ = ["WEATHER", "WeatherLayout", "measure_weather"]

SURFACE = ("t2m", "u10", "v10", "msl")
UPPER = ("z", "t", "u", "v", "q")
LEVELS_13 = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)


@dataclass(frozen=True)
class WeatherLayout:
    """One weather store and how its samples are streamed."""

    name: str
    description: str
    grid: dict[str, int]  # n_times, n_lat, n_lon
    variables: tuple[str, ...]
    levels: tuple[int, ...] = (500, 850, 1000)
    batch_size: int = 4
    shuffle: str | bool = "full"
    memory_limit: str = "1GB"
    smoke: dict[str, int] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return sum(len(self.levels) if v in UPPER else 1 for v in self.variables)


WEATHER: dict[str, WeatherLayout] = {
    w.name: w
    for w in (
        WeatherLayout(
            "era5-1deg",
            "1 degree (181 x 360), 480 six-hourly steps, 4 surface variables, 1 step/chunk, zstd",
            {"n_times": 480, "n_lat": 181, "n_lon": 360},
            SURFACE,
            smoke={"n_times": 40, "n_lat": 19, "n_lon": 36},
        ),
        WeatherLayout(
            "era5-025",
            "0.25 degree (721 x 1440), 16 steps, 4 surface + 5 upper-air variables on 13 "
            "levels (69 channels), 1 step/chunk (levels whole), zstd",
            {"n_times": 16, "n_lat": 721, "n_lon": 1440},
            SURFACE + UPPER,
            levels=LEVELS_13,
            batch_size=1,
            shuffle=False,
            memory_limit="4GB",
            smoke={"n_times": 8, "n_lat": 37, "n_lon": 72},
        ),
    )
}


def make_weather_store(folder: Path, layout: WeatherLayout, smoke: bool, progress: bool) -> Path:
    grid = layout.smoke if smoke else layout.grid
    suffix = "smoke" if smoke else "full"
    return era5_like(
        folder / f"bench-{layout.name}-{suffix}.zarr",
        variables=list(layout.variables),
        levels=layout.levels,
        chunks={"time": 1},
        codec="zstd",
        progress=progress,
        **grid,  # type: ignore[arg-type]
    )


def measure_weather(config: Any, name: str) -> list[dict[str, Any]]:
    """The rows of one weather layout (``config`` is the bench's ``BenchConfig``)."""
    from ._common import _log, _median, _row, _run, _warm

    layout = WEATHER[name]
    smoke = config.size == "smoke"
    path = make_weather_store(config.folder, layout, smoke, config.progress)
    _warm(path)
    window: dict[str, Any] = {"lat": None, "lon": None}
    if any(v in UPPER for v in layout.variables):
        window["level"] = None
    stream = {
        "window": window,
        "forecast": {"inputs": 2, "lead": "6h"},
        "stack": True,
        "batch_size": layout.batch_size,
        "shuffle": layout.shuffle,
        "seed": 0,
        "memory_limit": layout.memory_limit,
    }
    base = {
        "store": str(path),
        "variables": list(layout.variables),
        "window": 0,
        "batch_size": layout.batch_size,
        "repeats": 1,
        "time_budget": config.time_budget,
        "stream": stream,
        "lead_steps": 1,
    }
    order = "grid order" if layout.shuffle is False else f"shuffle={layout.shuffle}"
    plan: list[tuple[str, str, str, dict[str, Any]]] = [
        ("limit", "decode once, all cores", "", {}),
        ("earthstream", f"forecast 2+1, stacked, {order}", "", {}),
        ("earthstream", f"forecast 2+1, torch loader, {order}", "", {"torch": True}),
    ]
    if not any(v in UPPER for v in layout.variables):  # whole fields, one step: item 2
        single = {k: v for k, v in stream.items() if k != "forecast"}
        plan.append(
            (
                "earthstream",
                f"whole fields, 1 step (into batch), {order}",
                "each chunk is one sample's: decoded straight into the batch",
                {"stream": single},
            )
        )
    if config.peers:
        plan.append(
            (
                "xarray",
                f"Dataset+DataLoader({config.workers} workers)",
                f"first {config.time_budget:.0f} s; open_zarr(...).isel(time=...), shuffled",
                {"workers": config.workers},
            )
        )
    results: list[dict[str, Any]] = [{"runs": [], "peak_rss_mb": 0.0} for _ in plan]
    for round_ in range(config.repeats):
        for (method, variant, _, spec), merged in zip(plan, results, strict=True):
            _log(config, f"  {name} round {round_ + 1}: {method} {variant}")
            result = _run({**base, "method": method, **spec}, config.timeout)
            merged["runs"].extend(result["runs"])
            merged["peak_rss_mb"] = max(merged["peak_rss_mb"], result["peak_rss_mb"])
    size = "smoke" if smoke else "weather"
    rows = [
        _row(name, size, method, variant, merged, notes)
        for (method, variant, notes, _), merged in zip(plan, results, strict=True)
    ]
    limit = rows[0]
    decoders = sorted({run.get("decoder", "?") for run in limit["runs"]})
    limit["variant"] = f"decode once, all cores ({'/'.join(decoders)})"
    n_windows = _median(rows[1]["runs"], "n_windows")
    limit_rate = n_windows / limit["elapsed_s"] if limit["elapsed_s"] else None
    limit["samples_per_s"] = limit_rate
    ours = rows[1]["samples_per_s"]
    for row in rows:
        row["channels"] = layout.channels
        own = _median(row["runs"], "n_windows")  # a row with other samples than the forecast's
        rate = own / limit["elapsed_s"] if own and limit["elapsed_s"] else limit_rate
        if rate and row["samples_per_s"]:
            row["ratio_to_limit"] = row["samples_per_s"] / rate
        if ours and row["samples_per_s"]:
            row["earthstream_over_this"] = ours / row["samples_per_s"]
    return rows


def weather_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for whole-field forecast samples."""
    from ._common import _target

    out = []
    for name in WEATHER:
        mine = [r for r in rows if r["layout"] == name]
        ours = next((r for r in mine if r["variant"].startswith("forecast 2+1, stacked")), None)
        if ours is None:
            continue
        out.append(_target(f"{name}: forecast samples >= 0.6x limit", ours["ratio_to_limit"], 0.6))
        peer = next((r for r in mine if r["method"] == "xarray"), None)
        if peer is not None and name == "era5-1deg":
            out.append(
                _target(
                    f"{name}: >= 8x xarray Dataset + DataLoader",
                    peer["earthstream_over_this"],
                    8,
                )
            )
    return out
