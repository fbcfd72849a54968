"""Generated datasets with realistic structure, for demos, tests and benchmarks."""

from typing import Any

from ._era5 import ERA5_VARIABLES, era5_like
from ._static import static_fields

__all__ = ["ERA5_VARIABLES", "EOData", "eo_like", "era5_like", "static_fields"]


def __getattr__(name: str) -> Any:  # the EO dataset needs the geo extra: import on use
    if name in ("eo_like", "EOData"):
        from . import _eo

        return getattr(_eo, name)
    raise AttributeError(f"module 'earthstream.datasets' has no attribute {name!r}")
