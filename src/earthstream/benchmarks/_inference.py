"""The inference row of ``earthstream bench``: a whole domain through an identity model,
blended and written back to Zarr, against the decode limit and hand-written xarray loops.

Every method computes the same outputs (overlapping windows of ``window`` with
``stride``, padded at the edges, blended with the taper weights in float64, cast to
float32, written chunk by chunk) from the same store, into a fresh store:

``inference-limit``
    Decode every chunk of the store once on all cores (no windows, no writes).
``inference-earthstream``
    ``Stream(..., edges="pad")`` + :class:`~earthstream.PredictionWriter` over the
    whole domain (identity model), from creating the store to the last chunk.
``inference-xarray``
    The loop a user writes by hand: for each output chunk, every window touching
    it read with ``ds.isel(...)`` from ``xr.open_zarr`` (dask-backed, as opened by
    default), blended in NumPy, and the chunk written with ``to_zarr(region=...)``
    into a template store; within a time budget.
``inference-xarray-halo``
    A smarter hand-written loop: each output chunk's halo region loaded once with
    xarray, its windows cut from it in NumPy; same writes.

Each returns windows per second (``samples``), so rows compare directly.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._limit import Result, Spec, limit

__all__ = ["INFERENCE_METHODS"]


def _taper(n: int) -> np.ndarray:
    return np.asarray(np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2)


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Padded window starts covering ``size`` (as ``edges="pad"``)."""
    out = [0]
    while out[-1] + window < size:
        out.append(out[-1] + stride)
    return out


def _out_dir(spec: Spec) -> Path:
    return Path(tempfile.mkdtemp(prefix="es-infer-", dir=spec.get("out_dir")))


def inference_limit(spec: Spec) -> list[Result]:
    runs = limit({**spec, "window": 1})  # every chunk of every step
    for run in runs:
        run["samples"] = spec["n_windows"]
    return runs


def inference_earthstream(spec: Spec) -> list[Result]:
    from .. import PredictionWriter, Stream

    w, s = spec["window"], spec["stride"]
    runs = []
    for _ in range(spec["repeats"] + 1):  # the first pass warms up
        folder = _out_dir(spec)
        t0 = time.perf_counter()
        c0 = time.process_time()
        like = Stream(
            spec["store"],
            {"lat": w, "lon": w},
            {"lat": s, "lon": s},
            variables=spec["variables"],
            edges="pad",
            stack=True,
            batch_size=spec["batch_size"],
            memory_limit=spec.get("memory_limit", 10**9),
        )
        writer = PredictionWriter(
            folder / "out.zarr",
            like=like,
            variables=spec["variables"],
            blend="taper",
        )
        for batch in writer.stream:
            writer.write(batch, batch.stacked)  # the identity model
        report = writer.close()
        elapsed = time.perf_counter() - t0
        runs.append(
            {
                "elapsed_s": elapsed,
                "cpu_s": time.process_time() - c0,
                "samples": report.windows,
                "bytes_delivered": report.windows * w * w * 4 * len(spec["variables"]),
                "bytes_decoded": like.report.bytes_decoded if like.report else None,
                "bytes_written": report.bytes_written,
                "first_batch_s": None,
            }
        )
        shutil.rmtree(folder, ignore_errors=True)
    return runs[1:]


def _template(ds: Any, variables: list[str], target: Path, chunks: dict[str, int]) -> None:
    import dask.array as da
    import xarray as xr

    out = xr.Dataset(coords={d: ds[d] for d in ("time", "lat", "lon")})
    for v in variables:
        shape = ds[v].shape
        out[v] = (
            ("time", "lat", "lon"),
            da.zeros(
                shape, dtype=np.float32, chunks=tuple(chunks[d] for d in ("time", "lat", "lon"))
            ),
        )
    encoding = {v: {"chunks": tuple(chunks[d] for d in ("time", "lat", "lon"))} for v in variables}
    out.to_zarr(target, compute=False, zarr_format=3, encoding=encoding, mode="w")


def _xarray_loop(spec: Spec, halo: bool) -> list[Result]:
    """For each output chunk: its windows from xarray, blended in NumPy, ``to_zarr(region=)``."""
    import xarray as xr

    w, s = spec["window"], spec["stride"]
    variables = list(spec["variables"])
    weights = np.outer(_taper(w), _taper(w))
    runs = []
    for _ in range(spec["repeats"]):
        folder = _out_dir(spec)
        target = folder / "out.zarr"
        t0 = time.perf_counter()
        c0 = time.process_time()
        ds = xr.open_zarr(spec["store"])[variables]
        n_t, n_y, n_x = ds[variables[0]].shape
        chunks = dict(zip(("time", "lat", "lon"), ds[variables[0]].encoding["chunks"], strict=True))
        _template(ds, variables, target, chunks)
        ys, xs = _starts(n_y, w, s), _starts(n_x, w, s)
        windows = 0

        regions = itertools.product(
            range(0, n_t, chunks["time"]),
            range(0, n_y, chunks["lat"]),
            range(0, n_x, chunks["lon"]),
        )
        for t_lo, y_lo, x_lo in regions:
            t_hi = min(t_lo + chunks["time"], n_t)
            y_hi, x_hi = min(y_lo + chunks["lat"], n_y), min(x_lo + chunks["lon"], n_x)
            sums = np.zeros((len(variables), t_hi - t_lo, y_hi - y_lo, x_hi - x_lo))
            total = np.zeros((t_hi - t_lo, y_hi - y_lo, x_hi - x_lo))
            wy = [y for y in ys if y < y_hi and y + w > y_lo]
            wx = [x for x in xs if x < x_hi and x + w > x_lo]
            block = None
            if halo:
                block = np.stack(
                    [
                        ds[v]
                        .isel(
                            time=slice(t_lo, t_hi),
                            lat=slice(wy[0], min(wy[-1] + w, n_y)),
                            lon=slice(wx[0], min(wx[-1] + w, n_x)),
                        )
                        .values
                        for v in variables
                    ]
                )
            for t in range(t_lo, t_hi):
                for y in wy:
                    for x in wx:
                        if block is None:
                            window = np.stack(
                                [
                                    ds[v]
                                    .isel(time=t, lat=slice(y, y + w), lon=slice(x, x + w))
                                    .values
                                    for v in variables
                                ]
                            )
                        else:
                            window = block[
                                :, t - t_lo, y - wy[0] : y - wy[0] + w, x - wx[0] : x - wx[0] + w
                            ]
                        out = window  # the identity model
                        a, b = max(y, y_lo), min(y + w, y_hi)
                        c, d = max(x, x_lo), min(x + w, x_hi)
                        wgt = weights[a - y : b - y, c - x : d - x]
                        total[t - t_lo, a - y_lo : b - y_lo, c - x_lo : d - x_lo] += wgt
                        sums[:, t - t_lo, a - y_lo : b - y_lo, c - x_lo : d - x_lo] += (
                            wgt * out[:, a - y : b - y, c - x : d - x]
                        )
                        windows += 1
            region = {"time": slice(t_lo, t_hi), "lat": slice(y_lo, y_hi), "lon": slice(x_lo, x_hi)}
            piece = xr.Dataset(
                {
                    v: (("time", "lat", "lon"), (sums[i] / total).astype(np.float32))
                    for i, v in enumerate(variables)
                }
            )
            piece.to_zarr(target, region=region, zarr_format=3)
            if time.perf_counter() - t0 > spec["time_budget"]:
                break
        elapsed = time.perf_counter() - t0
        runs.append(
            {
                "elapsed_s": elapsed,
                "cpu_s": time.process_time() - c0,
                "samples": windows,
                "bytes_delivered": windows * w * w * 4 * len(variables),
                "first_batch_s": None,
            }
        )
        shutil.rmtree(folder, ignore_errors=True)
    return runs


def inference_xarray(spec: Spec) -> list[Result]:
    return _xarray_loop(spec, halo=False)


def inference_xarray_halo(spec: Spec) -> list[Result]:
    return _xarray_loop(spec, halo=True)


INFERENCE_METHODS = {
    "inference-limit": inference_limit,
    "inference-earthstream": inference_earthstream,
    "inference-xarray": inference_xarray,
    "inference-xarray-halo": inference_xarray_halo,
}


# -- the runner side ----------------------------------------------------------------------
def run_inference_bench(config: Any) -> dict[str, Any]:
    """The inference rows on the first layout's store: every method in a fresh process,
    round after round (load drifting on a shared machine hits all alike)."""
    import os
    import sys

    from ._common import _log, _row, _run, _target
    from ._stores import LAYOUTS, SIZES, VARIABLES, make_store

    started = time.time()
    layout, size = config.layouts[0], config.size
    path = make_store(config.folder, layout, size, progress=config.progress)
    window = config.window
    stride = int(config.extra.get("inference_stride", window * 3 // 4))
    dims = SIZES[size]
    n_windows = (
        dims["n_times"]
        * len(_starts(dims["n_lat"], window, stride))
        * len(_starts(dims["n_lon"], window, stride))
    )
    base = {
        "store": str(path),
        "variables": list(VARIABLES),
        "window": window,
        "stride": stride,
        "batch_size": config.batch_size,
        "memory_limit": config.memory_limit,
        "repeats": 1,
        "time_budget": config.time_budget,
        "n_windows": n_windows,
        "out_dir": str(config.folder),
        "packed": LAYOUTS[layout].packed,
    }
    plan = [
        ("inference-limit", "decode every chunk once, all cores", ""),
        ("inference-earthstream", "Stream + PredictionWriter (taper), identity", "whole domain"),
        (
            "inference-xarray",
            "xarray isel per window + to_zarr(region=)",
            f"first {config.time_budget:.0f} s",
        ),
        (
            "inference-xarray-halo",
            "xarray halo per chunk + to_zarr(region=)",
            f"first {config.time_budget:.0f} s",
        ),
    ]
    results: list[dict[str, Any]] = [{"runs": [], "peak_rss_mb": 0.0} for _ in plan]
    for round_ in range(config.repeats):
        for (method, _, _), merged in zip(plan, results, strict=True):
            _log(config, f"  inference round {round_ + 1}: {method}")
            result = _run({**base, "method": method}, config.timeout)
            merged["runs"].extend(result["runs"])
            merged["peak_rss_mb"] = max(merged["peak_rss_mb"], result["peak_rss_mb"])
    rows = [
        _row(layout, size, method, variant, merged, notes)
        for (method, variant, notes), merged in zip(plan, results, strict=True)
    ]
    limit_rate = rows[0]["samples_per_s"]
    ours = rows[1]["samples_per_s"]
    for row in rows:
        if limit_rate and row["samples_per_s"]:
            row["ratio_to_limit"] = row["samples_per_s"] / limit_rate
        if ours and row["samples_per_s"]:
            row["earthstream_over_this"] = ours / row["samples_per_s"]
    targets = []
    if ours and rows[2]["samples_per_s"]:
        targets.append(
            _target(
                ">= 3x a hand-written xarray loop (isel per window, to_zarr region writes)",
                ours / rows[2]["samples_per_s"],
                3,
            )
        )
    if ours and rows[3]["samples_per_s"]:
        targets.append(
            _target(
                "(no target) x the xarray loop that loads each chunk's halo once",
                ours / rows[3]["samples_per_s"],
                0,
            )
        )
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "config": {
            "size": size,
            "grid": SIZES[size],
            "variables": list(VARIABLES),
            "window": window,
            "stride": stride,
            "batch_size": config.batch_size,
            "memory_limit": config.memory_limit,
            "repeats": config.repeats,
            "time_budget_s": config.time_budget,
        },
        "rows": rows,
        "scale": None,
        "remote": None,
        "targets": targets,
        "wall_s": time.time() - started,
    }
