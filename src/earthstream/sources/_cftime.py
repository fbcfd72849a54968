"""Decoding CF time coordinates (``"hours since 1900-01-01"``) to ``datetime64[ns]``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

_UNIT_NS = {
    "nanoseconds": 1,
    "nanosecond": 1,
    "ns": 1,
    "microseconds": 10**3,
    "microsecond": 10**3,
    "us": 10**3,
    "milliseconds": 10**6,
    "millisecond": 10**6,
    "ms": 10**6,
    "seconds": 10**9,
    "second": 10**9,
    "secs": 10**9,
    "sec": 10**9,
    "s": 10**9,
    "minutes": 60 * 10**9,
    "minute": 60 * 10**9,
    "mins": 60 * 10**9,
    "min": 60 * 10**9,
    "hours": 3600 * 10**9,
    "hour": 3600 * 10**9,
    "hrs": 3600 * 10**9,
    "hr": 3600 * 10**9,
    "h": 3600 * 10**9,
    "days": 86400 * 10**9,
    "day": 86400 * 10**9,
    "d": 86400 * 10**9,
}
_STANDARD_CALENDARS = {"standard", "gregorian", "proleptic_gregorian"}
_UNITS_RE = re.compile(r"^\s*(\w+)\s+since\s+(.+?)\s*$", re.IGNORECASE)
_DATE_RE = re.compile(
    r"^(-?\d{1,4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}(?:\.\d*)?))?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2})?)?$",
    re.IGNORECASE,
)


def is_cf_time(attrs: Mapping[str, Any]) -> bool:
    """Whether ``attrs`` describe a CF time axis (``units: "<unit> since <date>"``)."""
    units = attrs.get("units")
    return isinstance(units, str) and " since " in units.lower()


def _parse_reference(text: str) -> np.datetime64:
    match = _DATE_RE.match(text.strip())
    if match is None:
        raise ValueError(f"cannot parse the reference date {text!r}")
    year, month, day, hour, minute, second, tz = match.groups()
    seconds = float(second or 0)
    whole = int(seconds)
    ref = np.datetime64(
        f"{int(year):04d}-{int(month):02d}-{int(day):02d}T"
        f"{int(hour or 0):02d}:{int(minute or 0):02d}:{whole:02d}",
        "ns",
    ) + np.timedelta64(round((seconds - whole) * 1e9), "ns")
    if tz and tz.upper() not in ("Z", "UTC", "GMT"):
        sign = -1 if tz.startswith("-") else 1
        digits = tz[1:].replace(":", "")
        hours = int(digits[:-2]) if len(digits) > 2 else int(digits)
        minutes = int(digits[-2:]) if len(digits) > 2 else 0
        ref -= sign * np.timedelta64(hours * 60 + minutes, "m")
    return ref


def decode_cf_time(values: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """Decode numeric CF time values to ``datetime64[ns]``.

    Standard, Gregorian and proleptic Gregorian calendars are decoded with
    NumPy; other calendars go through ``cftime`` when it is installed (object
    arrays), and otherwise stay numeric with a warning.

    >>> decode_cf_time(np.array([0, 6, 12]), {"units": "hours since 2000-01-01"})
    array(['2000-01-01T00:00:00.000000000', '2000-01-01T06:00:00.000000000',
           '2000-01-01T12:00:00.000000000'], dtype='datetime64[ns]')
    """
    units = str(attrs["units"])
    calendar = str(attrs.get("calendar", "standard")).lower()
    match = _UNITS_RE.match(units)
    if match is None or match.group(1).lower() not in _UNIT_NS:
        warnings.warn(f"time units {units!r} are not CF units; kept as numbers", stacklevel=3)
        return values
    if calendar not in _STANDARD_CALENDARS:
        try:
            import cftime
        except ImportError:
            warnings.warn(
                f"calendar {calendar!r} needs the cftime package to decode; kept as numbers. "
                "Install cftime to decode it.",
                stacklevel=3,
            )
            return values
        return np.asarray(cftime.num2date(values, units, calendar))
    factor = _UNIT_NS[match.group(1).lower()]
    ref = _parse_reference(match.group(2))
    if np.issubdtype(values.dtype, np.integer):
        offsets = values.astype(np.int64) * factor
    else:
        finite = np.isfinite(values)
        offsets = np.where(finite, np.round(values * float(factor)), 0).astype(np.int64)
    decoded = ref + offsets.astype("timedelta64[ns]")
    if not np.issubdtype(values.dtype, np.integer):
        decoded[~finite] = np.datetime64("NaT")
    return decoded
