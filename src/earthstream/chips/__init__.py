"""Chips: image chips (and label masks) of rasters on one target grid, in batches.

Planning (:mod:`~earthstream.chips._plan`: scenes from STAC items or COGs, the
target grid, time slots) and the chip stream (:class:`ChipStream`,
:func:`stream_chips`).  The stream still reads each chip through GDAL on its own
thread pool (``ChipStream._run``); the next step plans chips as boxes of COG
tiles through the engine (a chip planner and a warping, mosaicking assembler:
see :mod:`earthstream.engine._kind`).

Needs the ``geo`` extra.  ``import earthstream`` does not import this package.
"""

from ._labels import LabelSpec
from ._open import stream_chips
from ._plan import ChipPlan, Scene, build_plan
from ._stream import ChipReport, ChipStream

__all__ = [
    "ChipPlan",
    "ChipReport",
    "ChipStream",
    "LabelSpec",
    "Scene",
    "build_plan",
    "stream_chips",
]
