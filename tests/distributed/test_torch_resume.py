"""Resume through DataLoader worker processes: our loader, torchdata's StatefulDataLoader."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import earthstream as es
from earthstream.delivery import TorchBatch, TorchStream
from earthstream.errors import ConfigError, ResumeError

stateful_dataloader = pytest.importorskip("torchdata.stateful_dataloader")
StatefulDataLoader = stateful_dataloader.StatefulDataLoader
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


def make(path: Path, **kwargs) -> TorchStream:
    kwargs.setdefault("batch_size", 6)
    kwargs.setdefault("seed", 11)
    kwargs.setdefault("shuffle_buffer", 3)
    kwargs.setdefault("num_threads", 1)
    return es.Stream(path, {"lat": 8, "lon": 8}, variables=["t2m"], **kwargs).to_torch()


def indices(batches) -> list[int]:
    return [b.index for b in batches]


@pytest.fixture(scope="module")
def reference(era5_v3: Path) -> dict[int, list[TorchBatch]]:
    """The uninterrupted epoch 1, by number of workers."""
    out = {}
    for workers in (0, 2):
        ds = make(era5_v3)
        ds.set_epoch(1)
        out[workers] = list(ds.loader(num_workers=workers))
    return out


@pytest.mark.parametrize(("workers", "k"), [(0, 4), (2, 0), (2, 3), (2, 6)])
def test_loader_resume_is_exact(era5_v3: Path, reference, workers: int, k: int) -> None:
    ds = make(era5_v3)
    ds.set_epoch(1)
    loader = ds.loader(num_workers=workers)
    head = list(itertools.islice(loader, k))
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (1, k)
    assert ds.state_dict() == state

    fresh = make(era5_v3)
    resumed = fresh.loader(num_workers=workers)
    resumed.load_state_dict(state)
    fresh.set_epoch(1)  # the training loop's set_epoch keeps the loaded position
    tail = list(resumed)
    full = reference[workers]
    assert indices(head + tail) == indices(full)
    for a, b in zip(tail, full[k:], strict=True):
        assert torch.equal(a.window_ids, b.window_ids) and torch.equal(a["t2m"], b["t2m"])
    assert resumed.state_dict()["position"] == len(full)
    fresh.set_epoch(2)
    assert len(list(resumed)) == len(full)  # the next epoch is whole again


def test_loader_resume_with_other_workers_covers_the_rest(era5_v3: Path) -> None:
    ds = make(era5_v3)
    loader = ds.loader(num_workers=2)
    head = list(itertools.islice(loader, 5))
    other = make(era5_v3)
    other.load_state_dict(loader.state_dict())
    tail = list(other.loader(num_workers=1))
    ids = [i for b in head + tail for i in b.window_ids.tolist()]
    assert sorted(ids) == list(range(ds.stream.n_windows))


@pytest.mark.parametrize(("workers", "every"), [(0, 1), (2, 1), (2, 3)])
def test_stateful_dataloader_resumes_exactly(era5_v3: Path, reference, workers, every) -> None:
    """torchdata's StatefulDataLoader saves each worker's dataset state and restores it."""
    full = reference[workers]
    ds = make(era5_v3)
    ds.set_epoch(1)
    loader = StatefulDataLoader(
        ds, batch_size=None, num_workers=workers, snapshot_every_n_steps=every
    )
    k = 5
    it = iter(loader)
    head = [next(it) for _ in range(k)]
    state = loader.state_dict()
    del it

    fresh = make(era5_v3)
    fresh.set_epoch(1)
    resumed = StatefulDataLoader(
        fresh, batch_size=None, num_workers=workers, snapshot_every_n_steps=every
    )
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert indices(head + tail) == indices(full)
    for a, b in zip(tail, full[k:], strict=True):
        assert torch.equal(a["t2m"], b["t2m"])

    # The loader's whole state, loaded into the dataset, continues on another layout.
    moved = make(era5_v3)
    moved.load_state_dict(state)
    assert moved.state_dict()["position"] == k
    rest = list(moved.loader(num_workers=1))
    ids = sorted(i for b in head + rest for i in b.window_ids.tolist())
    assert ids == list(range(ds.stream.n_windows))


def test_fingerprint_ignores_location_and_variable_order(era5_v3: Path, tmp_path: Path) -> None:
    copy = tmp_path / "moved.zarr"
    shutil.copytree(era5_v3, copy)
    a = es.Stream(era5_v3, {"lat": 8, "lon": 8}, variables=["t2m", "u10"])
    b = es.Stream(copy, {"lat": 8, "lon": 8}, variables=["u10", "t2m"])
    assert a.fingerprint == b.fingerprint
    b.load_state_dict(a.state_dict())
    c = es.Stream(era5_v3, {"lat": 8, "lon": 8}, variables=["t2m"])
    assert c.fingerprint != a.fingerprint


def test_torch_batches_flag_padding(era5_v3: Path) -> None:
    # 80 windows in batches of 9: 9 batches, so rank 0 of 2 repeats its last one.
    ds = make(era5_v3, batch_size=9, rank=0, world_size=2)
    batches = list(ds.loader(num_workers=2))
    assert len(batches) == len(ds) == 5
    assert [b.padded.any().item() for b in batches] == [False] * 4 + [True]
    assert batches[-1].padded.dtype == torch.bool and batches[-1].padded.all()
    assert batches[-1].index == batches[-2].index
    assert "padded=9" in repr(batches[-1])
    np.testing.assert_array_equal(batches[-1].window_ids, batches[-2].window_ids)


def test_loader_refuses_settings_that_break_resume(era5_v3: Path) -> None:
    ds = make(era5_v3)
    with pytest.raises(ConfigError, match="persistent_workers=True needs worker processes"):
        ds.loader(num_workers=0, persistent_workers=True)
    with pytest.raises(ConfigError, match=r"batch_size=8.*es.Stream\(\.\.\., batch_size=k\)"):
        ds.loader(num_workers=2, batch_size=8)
    with pytest.raises(ConfigError, match=r"shuffle=\.\.\."):
        ds.loader(num_workers=2, shuffle=True)
    with pytest.raises(ConfigError, match="in_order=False"):
        ds.loader(num_workers=2, in_order=False)
    with pytest.raises(ResumeError, match="holds no earthstream stream state"):
        ds.load_state_dict({"_num_yielded": 3, "dataset_state": None})
    with pytest.raises(ResumeError, match="not an earthstream stream state"):
        ds.load_state_dict({"format": "something else"})
