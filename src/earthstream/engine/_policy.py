"""Chunk policies: what a pass does with chunks that are not stored, or do not decode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._validate import CORRUPT, MISSING, Corrupt, Missing, check_choice, check_whole

__all__ = ["ChunkPolicy", "CorruptCount"]


@dataclass(frozen=True)
class ChunkPolicy:
    """What to do with chunks that are not stored, or do not decode.

    ``missing``: ``"fill"`` (Zarr's meaning: the fill value) or ``"error"``.
    ``corrupt``: ``"error"`` or ``"skip"`` (the samples that read the chunk are
    dropped, counted and logged; more than ``max_corrupt`` corrupt chunks in a
    pass stop it).

    >>> ChunkPolicy(corrupt="skip").missing
    'fill'
    """

    missing: Missing = "fill"
    corrupt: Corrupt = "error"
    max_corrupt: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing", check_choice(self.missing, "missing", MISSING))
        object.__setattr__(self, "corrupt", check_choice(self.corrupt, "corrupt", CORRUPT))
        object.__setattr__(self, "max_corrupt", check_whole(self.max_corrupt, "max_corrupt"))


class CorruptCount(Protocol):
    """Corrupt chunks counted across processes (the DataLoader workers of one rank)."""

    def add(self, n: int) -> int:
        """Count ``n`` more; the total so far."""
        ...
