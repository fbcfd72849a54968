"""Chips: image chips (and label masks) of rasters on one target grid, in batches.

Planning (:mod:`~earthstream.chips._plan`: scenes from STAC items or COGs, the
target grid, time slots), the engine inputs (:mod:`~earthstream.chips._inputs`:
the scenes' rasters as COG tile sources) and the chip stream kind
(:mod:`~earthstream.chips._kind`: chips as boxes of tiles, warped, decoded and
mosaicked), behind :class:`ChipStream` and :func:`stream_chips`.

The geometry of a chip's raster windows is reusable on its own:
:func:`raster_windows` (chips -> the window of a raster level each needs,
aligned or warped with the kernel's margin, vectorized) and
:func:`warp_bands` (a decoded window onto a chip grid).

Needs the ``geo`` extra.  ``import earthstream`` does not import this package.
"""

from typing import Any

from ..geo._boxes import RasterLevel, Windows, chip_bounds, chip_transforms, raster_windows
from ..geo._warp import warp_bands
from ._inputs import ChipInputs, RasterUse, build_inputs
from ._kind import ChipAssembler, ChipBatchPlan, ChipLayout, ChipPlanner, chip_kind
from ._labels import LabelSpec
from ._open import stream_chips
from ._plan import ChipPlan, Scene, build_plan
from ._stream import ChipStream

__all__ = [
    "ChipAssembler",
    "ChipBatchPlan",
    "ChipInputs",
    "ChipLayout",
    "ChipPlan",
    "ChipPlanner",
    "ChipStream",
    "LabelSpec",
    "RasterLevel",
    "RasterUse",
    "Scene",
    "Windows",
    "build_inputs",
    "build_plan",
    "chip_bounds",
    "chip_kind",
    "chip_transforms",
    "raster_windows",
    "stream_chips",
    "warp_bands",
]


def __getattr__(name: str) -> Any:
    if name == "ChipReport":
        import warnings

        from ..engine import EpochReport

        warnings.warn(
            "earthstream.chips.ChipReport is gone: chip streams report with the engine's "
            "EpochReport (tiles decoded, requests, bytes; chip counts in report.counts). "
            "Use earthstream.engine.EpochReport.",
            DeprecationWarning,
            stacklevel=2,
        )
        return EpochReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
