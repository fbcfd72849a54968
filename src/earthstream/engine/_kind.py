"""The seam between the engine and a stream kind: a planner and an assembler.

The engine (:class:`~earthstream.engine.Engine`) does what every stream needs
and nothing a stream kind decides: it reads chunks of its *inputs* (any number
of sources, each with its capabilities resolved once), decodes each chunk into
a slot, evicts by next known use (Belady) within ``memory_limit``, keeps loads
in flight, applies the chunk policies, and delivers batches in order with one
report.  Its unit is a *variable of one input* (:class:`~earthstream.engine.VarLayout`:
``input``, ``name``, chunk grid, dtype, fill, frame); cache keys are global across
inputs (``flat chunk index * n_vars + variable``).

What a stream kind decides comes through two objects, bundled in
:class:`StreamKind`:

* the **planner** maps a span of batches (global batch index and the sample ids
  the epoch order gives it) to :class:`~earthstream.engine.BatchPlan` objects:
  for every engine variable the chunks each batch needs and how each sample is
  cut from them (:func:`~earthstream.engine.plan_var` does the work from each
  sample's box: its own start, extent and selected positions, padding included);
* the **assembler** turns resident chunks and a plan into the batch's arrays
  (:meth:`Assembler.cut`, on a cut thread), lays out the arrays the engine fills
  piece by piece when memory is tight, in sweeps or by decoding whole chunks
  straight into them (:meth:`Assembler.allocate`, :meth:`Assembler.frame`), and
  makes the delivered :class:`~earthstream.Batch` (:meth:`Assembler.finish`).

:class:`~earthstream.Stream` is the window-grid kind (``_windows.py``:
:func:`window_kind`).  A new kind (chips onto another grid, secondary modalities
matched to a primary's windows) writes a planner and an assembler; it needs no
edit in the engine's scheduler, loader or cache.

Threads and order: :meth:`Planner.plan` and :meth:`Assembler.finish` run on the
engine's scheduler thread (keep them cheap and vectorized); :meth:`Assembler.cut`
runs on the cut pool (heavy work such as warping goes there; NumPy releases the
GIL).  Plans are consumed in order; a plan's arrays are never touched by the
engine after ``finish``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .._batch import Batch
from ._assemble import BatchArrays
from ._buffers import BatchBuffers
from ._layout import VarLayout
from ._plan import BatchPlan
from ._slots import SlotPool

__all__ = ["Assembler", "Planner", "StreamKind"]


class Planner(Protocol):
    """Which chunks each batch needs and how its samples are cut (pure: same input,
    same plans)."""

    def plan(self, batches: Sequence[tuple[int, np.ndarray]]) -> list[BatchPlan]:
        """Plan consecutive batches, each ``(global batch index, sample ids)``, in one
        vectorized pass; one :class:`~earthstream.engine.BatchPlan` each, in order,
        with one :class:`~earthstream.engine.VarPlan` per engine variable."""
        ...


class Assembler(Protocol):
    """Batch arrays from resident chunks and a plan, and the delivered batch."""

    def cut(
        self,
        pools: Sequence[SlotPool],
        plan: BatchPlan,
        slots: Sequence[np.ndarray],
        buffers: BatchBuffers | None,
    ) -> BatchArrays:
        """The batch's arrays, cut from resident chunks (on a cut thread).

        ``pools[v]`` holds variable ``v``'s slots; ``slots[v][p]`` is the slot of
        chunk ``plan.vars[v].keys[p]`` (pinned until ``cut`` returns).  Arrays
        come from ``buffers`` (see :class:`~earthstream.engine.BatchBuffers`): the
        engine's memory placement.  When ``buffers.placed`` (pinned or shared
        memory), every array of the batch must come from them (``new_array``,
        ``buffers.empty``; ``cut_var`` does it), never from ``np.empty`` or as a
        gather's own result.
        """
        ...

    def allocate(self, n: int, prefill: bool, buffers: BatchBuffers | None) -> BatchArrays:
        """Arrays for ``n`` samples that the engine fills piece by piece (tight
        memory, sweeps, whole chunks decoded in place); with ``prefill`` every frame
        holds its variable's fill value first."""
        ...

    def frame(self, arrays: BatchArrays, var: int) -> np.ndarray:
        """Engine variable ``var``'s frame in ``arrays``: a writable ``(n, *box)`` view
        over all of its dims (iterated dims as length 1) that its pieces are copied
        into.  For decoding in place a sample's frame must be one C-ordered block."""
        ...

    def take_rows(self, arrays: BatchArrays, rows: np.ndarray | slice) -> BatchArrays:
        """A new batch's own arrays holding only the samples ``rows`` (never views of
        ``arrays``: a sweep reuses them)."""
        ...

    def finish(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> Batch:
        """The delivered batch (on the scheduler thread: cheap bookkeeping only)."""
        ...


@dataclass(frozen=True)
class StreamKind:
    """What one stream kind gives the engine.

    ``variables``: the engine variables, in key order (``VarLayout.input`` says
    which input each reads); ``planner`` and ``assembler`` as above; ``direct``:
    every sample is exactly one whole chunk of every variable and no chunk is in
    two samples, so chunks are decoded straight into the batch frames (no slot,
    no copy; the kind vouches for it, see ``_windows.direct_decode_ok``).
    """

    variables: tuple[VarLayout, ...]
    planner: Planner
    assembler: Assembler
    direct: bool = False

    def block_nbytes(self) -> int:
        """Decoded bytes of one chunk of every variable."""
        return sum(v.chunk_nbytes for v in self.variables)
