"""Sampling: which windows exist, and in which order each epoch visits them."""

from ._order import SHUFFLES, EpochOrder, OrderSpec, normalize_shuffle, shard_range
from ._permute import permutation_slice
from ._windows import AxisWindows, WindowGrid, build_window_grid

__all__ = [
    "SHUFFLES",
    "AxisWindows",
    "EpochOrder",
    "OrderSpec",
    "WindowGrid",
    "build_window_grid",
    "normalize_shuffle",
    "permutation_slice",
    "shard_range",
]
