"""``earthstream demo``: the main job on embedded data.

1. Generate (once) an ERA5-like Zarr v3 store into the cache folder.
2. Stream chunk-shuffled windows of two consecutive 6-hourly steps of every
   variable, stacked into channels (geopotential levels become channels).
3. Train a small CNN to predict step t+1 from step t, for about a minute,
   with a progress bar showing samples/s, MB/s and the loss.
4. Write a PNG comparing prediction and truth for one sample.
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


def run_demo(
    *,
    seconds: float = 60.0,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    small: bool = False,
) -> int:
    """Run the demo; returns a process exit code."""
    import torch

    from .. import Stream, open_zarr

    folder = _resolve(cache_dir)
    print(f"earthstream demo: data in {folder}")
    t0 = time.perf_counter()
    store = demo_store(folder, small)
    source = open_zarr(store)
    decoded = sum(v.nbytes for v in source.variables.values())
    print(f"store ready in {time.perf_counter() - t0:.1f} s: {store}")
    print(source)

    window = 48 if not small else 24
    stream = Stream(
        source,
        window={"time": 2, "lat": window, "lon": window, "level": None},
        stride={"time": 1},
        stack=True,
        batch_size=batch_size,
        shuffle="chunks",
        seed=seed,
        memory_limit="512MB",
    )
    print(stream)
    channels = list(stream.channels)
    print(f"channels: {channels}; {format_bytes(decoded)} decoded in the store")

    # Per-channel normalization from a few batches (issue #6 brings `earthstream stats`).
    probe = []
    for i, first_batches in enumerate(stream):
        assert first_batches.stacked is not None
        probe.append(first_batches.stacked[:, :, 0])
        if i == 7:
            break
    sample = np.concatenate(probe)
    mean = torch.from_numpy(sample.mean(axis=(0, 2, 3))).view(1, -1, 1, 1)
    std = torch.from_numpy(sample.std(axis=(0, 2, 3)) + 1e-6).view(1, -1, 1, 1)

    torch.manual_seed(seed)
    model = _model(len(channels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loader = stream.to_torch(device="cpu")

    def step(tensors: Any) -> tuple[int, int, float, float]:
        assert tensors.stacked is not None
        x = (tensors.stacked[:, :, 0] - mean) / std
        y = (tensors.stacked[:, :, 1] - mean) / std
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        delivered = tensors.stacked.numel() * tensors.stacked.element_size()
        return tensors.size, delivered, loss.item(), float(torch.nn.functional.mse_loss(x, y))

    log, _ = train_for(loader, seconds, step)
    elapsed = log.elapsed

    # One sample, in grid order, to compare prediction and truth.
    view = Stream(
        source,
        window={"time": 2, "lat": window, "lon": window, "level": None},
        stride={"time": 1},
        stack=True,
        batch_size=1,
        shuffle=False,
        memory_limit="256MB",
    )
    order = view.order.epoch(0)
    target_id = int(order.batch(len(view) // 2)[0])
    for batch in view.iter_shard(len(view) // 2, len(view)):
        if int(batch.window_ids[0]) == target_id:
            break
    assert batch.stacked is not None
    x_np = batch.stacked[:, :, 0]
    with torch.no_grad():
        pred = model((torch.from_numpy(x_np) - mean) / std) * std + mean
    c = channels.index("t2m")
    when = np.datetime_as_string(batch.coords["time"][0], unit="h")
    title = (
        f"{when}, window at lat {batch.coords['lat'][0]:.1f}, lon {batch.coords['lon'][0]:.1f} "
        f"(after {elapsed:.0f} s of training)"
    )
    png = folder / "demo-prediction.png"
    _plot(png, x_np[0, c], batch.stacked[0, c, 1], pred[0, c].numpy(), title)

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
    report = stream.report
    if report is not None:
        print(report.summary())
    print(f"figure: {png}")
    if not last < first:
        print("warning: the loss did not fall; train longer with --seconds")
        return 1
    return 0


def _resolve(path: str | os.PathLike[str] | None) -> Path:
    return cache_dir(path)
