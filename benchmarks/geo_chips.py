"""Requests per chip read and chips/s for the geo layer, on generated data, local and over HTTP.

    .venv/bin/python benchmarks/geo_chips.py [--tile-size 1024] [--chip 256] [--threads 2]

Writes ``datasets.eo_like`` (a STAC catalog of COGs with 256 px internal tiles, and
GeoParquet labels) to a temp dir, serves it with a real nginx on loopback
(``earthstream.testing.nginx_server``) and counts the HTTP requests in nginx's access log:

1. single chip reads from one COG over HTTP (``open_cog(url).read_chip``): aligned
   chips at full resolution, chips reprojected to EPSG:4326 (bilinear), and chips at
   2x coarser resolution (served from the overview), each at a fresh position;
2. the whole ``stream_chips`` pipeline (STAC catalog -> chips + label masks), from
   local files and over HTTP: chips/s and requests per chip.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import earthstream as es
from earthstream.geo import GridSpec, PixelWindow, reproject_bounds
from earthstream.geo._gdal import close_handles
from earthstream.testing import nginx_server


def single_reads(server, cog_path: Path, chip: int, n: int, rng: np.random.Generator) -> None:
    url = server.url(cog_path)
    server.clear_log()
    cog = es.open_cog(url)
    opened = server.requests()
    print(
        f"open_cog over HTTP: {len(opened)} requests ({', '.join(r.method for r in opened)}), "
        f"{sum(r.bytes_sent for r in opened):,} bytes"
    )
    g = cog.grid
    positions = [(r, c) for r in range(0, g.height - chip + 1, chip)
                 for c in range(0, g.width - chip + 1, chip)]  # fmt: skip
    rng.shuffle(positions)
    cases = {
        f"aligned {chip}x{chip} @10 m": lambda r, c: g.window(PixelWindow(r, c, chip, chip)),
        f"EPSG:4326 {chip}x{chip} bilinear": lambda r, c: _geographic(g, r, c, chip),
        f"{chip}x{chip} @20 m (overview)": lambda r, c: g.decimated(
            g.height // 2, g.width // 2
        ).window(PixelWindow(r // 2, c // 2, chip, chip)),
    }
    for name, make in cases.items():
        counts, nbytes, times = [], [], []
        for r, c in positions[:n]:
            close_handles()  # a cold handle per chip: GDAL's block cache cannot help
            es.open_cog(url)  # header (cached by /vsicurl/ after the first open)
            server.clear_log()
            t0 = time.perf_counter()
            cog.read_chip(make(r, c), resampling="bilinear" if "4326" in name else "nearest")
            times.append(time.perf_counter() - t0)
            reqs = server.requests()
            counts.append(len(reqs))
            nbytes.append(sum(q.bytes_sent for q in reqs))
        print(
            f"  {name:32s}: {np.mean(counts):.2f} requests/chip (min {min(counts)}, max "
            f"{max(counts)}), {np.mean(nbytes) / 1024:,.0f} KiB/chip, "
            f"{1000 * np.median(times):.1f} ms/chip"
        )


def _geographic(g: GridSpec, r: int, c: int, chip: int) -> GridSpec:
    b = reproject_bounds(g.window_bounds(PixelWindow(r, c, chip, chip)), g.crs, "EPSG:4326")
    res = (b[2] - b[0]) / chip
    return GridSpec("EPSG:4326", (res, 0, b[0], 0, -res, b[3]), (chip, chip))


def _count(log: str | None) -> int:
    return len(Path(log).read_text().splitlines()) if log else 0


def _run_stream(catalog: str, labels, chip: int, threads: int, log: str | None, kw: dict):
    """In a fresh (spawned) process: a cold epoch (headers, label index, tiles) and a warm one."""
    s = es.stream_chips(catalog, assets=["red", "green", "nir"], chip_size=chip, labels=labels,
                        num_threads=threads, batch_size=8, seed=0, **kw)  # fmt: skip
    out = []
    for epoch in (0, 1):
        s.set_epoch(epoch)
        before = _count(log)
        t0 = time.perf_counter()
        n = sum(b.size for b in s)
        out.append((n, time.perf_counter() - t0, _count(log) - before, s.report.summary()))
    return out


def stream(label: str, catalog: str, labels, chip: int, threads: int, server=None, **kw) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log = str(server.access_log) if server is not None else None
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        results = pool.submit(_run_stream, catalog, labels, chip, threads, log, kw).result()
    for (n, dt, reqs, _), when in zip(results, ("cold", "warm"), strict=True):
        extra = f", {reqs / n:.2f} requests/chip" if server is not None else ""
        print(f"  {label:44s} {when}: {n} chips in {dt:.2f} s = {n / dt:,.1f} chips/s{extra}")
    print(f"    warm: {results[-1][3]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tile-size", type=int, default=1024)
    p.add_argument("--chip", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reads", type=int, default=12)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = es.datasets.eo_like(Path(tmp) / "eo", tiles=(2, 2), tile_size=args.tile_size)
        print(f"generated {len(data.cogs)} COGs of {args.tile_size}^2 px in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        with nginx_server(data.root) as server:
            print("\n1. single chip reads from one COG over HTTP (nginx access log)")
            single_reads(server, data.cogs[0], args.chip, args.reads, np.random.default_rng(0))
            print(f"\n2. stream_chips: 3 bands + label mask, {args.threads} threads")
            local_labels = es.open_vector(data.labels, "class")
            http = {"client_options": {"allow_http": True}}
            remote_labels = es.open_vector(server.url(data.labels), "class", storage_options=http)
            remote_catalog = server.url(data.catalog)
            for name, kw in {
                "UTM 10 m, first scene's grid": {"grid": "first"},
                "UTM 10 m over all scenes (mosaic)": {"crs": "EPSG:32633", "resolution": 10},
                "EPSG:4326 ~10 m, bilinear (reprojected)": {
                    "crs": "EPSG:4326", "resolution": 0.0001, "resampling": "bilinear"},
            }.items():  # fmt: skip
                stream(
                    f"local  {name}", str(data.catalog), local_labels, args.chip, args.threads, **kw
                )
                stream(f"HTTP   {name}", remote_catalog, remote_labels, args.chip, args.threads,
                       server=server, **kw)  # fmt: skip


if __name__ == "__main__":
    main()
