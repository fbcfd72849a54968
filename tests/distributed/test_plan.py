"""Sharding and resume plans (pure functions): disjoint, complete, even, deterministic.

Hypothesis draws dataset sizes, window grids, batch sizes, seeds, orders, ranks
(1-8) and DataLoader workers (0-3), and checks every (rank, worker) part of an
epoch at the level of window ids, the way a DataLoader consumes it.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from earthstream.errors import ConfigError, ResumeError
from earthstream.sampling import (
    BatchRuns,
    Cursor,
    EpochPlan,
    OrderSpec,
    build_window_grid,
    round_robin_counts,
    round_robin_index,
    round_robin_next,
)

from .helpers import round_robin

grids = st.builds(
    lambda n_t, n_y, w, c_t, c_y: build_window_grid(
        {"t": n_t, "y": n_y}, {"y": min(w, n_y)}, None, "drop", {"t": c_t, "y": c_y}
    ),
    st.integers(1, 30),
    st.integers(1, 12),
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(1, 6),
)
specs = st.builds(
    OrderSpec,
    grid=grids,
    shuffle=st.sampled_from(["none", "chunks", "full"]),
    seed=st.integers(0, 2**32 - 1),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
    shuffle_buffer=st.integers(1, 4),
)
ranks = st.integers(1, 8)
workers = st.integers(0, 3)  # DataLoader num_workers; 0 = in the main process
remainders = st.sampled_from(["pad", "drop"])


def rank_stream(cursor: Cursor, rank: int, num_workers: int) -> list[tuple[int, bool]]:
    """``(global batch, padded)`` in the order a DataLoader hands out rank ``rank``'s batches."""
    cursor = cursor.resume(cursor.plan.world_size, num_workers, cursor.plan.remainder)
    parts = []
    for worker in range(max(1, num_workers)):
        logical, start = cursor.worker_start(worker)
        runs, n_pad = cursor.plan.worker_batches(rank, logical, cursor.num_workers, start)
        parts.append([(j, i >= len(runs) - n_pad) for i, j in enumerate(runs)])
    return list(round_robin(parts))


def epoch_parts(spec: OrderSpec, epoch: int, world: int, num_workers: int, remainder: str):
    cursor = Cursor(epoch, EpochPlan.full(spec.n_batches, world, remainder))
    return {r: rank_stream(cursor, r, num_workers) for r in range(world)}


@settings(max_examples=200, deadline=None)
@given(spec=specs, world=ranks, num_workers=workers, remainder=remainders, epoch=st.integers(0, 3))
def test_ranks_and_workers_split_an_epoch_exactly(spec, world, num_workers, remainder, epoch):
    order = spec.epoch(epoch)
    parts = epoch_parts(spec, epoch, world, num_workers, remainder)
    plan = EpochPlan.full(spec.n_batches, world, remainder)

    # Equal batch counts: every rank yields `steps` batches (a DDP step needs all ranks).
    assert {len(p) for p in parts.values()} == {plan.steps}
    n = spec.n_batches
    assert plan.steps == (-(-n // world) if remainder == "pad" else n // world)

    # Disjoint and complete at the window level: real batches are each served once.
    real = [j for p in parts.values() for j, pad in p if not pad]
    assert len(real) == len(set(real))
    windows = [w for j in real for w in order.batch(j).tolist()]
    assert len(windows) == len(set(windows))
    if remainder == "pad":
        assert sorted(real) == list(range(n))
        assert sorted(windows) == sorted(w for j in range(n) for w in order.batch(j).tolist())
    else:  # drop: fewer than `world` batches are left out, and all else is served
        assert n - len(real) < world
    # Padding repeats a batch the same rank serves (or the next rank's first), at the end.
    for p in parts.values():
        pads = [j for j, pad in p if pad]
        assert len(pads) <= (1 if remainder == "pad" else 0)
        assert not any(pad for _, pad in p[:-1])

    # Ranks take contiguous runs of the epoch (disjoint chunk groups but at the seams).
    for p in parts.values():
        ids = sorted(j for j, pad in p if not pad)
        assert ids == list(range(ids[0], ids[0] + len(ids))) if ids else True

    # Deterministic, and what each rank serves does not depend on the number of workers.
    assert parts == epoch_parts(spec, epoch, world, num_workers, remainder)
    for other in range(4):
        again = epoch_parts(spec, epoch, world, other, remainder)
        for r in range(world):
            assert sorted(again[r]) == sorted(parts[r])
    if num_workers <= 1:  # one stream per rank: the rank's run in epoch order
        for p in parts.values():
            real_ids = [j for j, pad in p if not pad]
            assert real_ids == sorted(real_ids)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 60),
    world=ranks,
    num_workers=workers,
    remainder=remainders,
    data=st.data(),
)
def test_resume_continues_exactly(n, world, num_workers, remainder, data) -> None:
    """Stopping after k steps and resuming on the same layout gives the uninterrupted tail."""
    plan = EpochPlan.full(n, world, remainder)
    k = data.draw(st.integers(0, plan.steps), label="k")
    fresh = Cursor(0, plan)
    full = {r: rank_stream(fresh, r, num_workers) for r in range(world)}
    saved = Cursor(0, plan, max(1, num_workers), k)
    for r in range(world):
        assert rank_stream(saved, r, num_workers) == full[r][k:]


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 60),
    layouts=st.lists(st.tuples(ranks, workers, remainders), min_size=2, max_size=4),
    data=st.data(),
)
def test_resume_on_other_layouts_neither_repeats_nor_loses(n, layouts, data) -> None:
    """Pre-empted after k steps, resumed on another world size / workers, several times:
    over all the pieces every batch is served exactly once (drop: at most world-1 left)."""
    world, num_workers, remainder = layouts[0]
    cursor = Cursor(0, EpochPlan.full(n, world, remainder)).resume(world, num_workers, remainder)
    served: list[int] = []
    for i, (world, num_workers, remainder) in enumerate(layouts):
        cursor = cursor.resume(world, num_workers, remainder)
        plan = cursor.plan
        last = i == len(layouts) - 1
        k = (
            plan.steps
            if last
            else data.draw(st.integers(cursor.position, plan.steps), label=f"k{i}")
        )
        counts = {len(rank_stream(cursor, r, num_workers)) for r in range(world)}
        assert counts == {plan.steps - cursor.position}  # equal counts after every resume
        for r in range(world):
            taken = rank_stream(cursor, r, num_workers)[: k - cursor.position]
            served += [j for j, pad in taken if not pad]
        cursor = Cursor(0, plan, max(1, num_workers), k)
    assert len(served) == len(set(served))
    if remainder == "pad":
        assert sorted(served) == list(range(n))
    else:
        assert set(served) <= set(range(n)) and n - len(served) < world


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5))
def test_round_robin_model(lengths: list[int]) -> None:
    """The closed forms agree with taking items in turn from queues of these lengths."""
    picks = list(round_robin([[(q, t) for t in range(n)] for q, n in enumerate(lengths)]))
    for k in range(len(picks) + 2):
        counts = [sum(1 for q, _ in picks[:k] if q == i) for i in range(len(lengths))]
        assert round_robin_counts(lengths, k) == counts
        assert round_robin_next(lengths, k) == (picks[k][0] if k < len(picks) else None)
    for k, (q, t) in enumerate(picks):
        assert round_robin_index(lengths, q, t) == k


def test_plan_examples() -> None:
    plan = EpochPlan.full(7, world_size=3)  # runs of 2, 2, 3 batches
    assert [list(plan.rank_batches(r)[0]) for r in range(3)] == [[0, 1, 1], [2, 3, 3], [4, 5, 6]]
    drop = EpochPlan.full(7, world_size=3, remainder="drop")
    assert [list(drop.rank_batches(r)[0]) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]
    tiny = EpochPlan.full(1, world_size=3)  # fewer batches than ranks: everyone repeats batch 0
    assert [tuple(tiny.rank_batches(r)[0]) for r in range(3)] == [(0,), (0,), (0,)]
    assert [tiny.rank_batches(r)[1] for r in range(3)] == [1, 1, 0]
    assert EpochPlan.full(0, 4).steps == 0
    rest = EpochPlan(((3, 5), (8, 10)), world_size=1)
    assert list(rest.rank_batches(0)[0]) == [3, 4, 8, 9]
    assert BatchRuns([range(3, 5), range(8, 10)]).ranges == (range(3, 5), range(8, 10))


def test_plan_errors() -> None:
    with pytest.raises(ConfigError, match=r"remainder='even'.*'pad'.*'drop'"):
        EpochPlan.full(3, 2, "even")
    with pytest.raises(ConfigError, match=r"rank 2 is outside 0\.\.1"):
        EpochPlan.full(3, 2).rank_batches(2)
    with pytest.raises(ValueError, match="ascending"):
        EpochPlan(((5, 8), (2, 3)))
    with pytest.raises(ValueError, match="position 9"):
        Cursor(0, EpochPlan.full(10, 2), 1, 9)


def test_worker_state_resumes_only_its_layout() -> None:
    cursor = Cursor(0, EpochPlan.full(10, 2), num_workers=2, position=3, rotation=0, worker=1)
    assert cursor.resume(2, 2, "pad") == cursor
    with pytest.raises(ResumeError, match=r"inside DataLoader worker 1.*world_size=2"):
        cursor.resume(1, 2, "pad")


def test_many_ranks_touch_few_chunk_groups() -> None:
    """Under the block shuffle each rank decodes mostly its own chunk groups."""
    grid = build_window_grid({"t": 64, "y": 32}, {"y": 8}, None, "drop", {"t": 1, "y": 32})
    spec = OrderSpec(grid, "chunks", 5, 4, False, 2)  # groups of 4 windows, 2 per unit
    parts = epoch_parts(spec, 0, 4, 2, "pad")
    order = spec.epoch(0)
    groups = {
        r: {int(t) for j, _ in p for t in grid.starts_of(order.batch(j))[:, 0]}
        for r, p in parts.items()
    }
    for a, b in itertools.combinations(groups.values(), 2):
        assert len(a & b) <= 2  # at most the unit that straddles a seam
