"""Inference plans from output chunks (hypothesis), against brute force: each rank visits
exactly the windows touching its chunks still to write, each once; every chunk has one owner."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from earthstream.sampling import (
    EpochPlan,
    OrderSpec,
    OutputChunks,
    build_window_grid,
    plan_inference,
)


@settings(max_examples=120, deadline=None)
@given(
    sizes=st.tuples(st.integers(1, 6), st.integers(1, 20), st.integers(1, 20)),
    window=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    stride=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    chunks=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
    world=st.integers(1, 4),
    batch=st.integers(1, 7),
    done_seed=st.integers(0, 100),
)
def test_plans_cover_each_owned_chunk_once(sizes, window, stride, chunks, world, batch, done_seed):
    w = {"y": window[0], "x": window[1]}
    s = {"y": min(stride[0], window[0]), "x": min(stride[1], window[1])}
    grid = build_window_grid(
        dict(zip(("t", "y", "x"), sizes, strict=True)), w, s, "pad", {"t": 1, "y": 8, "x": 8}
    )
    out = OutputChunks.of(grid, dict(zip(("t", "y", "x"), chunks, strict=True)))
    done = np.random.default_rng(done_seed).random(out.n_chunks) < 0.3
    seq, owners = plan_inference(out, world, batch, done)
    # brute force: window id -> the chunks its footprint covers
    starts = grid.starts_of(np.arange(grid.n_windows))
    touched = []
    for st_ in starts:
        ranges = [
            range(a // c, (min(a + L, n) - 1) // c + 1)
            for a, L, n, c in zip(st_, grid.lengths, sizes, out.chunks, strict=True)
        ]
        touched.append(
            {int(np.ravel_multi_index(i, out.shape)) for i in itertools.product(*ranges)}
        )
    expected = out.expected()
    for c in range(out.n_chunks):
        assert expected[c] == sum(c in t for t in touched)
    assert all(0 <= owners[c] < world for c in range(out.n_chunks))
    for r in range(world):
        mine = {c for c in range(out.n_chunks) if owners[c] == r and not done[c]}
        want = sorted(i for i, t in enumerate(touched) if t & mine)
        got = seq.runs[r].tolist()
        assert sorted(got) == want and len(got) == len(set(got))
    # ranks get the same number of batches; EpochPlan hands each rank exactly its own
    order = OrderSpec(grid, "none", 0, batch, sequence=seq).epoch(0)
    plan = EpochPlan.full(seq.n_batches, world)
    for r in range(world):
        runs, padding = plan.rank_batches(r)
        assert padding == 0 and len(runs) == seq.steps
        real = [j for j in runs if not seq.is_padding(j)]
        ids = [i for j in real for i in order.batch(j).tolist()]
        assert ids == seq.runs[r].tolist()
    # uncovered positions: none with edges="pad"
    assert out.uncovered() == (0, 0, 0)
