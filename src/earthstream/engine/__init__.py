"""The engine: read, decode, cache and cut chunks into batches in the background.

One runner for every stream kind.  The engine reads chunks of any number of
input sources, decodes each chunk once into a slot, evicts by next known use
within ``memory_limit`` and delivers batches in order with one report; a stream
kind plugs in with a planner and an assembler (:class:`StreamKind`, see
:mod:`earthstream.engine._kind`).  :func:`window_kind` is the window-grid kind of
:class:`~earthstream.Stream`.
"""

from ._alloc import HOST, HostMemory, Memory, namespace_of
from ._assemble import (
    BatchArrays,
    copy_pieces,
    cut_var,
    frame_of,
    new_array,
    placed_copy,
    scatter_key,
)
from ._budget import Budget, plan_budget, sweep_size
from ._buffers import BatchBuffers
from ._engine import Engine
from ._kind import Assembler, Planner, StreamKind
from ._layout import StreamLayout, VarLayout, build_layout, union_dims
from ._loader import ChunkLoader
from ._plan import BatchPlan, Pieces, VarPlan, cut_pieces, plan_var
from ._policy import ChunkPolicy, CorruptCount
from ._report import EpochReport
from ._slots import SlotCache, SlotPool
from ._windows import (
    WindowAssembler,
    WindowPlanner,
    cut_batch,
    direct_decode_ok,
    plan_span,
    validity_mask,
    window_kind,
)

__all__ = [
    "Assembler",
    "BatchArrays",
    "BatchBuffers",
    "BatchPlan",
    "Budget",
    "ChunkLoader",
    "ChunkPolicy",
    "CorruptCount",
    "Engine",
    "EpochReport",
    "HOST",
    "HostMemory",
    "Memory",
    "Pieces",
    "Planner",
    "SlotCache",
    "SlotPool",
    "StreamKind",
    "StreamLayout",
    "VarLayout",
    "VarPlan",
    "WindowAssembler",
    "WindowPlanner",
    "build_layout",
    "copy_pieces",
    "cut_batch",
    "cut_pieces",
    "cut_var",
    "direct_decode_ok",
    "frame_of",
    "namespace_of",
    "new_array",
    "placed_copy",
    "plan_budget",
    "plan_span",
    "plan_var",
    "scatter_key",
    "sweep_size",
    "union_dims",
    "validity_mask",
    "window_kind",
]
