"""``ds.loader()``: a ``DataLoader`` over a :class:`TorchStream` whose main process keeps the
epoch, and whose workers (forked, spawned or persistent) build batches in shared memory.

The main process decides where every iteration starts (the epoch, a loaded
state, the worker rotation: ``ShardedStream._hand_over``) and sends it to each
worker over a :class:`WorkerControl` before the workers begin the iteration:
so epochs advance by themselves, ``set_epoch`` and ``load_state_dict`` reach
persistent workers, and a fresh or persistent worker starts exactly where the
main process says.  Each worker's engine places its batches in shared memory
(:class:`~earthstream.delivery._memory.SharedMemory`): a batch crosses to the
main process as a small message and becomes tensors there without a copy; the
worker reuses a buffer once the main process has let go of the batch in it.
A persistent worker keeps its engine, so its decoded-chunk slots and shared
buffers stay warm from one epoch to the next.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from ..errors import WorkerError
from ..sampling import Cursor
from ._memory import RECEIVER, SharedBatch
from ._torch_batch import TorchBatch

if TYPE_CHECKING:
    from ._torch import TorchStream

__all__ = ["DeviceLoader", "SharedCount", "WorkerControl", "WorkerReport"]

#: Seconds a worker waits for the main process's word on where to start.
CONTROL_TIMEOUT = 120.0


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

    def reset(self) -> None:
        with self._value.get_lock():
            self._value.value = 0

    @property
    def value(self) -> int:
        return int(self._value.value)


class WorkerControl:
    """Where each worker's next iteration starts, sent by the main process.

    One queue per worker, made before the workers start (they inherit it, or
    receive it when spawned).  The main process puts one message per worker
    before every iteration; a worker takes the latest when its iteration
    begins (``iter(dataset)``: at start, and on every new epoch of a persistent
    worker).
    """

    def __init__(self, context: Any, num_workers: int) -> None:
        self._queues = [context.SimpleQueue() for _ in range(num_workers)]
        self.count = SharedCount(context)

    def send(self, cursor: Cursor) -> None:
        self.count.reset()
        for q in self._queues:
            q.put(cursor)

    def take(self, worker: int) -> Cursor:
        """In worker ``worker``: the start of its iteration (the latest message)."""
        q = self._queues[worker]
        deadline = time.monotonic() + CONTROL_TIMEOUT
        while q.empty():
            if time.monotonic() > deadline:  # pragma: no cover - the main process is gone
                raise WorkerError(
                    f"DataLoader worker {worker} got no word from the main process in "
                    f"{CONTROL_TIMEOUT:.0f} s on where its epoch starts."
                )
            time.sleep(0.001)
        cursor: Cursor = q.get()
        while not q.empty():  # an iteration the workers never began: take the latest
            cursor = q.get()
        return cursor


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


class DeviceLoader:
    """Iterates a ``DataLoader`` of :class:`TorchBatch` and moves each to the device.

    The main process keeps the epoch: each iteration after one has started
    follows the next epoch (or what ``set_epoch`` / ``load_state_dict`` chose),
    and every worker, forked, spawned or persistent, is told where to start.
    Counts the batches it hands out, so :meth:`state_dict` knows where the
    epoch stands even when worker processes produce the batches.
    """

    def __init__(self, loader: DataLoader[TorchBatch], dataset: TorchStream) -> None:
        self.loader = loader
        self.dataset = dataset
        self.persistent = bool(loader.persistent_workers)
        self._control: WorkerControl | None = None
        self._tokens: set[str] = set()
        if loader.num_workers > 0:
            context = loader.multiprocessing_context or torch.multiprocessing.get_context()
            self._control = WorkerControl(context, loader.num_workers)
        if dataset.pin_memory and dataset.device.type == "cuda":  # pragma: no cover - CUDA
            RECEIVER.pin = True

    @property
    def report(self) -> Any:
        """The last epoch's report in this process: with workers, the sum of theirs
        (see ``Stream.report``); set when an epoch ends."""
        return self.dataset.stream.report

    def __len__(self) -> int:
        # len(dataset), not len(self.loader): the DataLoader would warn about the workers'
        # reports, which it counts as items beyond that length.
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """See :meth:`earthstream.Stream.set_epoch` (not needed in a loop: epochs advance
        by themselves)."""
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The stream state after the batches this loader handed out (see ``Stream.state_dict``)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the epoch ``state`` describes on the next iteration."""
        self.dataset.load_state_dict(state)

    def __iter__(self) -> Iterator[TorchBatch]:
        if self._control is None:  # the dataset iterates (and tracks itself) in this process
            yield from self.loader
            return
        stream = self.dataset.stream
        cursor = stream._hand_over(self.loader.num_workers)
        control = self._control
        control.send(cursor)
        # the workers' copies (made when they start) know the last stage runs here, where
        # their word comes from, and count corrupt chunks together
        self.dataset._control = control
        stream._corrupt_count = control.count
        try:
            batches = iter(self.loader)  # starts (or resumes) the workers
        finally:
            self.dataset._control = None
            stream._corrupt_count = None
        reports: list[Any] = []
        position = cursor.position
        try:
            while True:
                try:
                    item = next(batches)
                except StopIteration:
                    break
                except Exception as exc:  # a worker failed (torch re-raises its error here)
                    # Drop the traceback (it holds the DataLoader iterator) and the
                    # iterator, so the other workers stop now rather than at a later
                    # garbage collection; torch's message carries the worker's traceback.
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
                if isinstance(item, WorkerReport):
                    if item.report is not None:
                        reports.append(item.report)
                    continue
                if isinstance(item, SharedBatch):
                    self._tokens.add(item.token)
                    batch = TorchBatch.from_batch(item.open(), self.dataset._views)
                    del item
                else:  # pragma: no cover - a worker that did not place its batch
                    batch = item
                position += 1
                stream._consumed(cursor, position)
                yield self.dataset.to_device(batch)
            if reports:
                stream._merge_reports(reports)
        finally:
            if not self.persistent:  # the workers are gone with the iterator
                self._forget()

    def close(self) -> None:
        """Stop this loader's worker processes now (persistent workers otherwise live as
        long as the loader); the next iteration starts new ones."""
        iterator = getattr(self.loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.loader._iterator = None
        self._forget()

    def _forget(self) -> None:
        for token in self._tokens:
            RECEIVER.forget(token)
        self._tokens.clear()

    def __del__(self) -> None:
        self._forget()

    def __repr__(self) -> str:
        workers = self.loader.num_workers
        kind = "persistent " if self.persistent else ""
        return (
            f"<DeviceLoader {len(self)} batches per epoch, {workers} {kind}workers, "
            f"next epoch {self.dataset.stream.next_epoch}, device {self.dataset.device}>"
        )
