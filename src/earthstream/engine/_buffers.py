"""Memory for batch arrays, used again once a delivered batch is gone.

A whole-field batch of a 0.25-degree store with 70 channels is close to 1 GB.
``np.empty`` of that size is a fresh memory map: every page faults and is
zeroed by the kernel while the batch is written, which costs about as much as
copying the data in (and batches of a few MB often fare alike).  The engine
keeps a few such buffers instead, from its :class:`~earthstream.engine.Memory`
(host memory by default; pinned or shared memory when a framework asks).  A
buffer is handed out as NumPy views of it; it is free again when nothing refers
to it any more but this pool: the batch, every view of it (a forecast's steps,
a variable's channels) and every tensor made from them without a copy
(``torch.from_numpy``) keep it alive through NumPy's ``base``, which CPython's
reference count tells exactly; a consumer in another process (a DataLoader's
main process) holds it until the memory says it let go
(:meth:`~earthstream.engine.Memory.released`).  Host arrays under a megabyte
come from the allocator directly: it reuses them itself.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

from ._alloc import ALIGNMENT, HOST, Memory, aligned_view

__all__ = ["ALIGNMENT", "BatchBuffers", "aligned_empty"]

#: Arrays at least this large come from the pool.  glibc maps anything above 32 MB
#: afresh, and between its dynamic threshold and that it often gives memory back
#: and faults it in again: measured on whole-field batches of 12.5 MB, copying into
#: pooled buffers took about half the CPU time of copying into fresh arrays.
MIN_POOLED = 2**20


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on an :data:`ALIGNMENT`-byte boundary.

    >>> int(aligned_empty((3, 5), np.float32).ctypes.data % ALIGNMENT)
    0
    """
    return HOST.empty(shape, dtype)


class BatchBuffers:
    """Up to ``keep`` reusable buffers for batch arrays of at least :data:`MIN_POOLED` bytes
    (or the memory's own threshold), in ``memory`` (host memory by default).

    ``max_nbytes`` bounds the bytes the pool keeps, whatever ``keep`` says.

    >>> pool = BatchBuffers(keep=1, min_nbytes=64)
    >>> a = pool.empty((4, 8), np.float32)
    >>> a.base is not None, len(pool)
    (True, 1)
    >>> address = a.__array_interface__["data"][0]
    >>> b = pool.empty((4, 8), np.float32)  # `a` is alive: a new, unpooled array
    >>> b.__array_interface__["data"][0] == address
    False
    >>> del a
    >>> c = pool.empty((2, 16), np.float32)  # same size, `a` is gone: its memory again
    >>> c.__array_interface__["data"][0] == address
    True
    """

    def __init__(
        self,
        keep: int,
        min_nbytes: int | None = None,
        memory: Memory | None = None,
        max_nbytes: int | None = None,
    ) -> None:
        self.memory = memory if memory is not None else HOST
        self.keep = int(keep)
        threshold = min_nbytes if min_nbytes is not None else self.memory.min_pooled
        self.min_nbytes = int(MIN_POOLED if threshold is None else threshold)
        self.max_nbytes = None if max_nbytes is None else int(max_nbytes)
        self._buffers: list[np.ndarray] = []
        self._held = 0  # bytes of the pool's buffers
        self._lock = threading.Lock()
        self.reused = 0

    def __len__(self) -> int:
        return len(self._buffers)

    @property
    def placed(self) -> bool:
        """Every batch array must come from this pool's memory (see ``Memory.placed``)."""
        return self.memory.placed

    @property
    def xp(self) -> Any:
        """The array namespace of the arrays this pool hands out."""
        return self.memory.xp

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialized array of ``shape`` and ``dtype`` (C order, 64-byte aligned)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < self.min_nbytes or self.keep < 1:
            return self.memory.empty(shape, dtype)
        size = nbytes + ALIGNMENT
        with self._lock:
            found = None
            for buffer in self._buffers:
                # referenced by the list, the loop and the call's argument only: nobody in
                # this process uses it (views of it have it as their base, so they count)
                if (
                    buffer.nbytes == size
                    and sys.getrefcount(buffer) <= 3
                    and self.memory.released(buffer)
                ):
                    found = buffer
                    self.reused += 1
                    break
            if found is None:
                full = len(self._buffers) >= self.keep or (
                    self.max_nbytes is not None and self._held + size > self.max_nbytes
                )
                if full:
                    return self.memory.empty(shape, dtype)  # all in use: not pooled
                found = self.memory.raw(size)
                self._buffers.append(found)
                self._held += size
        return aligned_view(found, nbytes, shape, dtype)

    def clear(self) -> None:
        """Forget the buffers (their memory returns when the batches using them go)."""
        with self._lock:
            self._buffers = []
            self._held = 0
