"""Placements PyTorch brings for the engine's batches: pinned and shared memory.

:class:`PinnedMemory` (CUDA training in one process): batch arrays in
page-locked host memory, so the batch is built there once and goes to the GPU
with one asynchronous copy (no ``pin_memory()`` copy of every batch first).

:class:`SharedMemory` (DataLoader worker processes): batch arrays in shared
memory, built there once by the worker's engine.  A batch crosses to the main
process as a small :class:`SharedBatch` message: where its arrays lie in the
worker's buffers (offsets, shapes, strides), its small per-sample arrays by
value, and, the first time a buffer is used, the buffer itself (one file
descriptor, passed once by torch's own sharing).  The main process maps each
buffer once and makes tensors over it without a copy (:class:`Receiver`).
Buffers are reused: each carries a flag in shared memory that the worker sets
when it sends a batch in it and the main process clears when the last tensor
(or view) of that batch is gone; the worker's pool takes only buffers whose
flag is clear and that nothing in the worker refers to.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._batch import Batch
from ..engine import Memory

__all__ = ["PinnedMemory", "Receiver", "SharedBatch", "SharedMemory"]

#: Bytes after each shared buffer's data: byte 0 says a main process holds the buffer.
_FLAG = 64


def _view_owner(raw: torch.Tensor, nbytes: int) -> np.ndarray:
    """A NumPy uint8 array over the first ``nbytes`` of ``raw`` whose views name it as
    their ``base`` (so its reference count counts them)."""
    full = raw.numpy()
    owner: np.ndarray = np.frombuffer(full.data[:nbytes], dtype=np.uint8)
    return owner


class PinnedMemory(Memory):
    """Batch arrays in page-locked (pinned) host memory, for CUDA devices.

    Every batch array is built there (``placed``), so moving a batch to the
    GPU is one asynchronous copy.  Slots stay in ordinary host memory.  Needs a
    CUDA build of torch and a GPU (``torch.cuda.is_available()``).
    """

    name = "pinned"
    placed = True

    def raw(self, nbytes: int) -> np.ndarray:
        tensor = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        return _view_owner(tensor, nbytes)

    def slab(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)


@dataclass
class _Buffer:
    """One shared buffer of a worker: its id, the tensor owning it, its flag."""

    id: int
    tensor: torch.Tensor
    flag: np.ndarray
    sent: bool = False


class SharedMemory(Memory):
    """Batch arrays in shared memory, for DataLoader worker processes (one per worker).

    Every batch array is built there (``placed``) and pooled (``min_pooled = 0``):
    a buffer is reused once the main process has let go of the batch in it
    (:meth:`released`).  Slots stay in the worker's own memory.
    """

    name = "shared"
    placed = True
    min_pooled = 0

    def __init__(self) -> None:
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._buffers: dict[int, _Buffer] = {}  # id(owner array) -> buffer
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a SharedMemory belongs to the worker process that made it")

    def raw(self, nbytes: int) -> np.ndarray:
        tensor = torch.empty(nbytes + _FLAG, dtype=torch.uint8).share_memory_()
        owner = _view_owner(tensor, nbytes)
        flag = tensor.numpy()[nbytes : nbytes + 1]
        flag[0] = 0
        with self._lock:
            self._buffers[id(owner)] = _Buffer(next(self._ids), tensor, flag)
        # forget the buffer when the pool (and every batch in it) has dropped it
        weakref.finalize(owner, self._forget, id(owner))
        return owner

    def _forget(self, key: int) -> None:
        with self._lock:
            self._buffers.pop(key, None)

    def slab(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def released(self, raw: np.ndarray) -> bool:
        found = self._buffers.get(id(raw))
        return found is None or not found.flag[0]

    def buffer_of(self, array: np.ndarray) -> tuple[np.ndarray, _Buffer] | None:
        """The shared buffer ``array`` lies in (its owner array and record), or None."""
        owner = array.base
        if not isinstance(owner, np.ndarray):
            return None
        found = self._buffers.get(id(owner))
        return None if found is None else (owner, found)

    # -- sending ----------------------------------------------------------------------
    def send(self, batch: Batch) -> SharedBatch:
        """``batch`` as a message to the main process: arrays in shared buffers by place,
        the rest (small per-sample arrays) by value.  Marks the buffers as held."""
        places: dict[str, _Place] = {}
        values: dict[str, np.ndarray] = {}
        handles: dict[int, tuple[torch.Tensor, int]] = {}
        used: list[_Buffer] = []
        arrays = dict(batch.data)
        if batch.stacked is not None:
            arrays["\0stacked"] = batch.stacked
        for name, array in arrays.items():
            found = self.buffer_of(array)
            if found is None:
                values[name] = array
                continue
            owner, buf = found
            offset = array.__array_interface__["data"][0] - owner.ctypes.data
            places[name] = _Place(buf.id, offset, array.shape, array.strides, array.dtype.str)
            if buf not in used:
                used.append(buf)
            if not buf.sent:
                handles[buf.id] = (buf.tensor, owner.nbytes)
        for buf in used:
            buf.flag[0] = 1  # held by the main process until it lets go
            buf.sent = True
        meta = dataclasses.replace(batch, data={}, stacked=None)
        return SharedBatch(self.token, meta, places, values, handles)


@dataclass(frozen=True)
class _Place:
    buffer: int
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: str


@dataclass
class SharedBatch:
    """A batch on its way from a DataLoader worker: see :class:`SharedMemory`.

    Unpickled in the main process it takes a *lease* on each shared buffer it
    uses (:class:`Receiver`): the buffer's flag is cleared when the lease and
    everything made from it are gone, so a message dropped unopened gives its
    buffers back too.
    """

    token: str
    meta: Batch
    places: Mapping[str, _Place]
    values: Mapping[str, np.ndarray]
    handles: Mapping[int, tuple[torch.Tensor, int]]
    leases: dict[int, np.ndarray] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["leases"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.leases = RECEIVER.lease(self)  # in the main process: hold the buffers

    def open(self) -> Batch:
        """The batch, its arrays over the shared buffers (no copy)."""
        data: dict[str, np.ndarray] = dict(self.values)
        for name, place in self.places.items():
            lease = self.leases[place.buffer]
            data[name] = np.ndarray(
                place.shape,
                dtype=np.dtype(place.dtype),
                buffer=lease,
                offset=place.offset,
                strides=place.strides,
            )
        stacked = data.pop("\0stacked", None)
        return dataclasses.replace(self.meta, data=data, stacked=stacked)


def _clear(flag: np.ndarray) -> None:
    flag[0] = 0


class Receiver:
    """The main process's maps of the workers' shared buffers (one per process).

    Each buffer is mapped once, when a worker first sends it; every batch then
    takes a lease on it: a fresh NumPy array over the mapping whose finalizer
    clears the buffer's flag (the worker may reuse it) once the batch's arrays,
    tensors and views are all gone.  ``pin`` registers each new mapping as
    page-locked memory for CUDA (``cudaHostRegister``), so batches built in
    shared memory go to the GPU without a copy into pinned memory first.
    """

    def __init__(self) -> None:
        self._maps: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.pin = False
        self.mapped = 0

    def lease(self, message: SharedBatch) -> dict[int, np.ndarray]:
        leases = {}
        with self._lock:
            for buffer_id, (tensor, nbytes) in message.handles.items():
                full = tensor.numpy()
                if self.pin:
                    _register_pinned(full)
                self._maps[(message.token, buffer_id)] = (full[:nbytes], full[nbytes:])
                self.mapped += 1
            for place in message.places.values():
                if place.buffer in leases:
                    continue
                found = self._maps.get((message.token, place.buffer))
                if found is None:
                    raise RuntimeError(
                        f"earthstream: a DataLoader worker sent a batch in shared buffer "
                        f"{place.buffer}, which this process never received; the worker's "
                        "messages were lost (was the loader's iterator reused across processes?)"
                    )
                data, flag = found
                # a new array object over the same memory, which the batch's arrays name
                # as their base: when they are all gone, so is the lease
                lease = np.frombuffer(data.data, dtype=np.uint8)
                weakref.finalize(lease, _clear, flag)
                leases[place.buffer] = lease
        return leases

    def forget(self, token: str) -> None:
        """Drop the maps of one worker (its memory goes once the last batch in it does)."""
        with self._lock:
            for key in [k for k in self._maps if k[0] == token]:
                del self._maps[key]


def _register_pinned(full: np.ndarray) -> None:  # pragma: no cover - needs CUDA
    """Page-lock a mapping of shared memory for fast, asynchronous copies to the GPU."""
    if not torch.cuda.is_available():
        return
    code = torch.cuda.cudart().cudaHostRegister(full.ctypes.data, full.nbytes, 0)
    if int(code) != 0:
        raise RuntimeError(f"cudaHostRegister of a shared batch buffer failed (error {code})")


#: The receiver of this process (unpickling a SharedBatch finds it here).
RECEIVER = Receiver()
