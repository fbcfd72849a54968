"""Domain inference with write-back under ``torchrun`` (for test_torchrun_writeback.py).

Every rank builds the same inference stream and :class:`~earthstream.PredictionWriter`
on one target store, runs a DDP-wrapped identity model (a 1x1 convolution of weight
1) over its batches through a DataLoader with one worker, all-reduces a counter each
step (a rank with fewer batches would hang), and writes its chunks.  Run without
torchrun it is one process.  ``--stop k`` leaves after ``k`` batches per rank (a
pre-empted job); running it again completes the store.
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import earthstream as es


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--stop", type=int, default=None)
    args = parser.parse_args()
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    try:
        like = es.Stream(
            args.store,
            {"lat": 8, "lon": 8},
            {"lat": 6, "lon": 5},
            variables=["t2m", "u10"],
            edges="pad",
            stack=True,
            batch_size=5,
            num_threads=1,
            memory_limit="64MB",
        )
        writer = es.PredictionWriter(
            args.target,
            like=like,
            variables={"t2m": {"units": "K"}, "u10": {"units": "m s-1"}},
            blend="taper",
            chunks={"time": 2, "lat": 6, "lon": 12},
            write_threads=2,
        )
        model: torch.nn.Module = torch.nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        if distributed:
            model = DistributedDataParallel(model)
        loader = writer.stream.to_torch().loader(num_workers=1)
        steps = 0
        with torch.no_grad():
            for batch in itertools.islice(loader, args.stop):
                writer.write(batch, model(batch.stacked))
                steps += 1
                if distributed:
                    count = torch.ones(1)
                    dist.all_reduce(count)  # every rank takes part in every step
        report = writer.close()
        rank = dist.get_rank() if distributed else 0
        out = {
            "rank": rank,
            "steps": steps,
            "len": len(writer.stream),
            "written": report.chunks_written,
            "skipped": report.chunks_skipped,
            "owned": report.chunks_owned,
            "total": report.chunks_total,
            "windows": report.windows,
        }
        args.report.with_name(f"{args.report.name}-rank{rank}.json").write_text(json.dumps(out))
        if distributed:
            dist.barrier()
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
