"""Decoded chunks in preallocated slots, evicted by their next known use.

Each variable gets a *slab*: one array of ``n_slots`` chunks, allocated once
(virtual memory; pages become resident as slots are first used).  Chunks are
decoded straight into a slot, so the hot path allocates nothing, and a batch is
cut out of the slab by one fancy-index gather over a sliding-window view of it
(one NumPy call per batch and variable, GIL released).

The engine knows the batches ahead, so it knows when each chunk is needed
next.  Eviction is Belady's: the resident chunk needed furthest ahead goes
first, and a load is admitted only if it evicts nothing needed sooner than
itself.  Chunks being cut are pinned.  All state here is touched by the
scheduler thread only.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._alloc import HOST, Memory
from ._layout import VarLayout

__all__ = ["NEVER", "SlotCache", "SlotPool"]

NEVER = float("inf")


class SlotPool:
    """The slots of one variable, in ``memory`` (host memory by default)."""

    def __init__(self, var: VarLayout, n_slots: int, memory: Memory | None = None) -> None:
        self.var = var
        self.n_slots = int(n_slots)
        self.slab = (memory or HOST).slab((self.n_slots, *var.chunks), var.dtype)
        self.chunk_nbytes = var.chunk_nbytes
        self._free = list(range(self.n_slots - 1, -1, -1))  # a stack: reuse warm slots first
        window = (1, *var.lengths)
        self.windows: np.ndarray | None = None
        if all(n <= c for n, c in zip(var.lengths, var.chunks, strict=True)):
            self.windows = sliding_window_view(self.slab, window)

    def reset(self) -> None:
        """Every slot free again (a new pass; the slab's memory stays)."""
        self._free = list(range(self.n_slots - 1, -1, -1))

    def take(self) -> int | None:
        return self._free.pop() if self._free else None

    def give(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def n_free(self) -> int:
        return len(self._free)


class SlotCache:
    """Which chunk sits in which slot, its future uses, pins and reservations.

    Keys are ints: ``flat chunk index * n_vars + variable``.
    """

    def __init__(self, pools: list[SlotPool], *, reuse_dead: bool = True) -> None:
        self.pools = pools
        self.n_vars = len(pools)
        # With reuse_dead, a chunk no planned batch needs gives its slot before a
        # never-used slot is taken: memory touched stays near the working set.
        # Right when "no planned use" means "no use this epoch" (block shuffle, grid
        # order); a full shuffle keeps such chunks while free slots remain.
        self.reuse_dead = reuse_dead
        self._dead: list[dict[int, None]] = [{} for _ in pools]
        self.resident: dict[int, int] = {}  # key -> slot
        self.reserved: dict[int, int] = {}  # key -> slot, load in flight
        self._by_var: list[dict[int, int]] = [{} for _ in pools]  # resident keys per variable
        self._uses: dict[int, deque[int]] = {}
        self._pins: dict[int, int] = {}
        self.used_bytes = 0
        self.peak_bytes = 0
        self.evictions = 0
        self.capacity_bytes = sum(p.n_slots * p.chunk_nbytes for p in pools)

    # -- future uses ------------------------------------------------------------------
    def add_use(self, key: int, batch: int) -> bool:
        """Record that ``batch`` (in increasing order) needs ``key``; True if it had no
        other recorded use."""
        uses = self._uses.get(key)
        if uses is None:
            self._uses[key] = deque((batch,))
            self._dead[key % self.n_vars].pop(key, None)
            return True
        uses.append(batch)
        return False

    def next_use(self, key: int) -> float:
        uses = self._uses.get(key)
        return uses[0] if uses else NEVER

    def consume(self, key: int) -> None:
        uses = self._uses.get(key)
        if uses:
            uses.popleft()
            if not uses:
                del self._uses[key]
                self._maybe_dead(key)

    def _maybe_dead(self, key: int) -> None:
        if key in self.resident and key not in self._uses and key not in self._pins:
            self._dead[key % self.n_vars][key] = None

    # -- pins ----------------------------------------------------------------------------
    def checkout(self, keys: list[int]) -> np.ndarray:
        """Pin resident ``keys`` for a cut, consume their current use; their slots."""
        pins, uses, resident, dead = self._pins, self._uses, self.resident, self._dead
        n_vars = self.n_vars
        slots = np.empty(len(keys), dtype=np.intp)
        for i, key in enumerate(keys):
            pins[key] = pins.get(key, 0) + 1
            dead[key % n_vars].pop(key, None)
            queue = uses.get(key)
            if queue:
                queue.popleft()
                if not queue:
                    del uses[key]
            slots[i] = resident[key]
        return slots

    def checkin(self, keys: list[int]) -> None:
        """Unpin ``keys`` after their cut."""
        pins = self._pins
        for key in keys:
            n = pins[key] - 1
            if n:
                pins[key] = n
            else:
                del pins[key]
                self._maybe_dead(key)

    def pin(self, key: int) -> None:
        self._pins[key] = self._pins.get(key, 0) + 1
        self._dead[key % self.n_vars].pop(key, None)

    def unpin(self, key: int) -> None:
        n = self._pins[key] - 1
        if n:
            self._pins[key] = n
        else:
            del self._pins[key]
            self._maybe_dead(key)

    # -- slots ---------------------------------------------------------------------------
    def pool_of(self, key: int) -> SlotPool:
        return self.pools[key % self.n_vars]

    def _track(self, delta: int) -> None:
        self.used_bytes += delta
        if self.used_bytes > self.peak_bytes:
            self.peak_bytes = self.used_bytes

    def reserve(self, key: int, until: float) -> tuple[int, list[int]] | None:
        """A slot for ``key`` (needed at batch ``until``) and the keys evicted for it.

        Evicts the unpinned resident chunk of the same variable whose next use is
        furthest ahead, if that is later than ``until``; otherwise returns None.
        """
        var = key % self.n_vars
        pool = self.pools[var]
        victims: list[int] = []
        dead = self._dead[var]
        slot = None
        if self.reuse_dead and dead:
            victim = next(reversed(dead))  # the most recently freed: its pages are warm
            slot = self._evict(victim)
            victims.append(victim)
        if slot is None:
            slot = pool.take()
        if slot is None:
            best, best_use = -1, until
            for other in self._by_var[var]:
                if other in self._pins:
                    continue
                use = self.next_use(other)
                if use > best_use:
                    best, best_use = other, use
                    if use == NEVER:
                        break
            if best < 0:
                return None
            slot = self._evict(best)
            victims.append(best)
        self.reserved[key] = slot
        self._track(pool.chunk_nbytes)
        return slot, victims

    def _evict(self, key: int) -> int:
        slot = self.resident.pop(key)
        del self._by_var[key % self.n_vars][key]
        self._dead[key % self.n_vars].pop(key, None)
        self._track(-self.pool_of(key).chunk_nbytes)
        self.evictions += 1
        return slot

    def fulfil(self, key: int) -> None:
        """The load of ``key`` finished: its slot now holds the chunk."""
        slot = self.reserved.pop(key)
        self.resident[key] = slot
        self._by_var[key % self.n_vars][key] = slot
        self._maybe_dead(key)

    def cancel(self, key: int) -> None:
        """Give back the slot of a load that failed or was abandoned."""
        slot = self.reserved.pop(key)
        self.pool_of(key).give(slot)
        self._track(-self.pool_of(key).chunk_nbytes)

    def slot_array(self, keys: list[int]) -> np.ndarray:
        resident = self.resident
        return np.fromiter((resident[k] for k in keys), dtype=np.intp, count=len(keys))

    def chunk(self, key: int) -> Any:
        return self.pool_of(key).slab[self.resident[key]]
