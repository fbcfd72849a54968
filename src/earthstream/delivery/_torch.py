"""PyTorch delivery: an IterableDataset of tensor batches, split across ranks and workers.

Batches leave the engine as NumPy arrays and become tensors without a copy
(``torch.from_numpy``).  The last stage, moving to the target device, runs in
the main process: ``non_blocking`` copies when the device is CUDA, a no-op on
CPU, same code either way.  Where the engine builds batches is chosen here
(:mod:`earthstream.delivery._memory`): in page-locked memory for CUDA in one
process, in shared memory in DataLoader workers under :meth:`TorchStream.loader`,
so neither needs a copy before the device copy or to cross the process boundary.

Under ``torch.distributed`` each rank streams a contiguous run of the epoch's
batches, every rank the same number; under a ``DataLoader`` each worker
streams a contiguous run of its rank's (see :mod:`earthstream.sampling._plan`),
so the union over ranks and workers is exactly one epoch.  ``state_dict`` /
``load_state_dict`` resume mid-epoch: on the dataset (torchdata's
``StatefulDataLoader`` calls them in each worker) and on :meth:`TorchStream.loader`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .._batch import Batch
from .._sharding import MAX_WORKERS
from .._validate import check_flag, check_whole
from ..engine import StreamLayout
from ..errors import ConfigError, ResumeError
from ._loader import DeviceLoader, SharedCount, WorkerControl, WorkerReport
from ._memory import PinnedMemory, SharedBatch, SharedMemory
from ._torch_batch import TorchBatch, batch_views, to_tensor

if TYPE_CHECKING:
    from .._sharding import ShardedStream
    from ..stats import Normalizer

__all__ = [
    "DeviceLoader",
    "SharedBatch",
    "SharedCount",
    "TorchBatch",
    "TorchStream",
    "WorkerReport",
    "to_tensor",
    "to_torch",
]


def _loader_state(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The stream state inside a torchdata ``StatefulDataLoader`` state, or None.

    With workers, each worker's dataset state records the rank's position as
    of that worker's last consumed batch; the latest of them, plus the batches
    consumed since that snapshot, is the rank's position.
    """
    snapshot = state.get("_snapshot")
    if isinstance(snapshot, Mapping):  # worker processes
        found: list[Mapping[str, Any]] = []
        for worker in snapshot.get("_worker_snapshots", {}).values():
            ds = worker.get("dataset_state") if isinstance(worker, Mapping) else None
            if isinstance(ds, Mapping) and "position" in ds:
                found.append(ds)
        if not found:
            return None
        latest = dict(max(found, key=lambda d: int(d["position"])))
        latest.pop("worker", None)
        latest["position"] = int(latest["position"]) + int(state.get("_steps_since_snapshot", 0))
        return latest
    if "_num_yielded" in state:  # no worker processes
        ds = state.get("dataset_state")
        return ds if isinstance(ds, Mapping) else None
    return None


class TorchStream(IterableDataset[TorchBatch]):
    """A stream as a ``torch.utils.data.IterableDataset`` of :class:`TorchBatch`.

    Use it with ``DataLoader(ds, batch_size=None, num_workers=k)`` (the stream
    batches already), or with :meth:`loader`, which does that and moves batches
    to ``device`` in the main process.  Iterated directly (no workers), it moves
    them itself.

    Under ``torch.distributed`` (or with ``rank``/``world_size`` given to the
    :class:`~earthstream.Stream`) each rank gets its part of the epoch and all
    ranks yield ``len(ds)`` batches.  Each iteration after one has started
    follows the next epoch (:meth:`set_epoch` chooses one); :meth:`state_dict` /
    :meth:`load_state_dict` resume mid-epoch; they make the dataset ``Stateful``
    for torchdata's ``StatefulDataLoader``.  A plain ``DataLoader`` with workers
    copies the dataset into them, so its epochs advance only by :meth:`set_epoch`
    in the main process (persistent workers: by themselves in each worker, and
    ``set_epoch`` does not reach them): :meth:`loader` keeps the epoch in the main
    process for every kind of worker.

    Under :meth:`loader` the workers of a rank share one count of corrupt chunks
    (``corrupt="skip"``: ``max_corrupt`` holds for the epoch as a whole, per
    rank), and after the epoch ``stream.report`` in the main process is the sum
    of the workers' reports.  A plain ``DataLoader`` with workers does neither:
    each worker counts for itself and the main process has no report.

    Parameters
    ----------
    stream
        The :class:`earthstream.Stream` to deliver.
    device
        Target device, e.g. ``"cpu"`` or ``"cuda:0"``.
    non_blocking
        Asynchronous host-to-device copies (CUDA), overlapping the next batch.
    pin_memory
        Build batches in page-locked memory (the engine allocates them there, so
        there is no copy before the device copy); default: when ``device`` is CUDA.
    normalize
        Statistics to normalize with, ``(x - mean) / std`` per variable (and
        level or band), applied on ``device`` in the last stage (:meth:`to_device`):
        the path of a JSON file from ``earthstream stats``, a
        :class:`~earthstream.Stats`, or a :class:`~earthstream.Normalizer`.
        Checked against the stream's variables here, before any data is read
        (:class:`~earthstream.errors.StatsMismatchError`).  A plain ``DataLoader``
        with workers skips the last stage: use :meth:`loader`.

    Examples
    --------
    >>> import earthstream as es
    >>> path = es.datasets.era5_like(tmp_path / "t.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> ds = es.Stream(path, {"lat": 8, "lon": 8}, variables="t2m", batch_size=16).to_torch()
    >>> batch = next(iter(ds.loader(num_workers=0)))
    >>> batch["t2m"].shape, batch["t2m"].dtype
    (torch.Size([16, 8, 8]), torch.float32)
    """

    def __init__(
        self,
        stream: ShardedStream,
        device: str | torch.device = "cpu",
        *,
        non_blocking: bool = True,
        pin_memory: bool | None = None,
        normalize: Any = None,
    ) -> None:
        super().__init__()
        self.stream = stream
        self.device = _device(device)
        self.non_blocking = check_flag(non_blocking, "non_blocking")
        self.pin_memory = (
            self.device.type == "cuda"
            if pin_memory is None
            else check_flag(pin_memory, "pin_memory")
        )
        self._views = batch_views(_layout(stream))
        self.normalizer = _normalizer(normalize)
        #: Set while a DeviceLoader starts its workers: their copies take each
        #: iteration's start from it and leave the last stage (to_device) to it.
        self._control: WorkerControl | None = None
        self._shared: SharedMemory | None = None  # a worker's shared memory (its own)
        self._iterations = 0  # iterations begun in this process (plain DataLoader workers)
        if self.normalizer is not None:
            self.normalizer.check_stream(stream)
        stream.placement()  # under torch.distributed: kept for the workers to copy

    def __len__(self) -> int:
        """Batches this rank yields per epoch, whatever the number of workers."""
        return len(self.stream)

    @property
    def _device_stage(self) -> bool:
        """A DeviceLoader runs the last stage of this copy's batches (in its main process)."""
        return self._control is not None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shared"] = None  # each worker makes its own
        state["_iterations"] = 0
        return state

    def set_epoch(self, epoch: int) -> None:
        """See :meth:`earthstream.Stream.set_epoch`: not needed in a loop (each iteration
        after one has started follows the next epoch), it chooses the next one."""
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """See :meth:`earthstream.Stream.state_dict`.

        In the main process it follows iteration without worker processes and
        through :meth:`loader`; with a plain ``DataLoader`` and workers take the
        state from torchdata's ``StatefulDataLoader`` instead (which asks each
        worker).
        """
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`, from :meth:`DeviceLoader.state_dict`, or
        from a whole torchdata ``StatefulDataLoader`` state.

        Loading a ``StatefulDataLoader`` state here (rather than into the
        loader) lets the epoch continue on another world size or number of
        workers.
        """
        if isinstance(state, Mapping) and "format" not in state:
            inner = _loader_state(state)
            if inner is None:
                raise ResumeError(
                    "this StatefulDataLoader state holds no earthstream stream state; it was "
                    "not saved from a loader over a TorchStream."
                )
            state = inner
        self.stream.load_state_dict(state)

    def __iter__(self) -> Iterator[TorchBatch]:
        info = get_worker_info()
        if info is None:  # in this process: the last stage runs here
            pin = self.pin_memory and self.device.type == "cuda"
            if pin and not isinstance(self.stream.memory, PinnedMemory):  # pragma: no cover
                self.stream._use_memory(PinnedMemory())  # batches built in pinned memory
            batches = self.stream.iter_worker(0, 1, num_threads=self.stream.num_threads)
            return (self.to_device(TorchBatch.from_batch(b, self._views)) for b in batches)
        threads = max(1, self.stream.num_threads // info.num_workers)
        control = self._control
        if control is not None:  # under DeviceLoader: the main process says where to start
            self.stream._take_over(control.take(info.id))
            if self._shared is None:
                self._shared = SharedMemory()
            self.stream._use_memory(self._shared)
            return self._placed(info.id, info.num_workers, threads, self._shared)
        self._iterations += 1
        if self.normalizer is not None:
            warnings.warn(
                "this TorchStream normalizes in its last stage (to_device), which a plain "
                "DataLoader with workers does not call: its batches arrive unnormalized. "
                "Iterate ds.loader(num_workers=...) instead, or call ds.to_device(batch) on "
                "each batch.",
                UserWarning,
                stacklevel=2,
            )
        if self._iterations == 2:
            warnings.warn(
                "a plain DataLoader with persistent_workers=True keeps each worker's copy of "
                "the dataset: its epochs advance by themselves in every worker, but "
                "set_epoch() and load_state_dict() in the main process do not reach them. "
                "Use ds.loader(num_workers=..., persistent_workers=True), which sends each "
                "epoch's start to its workers.",
                UserWarning,
                stacklevel=2,
            )
        batches = self.stream.iter_worker(info.id, info.num_workers, num_threads=threads)
        return (TorchBatch.from_batch(b, self._views) for b in batches)

    def _placed(
        self, worker: int, num_workers: int, threads: int, memory: SharedMemory
    ) -> Iterator[TorchBatch]:
        """A DeviceLoader's worker: batches built in shared memory, sent as messages, then
        the worker's report (the main process sums them)."""
        batch: Batch
        for batch in self.stream.iter_worker(worker, num_workers, num_threads=threads):
            yield memory.send(batch)  # type: ignore[misc]
        yield WorkerReport(worker, self.stream.report)  # type: ignore[misc]

    def to_device(self, batch: TorchBatch) -> TorchBatch:
        """Move a batch to the target device (pinning first when asked), then normalize it
        there when the stream was given statistics."""
        if self.device.type != "cpu":
            if self.pin_memory:  # pins what is not yet (the batch's data already is)
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=self.non_blocking)
        if self.normalizer is not None:
            batch = self.normalizer.apply_torch(batch)
        return batch

    def loader(self, num_workers: int = 0, **kwargs: Any) -> DeviceLoader:
        """A ``DataLoader`` over this dataset that delivers batches on ``device``.

        ``batch_size=None`` is set (the stream batches); other keyword arguments
        go to ``DataLoader`` (e.g. ``multiprocessing_context="spawn"``,
        ``persistent_workers=True``).  The main process keeps the epoch: every
        iteration after one has started follows the next epoch, and each worker
        (forked, spawned or persistent) is told where to start, so
        :meth:`set_epoch` and :meth:`load_state_dict` reach persistent workers
        too.  Workers build batches in shared memory (no copy to cross to the
        main process) with ``num_threads // num_workers`` threads each.  The loader
        has ``state_dict`` / ``load_state_dict`` for mid-epoch resume.
        """
        num_workers = check_whole(num_workers, "num_workers", maximum=MAX_WORKERS)
        _check_loader_options(kwargs, num_workers)
        kwargs.pop("pin_memory", None)  # pinning is the engine's (see to_torch(pin_memory=))
        if num_workers > 0 and _remote(self.stream):
            # obstore's client does not survive fork(): remote streams spawn workers.
            kwargs.setdefault("multiprocessing_context", "spawn")
        loader = DataLoader(self, batch_size=None, num_workers=num_workers, **kwargs)
        return DeviceLoader(loader, self)


def _check_loader_options(kwargs: Mapping[str, Any], num_workers: int) -> None:
    """Refuse ``DataLoader`` options that do not apply to a stream, saying what to do."""
    if kwargs.get("batch_size") is not None:
        raise ConfigError(
            f"ds.loader(batch_size={kwargs['batch_size']!r}): the stream makes the batches "
            "(es.Stream(..., batch_size=k)); the loader passes them on as they are."
        )
    for name in ("shuffle", "sampler", "batch_sampler"):
        if kwargs.get(name) not in (None, False):
            raise ConfigError(
                f"ds.loader({name}=...): the stream orders its windows itself (es.Stream(..., "
                "shuffle='chunks'|'full'|False, seed=...)), a new order each epoch."
            )
    if kwargs.get("drop_last"):
        raise ConfigError(
            "ds.loader(drop_last=True): the stream drops a last, smaller batch itself "
            "(es.Stream(..., drop_last=True))."
        )
    if kwargs.get("collate_fn") is not None:
        raise ConfigError(
            "ds.loader(collate_fn=...): batches arrive assembled (TorchBatch); transform them "
            "in the training step, or iterate a plain DataLoader(ds, batch_size=None, "
            "collate_fn=...)."
        )
    if kwargs.get("in_order") is False:
        raise ConfigError(
            "in_order=False lets batches arrive in any order, so the order of an epoch "
            "and its resume state would not be deterministic; leave in_order=True."
        )
    if kwargs.get("persistent_workers") and num_workers == 0:
        raise ConfigError(
            "persistent_workers=True needs worker processes: pass num_workers >= 1 (without "
            "workers the stream's engine, in this process, keeps its slots anyway)."
        )


def to_torch(
    stream: ShardedStream,
    device: str | torch.device = "cpu",
    *,
    non_blocking: bool = True,
    pin_memory: bool | None = None,
    normalize: Any = None,
) -> TorchStream:
    """A stream as a ``torch.utils.data.IterableDataset`` yielding batches as tensors.

    ``stream.to_torch(...)`` forwards here.  ``normalize`` (a statistics JSON
    path, :class:`~earthstream.Stats` or :class:`~earthstream.Normalizer`)
    applies ``(x - mean) / std`` on the device in the last stage.  See
    :class:`TorchStream` for the other arguments.

    >>> import earthstream as es, numpy as np
    >>> src = es.ArraySource({"x": (("t", "y"), np.zeros((4, 8), "f4"))})
    >>> ds = to_torch(es.Stream(src, {"y": 8}, batch_size=2))
    >>> next(iter(ds))["x"].shape
    torch.Size([2, 8])
    """
    return TorchStream(
        stream,
        device=device,
        non_blocking=non_blocking,
        pin_memory=pin_memory,
        normalize=normalize,
    )


def _device(device: Any) -> torch.device:
    """``device`` as a ``torch.device``; a :class:`ConfigError` naming it otherwise."""
    if not isinstance(device, str | torch.device):
        raise ConfigError(
            f"device={device!r} is not a device; pass e.g. 'cpu', 'cuda', 'cuda:1' or a "
            "torch.device."
        )
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device={device!r} is not a device ({exc}); pass e.g. 'cpu', 'cuda' or 'cuda:1'."
        ) from None


def _normalizer(normalize: Any) -> Normalizer | None:
    if normalize is None:
        return None
    from ..stats import Normalizer, Stats

    if isinstance(normalize, Normalizer):
        return normalize
    parts = normalize if isinstance(normalize, list | tuple) else [normalize]
    if parts and all(isinstance(p, Stats | str | os.PathLike) for p in parts):
        return Normalizer(normalize)
    raise ConfigError(
        f"normalize={type(normalize).__name__}: pass the path of a statistics file "
        "(`earthstream stats URL`), a Stats, a list of them (one per store), a Normalizer, "
        "or None."
    )


def _layout(stream: ShardedStream) -> StreamLayout | None:
    """The window layout of a :class:`~earthstream.Stream` (a ChipStream has none)."""
    layout = getattr(stream, "layout", None)
    return layout if isinstance(layout, StreamLayout) else None


def _remote(stream: Any) -> bool:
    location = getattr(getattr(stream, "source", None), "location", None)
    return location is not None and not getattr(location, "is_local", True)
