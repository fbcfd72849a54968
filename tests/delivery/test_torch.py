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


def _corrupt_store(path: Path) -> Path:
    """16 steps of one (8, 8) chunk each, written by zarr-python; steps 1, 3 (the first
    half of the epoch) and 9, 11 (the second) are garbage, step 6 is not stored."""
    import zarr

    array = zarr.create_array(
        path, name="x", shape=(16, 8, 8), chunks=(1, 8, 8), dtype="f4", zarr_format=3,
        dimension_names=["t", "y", "x"],
    )  # fmt: skip
    array[:] = np.arange(16 * 64, dtype="f4").reshape(16, 8, 8)
    for t in (1, 3, 9, 11):
        (path / f"x/c/{t}/0/0").write_bytes(b"not a zstd frame")
    (path / "x/c/6/0/0").unlink()
    return path


def _skipping(path: Path, max_corrupt: int) -> es.Stream:
    return es.Stream(
        path, {"y": 8, "x": 8}, batch_size=2, shuffle=False, corrupt="skip",
        max_corrupt=max_corrupt, num_threads=1,
    )  # fmt: skip


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loader_report_is_the_sum_of_its_workers(tmp_path: Path, context: str) -> None:
    """The main process's report after ds.loader(num_workers=2) equals the sum of the two
    workers' reports, each computed on its own in this process (iter_worker)."""
    path = _corrupt_store(tmp_path / "c.zarr")
    alone = []
    for worker in range(2):
        stream = _skipping(path, 4)
        list(stream.iter_worker(worker, 2))
        alone.append(stream.report)
    stream = _skipping(path, 4)
    assert stream.report is None
    ds = stream.to_torch()
    delivered = [i for b in ds.loader(num_workers=2, multiprocessing_context=context)
                 for i in b.window_ids.tolist()]  # fmt: skip
    report = stream.report
    assert report is not None and report.finished
    for name in (
        "batches", "samples", "chunks_decoded", "chunks_missing", "chunk_uses",
        "bytes_decoded", "bytes_delivered", "requests", "retries", "bytes_read",
        "samples_dropped",
    ):  # fmt: skip
        assert getattr(report, name) == sum(getattr(r, name) for r in alone), name
    assert report.decodes == alone[0].decodes + alone[1].decodes
    assert sorted(report.corrupt_chunks) == sorted(
        alone[0].corrupt_chunks + alone[1].corrupt_chunks
    )
    # and the numbers are the store's: 4 corrupt chunks and their samples dropped, 1 missing
    assert sorted(c.rsplit("/x/c/", 1)[1] for c in report.corrupt_chunks) == [
        "1/0/0", "11/0/0", "3/0/0", "9/0/0",
    ]  # fmt: skip
    assert report.samples == len(delivered) == 12 and report.samples_dropped == 4
    assert report.chunks_missing == 1 and report.chunks_decoded == 11
    assert sorted(delivered) == [t for t in range(16) if t not in (1, 3, 9, 11)]


def test_max_corrupt_holds_across_the_loaders_workers(tmp_path: Path) -> None:
    """4 corrupt chunks, 2 in each worker's half: max_corrupt=3 stops ds.loader(), whose
    workers share one count; a plain DataLoader counts per worker (documented)."""
    path = _corrupt_store(tmp_path / "c.zarr")
    loader = _skipping(path, 3).to_torch().loader(num_workers=2)
    with pytest.raises(es.errors.CorruptChunksError, match="max_corrupt=3") as info:
        list(loader)
    assert "DataLoader workers" in str(info.value)
    assert sum(b.size for b in _skipping(path, 4).to_torch().loader(num_workers=2)) == 12
    plain = torch.utils.data.DataLoader(_skipping(path, 3).to_torch(), None, num_workers=2)
    assert sum(b.size for b in plain) == 12  # per worker: 2 <= 3 each
