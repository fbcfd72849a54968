"""The engine: read, decode, cache and assemble chunks into batches in the background."""

from ._assemble import VarNeeds, batch_needs, chunk_key, validity_mask
from ._cache import ChunkCache
from ._engine import Budget, Engine, EpochReport, plan_budget
from ._layout import StreamLayout, VarLayout, build_layout, union_dims

__all__ = [
    "Budget",
    "ChunkCache",
    "Engine",
    "EpochReport",
    "StreamLayout",
    "VarNeeds",
    "VarLayout",
    "batch_needs",
    "build_layout",
    "chunk_key",
    "plan_budget",
    "union_dims",
    "validity_mask",
]
