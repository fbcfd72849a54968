"""Inference over whole domains and write-back of predictions to Zarr.

:class:`PredictionWriter` plans an ordered, overlap-aware inference stream
from its output chunks (each chunk owned by one rank, halo windows recomputed),
blends overlapping windows (mean or taper) in float64 and writes every output
chunk once, complete, into a Zarr v3 store with the source's coordinates; a
stopped run resumes by skipping the chunks already written.
"""

from ._writer import PredictionWriter, WriteReport, taper

__all__ = ["PredictionWriter", "WriteReport", "taper"]
