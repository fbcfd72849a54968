"""Parsing and printing of byte sizes (``"1GB"``, ``"512 MiB"``)."""

from __future__ import annotations

import math
import re

import numpy as np

from .errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
#: Sizes from this on are refused (no machine has them; they would overflow int64 math).
MAX_BYTES = 2**60
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(value: int | float | str, *, name: str = "memory_limit") -> int:
    """Return a byte count from an int or a string such as ``"1GB"`` or ``"512MiB"``.

    Decimal units (kB, MB, GB, TB) are powers of 1000 and binary units (KiB, MiB,
    GiB, TiB) powers of 1024, as in Dask.

    >>> parse_bytes("1GB")
    1000000000
    >>> parse_bytes("1.5 KiB")
    1536
    >>> parse_bytes(2048)
    2048
    >>> parse_bytes("1e400")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    earthstream.errors.ConfigError: memory_limit='1e400' is not a size a machine has; ...
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | np.number):
        raise ConfigError(f"{name}={value!r} is not a size; pass bytes as an int or e.g. '1GB'.")
    if isinstance(value, int | float | np.number):
        number, unit = float(value), ""
    else:
        match = _PATTERN.match(value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ConfigError(
                f"{name}={value!r} is not a size; write e.g. '1GB', '512MiB' or a number of bytes."
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(number) or number * _UNITS[unit] >= MAX_BYTES:
        raise ConfigError(
            f"{name}={value!r} is not a size a machine has; pass a finite size below "
            "2**60 bytes, e.g. '1GB'."
        )
    nbytes = int(number * _UNITS[unit])
    if nbytes <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive size, e.g. '1GB'.")
    return nbytes


def format_bytes(nbytes: float) -> str:
    """Return a short human-readable size.

    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
    """
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
