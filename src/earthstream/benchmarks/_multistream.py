"""The multi-modal row of ``earthstream bench``: a second large time-varying store.

Three 1-degree stores in the ARCO-ERA5 layout (181 x 360, 480 six-hourly steps,
one step per chunk, zstd): ``all`` holds 4 surface variables, ``a`` and ``b``
two of them each.  Samples are 32 x 32 windows in batches of 32, chunk-shuffled.
Measured side by side, in rounds, each in its own process: the decode limit of
the 4 variables, one :class:`~earthstream.Stream` reading all 4 from ``all``
(one array per variable, and stacked), and a :class:`~earthstream.MultiStream`
joining ``a`` (primary) and ``b`` over the same windows (each modality a stacked
record, both read by the one engine).  Target: the MultiStream at least 0.7x
the Stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..datasets import era5_like

__all__ = ["MULTISTREAM", "measure_multistream", "multistream_targets"]

#: The row's name (``earthstream bench --suite weather --weather multistream-1deg``).
MULTISTREAM = "multistream-1deg"

_GRID = {"n_times": 480, "n_lat": 181, "n_lon": 360}
_SMOKE = {"n_times": 24, "n_lat": 64, "n_lon": 128}
_STORES = {"all": ("t2m", "u10", "v10", "msl"), "a": ("t2m", "u10"), "b": ("v10", "msl")}
WINDOW = 32
BATCH = 32


def _stores(folder: Path, smoke: bool, progress: bool) -> dict[str, Path]:
    grid = _SMOKE if smoke else _GRID
    suffix = "smoke" if smoke else "full"
    return {
        name: era5_like(
            folder / f"bench-mm-{name}-{suffix}.zarr",
            variables=list(variables),
            chunks={"time": 1},
            codec="zstd",
            progress=progress,
            **grid,  # type: ignore[arg-type]
        )
        for name, variables in _STORES.items()
    }


def measure_multistream(config: Any) -> list[dict[str, Any]]:
    """The row's measurements (``config`` is the bench's ``BenchConfig``)."""
    from ._common import _log, _median, _row, _run, _warm

    smoke = config.size == "smoke"
    paths = _stores(config.folder, smoke, config.progress)
    for path in paths.values():
        _warm(path)
    stream = {
        "window": {"lat": WINDOW, "lon": WINDOW},
        "batch_size": BATCH,
        "shuffle": "chunks",
        "seed": 0,
        "memory_limit": config.memory_limit,
    }
    base = {
        "store": str(paths["all"]),
        "variables": list(_STORES["all"]),
        "window": WINDOW,
        "batch_size": BATCH,
        "repeats": 1,
        "time_budget": config.time_budget,
        "stream": stream,
    }
    modalities = {name: [str(paths[name]), list(_STORES[name])] for name in ("a", "b")}
    plan: list[tuple[str, str, str, dict[str, Any]]] = [
        ("limit", "decode once, all cores", "", {"stream": None}),
        ("earthstream", "Stream, 4 variables of one store", "", {}),
        (
            "earthstream",
            "Stream, 4 variables of one store, stack=True",
            "",
            {"stream": {**stream, "stack": True}},
        ),
        (
            "earthstream",
            "MultiStream, 2 stores of 2 variables",
            "records (B, 2, 32, 32) per store; one engine, one budget, one report",
            {"modalities": modalities},
        ),
    ]
    results: list[dict[str, Any]] = [{"runs": [], "peak_rss_mb": 0.0} for _ in plan]
    for round_ in range(config.repeats):
        for (method, variant, _, spec), merged in zip(plan, results, strict=True):
            _log(config, f"  {MULTISTREAM} round {round_ + 1}: {method} {variant}")
            result = _run({**base, "method": method, **spec}, config.timeout)
            merged["runs"].extend(result["runs"])
            merged["peak_rss_mb"] = max(merged["peak_rss_mb"], result["peak_rss_mb"])
    size = "smoke" if smoke else "1deg"
    rows = [
        _row(MULTISTREAM, size, method, variant, merged, notes)
        for (method, variant, notes, _), merged in zip(plan, results, strict=True)
    ]
    limit, single = rows[0], rows[1]
    n_windows = _median(single["runs"], "n_windows")
    limit_rate = n_windows / limit["elapsed_s"] if n_windows and limit["elapsed_s"] else None
    limit["samples_per_s"] = limit_rate
    ours = rows[-1]["samples_per_s"]
    for row in rows:
        if limit_rate and row["samples_per_s"]:
            row["ratio_to_limit"] = row["samples_per_s"] / limit_rate
        if ours and row["samples_per_s"]:
            row["earthstream_over_this"] = ours / row["samples_per_s"]
    return rows


def multistream_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MultiStream over two stores >= 0.7x one Stream reading the same variables."""
    from ._common import _target

    mine = [r for r in rows if r["layout"] == MULTISTREAM]
    multi = next((r for r in mine if r["variant"].startswith("MultiStream")), None)
    single = next((r for r in mine if r["variant"] == "Stream, 4 variables of one store"), None)
    if multi is None or single is None:
        return []
    ratio = (
        multi["samples_per_s"] / single["samples_per_s"]
        if multi["samples_per_s"] and single["samples_per_s"]
        else None
    )
    return [
        _target(
            f"{MULTISTREAM}: MultiStream with a second time-varying store >= 0.7x one Stream "
            "of both stores' variables",
            ratio,
            0.7,
        )
    ]
