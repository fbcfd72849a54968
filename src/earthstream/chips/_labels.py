"""Labels burned into chips: which vector source, values for background and past-the-edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..vector._source import VectorSource

__all__ = ["LabelSpec", "label_values"]


@dataclass(frozen=True)
class LabelSpec:
    """How labels are burned into each chip.

    ``fill`` is the background (no feature); ``ignore`` marks pixels past the
    target grid's edge (``edges="pad"``), where there is no data to label.
    """

    source: VectorSource
    name: str = "label"
    all_touched: bool = False
    fill: int = 0
    dtype: str = "uint8"
    ignore: int = 255


def label_values(dtype: Any, fill: Any, ignore: Any) -> tuple[str, int, int]:
    """Check the label dtype, background and ignore values: ``(dtype, fill, ignore)``.

    ``ignore=None`` takes the dtype's largest value (255 for uint8), or -1 for
    signed dtypes.

    >>> label_values("uint8", 0, None)
    ('uint8', 0, 255)
    >>> label_values("int16", 0, None)
    ('int16', 0, -1)
    """
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = np.dtype("O")
    if np_dtype.kind not in "iu":
        raise ConfigError(
            f"label_dtype={dtype!r} must be an integer dtype, e.g. 'uint8' or 'int32'."
        )
    info = np.iinfo(np_dtype)
    if ignore is None:
        ignore = info.max if np_dtype.kind == "u" else -1
    for name, value in (("label_fill", fill), ("label_ignore", ignore)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"{name}={value!r} must be a whole number.")
        if not info.min <= value <= info.max:
            raise ConfigError(
                f"{name}={value} does not fit label_dtype={np_dtype.name} "
                f"({info.min}..{info.max}); pick another value or a wider dtype."
            )
    if ignore == fill:
        raise ConfigError(
            f"label_ignore={ignore} equals label_fill={fill}: pixels past the grid's edge "
            "(edges='pad') would look like background. Give them different values."
        )
    return np_dtype.name, int(fill), int(ignore)
