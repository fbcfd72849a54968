"""What a non-primary modality gives the multi-modal stream kind.

Each modality other than the primary is a *part*: one engine input (its
source) and one or more engine variables (:class:`~earthstream.engine.VarLayout`),
plus the arithmetic that maps the primary's samples to boxes of those variables
(:meth:`Part.plan`, vectorized over a span of samples) and turns the frames the
engine fills into the modality's record (:meth:`Part.complete`).  The planner
and assembler of :mod:`._kind` do the rest for every part alike.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from ..engine import VarLayout
from ._open import Primary
from ._spec import MissingModality, RecordInfo

__all__ = ["ArraySpec", "Part", "PartPlan", "Samples"]


class Samples:
    """The samples of a span of batches, as every part sees them.

    ``lat``/``lon``: each sample's window start along the primary's latitude and
    longitude dims (positions in the primary's selection); ``times``: the primary
    time index of each of its input steps ``(n, T)`` (``None`` without a time dim);
    ``bounds``: ``(n, 4)`` west, south, east, north of its footprint (computed when
    first asked for).
    """

    def __init__(
        self, owner: Primary, lat: np.ndarray, lon: np.ndarray, times: np.ndarray | None
    ) -> None:
        self.owner = owner
        self.lat = lat
        self.lon = lon
        self.times = times

    def __len__(self) -> int:
        return len(self.lat)

    @cached_property
    def bounds(self) -> np.ndarray:
        return self.owner.footprints(self.lat, self.lon)


@dataclass
class PartPlan:
    """How a part's variables are read for a span of samples.

    Per engine variable of the part: ``starts`` ``(n, ndim)`` (absolute, in the
    variable's index space; boxes outside the array are not read), ``extents``
    (``None``: the frame) and ``positions`` (see
    :func:`~earthstream.engine.plan_var`).  ``extra``: per-sample arrays (first axis
    ``n``) handed to :meth:`Part.complete` and, for the keys in ``Part.meta``, to
    the batch's coords as ``"<name>/<key>"``.
    """

    starts: list[np.ndarray]
    extents: list[np.ndarray | None]
    positions: list[tuple[np.ndarray | None, ...]]
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ArraySpec:
    """One array a part's batches hold: its key in the batch arrays, per-sample shape
    and dtype.  ``output``: delivered in the batch (with ``dims``); otherwise a frame
    the engine fills, dropped once the record is made."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    output: bool = True
    dims: tuple[str, ...] = ()

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class Part(Protocol):
    """A non-primary modality as the multi-modal kind reads it."""

    name: str
    info: RecordInfo
    missing: MissingModality
    #: the engine input (a gridded source: Zarr, an array, GeoTIFF tiles)
    source: Any
    #: engine variables (``input`` is set by the kind), in the order of ``dest``
    variables: tuple[VarLayout, ...]
    #: keys of ``PartPlan.extra`` delivered as ``batch.coords["<name>/<key>"]``
    meta: tuple[str, ...]

    def arrays(self) -> tuple[ArraySpec, ...]:
        """The arrays one batch of this part holds (records, masks, frames)."""
        ...

    def group_nbytes(self, chunks: Mapping[str, int]) -> int:
        """Decoded bytes of this part the samples of one of the primary's chunk groups
        read (``chunks``: the primary's chunk length per dim), for the shuffle buffer."""
        ...

    def dest(self, data: Mapping[str, np.ndarray], j: int) -> np.ndarray:
        """Where variable ``j`` is cut: an ``(n, *sample shape)`` view into ``data``."""
        ...

    def plan(self, samples: Samples) -> PartPlan:
        """Boxes of every variable for ``samples`` (vectorized; scheduler thread)."""
        ...

    def complete(self, data: MutableMapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        """Make the records from the filled frames, in ``data`` (on a cut thread): zeros
        for samples without data, repeats, warps, decoding."""
        ...
