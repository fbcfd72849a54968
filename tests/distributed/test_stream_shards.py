"""Stream sharding and resume end to end (real engine, in-memory arrays).

DataLoader workers are simulated as separate copies of the stream (what a
worker process holds), consumed in turn as a DataLoader does.
"""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import earthstream as es
from earthstream.errors import ConfigError, ResumeError

from .helpers import round_robin

VALUES = np.arange(23 * 6 * 5, dtype="f4").reshape(23, 6, 5)


def source(values: np.ndarray = VALUES, **coords: np.ndarray) -> es.ArraySource:
    return es.ArraySource({"x": (("t", "y", "z"), values)}, chunks={"t": 3, "y": 3}, coords=coords)


def make(src: es.ArraySource | None = None, **kwargs) -> es.Stream:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("seed", 7)
    kwargs.setdefault("shuffle_buffer", 2)
    kwargs.setdefault("num_threads", 1)
    return es.Stream(src or source(), {"y": 3, "z": 5}, **kwargs)


def copy(stream: es.Stream) -> es.Stream:
    return pickle.loads(pickle.dumps(stream))


def rank_batches(stream: es.Stream, num_workers: int, stop: int | None = None) -> list[es.Batch]:
    """What a DataLoader with ``num_workers`` workers hands out on this stream's rank."""
    if num_workers == 0:
        it = iter(stream)
    else:
        it = round_robin(copy(stream).iter_worker(w, num_workers) for w in range(num_workers))
    return list(itertools.islice(it, stop))


def check_values(batch: es.Batch) -> None:
    for i in range(batch.size):
        t, y = int(batch.starts["t"][i]), int(batch.starts["y"][i])
        np.testing.assert_array_equal(batch["x"][i], VALUES[t, y : y + 3, :])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_t=st.integers(1, 23),
    world=st.integers(1, 8),
    num_workers=st.integers(0, 3),
    batch_size=st.integers(1, 7),
    seed=st.integers(0, 2**16),
    shuffle=st.sampled_from([False, "chunks", "full"]),
    remainder=st.sampled_from(["pad", "drop"]),
)
def test_every_window_once_over_ranks_and_workers(
    n_t, world, num_workers, batch_size, seed, shuffle, remainder
) -> None:
    src = source(VALUES[:n_t])
    counts, real, padded = [], [], []
    for rank in range(world):
        stream = make(
            src,
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            rank=rank,
            world_size=world,
            remainder=remainder,
        )
        batches = rank_batches(stream, num_workers)
        counts.append(len(batches))
        for b in batches:
            assert b.padded.shape == (b.size,) and b.padded.dtype == bool
            assert b.padded.all() or not b.padded.any()  # whole batches are padding
            (padded if b.padded.any() else real).extend(b.window_ids.tolist())
            check_values(b)
    n = make(src, batch_size=batch_size).n_windows
    assert set(counts) == {len(stream)}  # every rank the same number of batches
    assert len(real) == len(set(real))  # disjoint
    if remainder == "pad":
        assert sorted(real) == list(range(n))  # complete
        assert set(padded) <= set(real)  # padding repeats declared windows
    else:
        assert not padded and n - len(real) < world * batch_size


@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [0, 1, 3, 5, 7])
def test_resume_after_k_batches_yields_the_uninterrupted_tail(num_workers: int, k: int) -> None:
    full = rank_batches(make(), num_workers)
    stream = make()
    head = rank_batches(stream, num_workers, stop=k)
    if num_workers:  # the main process counts what the DataLoader handed out
        state = _state_after(stream, num_workers, k)
    else:
        state = stream.state_dict()
    state = json.loads(json.dumps(state))  # a checkpoint survives JSON
    assert state["position"] == k and state["seed"] == 7 and state["epoch"] == 0

    resumed = make()
    resumed.load_state_dict(state)
    tail = rank_batches(resumed, num_workers)
    assert [b.index for b in head + tail] == [b.index for b in full]
    for a, b in zip(tail, full[k:], strict=True):
        np.testing.assert_array_equal(a.window_ids, b.window_ids)
        np.testing.assert_array_equal(a["x"], b["x"])


def _state_after(stream: es.Stream, num_workers: int, k: int) -> dict:
    """The state a main process records after handing out k batches from its workers."""
    cursor = stream._hand_over(num_workers)
    stream._consumed(cursor, cursor.position + k)
    return stream.state_dict()


@pytest.mark.parametrize(
    ("before", "after"), [((2, 2), (1, 0)), ((1, 2), (2, 2)), ((3, 1), (2, 3)), ((2, 0), (4, 1))]
)
@pytest.mark.parametrize("remainder", ["pad", "drop"])
def test_resume_on_another_world_size(before, after, remainder) -> None:
    """k steps on `before` ranks, the rest of the epoch on `after`: nothing repeated or lost."""
    (world, workers), (world2, workers2) = before, after
    k = 2
    served = []
    for rank in range(world):
        stream = make(rank=rank, world_size=world, remainder=remainder, batch_size=3)
        served += [
            i
            for b in rank_batches(stream, workers, stop=k)
            for i in b.window_ids[~b.padded].tolist()
        ]
    saved = make(rank=0, world_size=world, remainder=remainder, batch_size=3)
    state = _state_after(saved, workers, k) if workers else _iterate_state(saved, k)
    counts = []
    for rank in range(world2):
        stream = make(rank=rank, world_size=world2, remainder=remainder, batch_size=3)
        stream.load_state_dict(state)
        batches = rank_batches(stream, workers2)
        counts.append(len(batches))
        served += [i for b in batches for i in b.window_ids[~b.padded].tolist()]
    assert len(set(counts)) == 1
    assert len(served) == len(set(served))
    n = make().n_windows
    if remainder == "pad":
        assert sorted(served) == list(range(n))
    else:
        assert n - len(served) < 3 * max(world, world2)


def _iterate_state(stream: es.Stream, k: int) -> dict:
    it = iter(stream)
    for _ in range(k):
        next(it)
    return stream.state_dict()


def test_state_at_the_end_of_an_epoch_and_set_epoch() -> None:
    stream = make()
    indices = [b.index for b in stream]
    state = stream.state_dict()
    assert state["position"] == len(stream) == len(indices)
    again = make()
    again.load_state_dict(state)
    assert again.next_epoch == 1  # the epoch is done: the next iteration starts epoch 1
    assert {b.epoch for b in again} == {1}
    kept = make()
    kept.load_state_dict(state)
    kept.set_epoch(0)  # the loop's set_epoch of the saved epoch keeps it: nothing left
    assert list(kept) == []
    kept.set_epoch(1)  # the next epoch starts from its beginning
    assert kept.state_dict()["position"] == 0
    assert sorted(b.index for b in kept) == sorted(indices)

    mid = make()
    mid.set_epoch(2)
    it = iter(mid)
    next(it)
    state = mid.state_dict()
    assert (state["epoch"], state["position"]) == (2, 1)
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    resumed.set_epoch(2)  # the loop's usual set_epoch keeps the loaded position
    assert len(list(resumed)) == len(resumed) - 1
    other = make()
    other.load_state_dict(state)
    other.set_epoch(3)  # another epoch drops it
    assert len(list(other)) == len(other)


def test_padding_is_flagged_and_repeats_the_ranks_last_batch() -> None:
    streams = [make(rank=r, world_size=4, batch_size=5) for r in range(4)]
    n_batches = streams[0].n_batches  # 23 * 2 windows / 5 = 10 batches over 4 ranks
    assert n_batches == 10 and len(streams[0]) == 3
    per_rank = [list(s) for s in streams]
    for batches in per_rank:
        assert len(batches) == 3
    short = [b for b in per_rank if b[-1].padded.all()]
    assert len(short) == 2  # 10 = 3 + 3 + 2 + 2: two ranks repeat their last batch
    for batches in short:
        assert batches[-1].index == batches[-2].index
        np.testing.assert_array_equal(batches[-1]["x"], batches[-2]["x"])
        assert "padded=5" in repr(batches[-1])
    dropped = [list(make(rank=r, world_size=4, batch_size=5, remainder="drop")) for r in range(4)]
    assert {len(b) for b in dropped} == {2}


def test_placement_from_arguments_and_errors() -> None:
    stream = make(rank=1, world_size=3)
    assert (stream.rank, stream.world_size) == (1, 3)
    assert "rank 1 of 3" in repr(stream)
    assert make().placement() == (0, 1)  # no torch.distributed group: one rank
    with pytest.raises(ConfigError, match="give both"):
        make(rank=1)
    with pytest.raises(ConfigError, match=r"rank=3 must be a whole number in 0..2"):
        make(rank=3, world_size=3)
    with pytest.raises(ConfigError, match="world_size=0"):
        make(rank=0, world_size=0)
    with pytest.raises(ConfigError, match="remainder='even'"):
        make(remainder="even")
    with pytest.raises(ConfigError, match=r"worker=2 must be a whole number in 0\.\.1"):
        make().iter_worker(2, 2)


def test_states_of_other_datasets_and_settings_are_refused() -> None:
    stream = make()
    it = iter(stream)
    next(it)
    state = stream.state_dict()

    with pytest.raises(ResumeError, match="another dataset"):
        make(source(VALUES[:20])).load_state_dict(state)
    with pytest.raises(ResumeError, match="another dataset"):
        make(source(t=np.arange(23) + 1)).load_state_dict(state)  # other coordinates
    with pytest.raises(ResumeError, match=r"batch_size=4 \(this stream: 5\)"):
        make(batch_size=5).load_state_dict(state)
    with pytest.raises(ResumeError, match=r"shuffle='chunks' \(this stream: 'full'\)"):
        make(shuffle="full").load_state_dict(state)
    with pytest.raises(ResumeError, match="pass shuffle_buffer=2 explicitly"):
        make(shuffle_buffer=3).load_state_dict(state)
    with pytest.raises(ResumeError, match="seed=7; this stream has seed=8"):
        make(seed=8).load_state_dict(state)
    with pytest.raises(ResumeError, match="not an earthstream stream state"):
        make().load_state_dict({"epoch": 1})
    with pytest.raises(ResumeError, match="not an earthstream stream state"):
        make().load_state_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ResumeError, match="version 2"):
        make().load_state_dict({**state, "version": 2})
    with pytest.raises(ResumeError, match="damaged"):
        make().load_state_dict({**state, "position": 99})
    with pytest.raises(ResumeError, match="'epoch' is -1"):
        make().load_state_dict({**state, "epoch": -1})
    with pytest.raises(ResumeError, match="reach past"):
        make().load_state_dict({**state, "pending": [[0, 99]]})
    # The same data and settings elsewhere (another store location, codecs) are fine.
    make(source(VALUES.copy())).load_state_dict(state)
    assert isinstance(ResumeError("x"), ValueError)


def test_a_worker_state_resumes_only_its_worker() -> None:
    """States taken inside a DataLoader worker (StatefulDataLoader) stay with that worker."""
    stream = make()
    worker = copy(stream)
    it = worker.iter_worker(1, 2)
    next(it)
    state = worker.state_dict()
    assert state["worker"] == {"id": 1, "rotation": 0}
    for where in (make(), copy(make())):
        where.load_state_dict(state)
        with pytest.raises(ResumeError, match="inside DataLoader worker 1"):
            next(iter(where))  # the main process (or worker 0 / another layout)
    same = make()
    same.load_state_dict(state)
    assert [b.index for b in same.iter_worker(1, 2)] == [b.index for b in it]


def _orders(stream: es.Stream) -> tuple[int, list[int]]:
    batches = list(stream)
    return batches[0].epoch, [i for b in batches for i in b.window_ids.tolist()]


def test_epochs_advance_by_themselves() -> None:
    """Each iteration after one has started follows the next epoch's order, whether the
    previous one finished or was abandoned; set_epoch(n) before iterating uses n; the
    order is a pure function of (seed, epoch)."""
    stream = make(shuffle="full")
    reference = {}
    for epoch in range(4):
        ref = make(shuffle="full")
        ref.set_epoch(epoch)
        reference[epoch] = _orders(ref)[1]
    assert _orders(stream) == (0, reference[0])
    assert _orders(stream) == (1, reference[1])  # finished: the next one
    it = iter(stream)
    next(it)
    del it  # epoch 2 abandoned after one batch
    assert stream.epoch == 2 and stream.next_epoch == 3
    assert _orders(stream) == (3, reference[3])
    stream.set_epoch(1)
    assert stream.next_epoch == 1
    assert _orders(stream) == (1, reference[1])
    # a stream of its own (validation) does not move this one
    other = make(shuffle="full")
    list(other)
    list(other)
    assert stream.next_epoch == 2 and other.next_epoch == 2
    # resume restores the epoch, and the one after follows
    it = iter(stream)
    head = [next(it) for _ in range(3)]
    state = stream.state_dict()
    resumed = make(shuffle="full")
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert [i for b in head + tail for i in b.window_ids.tolist()] == reference[2]
    assert _orders(resumed) == (3, reference[3])


def test_workers_follow_the_main_process_epoch() -> None:
    """The main process decides each iteration's start (_hand_over); each worker's copy
    takes it over (_take_over), whatever the copy itself had iterated before
    (persistent workers)."""
    main = make(shuffle="full")
    workers = [copy(main) for _ in range(2)]
    for expected in (0, 1, 2):
        cursor = main._hand_over(2)
        assert cursor.epoch == expected
        ids = []
        for w, worker in enumerate(workers):
            worker._take_over(cursor)
            ids += [i for b in worker.iter_worker(w, 2) for i in b.window_ids.tolist()]
        assert sorted(ids) == list(range(main.n_windows))
