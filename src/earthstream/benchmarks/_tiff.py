"""COG chips on the native grid: the tile-decode limit, the plainest loader and ``Stream``.

    python -m earthstream.benchmarks._tiff --cache-dir ~/.cache/earthstream-bench

Generates ``files`` COGs (rasterio's COG driver: ``size`` x ``size`` px, 4 uint16
bands, 512 px tiles, deflate + horizontal predictor; smooth fields plus sensor
noise, about 2:1) into the cache dir (reused when present), then runs each method
in a fresh process on the warm page cache and reports chips/s (256 x 256 chips,
batches of 16) and the ratio to the limit, all from one run:

* ``limit``: every tile the epoch needs read and decoded once, on all cores,
  with the tile decoder of :class:`~earthstream.sources.TiffSource` into reused buffers;
* ``rasterio``: the plainest loader: one windowed ``rasterio`` read per chip on a
  2-thread pool (a dataset handle per thread and file; GDAL's block cache at its
  default), batches stacked in order; grid and random order;
* ``earthstream``: ``Stream`` over ``open_tiff(files, stack_dim="scene")`` with
  ``window={"band": None, "y": 256, "x": 256}``: grid order, ``shuffle="chunks"``
  and ``shuffle="full"``.

This is the groundwork of the issue's benchmark rows (not yet a row of
``earthstream bench``); run it on a quiet machine, and read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_cogs", "run_tiff_bench"]

CHIP = 256
BATCH = 16
BANDS = 4
TILE = 512


def make_cogs(
    cache_dir: str | os.PathLike[str],
    *,
    files: int = 4,
    size: int = 4096,
    compress: str = "deflate",
    seed: int = 0,
) -> list[Path]:
    """Write (or reuse) ``files`` COGs of ``size`` x ``size`` px, 4 uint16 bands, 512 px tiles."""
    import rasterio
    from affine import Affine

    root = Path(cache_dir) / f"cogs-{files}x{size}-{compress}-s{seed}"
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = root / f"scene-{i}.tif"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(seed + i)
        data = np.empty((BANDS, size, size), dtype=np.uint16)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        base = 1500 + 800 * np.sin(xx / 97.0 + i) * np.cos(yy / 131.0)
        for b in range(BANDS):
            noise = rng.normal(0, 40, (size, size)).astype(np.float32)
            data[b] = np.clip(base * (1 + 0.25 * b) + noise, 1, 65535)
        tmp = path.with_suffix(".tmp.tif")
        with rasterio.open(
            tmp,
            "w",
            driver="COG",
            width=size,
            height=size,
            count=BANDS,
            dtype="uint16",
            crs="EPSG:32633",
            transform=Affine(10, 0, 500000 + i * size * 10, 0, -10, 5000000),
            blocksize=TILE,
            compress=compress,
            predictor=2,
            overviews="auto",
            nodata=0,
        ) as dst:
            dst.write(data)
        tmp.rename(path)
    return paths


def _chips(paths: Sequence[Path], size: int, order: str) -> list[tuple[int, int, int]]:
    n = size // CHIP
    chips = [(f, r * CHIP, c * CHIP) for f in range(len(paths)) for r in range(n) for c in range(n)]
    if order == "random":
        rng = np.random.default_rng(0)
        chips = [chips[i] for i in rng.permutation(len(chips))]
    return chips


# -- methods (each in a fresh process) ----------------------------------------------------
def _limit(paths: list[Path], size: int) -> dict[str, Any]:
    from ..sources import open_tiff

    source = open_tiff(paths, stack_dim="scene")
    info = source.variables[source.name]
    grid = info.chunk_grid
    used = -(-(size // CHIP * CHIP) // TILE)
    keys = [(f, 0, r, c) for f in range(grid[0]) for r in range(used) for c in range(used)]
    local = threading.local()

    def work(index: tuple[int, ...]) -> int:
        out = getattr(local, "out", None)
        if out is None:
            out = local.out = np.empty(info.chunks, dtype=info.dtype)
        chunk = source.read_chunk(source.name, index, out)
        return 0 if chunk is None else int(chunk.nbytes)

    threads = len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, keys[: 2 * threads]))  # warm-up: imports, buffers
        t0 = time.perf_counter()
        nbytes = sum(pool.map(work, keys))
        elapsed = time.perf_counter() - t0
    chips = len(paths) * (size // CHIP) ** 2
    return {"elapsed_s": elapsed, "chips": chips, "tiles": len(keys), "bytes": nbytes}


def _rasterio(paths: list[Path], size: int, order: str) -> dict[str, Any]:
    import rasterio
    from rasterio.windows import Window

    chips = _chips(paths, size, order)
    local = threading.local()

    def read(chip: tuple[int, int, int]) -> np.ndarray:
        handles = getattr(local, "handles", None)
        if handles is None:
            handles = local.handles = {}
        f, row, col = chip
        ds = handles.get(f)
        if ds is None:
            ds = handles[f] = rasterio.open(paths[f])
        return np.asarray(ds.read(window=Window(col, row, CHIP, CHIP)))

    def batches() -> Iterator[np.ndarray]:
        with ThreadPoolExecutor(2) as pool:
            results = pool.map(read, chips)
            batch = []
            for chip in results:
                batch.append(chip)
                if len(batch) == BATCH:
                    yield np.stack(batch)
                    batch = []
            if batch:
                yield np.stack(batch)

    t0 = time.perf_counter()
    n = sum(len(b) for b in batches())
    return {"elapsed_s": time.perf_counter() - t0, "chips": n}


class _EarthstreamEpochs:
    """One ``Stream`` whose epochs are the passes: its slots stay allocated (warm pages)
    from one epoch to the next, as in training; every epoch decodes its tiles anew."""

    def __init__(self, paths: list[Path], shuffle: Any) -> None:
        from .. import Stream
        from ..sources import open_tiff

        self.stream = Stream(
            open_tiff(paths, stack_dim="scene"),
            window={"band": None, "y": CHIP, "x": CHIP},
            batch_size=BATCH,
            shuffle=shuffle,
            memory_limit="1GB",
        )
        self.epoch = 0

    def __call__(self) -> dict[str, Any]:
        stream = self.stream
        stream.set_epoch(self.epoch)
        self.epoch += 1
        t0 = time.perf_counter()
        n = sum(b.size for b in stream)
        elapsed = time.perf_counter() - t0
        report = stream.report
        assert report is not None
        return {
            "elapsed_s": elapsed,
            "chips": n,
            "tiles_decoded": report.chunks_decoded,
            "max_decodes_per_tile": max(report.decodes.values()),
            "stall_s": round(report.stall_s, 3),
        }


METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "limit (decode every tile once, all cores)": ("limit", {}),
    "rasterio, 2 threads, grid order": ("rasterio", {"order": "grid"}),
    "rasterio, 2 threads, random order": ("rasterio", {"order": "random"}),
    "earthstream Stream, grid order": ("earthstream", {"shuffle": False}),
    "earthstream Stream, shuffle=chunks": ("earthstream", {"shuffle": "chunks"}),
    "earthstream Stream, shuffle=full": ("earthstream", {"shuffle": "full"}),
}


def _measure(kind: str, paths: list[Path], size: int, repeats: int, **kw: Any) -> dict[str, Any]:
    """Median of ``repeats`` passes after a warm-up; each pass also records the process's
    CPU time (all threads), a figure a busy machine disturbs less than wall time."""
    if kind == "earthstream":
        run: Any = _EarthstreamEpochs(paths, kw["shuffle"])
    elif kind == "limit":
        run = lambda: _limit(paths, size)  # noqa: E731
    else:
        run = lambda: _rasterio(paths, size, kw["order"])  # noqa: E731

    def once() -> dict[str, Any]:
        c0 = time.process_time()
        result: dict[str, Any] = run()
        result["cpu_s"] = time.process_time() - c0
        return result

    once()  # warm-up pass: imports, slots, page cache (rasterio: fresh handles each pass)
    runs = [once() for _ in range(repeats)]
    best = sorted(runs, key=lambda r: r["elapsed_s"])[len(runs) // 2]  # the median pass
    best["chips_per_s"] = best["chips"] / best["elapsed_s"]
    best["chips_per_cpu_s"] = best["chips"] / float(np.median([r["cpu_s"] for r in runs]))
    best["runs_s"] = [round(r["elapsed_s"], 3) for r in runs]
    return best


def run_tiff_bench(
    cache_dir: str | os.PathLike[str],
    *,
    files: int = 4,
    size: int = 4096,
    compress: str = "deflate",
    repeats: int = 3,
    methods: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Generate the COGs (or reuse them) and run every method in its own process."""
    paths = make_cogs(cache_dir, files=files, size=size, compress=compress)
    for p in paths:  # warm the page cache
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass
    rows = []
    for label, (kind, kw) in METHODS.items():
        if methods is not None and kind not in methods:
            continue
        spec = {"kind": kind, "paths": [str(p) for p in paths], "size": size, "repeats": repeats}
        spec.update(kw)
        out = subprocess.run(
            [sys.executable, "-m", "earthstream.benchmarks._tiff", "--measure", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{label} failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["method"] = label
        rows.append(row)
    limit = next((r for r in rows if r["method"].startswith("limit")), None)
    for row in rows:
        row["ratio_to_limit"] = row["chips_per_s"] / limit["chips_per_s"] if limit else None
        row["cpu_ratio_to_limit"] = (
            row["chips_per_cpu_s"] / limit["chips_per_cpu_s"] if limit else None
        )
    plain = {r["method"]: r for r in rows if r["method"].startswith("rasterio")}
    for row in rows:
        if row["method"].startswith("earthstream"):
            order = "grid" if "grid" in row["method"] else "random"
            ref = plain.get(f"rasterio, 2 threads, {order} order")
            row["ratio_to_rasterio"] = row["chips_per_s"] / ref["chips_per_s"] if ref else None
    return {
        "files": [str(p) for p in paths],
        "size": size,
        "compress": compress,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "rows": rows,
    }


def format_rows(result: dict[str, Any]) -> str:
    lines = [
        f"{len(result['files'])} COGs of {result['size']}^2 px, 4 x uint16, {TILE} px tiles, "
        f"{result['compress']} + predictor 2; {CHIP}x{CHIP} chips, batch {BATCH}, "
        f"{result['cpus']} CPUs, load average {result['load_average'][0]:.1f} at the end",
        f"{'method':44s} {'chips/s':>9s} {'x limit':>8s} {'x rasterio':>10s} "
        f"{'chips/cpu-s':>11s} {'x limit':>8s}  passes (s)",
    ]
    for row in result["rows"]:
        ratio = row.get("ratio_to_limit")
        plain = row.get("ratio_to_rasterio")
        cpu = row.get("cpu_ratio_to_limit")
        lines.append(
            f"{row['method']:44s} {row['chips_per_s']:9.1f} "
            f"{'' if ratio is None else f'{ratio:8.2f}':>8s} "
            f"{'' if plain is None else f'{plain:10.2f}':>10s} "
            f"{row['chips_per_cpu_s']:11.1f} {'' if cpu is None else f'{cpu:8.2f}':>8s}  "
            f"{row['runs_s']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/earthstream-bench"))
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--compress", default="deflate")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        spec = json.loads(args.measure)
        kind = spec.pop("kind")
        paths = [Path(x) for x in spec.pop("paths")]
        result = _measure(kind, paths, spec.pop("size"), spec.pop("repeats"), **spec)
        print(json.dumps(result))
        return
    result = run_tiff_bench(
        args.cache_dir,
        files=args.files,
        size=args.size,
        compress=args.compress,
        repeats=args.repeats,
    )
    print(format_rows(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
