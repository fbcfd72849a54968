"""The decode limit: every chunk an epoch needs, decoded once, as fast as this machine can.

The best of several decoders (numcodecs on all cores, zarr-python, zarrs; with the CF
unpacking for packed stores) is each row's limit.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["Result", "Spec", "cpus", "limit"]

Spec = dict[str, Any]
Result = dict[str, Any]


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


# -- the limit: decode every chunk the epoch needs once, as fast as possible ------------
def _needed_chunks(spec: Spec) -> list[tuple[str, tuple[int, ...]]]:
    """Every chunk touched by the epoch's windows (drop edges), per variable."""
    from .. import open_zarr

    # the decode unit (a shard's inner chunk), not the read unit the engine sees
    source = open_zarr(spec["store"], variables=spec["variables"], read_unit_bytes=0)
    if spec.get("stream"):  # whole-field forecasts: every step is some sample's
        return [
            (name, idx)
            for name, info in source.variables.items()
            for idx in itertools.product(*(range(n) for n in info.chunk_grid))
        ]
    w = spec["window"]
    keys: list[tuple[str, tuple[int, ...]]] = []
    for name, info in source.variables.items():
        ranges = []
        for dim, size, chunk in zip(info.dims, info.shape, info.chunks, strict=True):
            used = size if dim == "time" else (size // w) * w  # rows covered by windows
            ranges.append(range(-(-used // chunk)))
        keys.extend((name, idx) for idx in itertools.product(*ranges))
    return keys


def _limit_numcodecs(spec: Spec) -> Result:
    """Read + decode each needed chunk once on all cores, into reused buffers."""
    from .. import open_zarr

    source = open_zarr(spec["store"], variables=spec["variables"], read_unit_bytes=0)
    keys = _needed_chunks(spec)
    reader = source.reader
    decoders = {name: source._decoder(name) for name in source.variables}
    local = threading.local()

    def work(key: tuple[str, tuple[int, ...]]) -> int:
        name, index = key
        decoder = decoders[name]
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = {}
        out = buffers.get(name)
        if out is None:
            out = buffers[name] = np.empty(decoder.spec.chunks, dtype=decoder.dtype)
        chunk = decoder.read(reader, index, out=out)
        return 0 if chunk is None else chunk.nbytes

    return _timed_decodes(work, keys, spec)


def _limit_cf(spec: Spec, how: str) -> Result:
    """CF-packed stores: read + decode each needed chunk once and unpack it to float32
    (scale, offset, fill value to NaN) with NumPy, on all cores, into reused buffers.

    ``how="arithmetic"`` is xarray's arithmetic (float64, rounded once to float32);
    ``how="table"`` looks every int16 up in a table of its decoded value (built once
    from the same arithmetic).  The CF attributes come from zarr-python, not from
    earthstream's decoder.
    """
    import zarr

    from .. import open_zarr

    source = open_zarr(
        spec["store"], variables=spec["variables"], decode_cf=False, read_unit_bytes=0
    )
    keys = _needed_chunks(spec)
    reader = source.reader
    decoders = {name: source._decoder(name) for name in source.variables}
    params = {}
    for name in source.variables:
        attrs = zarr.open_array(spec["store"], path=name, mode="r").attrs
        scale = float(attrs["scale_factor"])  # type: ignore[arg-type]
        offset = float(attrs["add_offset"])  # type: ignore[arg-type]
        fill = int(attrs["_FillValue"])  # type: ignore[arg-type]
        bits = np.arange(2**16, dtype=np.uint16).view(np.int16)
        table = bits.astype(np.float64) * scale + offset
        table[bits == fill] = np.nan
        params[name] = (scale, offset, fill, table.astype(np.float32))
    local = threading.local()

    def work(key: tuple[str, tuple[int, ...]]) -> int:
        name, index = key
        decoder = decoders[name]
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = {}
        if name not in buffers:
            shape = decoder.spec.chunks
            buffers[name] = (
                np.empty(shape, np.int16),
                np.empty(shape, np.float64),
                np.empty(shape, bool),
                np.empty(shape, np.float32),
            )
        raw, tmp, mask, out = buffers[name]
        if decoder.read(reader, index, out=raw) is None:
            return 0
        scale, offset, fill, table = params[name]
        if how == "table":
            np.take(table, raw.reshape(-1).view(np.uint16), out=out.reshape(-1), mode="clip")
        else:
            np.multiply(raw, scale, out=tmp)
            np.add(tmp, offset, out=tmp)
            np.equal(raw, fill, out=mask)
            np.copyto(tmp, np.nan, where=mask)
            np.copyto(out, tmp, casting="same_kind")
        return int(out.nbytes)

    return _timed_decodes(work, keys, spec)


def _limit_zarr(spec: Spec, pipeline: str | None) -> Result:
    """One whole-array read per variable through zarr-python (optionally the zarrs pipeline)."""
    import zarr

    config: dict[str, Any] = {"async.concurrency": 64}
    if pipeline:
        config["codec_pipeline.path"] = pipeline
    with zarr.config.set(config):
        arrays = [zarr.open_array(spec["store"], path=name, mode="r") for name in spec["variables"]]
        t0 = time.perf_counter()
        c0 = time.process_time()
        decoded = 0
        for array in arrays:
            decoded += np.asarray(array[...]).nbytes
        elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "cpu_s": time.process_time() - c0, "bytes_decoded": decoded}


def limit(spec: Spec) -> list[Result]:
    candidates: dict[str, Callable[[Spec], Result]] = {
        "numcodecs": _limit_numcodecs,
        "zarr-python": lambda s: _limit_zarr(s, None),
    }
    try:
        import zarrs  # noqa: F401

        candidates["zarrs"] = lambda s: _limit_zarr(s, "zarrs.ZarrsCodecPipeline")
    except ImportError:  # pragma: no cover - zarrs is in the bench extra
        pass
    if spec.get("packed"):  # the unpacking is part of the work: decoders alone are not a limit
        candidates = {
            "numcodecs+numpy": lambda s: _limit_cf(s, "arithmetic"),
            "numcodecs+table": lambda s: _limit_cf(s, "table"),
        }
    runs = []
    for _ in range(spec["repeats"]):
        run: Result = {"candidates": {}}
        for label, fn in candidates.items():
            run["candidates"][label] = fn(spec)
        best = min(run["candidates"], key=lambda k: run["candidates"][k]["elapsed_s"])
        run.update(run["candidates"][best], decoder=best)
        runs.append(run)
    return runs


def _timed_decodes(work: Callable[[Any], int], keys: Sequence[Any], spec: Spec) -> Result:
    """``work`` over every key on all cores (after warming the threads' buffers), timed:
    wall and CPU seconds, bytes decoded, chunks."""
    threads = spec.get("threads") or cpus()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, keys[: 4 * threads]))  # warm the buffers
        t0 = time.perf_counter()
        c0 = time.process_time()
        decoded = sum(pool.map(work, keys))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {"elapsed_s": elapsed, "cpu_s": cpu, "bytes_decoded": decoded, "chunks": len(keys)}
