"""Where an epoch stands, as a small dict that survives pre-emption.

A :class:`Cursor` is (epoch, plan, workers, position): the epoch's remaining
global batches (:class:`~earthstream.sampling.EpochPlan`), how many DataLoader
workers per rank took batches in turn, and how many batches every rank has
consumed.  Because DDP steps consume one batch on every rank, all ranks hold
the same cursor: any rank's state resumes all of them.

:meth:`Cursor.resume` turns a saved cursor into the start of the next
iteration.  With the same world size and number of workers it continues the
plan where it stopped, so the batches that follow are exactly those an
uninterrupted run would have yielded.  With another layout it computes the
batches no rank has served yet and splits those over the new ranks: the epoch
continues without repeating or losing a batch.

The state a stream saves::

    {"format": "earthstream.stream-state", "version": 1,
     "dataset": "<fingerprint of variables, shapes, chunks, window grid, coords>",
     "settings": {"n_windows": ..., "batch_size": ..., "drop_last": ...,
                  "shuffle": ..., "shuffle_buffer": ...},
     "seed": 0, "epoch": 3, "position": 17,
     "pending": [[0, 412]], "world_size": 8, "remainder": "pad", "num_workers": 2}

plus ``"worker": {"id": i, "rotation": r}`` when it was taken inside a
DataLoader worker (torchdata's ``StatefulDataLoader`` asks each worker).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ResumeError
from ._plan import REMAINDERS, EpochPlan, round_robin_counts, round_robin_next

__all__ = ["STATE_FORMAT", "STATE_VERSION", "Cursor", "cursor_from_state"]

STATE_FORMAT = "earthstream.stream-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class Cursor:
    """Progress through one epoch: the plan, the worker layout and the batches consumed.

    Parameters
    ----------
    epoch
        The epoch.
    plan
        The global batches left when this split began, and how ranks split them.
    num_workers
        Workers per rank taking batches in turn (1 without worker processes).
    position
        Batches every rank has consumed from ``plan``.
    rotation
        DataLoader worker ``i`` serves the plan's worker ``(i + rotation) %
        num_workers``; None until an iteration starts (it is chosen so that a
        fresh ``DataLoader``, which starts with worker 0, continues the
        interrupted round-robin order).
    worker
        The DataLoader worker the state was taken in, when it was (worker-level
        states only resume that same worker).

    Examples
    --------
    Two ranks split 10 batches (0-4 and 5-9); two workers per rank split each
    run (slots 0-1 and 2-4).  After 3 batches per rank, taken in turn, worker 0
    served slots 0, 1 and worker 1 slot 2:

    >>> c = Cursor(0, EpochPlan.full(10, world_size=2), num_workers=2, position=3)
    >>> nxt = c.resume(world_size=2, num_workers=2, remainder="pad")  # same layout: continue
    >>> nxt.position, nxt.rotation  # worker 1 yields next, so DataLoader worker 0 serves it
    (3, 1)
    >>> c.resume(world_size=1, num_workers=0, remainder="pad").plan.pending  # 2 ranks -> 1
    ((3, 5), (8, 10))
    """

    epoch: int
    plan: EpochPlan
    num_workers: int = 1
    position: int = 0
    rotation: int | None = None
    worker: int | None = None

    def __post_init__(self) -> None:
        self.plan.check_position(self.num_workers, self.position)

    @property
    def finished(self) -> bool:
        """Every rank has consumed all of its batches of this epoch."""
        return self.position >= self.plan.steps

    @property
    def lengths(self) -> list[int]:
        """Batches each worker of a rank serves."""
        return self.plan.worker_lengths(self.num_workers)

    def resume(self, world_size: int, num_workers: int, remainder: str) -> Cursor:
        """The start of an iteration by ``world_size`` ranks of ``num_workers`` workers each.

        ``num_workers`` 0 (no worker processes) counts as 1.
        """
        num_workers = max(1, num_workers)
        plan = self.plan
        if self.position == 0:
            fresh = EpochPlan(plan.pending, world_size, remainder)
            return Cursor(self.epoch, fresh, num_workers, 0, 0)
        same = (plan.world_size, self.num_workers, plan.remainder) == (
            world_size,
            num_workers,
            remainder,
        )
        if same:
            rotation = self.rotation
            if rotation is None:
                rotation = round_robin_next(self.lengths, self.position) or 0
            return dataclasses.replace(self, rotation=rotation)
        if self.worker is not None:
            raise ResumeError(
                f"this state was taken inside DataLoader worker {self.worker} (by torchdata's "
                f"StatefulDataLoader) with world_size={plan.world_size}, "
                f"num_workers={self.num_workers}, remainder={plan.remainder!r}; it resumes only "
                f"that layout, not world_size={world_size}, num_workers={num_workers}, "
                f"remainder={remainder!r}. To change the layout, load the loader's whole state "
                "into the dataset instead (dataset.load_state_dict(loader.state_dict())) and "
                "iterate a fresh loader."
            )
        rest = plan.resplit(self.num_workers, self.position, world_size, remainder)
        return Cursor(self.epoch, rest, num_workers, 0, 0)

    def worker_start(self, worker: int) -> tuple[int, int]:
        """``(plan worker, batches it already served)`` for DataLoader worker ``worker``."""
        if self.rotation is None:
            raise RuntimeError("resume() the cursor before iterating it")
        logical = (worker + self.rotation) % self.num_workers
        return logical, round_robin_counts(self.lengths, self.position)[logical]

    # -- the saved form -------------------------------------------------------------
    def to_state(self, dataset: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "dataset": dataset,
            "settings": dict(settings),
            "seed": seed,
            "epoch": self.epoch,
            "position": self.position,
            "pending": [[a, b] for a, b in self.plan.pending],
            "world_size": self.plan.world_size,
            "remainder": self.plan.remainder,
            "num_workers": self.num_workers,
        }
        if self.worker is not None:
            state["worker"] = {"id": self.worker, "rotation": self.rotation}
        return state


#: Bounds of a saved state's counts (a damaged state must not plan for a billion workers).
_MAX_WORKERS = 4096
_MAX_WORLD_SIZE = 2**20


def _int(state: Mapping[str, Any], key: str, low: int = 0, high: int | None = None) -> int:
    value = state.get(key)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ResumeError(
            f"the stream state's {key!r} is {value!r}, not a whole number {bounds}; the state "
            "is damaged. Pass the dict that state_dict() returned, unchanged."
        )
    return value


def cursor_from_state(
    state: Any, dataset: str, settings: Mapping[str, Any], seed: int, n_batches: int
) -> Cursor:
    """Check a saved state against this stream and turn it into a :class:`Cursor`.

    Refuses, with :class:`~earthstream.errors.ResumeError`, a state of another
    dataset, other order settings or another seed, and damaged states.
    """
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        keys = sorted(state)[:8] if isinstance(state, Mapping) else type(state).__name__
        raise ResumeError(
            f"not an earthstream stream state (got {keys}); pass the dict that "
            "Stream.state_dict(), TorchStream.state_dict() or the loader's state_dict() returned."
        )
    version = state.get("version")
    if version != STATE_VERSION:
        raise ResumeError(
            f"the stream state has format version {version!r}; this earthstream reads version "
            f"{STATE_VERSION}. Resume with the earthstream version that saved it."
        )
    if state.get("dataset") != dataset:
        saved_settings = state.get("settings")
        saved_n = saved_settings.get("n_windows") if isinstance(saved_settings, Mapping) else None
        raise ResumeError(
            f"the stream state belongs to another dataset (fingerprint "
            f"{state.get('dataset')!r} with {saved_n} windows; this stream: {dataset!r} with "
            f"{settings.get('n_windows')}): the variables, their shapes, dtypes or chunks, the "
            "window grid or the coordinates differ. Resume on the dataset and windows the "
            "state was saved with."
        )
    saved = state.get("settings")
    if not isinstance(saved, Mapping):
        raise ResumeError("the stream state has no 'settings'; the state is damaged.")
    differ = [k for k in settings if saved.get(k) != settings[k]]
    if differ:
        pairs = ", ".join(f"{k}={saved.get(k)!r} (this stream: {settings[k]!r})" for k in differ)
        hint = (
            " shuffle_buffer is chosen from memory_limit unless given; pass "
            f"shuffle_buffer={saved.get('shuffle_buffer')!r} explicitly."
            if "shuffle_buffer" in differ
            else ""
        )
        raise ResumeError(
            f"the stream state was saved by a stream with other order settings: {pairs}. "
            f"Create the stream with the saved settings to resume its epoch.{hint}"
        )
    if state.get("seed") != seed:
        raise ResumeError(
            f"the stream state was saved with seed={state.get('seed')!r}; this stream has "
            f"seed={seed}. Create the stream with seed={state.get('seed')!r} to resume."
        )
    remainder = state.get("remainder")
    if remainder not in REMAINDERS:
        raise ResumeError(f"the stream state's remainder {remainder!r} is not one of {REMAINDERS}.")
    pending = state.get("pending")
    try:
        runs = tuple((int(a), int(b)) for a, b in pending or ())
        if any(not 0 <= a < b for a, b in runs) or any(
            b > c for (_, b), (c, _) in itertools.pairwise(runs)
        ):
            raise ResumeError(
                f"the stream state's pending batches {pending} are not ascending, disjoint "
                "runs [start, stop); the state is damaged."
            )
        plan = EpochPlan(runs, _int(state, "world_size", 1, _MAX_WORLD_SIZE), remainder)
        worker = state.get("worker")
        cursor = Cursor(
            epoch=_int(state, "epoch"),
            plan=plan,
            num_workers=_int(state, "num_workers", 1, _MAX_WORKERS),
            position=_int(state, "position"),
            rotation=None if worker is None else int(worker["rotation"]),
            worker=None if worker is None else int(worker["id"]),
        )
    except ResumeError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ResumeError(
            f"the stream state is damaged ({exc}); pass the dict that state_dict() returned."
        ) from exc
    if plan.pending and plan.pending[-1][1] > n_batches:
        raise ResumeError(
            f"the stream state's pending batches {pending} reach past the {n_batches} batches "
            "of an epoch; the state is damaged."
        )
    return cursor
