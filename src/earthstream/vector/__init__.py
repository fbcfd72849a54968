"""Vector labels: GeoParquet / FlatGeobuf features read by bbox and rasterized per chip.

Needs the ``geo`` extra.  ``import earthstream`` does not import this package.
"""

from ._source import GEOMETRY_KINDS, Features, LabelIndex, VectorSource, open_vector

__all__ = ["GEOMETRY_KINDS", "Features", "LabelIndex", "VectorSource", "open_vector"]
