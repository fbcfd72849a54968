"""Sampling: which windows exist, in which order each epoch visits them, who serves which."""

from ._forecast import Forecast, ForecastPlan
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
from ._windows import EDGES, AxisWindows, Edges, WindowGrid, build_window_grid

__all__ = [
    "EDGES",
    "REMAINDERS",
    "SHUFFLES",
    "STATE_FORMAT",
    "STATE_VERSION",
    "AxisWindows",
    "BatchRuns",
    "Cursor",
    "EpochOrder",
    "Edges",
    "EpochPlan",
    "Forecast",
    "ForecastPlan",
    "OrderSpec",
    "Remainder",
    "Span",
    "WindowGrid",
    "build_window_grid",
    "cursor_from_state",
    "normalize_shuffle",
    "permutation_slice",
    "resolve_selection",
    "round_robin_counts",
    "round_robin_index",
    "round_robin_next",
    "shard_range",
]
