"""Multi-modal samples: several sources joined over the same footprint."""

from ._spec import Modality, Record, RecordInfo
from ._stream import MultiStream

__all__ = ["Modality", "MultiStream", "Record", "RecordInfo"]
