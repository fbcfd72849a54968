"""``earthstream demo --multimodal``: weather inputs + static fields -> a forecast target.

1. Generate (once) the ERA5-like store of the demo and static fields (land-sea
   mask, orography) on its grid.
2. Stream multi-modal samples: surface variables at t - 6 h and t, geopotential
   on 3 levels at the same steps, the static fields, and time/position
   encodings; the target is 2 m temperature at t + 24 h (reference times
   whose steps are not all present are left out).
3. Compute each store's statistics on Dask (once; kept as JSON next to the
   data), normalize in the delivery stage, train a small CNN on the samples for
   about a minute and compare with persistence.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._demo import _plot, _resolve, demo_store, train_for


def _model(channels: int) -> Any:
    from torch import nn

    width = 32
    return nn.Sequential(
        nn.Conv2d(channels, width, 5, padding=2),
        nn.GELU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(width, 1, 3, padding=1),
    )


def _features(batch: Any) -> tuple[Any, Any, Any]:
    """The model's input ``(B, C, H, W)``, its target and the persistence forecast
    (the batch is already normalized, per variable and level, by the stream)."""
    import torch

    surface = batch["surface"]  # (B, 4, T=2, H, W)
    upper = batch["upper"]  # (B, 1, T=2, L=3, H, W)
    static = batch["static"]  # (B, 2, H, W)
    b, _, _, h, w = surface.shape
    parts = [
        surface.reshape(b, -1, h, w),
        upper.reshape(b, -1, h, w),
        static,
        batch["time_encoding"][:, :, None, None].expand(b, 4, h, w),
    ]
    x = torch.cat(parts, dim=1).float()
    last = surface[:, 0, -1]  # t2m at t
    target = batch["target"][:, 0, 0]  # t2m at t + 24 h
    return x, target.unsqueeze(1), last.unsqueeze(1)


def _stats_files(folder: Any, stores: list[tuple[Any, list[str] | None]]) -> list[Any]:
    """Each store's statistics (``earthstream stats``), computed once on a LocalCluster."""
    from ..stats import compute_stats

    paths = []
    for store, variables in stores:
        path = folder / f"{store.name}.stats.json"
        if not path.exists():
            print(f"statistics of {store.name} on a Dask LocalCluster (once):")
            stats = compute_stats(store, variables, n_workers=2)
            stats.to_json(path)
        paths.append(path)
    return paths


def run_multimodal_demo(
    *,
    seconds: float = 60.0,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    small: bool = False,
) -> int:
    """Run the multi-modal demo; returns a process exit code."""
    import torch

    from ..datasets import static_fields
    from ..multimodal import Modality, MultiStream

    folder = _resolve(cache_dir)
    print(f"earthstream demo --multimodal: data in {folder}")
    store = demo_store(folder, small)
    static = static_fields(folder / store.name.replace("era5-like", "static"), like=store)
    window = 24 if small else 48
    stream = MultiStream(
        {
            "surface": Modality(store, variables=["t2m", "u10", "v10", "msl"]),
            "upper": Modality(store, variables=["z"]),
            "static": static,
        },
        {"lat": window, "lon": window},
        forecast={"inputs": 2, "lead": "24h", "targets": ["t2m"]},
        encodings=("time", "position"),
        batch_size=batch_size,
        seed=seed,
        memory_limit="512MB",
    )
    print(stream)
    for rec in stream.infos.values():
        print(f"  {rec.name}: {rec.layout} {list(rec.shape)} channels={list(rec.channels)}")
    if stream.forecast is not None:
        print(
            f"  forecast: {len(stream.forecast.starts)} reference times, "
            f"{stream.forecast.dropped} left out for missing steps"
        )

    stats_files = _stats_files(folder, [(store, ["t2m", "u10", "v10", "msl", "z"]), (static, None)])
    print("normalizing with " + ", ".join(p.name for p in stats_files))
    from ..stats import Stats

    t2m = Stats.from_json(stats_files[0])["t2m"]
    mean, std = float(t2m.mean), float(t2m.std)

    torch.manual_seed(seed)
    dataset = stream.to_torch(device="cpu", normalize=stats_files)
    x0, _, _ = _features(next(iter(dataset)))
    model = _model(x0.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def step(batch: Any) -> tuple[int, int, float, float]:
        x, y, last = _features(batch)
        loss = torch.nn.functional.mse_loss(last + model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return x.shape[0], 0, loss.item(), float(torch.nn.functional.mse_loss(last, y))

    log, batch = train_for(dataset, seconds, step)
    elapsed = log.elapsed

    with torch.no_grad():
        x, y, last = _features(batch)
        pred = last + model(x)
    when = np.datetime_as_string(batch.coords["reference_time"][0].numpy().view("M8[ns]"), "h")
    png = folder / "demo-multimodal-prediction.png"
    _plot(
        png,
        (last[0, 0] * std + mean).numpy(),
        (y[0, 0] * std + mean).numpy(),
        (pred[0, 0] * std + mean).numpy(),
        f"reference time {when}; inputs: 4 surface variables x 2 steps, z on 3 levels, "
        "land-sea mask, orography, time encoding",
        lead="24 h",
    )
    k, first, final = log.first_last()
    print(
        f"trained {log.samples:,} multi-modal samples in {elapsed:.1f} s over {log.epochs} "
        f"epoch(s): {log.samples / elapsed:,.0f} samples/s"
    )
    print(
        f"loss (normalized MSE of t2m at t + 24 h): first {k} batches {first:.4f} -> last {k} "
        f"batches {final:.4f} (persistence {float(np.mean(log.persistence)):.4f})"
    )
    if stream.report is not None:
        print(stream.report.summary())
    print(f"figure: {png}")
    if not final < first:
        print("warning: the loss did not fall; train longer with --seconds")
        return 1
    return 0
