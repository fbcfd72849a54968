"""Plans of per-sample boxes (``plan_var``): own starts, own extents, selected positions,
padding.  The oracle is NumPy: each sample's frame read straight from the whole array,
position by position."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from earthstream.engine import SlotPool, VarLayout, cut_var, plan_var
from earthstream.protocols import VariableInfo

FILL = -1.0


def oracle(
    array: np.ndarray,
    start: np.ndarray,
    extent: np.ndarray,
    frame: tuple[int, ...],
    positions: dict[int, np.ndarray],
) -> np.ndarray:
    """One sample's frame: the fill value, then every element of its box inside the array."""
    out = np.full(frame, FILL, dtype=array.dtype)
    axes = []
    for d in range(array.ndim):
        offsets = positions[d] if d in positions else np.arange(extent[d])
        axes.append(start[d] + offsets)
    for dst in np.ndindex(*(len(a) for a in axes)):
        src = tuple(int(axes[d][dst[d]]) for d in range(array.ndim))
        if all(0 <= s < n for s, n in zip(src, array.shape, strict=True)):
            out[dst] = array[src]
    return out


def assemble(array: np.ndarray, var: VarLayout, plans: list, bounds: list[int]) -> np.ndarray:
    """Frames of every sample from its batch's plan, chunks cut from ``array`` by hand."""
    frames = np.full((bounds[-1], *var.lengths), FILL, dtype=array.dtype)
    for b, vplan in enumerate(plans):
        chunks = []
        for index in vplan.index:
            region = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(index, var.chunks, var.shape, strict=True)
            )
            chunk = np.full(var.chunks, np.nan, dtype=array.dtype)
            chunk[tuple(slice(0, r.stop - r.start) for r in region)] = array[region]
            chunks.append(chunk)
        for row in range(bounds[b + 1] - bounds[b]):
            if vplan.which[row] >= 0:
                at = vplan.local[row]
                box = tuple(slice(a, a + n) for a, n in zip(at, var.lengths, strict=True))
                frames[bounds[b] + row] = chunks[vplan.which[row]][box]
        p = vplan.pieces
        for i in range(len(p)):
            src = tuple(slice(a, a + n) for a, n in zip(p.src[i], p.size[i], strict=True))
            dst = tuple(slice(a, a + n) for a, n in zip(p.dst[i], p.size[i], strict=True))
            frames[(bounds[b] + p.rows[i], *dst)] = chunks[p.position[i]][src]
    return frames


@st.composite
def cases(draw: st.DrawFn) -> dict:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    frame = tuple(draw(st.integers(1, n + 2)) for n in shape)
    n = draw(st.integers(1, 12))
    starts = np.array(
        [[draw(st.integers(-3, s)) for s in shape] for _ in range(n)], dtype=np.int64
    ).reshape(n, ndim)
    extents = None
    if draw(st.booleans()):
        extents = np.array(
            [[draw(st.integers(0, f)) for f in frame] for _ in range(n)], dtype=np.int64
        ).reshape(n, ndim)
    positions: dict[int, np.ndarray] = {}
    if draw(st.booleans()):
        d = draw(st.integers(0, ndim - 1))
        per_sample = draw(st.booleans())
        count = frame[d]
        if per_sample:  # each sample its own steps (a secondary's matched times)
            positions[d] = np.array(
                [sorted(draw(st.lists(st.integers(-2, shape[d] + 1), min_size=count,
                                      max_size=count))) for _ in range(n)],
                dtype=np.int64,
            ).reshape(n, count)  # fmt: skip
        else:  # one set of offsets for every sample (a forecast's steps)
            positions[d] = np.array(
                sorted(draw(st.lists(st.integers(0, shape[d] + 1), min_size=count,
                                     max_size=count))), dtype=np.int64
            )  # fmt: skip
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    bounds = [0, *cuts, n]
    return {
        "shape": shape, "chunks": chunks, "frame": frame, "starts": starts,
        "extents": extents, "positions": positions, "bounds": bounds,
    }  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(cases())
def test_boxes_read_what_numpy_reads(case: dict) -> None:
    shape, frame = case["shape"], case["frame"]
    array = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    dims = tuple(f"d{i}" for i in range(len(shape)))
    info = VariableInfo("v", dims, shape, np.dtype("f8"), case["chunks"], FILL)
    var = VarLayout.of(info, frame)
    positions = case["positions"]
    chosen = [positions.get(d) for d in range(len(shape))] if positions else []
    starts, extents, bounds = case["starts"], case["extents"], case["bounds"]
    plans = plan_var(var, 2, 3, starts, bounds, extents=extents, positions=chosen)
    assert len(plans) == len(bounds) - 1
    got = assemble(array, var, plans, bounds)
    for i in range(len(starts)):
        extent = np.asarray(frame) if extents is None else extents[i]
        steps = {d: (p[i] if p.ndim == 2 else p) for d, p in positions.items()}
        want = oracle(array, starts[i], extent, frame, steps)
        np.testing.assert_array_equal(got[i], want, err_msg=f"sample {i}")
    for b, vplan in enumerate(plans):
        # keys: distinct, this variable's (key % n_vars), and exactly the chunks read
        assert len(set(vplan.keys)) == len(vplan.keys)
        assert all(k % 3 == 2 for k in vplan.keys)
        flat = [int(np.ravel_multi_index(tuple(i), var.chunk_grid)) for i in vplan.index]
        assert [k // 3 for k in vplan.keys] == flat
        touched = set()
        for i in range(bounds[b], bounds[b + 1]):
            extent = np.asarray(frame) if extents is None else extents[i]
            axes = [
                starts[i, d] + (
                    (positions[d][i] if positions[d].ndim == 2 else positions[d])
                    if d in positions else np.arange(extent[d])
                )
                for d in range(len(shape))
            ]  # fmt: skip
            for at in np.ndindex(*(len(a) for a in axes)):
                src = [int(axes[d][at[d]]) for d in range(len(shape))]
                if all(0 <= s < n for s, n in zip(src, shape, strict=True)):
                    chunk = tuple(s // c for s, c in zip(src, case["chunks"], strict=True))
                    touched.add(int(np.ravel_multi_index(chunk, var.chunk_grid)))
        assert set(flat) == touched


def test_cut_var_places_boxes_of_their_own_size() -> None:
    """The engine's copy primitives (gathers, pieces) give the same frames from slots."""
    shape, chunks, frame = (12, 10), (5, 4), (6, 6)
    array = np.arange(120, dtype=np.float32).reshape(shape)
    info = VariableInfo("v", ("y", "x"), shape, np.dtype("f4"), chunks, FILL)
    var = VarLayout.of(info, frame)
    starts = np.array([[0, 0], [1, 2], [-2, 7], [8, -1], [5, 4], [10, 8]])
    extents = np.array([[6, 6], [4, 3], [6, 6], [3, 6], [6, 6], [6, 6]])
    (vplan,) = plan_var(var, 0, 1, starts, [0, len(starts)], extents=extents)
    pool = SlotPool(var, len(vplan.keys))
    for slot, index in enumerate(vplan.index):
        region = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, shape, strict=True)
        )
        pool.slab[slot][tuple(slice(0, r.stop - r.start) for r in region)] = array[region]
    out = np.full((len(starts), *frame), FILL, dtype=np.float32)
    cut_var(pool, vplan, np.arange(len(vplan.keys)), len(starts), out, True)
    for i in range(len(starts)):
        np.testing.assert_array_equal(out[i], oracle(array, starts[i], extents[i], frame, {}))
