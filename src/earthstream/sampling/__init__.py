"""Sampling: which windows exist, in which order each epoch visits them, who serves which."""

from ._forecast import Forecast, ForecastPlan
from ._inference import ExplicitSequence, OutputChunks, plan_inference
from ._labels import LabelChips, label_chip_positions
from ._order import SHUFFLES, EpochOrder, OrderSpec, normalize_shuffle, shard_range
from ._permute import permutation_slice
from ._plan import (
    REMAINDERS,
    BatchRuns,
    EpochPlan,
    Remainder,
    round_robin_counts,
    round_robin_index,
    round_robin_next,
)
from ._resume import STATE_FORMAT, STATE_VERSION, Cursor, cursor_from_state
from ._select import Span, resolve_selection
from ._split import (
    BlockSplit,
    TimeSplit,
    assign_blocks,
    boxes_in_split,
    grid_split_mask,
    time_split_spans,
)
from ._subset import StreamContext, WindowRule, WindowSubset, as_subset
from ._windows import EDGES, AxisWindows, Edges, WindowGrid, build_window_grid

__all__ = [
    "EDGES",
    "REMAINDERS",
    "SHUFFLES",
    "STATE_FORMAT",
    "STATE_VERSION",
    "AxisWindows",
    "BatchRuns",
    "BlockSplit",
    "Cursor",
    "EpochOrder",
    "Edges",
    "EpochPlan",
    "ExplicitSequence",
    "Forecast",
    "ForecastPlan",
    "LabelChips",
    "OutputChunks",
    "OrderSpec",
    "Remainder",
    "Span",
    "StreamContext",
    "TimeSplit",
    "WindowGrid",
    "WindowRule",
    "WindowSubset",
    "as_subset",
    "assign_blocks",
    "boxes_in_split",
    "build_window_grid",
    "cursor_from_state",
    "grid_split_mask",
    "label_chip_positions",
    "normalize_shuffle",
    "permutation_slice",
    "plan_inference",
    "resolve_selection",
    "round_robin_counts",
    "round_robin_index",
    "round_robin_next",
    "shard_range",
    "time_split_spans",
]
