"""Decoding CF time coordinates (``"hours since 1900-01-01"``) as xarray's default does.

``xarray.open_zarr`` (2026.9, ``CFDatetimeCoder()`` defaults: ``use_cftime=None``,
``time_unit="ns"``) gives ``datetime64[ns]`` when it can and ``cftime`` objects
otherwise:

1. standard calendars (``standard``/``gregorian``/``proleptic_gregorian``)
   whose reference date parses, is within ``datetime64[ns]``'s range and (for
   ``standard``) not before the Gregorian reform of 1582-10-15, and whose
   dates all fit in ``datetime64[ns]``: decoded with NumPy (integers exactly,
   floats truncated to whole nanoseconds);
2. everything else goes through ``cftime.num2date``: the result stays cftime
   objects for non-standard calendars (``noleap``/``365_day``, ``all_leap``/
   ``366_day``, ``360_day``, ``julian``), for standard-calendar dates before the
   reform, and for dates past ``datetime64[ns]``'s range; otherwise (a standard
   calendar with a reference date before 1582 or 1678, such as HadISST's
   ``hours since 1-1-1``) the dates become ``datetime64[ns]``.

What cannot be decoded raises :class:`~earthstream.errors.TimeDecodeError`
naming the variable, units and calendar; nothing becomes ``NaT`` silently.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import TimeDecodeError

__all__ = ["decode_cf_time", "is_cf_time"]

_NS = {
    "nanoseconds": 1,
    "microseconds": 10**3,
    "milliseconds": 10**6,
    "seconds": 10**9,
    "minutes": 60 * 10**9,
    "hours": 3600 * 10**9,
    "days": 86400 * 10**9,
}
_STANDARD = {"standard", "gregorian", "proleptic_gregorian"}
_DATE_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2})(?::(\d{1,2})(?::(\d{1,2}(?:\.\d*)?))?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2})?)?$",
    re.IGNORECASE,
)
_NS_MIN = np.datetime64(np.iinfo(np.int64).min + 1, "ns")
_NS_MAX = np.datetime64(np.iinfo(np.int64).max, "ns")
_REFORM = np.datetime64("1582-10-15", "ns")


def is_cf_time(attrs: Mapping[str, Any]) -> bool:
    """Whether ``attrs`` describe a CF time axis (``units: "<unit> since <date>"``)."""
    units = attrs.get("units")
    return isinstance(units, str) and "since" in units


def _unit_name(text: str) -> str | None:
    unit = text.strip().lower()
    if not unit.endswith("s"):
        unit += "s"
    return unit if unit in _NS else None


def _padded(ref: str) -> str:
    """xarray's ``_ensure_padded_year``: ``1-1-1`` is year 1, not 2001."""
    if re.match(r".*\d{4}.*", ref):
        return ref
    match = re.match(r"(\d+)(.*)", ref)
    if match is None:
        raise ValueError(f"invalid reference date {ref!r}")
    return f"{int(match.group(1)):04d}{match.group(2)}"


def _reference_ns(text: str) -> np.datetime64 | None:
    """The reference date in ``datetime64[ns]``, or ``None`` when NumPy cannot hold or
    parse it (xarray then decodes with cftime)."""
    match = _DATE_RE.match(_padded(text.strip()))
    if match is None:
        return None
    year, month, day, hour, minute, second, tz = match.groups()
    seconds = float(second or 0)
    whole = int(seconds)
    try:
        base = np.datetime64(
            f"{year}-{int(month):02d}-{int(day):02d}T{int(hour or 0):02d}:"
            f"{int(minute or 0):02d}:{whole:02d}",
            "s",
        )
    except ValueError:
        return None
    if not (_NS_MIN.astype("datetime64[s]") < base < _NS_MAX.astype("datetime64[s]")):
        return None
    fraction = seconds - whole
    ref: np.datetime64 = base.astype("datetime64[ns]") + np.timedelta64(round(fraction * 1e9), "ns")
    if tz and tz.upper() not in ("Z", "UTC", "GMT"):
        sign = -1 if tz.startswith("-") else 1
        digits = tz[1:].replace(":", "")
        hours = int(digits[:-2]) if len(digits) > 2 else int(digits)
        minutes = int(digits[-2:]) if len(digits) > 2 else 0
        ref -= sign * np.timedelta64(hours * 60 + minutes, "m")
    return ref


def _decode_numpy(values: np.ndarray, unit: str, ref: np.datetime64) -> np.ndarray | None:
    """xarray's pandas path at ``ns`` resolution; ``None`` when a date does not fit."""
    factor = _NS[unit]
    if values.dtype.kind in "iu":
        ints = values.astype(np.int64)
        nat = ints == np.iinfo(np.int64).min if values.dtype.kind == "i" else None
        valid = ints if nat is None else ints[~nat]
        if valid.size:
            lo, hi = int(valid.min()), int(valid.max())
            ref_ns = int(ref.astype(np.int64))
            for v in (lo, hi):
                total = ref_ns + v * factor
                if v * factor > 2**63 - 1 or total > 2**63 - 1 or total <= -(2**63):
                    return None
        offsets = ints * np.int64(factor)
        if nat is not None and nat.any():
            offsets[nat] = np.iinfo(np.int64).min
    else:
        floats = values.astype(np.float64)
        nan = np.isnan(floats)
        valid = floats[~nan]
        if valid.size:
            ref_float = float(ref.astype(np.int64))
            for v in (valid.min(), valid.max()):
                if not np.isfinite(v):
                    return None
                total_float = ref_float + float(v) * factor
                if abs(float(v) * factor) >= 2.0**63 or not -(2.0**63) < total_float < 2.0**63:
                    return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            offsets = (floats * np.int64(factor)).astype(np.int64)  # truncates, as xarray
        if nan.any():
            offsets[nan] = np.iinfo(np.int64).min
    result = ref + offsets.astype("timedelta64[ns]")
    return np.asarray(result, dtype="datetime64[ns]")


def _fail(name: str, units: str, calendar: str, reason: str) -> TimeDecodeError:
    return TimeDecodeError(
        f"cannot decode the times of {name!r} (units {units!r}, calendar {calendar!r}): "
        f"{reason}. Fix the attributes, or open with decode_times=False to get the "
        "stored numbers."
    )


def decode_cf_time(
    values: np.ndarray, attrs: Mapping[str, Any], *, name: str = "time"
) -> np.ndarray:
    """Decode numeric CF time values as xarray's default decoding does.

    Returns ``datetime64[ns]`` or an object array of ``cftime`` datetimes (see the
    module docs for which); raises :class:`~earthstream.errors.TimeDecodeError`
    for what cannot be decoded.

    >>> decode_cf_time(np.array([0, 6, 12]), {"units": "hours since 2000-01-01"})
    array(['2000-01-01T00:00:00.000000000', '2000-01-01T06:00:00.000000000',
           '2000-01-01T12:00:00.000000000'], dtype='datetime64[ns]')
    >>> decode_cf_time(np.array([0, 359]), {"units": "days since 2000-01-01",
    ...                                     "calendar": "360_day"})[1]
    cftime.Datetime360Day(2000, 12, 30, 0, 0, 0, 0, has_year_zero=True)
    """
    units = str(attrs["units"])
    raw_calendar = attrs.get("calendar")
    calendar = "standard" if raw_calendar is None else str(raw_calendar)
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":
        raise _fail(name, units, calendar, f"the values are {values.dtype}, not numbers")
    match = re.match(r"(.+) since (.+)", units)
    if match is None:
        raise _fail(name, units, calendar, "the units are not '<unit> since <date>'")
    unit = _unit_name(match.group(1))
    try:
        ref_text = _padded(match.group(2).strip())
    except ValueError as exc:
        raise _fail(name, units, calendar, str(exc)) from None
    flat = values.reshape(-1)
    if unit is not None and calendar.lower() in _STANDARD:
        ref = _reference_ns(ref_text)
        if ref is not None and (calendar.lower() == "proleptic_gregorian" or ref >= _REFORM):
            decoded = _decode_numpy(flat, unit, ref)
            if decoded is not None:
                return decoded.reshape(values.shape)
    return _decode_cftime(flat, units, calendar, name).reshape(values.shape)


def _decode_cftime(flat: np.ndarray, units: str, calendar: str, name: str) -> np.ndarray:
    import cftime

    numbers = flat.astype(float)
    if numbers.size and np.isnan(numbers).any():
        raise _fail(name, units, calendar, "missing (NaN) times need the standard calendar")
    try:
        dates = np.asarray(
            cftime.num2date(numbers, units, calendar, only_use_cftime_datetimes=True)
        )
    except Exception as exc:
        raise _fail(name, units, calendar, f"{type(exc).__name__}: {exc}") from None
    if dates.size == 0:
        return np.array([], dtype=object)
    lo, hi = dates[np.argmin(numbers)], dates[np.argmax(numbers)]
    kind = type(lo)
    if lo < kind(1582, 10, 15):
        return dates
    lower = kind(1677, 9, 21, 0, 12, 43, 145224)
    upper = kind(2262, 4, 11, 23, 47, 16, 854775)
    if lo < lower or hi > upper:
        return dates
    if calendar.lower() in _STANDARD:
        return np.array([np.datetime64(d.isoformat(), "ns") for d in dates], dtype="datetime64[ns]")
    return dates
