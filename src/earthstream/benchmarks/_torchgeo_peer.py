"""torchgeo 0.10 on the chip suite's COGs: the peer harness of ``earthstream bench --suite chips``.

This module imports **no earthstream code**: it runs by path in torchgeo's own
environment (torchgeo 0.10 needs Python >= 3.12 and a torch that torchvision
imports beside), one measured method per process::

    $TORCHGEO_PYTHON src/earthstream/benchmarks/_torchgeo_peer.py '{"method": "torchgeo", ...}'

and prints one JSON object (the last line of stdout).  The chip suite
(:mod:`earthstream.benchmarks._chips_suite`) imports its measuring helpers, so
both sides are timed by the same code:

* :class:`Slicer`: a long run of batches cut into timed slices (after a warm-up
  slice): wall time, CPU time of the process tree (this process and every live
  descendant: DataLoader workers included, plus reaped children), and how busy
  the whole machine was meanwhile (``/proc/stat``), so a loaded machine shows;
* :func:`rasterio_batches`: the plainest loader (one windowed rasterio read per
  chip on a 2-thread pool), which runs in both environments: it tells apart the
  two environments' GDAL builds.

torchgeo is used as its users use it: a ``RasterDataset`` subclass over the
files, ``GridGeoSampler`` / ``RandomGeoSampler`` (0.10 deprecates them in favour
of ``GriddedPatchSampler`` / ``RandomPatchSampler``, which walk the union of the
footprints instead of each file), ``IntersectionDataset`` with a
``VectorDataset`` for rasterized labels, ``stack_samples`` as the collate
function, and a ``torch.utils.data.DataLoader`` with 0 or 2 workers.
Reprojection opens the ``RasterDataset`` with ``crs=`` (a ``WarpedVRT`` per
file) and ``resampling`` overridden to nearest or bilinear.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BATCH",
    "CHIP",
    "Slicer",
    "chip_positions",
    "machine_busy_s",
    "peak_rss_mb",
    "rasterio_batches",
    "tree_cpu_s",
]

CHIP = 256
BATCH = 16
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- measuring (shared with the earthstream side) ----------------------------------------
def _stat(pid: int | str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds of all its threads) from ``/proc/PID/stat``."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:  # gone meanwhile, or not Linux
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process, its live descendants and its reaped children.

    A child that exits between two calls moves from the live sum into the reaped
    one (``os.times``), so differences stay continuous.  DataLoader workers and
    thread pools are all counted.
    """
    me = os.getpid()
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if name.isdigit():
            st = _stat(name)
            if st is not None:
                parents[int(name)], cpu[int(name)] = st
    tree, frontier = {me}, [me]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    t = os.times()
    own = t.user + t.system
    return own + sum(cpu.get(p, 0.0) for p in tree if p != me) + t.children_user + t.children_system


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, every process) since boot."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except OSError:  # pragma: no cover - not Linux
        return 0.0
    # user nice system idle iowait irq softirq steal (guest is already in user)
    busy = sum(values[:8]) - values[3] - values[4]
    return busy / _TICK


def peak_rss_mb() -> float:
    """This process's own peak resident memory (``VmHWM``), in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover
        pass
    return 0.0


@dataclass
class Slicer:
    """Cut a long run of batches into timed slices.

    ``batches`` is an endless iterator (epochs chained); ``count`` gives the
    chips of a batch.  :meth:`slice` consumes batches until ``budget_s`` has
    passed or ``max_chips`` were delivered and returns what it measured: chips,
    wall and process-tree CPU seconds, and the machine's busy cores meanwhile
    (``others_busy_cores``: what the rest of the machine used).
    """

    batches: Iterator[Any]
    count: Callable[[Any], int]
    history: list[dict[str, Any]] = field(default_factory=list)

    def slice(self, budget_s: float, max_chips: int | None = None) -> dict[str, Any]:
        load0 = os.getloadavg()
        busy0, cpu0 = machine_busy_s(), tree_cpu_s()
        t0 = time.perf_counter()
        chips = batches = 0
        first = None
        for batch in self.batches:
            chips += self.count(batch)
            batches += 1
            now = time.perf_counter() - t0
            if first is None:
                first = now
            if now >= budget_s or (max_chips is not None and chips >= max_chips):
                break
        elapsed = time.perf_counter() - t0
        cpu = tree_cpu_s() - cpu0
        busy = machine_busy_s() - busy0
        out = {
            "elapsed_s": elapsed,
            "samples": chips,
            "batches": batches,
            "cpu_s": cpu,
            "cpu_ms_per_chip": 1000 * cpu / chips if chips else None,
            "first_batch_s": first,
            "machine_busy_cores": busy / elapsed if elapsed else None,
            "others_busy_cores": max(0.0, busy - cpu) / elapsed if elapsed else None,
            "load_average": [round(x, 2) for x in (*load0, *os.getloadavg())],
        }
        self.history.append(out)
        return out


def endless(epoch: Callable[[int], Iterator[Any]]) -> Iterator[Any]:
    """Epoch 0, 1, 2, ... chained: a training run's stream of batches."""
    n = 0
    while True:
        yield from epoch(n)
        n += 1


def measure_slices(
    batches: Iterator[Any],
    count: Callable[[Any], int],
    *,
    repeats: int,
    budget_s: float,
    warmup_s: float,
    max_chips: int | None = None,
) -> list[dict[str, Any]]:
    """A warm-up slice, then ``repeats`` measured slices of one run of batches."""
    slicer = Slicer(batches, count)
    slicer.slice(warmup_s, max_chips)
    return [slicer.slice(budget_s, max_chips) for _ in range(repeats)]


# -- the plainest loader ------------------------------------------------------------------
def chip_positions(
    paths: Sequence[str], size: int, order: str, seed: int = 0
) -> list[tuple[int, int, int]]:
    """(file, row, col) of every chip on the files' own grids, in grid or random order."""
    n = size // CHIP
    chips = [(f, r * CHIP, c * CHIP) for f in range(len(paths)) for r in range(n) for c in range(n)]
    if order == "random":
        rng = np.random.default_rng(seed)
        chips = [chips[i] for i in rng.permutation(len(chips))]
    return chips


def rasterio_batches(
    paths: Sequence[str], size: int, order: str, *, threads: int = 2, seed: int = 0
) -> Iterator[np.ndarray]:
    """One epoch of the plainest loader: one windowed ``rasterio`` read per chip on a
    thread pool (a dataset handle per thread and file; GDAL's block cache at its
    default), batches stacked in order."""
    import rasterio
    from rasterio.windows import Window

    chips = chip_positions(paths, size, order, seed)
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

    with ThreadPoolExecutor(threads) as pool:
        batch: list[np.ndarray] = []
        for chip in pool.map(read, chips):
            batch.append(chip)
            if len(batch) == BATCH:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)


# -- torchgeo -----------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import rasterio

    out = {
        "python": sys.version.split()[0],
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }
    try:
        import torch
        import torchgeo
    except ImportError:  # the plain loader, run in earthstream's environment
        return out
    return {**out, "torchgeo": torchgeo.__version__, "torch": torch.__version__}


def _datasets(spec: dict[str, Any]) -> Any:
    """The torchgeo dataset of a variant (prints of torchgeo's go to stderr)."""
    from rasterio.enums import Resampling
    from torchgeo.datasets import IntersectionDataset, RasterDataset, VectorDataset

    variant = spec["variant"]

    class Scenes(RasterDataset):  # type: ignore[misc]
        filename_glob = "*.tif"

    class NearestScenes(Scenes):
        @property
        def resampling(self) -> Any:  # torchgeo's default for float32 images is bilinear
            return Resampling.nearest

    class Labels(VectorDataset):  # type: ignore[misc]
        pass

    with contextlib.redirect_stdout(sys.stderr):
        if variant in ("nearest", "bilinear"):
            res = spec.get("res")
            kind = NearestScenes if variant == "nearest" else Scenes
            scenes = kind(paths=spec["files"], crs=spec["crs"], res=res)
        else:
            scenes = Scenes(paths=spec["files"])
        if variant != "labels":
            return scenes
        labels = Labels(paths=[spec["labels"]], label_name="class")
        return IntersectionDataset(scenes, labels)


def _sampler(dataset: Any, order: str, seed: int) -> Any:
    import torch
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if order == "grid":
            return GridGeoSampler(dataset, size=CHIP)
        return RandomGeoSampler(dataset, size=CHIP, generator=torch.Generator().manual_seed(seed))


def _order(spec: dict[str, Any]) -> str:
    return "grid" if spec["variant"] == "grid" else "random"


def torchgeo_method(spec: dict[str, Any]) -> dict[str, Any]:
    """Timed slices of a torchgeo DataLoader run (see the module's docstring)."""
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import stack_samples

    # DataLoader workers run torch with 1 intra-op thread; the main process has one per
    # core, and on a shared machine those spin: a chip's copy + cast to float32 measured
    # 3-8 ms with 2 threads against 0.1 ms with 1.  ``torch_threads`` (default 1) sets it.
    threads = spec.get("torch_threads", 1)
    if threads:
        torch.set_num_threads(int(threads))
    dataset = _datasets(spec)
    sampler = _sampler(dataset, _order(spec), spec.get("seed", 0))
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        sampler=sampler,
        collate_fn=stack_samples,
        num_workers=spec["workers"],
    )
    runs = measure_slices(
        endless(lambda _epoch: iter(loader)),
        lambda batch: int(batch["image"].shape[0]),
        repeats=spec["repeats"],
        budget_s=spec["budget_s"],
        warmup_s=spec.get("warmup_s", spec["budget_s"]),
    )
    info = {
        **_versions(),
        "epoch_chips": len(sampler),
        "crs": str(dataset.crs.to_string()),
        "res": list(dataset.res),
        "sampler": type(sampler).__name__,
        "torch_threads": torch.get_num_threads(),
    }
    return {"runs": runs, "info": info}


def rasterio_method(spec: dict[str, Any]) -> dict[str, Any]:
    """The plainest loader, in this environment (its GDAL build)."""
    runs = measure_slices(
        endless(
            lambda epoch: rasterio_batches(
                spec["files"], spec["size"], spec["order"], seed=spec.get("seed", 0) + epoch
            )
        ),
        len,
        repeats=spec["repeats"],
        budget_s=spec["budget_s"],
        warmup_s=spec.get("warmup_s", spec["budget_s"]),
    )
    return {"runs": runs, "info": _versions()}


# -- are they the same chips? -------------------------------------------------------------
def _bounds(index: Any) -> tuple[float, float, float, float]:
    x, y = index[0], index[1]
    return float(x.start), float(y.start), float(x.stop), float(y.stop)


def check(spec: dict[str, Any]) -> dict[str, Any]:
    """Spot-check torchgeo's chips against independent rasterio reads of the same bounds.

    * native grid (grid and random sampler): the image equals a windowed
      ``rasterio`` read of the file holding the chip, pixel for pixel;
    * labels: the mask against ``rasterio.features.rasterize`` of every label
      polygon touching the chip (read with geopandas, reprojected to the scenes'
      CRS); torchgeo selects polygons with a box through two reprojected corners of
      the chip, which misses some crossing its edges (counted);
    * reprojection: the chip against ``rasterio.warp.reproject`` of the source
      file onto the chip's grid (same CRS, transform, resampling, nodata 0), on
      the pixels valid in both: torchgeo warps each file once to a default grid
      (``WarpedVRT``, nearest) and then resamples that onto the chip, so the two
      differ by design; the maximum and mean absolute differences are reported.
    """
    import geopandas as gpd
    import rasterio
    from rasterio import features, warp
    from rasterio.transform import from_origin
    from rasterio.windows import from_bounds

    n = int(spec.get("chips", 4))
    out: dict[str, Any] = {"info": _versions()}
    files = list(spec["files"])
    handles = [rasterio.open(p) for p in files]

    def holder(b: tuple[float, float, float, float]) -> Any:
        for ds in handles:
            left, bottom, right, top = ds.bounds
            if left <= b[0] and b[2] <= right and bottom <= b[1] and b[3] <= top:
                return ds
        raise AssertionError(f"no file holds the chip {b}")

    native: dict[str, Any] = {}
    for order in ("grid", "random"):
        dataset = _datasets({**spec, "variant": order})
        sampler = _sampler(dataset, order, 1)
        indexes = list(_take(iter(sampler), n, every=7 if order == "grid" else 1))
        equal = 0
        for index in indexes:
            b = _bounds(index)
            ds = holder(b)
            window = from_bounds(*b, transform=ds.transform).round_offsets().round_lengths()
            want = ds.read(window=window).astype(np.float32)
            got = dataset[index]["image"].numpy()
            equal += int(got.shape == want.shape and np.array_equal(got, want))
        native[order] = {"chips": len(indexes), "equal": equal}
    out["native"] = native

    if spec.get("labels"):
        dataset = _datasets({**spec, "variant": "labels"})
        frame = gpd.read_parquet(spec["labels"]).to_crs(handles[0].crs)
        sampler = _sampler(dataset, "random", 2)
        equal = pixels = same = labelled = missed = 0
        indexes = list(_take(iter(sampler), n))
        for index in indexes:
            b = _bounds(index)
            sample = dataset[index]
            mask = sample["mask"].numpy()
            hit = frame.cx[b[0] : b[2], b[1] : b[3]]
            step = ((b[2] - b[0]) / mask.shape[1], (b[3] - b[1]) / mask.shape[0])
            want = np.zeros(mask.shape, np.uint8)
            if len(hit):
                want = features.rasterize(
                    list(zip(hit.geometry, hit["class"].astype(int), strict=True)),
                    out_shape=mask.shape,
                    transform=from_origin(b[0], b[3], *step),
                    fill=0,
                    dtype="uint8",
                )
            equal += int(np.array_equal(mask, want))
            pixels += mask.size
            same += int((mask == want).sum())
            labelled += int((want != 0).sum())
            missed += int(((mask == 0) & (want != 0)).sum())
        out["labels"] = {
            "chips": len(indexes),
            "equal": equal,
            "pixels_equal": same / pixels if pixels else None,
            "labelled_fraction": labelled / pixels if pixels else None,
            # torchgeo looks features up in a box through two corners of the chip,
            # reprojected: polygons crossing the chip near the other two are left out
            "background_where_labelled": missed,
        }

    reprojection: dict[str, Any] = {}
    for method in ("nearest", "bilinear"):
        dataset = _datasets({**spec, "variant": method})
        sampler = _sampler(dataset, "random", 3)
        diffs: list[np.ndarray] = []
        vs_nearest: list[np.ndarray] = []
        compared = 0
        for index in _take(iter(sampler), n):
            b = _bounds(index)
            got = dataset[index]["image"].numpy()
            rx, ry = (b[2] - b[0]) / got.shape[2], (b[3] - b[1]) / got.shape[1]
            dst_transform = from_origin(b[0], b[3], rx, ry)

            def warped(how: str, got: np.ndarray = got, dst_transform: Any = dst_transform) -> Any:
                dest = np.zeros(got.shape, np.float32)
                for ds in handles:  # first valid pixel wins, as rasterio.merge
                    part = np.zeros(got.shape, np.float32)
                    warp.reproject(
                        rasterio.band(ds, [1, 2, 3, 4]),
                        part,
                        dst_transform=dst_transform,
                        dst_crs=spec["crs"],
                        resampling=getattr(warp.Resampling, how),
                        src_nodata=0,
                        dst_nodata=0,
                    )
                    fill = (dest == 0) & (part != 0)
                    dest[fill] = part[fill]
                return dest

            want = warped(method)
            valid = (got != 0) & (want != 0)
            if valid.any():
                compared += int(valid.sum())
                diffs.append(np.abs(got - want)[valid])
                if method == "bilinear":
                    near = warped("nearest")
                    both = valid & (near != 0)
                    vs_nearest.append(np.abs(got - near)[both])
        flat = np.concatenate(diffs) if diffs else np.zeros(0)
        entry: dict[str, Any] = {
            "chips": n,
            "pixels_compared": compared,
            "max_abs_diff": float(flat.max()) if flat.size else None,
            "mean_abs_diff": float(flat.mean()) if flat.size else None,
            "equal_fraction": float((flat == 0).mean()) if flat.size else None,
        }
        if vs_nearest:
            near = np.concatenate(vs_nearest)
            entry["vs_nearest_reproject"] = {
                "max_abs_diff": float(near.max()),
                "equal_fraction": float((near == 0).mean()),
            }
        reprojection[method] = entry
    out["reprojection"] = reprojection
    for ds in handles:
        ds.close()
    return out


def _take(it: Iterator[Any], n: int, every: int = 1) -> Iterator[Any]:
    for i, item in enumerate(it):
        if i // every >= n:
            return
        if i % every == 0:
            yield item


METHODS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "torchgeo": torchgeo_method,
    "rasterio": rasterio_method,
    "check": check,
}


def main(argv: Sequence[str]) -> int:
    spec = json.loads(argv[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result = METHODS[spec["method"]](spec)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
