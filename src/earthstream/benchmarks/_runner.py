"""``earthstream bench``: every method on the same store, side by side, in one run."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._common import (
    FIELDS,
    WEATHER_ROWS,
    BenchConfig,
    _log,
    _median,
    _row,
    _run,
    _target,
    _warm,
)
from ._stores import LAYOUTS, SIZES, VARIABLES, make_store

__all__ = ["FIELDS", "WEATHER_ROWS", "BenchConfig", "format_table", "run_bench"]

#: The method name of earthstream's xbatcher drop-in (earthstream.xbatcher.BatchGenerator).
DROPIN = "es.xbatcher"

#: The scale check's budget: below the default store's decoded size, so that both
#: stores are budget-bound and memory can be compared (a store that fits in the
#: budget is simply held whole).
SCALE_BUDGET = 256 * 2**20


def _plan_methods(
    config: BenchConfig, decoded_total: int, peers: bool, scale: bool = False
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, variant, notes, spec) of everything measured on one store."""
    quarter = max(int(decoded_total // 4), 64 * 2**20)
    plan: list[tuple[str, str, str, dict[str, Any]]] = [
        ("limit", "decode once, all cores", "", {}),
        (
            "earthstream",
            "shuffle=chunks",
            "",
            {"shuffle": "chunks", "memory_limit": config.memory_limit},
        ),
        (
            "earthstream",
            "shuffle=full, cache 1/4 of data",
            f"memory_limit={quarter / 1e6:.0f} MB",
            {"shuffle": "full", "memory_limit": quarter},
        ),
        ("earthstream", "grid order", "", {"shuffle": "none", "memory_limit": config.memory_limit}),
    ]
    if scale:
        plan.append(
            (
                "earthstream",
                f"shuffle=chunks, memory_limit {SCALE_BUDGET >> 20} MB",
                "scale check: both store sizes bound by the same budget",
                {"shuffle": "chunks", "memory_limit": SCALE_BUDGET},
            )
        )
    if peers:
        per_worker = config.memory_limit // config.workers
        plan.append(
            (
                "earthstream",
                f"shuffle=chunks, DataLoader {config.workers} workers",
                f"memory_limit {per_worker / 1e6:.0f} MB per worker",
                {"shuffle": "chunks", "memory_limit": per_worker, "workers": config.workers},
            )
        )
        for dask in (False, True):
            for workers in (0, config.workers):
                variant = ("dask" if dask else "no dask") + (
                    f", DataLoader {workers} workers" if workers else ""
                )
                plan.append(
                    (
                        "xbatcher",
                        variant,
                        f"first {config.time_budget:.0f} s",
                        {"dask": dask, "workers": workers},
                    )
                )
            # earthstream.xbatcher.BatchGenerator on the same Dataset and windows
            plan.append(
                (
                    DROPIN,
                    "dask" if dask else "no dask",
                    f"first {config.time_budget:.0f} s from the first batch (decodes included); "
                    "xbatcher's batches, read by the engine",
                    {"dask": dask},
                )
            )
        plan.append(
            (
                "naive",
                "zarr-python, one read per window",
                f"first {config.time_budget:.0f} s",
                {},
            )
        )
    return plan


def _measure_layout(
    config: BenchConfig, layout: str, size: str, peers: bool, scale: bool = False
) -> list[dict[str, Any]]:
    path = make_store(config.folder, layout, size, progress=config.progress)
    _warm(path)
    base = {
        "store": str(path),
        "variables": list(VARIABLES),
        "window": config.window,
        "batch_size": config.batch_size,
        "repeats": 1,
        "time_budget": config.time_budget,
        "packed": LAYOUTS[layout].packed,
    }
    # One pass of every method per round, round after round: load drifting on a
    # shared machine then hits every method alike.
    probe = _run({**base, "method": "limit"}, config.timeout)
    decoded_total = probe["runs"][0]["bytes_decoded"]
    plan = _plan_methods(config, decoded_total, peers, scale)
    if size == "1deg":  # the weather suite's small-patch row: the limit and the two orders
        plan = [p for p in plan if p[0] == "limit" or p[1] in ("shuffle=chunks", "grid order")]
    results: list[dict[str, Any]] = [{"runs": [], "peak_rss_mb": 0.0} for _ in plan]
    for round_ in range(config.repeats):
        for (method, variant, _, spec), merged in zip(plan, results, strict=True):
            _log(config, f"  {layout}/{size} round {round_ + 1}: {method} {variant}")
            result = _run({**base, "method": method, **spec}, config.timeout)
            merged["runs"].extend(result["runs"])
            merged["peak_rss_mb"] = max(merged["peak_rss_mb"], result["peak_rss_mb"])
    rows = [
        _row(layout, size, method, variant, merged, notes)
        for (method, variant, notes, _), merged in zip(plan, results, strict=True)
    ]
    limit = rows[0]
    decoders = sorted({run.get("decoder", "?") for run in limit["runs"]})
    limit["variant"] = f"decode once, all cores ({'/'.join(decoders)})"

    # ratios within this layout: to the limit, and earthstream (chunks) over each row
    n_windows = _median(rows[1]["runs"], "n_windows")
    limit_rate = n_windows / limit["elapsed_s"] if limit["elapsed_s"] else None
    ours = rows[1]["samples_per_s"]
    limit["samples_per_s"] = limit_rate
    for row in rows:
        if limit_rate and row["samples_per_s"]:
            row["ratio_to_limit"] = row["samples_per_s"] / limit_rate
        if ours and row["samples_per_s"]:
            row["earthstream_over_this"] = ours / row["samples_per_s"]
    return rows


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Measure every layout (and the scale check) and return the results."""
    config.folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    weather_rows, weather = _run_weather(config)
    chip_rows, chips = _run_chips(config)
    weather_rows, weather = weather_rows + chip_rows, weather + chips.pop("targets", [])
    if "patches" not in config.suites:
        return _result(config, weather_rows, None, None, weather, started, chips)
    for i, layout in enumerate(config.layouts):
        _log(config, f"layout {layout} ({LAYOUTS[layout].description}), size {config.size}")
        scale_here = bool(config.scale and i == 0)
        rows.extend(
            _measure_layout(
                config, layout, config.size, peers=config.peers and i == 0, scale=scale_here
            )
        )
    scale: dict[str, Any] | None = None
    bigger = {"smoke": "smoke-x4", "default": "x4"}.get(config.size)
    if config.scale and bigger:
        layout = config.layouts[0]
        _log(config, f"scale check: {layout} at size {bigger} (4x)")
        big = _measure_layout(config, layout, bigger, peers=False, scale=True)
        rows.extend(big)

        def pick(size: str, variant: str) -> dict[str, Any]:
            return next(
                r
                for r in rows
                if r["layout"] == layout and r["size"] == size and r["variant"] == variant
            )

        small_row, big_row = pick(config.size, "shuffle=chunks"), pick(bigger, "shuffle=chunks")
        budget_variant = f"shuffle=chunks, memory_limit {SCALE_BUDGET >> 20} MB"
        small_b, big_b = pick(config.size, budget_variant), pick(bigger, budget_variant)
        scale = {
            "sizes": [config.size, bigger],
            # raw samples/s, measured minutes apart: machine drift lands in it
            "throughput_ratio": (big_row["samples_per_s"] or 0) / (small_row["samples_per_s"] or 1),
            # each against its own store's limit, measured in the same rounds: drift cancels
            "limit_normalized_ratio": (big_row["ratio_to_limit"] or 0)
            / (small_row["ratio_to_limit"] or 1),
            "rss_mb": [small_row["peak_rss_mb"], big_row["peak_rss_mb"]],
            "budget_mb": SCALE_BUDGET >> 20,
            "budget_rss_mb": [small_b["peak_rss_mb"], big_b["peak_rss_mb"]],
        }
    remote: dict[str, Any] | None = None
    if config.remote:
        remote_rows, remote = _measure_remote(config, config.layouts[0], config.size)
        local = [r for r in rows if r["layout"] == config.layouts[0] and r["size"] == config.size]
        limit_rate = local[0]["samples_per_s"] if local else None
        ours = local[1]["samples_per_s"] if len(local) > 1 else None
        for row in remote_rows:  # against the local limit and the local chunk-shuffled epoch
            if limit_rate and row["samples_per_s"]:
                row["ratio_to_limit"] = row["samples_per_s"] / limit_rate
            if ours and row["samples_per_s"]:
                row["earthstream_over_this"] = ours / row["samples_per_s"]
        rows.extend(remote_rows)
    out = _result(config, rows + weather_rows, scale, remote, weather, started, chips)
    out["targets"] = targets(rows, scale, config) + _remote_targets(remote, config) + weather
    return out


def _run_weather(config: BenchConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The weather suite's rows and targets (nothing when it is not selected)."""
    from ._multistream import MULTISTREAM, measure_multistream, multistream_targets
    from ._weather import measure_weather, weather_targets

    if "weather" not in config.suites:
        return [], []
    rows: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    for name in config.weather or WEATHER_ROWS:
        if name == "patches-1deg":
            size = "smoke" if config.size == "smoke" else "1deg"
            _log(config, f"weather: small patches on 1-degree chunks ({size})")
            part = _measure_layout(config, "zstd-t1", size, peers=False)
            if size == "smoke":
                for row in part:
                    row["layout"] = "zstd-t1/1deg"
            chunks = next(r for r in part if r["variant"] == "shuffle=chunks")
            found.append(
                _target(
                    "1-degree chunks: small patches, shuffle=chunks >= 0.5x limit",
                    chunks["ratio_to_limit"],
                    0.5,
                )
            )
        elif name == MULTISTREAM:
            _log(config, "weather: a MultiStream with a second time-varying store")
            part = measure_multistream(config)
        else:
            _log(config, f"weather: {name}")
            part = measure_weather(config, name)
        rows.extend(part)
    found.extend(weather_targets(rows))
    found.extend(multistream_targets(rows))
    return rows, found


def _run_chips(config: BenchConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The chip suite's rows and summary (with its targets; empty when not selected)."""
    from ._chips_report import chips_targets
    from ._chips_suite import measure_chips

    if "chips" not in config.suites:
        return [], {}
    _log(config, f"chips: COG chips, {config.chip_scenes} scenes (torchgeo peer: "
                 f"{config.torchgeo_python or 'skipped'})")  # fmt: skip
    rows, summary = measure_chips(config)
    summary["targets"] = chips_targets(rows)
    return rows, summary


def _result(
    config: BenchConfig,
    rows: list[dict[str, Any]],
    scale: dict[str, Any] | None,
    remote: dict[str, Any] | None,
    weather: list[dict[str, Any]],
    started: float,
    chips: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "config": {
            "size": config.size,
            "grid": SIZES[config.size],
            "variables": list(VARIABLES),
            "window": config.window,
            "batch_size": config.batch_size,
            "memory_limit": config.memory_limit,
            "repeats": config.repeats,
            "time_budget_s": config.time_budget,
        },
        "rows": rows,
        "scale": scale,
        "remote": remote,
        "targets": weather,
        "chips": chips or None,
        "wall_s": time.time() - started,
    }


def _measure_remote(
    config: BenchConfig, layout: str, size: str
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Chunk-shuffled epochs of the same store over HTTP (nginx, directly and through a
    proxy adding no and ``latency_s`` delay per request) and over S3 (moto)."""
    from ..testing import FaultProxy, find_nginx, moto_s3, nginx_server

    if find_nginx() is None:
        _log(config, "remote: nginx is not installed (apt-get install nginx-light); skipped")
        return [], {"skipped": "nginx is not installed"}
    path = make_store(config.folder, layout, size, progress=config.progress)
    _warm(path)
    http = {"client_options": {"allow_http": True}}
    base = {
        "variables": list(VARIABLES),
        "window": config.window,
        "batch_size": config.batch_size,
        "repeats": 1,
        "time_budget": config.time_budget,
        "method": "earthstream",
        "shuffle": "chunks",
        "memory_limit": config.memory_limit,
    }
    ms = f"{config.latency_s * 1000:.0f} ms"
    nginx = nginx_server(path.parent)
    proxy = FaultProxy(nginx.base_url)
    s3 = None
    try:
        variants: list[tuple[str, dict[str, Any], float]] = [
            ("http, nginx", {"store": f"{nginx.base_url}/{path.name}", "storage_options": http}, 0),
            (
                "http, proxy +0 ms",
                {"store": f"{proxy.base_url}/{path.name}", "storage_options": http},
                0,
            ),
            (
                f"http, proxy +{ms}",
                {"store": f"{proxy.base_url}/{path.name}", "storage_options": http},
                config.latency_s,
            ),
        ]
        try:
            import logging

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            s3 = moto_s3()
            s3.create_bucket("earthstream-bench")
            s3.upload("earthstream-bench", path.name, path)
            variants.append(
                (
                    "s3, moto",
                    {
                        "store": f"s3://earthstream-bench/{path.name}",
                        "storage_options": s3.options(),
                    },
                    0,
                )
            )
        except ImportError:  # moto is in the dev extra
            _log(config, "remote: moto is not installed; S3 skipped")
        results: list[dict[str, Any]] = [{"runs": [], "peak_rss_mb": 0.0} for _ in variants]
        for round_ in range(config.repeats):
            for (label, spec, delay), merged in zip(variants, results, strict=True):
                _log(config, f"  remote round {round_ + 1}: {label}")
                proxy.set_delay(delay)
                result = _run({**base, **spec}, config.timeout)
                merged["runs"].extend(result["runs"])
                merged["peak_rss_mb"] = max(merged["peak_rss_mb"], result["peak_rss_mb"])
        rows = [
            _row(layout, size, "earthstream", f"shuffle=chunks, {label}", merged)
            for (label, _, _), merged in zip(variants, results, strict=True)
        ]
        for row in rows:
            row["requests"] = _median(row["runs"], "requests")
        fast = rows[1]["samples_per_s"] or 0
        slow = rows[2]["samples_per_s"] or 0
        summary = {
            "latency_s": config.latency_s,
            "ratio_latency_over_none": slow / fast if fast else None,
            "samples_per_s": {row["variant"]: row["samples_per_s"] for row in rows},
        }
        return rows, summary
    finally:
        proxy.stop()
        nginx.stop()
        if s3 is not None:
            s3.stop()


def _remote_targets(remote: dict[str, Any] | None, config: BenchConfig) -> list[dict[str, Any]]:
    if not remote or remote.get("ratio_latency_over_none") is None:
        return []
    ms = f"{config.latency_s * 1000:.0f} ms"
    return [
        _target(f"HTTP +{ms} per request >= 0.7x of +0 ms", remote["ratio_latency_over_none"], 0.7)
    ]


def targets(
    rows: Sequence[dict[str, Any]], scale: dict[str, Any] | None, config: BenchConfig
) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on the default layout's rows."""
    layout = config.layouts[0]
    mine = [r for r in rows if r["layout"] == layout and r["size"] == config.size]

    def get(method: str, variant: str) -> dict[str, Any] | None:
        return next(
            (r for r in mine if r["method"] == method and r["variant"].startswith(variant)), None
        )

    out = []
    chunks = get("earthstream", "shuffle=chunks")
    full = get("earthstream", "shuffle=full")
    xb = [r for r in mine if r["method"] == "xbatcher" and r["samples_per_s"]]
    if chunks:
        out.append(_target("shuffle=chunks >= 0.8x limit", chunks["ratio_to_limit"], 0.8))
        out.append(_target("time to first batch < 0.5 s", chunks["first_batch_s"], 0.5, below=True))
        rss_cap = config.memory_limit / 2**20 + 300
        out.append(
            _target(
                f"peak RSS <= budget + 300 MB ({rss_cap:.0f} MB)",
                chunks["peak_rss_mb"],
                rss_cap,
                below=True,
            )
        )
    if chunks and xb:
        best = max(xb, key=lambda r: r["samples_per_s"])
        out.append(
            _target(
                f">= 20x xbatcher's best ({best['variant']})",
                chunks["samples_per_s"] / best["samples_per_s"],
                20,
            )
        )
    if full:
        out.append(_target("shuffle=full, cache 1/4 >= 0.5x limit", full["ratio_to_limit"], 0.5))
    out += dropin_targets(mine)
    packed = next(
        (
            r
            for r in rows
            if LAYOUTS[r["layout"]].packed
            and r["size"] == config.size
            and r["method"] == "earthstream"
            and r["variant"] == "shuffle=chunks"
        ),
        None,
    )
    if packed:
        out.append(
            _target(
                "CF-packed int16, shuffle=chunks >= 0.7x limit (decode + unpack once)",
                packed["ratio_to_limit"],
                0.7,
            )
        )
    if scale:
        out.append(
            _target(
                "4x store: x-limit ratio within 15% (each store against its own limit)",
                scale["limit_normalized_ratio"],
                0.85,
            )
        )
        out.append(
            _target(
                "4x store: raw samples/s within 15% (measured minutes apart)",
                scale["throughput_ratio"],
                0.85,
            )
        )
        growth = scale["budget_rss_mb"][1] - scale["budget_rss_mb"][0]
        out.append(
            _target(
                f"4x store: peak RSS grows < 100 MB at memory_limit {scale['budget_mb']} MB",
                growth,
                100,
                below=True,
            )
        )
    return out


def dropin_targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The xbatcher drop-in against xbatcher in-process, each on the same Dataset opening
    (no dask / dask) and windows: samples/s side by side in one run."""
    out = []
    for variant in ("no dask", "dask"):
        ours = next((r for r in rows if r["method"] == DROPIN and r["variant"] == variant), None)
        theirs = next(
            (r for r in rows if r["method"] == "xbatcher" and r["variant"] == variant), None
        )
        if ours and theirs and ours["samples_per_s"] and theirs["samples_per_s"]:
            ratio = ours["samples_per_s"] / theirs["samples_per_s"]
            out.append(_target(f"earthstream.xbatcher >= 1x xbatcher ({variant})", ratio, 1.0))
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the results (and the targets)."""
    head = (
        f"{'layout':<10} {'size':<7} {'method':<12} {'variant':<38} {'samples/s':>10} "
        f"{'useful MB/s':>11} {'decoded MB/s':>12} {'x limit':>8} {'es/this':>8} "
        f"{'CPU s':>6} {'RSS MB':>7} {'1st batch s':>11}"
    )
    lines = [head, "-" * len(head)]
    chips = [r for r in result["rows"] if r.get("suite") == "chips"]
    for r in result["rows"]:
        if r.get("suite") == "chips":
            continue
        lines.append(
            f"{r['layout']:<10} {r['size']:<7} {r['method']:<12} {r['variant'][:38]:<38} "
            f"{_fmt(r['samples_per_s'], ',.0f'):>10} {_fmt(r['useful_mb_s'], ',.0f'):>11} "
            f"{_fmt(r['decoded_mb_s'], ',.0f'):>12} {_fmt(r['ratio_to_limit'], '.2f'):>8} "
            f"{_fmt(r['earthstream_over_this'], '.1f'):>8} {_fmt(r.get('cpu_s'), '.2f'):>6} "
            f"{_fmt(r['peak_rss_mb'], '.0f'):>7} "
            f"{_fmt(r['first_batch_s'], '.3f'):>11}"
        )
    notes = [f"- {r['method']} {r['variant']}: {r['notes']}" for r in result["rows"] if r["notes"]]
    if notes:
        lines += ["", "notes:", *sorted(set(notes))]
    if chips and result.get("chips"):
        from ._chips_report import format_chips

        lines += ["", format_chips(chips, result["chips"])]
    lines += ["", "targets:"]
    for t in result["targets"]:
        mark = "met" if t["met"] else "MISSED"
        lines.append(f"  [{mark:>6}] {t['target']}: {_fmt(t['value'], '.3g')}")
    cfg = result["config"]
    lines.append(
        f"\n{cfg['variables']} float32 {cfg['grid']}, windows {cfg['window']}x{cfg['window']}, "
        f"batch {cfg['batch_size']}, medians of {cfg['repeats']} runs after warm-up; "
        f"wall {result['wall_s']:.0f} s"
    )
    return "\n".join(lines)
