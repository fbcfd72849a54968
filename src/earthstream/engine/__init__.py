"""The engine: read, decode, cache and cut chunks into batches in the background."""

from ._assemble import BatchArrays, cut_batch, validity_mask
from ._budget import Budget, plan_budget, sweep_size
from ._engine import ChunkPolicy, CorruptCount, Engine
from ._layout import StreamLayout, VarLayout, build_layout, union_dims
from ._loader import ChunkLoader
from ._plan import BatchPlan, VarPlan, plan_span
from ._report import EpochReport
from ._slots import SlotCache, SlotPool

__all__ = [
    "BatchArrays",
    "BatchPlan",
    "Budget",
    "ChunkLoader",
    "ChunkPolicy",
    "CorruptCount",
    "Engine",
    "EpochReport",
    "SlotCache",
    "SlotPool",
    "StreamLayout",
    "VarLayout",
    "VarPlan",
    "build_layout",
    "cut_batch",
    "plan_budget",
    "plan_span",
    "sweep_size",
    "union_dims",
    "validity_mask",
]
