"""``earthstream demo``: the main job on embedded data, and the experiment's whole life.

1. Generate (once) an ERA5-like Zarr v3 store into the cache folder.
2. Split it in time (``es.split``): train on the first period, validate on a
   later one, hold out the last, with a one-day gap between them; statistics
   for normalization from the train split only.
3. Stream chunk-shuffled windows of two consecutive 6-hourly steps of every
   variable, stacked into channels (geopotential levels become channels), and
   train a small CNN to predict step t+1 from step t, for about a minute,
   with a progress bar showing samples/s, MB/s and the loss.
4. Validate on the later period: the loss next to the persistence baseline.
5. Predict the held-out period over the whole domain (overlapping windows,
   tapered) and write it to Zarr with :class:`~earthstream.PredictionWriter`;
   plot a whole-domain map read back from that store next to the truth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._units import format_bytes


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder for generated data: ``path``, ``$EARTHSTREAM_CACHE`` or the user cache."""
    if path is None:
        path = os.environ.get("EARTHSTREAM_CACHE")
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "earthstream")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def demo_store(folder: Path, small: bool) -> Path:
    """The demo's ERA5-like store in ``folder``, written once (``small``: a quick check)."""
    from ..datasets import era5_like

    sizes: dict[str, Any] = {"n_times": 96, "n_lat": 48, "n_lon": 96} if small else {}
    name = "era5-like-small.zarr" if small else "era5-like.zarr"
    return era5_like(folder / name, progress=True, **sizes)


@dataclass
class TrainLog:
    """What :func:`train_for` did: samples, bytes delivered, epochs, time and losses."""

    samples: int = 0
    delivered: int = 0
    epochs: int = 0
    elapsed: float = 0.0
    losses: list[float] = field(default_factory=list)
    persistence: list[float] = field(default_factory=list)

    def first_last(self) -> tuple[int, float, float]:
        """``(k, mean loss of the first k batches, of the last k)``."""
        k = max(1, min(20, len(self.losses) // 3))  # the first and last thirds on short runs
        return k, float(np.mean(self.losses[:k])), float(np.mean(self.losses[-k:]))


def train_for(
    dataset: Any, seconds: float, step: Callable[[Any], tuple[int, int, float, float]]
) -> tuple[TrainLog, Any]:
    """Train epoch after epoch for ``seconds``, with a progress bar.

    ``step(batch)`` runs one optimizer step and returns ``(samples, bytes
    delivered, loss, persistence loss)``.  Returns the log and the last batch.
    """
    from tqdm.auto import tqdm

    log = TrainLog()
    start = time.perf_counter()
    bar = tqdm(total=None, unit="batch", desc="training", dynamic_ncols=True, mininterval=0.5)
    batch = None
    while True:
        dataset.set_epoch(log.epochs)
        for batch in dataset:
            samples, delivered, loss, persistence = step(batch)
            log.samples += samples
            log.delivered += delivered
            log.losses.append(loss)
            log.persistence.append(persistence)
            log.elapsed = time.perf_counter() - start
            bar.update(1)
            postfix = {"epoch": log.epochs, "samples_s": f"{log.samples / log.elapsed:,.0f}"}
            if log.delivered:
                postfix["MB_s"] = f"{log.delivered / log.elapsed / 1e6:,.1f}"
            bar.set_postfix(**postfix, loss=f"{np.mean(log.losses[-20:]):.4f}")
            if log.elapsed >= seconds:
                break
        log.epochs += 1
        if log.elapsed >= seconds:
            break
    bar.close()
    log.elapsed = time.perf_counter() - start
    return log, batch


def _model(channels: int) -> Any:
    import torch
    from torch import nn

    class NextStep(nn.Module):
        """Predicts the change over one step from the current state (a residual CNN)."""

        def __init__(self) -> None:
            super().__init__()
            width = 32
            self.net = nn.Sequential(
                nn.Conv2d(channels, width, 5, padding=2),
                nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(width, channels, 3, padding=1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = x + self.net(x)
            return out

    return NextStep()


def _plot(
    path: Path, x: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str, lead: str = "6 h"
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), constrained_layout=True)
    lo, hi = float(min(x.min(), truth.min())), float(max(x.max(), truth.max()))
    panels = [
        (x, "input: t2m at t (K)", "coolwarm", (lo, hi)),
        (truth, f"truth: t2m at t + {lead} (K)", "coolwarm", (lo, hi)),
        (pred, f"prediction: t2m at t + {lead} (K)", "coolwarm", (lo, hi)),
    ]
    err = float(np.abs(truth - pred).max())
    panels.append((pred - truth, "prediction - truth (K)", "RdBu_r", (-err, err)))
    for ax, (img, label, cmap, (vmin, vmax)) in zip(axes, panels, strict=True):
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_map(
    path: Path, truth: np.ndarray, pred: np.ndarray, persistence: np.ndarray, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.0), constrained_layout=True)
    lo, hi = float(np.nanmin(truth)), float(np.nanmax(truth))
    err = float(np.nanmax(np.abs(persistence - truth)))
    panels = [
        (truth, "truth: t2m (K)", "coolwarm", (lo, hi)),
        (pred, "prediction from the Zarr store: t2m (K)", "coolwarm", (lo, hi)),
        (pred - truth, "prediction - truth (K)", "RdBu_r", (-err, err)),
        (persistence - truth, "persistence - truth (K)", "RdBu_r", (-err, err)),
    ]
    for ax, (img, label, cmap, (vmin, vmax)) in zip(axes, panels, strict=True):
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _periods(times: np.ndarray) -> dict[str, slice]:
    """Train on four weeks, validate on the next one, hold out the one after (on a short
    store: 60%, 20%, 20% of the days).  Adjacent ranges: the split's gap cuts the embargo."""
    days = [str(d) for d in np.unique(times.astype("datetime64[D]"))]  # partial dates: whole days
    n = len(days)
    a, b, c = (28, 35, 42) if n >= 42 else (int(n * 0.6), int(n * 0.8), n)
    return {
        "train": slice(days[0], days[a - 1]),
        "val": slice(days[a], days[b - 1]),
        "test": slice(days[b], days[c - 1]),
    }


def run_demo(
    *,
    seconds: float = 60.0,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    small: bool = False,
) -> int:
    """Run the demo; returns a process exit code."""
    import shutil

    import torch
    import xarray as xr

    from .. import PredictionWriter, Stream, open_zarr, split

    folder = _resolve(cache_dir)
    print(f"earthstream demo: data in {folder}")
    t0 = time.perf_counter()
    store = demo_store(folder, small)
    source = open_zarr(store)
    decoded = sum(v.nbytes for v in source.variables.values())
    print(f"store ready in {time.perf_counter() - t0:.1f} s: {store}")
    print(source)

    # 1. Splits in time, one day apart: no window (inputs or targets) crosses into another.
    window = 48 if not small else 24
    periods = _periods(np.asarray(source.coords["time"]))
    splits = split(
        source,
        {"time": 2, "lat": window, "lon": window, "level": None},
        {"time": 1},
        time=periods,
        gap="1D",
        stack=True,
        batch_size=batch_size,
        seed=seed,
        memory_limit="512MB",
        options={"val": {"shuffle": False}, "test": {"shuffle": False}},
    )
    print(splits)
    train = splits["train"]
    channels = list(train.channels)
    print(f"channels: {channels}; {format_bytes(decoded)} decoded in the store")

    # 2. Statistics for normalization from the train split only.
    t1 = time.perf_counter()
    stats = splits.compute_stats(scheduler="sync", progress=False, quantiles=())
    print(
        f"statistics of the train split ({stats.run['bytes'] / 1e6:,.0f} MB, "
        f"{stats.source['selection']}) in {time.perf_counter() - t1:.1f} s"
    )

    torch.manual_seed(seed)
    model = _model(len(channels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loader = train.to_torch(device="cpu", normalize=stats)

    def step(tensors: Any) -> tuple[int, int, float, float]:
        assert tensors.stacked is not None
        x, y = tensors.stacked[:, :, 0], tensors.stacked[:, :, 1]
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        delivered = tensors.stacked.numel() * tensors.stacked.element_size()
        return tensors.size, delivered, loss.item(), float(torch.nn.functional.mse_loss(x, y))

    log, _ = train_for(loader, seconds, step)
    elapsed = log.elapsed

    # 3. Validation on the later period, next to persistence (tomorrow = today).
    model.eval()
    val_loss = val_persistence = 0.0
    n_val = 0
    with torch.no_grad():
        for tensors in splits["val"].to_torch(device="cpu", normalize=stats):
            assert tensors.stacked is not None
            x, y = tensors.stacked[:, :, 0], tensors.stacked[:, :, 1]
            k = tensors.size
            val_loss += k * float(torch.nn.functional.mse_loss(model(x), y))
            val_persistence += k * float(torch.nn.functional.mse_loss(x, y))
            n_val += k
    val_loss /= max(1, n_val)
    val_persistence /= max(1, n_val)

    # 4. The held-out period over the whole domain, written back to Zarr.
    held_out = splits["test"].coords["time"]
    domain = Stream(
        source,
        {"time": 2, "lat": window, "lon": window, "level": None},
        {"time": 1, "lat": window // 2, "lon": window // 2},  # overlapping by half
        sel={"time": slice(held_out[0], held_out[-1])},  # the test split's steps
        edges="pad",
        stack=True,
        shuffle=False,
        batch_size=batch_size,
        memory_limit="512MB",
    )
    target = folder / "demo-predictions.zarr"
    shutil.rmtree(target, ignore_errors=True)
    c = channels.index("t2m")
    t2m = stats["t2m"]
    mean_t, std_t = float(t2m.mean), float(t2m.std)
    t2 = time.perf_counter()
    writer = PredictionWriter(
        target,
        like=domain,
        variables={"t2m": {"units": "K", "long_name": "2 m temperature, predicted 6 h ahead"}},
        dims=("time", "lat", "lon"),
        at={"time": 1},  # the prediction from steps (t, t+1) belongs to t+1
        blend="taper",
        chunks={"time": 8, "lat": source.variables["t2m"].shape[1]},
        attrs={"title": "earthstream demo: next-step CNN on the held-out period"},
    )
    with torch.no_grad():
        for tensors in writer.stream.to_torch(device="cpu", normalize=stats):
            assert tensors.stacked is not None
            x = torch.nan_to_num(tensors.stacked[:, :, 0])  # padding past an edge: the mean
            out = model(x)[:, c] * std_t + mean_t
            writer.write(tensors, out)
    report = writer.close()
    print(
        f"predictions for {np.datetime_as_string(held_out[0], unit='h')} .. "
        f"{np.datetime_as_string(held_out[-1], unit='h')}: {report.summary()} "
        f"({time.perf_counter() - t2:.1f} s) -> {target}"
    )

    # 5. A whole-domain map read back from the store, next to the truth.
    pred = xr.open_zarr(target)["t2m"]
    truth = xr.open_zarr(store)["t2m"].sel(time=pred["time"])
    valid = pred["time"][1:]  # the first step has no prediction (no step before it)
    err = (pred.sel(time=valid) - truth.sel(time=valid)).values
    pers = (truth.shift(time=1).sel(time=valid) - truth.sel(time=valid)).values
    rmse, rmse_p = float(np.sqrt(np.nanmean(err**2))), float(np.sqrt(np.nanmean(pers**2)))
    when = valid[len(valid) // 2]
    png = folder / "demo-prediction.png"
    _plot_map(
        png,
        truth.sel(time=when).values,
        pred.sel(time=when).values,
        truth.shift(time=1).sel(time=when).values,
        f"{np.datetime_as_string(when.values, unit='h')}: whole domain from {target.name} "
        f"(RMSE {rmse:.2f} K over the held-out period; persistence {rmse_p:.2f} K; "
        f"after {elapsed:.0f} s of training)",
    )

    k, first, last = log.first_last()
    print(
        f"trained {log.samples:,} samples in {elapsed:.1f} s over {log.epochs} epoch(s): "
        f"{log.samples / elapsed:,.0f} samples/s, {log.delivered / elapsed / 1e6:,.1f} MB/s "
        "delivered"
    )
    print(
        f"loss (normalized MSE): first {k} batches {first:.4f} -> last {k} batches {last:.4f} "
        f"(persistence baseline {float(np.mean(log.persistence)):.4f})"
    )
    print(
        f"validation ({n_val:,} windows of {periods['val'].start} .. {periods['val'].stop}): "
        f"loss {val_loss:.4f}, persistence baseline {val_persistence:.4f}"
    )
    print(f"held-out t2m RMSE: model {rmse:.3f} K, persistence {rmse_p:.3f} K")
    train_report = train.report
    if train_report is not None:
        print(train_report.summary())
    print(f"figure: {png}")
    if not last < first:
        print("warning: the loss did not fall; train longer with --seconds")
        return 1
    return 0


def _resolve(path: str | os.PathLike[str] | None) -> Path:
    return cache_dir(path)
