"""Delivery to frameworks: PyTorch (``TorchStream``) and JAX (``JaxStream``).

Each framework is an optional extra and is imported only when its names are used.
"""

from typing import Any

__all__ = ["DeviceLoader", "JaxBatch", "JaxStream", "TorchBatch", "TorchStream", "to_torch"]

_JAX = ("JaxBatch", "JaxStream")


def __getattr__(name: str) -> Any:
    if name in _JAX:
        from . import _jax

        return getattr(_jax, name)
    if name in __all__:
        from . import _torch

        return getattr(_torch, name)
    raise AttributeError(f"module 'earthstream.delivery' has no attribute {name!r}")
