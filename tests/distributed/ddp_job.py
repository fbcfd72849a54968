"""A tiny DDP training job on an earthstream stream, for tests/distributed/test_torchrun.py.

Run under ``torchrun --nproc-per-node 2`` (phases ``train`` and ``resume``) or as
a single process (phase ``single``).  Every rank uses a DataLoader with 2
worker processes, trains a linear model with DDP (gloo, CPU) and writes what it
consumed (epoch, global batch index, window ids, padding flags) to JSON files
in ``--out``, which the test checks.

Phases:

``train``
    Two full epochs; then, on a fresh dataset, ``--k`` batches of epoch 1 and
    the state each rank would checkpoint (``state-rank{r}.json``).
``single``
    One process: resume the 2-rank state (2 ranks -> 1); and ``--k`` batches
    of epoch 1 then its state (``state-single.json``).
``resume``
    Fresh processes: resume rank 0's state on 2 ranks (2 -> 2), and the
    single-process state on 2 ranks (1 -> 2).
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import signal
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import earthstream as es

WORKERS = 2


def make(store: str) -> es.delivery.TorchStream:
    stream = es.Stream(
        store,
        {"lat": 8, "lon": 8},
        variables=["t2m"],
        batch_size=9,  # 80 windows: 9 batches, so one of 2 ranks pads
        seed=5,
        shuffle="chunks",
        shuffle_buffer=3,
        num_threads=1,
        memory_limit="64MB",
    )
    return stream.to_torch()


def record(batch: Any) -> dict[str, Any]:
    return {
        "epoch": batch.epoch,
        "index": batch.index,
        "ids": batch.window_ids.tolist(),
        "padded": batch.padded.tolist(),
    }


class Trainer:
    """A linear model predicting a window's mean from its values, with DDP when distributed."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 1)
        self.model: torch.nn.Module = (
            DistributedDataParallel(model) if dist.is_initialized() else model
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)

    def step(self, batch: Any) -> None:
        x = batch["t2m"].reshape(batch.size, -1)
        x = (x - 280.0) / 20.0
        per_sample = (self.model(x).squeeze(1) - x.mean(1)) ** 2
        keep = ~batch.padded  # padded samples repeat others: weight them out
        loss = (per_sample * keep).sum() / keep.sum().clamp(min=1)
        self.opt.zero_grad()
        loss.backward()  # DDP all-reduces here: a rank with fewer batches would hang
        self.opt.step()

    def consume(self, loader: Any, limit: int | None = None) -> list[dict[str, Any]]:
        out = []
        for batch in itertools.islice(loader, limit):
            self.step(batch)
            out.append(record(batch))
        return out

    def params(self) -> list[float]:
        return [float(p.detach().sum()) for p in self.model.parameters()]


def train(store: str, out: Path, k: int) -> None:
    rank = dist.get_rank()
    trainer = Trainer()
    ds = make(store)
    loader = ds.loader(num_workers=WORKERS)
    epochs = {}
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        epochs[epoch] = trainer.consume(loader)
    # Same parameters on every rank: the DDP steps ran in lockstep.
    params = [None] * dist.get_world_size()
    dist.all_gather_object(params, trainer.params())

    # An interrupted run: k batches of epoch 1, then the checkpoint.
    ds2 = make(store)
    loader2 = ds2.loader(num_workers=WORKERS)
    ds2.set_epoch(1)
    head = trainer.consume(loader2, k)
    (out / f"state-rank{rank}.json").write_text(json.dumps(loader2.state_dict()))
    result = {
        "rank": rank,
        "world_size": ds.stream.world_size,
        "len": len(loader),
        "n_windows": ds.stream.n_windows,
        "epochs": epochs,
        "head": head,
        "params": params,
    }
    (out / f"train-rank{rank}.json").write_text(json.dumps(result))


def resume(store: str, out: Path) -> None:
    rank = dist.get_rank()
    trainer = Trainer()
    result: dict[str, Any] = {"rank": rank}
    for name, state_file in (("2to2", "state-rank0.json"), ("1to2", "state-single.json")):
        ds = make(store)
        loader = ds.loader(num_workers=WORKERS)
        loader.load_state_dict(json.loads((out / state_file).read_text()))
        ds.set_epoch(1)
        result[name] = trainer.consume(loader)
    (out / f"resume-rank{rank}.json").write_text(json.dumps(result))


def single(store: str, out: Path, k: int) -> None:
    trainer = Trainer()
    ds = make(store)
    loader = ds.loader(num_workers=WORKERS)
    loader.load_state_dict(json.loads((out / "state-rank0.json").read_text()))
    ds.set_epoch(1)
    tail = trainer.consume(loader)  # 2 ranks -> 1

    ds2 = make(store)
    loader2 = ds2.loader(num_workers=WORKERS)
    ds2.set_epoch(1)
    head = trainer.consume(loader2, k)
    (out / "state-single.json").write_text(json.dumps(loader2.state_dict()))
    (out / "single.json").write_text(json.dumps({"2to1": tail, "head": head}))


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks on hangs
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["train", "resume", "single"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    if args.phase == "single":
        single(args.store, args.out, args.k)
        return
    dist.init_process_group("gloo")
    try:
        if args.phase == "train":
            train(args.store, args.out, args.k)
        else:
            resume(args.store, args.out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
