"""How ``memory_limit`` is split: batches, chunk slots, and (for sweeps) sweep outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._units import format_bytes
from ..errors import MemoryBudgetError
from ._layout import StreamLayout, VarLayout

__all__ = ["SWEEP_SLOTS", "Budget", "plan_budget", "sweep_batches", "sweep_size", "sweep_slots"]


@dataclass(frozen=True)
class Budget:
    """How ``memory_limit`` is split between batches and chunk slots."""

    memory_limit: int
    batch_nbytes: int
    prefetch: int
    cache_capacity: int

    @property
    def batch_slots(self) -> int:
        """Batches that may exist at once on the engine's side."""
        return self.prefetch + 1


def plan_budget(layout: StreamLayout, batch_size: int, memory_limit: int, prefetch: int) -> Budget:
    """Split the budget, or refuse one too small for a batch and a chunk of each variable."""
    batch_nbytes = layout.batch_nbytes(batch_size)
    queued = (prefetch + 1) * batch_nbytes
    block = layout.block_nbytes()
    if memory_limit < queued + block:
        raise MemoryBudgetError(
            f"memory_limit={format_bytes(memory_limit)} is too small: {prefetch + 1} batches "
            f"(prefetch={prefetch} queued + 1 being assembled) of {format_bytes(batch_nbytes)} "
            f"each need {format_bytes(queued)}, and one decoded chunk of each variable needs "
            f"{format_bytes(block)}. Raise memory_limit to at least "
            f"{format_bytes(queued + block)}, or lower batch_size or prefetch."
        )
    return Budget(memory_limit, batch_nbytes, prefetch, memory_limit - queued)


#: Slots per variable in a sweep: enough to overlap decodes, little memory.
SWEEP_SLOTS = 2
#: Small chunks (shards' inner chunks) get more sweep slots, up to this many bytes of
#: chunk groups: decodes of the next chunks overlap the scatter of the last ones.
SWEEP_SLOT_BYTES = 4 << 20
_MAX_SWEEP_SLOTS = 16


def sweep_slots(block_nbytes: int, cache_capacity: int) -> int:
    """Slots per variable in a sweep whose chunk groups take ``block_nbytes``: more
    for small chunks, never more than an eighth of the cache.

    >>> sweep_slots(8 << 20, 100 << 20), sweep_slots(700_000, 100 << 20)
    (2, 5)
    """
    block = max(1, block_nbytes)
    fit = min(SWEEP_SLOT_BYTES, cache_capacity // 8) // block
    return max(SWEEP_SLOTS, min(_MAX_SWEEP_SLOTS, fit))


def sweep_size(layout: StreamLayout, budget: Budget, batch_size: int) -> int:
    """Batches per sweep for a fully shuffled stream, or 0 when batches fit the slots.

    See :func:`sweep_batches`.
    """
    return sweep_batches(layout.variables, layout.block_nbytes(), budget, batch_size)


def sweep_batches(
    variables: Sequence[VarLayout], block_nbytes: int, budget: Budget, batch_size: int
) -> int:
    """Batches per sweep over ``variables`` (a chunk group: ``block_nbytes``), or 0.

    A batch of uniformly drawn windows touches about ``n (1 - (1 - 1/n)^B)`` of a
    variable's ``n`` chunks.  When that nears the number of slots, batches would
    fight over slots; sweeps give the cache to batch outputs instead.  Sweeps are
    also taken when they decode clearly less: with ``S`` slots of ``n`` chunks, the
    slot path misses about ``1 - S/n`` of a batch's chunks (random reuse), where a
    sweep of ``K`` batches decodes each chunk it touches once, for all of them.
    Many small chunks (shards' inner chunks) with a cache of a fraction of the
    data are that case.
    """
    block = max(1, block_nbytes)
    n_slots = budget.cache_capacity // block
    room = budget.cache_capacity - sweep_slots(block, budget.cache_capacity) * block
    size = int(room // max(1, budget.batch_nbytes))
    if size < 2:
        return 0
    expected = 0.0
    slot_decodes = sweep_decodes = 0.0  # bytes decoded per batch, either way
    for var in variables:
        n = float(np.prod(var.chunk_grid, dtype=np.float64))
        if not n:
            continue
        touched = n * (1 - (1 - 1 / n) ** batch_size)
        expected = max(expected, touched)
        slot_decodes += var.chunk_nbytes * touched * max(0.0, 1 - n_slots / n)
        sweep_decodes += var.chunk_nbytes * n * (1 - (1 - 1 / n) ** (batch_size * size)) / size
    if expected > 0.5 * n_slots or sweep_decodes < 0.5 * slot_decodes:
        return size
    return 0
