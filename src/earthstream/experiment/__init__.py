"""The experiment's life around a stream: splits without leakage and windows with data.

``split`` builds named streams (train/val/test) from one configuration, by
time ranges with an embargo or by spatial blocks with a buffer; ``MinValid``
keeps windows with enough valid data.  Both build on :class:`~earthstream.Stream`
(``sel``/``isel`` and ``windows=``) and the pure planning in
:mod:`earthstream.sampling`.
"""

from ._split import SpatialBlocks, Splits, split
from ._valid import MinValid, window_sums

__all__ = ["MinValid", "SpatialBlocks", "Splits", "split", "window_sums"]
