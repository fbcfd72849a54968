"""A decoded-chunk cache bounded in bytes, evicting by known future use.

The engine knows the exact order of the batches ahead, so it knows when each
chunk will be needed next.  The cache evicts the chunk whose next use is
furthest away (Belady's optimal policy), and only admits a new chunk if doing
so evicts nothing needed sooner.  Chunks in flight (being read and decoded)
hold a reservation of their decoded size.  The cache is used from the
scheduler thread only; it needs no lock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

__all__ = ["NEVER", "ChunkCache"]

NEVER = float("inf")
K = TypeVar("K", bound=Hashable)


class ChunkCache(Generic[K]):
    """Resident decoded chunks plus in-flight reservations, within ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.used = 0
        self.peak = 0
        self.evictions = 0
        self._resident: dict[K, tuple[Any, int]] = {}
        self._reserved: dict[K, int] = {}
        self._uses: dict[K, deque[int]] = {}
        self._heap: list[tuple[float, int, K]] = []  # (-next use, tiebreak, key)
        self._counter = itertools.count()

    # -- future uses ---------------------------------------------------------------
    def add_use(self, key: K, batch: int) -> None:
        """Record that ``batch`` (in increasing order) will need ``key``."""
        uses = self._uses.get(key)
        if uses is None:
            uses = self._uses[key] = deque()
        was_idle = not uses
        uses.append(batch)
        if was_idle and key in self._resident:
            self._push(key)

    def next_use(self, key: K) -> float:
        uses = self._uses.get(key)
        return uses[0] if uses else NEVER

    def consume(self, key: K) -> None:
        """The earliest recorded use of ``key`` has been served."""
        uses = self._uses.get(key)
        if uses:
            uses.popleft()
            if not uses:
                del self._uses[key]
        if key in self._resident:
            self._push(key)

    def _push(self, key: K) -> None:
        heapq.heappush(self._heap, (-self.next_use(key), next(self._counter), key))

    # -- residency ------------------------------------------------------------------
    def __contains__(self, key: K) -> bool:
        return key in self._resident

    def get(self, key: K) -> Any:
        return self._resident[key][0]

    def is_reserved(self, key: K) -> bool:
        return key in self._reserved

    @property
    def n_reserved(self) -> int:
        return len(self._reserved)

    @property
    def n_resident(self) -> int:
        return len(self._resident)

    def _track(self, delta: int) -> None:
        self.used += delta
        self.peak = max(self.peak, self.used)

    def reserve(self, key: K, nbytes: int, until: float) -> list[K] | None:
        """Reserve room for ``key``, needed at batch ``until``.

        Evicts resident chunks whose next use is later than ``until``, furthest
        first, as long as that frees enough room, and returns them; otherwise
        evicts nothing and returns None.
        """
        victims: list[K] = []
        need = self.used + nbytes - self.capacity
        if need > 0:
            found = self._victims(need, until)
            if found is None:
                return None
            victims = found
            for victim in victims:
                self._evict(victim)
        self._reserved[key] = nbytes
        self._track(nbytes)
        return victims

    def _victims(self, need: int, until: float) -> list[K] | None:
        victims: list[K] = []
        keep: list[tuple[float, int, K]] = []
        freed = 0
        heap = self._heap
        while heap and freed < need:
            neg, tie, key = heapq.heappop(heap)
            entry = self._resident.get(key)
            if entry is None or -neg != self.next_use(key) or key in victims:
                continue  # stale entry
            if -neg <= until:
                keep.append((neg, tie, key))
                break
            victims.append(key)
            keep.append((neg, tie, key))
            freed += entry[1]
        for item in keep:
            heapq.heappush(heap, item)
        return victims if freed >= need else None

    def _evict(self, key: K) -> None:
        _, nbytes = self._resident.pop(key)
        self._track(-nbytes)
        self.evictions += 1

    def fulfil(self, key: K, value: Any, nbytes: int) -> None:
        """The reserved chunk ``key`` arrived: hold ``value`` (``nbytes`` resident)."""
        reserved = self._reserved.pop(key)
        self._resident[key] = (value, nbytes)
        self._track(nbytes - reserved)
        self._push(key)

    def cancel(self, key: K) -> None:
        """Drop the reservation of a chunk whose load failed or was abandoned."""
        self._track(-self._reserved.pop(key))

    def drop_unused(self) -> None:
        """Evict every resident chunk that no recorded batch needs."""
        for key in [k for k in self._resident if self.next_use(k) == NEVER]:
            self._evict(key)
