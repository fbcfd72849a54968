"""PyTorch delivery: zero-copy tensors, DataLoader workers under fork and spawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import earthstream as es
from earthstream.delivery import TorchBatch, TorchStream


def _stream(path: Path, **kwargs) -> es.Stream:
    kwargs.setdefault("variables", ["t2m", "u10"])
    kwargs.setdefault("batch_size", 6)
    return es.Stream(path, {"lat": 8, "lon": 8}, {"time": 1}, **kwargs)


def test_tensors_share_memory_with_the_batch(era5_v3: Path) -> None:
    stream = _stream(era5_v3)
    batch = next(iter(stream))
    tb = TorchBatch.from_batch(batch)
    assert isinstance(tb["t2m"], torch.Tensor)
    assert tb["t2m"].data_ptr() == batch["t2m"].ctypes.data  # zero-copy
    assert tb.coords["time"].dtype == torch.int64
    np.testing.assert_array_equal(
        tb.coords["time"].numpy().view(tb.coords_dtype["time"]), batch.coords["time"]
    )
    assert tb.to("cpu")["t2m"].data_ptr() == tb["t2m"].data_ptr()  # cpu: a no-op


def test_stacked_views(era5_v3: Path) -> None:
    stream = es.Stream(
        era5_v3, {"lat": 8, "lon": 8, "level": None}, variables=["t2m", "z"], stack=True
    )
    ds = stream.to_torch()
    tb = next(iter(ds))
    assert tb.stacked is not None and tb.stacked.shape[1] == 4
    assert tb["z"].shape == (tb.size, 3, 8, 8)
    assert tb["z"].data_ptr() == tb.stacked[:, 1:].data_ptr()
    assert tb.keys() == ["t2m", "z"] and "z" in tb


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_cover_the_epoch_once(era5_v3: Path, context: str) -> None:
    stream = _stream(era5_v3, shuffle="chunks", seed=3)
    ds = stream.to_torch()
    loader = ds.loader(num_workers=2, multiprocessing_context=context)
    assert len(loader) == len(stream)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        ids = [i for b in loader for i in b.window_ids.tolist()]
        assert len(ids) == stream.n_windows
        assert sorted(ids) == list(range(stream.n_windows))
        if epoch == 0:
            first = ids
    assert ids != first  # set_epoch reached the workers


def test_dataloader_values_match_single_process(era5_v3: Path) -> None:
    stream = _stream(era5_v3, shuffle="full", seed=1)
    reference = {int(i): s for b in stream for i, s in zip(b.window_ids, b["u10"], strict=True)}
    for b in stream.to_torch().loader(num_workers=2):
        for i, sample in zip(b.window_ids.tolist(), b["u10"], strict=True):
            np.testing.assert_array_equal(sample.numpy(), reference[i])


def test_dataset_without_loader(era5_v3: Path) -> None:
    ds = _stream(era5_v3).to_torch(device="cpu")
    assert isinstance(ds, TorchStream) and isinstance(ds, torch.utils.data.IterableDataset)
    assert sum(b.size for b in ds) == ds.stream.n_windows


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_transfer(era5_v3: Path) -> None:  # pragma: no cover - no GPU here
    ds = _stream(era5_v3).to_torch(device="cuda")
    assert ds.pin_memory
    for batch in ds.loader(num_workers=2):
        assert batch["t2m"].is_cuda and batch.window_ids.is_cuda
    batch = next(iter(ds))
    assert batch["t2m"].device.type == "cuda"
