"""Splitting an epoch over ranks and DataLoader workers, and resuming it part-way.

An epoch is one sequence of *global batches* (:mod:`._order`): batch ``j``
holds the same windows whatever the number of processes.  An
:class:`EpochPlan` says which global batches the epoch still has to serve
(``pending``: ascending runs of batch indices; all of them at the start of an
epoch) and how ``world_size`` ranks split them:

- Rank ``r`` serves a contiguous run of the pending batches (positions
  ``shard_range(n, r, world_size)``), so ranks decode disjoint chunk groups
  except where two runs meet.
- Every rank yields the same number of batches, :attr:`EpochPlan.steps` (a
  DDP step needs every rank).  Runs differ in length by at most one:
  ``remainder="pad"`` lengthens the short runs by repeating their last batch
  (flagged as padding; its chunks are still cached), ``remainder="drop"``
  shortens the long ones by leaving their last batch out of this epoch.
- Within a rank, DataLoader worker ``w`` of ``W`` serves the contiguous run of
  the rank's batches ``shard_range(steps, w, W)``.  A ``DataLoader`` takes one
  batch from each worker in turn (``in_order=True``), so after ``k`` batches a
  rank has consumed :func:`round_robin_counts` of each worker's run: that,
  plus the plan, is the whole resume state.

Everything here is integer arithmetic on a handful of ranges: pure,
picklable, and the same in every process.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

from ..errors import ConfigError
from ._epoch import shard_range

__all__ = [
    "REMAINDERS",
    "Remainder",
    "BatchRuns",
    "EpochPlan",
    "round_robin_counts",
    "round_robin_index",
    "round_robin_next",
]

#: What ranks with one batch less do: repeat their last batch, or drop the extra ones.
Remainder = Literal["pad", "drop"]
REMAINDERS: tuple[Remainder, ...] = ("pad", "drop")


class BatchRuns(Sequence[int]):
    """Global batch indices as a few runs of consecutive indices, in order.

    >>> runs = BatchRuns([range(3, 6), range(9, 11)])
    >>> list(runs), len(runs), runs[3]
    ([3, 4, 5, 9, 10], 5, 9)
    """

    def __init__(self, runs: Iterable[range] = ()) -> None:
        self.ranges: tuple[range, ...] = tuple(r for r in runs if len(r))
        for r in self.ranges:
            if r.step != 1:
                raise ValueError(f"{r} is not a run of consecutive indices")
        self._ends = list(itertools.accumulate(len(r) for r in self.ranges))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        if isinstance(i, slice):
            return list(self)[i]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        r = bisect.bisect_right(self._ends, i)
        before = self._ends[r - 1] if r else 0
        return self.ranges[r][i - before]

    def __iter__(self) -> Iterator[int]:
        return itertools.chain.from_iterable(self.ranges)

    def __repr__(self) -> str:
        body = ", ".join(f"{r.start}..{r.stop - 1}" for r in self.ranges)
        return f"BatchRuns[{body}]"


# -- round-robin consumption ----------------------------------------------------------
def round_robin_counts(lengths: Sequence[int], k: int) -> list[int]:
    """Items taken from each queue after ``k`` round-robin picks.

    Picks go to queues ``0, 1, ...`` in turn, one item each, skipping empty
    queues, as a ``DataLoader`` (``in_order=True``) takes batches from its
    workers.

    >>> round_robin_counts([3, 1, 2], 4)
    [2, 1, 1]
    """
    counts = [0] * len(lengths)
    if k <= 0:
        return counts
    done = 0  # full rounds so far
    for level in sorted(set(lengths)):
        active = [i for i, n in enumerate(lengths) if n > done]
        if not active:
            break
        span = (level - done) * len(active)
        if k >= span:
            k -= span
            done = level
            continue
        full, rest = divmod(k, len(active))
        for j, i in enumerate(active):
            counts[i] = done + full + (1 if j < rest else 0)
        for i, n in enumerate(lengths):
            if n <= done:
                counts[i] = n
        return counts
    return [min(n, done) for n in lengths]


def round_robin_next(lengths: Sequence[int], k: int) -> int | None:
    """The queue that gives pick ``k`` (0-based), or None once all are empty.

    >>> [round_robin_next([3, 1, 2], k) for k in range(7)]
    [0, 1, 2, 0, 2, 0, None]
    """
    counts = round_robin_counts(lengths, k)
    behind = [i for i, (c, n) in enumerate(zip(counts, lengths, strict=True)) if c < n]
    if not behind:
        return None
    low = min(counts[i] for i in behind)
    return next(i for i in behind if counts[i] == low)


def round_robin_index(lengths: Sequence[int], queue: int, t: int) -> int:
    """The pick (0-based) that takes item ``t`` of ``queue``.

    >>> round_robin_index([3, 1, 2], 0, 2), round_robin_index([3, 1, 2], 2, 1)
    (5, 4)
    """
    before = sum(min(n, t) for n in lengths)
    return before + sum(1 for i in range(queue) if lengths[i] > t)


# -- the plan --------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochPlan:
    """The global batches an epoch still serves, and how ranks and workers split them.

    Parameters
    ----------
    pending
        Ascending, disjoint ``(start, stop)`` runs of global batch indices.
    world_size
        Number of ranks that split them.
    remainder
        ``"pad"`` or ``"drop"``: how runs of unequal length are evened out.

    Examples
    --------
    >>> plan = EpochPlan.full(9, world_size=2)
    >>> plan.steps, [list(plan.rank_batches(r)[0]) for r in range(2)]
    (5, [[0, 1, 2, 3, 3], [4, 5, 6, 7, 8]])
    >>> plan.rank_batches(0)[1]  # rank 0's last batch repeats batch 3, as padding
    1
    >>> EpochPlan.full(9, world_size=2, remainder="drop").rank_batches(1)[0]
    BatchRuns[4..7]
    """

    pending: tuple[tuple[int, int], ...]
    world_size: int = 1
    remainder: str = "pad"
    _ends: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.remainder not in REMAINDERS:
            raise ConfigError(
                f"remainder={self.remainder!r} is not a policy; use 'pad' (repeat a batch on "
                "ranks with one batch less, flagged as padding) or 'drop' (leave the extra "
                "batches out of the epoch)."
            )
        if self.world_size < 1:
            raise ConfigError(f"world_size={self.world_size} must be at least 1.")
        runs = tuple((int(a), int(b)) for a, b in self.pending if b > a)
        for (_, b), (a, _) in itertools.pairwise(runs):
            if a < b:
                raise ValueError(f"pending runs {self.pending} are not ascending and disjoint")
        if runs and runs[0][0] < 0:
            raise ValueError(f"pending runs {self.pending} hold a negative batch index")
        object.__setattr__(self, "pending", runs)
        object.__setattr__(self, "_ends", tuple(itertools.accumulate(b - a for a, b in runs)))

    @classmethod
    def full(cls, n_batches: int, world_size: int = 1, remainder: str = "pad") -> EpochPlan:
        """A whole epoch of ``n_batches`` global batches."""
        return cls(((0, n_batches),), world_size, remainder)

    # -- sizes ------------------------------------------------------------------------
    @property
    def n_pending(self) -> int:
        """Global batches this plan serves (before padding or dropping)."""
        return self._ends[-1] if self._ends else 0

    @property
    def steps(self) -> int:
        """Batches every rank yields."""
        n, ranks = self.n_pending, self.world_size
        return -(-n // ranks) if self.remainder == "pad" else n // ranks

    def worker_lengths(self, num_workers: int) -> list[int]:
        """Batches each of ``num_workers`` workers of a rank serves (the same on every rank)."""
        return [len(shard_range(self.steps, w, num_workers)) for w in range(num_workers)]

    # -- positions -> batch indices ---------------------------------------------------
    def _runs(self, start: int, stop: int) -> list[range]:
        """Global batch indices at pending positions ``start:stop``."""
        out = []
        i = bisect.bisect_right(self._ends, start)
        while start < stop and i < len(self.pending):
            before = self._ends[i - 1] if i else 0
            a, b = self.pending[i]
            lo = a + start - before
            hi = min(b, a + stop - before)
            out.append(range(lo, hi))
            start += hi - lo
            i += 1
        return out

    def _rank_positions(self, rank: int) -> tuple[range, int | None]:
        """Pending positions rank ``rank`` serves, and the position it repeats as padding."""
        run = shard_range(self.n_pending, rank, self.world_size)
        steps = self.steps
        if len(run) > steps:  # drop: leave the last batch out
            return run[:steps], None
        if len(run) < steps:  # pad: repeat the last batch (or the next rank's first)
            return run, run.stop - 1 if len(run) else run.start
        return run, None

    def rank_batches(self, rank: int, slots: range | None = None) -> tuple[BatchRuns, int]:
        """Global batch indices rank ``rank`` serves at ``slots`` (default: all ``steps``).

        Returns the indices, in order, and how many at the end are padding (0 or 1).
        """
        if not 0 <= rank < self.world_size:
            raise ConfigError(f"rank {rank} is outside 0..{self.world_size - 1}.")
        real, pad = self._rank_positions(rank)
        slots = range(self.steps) if slots is None else slots
        first, last = max(slots.start, 0), min(slots.stop, len(real))
        runs = self._runs(real.start + first, real.start + last) if last > first else []
        padded = 0
        if pad is not None and slots.start <= len(real) < slots.stop:
            runs += self._runs(pad, pad + 1)
            padded = 1
        return BatchRuns(runs), padded

    def worker_batches(
        self, rank: int, worker: int, num_workers: int, start: int = 0
    ) -> tuple[BatchRuns, int]:
        """Batches worker ``worker`` of ``num_workers`` on ``rank`` serves, from its ``start``th."""
        slots = shard_range(self.steps, worker, num_workers)
        return self.rank_batches(rank, slots[start:])

    # -- resuming -----------------------------------------------------------------------
    def check_position(self, num_workers: int, position: int) -> None:
        if not 0 <= position <= self.steps or num_workers < 1:
            raise ValueError(
                f"position {position} is outside 0..{self.steps} (or num_workers={num_workers} < 1)"
            )

    def remaining(self, num_workers: int, position: int) -> tuple[tuple[int, int], ...]:
        """Pending batches no rank has served after each consumed ``position`` batches.

        Every rank is assumed to have consumed the same number of batches (as in
        DDP, where each step takes one batch on every rank), through
        ``num_workers`` workers taken in turn.  Batches left out by
        ``remainder="drop"`` are still remaining.
        """
        self.check_position(num_workers, position)
        counts = round_robin_counts(self.worker_lengths(num_workers), position)
        served: list[tuple[int, int]] = []  # pending positions, possibly out of order
        for rank in range(self.world_size):
            real, _ = self._rank_positions(rank)
            for worker, done in enumerate(counts):
                slots = shard_range(self.steps, worker, num_workers)
                lo = real.start + slots.start
                hi = real.start + min(slots.start + done, len(real))
                if hi > lo:
                    served.append((lo, hi))
        left: list[tuple[int, int]] = []
        cursor = 0
        for lo, hi in sorted(served):
            if lo > cursor:
                left.append((cursor, lo))
            cursor = max(cursor, hi)
        if cursor < self.n_pending:
            left.append((cursor, self.n_pending))
        out: list[tuple[int, int]] = []
        for lo, hi in left:
            for r in self._runs(lo, hi):
                if out and out[-1][1] == r.start:
                    out[-1] = (out[-1][0], r.stop)
                else:
                    out.append((r.start, r.stop))
        return tuple(out)

    def resplit(
        self, num_workers: int, position: int, world_size: int, remainder: str | None = None
    ) -> EpochPlan:
        """What is left after ``position`` batches per rank, split over ``world_size`` ranks."""
        return EpochPlan(
            self.remaining(num_workers, position), world_size, remainder or self.remainder
        )
