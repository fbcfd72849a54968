"""Seeded permutations of ``range(n)`` that can be read in slices.

For ``n`` up to :data:`EXACT_LIMIT` the permutation is NumPy's uniform
``Generator.permutation`` (kept per process while it is read).  Larger ``n``
would need gigabytes per worker, so above the limit the permutation is a keyed
Feistel network on the next power of four, walked until it lands inside
``range(n)`` ("cycle walking"): a bijection computed on the fly for any slice,
in O(slice) memory, pseudo-random in the sense of Luby-Rackoff.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = ["EXACT_LIMIT", "permutation_slice"]

EXACT_LIMIT = 1 << 24
_ROUNDS = 6
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@functools.lru_cache(maxsize=2)
def _exact(n: int, key: tuple[int, ...]) -> np.ndarray:
    dtype = np.int32 if n < 2**31 else np.int64
    return np.random.default_rng(list(key)).permutation(n).astype(dtype)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective 64-bit mixer (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return np.asarray(x ^ (x >> np.uint64(31)))


def _feistel(x: np.ndarray, keys: np.ndarray, half: int) -> np.ndarray:
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    left, right = x >> shift, x & mask
    for k in keys:
        left, right = right, left ^ (_mix(right ^ k) & mask)
    return (left << shift) | right


def permutation_slice(n: int, key: Sequence[int], start: int, stop: int) -> np.ndarray:
    """Elements ``start:stop`` of the permutation of ``range(n)`` chosen by ``key``.

    >>> p = permutation_slice(10, (1, 2), 0, 10)
    >>> sorted(p.tolist()) == list(range(10))
    True
    >>> (permutation_slice(10, (1, 2), 3, 7) == p[3:7]).all()
    np.True_
    """
    start, stop = max(0, start), min(n, stop)
    if stop <= start:
        return np.zeros(0, dtype=np.int64)
    if n <= EXACT_LIMIT:
        return _exact(n, tuple(key))[start:stop].astype(np.int64)
    bits = max(2, int(n - 1).bit_length())
    half = (bits + 1) // 2
    keys = np.random.SeedSequence(list(key)).generate_state(_ROUNDS, dtype=np.uint64)
    x = _feistel(np.arange(start, stop, dtype=np.uint64), keys, half)
    outside = x >= n
    while outside.any():
        x[outside] = _feistel(x[outside], keys, half)
        outside = x >= n
    return x.astype(np.int64)
