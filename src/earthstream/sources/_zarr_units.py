"""Read units of sharded Zarr v3 arrays: several inner chunks of one shard as one block.

A shard's inner chunks are often small (a few hundred KB).  Read one by one,
the engine would schedule, cache and cut many small blocks, and every window
that crosses an inner chunk's border would be cut in pieces.  So the engine
sees a grid of *read units* instead: whole numbers of inner chunks along each
dim, never crossing a shard's border, bounded in bytes.  A unit is fetched with
the inner chunks' byte ranges (merged into one request where they are adjacent)
and each inner chunk is decoded into its own region of the unit's cache slot.

The rule (:func:`choose_read_unit`): starting from the last dim (the one
contiguous in memory), take as many inner chunks of the shard along it as fit in
``max_bytes`` (a divisor of the shard's inner chunks along that dim, so units
tile the shard); only when a dim holds its whole shard extent does the unit grow
along the dim before it.  The default bound is :data:`READ_UNIT_BYTES` (4 MiB):
for ERA5-like shards of ``24 x 723 x 1440`` float32 with inner chunks of
``1 x 241 x 360`` a unit is one time step of the shard, ``1 x 723 x 1440`` (12
inner chunks, 4.2 MB).  ``open_zarr(..., read_unit_bytes=0)`` reads inner
chunks one by one.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from ._zarr_codecs import RawChunk, ZarrArraySpec

__all__ = ["READ_UNIT_BYTES", "UnitPart", "UnitRaw", "choose_read_unit", "unit_parts"]

#: The default bound of a read unit's decoded bytes.
READ_UNIT_BYTES = 4 << 20


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_read_unit(spec: ZarrArraySpec, itemsize: int, max_bytes: int) -> ZarrArraySpec:
    """``spec`` with its read unit chosen (unchanged for arrays that are not sharded,
    or when no more than one inner chunk fits ``max_bytes``).

    ``itemsize``: bytes per delivered value (after CF decoding).

    >>> from earthstream.sources._zarr_codecs import ShardSpec
    >>> shard = ShardSpec((1, 241, 360), (24, 3, 4), "end", True, False)
    >>> spec = ZarrArraySpec("t2m", (48, 721, 1440), "<f4", (1, 241, 360), (24, 723, 1440),
    ...                      None, 3, "c/", "/", (), shard=shard)
    >>> choose_read_unit(spec, 4, 4 << 20).unit_chunks
    (1, 723, 1440)
    >>> choose_read_unit(spec, 4, 9 << 20).unit_chunks
    (2, 723, 1440)
    >>> choose_read_unit(spec, 4, 2 << 20).unit_chunks
    (1, 241, 1440)
    >>> choose_read_unit(spec, 4, 0).read_unit is None
    True
    """
    shard = spec.shard
    if shard is None or not spec.fast:
        return dataclasses.replace(spec, read_unit=None)
    ndim = len(spec.chunks)
    unit = [1] * ndim

    def nbytes(trial: list[int]) -> int:
        size = itemsize
        for c, k in zip(spec.chunks, trial, strict=True):
            size *= c * k
        return size

    for d in reversed(range(ndim)):
        # no more inner chunks along d than the array holds (edge shards)
        needed = max(1, -(-spec.shape[d] // spec.chunks[d]))
        for k in _divisors(shard.chunks_per_shard[d]):
            trial = unit.copy()
            trial[d] = k
            if nbytes(trial) > max_bytes:
                break
            unit = trial
            if k >= needed:
                break
        if unit[d] * spec.chunks[d] < min(spec.grid_chunks[d], spec.shape[d]):
            break  # dim d does not hold its shard: the unit stays contiguous rows
    read_unit = tuple(unit) if any(k > 1 for k in unit) else None
    return dataclasses.replace(spec, read_unit=read_unit)


@dataclass(frozen=True)
class UnitPart:
    """One inner chunk of a read unit: its chunk-grid index and its region in the unit."""

    index: tuple[int, ...]
    region: tuple[slice, ...]


def unit_parts(spec: ZarrArraySpec, unit_index: tuple[int, ...]) -> list[UnitPart]:
    """The inner chunks of read unit ``unit_index`` that overlap the array, in C order.

    Inner chunks wholly past the array's end are left out: they are never stored
    and hold no value of the array.
    """
    assert spec.read_unit is not None
    ranges = []
    for u, k, c, s in zip(unit_index, spec.read_unit, spec.chunks, spec.shape, strict=True):
        first = u * k
        stop = min(first + k, max(first + 1, -(-s // c)))
        ranges.append(range(first, stop))
    parts = []
    for index in itertools.product(*ranges):
        region = tuple(
            slice((i % k) * c, (i % k + 1) * c)
            for i, k, c in zip(index, spec.read_unit, spec.chunks, strict=True)
        )
        parts.append(UnitPart(tuple(index), region))
    return parts


@dataclass(frozen=True)
class UnitRaw:
    """The stored bytes of a read unit's inner chunks (``None``: that chunk is not stored)."""

    parts: tuple[UnitPart, ...]
    raws: tuple[RawChunk | None, ...]
