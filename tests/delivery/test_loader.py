"""Where batches are built (the engine's allocator) and ``ds.loader()`` with persistent
DataLoader workers: epochs, set_epoch and resume reach the workers, batches built in
shared memory cross to the main process without a copy."""

from __future__ import annotations

import gc
import weakref
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import earthstream as es
from earthstream.delivery._memory import RECEIVER, PinnedMemory, SharedBatch, SharedMemory
from earthstream.engine import HostMemory
from earthstream.errors import ConfigError

from ..conftest import assert_batch_matches

WINDOW = {"lat": 8, "lon": 8}


def _stream(path: Path, **kwargs: Any) -> es.Stream:
    kwargs.setdefault("variables", ["t2m", "u10"])
    kwargs.setdefault("batch_size", 6)
    kwargs.setdefault("shuffle", "full")
    kwargs.setdefault("seed", 5)
    kwargs.setdefault("num_threads", 2)
    return es.Stream(path, WINDOW, **kwargs)


class Recorded(HostMemory):
    """A placed host memory that records what the engine asks of it (the test's view
    of the allocator: which arrays it handed out)."""

    name = "recorded"
    placed = True
    min_pooled = 0

    def __init__(self) -> None:
        self.buffers: list[weakref.ref[np.ndarray]] = []  # weak: the pool counts references
        self.slabs: list[tuple[int, ...]] = []

    def raw(self, nbytes: int) -> np.ndarray:
        raw = super().raw(nbytes)
        self.buffers.append(weakref.ref(raw))
        return raw

    def slab(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        self.slabs.append(shape)
        return super().slab(shape, dtype)

    def owns(self, array: np.ndarray) -> bool:
        return any(array.base is raw() for raw in self.buffers)


def test_one_allocator_places_slots_and_every_batch_array(era5_v3: Path, open_xr) -> None:
    """The memory a stream is given receives every slot slab and every batch array (a
    placed memory: gathers are written into its buffers); the values are xarray's."""
    memory = Recorded()
    stream = _stream(era5_v3)
    stream._use_memory(memory)
    reference = open_xr(era5_v3)
    n = 0
    for batch in stream:
        for name, data in batch.items():
            assert memory.owns(data), name
        assert_batch_matches(batch, reference, WINDOW)
        n += batch.size
    assert n == stream.n_windows
    assert memory.slabs, "slots come from the memory too"
    # batch buffers are reused once the batch is gone: far fewer than the batches
    assert len(memory.buffers) < 2 * len(stream)


def test_batches_built_in_shared_memory_cross_without_a_copy(era5_v3: Path, open_xr) -> None:
    """A worker's SharedMemory: the engine builds each batch in a shared buffer; the
    message carries only places (and the buffer once); the receiving side's arrays lie
    over the same shared memory; the buffer is reused once the receiver lets go."""
    memory = SharedMemory()
    stream = _stream(era5_v3, shuffle=False)
    stream._use_memory(memory)
    reference = open_xr(era5_v3)
    it = iter(stream)
    batch = next(it)
    for data in batch.data.values():
        assert memory.buffer_of(data) is not None  # built in shared memory, not copied
    message = memory.send(batch)
    assert set(message.places) == {"t2m", "u10"} and not set(message.values) & {"t2m", "u10"}
    owner, buf = memory.buffer_of(batch["t2m"])  # type: ignore[misc]
    assert not memory.released(owner)  # held until the receiver lets go
    payload = bytes(ForkingPickler.dumps(message))  # as the DataLoader sends it
    for name in ("t2m", "u10"):  # the pixels are not in the message
        assert batch[name].tobytes() not in payload
    received: SharedBatch = ForkingPickler.loads(payload)
    opened = received.open()
    assert_batch_matches(opened, reference, WINDOW)
    np.testing.assert_array_equal(opened["u10"], batch["u10"])
    # a second batch reuses the buffer's mapping: no handle is sent again
    del received
    second = memory.send(next(it))
    assert all(b != buf.id for b in second.handles) or not second.handles
    del opened
    gc.collect()
    assert memory.released(owner)  # the receiver let go: the worker may reuse it
    RECEIVER.forget(memory.token)


def test_dataloader_batch_size_is_refused_with_the_fix(era5_v3: Path) -> None:
    ds = _stream(era5_v3).to_torch()
    with pytest.raises(ConfigError, match=r"batch_size=None"):
        next(iter(DataLoader(ds, batch_size=4)))
    with pytest.raises(ConfigError, match=r"es\.Stream\(\.\.\., batch_size=k\)"):
        ds.loader(num_workers=0, batch_size=4)


def _ids(batches) -> list[int]:
    return [i for b in batches for i in b.window_ids.tolist()]


def _pids(loader) -> list[int]:
    return [w.pid for w in loader.loader._iterator._workers]  # torch's worker processes


def test_persistent_workers_follow_the_main_process(era5_v3: Path) -> None:
    """ds.loader(num_workers=2, persistent_workers=True): the same two processes serve
    every epoch; each iteration follows the next epoch (finished or abandoned);
    set_epoch and load_state_dict reach them; every epoch is covered exactly once and
    equals what fresh (non-persistent) workers deliver for that epoch."""
    ds = _stream(era5_v3).to_torch()
    n = ds.stream.n_windows

    def fresh_workers(epoch: int) -> list[int]:
        other = _stream(era5_v3).to_torch()
        other.set_epoch(epoch)
        return _ids(other.loader(num_workers=2))

    fresh = {epoch: fresh_workers(epoch) for epoch in (0, 1, 3, 4)}
    gc.collect()
    loader = ds.loader(num_workers=2, persistent_workers=True)
    mapped = RECEIVER.mapped
    first = _ids(loader)
    pids = _pids(loader)
    assert sorted(first) == list(range(n)) and first == fresh[0]
    assert _ids(loader) == fresh[1]  # the next epoch by itself
    it = iter(loader)
    next(it)
    next(it)
    del it  # epoch 2 abandoned
    assert ds.stream.next_epoch == 3
    third = [(b.epoch, i) for b in loader for i in b.window_ids.tolist()]
    assert {e for e, _ in third} == {3} and [i for _, i in third] == fresh[3]
    ds.set_epoch(1)
    assert _ids(loader) == fresh[1]  # set_epoch reached the persistent workers
    # resume mid-epoch through the same persistent workers
    ds.set_epoch(4)
    it = iter(loader)
    head = _ids(next(it) for _ in range(3))
    state = loader.state_dict()
    del it
    loader.load_state_dict(state)
    tail = [(b.epoch, b.window_ids.tolist()) for b in loader]
    assert head + [i for _, ids in tail for i in ids] == fresh[4]
    assert {e for e, _ in tail} == {4}
    assert _pids(loader) == pids  # the same processes throughout
    # shared buffers are reused across batches and epochs, not one per batch
    delivered = 2 * 6 * len(ds)  # arrays sent in shared buffers
    assert RECEIVER.mapped - mapped < delivered / 4
    del loader
    gc.collect()


def test_persistent_workers_values_and_spawn(era5_v3: Path, open_xr) -> None:
    """Spawned persistent workers: values equal xarray's, two epochs, each exactly once."""
    ds = _stream(era5_v3, variables=["t2m"], batch_size=8).to_torch()
    loader = ds.loader(num_workers=2, persistent_workers=True, multiprocessing_context="spawn")
    values = open_xr(era5_v3)["t2m"].values
    epochs = []
    for _ in range(2):
        ids = []
        for b in loader:
            ids += b.window_ids.tolist()
            t, y, x = (b.starts[d].numpy() for d in ("time", "lat", "lon"))
            for k in range(b.size):
                ref = values[t[k], y[k] : y[k] + 8, x[k] : x[k] + 8]
                np.testing.assert_array_equal(b["t2m"][k].numpy(), ref)
        assert sorted(ids) == list(range(ds.stream.n_windows))
        epochs.append(ids)
    assert epochs[0] != epochs[1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_built_in_pinned_memory(era5_v3: Path) -> None:  # pragma: no cover - no GPU
    """For CUDA the engine builds each batch in page-locked memory: no pin_memory() copy."""
    stream = _stream(era5_v3)
    stream._use_memory(PinnedMemory())
    batch = next(iter(stream))
    tb = es.delivery.TorchBatch.from_batch(batch)
    assert tb["t2m"].is_pinned() and tb.pin_memory()["t2m"].data_ptr() == tb["t2m"].data_ptr()
    ds = _stream(era5_v3).to_torch(device="cuda")
    moved = next(iter(ds))
    assert moved["t2m"].is_cuda
