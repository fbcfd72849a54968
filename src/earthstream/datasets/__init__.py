"""Generated datasets with realistic structure, for demos, tests and benchmarks."""

from ._era5 import ERA5_VARIABLES, era5_like

__all__ = ["ERA5_VARIABLES", "era5_like"]
