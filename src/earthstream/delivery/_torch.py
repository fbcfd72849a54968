"""PyTorch delivery: an IterableDataset of tensor batches, split across ranks and workers.

Batches leave the engine as NumPy arrays and become tensors without a copy
(``torch.from_numpy``).  The last stage, moving to the target device, runs in
the main process: pinned memory and ``non_blocking`` copies when the device is
CUDA, a no-op on CPU, same code either way.

Under ``torch.distributed`` each rank streams a contiguous run of the epoch's
batches, every rank the same number; under a ``DataLoader`` each worker
streams a contiguous run of its rank's (see :mod:`earthstream.sampling._plan`),
so the union over ranks and workers is exactly one epoch.  ``state_dict`` /
``load_state_dict`` resume mid-epoch: on the dataset (torchdata's
``StatefulDataLoader`` calls them in each worker) and on :meth:`TorchStream.loader`.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .._sharding import MAX_WORKERS
from .._validate import check_flag, check_whole
from ..engine import StreamLayout
from ..errors import ConfigError, ResumeError, WorkerError
from ._torch_batch import TorchBatch, batch_views, to_tensor

if TYPE_CHECKING:
    from .._sharding import ShardedStream
    from ..stats import Normalizer

__all__ = [
    "DeviceLoader",
    "SharedCount",
    "TorchBatch",
    "TorchStream",
    "WorkerReport",
    "to_tensor",
    "to_torch",
]


@dataclass(frozen=True)
class WorkerReport:
    """A DataLoader worker's last item under :meth:`TorchStream.loader`: what its pass
    did (taken by :class:`DeviceLoader`, never handed to the training loop)."""

    worker: int
    report: Any


class SharedCount:
    """A count shared by the DataLoader workers of one loader (``multiprocessing.Value``)."""

    def __init__(self, context: Any) -> None:
        self._value = context.Value("q", 0)

    def add(self, n: int) -> int:
        with self._value.get_lock():
            self._value.value += n
            return int(self._value.value)

    @property
    def value(self) -> int:
        return int(self._value.value)


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
    ranks yield ``len(ds)`` batches.  Call :meth:`set_epoch` before each epoch.
    :meth:`state_dict` / :meth:`load_state_dict` resume mid-epoch; they make the
    dataset ``Stateful`` for torchdata's ``StatefulDataLoader``.

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
        Page-lock batches before the copy; default: when ``device`` is CUDA.
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
        self._device_stage = False  # set while DeviceLoader starts workers: it calls to_device
        if self.normalizer is not None:
            self.normalizer.check_stream(stream)
        stream.placement()  # under torch.distributed: kept for the workers to copy

    def __len__(self) -> int:
        """Batches this rank yields per epoch, whatever the number of workers."""
        return len(self.stream)

    def set_epoch(self, epoch: int) -> None:
        """See :meth:`earthstream.Stream.set_epoch`; call it before each epoch."""
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
        if info is None:
            worker, num_workers, threads = 0, 1, self.stream.num_threads
        else:
            worker, num_workers = info.id, info.num_workers
            threads = max(1, self.stream.num_threads // info.num_workers)
        if info is not None and self.normalizer is not None and not self._device_stage:
            warnings.warn(
                "this TorchStream normalizes in its last stage (to_device), which a plain "
                "DataLoader with workers does not call: its batches arrive unnormalized. "
                "Iterate ds.loader(num_workers=...) instead, or call ds.to_device(batch) on "
                "each batch.",
                UserWarning,
                stacklevel=2,
            )
        for batch in self.stream.iter_worker(worker, num_workers, num_threads=threads):
            out = TorchBatch.from_batch(batch, self._views)
            if info is None:  # in the main process: the last stage runs here
                out = self.to_device(out)
            yield out
        if info is not None and self._device_stage:  # DeviceLoader sums the workers' reports
            yield WorkerReport(worker, self.stream.report)  # type: ignore[misc]

    def to_device(self, batch: TorchBatch) -> TorchBatch:
        """Move a batch to the target device (pinning first when asked), then normalize it
        there when the stream was given statistics."""
        if self.device.type != "cpu":
            if self.pin_memory and not batch.window_ids.is_pinned():
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=self.non_blocking)
        if self.normalizer is not None:
            batch = self.normalizer.apply_torch(batch)
        return batch

    def loader(self, num_workers: int = 0, **kwargs: Any) -> DeviceLoader:
        """A ``DataLoader`` over this dataset that delivers batches on ``device``.

        ``batch_size=None`` is set (the stream batches); other keyword arguments
        go to ``DataLoader`` (e.g. ``multiprocessing_context="spawn"``).  The
        loader has ``state_dict`` / ``load_state_dict`` for mid-epoch resume.
        """
        num_workers = check_whole(num_workers, "num_workers", maximum=MAX_WORKERS)
        if kwargs.get("persistent_workers"):
            raise ConfigError(
                "persistent_workers=True keeps each worker's copy of the dataset across "
                "epochs, so set_epoch() and load_state_dict() would not reach the workers; "
                "leave it False (workers restart each epoch)."
            )
        if kwargs.get("in_order") is False:
            raise ConfigError(
                "in_order=False lets batches arrive in any order, so the order of an epoch "
                "and its resume state would not be deterministic; leave in_order=True."
            )
        kwargs.setdefault("pin_memory", self.pin_memory and num_workers > 0)
        if num_workers > 0 and _remote(self.stream):
            # obstore's client does not survive fork(): remote streams spawn workers.
            kwargs.setdefault("multiprocessing_context", "spawn")
        loader = DataLoader(self, batch_size=None, num_workers=num_workers, **kwargs)
        return DeviceLoader(loader, self)


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


def _dead_workers(iterator: Any, exc: BaseException) -> str:
    """Which worker processes of a DataLoader iterator died, as a phrase ('' if none).

    A worker killed while it sends a batch shows first as a broken connection
    (``ConnectionResetError``, ``EOFError``) and only later as torch's own
    ``RuntimeError``; either way the dead process says what happened.
    """
    workers = list(getattr(iterator, "_workers", ()))  # torch's worker processes
    deadline = time.monotonic() + (2.0 if isinstance(exc, OSError | EOFError) else 0.0)
    while True:
        dead = [(i, w) for i, w in enumerate(workers) if w.exitcode not in (None, 0)]
        if dead or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    phrases = []
    for i, w in dead:
        code = int(w.exitcode)
        if code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited unexpectedly with status {code}"
        phrases.append(f"worker (pid {w.pid}, worker {i}) {how}")
    return "; ".join(phrases)


def _layout(stream: ShardedStream) -> StreamLayout | None:
    """The window layout of a :class:`~earthstream.Stream` (a ChipStream has none)."""
    layout = getattr(stream, "layout", None)
    return layout if isinstance(layout, StreamLayout) else None


def _remote(stream: Any) -> bool:
    location = getattr(getattr(stream, "source", None), "location", None)
    return location is not None and not getattr(location, "is_local", True)


class DeviceLoader:
    """Iterates a ``DataLoader`` of :class:`TorchBatch` and moves each to the device.

    Counts the batches it hands out, so :meth:`state_dict` knows where the
    epoch stands even when worker processes produce the batches.
    """

    def __init__(self, loader: DataLoader[TorchBatch], dataset: TorchStream) -> None:
        self.loader = loader
        self.dataset = dataset

    @property
    def report(self) -> Any:
        """The last epoch's report in this process: with workers, the sum of theirs
        (see ``Stream.report``); set when an epoch ends."""
        return self.dataset.stream.report

    def __len__(self) -> int:
        # len(dataset), not len(self.loader): the DataLoader would warn about the workers'
        # reports, which it counts as items beyond that length.
        return len(self.dataset)

    def state_dict(self) -> dict[str, Any]:
        """The stream state after the batches this loader handed out (see ``Stream.state_dict``)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the epoch ``state`` describes on the next iteration."""
        self.dataset.load_state_dict(state)

    def __iter__(self) -> Iterator[TorchBatch]:
        num_workers = self.loader.num_workers
        if num_workers == 0:  # the dataset iterates (and tracks itself) in this process
            yield from self.loader
            return
        stream = self.dataset.stream
        cursor = stream._hand_over(num_workers)
        self.dataset._device_stage = True  # the workers' copies know the last stage runs here
        context = self.loader.multiprocessing_context or torch.multiprocessing.get_context()
        # max_corrupt for all workers together; kept alive here while the workers run
        # (spawned ones open it after iter() returns).
        count = stream._corrupt_count = SharedCount(context)
        try:
            batches = iter(self.loader)  # starts the workers, each with a copy of the stream
        finally:
            stream._handed_over()
            self.dataset._device_stage = False
            stream._corrupt_count = None
        reports: list[Any] = []
        position = cursor.position
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as exc:  # a worker failed (torch re-raises its error here)
                # Drop the traceback (it holds the DataLoader iterator) and the iterator,
                # so the other workers stop now rather than at a later garbage collection;
                # torch's message carries the worker's own traceback.
                exc = exc.with_traceback(None)
                died = _dead_workers(batches, exc)
                del batches
                if died:
                    raise WorkerError(
                        f"DataLoader {died}, so the epoch cannot be completed. The batches "
                        "before were delivered in full. Check the worker's memory (the "
                        "kernel's OOM killer sends SIGKILL) or resume from the last "
                        "state_dict()."
                    ) from None
                raise exc
            if isinstance(batch, WorkerReport):
                if batch.report is not None:
                    reports.append(batch.report)
                continue
            position += 1
            stream._consumed(cursor, position)
            yield self.dataset.to_device(batch)
        if reports:
            stream._merge_reports(reports)
        del count
