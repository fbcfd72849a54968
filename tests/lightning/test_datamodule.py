"""StreamDataModule under a real ``lightning.Trainer`` on CPU: epochs from the trainer,
mid-epoch checkpoints resumed with every window once, a 2-process DDP run (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import pytest

import earthstream as es
from earthstream.errors import ConfigError
from earthstream.lightning import StreamDataModule

from ._model import Recorder, trainer

JOB = Path(__file__).with_name("ddp_fit.py")
WINDOW = {"lat": 8, "lon": 8}


def _train(store: Path, **kwargs: Any) -> es.Stream:
    kwargs.setdefault("shuffle", "full")
    return es.Stream(store, WINDOW, variables="t2m", batch_size=8, seed=3, **kwargs)


def _val(store: Path) -> es.Stream:
    return es.Stream(
        store, WINDOW, variables="t2m", batch_size=8, shuffle=False, isel={"time": slice(0, 2)}
    )


def _reference(store: Path, epoch: int, workers: int = 0) -> list[int]:
    """The epoch's order from a plain stream (a function of seed and epoch; with DataLoader
    workers, the loader takes their batches in turn)."""
    stream = _train(store)
    stream.set_epoch(epoch)
    if workers:
        return [
            i for b in stream.to_torch().loader(num_workers=workers) for i in b.window_ids.tolist()
        ]
    return [i for b in stream for i in b.window_ids.tolist()]


def _epoch_ids(model: Recorder, epoch: int) -> list[int]:
    return [i for e, ids, _ in model.seen if e == epoch for i in ids]


def test_fit_two_epochs_follows_the_trainer(era5_v3: Path) -> None:
    train, val = _train(era5_v3), _val(era5_v3)
    dm = StreamDataModule(train, val)
    model = Recorder()
    trainer(max_epochs=2).fit(model, dm)
    for epoch in (0, 1):
        ids = _epoch_ids(model, epoch)
        assert sorted(ids) == list(range(train.n_windows))  # each window once
        assert ids == _reference(era5_v3, epoch)  # the trainer's epoch, not another
    assert _epoch_ids(model, 0) != _epoch_ids(model, 1)
    # validation ran on its own stream, whole, each time, and never moved training's epoch
    full_val = sorted(i for b in _val(era5_v3) for i in b.window_ids.tolist())
    for epoch in (0, 1):
        assert sorted(i for e, ids in model.validated if e == epoch for i in ids) == full_val
    assert train.epoch == 1


class Crash(Exception):
    pass


class CrashAfter(L.Callback):
    """Saves a checkpoint after batch ``k`` of epoch ``epoch`` (as ModelCheckpoint with
    every_n_train_steps does), then the job dies."""

    def __init__(self, path: Path, epoch: int, k: int) -> None:
        self.path, self.epoch, self.k = path, epoch, k

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        batch_idx = args[-1]
        if trainer.current_epoch == self.epoch and batch_idx == self.k:
            trainer.save_checkpoint(self.path)
            raise Crash


def test_interrupted_mid_epoch_resumes_every_window_once(era5_v3: Path, tmp_path: Path) -> None:
    """Workers (2, persistent, forked) and a crash in epoch 1 after 4 batches: the resumed
    run trains on exactly the rest of epoch 1, in order, then epoch 2."""
    ckpt = tmp_path / "mid.ckpt"
    first = Recorder()
    dm = StreamDataModule(_train(era5_v3), num_workers=2)
    with pytest.raises(Crash):
        trainer(max_epochs=3, callbacks=[CrashAfter(ckpt, epoch=1, k=3)]).fit(first, dm)
    dm.teardown("fit")
    assert len([s for s in first.seen if s[0] == 1]) == 4

    second = Recorder()
    dm = StreamDataModule(_train(era5_v3), num_workers=2)
    trainer(max_epochs=3).fit(second, dm, ckpt_path=ckpt)
    assert {e for e, _, _ in second.seen} == {1, 2}
    resumed = _epoch_ids(first, 1) + _epoch_ids(second, 1)
    assert sorted(resumed) == list(range(_train(era5_v3).n_windows))  # each window once
    assert resumed == _reference(era5_v3, 1, workers=2)  # in the uninterrupted order
    assert _epoch_ids(second, 2) == _reference(era5_v3, 2, workers=2)


def test_rank_comes_from_the_trainer(era5_v3: Path) -> None:
    dm = StreamDataModule(_train(era5_v3, rank=1, world_size=2))
    model = Recorder()
    with pytest.raises(ConfigError, match="runs it as rank 0 of 1"):
        trainer(max_epochs=1).fit(model, dm)
    with pytest.raises(ConfigError, match="persistent_workers=True\\) needs worker"):
        StreamDataModule(_train(era5_v3), persistent_workers=True)
    assert StreamDataModule(_train(era5_v3)).val_dataloader() == []  # Lightning skips it


@pytest.mark.slow
def test_ddp_two_processes_cover_each_epoch_once(era5_v3: Path, tmp_path: Path) -> None:
    """Lightning's own DDP launcher (strategy="ddp", 2 CPU processes, gloo)."""
    out = tmp_path / "seen"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [sys.executable, str(JOB), str(era5_v3), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    seen = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    assert sorted(s["rank"] for s in seen) == [0, 1]
    assert all(s["world_size"] == 2 for s in seen)
    n = _train(era5_v3).n_windows
    for epoch in (0, 1):
        counts = Counter(
            i
            for s in seen
            for e, ids, padded in s["seen"]
            if e == epoch
            for i, p in zip(ids, padded, strict=True)
            if not p
        )
        assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}
        steps = {len([x for x in s["seen"] if x[0] == epoch]) for s in seen}
        assert len(steps) == 1  # every rank the same number of steps
    orders = [
        [i for s in seen for e, ids, _ in s["seen"] if e == epoch for i in ids] for epoch in (0, 1)
    ]
    assert orders[0] != orders[1]
