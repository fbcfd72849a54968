"""Statistics of a store, streamed over its chunks on Dask, and normalization from them.

:func:`compute_stats` reads every chunk of a store (or a selection) once, on
Dask distributed workers, and returns :class:`Stats`: per variable (and per
level or band) the count, mean, standard deviation, min, max and quantiles of
the valid values (NaN and nodata left out).  Partial results merge exactly
(Chan's pairwise formula for the moments), so memory stays bounded and the
answer does not depend on the number of workers.

Quantiles come from a merging t-digest (compression 1000, arcsine scale): a
centroid near quantile ``q`` holds at most ``2 pi sqrt(q (1 - q)) / 1000`` of
the data (0.31% at the median, 0.06% at the 1st and 99th percentiles), and
interpolation between centroids keeps the rank error of an estimate well
below that in practice (the tests check under 0.2%).  Values are estimates,
not exact order statistics.

:class:`Normalizer` applies ``(x - mean) / std`` from a :class:`Stats` or its
JSON file, e.g. in the last stage of ``stream.to_torch(device, normalize=...)``.

Dask is imported only when :func:`compute_stats` runs (not with ``scheduler="sync"``).
"""

from ._compute import DEFAULT_PER, compute_stats, selection_spans
from ._moments import Digest, Moments
from ._normalize import Normalizer
from ._result import Stats, VariableStats

__all__ = [
    "DEFAULT_PER",
    "Digest",
    "Moments",
    "Normalizer",
    "Stats",
    "VariableStats",
    "compute_stats",
    "selection_spans",
]
