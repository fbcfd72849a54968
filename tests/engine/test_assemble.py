"""The copy primitives against plain NumPy slicing (an independent reference:
one basic-slice assignment per piece, no strides arithmetic)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from earthstream.engine import copy_pieces
from earthstream.engine._assemble import BIG_PIECE, copy_rows
from earthstream.engine._plan import Pieces


@st.composite
def _case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, Pieces, np.ndarray]:
    """A slab of slots, an output frame, and disjoint pieces copied from one to the other.

    Each output row is tiled by a grid of pieces of varying extents (as windows over
    chunk borders are); each piece reads from a random slot at a random start.
    """
    ndim = draw(st.integers(1, 3))
    chunk = [draw(st.integers(1, 6)) for _ in range(ndim)]
    n_slots = draw(st.integers(1, 4))
    box = [draw(st.integers(1, 9)) for _ in range(ndim)]
    n_rows = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.int16, np.float64, np.uint8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    slab = rng.integers(0, 100, size=(n_slots, *chunk)).astype(dtype)
    if draw(st.booleans()):  # a non-contiguous slab (a view with gaps)
        wide = np.zeros((n_slots, *chunk[:-1], chunk[-1] * 2 + 1), dtype)
        wide[..., 1 : 1 + 2 * chunk[-1] : 2] = slab
        slab = wide[..., 1 : 1 + 2 * chunk[-1] : 2]
    out = np.full((n_rows, *box), -1).astype(dtype)
    if draw(st.booleans()) and ndim > 1:  # a frame with an inserted length-1 dim
        out = np.expand_dims(out, 1)
        slab = np.expand_dims(slab, 1)
    rows, src, dst, size = [], [], [], []
    full_ndim = out.ndim - 1
    for r in range(n_rows):
        # cut the box along each dim at cuts no farther apart than the chunk
        cuts_per_dim = []
        for d in range(full_ndim):
            extent = out.shape[1 + d]
            limit = slab.shape[1 + d]
            cuts = [0]
            while cuts[-1] < extent:
                step = draw(st.integers(1, min(limit, extent - cuts[-1])))
                cuts.append(cuts[-1] + step)
            cuts_per_dim.append(cuts)
        for cell in np.ndindex(*(len(c) - 1 for c in cuts_per_dim)):
            b = [cuts_per_dim[d][i] for d, i in enumerate(cell)]
            k = [cuts_per_dim[d][i + 1] - cuts_per_dim[d][i] for d, i in enumerate(cell)]
            a = [int(rng.integers(0, slab.shape[1 + d] - k[d] + 1)) for d in range(full_ndim)]
            rows.append(r)
            src.append(a)
            dst.append(b)
            size.append(k)
    order = rng.permutation(len(rows))
    as_arr = lambda x: np.asarray(x, dtype=np.int64).reshape(len(rows), full_ndim)[order]  # noqa: E731
    pieces = Pieces(
        np.asarray(rows, dtype=np.int64)[order],
        np.zeros(len(rows), dtype=np.int64),
        as_arr(src),
        as_arr(dst),
        as_arr(size),
    )
    slots = rng.integers(0, n_slots, size=len(rows)).astype(np.intp)
    return slab, slots, pieces, out


def _reference(slab: np.ndarray, slots: np.ndarray, pieces: Pieces, out: np.ndarray) -> np.ndarray:
    want = out.copy()
    for i in range(len(pieces)):
        a, b, k = pieces.src[i], pieces.dst[i], pieces.size[i]
        src = tuple(slice(int(x), int(x + n)) for x, n in zip(a, k, strict=True))
        dst = tuple(slice(int(x), int(x + n)) for x, n in zip(b, k, strict=True))
        want[(int(pieces.rows[i]), *dst)] = slab[(int(slots[i]), *src)]
    return want


@settings(max_examples=150, deadline=None)
@given(_case())
def test_copy_rows_equals_slicing(case: tuple[np.ndarray, np.ndarray, Pieces, np.ndarray]) -> None:
    slab, slots, pieces, out = case
    want = _reference(slab, slots, pieces, out)
    assert copy_rows(slab, slots, pieces, out)
    np.testing.assert_array_equal(out, want)


@settings(max_examples=100, deadline=None)
@given(_case())
def test_copy_pieces_equals_slicing(
    case: tuple[np.ndarray, np.ndarray, Pieces, np.ndarray],
) -> None:
    slab, slots, pieces, out = case
    want = _reference(slab, slots, pieces, out)
    copy_pieces(slab, slots, pieces, out)
    np.testing.assert_array_equal(out, want)


def test_copy_pieces_mixes_rows_and_big_pieces() -> None:
    """Many small pieces (copied as rows) beside big ones (copied one by one)."""
    rng = np.random.default_rng(0)
    side = int(np.sqrt(BIG_PIECE)) + 8
    slab = rng.standard_normal((3, side, side)).astype(np.float32)
    out = np.zeros((2, side, side + 20), np.float32)
    rows, src, dst, size = [], [], [], []
    rows.append(0), src.append([0, 0]), dst.append([0, 0]), size.append([side, side])
    for j in range(side):
        for c in range(0, 20, 5):
            rows.append(1), src.append([j, c]), dst.append([j, side + c]), size.append([1, 5])
    n = len(rows)
    pieces = Pieces(
        np.array(rows),
        np.zeros(n, np.int64),
        np.array(src),
        np.array(dst),
        np.array(size),
    )
    slots = rng.integers(0, 3, size=n).astype(np.intp)
    want = _reference(slab, slots, pieces, out)
    copy_pieces(slab, slots, pieces, out)
    np.testing.assert_array_equal(out, want)


def test_copy_rows_refuses_negative_strides() -> None:
    slab = np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::-1]
    out = np.zeros((1, 3, 4), np.float32)
    pieces = Pieces(
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.zeros((1, 2), np.int64),
        np.zeros((1, 2), np.int64),
        np.array([[3, 4]]),
    )
    assert not copy_rows(slab, np.zeros(1, np.intp), pieces, out)
    assert not out.any()


def test_copy_pieces_groups_many_pieces_by_extent() -> None:
    """Many pieces: those of a common extent gathered together, the others one by one."""
    rng = np.random.default_rng(2)
    slab = rng.standard_normal((4, 40, 40)).astype(np.float32)
    out = np.zeros((80, 16, 40), np.float32)
    rows, src, dst, size = [], [], [], []
    for r in range(80):
        width = 16 if r < 70 else 20 + r % 5  # 70 of one extent, 10 of five others
        rows.append(r)
        src.append([int(rng.integers(0, 40 - 16)), int(rng.integers(0, 40 - width))])
        dst.append([0, int(rng.integers(0, 40 - width))])
        size.append([16, width])
    n = len(rows)
    pieces = Pieces(
        np.array(rows), np.zeros(n, np.int64), np.array(src), np.array(dst), np.array(size)
    )
    slots = rng.integers(0, 4, size=n).astype(np.intp)
    want = _reference(slab, slots, pieces, out)
    copy_pieces(slab, slots, pieces, out)
    np.testing.assert_array_equal(out, want)
