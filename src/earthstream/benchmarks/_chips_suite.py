"""The chip suite of ``earthstream bench``: COG chips against the tile-decode limit,
the plainest loader and torchgeo 0.10, side by side in one run.

Files (generated once, reused): ``scenes`` COGs of 4096 x 4096 px, 4 uint16 bands,
512 px tiles (:func:`~earthstream.benchmarks._tiff.make_cogs`), and label
polygons over them (fields of 100-600 m in three classes, EPSG:4326) as
GeoParquet and FlatGeobuf beside them.  Chips are 256 x 256, batches of 16.

Rows (each method in a fresh process, in interleaved rounds):

* ``limit``: every tile the epoch needs read and decoded once, on all cores;
* ``rasterio``: the plainest loader (one windowed read per chip, 2 threads), grid
  and random order; also in torchgeo's environment (its GDAL build);
* ``earthstream Stream``: ``Stream(open_tiff(files, stack_dim="scene"))`` on the
  native grid: grid order, ``shuffle="chunks"``, ``shuffle="full"``;
* ``earthstream stream_chips``: the chip API: grid, random, random with
  rasterized labels, random reprojected to EPSG:4326 (nearest, bilinear);
* ``torchgeo``: the same five through a ``DataLoader`` with 0 and 2 workers,
  run by :mod:`~earthstream.benchmarks._torchgeo_peer` in torchgeo's own
  environment (``--torchgeo-python`` / ``EARTHSTREAM_TORCHGEO_PYTHON``; without
  it these rows are skipped, with a note).

Every row but the limit is a run of batches cut into slices of
``time_budget`` seconds after a warm-up slice (epochs chained, as in training);
a slice records chips/s, the CPU time of the process tree (DataLoader workers
included) and how busy the rest of the machine was.  Each earthstream row is one
small function over the public API (:data:`EARTHSTREAM_ROWS`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _torchgeo_peer as peer

__all__ = [
    "EARTHSTREAM_ROWS",
    "ChipFiles",
    "chip_rows",
    "make_chip_files",
    "make_labels",
    "measure_chips",
    "peer_python",
]

CHIP = peer.CHIP
BATCH = peer.BATCH
BANDS = 4
#: The CRS of the reprojection rows (at the resolution torchgeo picks by default).
REPROJECT_CRS = "EPSG:4326"
ENV_VAR = "EARTHSTREAM_TORCHGEO_PYTHON"
PEER_SCRIPT = Path(peer.__file__)


@dataclass(frozen=True)
class ChipFiles:
    """The suite's generated files."""

    cogs: tuple[Path, ...]
    size: int
    labels: Path  # GeoParquet, column "class"
    labels_fgb: Path  # the same polygons as FlatGeobuf

    @property
    def paths(self) -> list[str]:
        return [str(p) for p in self.cogs]

    @property
    def epoch_chips(self) -> int:
        return len(self.cogs) * (self.size // CHIP) ** 2


def make_labels(root: Path, cogs: Sequence[Path], *, per_km2: float = 1.3, seed: int = 0) -> Path:
    """Field polygons over the COGs' extent (GeoParquet, EPSG:4326; FlatGeobuf beside it).

    About ``per_km2`` fields per km2 (radius 100-600 m, 8 vertices, class 1-3),
    sorted by latitude so row groups are compact; written once.
    """
    import geopandas as gpd
    import rasterio
    import shapely

    parquet, fgb = root / "labels.parquet", root / "labels.fgb"
    if parquet.exists() and fgb.exists():
        return parquet
    bounds = []
    crs = None
    for path in cogs:
        with rasterio.open(path) as ds:
            bounds.append(tuple(ds.bounds))
            crs = ds.crs
    b = np.array(bounds)
    left, bottom, right, top = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    area_km2 = sum((r - le) * (t - bo) for le, bo, r, t in bounds) / 1e6
    n = max(1, int(area_km2 * per_km2))
    rng = np.random.default_rng(seed)
    cx = rng.uniform(left, right, n)
    cy = rng.uniform(bottom, top, n)
    radius = rng.uniform(100, 600, n)[:, None] * rng.uniform(0.6, 1.0, (n, 8))
    # 8 vertices at jittered, increasing angles: gaps below pi keep every polygon simple
    angles = (np.arange(8) + rng.uniform(0, 0.8, (n, 8)) + rng.uniform(0, 8, (n, 1))) * np.pi / 4
    ring = np.stack([cx[:, None] + radius * np.cos(angles), cy[:, None] + radius * np.sin(angles)])
    ring = np.concatenate([ring, ring[:, :, :1]], axis=2).transpose(1, 2, 0)  # closed (n, 9, 2)
    frame = gpd.GeoDataFrame(
        {"class": rng.integers(1, 4, n).astype(np.int32)},
        geometry=shapely.polygons(ring),
        crs=crs,
    )
    frame = frame.iloc[np.argsort(cy)].reset_index(drop=True).to_crs("EPSG:4326")
    tmp = parquet.with_suffix(".tmp.parquet")
    frame.to_parquet(tmp, write_covering_bbox=True, row_group_size=1024)
    tmp_fgb = fgb.with_suffix(".tmp.fgb")
    frame.to_file(tmp_fgb, driver="FlatGeobuf", engine="pyogrio")
    tmp_fgb.rename(fgb)
    tmp.rename(parquet)
    return parquet


def make_chip_files(folder: Path, *, scenes: int = 4, size: int = 4096) -> ChipFiles:
    """The COGs (:func:`~earthstream.benchmarks._tiff.make_cogs`) and their labels."""
    from ._tiff import make_cogs

    cogs = make_cogs(folder, files=scenes, size=size)
    labels = make_labels(cogs[0].parent, cogs)
    return ChipFiles(tuple(cogs), size, labels, labels.with_suffix(".fgb"))


def reprojection_res(cog: Path, crs: str = REPROJECT_CRS) -> float:
    """The pixel size torchgeo picks for ``crs``: GDAL's suggested warp grid of the first file
    (``calculate_default_transform``, as ``RasterDataset`` does)."""
    import rasterio
    from rasterio.warp import calculate_default_transform

    with rasterio.open(cog) as ds:
        transform, _, _ = calculate_default_transform(ds.crs, crs, ds.width, ds.height, *ds.bounds)
    return float(transform.a)


def peer_python(path: str | os.PathLike[str] | None = None) -> str | None:
    """torchgeo's interpreter: ``path``, else ``$EARTHSTREAM_TORCHGEO_PYTHON``, else None."""
    chosen = os.fspath(path) if path else os.environ.get(ENV_VAR) or None
    if chosen is None:
        return None
    if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
        from ..errors import ConfigError

        raise ConfigError(
            f"the torchgeo interpreter {chosen!r} (--torchgeo-python or ${ENV_VAR}) is not an "
            "executable file; create the environment as docs/performance.md shows "
            "(python3.12 -m venv ...; pip install torch==2.14.1 torchvision==0.29.1 "
            "'torchgeo==0.10.*' pyarrow) and pass its bin/python."
        )
    return chosen


# -- earthstream rows: one small function each, over the public API -----------------------
def _stream(files: ChipFiles, spec: dict[str, Any], shuffle: Any) -> Any:
    from .. import Stream, open_tiff

    return Stream(
        open_tiff(files.paths, stack_dim="scene"),
        window={"band": None, "y": CHIP, "x": CHIP},
        batch_size=BATCH,
        shuffle=shuffle,
        seed=0,
        memory_limit=spec["memory_limit"],
    )


def stream_grid(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """``Stream`` over the COGs stacked by scene, native grid, grid order."""
    return _stream(files, spec, False)


def stream_chunks(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """... block-shuffled (``shuffle="chunks"``): each tile decoded once per epoch."""
    return _stream(files, spec, "chunks")


def stream_full(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """... chips in a uniformly random order (``shuffle="full"``)."""
    return _stream(files, spec, "full")


def _chips(files: ChipFiles, **kwargs: Any) -> Any:
    from .. import stream_chips

    return stream_chips(files.paths, chip_size=CHIP, batch_size=BATCH, seed=0, **kwargs)


def chips_grid(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """``stream_chips`` over the COGs (their mosaic grid), grid order."""
    return _chips(files, shuffle=False)


def chips_random(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """... chips in a random order."""
    return _chips(files, shuffle="full")


def chips_labels(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """... random order, with the label polygons rasterized per chip (``class``)."""
    from .. import open_vector

    return _chips(files, shuffle="full", labels=open_vector(files.labels, "class"))


def chips_nearest(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """... random order, reprojected to EPSG:4326 (nearest)."""
    return _chips(
        files, shuffle="full", crs=REPROJECT_CRS, resolution=spec["res"], resampling="nearest"
    )


def chips_bilinear(files: ChipFiles, spec: dict[str, Any]) -> Any:
    """... random order, reprojected to EPSG:4326 (bilinear)."""
    return _chips(
        files, shuffle="full", crs=REPROJECT_CRS, resolution=spec["res"], resampling="bilinear"
    )


#: The earthstream rows: variant -> a function building the stream from the public API.
EARTHSTREAM_ROWS: dict[str, Callable[[ChipFiles, dict[str, Any]], Any]] = {
    "Stream grid": stream_grid,
    "Stream shuffle=chunks": stream_chunks,
    "Stream shuffle=full": stream_full,
    "stream_chips grid": chips_grid,
    "stream_chips random": chips_random,
    "stream_chips labels": chips_labels,
    "stream_chips nearest": chips_nearest,
    "stream_chips bilinear": chips_bilinear,
}


def _files(spec: dict[str, Any]) -> ChipFiles:
    return ChipFiles(
        tuple(Path(p) for p in spec["files"]),
        spec["size"],
        Path(spec["labels"]),
        Path(spec["labels"]).with_suffix(".fgb"),
    )


def _earthstream(spec: dict[str, Any]) -> dict[str, Any]:
    files = _files(spec)
    stream = EARTHSTREAM_ROWS[spec["row"]](files, spec)

    def epoch(n: int) -> Iterator[Any]:
        stream.set_epoch(n)
        return iter(stream)

    runs = peer.measure_slices(
        peer.endless(epoch),
        lambda batch: int(batch.size),
        repeats=spec["repeats"],
        budget_s=spec["budget_s"],
        warmup_s=spec["warmup_s"],
    )
    return {"runs": runs, "info": {"epoch_chips": int(stream.n_windows)}}


def _limit(spec: dict[str, Any]) -> dict[str, Any]:
    from ._tiff import _limit as decode_all

    paths = [Path(p) for p in spec["files"]]
    decode_all(paths, spec["size"])  # warm-up
    runs = []
    for _ in range(spec["repeats"]):
        busy0, cpu0 = peer.machine_busy_s(), peer.tree_cpu_s()
        load0 = os.getloadavg()
        result = decode_all(paths, spec["size"])
        cpu = peer.tree_cpu_s() - cpu0
        busy = peer.machine_busy_s() - busy0
        elapsed = result["elapsed_s"]
        runs.append(
            {
                "elapsed_s": elapsed,
                "samples": result["chips"],
                "tiles": result["tiles"],
                "bytes_decoded": result["bytes"],
                "cpu_s": cpu,
                "cpu_ms_per_chip": 1000 * cpu / result["chips"],
                "machine_busy_cores": busy / elapsed,
                "others_busy_cores": max(0.0, busy - cpu) / elapsed,
                "load_average": [round(x, 2) for x in (*load0, *os.getloadavg())],
            }
        )
    return {"runs": runs}


METHODS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "limit": _limit,
    "earthstream": _earthstream,
    "rasterio": peer.rasterio_method,
}


# -- the plan -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ChipRow:
    """One measured row: who runs it, its label, its spec, and the row it is compared with."""

    method: str  # limit, rasterio, earthstream, torchgeo
    variant: str
    spec: dict[str, Any]
    env: str = "earthstream"  # or "torchgeo": run by the peer interpreter
    pair: str | None = None  # the earthstream variant this row is compared with
    notes: str = ""


def chip_rows(torchgeo: bool, workers: int = 2) -> list[ChipRow]:
    """Every row of the suite (the torchgeo environment's only when ``torchgeo``)."""
    rows = [
        ChipRow("limit", "decode every tile once, all cores", {"method": "limit"}),
        ChipRow(
            "rasterio",
            "1 read per chip, 2 threads, grid",
            {"method": "rasterio", "order": "grid"},
            pair="stream_chips grid",
        ),
        ChipRow(
            "rasterio",
            "1 read per chip, 2 threads, random",
            {"method": "rasterio", "order": "random"},
            pair="stream_chips random",
        ),
    ]
    if torchgeo:
        rows.append(
            ChipRow(
                "rasterio",
                "1 read per chip, 2 threads, random (tg env)",
                {"method": "rasterio", "order": "random"},
                env="torchgeo",
                pair="stream_chips random",
                notes="the same loader in torchgeo's environment: its rasterio/GDAL build",
            )
        )
    for name in EARTHSTREAM_ROWS:
        notes = ""
        if name.endswith(("nearest", "bilinear")):
            notes = "reprojected: x limit is against the native grid's tile limit"
        rows.append(
            ChipRow("earthstream", name, {"method": "earthstream", "row": name}, notes=notes)
        )
    if torchgeo:
        samplers = {
            "grid": "GridGeoSampler",
            "random": "RandomGeoSampler",
            "labels": "RandomGeoSampler, & VectorDataset",
            "nearest": f"RandomGeoSampler, crs={REPROJECT_CRS}, nearest",
            "bilinear": f"RandomGeoSampler, crs={REPROJECT_CRS}, bilinear",
        }
        for variant, label in samplers.items():
            for n in sorted({0, workers}):
                rows.append(
                    ChipRow(
                        "torchgeo",
                        f"{label}, {n} workers",
                        {"method": "torchgeo", "variant": variant, "workers": n},
                        env="torchgeo",
                        pair=f"stream_chips {variant}",
                    )
                )
    return rows


def _run(row: ChipRow, spec: dict[str, Any], python: str | None, timeout: float) -> dict[str, Any]:
    if row.env == "torchgeo":
        assert python is not None
        cmd = [python, str(PEER_SCRIPT), json.dumps(spec)]
    else:
        cmd = [sys.executable, "-m", "earthstream.benchmarks._chips_suite", json.dumps(spec)]
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"chip suite row {row.method} {row.variant} failed:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _summarize(row: ChipRow, layout: str, merged: dict[str, Any], epoch: int) -> dict[str, Any]:
    runs = merged["runs"]
    rates = [r["samples"] / r["elapsed_s"] for r in runs if r["elapsed_s"] and r["samples"]]
    rate = _median(rates)
    cpu_ms = _median([r.get("cpu_ms_per_chip") for r in runs])
    decoded = _median([r["bytes_decoded"] / r["elapsed_s"] for r in runs if r.get("bytes_decoded")])
    source_bytes = BANDS * CHIP * CHIP * 2  # a chip's uint16 pixels
    return {
        "suite": "chips",
        "layout": layout,
        "size": "chips",
        "method": row.method,
        "variant": row.variant,
        "samples": _median([r["samples"] for r in runs]),
        "elapsed_s": _median([r["elapsed_s"] for r in runs]),
        "samples_per_s": rate,
        "useful_mb_s": rate * source_bytes / 1e6 if rate else None,
        "decoded_mb_s": decoded / 1e6 if decoded else None,
        "ratio_to_limit": None,
        "earthstream_over_this": None,
        "cpu_ratio_to_limit": None,
        "peak_rss_mb": merged["peak_rss_mb"],
        "cpu_s": cpu_ms * epoch / 1000 if cpu_ms is not None else None,  # per native epoch
        "cpu_ms_per_chip": cpu_ms,
        "first_batch_s": None,
        "repeats": len(runs),
        "others_busy_cores": _median([r.get("others_busy_cores") for r in runs]),
        "notes": row.notes,
        "pair": row.pair,
        "env": row.env,
        "info": merged.get("info"),
        "runs": runs,
    }


def measure_chips(config: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The suite's rows and a summary (``config`` is the bench's ``BenchConfig``)."""
    from ._common import _log

    smoke = config.size == "smoke"
    scenes, size = (2, 1024) if smoke else (config.chip_scenes, 4096)
    files = make_chip_files(config.folder, scenes=scenes, size=size)
    for path in (*files.cogs, files.labels):  # warm the page cache
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    python = config.torchgeo_python
    rows = chip_rows(torchgeo=python is not None, workers=config.workers)
    res = reprojection_res(files.cogs[0])
    budget = float(config.time_budget)
    base = {
        "files": files.paths,
        "size": size,
        "labels": str(files.labels),
        "crs": REPROJECT_CRS,
        "res": res,
        "repeats": 1,
        "budget_s": budget,
        "warmup_s": budget / 2,
        "memory_limit": config.memory_limit,
        "seed": 0,
    }
    layout = f"cogs-{scenes}x{size}"
    summary: dict[str, Any] = {
        "layout": layout,
        "scenes": scenes,
        "size": size,
        "epoch_chips": files.epoch_chips,
        "labels": str(files.labels),
        "reprojection": {"crs": REPROJECT_CRS, "res": res},
        "torchgeo_python": python,
    }
    if python is None:
        summary["skipped"] = (
            "torchgeo rows skipped: pass --torchgeo-python PATH or set "
            f"${ENV_VAR} to the interpreter of a torchgeo 0.10 environment (see "
            "docs/performance.md, 'The torchgeo peer')"
        )
        _log(config, f"chips: {summary['skipped']}")
    merged: list[dict[str, Any]] = [{"runs": [], "peak_rss_mb": 0.0} for _ in rows]
    for round_ in range(config.repeats):
        for row, into in zip(rows, merged, strict=True):
            _log(config, f"  chips {layout} round {round_ + 1}: {row.method} {row.variant}")
            result = _run(row, {**base, **row.spec}, python, config.timeout)
            into["runs"].extend(result["runs"])
            into["peak_rss_mb"] = max(into["peak_rss_mb"], result.get("peak_rss_mb", 0.0))
            into["info"] = result.get("info")
    out = [
        _summarize(row, layout, m, files.epoch_chips) for row, m in zip(rows, merged, strict=True)
    ]
    _ratios(out)
    if python is not None:
        _log(config, "  chips: checking torchgeo's chips against rasterio reads")
        check = ChipRow("check", "", {"method": "check", "chips": 2 if smoke else 6}, "torchgeo")
        summary["check"] = _run(check, {**base, **check.spec}, python, config.timeout)
        tg = next((r for r in out if r["method"] == "torchgeo"), None)
        summary["torchgeo"] = (tg or {}).get("info")
    load = [x for r in out for run in r["runs"] for x in run.get("load_average", [])[:1]]
    others = [run.get("others_busy_cores") for r in out for run in r["runs"]]
    kept = [o for o in others if o is not None]
    summary["machine"] = {
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_1min": [min(load), max(load)] if load else None,
        "others_busy_cores": [min(kept), statistics.median(kept), max(kept)] if kept else None,
    }
    return out, summary


def _ratios(rows: list[dict[str, Any]]) -> None:
    limit = rows[0]
    limit_rate, limit_cpu = limit["samples_per_s"], limit["cpu_ms_per_chip"]
    ours = {r["variant"]: r for r in rows if r["method"] == "earthstream"}
    for row in rows:
        if limit_rate and row["samples_per_s"]:
            row["ratio_to_limit"] = row["samples_per_s"] / limit_rate
        if limit_cpu and row["cpu_ms_per_chip"]:
            row["cpu_ratio_to_limit"] = limit_cpu / row["cpu_ms_per_chip"]
        pair = ours.get(row["pair"] or "")
        if pair and pair["samples_per_s"] and row["samples_per_s"]:
            row["earthstream_over_this"] = pair["samples_per_s"] / row["samples_per_s"]
            if pair["cpu_ms_per_chip"] and row["cpu_ms_per_chip"]:
                row["earthstream_cpu_over_this"] = row["cpu_ms_per_chip"] / pair["cpu_ms_per_chip"]


def main(argv: Sequence[str]) -> int:
    spec = json.loads(argv[0])
    result = METHODS[spec["method"]](spec)
    result["peak_rss_mb"] = peer.peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
