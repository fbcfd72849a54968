"""PyTorch Lightning: :class:`StreamDataModule` (needs the ``lightning`` extra).

>>> from earthstream.lightning import StreamDataModule
>>> StreamDataModule.__mro__[1].__name__
'LightningDataModule'
"""

from ._datamodule import Split, StreamDataModule, StreamLoader

__all__ = ["Split", "StreamDataModule", "StreamLoader"]
