"""Decoding chunks straight into the batch, for windows that are whole chunks used once.

When every window is exactly one chunk of every variable (whole fields on a
store with one step per chunk, iterated over time; tiles equal to the chunk
grid) and no two windows share a chunk, a chunk's one use is known before it
is read: it is decoded into its place in the batch (stacked or not), with no
slot and no copy.  The source's own decode-into-``out`` step does the work, so
codecs, CF decoding, missing and corrupt chunk policies are those of every
other read.
"""

from __future__ import annotations

import numpy as np

from ._assemble import _full, allocate
from ._layout import StreamLayout

__all__ = ["direct_decode_ok"]


def direct_decode_ok(layout: StreamLayout) -> bool:
    """Whether every window of ``layout`` is exactly one chunk of every variable, no
    chunk is in two windows, and a chunk's place in the batch is one C-ordered block
    of the variable's dtype (so the decoder can write it there)."""
    grid = layout.grid
    if grid.edges != "drop" or not layout.variables:
        return False
    for var in layout.variables:
        if var.reads_offsets:
            return False
        for a, c, n in zip(var.grid_axes, var.chunks, var.lengths, strict=True):
            axis = grid.axes[a]
            if axis.squeeze:
                if c != 1:  # an iterated dim: each position must be its own chunk
                    return False
            elif n != c or axis.explicit is not None or axis.stride != c or axis.origin % c:
                return False  # windows must be the chunks (a selection may shift them)
        for axis in grid.axes:  # dims the variable lacks: one window covers them
            if axis.dim not in var.dims and not axis.whole:
                return False
    try:
        probe = allocate(layout, 1, prefill=False)
    except (ValueError, MemoryError):  # pragma: no cover - a layout too large to probe
        return False
    for var in layout.variables:
        block = _full(probe.data[var.name], var)[0]
        if (
            block.dtype != var.dtype
            or not block.flags.c_contiguous
            or block.shape != tuple(var.chunks)
        ):
            return False
    return bool(np.prod([a.count for a in grid.axes], dtype=np.int64) > 0)
