"""What every benchmark suite shares: the configuration, the row format, running a method."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._stores import LAYOUTS

__all__ = ["FIELDS", "WEATHER_ROWS", "BenchConfig"]

#: The weather suite: whole-field forecast layouts, small patches on 1-degree chunks, and
#: a MultiStream joining a second time-varying store (``_multistream.py``).
WEATHER_ROWS = ("era5-1deg", "era5-025", "patches-1deg", "multistream-1deg")

#: Fields every row of the JSON output has.
FIELDS = (
    "layout",
    "size",
    "method",
    "variant",
    "samples",
    "elapsed_s",
    "samples_per_s",
    "useful_mb_s",
    "decoded_mb_s",
    "ratio_to_limit",
    "earthstream_over_this",
    "peak_rss_mb",
    "cpu_s",
    "first_batch_s",
    "repeats",
    "notes",
)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    folder: Path
    size: str = "default"
    layouts: tuple[str, ...] = tuple(LAYOUTS)
    repeats: int = 3
    time_budget: float = 10.0
    window: int = 64
    batch_size: int = 32
    memory_limit: int = 10**9
    peers: bool = True
    scale: bool = True
    remote: bool = True
    latency_s: float = 0.02
    workers: int = 2
    timeout: float = 1800.0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``"patches"``: small windows on the default store's layouts (plus scale and
    #: remote checks); ``"weather"``: the rows of :data:`WEATHER_ROWS`; ``"chips"``:
    #: COG chips against the tile limit, the plain rasterio loader and torchgeo.
    suites: tuple[str, ...] = ("patches", "weather", "chips")
    weather: tuple[str, ...] = ()  # default: every weather row
    #: The interpreter of a torchgeo 0.10 environment (the chip suite's peer rows);
    #: None skips them.
    torchgeo_python: str | None = None
    #: COG scenes of the chip suite (4096 x 4096 each; issue 13's figures: 16).
    chip_scenes: int = 4


def _run(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run(
        [sys.executable, "-m", "earthstream.benchmarks._measure", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark method {spec['method']} failed:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _median(runs: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _warm(path: Path) -> int:
    """Read every file of the store once, so every method sees a warm page cache."""
    total = 0
    for file in path.rglob("*"):
        if file.is_file():
            total += len(file.read_bytes())
    return total


def _row(
    layout: str, size: str, method: str, variant: str, result: dict[str, Any], notes: str = ""
) -> dict[str, Any]:
    runs = result["runs"]
    elapsed = _median(runs, "elapsed_s")
    samples = _median(runs, "samples")
    decoded = _median(runs, "bytes_decoded")
    if decoded is None:
        decoded = _median(runs, "bytes_decoded_estimate")
        if decoded is not None:
            notes = (notes + "; " if notes else "") + "decoded MB/s estimated from chunks touched"
    delivered = _median(runs, "bytes_delivered")
    return {
        "layout": layout,
        "size": size,
        "method": method,
        "variant": variant,
        "samples": samples,
        "elapsed_s": elapsed,
        "samples_per_s": samples / elapsed if samples and elapsed else None,
        "useful_mb_s": delivered / elapsed / 1e6 if delivered and elapsed else None,
        "decoded_mb_s": decoded / elapsed / 1e6 if decoded and elapsed else None,
        "ratio_to_limit": None,
        "earthstream_over_this": None,
        "peak_rss_mb": result["peak_rss_mb"],
        "first_batch_s": _median(runs, "first_batch_s"),
        "repeats": len(runs),
        "cpu_s": _median(runs, "cpu_s"),
        "notes": notes,
        "runs": runs,
    }


def _log(config: BenchConfig, message: str) -> None:
    if config.progress:
        print(message, file=sys.stderr, flush=True)


def _target(name: str, value: float | None, bound: float, below: bool = False) -> dict[str, Any]:
    met = value is not None and (value < bound if below else value >= bound)
    return {"target": name, "value": value, "bound": bound, "met": met}
