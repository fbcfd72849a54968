"""The order of an epoch: a pure function of (seed, epoch, windows, settings).

An epoch is one global sequence of window ids, cut into batches of
``batch_size`` consecutive windows.  Three orders exist:

``"none"`` (``shuffle=False``)
    Grid order: window ids ascending (row-major over the stream's dims).
``"chunks"`` (the default)
    Block shuffle.  Windows are grouped by the chunk their start lies in
    (a *chunk group*).  The groups are visited in a random order; every
    ``shuffle_buffer`` consecutive groups form a *unit* whose windows are fully
    mixed.  The engine keeps a unit's chunks resident while its windows are
    served, so each chunk is decoded once per epoch.
``"full"``
    A uniform random permutation of all windows.  A bounded chunk cache limits
    how often a chunk is decoded again.

Sharding (distributed ranks, DataLoader workers; see :mod:`._plan`) splits the
*batches* into contiguous runs, so the batches themselves do not depend on the
number of shards, and shards touch disjoint chunk groups except at run
boundaries.
The sequence is never materialized whole: any range of it is computed on
demand from per-unit seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import ConfigError
from ._epoch import EpochOrder, shard_range
from ._inference import ExplicitOrder
from ._random import SampledOrder
from ._windows import WindowGrid

if TYPE_CHECKING:
    from ._inference import ExplicitSequence
    from ._subset import WindowSubset

__all__ = ["SHUFFLES", "EpochOrder", "OrderSpec", "normalize_shuffle", "shard_range"]

#: The order of an epoch's windows: grid order, block shuffle, uniform permutation.
Order = Literal["none", "chunks", "full"]
SHUFFLES: tuple[Order, ...] = ("none", "chunks", "full")


def normalize_shuffle(shuffle: bool | str | None) -> Order:
    """Map the user's ``shuffle`` argument to one of :data:`SHUFFLES`.

    >>> normalize_shuffle(False), normalize_shuffle("chunks"), normalize_shuffle(True)
    ('none', 'chunks', 'chunks')
    """
    if shuffle is False or shuffle is None or shuffle == "none":
        return "none"
    if shuffle is True or shuffle == "chunks":
        return "chunks"
    if shuffle == "full":
        return "full"
    raise ConfigError(
        f"shuffle={shuffle!r} is not an order; use False (grid order), 'chunks' (block "
        "shuffle, the default) or 'full' (uniform permutation)."
    )


@dataclass(frozen=True)
class OrderSpec:
    """How windows are ordered and batched; frozen and picklable.

    ``subset`` restricts the epoch to some windows of the grid (a split, a
    valid-fraction threshold); ``samples`` draws that many windows per epoch
    at random from the grid (or the subset) instead of visiting each once,
    without ``replacement`` by default (see :mod:`earthstream.sampling._random`);
    ``sequence`` is an explicit, planned window sequence per rank (inference
    over output chunks, :mod:`earthstream.sampling._inference`).
    """

    grid: WindowGrid
    shuffle: Order = "chunks"
    seed: int = 0
    batch_size: int = 32
    drop_last: bool = False
    shuffle_buffer: int = 16
    subset: WindowSubset | None = None
    samples: int | None = None
    replacement: bool = False
    sequence: ExplicitSequence | None = None

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLES:
            raise ConfigError(f"shuffle={self.shuffle!r} must be one of {SHUFFLES}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 1.")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"shuffle_buffer={self.shuffle_buffer} must be at least 1.")
        if self.subset is not None and self.subset.counts != self.grid.counts:
            raise ConfigError(
                f"the window subset belongs to a grid of {self.subset.counts} windows per dim, "
                f"not this grid's {self.grid.counts}."
            )
        if self.samples is not None:
            if isinstance(self.samples, bool) or not isinstance(self.samples, int | np.integer):
                raise ConfigError(f"samples_per_epoch={self.samples!r} must be a whole number.")
            if self.samples < 1:
                raise ConfigError(f"samples_per_epoch={self.samples} must be at least 1.")
            if not self.replacement and self.samples > self.n_set:
                raise ConfigError(
                    f"samples_per_epoch={self.samples} distinct windows, but only "
                    f"{self.n_set} windows exist; lower it, or pass replacement=True to "
                    "draw windows with replacement."
                )
            if self.n_set == 0:
                raise ConfigError("samples_per_epoch needs at least one window to draw from.")

    @property
    def n_set(self) -> int:
        """Windows the epoch draws from (the subset's, else the grid's)."""
        return self.subset.n if self.subset is not None else self.grid.n_windows

    @property
    def n_windows(self) -> int:
        """Windows (samples) per epoch."""
        if self.sequence is not None:
            return self.sequence.n_windows
        if self.samples is not None:
            return int(self.samples)
        return self.n_set

    @property
    def n_batches(self) -> int:
        if self.sequence is not None:
            return self.sequence.n_batches
        n, b = self.n_windows, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def epoch(self, epoch: int) -> EpochOrder:
        if self.sequence is not None:
            return ExplicitOrder(self, epoch)
        if self.subset is not None or self.samples is not None:
            return SampledOrder(self, epoch)
        return EpochOrder(self, epoch)
