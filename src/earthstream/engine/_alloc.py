"""Where the engine's arrays live: one allocator, a *buffer prototype*.

Every array the engine allocates comes from a :class:`Memory` (as zarr-python's
``BufferPrototype`` decides where zarr's buffers live): the slot slabs decoded
chunks go to (:meth:`Memory.slab`) and the batch arrays samples are cut into
(:meth:`Memory.empty`, pooled by :class:`~earthstream.engine.BatchBuffers`).
The engine holds one (``Engine.memory``; ``Engine.buffers`` is its pool) and
never calls ``np.empty`` itself for those arrays.

* :class:`HostMemory` (the default): NumPy arrays, 64-byte aligned (JAX aliases
  such a buffer on CPU instead of copying it).  Batch arrays under a megabyte
  come straight from the allocator; larger ones are reused once the consumer
  has dropped the batch.
* Placements a framework brings (``delivery/``): page-locked host memory for
  CUDA (the batch is built there once: no second copy before the device copy),
  shared memory for DataLoader workers (the batch is built there once: no copy
  to cross the process boundary, buffers reused once the main process lets go).
  They subclass :class:`Memory` and give the raw bytes (:meth:`Memory.raw`) and,
  when a consumer in another process holds a buffer, when it lets go
  (:meth:`Memory.released`).  With :attr:`Memory.placed` every batch array must
  come from them: a gather's result is written into their buffer (see
  ``_assemble.cut_var``).

Arrays are handled through their array namespace (``array-api-compat``:
:attr:`Memory.xp`): allocation, fills and the reshapes that make a variable's
view of a stacked batch go through it, so a device namespace (CuPy, a torch
device) can take the place of NumPy's.  The gathers that cut windows out of a
slab (one fancy index over a sliding-window view) are NumPy's own today; a
device memory brings its own, with device slots.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import array_api_compat.numpy as xp_numpy
import numpy as np

__all__ = ["ALIGNMENT", "HostMemory", "Memory", "aligned_view", "namespace_of"]

#: Byte alignment of the batch arrays the engine allocates: JAX aliases a NumPy buffer
#: on CPU (no copy) only when it is 64-byte aligned.
ALIGNMENT = 64


def aligned_view(
    raw: np.ndarray, nbytes: int, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> np.ndarray:
    """``shape``/``dtype`` array over ``raw`` (uint8, at least ``nbytes + ALIGNMENT``
    long) starting on an :data:`ALIGNMENT`-byte boundary."""
    offset = -raw.ctypes.data % ALIGNMENT
    out: np.ndarray = raw[offset : offset + nbytes].view(dtype).reshape(shape)
    return out


def namespace_of(*arrays: Any) -> Any:
    """The array namespace of ``arrays`` (``array_api_compat``'s; NumPy's for ndarrays)."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        return xp_numpy  # the common case, without the lookup
    return array_api_compat.array_namespace(*arrays)


class Memory:
    """A placement for the engine's arrays (a buffer prototype).

    Subclasses give :meth:`raw` (new bytes in their memory) and may override
    :meth:`slab`, :meth:`released`, :attr:`placed` and :attr:`min_pooled`.

    Examples
    --------
    A memory that counts what the engine asks of it:

    >>> class Counted(HostMemory):
    ...     requests = 0
    ...     def raw(self, nbytes):
    ...         Counted.requests += 1
    ...         return super().raw(nbytes)
    >>> a = Counted().empty((4, 4), np.float32)
    >>> Counted.requests, a.ctypes.data % ALIGNMENT
    (1, 0)
    """

    #: A short name for reprs and reports.
    name = "memory"
    #: Every batch array must come from this memory: results NumPy allocates itself
    #: (a gather) are copied into it.
    placed = False
    #: Batch arrays of at least this many bytes are pooled and reused (``None``: the
    #: pool's default, a megabyte).
    min_pooled: int | None = None

    @property
    def xp(self) -> Any:
        """The array namespace of the arrays this memory hands out."""
        return xp_numpy

    def raw(self, nbytes: int) -> np.ndarray:
        """``nbytes`` new bytes (uint8, 1-D) in this memory."""
        raise NotImplementedError

    def released(self, raw: np.ndarray) -> bool:
        """Whether a consumer outside this process has let go of buffer ``raw`` (this
        process's own references are counted by the pool)."""
        return True

    def hold(self, raw: np.ndarray) -> None:  # pragma: no cover - trivial
        """A consumer outside this process is about to hold buffer ``raw``."""

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialized C-ordered array in this memory, 64-byte aligned."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return aligned_view(self.raw(nbytes + ALIGNMENT), nbytes, shape, dtype)

    def slab(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """The slots of one variable: ``shape[0]`` chunks (kept for the engine's life)."""
        return self.empty(shape, dtype)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class HostMemory(Memory):
    """NumPy host memory (the default placement).

    >>> m = HostMemory()
    >>> a = m.empty((3, 5), np.float32)
    >>> a.shape, int(a.ctypes.data % ALIGNMENT), m.xp.__name__
    ((3, 5), 0, 'array_api_compat.numpy')
    """

    name = "host"

    def raw(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, dtype=np.uint8)

    def slab(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        # virtual memory: pages become resident as slots are first used
        return np.empty(shape, dtype=dtype)


#: The default placement.
HOST = HostMemory()
