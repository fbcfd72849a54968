"""Memory for large batch arrays, used again once a delivered batch is gone.

A whole-field batch of a 0.25-degree store with 70 channels is close to 1 GB.
``np.empty`` of that size is a fresh memory map: every page faults and is
zeroed by the kernel while the batch is written, which costs about as much as
copying the data in (and batches of a few MB often fare alike).  The engine
keeps a few such buffers instead.  A buffer is handed out as NumPy views of
it; it is free again when nothing refers to it any more but this pool: the
batch, every view of it (a forecast's steps, a variable's channels) and every
tensor made from them without a copy (``torch.from_numpy``) keep it alive
through NumPy's ``base``, which CPython's reference count tells exactly.
Arrays under a megabyte come from ``np.empty``: the allocator reuses them
itself.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

__all__ = ["BatchBuffers"]

#: Arrays at least this large come from the pool.  glibc maps anything above 32 MB
#: afresh, and between its dynamic threshold and that it often gives memory back
#: and faults it in again: measured on whole-field batches of 12.5 MB, copying into
#: pooled buffers took about half the CPU time of copying into fresh arrays.
MIN_POOLED = 2**20


#: Byte alignment of the batch arrays the engine allocates: JAX aliases a NumPy buffer
#: on CPU (no copy) only when it is 64-byte aligned.
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on an :data:`ALIGNMENT`-byte boundary.

    >>> int(aligned_empty((3, 5), np.float32).ctypes.data % ALIGNMENT)
    0
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    return _aligned_view(raw, nbytes, shape, dtype)


def _aligned_view(
    raw: np.ndarray, nbytes: int, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> np.ndarray:
    offset = -raw.ctypes.data % ALIGNMENT
    out: np.ndarray = raw[offset : offset + nbytes].view(dtype).reshape(shape)
    return out


class BatchBuffers:
    """Up to ``keep`` reusable buffers for batch arrays of at least :data:`MIN_POOLED` bytes.

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

    def __init__(self, keep: int, min_nbytes: int | None = None) -> None:
        self.keep = int(keep)
        self.min_nbytes = int(MIN_POOLED if min_nbytes is None else min_nbytes)
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.reused = 0

    def __len__(self) -> int:
        return len(self._buffers)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialized array of ``shape`` and ``dtype`` (C order, 64-byte aligned)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < self.min_nbytes or self.keep < 1:
            return aligned_empty(shape, dtype)
        size = nbytes + ALIGNMENT
        with self._lock:
            found = None
            for i in range(len(self._buffers)):
                # referenced by the list and the call's argument only: nobody uses it
                # (views of it have it as their base, so they count)
                if self._buffers[i].nbytes == size and sys.getrefcount(self._buffers[i]) <= 2:
                    found = self._buffers[i]
                    self.reused += 1
                    break
            if found is None:
                if len(self._buffers) >= self.keep:
                    return aligned_empty(shape, dtype)  # all in use: not pooled
                found = np.empty(size, dtype=np.uint8)
                self._buffers.append(found)
        return _aligned_view(found, nbytes, shape, dtype)

    def clear(self) -> None:
        """Forget the buffers (their memory returns when the batches using them go)."""
        with self._lock:
            self._buffers = []
