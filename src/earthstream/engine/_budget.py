"""How ``memory_limit`` is split: batches, chunk slots, and (for sweeps) sweep outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._units import format_bytes
from ..errors import MemoryBudgetError
from ._layout import StreamLayout

__all__ = ["SWEEP_SLOTS", "Budget", "plan_budget", "sweep_size"]


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


def sweep_size(layout: StreamLayout, budget: Budget, batch_size: int) -> int:
    """Batches per sweep for a fully shuffled stream, or 0 when batches fit the slots.

    A batch of uniformly drawn windows touches about ``n (1 - (1 - 1/n)^B)`` of a
    variable's ``n`` chunks.  When that nears the number of slots, batches would
    fight over slots; sweeps give the cache to batch outputs instead.
    """
    block = max(1, layout.block_nbytes())
    n_slots = budget.cache_capacity // block
    expected = 0.0
    for var in layout.variables:
        n = float(np.prod(var.chunk_grid, dtype=np.float64))
        expected = max(expected, n * (1 - (1 - 1 / n) ** batch_size) if n else 0.0)
    if expected <= 0.5 * n_slots:
        return 0
    room = budget.cache_capacity - SWEEP_SLOTS * block
    size = room // max(1, budget.batch_nbytes)
    return int(size) if size >= 2 else 0
