"""One measured method, run in a fresh process: ``python -m earthstream.benchmarks._measure SPEC``.

Each method warms up (imports, page cache, first batches) and then runs
``repeats`` measured passes; the process prints one JSON object with every
pass and its own peak RSS.  Running each method in its own process keeps peak
RSS honest and stops one method's caches from helping another.
"""

from __future__ import annotations

import itertools
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._inference import INFERENCE_METHODS
from ._limit import Result, Spec, limit


def _peak_rss_mb() -> float:
    """This process's own peak resident memory (MB).

    ``/proc/self/status`` ``VmHWM`` is the high-water mark of this process's
    address space.  ``getrusage``'s ``ru_maxrss`` is not: Linux carries it over
    ``fork`` and ``exec`` from the parent, so a method process started by a
    runner that had written a 400 MB store would report the runner's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- earthstream -------------------------------------------------------------------------
def _open_stream(spec: Spec, kwargs: dict[str, Any], options: Any) -> Any:
    """The measured stream: a ``Stream`` over ``store``, or with ``modalities`` (name ->
    ``[store, variables]``, the first primary) a ``MultiStream`` joining them."""
    from .. import Modality, MultiStream, Stream, open_zarr

    modalities = spec.get("modalities")
    if modalities:
        return MultiStream(
            {
                name: Modality(open_zarr(store, variables=names, storage_options=options))
                for name, (store, names) in modalities.items()
            },
            **kwargs,
        )
    return Stream(
        open_zarr(spec["store"], variables=spec["variables"], storage_options=options), **kwargs
    )


def earthstream(spec: Spec) -> list[Result]:
    """Epochs of one stream (as in training), plus a cold start to the first batch."""
    kwargs = spec.get("stream") or {  # the weather rows give the stream's settings whole
        "window": {"lat": spec["window"], "lon": spec["window"]},
        "batch_size": spec["batch_size"],
        "shuffle": spec["shuffle"],
        "seed": 0,
        "memory_limit": spec["memory_limit"],
    }
    workers = spec.get("workers", 0)
    options = spec.get("storage_options")
    stream = _open_stream(spec, kwargs, options)

    torch_loader = bool(workers or spec.get("torch"))

    def batches_of(epoch: int) -> Iterator[Any]:
        stream.set_epoch(epoch)
        if torch_loader:
            return iter(stream.to_torch().loader(num_workers=workers))
        return iter(stream)

    def one_pass(epoch: int, limit_batches: int | None = None) -> Result:
        t0 = time.perf_counter()
        c0 = time.process_time()
        samples = delivered = count = 0
        for batch in batches_of(epoch):
            count += 1
            samples += batch.size
            delivered += _nbytes(batch)
            if limit_batches and count >= limit_batches:
                break
        elapsed = time.perf_counter() - t0
        report = stream.report
        return {
            "elapsed_s": elapsed,
            "cpu_s": time.process_time() - c0,
            "samples": samples,
            "batches": count,
            "bytes_delivered": delivered,
            "bytes_decoded": report.bytes_decoded if report and not workers else None,
            "chunks_decoded": report.chunks_decoded if report and not workers else None,
            "stall_s": report.stall_s if report and not workers else None,
            "requests": report.requests if report and not workers else None,
            "retries": report.retries if report and not workers else None,
            "n_windows": stream.n_windows,
        }

    # Warm-up: one whole epoch, so that imports, threads, the page cache and every
    # chunk slot's memory are ready, as in the second and later epochs of training.
    one_pass(99)

    # Cold start: open the store, build a stream, get the first batch.
    t0 = time.perf_counter()
    fresh = _open_stream(spec, kwargs, options)
    it = iter(fresh.to_torch().loader(num_workers=workers)) if torch_loader else iter(fresh)
    next(it)
    first = time.perf_counter() - t0
    del it
    fresh.close()

    runs = [one_pass(epoch) for epoch in range(spec["repeats"])]
    for run in runs:
        run["first_batch_s"] = first
    return runs


def _nbytes(batch: Any) -> int:
    stacked = getattr(batch, "stacked", None)
    if stacked is not None:
        return int(stacked.nbytes if hasattr(stacked, "nbytes") else stacked.numel() * 4)
    total = 0
    for name in batch:
        value = batch[name]
        total += (
            int(value.nbytes) if hasattr(value, "nbytes") else value.numel() * value.element_size()
        )
    return total


# -- peers -------------------------------------------------------------------------------
def _chunks_touched(shape: tuple[int, ...], chunks: tuple[int, ...], region: list[slice]) -> int:
    n = 1
    for r, c in zip(region, chunks, strict=True):
        n *= (r.stop - 1) // c - r.start // c + 1
    return n


def _timed_batches(batches: Iterator[tuple[int, int]], budget: float, warmup: int = 3) -> Result:
    """Consume ``(samples, decoded bytes estimate)`` pairs within ``budget`` seconds."""
    for _ in range(warmup):
        if next(batches, None) is None:
            break
    t0 = time.perf_counter()
    c0 = time.process_time()
    first = None
    samples = decoded = count = 0
    for n, dec in batches:
        if first is None:
            first = time.perf_counter() - t0
        samples += n
        decoded += dec
        count += 1
        if time.perf_counter() - t0 > budget:
            break
    elapsed = time.perf_counter() - t0
    return {
        "elapsed_s": elapsed,
        "cpu_s": time.process_time() - c0,
        "samples": samples,
        "batches": count,
        "bytes_delivered": samples * 4 * 0,  # filled by the caller
        "bytes_decoded_estimate": decoded,
        "first_batch_s": first,
    }


def xbatcher(spec: Spec) -> list[Result]:
    """xbatcher's BatchGenerator, or (``spec["dropin"]``) earthstream's drop-in for it, on
    the same Dataset and windows."""
    import xarray as xr
    import xbatcher as xb

    from .. import xbatcher as es_xb

    w, b = spec["window"], spec["batch_size"]
    variables = spec["variables"]
    dropin = bool(spec.get("dropin"))
    generator = es_xb.BatchGenerator if dropin else xb.BatchGenerator
    ds = xr.open_zarr(spec["store"], chunks={} if spec["dask"] else None)[variables]
    chunk_shape = {v: tuple(ds[v].encoding["chunks"]) for v in variables}
    itemsize = 4 * len(variables)

    def decoded_estimate(batch: Any) -> int:
        total = 0
        for v in variables:
            region = []
            for dim in ds[v].dims:
                lo = int(ds.get_index(dim).get_loc(batch[dim].values[0]))
                region.append(slice(lo, lo + batch.sizes[dim]))
            shape = ds[v].shape
            per_chunk = int(np.prod(chunk_shape[v])) * 4
            total += _chunks_touched(shape, chunk_shape[v], region) * per_chunk
        return total

    def to_array(batch: Any) -> np.ndarray:
        return np.stack([batch[v].values for v in variables], axis=1)

    def batches() -> Iterator[tuple[int, int]]:
        gen = generator(ds, input_dims={"lat": w, "lon": w}, batch_dims={"time": b})
        if dropin:  # the engine decodes ahead of the batches: no per-batch estimate
            for batch in gen:
                yield int(to_array(batch).shape[0]), 0
            return
        if spec.get("workers"):
            import torch
            from xbatcher.loaders.torch import MapDataset

            loader = torch.utils.data.DataLoader(
                MapDataset(gen, transform=lambda x: torch.from_numpy(to_array(x))),
                batch_size=None,
                num_workers=spec["workers"],
            )
            for i, tensor in enumerate(loader):
                yield int(tensor.shape[0]), decoded_estimate(gen[i])
        else:
            for batch in gen:
                arr = to_array(batch)
                yield int(arr.shape[0]), decoded_estimate(batch)

    runs = []
    for _ in range(spec["repeats"]):
        # xbatcher decodes every batch's chunks again: its steady state follows 3 warm-up
        # batches.  The drop-in decodes up front (each chunk once, for the batches that
        # share it): it is timed from its first batch, the decodes included.
        run = _timed_batches(batches(), spec["time_budget"], warmup=0 if dropin else 3)
        run["bytes_delivered"] = run["samples"] * w * w * itemsize
        if dropin:
            run.pop("bytes_decoded_estimate")
        runs.append(run)
    return runs


def naive(spec: Spec) -> list[Result]:
    """zarr-python, one ``array[...]`` read per window and variable, in grid order."""
    import zarr

    w, b = spec["window"], spec["batch_size"]
    arrays = [zarr.open_array(spec["store"], path=v, mode="r") for v in spec["variables"]]
    n_t, n_y, n_x = arrays[0].shape
    chunks = tuple(arrays[0].chunks)
    per_chunk = int(np.prod(chunks)) * 4

    def batches() -> Iterator[tuple[int, int]]:
        windows = itertools.product(range(n_t), range(0, n_y - w + 1, w), range(0, n_x - w + 1, w))
        while True:
            group_ = list(itertools.islice(windows, b))
            if not group_:
                return
            out = np.empty((len(group_), len(arrays), w, w), dtype=np.float32)
            decoded = 0
            for i, (t, y, x) in enumerate(group_):
                region = [slice(t, t + 1), slice(y, y + w), slice(x, x + w)]
                for j, arr in enumerate(arrays):
                    out[i, j] = arr[t, y : y + w, x : x + w]
                    decoded += _chunks_touched(arr.shape, chunks, region) * per_chunk
            yield len(group_), decoded

    runs = []
    for _ in range(spec["repeats"]):
        run = _timed_batches(batches(), spec["time_budget"])
        run["bytes_delivered"] = run["samples"] * w * w * 4 * len(arrays)
        runs.append(run)
    return runs


def xarray_forecast(spec: Spec) -> list[Result]:
    """The plain loader of whole-field forecast samples: a hand-written torch ``Dataset``
    over ``xr.open_zarr(...).isel(time=...)`` (no dask), in a ``DataLoader`` with
    workers, shuffled; each item is ``(C, T, H, W)`` (levels as channels), inputs then
    targets, as earthstream's stacked forecast."""
    import torch
    import xarray as xr

    stream = spec["stream"]
    inputs = int(stream["forecast"]["inputs"])
    lead = int(spec["lead_steps"])
    ds = xr.open_zarr(spec["store"], chunks=None)[spec["variables"]]
    n_time = int(ds.sizes["time"])
    step_bytes = sum(int(np.prod(ds[v].shape[1:])) * ds[v].dtype.itemsize for v in ds.data_vars)

    class Forecasts(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return n_time - inputs - lead + 1

        def __getitem__(self, i: int) -> torch.Tensor:
            steps = [*range(i, i + inputs), i + inputs - 1 + lead]
            parts = []
            for v in spec["variables"]:
                a = ds[v].isel(time=steps).values
                parts.append(a.transpose(1, 0, 2, 3) if a.ndim == 4 else a[None])
            return torch.from_numpy(np.concatenate(parts))

    def batches() -> Iterator[tuple[int, int]]:
        loader = torch.utils.data.DataLoader(
            Forecasts(),
            batch_size=stream["batch_size"],
            shuffle=True,
            num_workers=spec["workers"],
            generator=torch.Generator().manual_seed(0),
        )
        while True:
            for x in loader:
                n = int(x.shape[0])
                yield n, n * (inputs + 1) * step_bytes

    runs = []
    for _ in range(spec["repeats"]):
        run = _timed_batches(batches(), spec["time_budget"], warmup=2)
        run["bytes_delivered"] = run["samples"] * (inputs + 1) * step_bytes
        runs.append(run)
    return runs


METHODS: dict[str, Callable[[Spec], list[Result]]] = {
    "limit": limit,
    "earthstream": earthstream,
    "xbatcher": xbatcher,
    "es.xbatcher": lambda spec: xbatcher({**spec, "dropin": True}),
    "naive": naive,
    "xarray": xarray_forecast,
    **INFERENCE_METHODS,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    runs = METHODS[spec["method"]](spec)
    print(json.dumps({"runs": runs, "peak_rss_mb": _peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
