"""Delivery to frameworks.  ``earthstream.delivery.torch`` needs PyTorch (an optional extra)."""

from typing import Any

__all__ = ["DeviceLoader", "TorchBatch", "TorchStream", "to_torch"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _torch

        return getattr(_torch, name)
    raise AttributeError(f"module 'earthstream.delivery' has no attribute {name!r}")
