"""Time axes of both kinds: ``datetime64`` and ``cftime`` objects (any CF calendar).

Decoded time coordinates are ``datetime64[ns]`` where NumPy can hold them and
arrays of ``cftime`` datetimes otherwise (non-standard calendars such as
``360_day`` or ``noleap``, dates before 1582 or past 2262), as xarray decodes
them.  The planning code works on one representation: whole microseconds
since 1970-01-01 *counted in the axis's own calendar* (:func:`time_numbers`),
so differences, spacings and gap checks are calendar-correct (a ``360_day``
year has 360 days and no gaps).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

import numpy as np

from ..errors import ConfigError, TimeAxisError

__all__ = [
    "calendar_of",
    "format_time",
    "is_cftime_axis",
    "is_time_axis",
    "label_bounds",
    "time_numbers",
    "time_of_year",
]

_UNITS = "microseconds since 1970-01-01 00:00:00"
_ALIASES = {"gregorian": "standard", "365_day": "noleap", "366_day": "all_leap"}
_YEAR_DAYS = {"360_day": 360.0, "noleap": 365.0, "all_leap": 366.0}
_LABEL_RE = re.compile(
    r"^\s*(-?\d{1,4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[ T](\d{1,2})(?::(\d{1,2})"
    r"(?::(\d{1,2})(?:\.(\d{1,6})\d*)?)?)?)?)?)?\s*$"
)


def is_cftime_axis(values: Any) -> bool:
    """Whether ``values`` is an array of ``cftime`` datetimes.

    >>> import cftime
    >>> is_cftime_axis(np.array([cftime.DatetimeNoLeap(2000, 1, 1)])), is_cftime_axis(np.arange(3))
    (True, False)
    """
    values = np.asarray(values)
    if values.dtype != object or values.size == 0:
        return False
    import cftime

    return isinstance(values.flat[0], cftime.datetime)


def is_time_axis(values: Any) -> bool:
    """Whether ``values`` holds decoded times (``datetime64`` or ``cftime``)."""
    values = np.asarray(values)
    return values.dtype.kind == "M" or is_cftime_axis(values)


def calendar_of(values: Any) -> str:
    """The CF calendar of a time axis (``datetime64``: ``"proleptic_gregorian"``), with
    aliases folded (``gregorian`` -> ``standard``, ``365_day`` -> ``noleap``)."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return "proleptic_gregorian"
    if not is_cftime_axis(values):
        raise TimeAxisError(f"values of {values.dtype} are not times")
    calendar = str(values.flat[0].calendar or "standard").lower()
    return _ALIASES.get(calendar, calendar)


def time_numbers(values: Any) -> tuple[str, np.ndarray]:
    """``(calendar, int64 microseconds since 1970-01-01 in that calendar)`` of a time axis.

    A ``standard``-calendar cftime axis whose dates all follow the 1582 reform
    counts as ``proleptic_gregorian`` (the calendars agree there), so it matches a
    ``datetime64`` axis.  ``NaT`` becomes the smallest int64.

    >>> import cftime
    >>> time_numbers(np.array([cftime.Datetime360Day(1970, 2, 1)]))
    ('360_day', array([2592000000000]))
    """
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return "proleptic_gregorian", values.astype("datetime64[us]").astype(np.int64)
    calendar = calendar_of(values)
    import cftime

    flat = values.reshape(-1)
    numbers = np.asarray(
        cftime.date2num(
            flat, _UNITS, calendar=flat[0].calendar, has_year_zero=flat[0].has_year_zero
        )
    )
    if numbers.dtype.kind != "i":
        numbers = np.round(numbers.astype(np.float64)).astype(np.int64)
    if calendar == "standard":
        kind = type(flat[0])
        if all(d >= kind(1582, 10, 15) for d in (flat.min(), flat.max())):
            calendar = "proleptic_gregorian"
    return calendar, numbers.reshape(values.shape)


def as_datetime64(values: Any) -> np.ndarray:
    """A time axis as ``datetime64[us]`` counted in its own calendar (for arithmetic on
    differences only: for non-standard calendars the labels are not real dates)."""
    return time_numbers(values)[1].astype("datetime64[us]")


def format_time(value: Any) -> str:
    """A time label as text (``2000-02-30T00:00:00`` for a ``360_day`` date)."""
    if isinstance(value, np.datetime64):
        return str(value)
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)


def time_of_year(values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(days since 1 January, hour of the day, days in the year)`` as float64 arrays.

    ``datetime64`` and standard/Gregorian/Julian calendars use 365.25 days a year,
    ``noleap`` 365, ``all_leap`` 366 and ``360_day`` 360.
    """
    values = np.asarray(values)
    if values.dtype.kind == "M":
        times = values.astype("datetime64[ns]")
        year_start = times.astype("datetime64[Y]").astype("datetime64[ns]")
        day = (times - year_start) / np.timedelta64(1, "D")
        hour = (times - times.astype("datetime64[D]").astype("datetime64[ns]")) / np.timedelta64(
            1, "h"
        )
        return day, hour, np.full(times.shape, 365.25)
    if not is_cftime_axis(values):
        raise TimeAxisError(f"values of {values.dtype} are not times")
    flat = values.reshape(-1)
    hour = np.array(
        [d.hour + d.minute / 60 + (d.second + d.microsecond / 1e6) / 3600 for d in flat],
        dtype=np.float64,
    )
    day = np.array([d.dayofyr - 1 for d in flat], dtype=np.float64) + hour / 24.0
    length = _YEAR_DAYS.get(calendar_of(values), 365.25)
    shape = values.shape
    return day.reshape(shape), hour.reshape(shape), np.full(shape, length)


def _date_type(values: np.ndarray) -> Any:
    first = values.flat[0]
    return lambda *parts: type(first)(*parts, has_year_zero=first.has_year_zero)


def label_bounds(values: Any, label: Any) -> tuple[int, int]:
    """The microsecond numbers ``[start, stop)`` (as :func:`time_numbers`) a time label
    covers on a cftime axis: a partial date string covers its whole period
    (``"1979"`` the year, ``"1979-02"`` the month, as xarray's ``sel``), a
    datetime one instant.

    >>> import cftime
    >>> axis = np.array([cftime.Datetime360Day(1970, 1, 1)])
    >>> label_bounds(axis, "1970-02")
    (2592000000000, 5184000000000)
    """
    import cftime

    values = np.asarray(values)
    calendar = values.flat[0].calendar
    make = _date_type(values)

    def number(date: Any) -> int:
        return int(
            cftime.date2num(date, _UNITS, calendar=calendar, has_year_zero=date.has_year_zero)
        )

    if isinstance(label, np.datetime64):
        label = str(label.astype("datetime64[us]"))
    if isinstance(label, cftime.datetime | _dt.datetime):
        try:
            date = make(
                label.year,
                label.month,
                label.day,
                label.hour,
                label.minute,
                label.second,
                label.microsecond,
            )
        except ValueError as exc:
            raise ConfigError(
                f"time label {label!r} is not a date in the {calendar} calendar: {exc}"
            ) from None
        n = number(date)
        return n, n + 1
    if not isinstance(label, str):
        raise ConfigError(
            f"time label {label!r} is not a date; use a string ('1979', '1979-02-01T06'), a "
            "datetime or a cftime datetime."
        )
    match = _LABEL_RE.match(label)
    if match is None:
        raise ConfigError(f"time label {label!r} is not a date such as '1979', '1979-02-01T06:00'.")
    parts = [int(p) if p else None for p in match.groups()]
    if parts[6] is not None:
        parts[6] = int(match.group(7).ljust(6, "0"))
    given = sum(p is not None for p in parts)
    year, month, day, hour, minute, second, micro = (
        p if p is not None else d for p, d in zip(parts, (0, 1, 1, 0, 0, 0, 0), strict=True)
    )
    try:
        start = make(year, month, day, hour, minute, second, micro)
        if given == 1:
            end = make(year + 1, 1, 1)
        elif given == 2:
            end = make(year + (month == 12), month % 12 + 1, 1)
        else:
            step = [
                _dt.timedelta(days=1),
                _dt.timedelta(hours=1),
                _dt.timedelta(minutes=1),
                _dt.timedelta(seconds=1),
                _dt.timedelta(microseconds=1),
            ][given - 3]
            end = start + step
    except ValueError as exc:
        raise ConfigError(
            f"time label {label!r} is not a date in the {calendar} calendar: {exc}"
        ) from None
    return number(start), number(end)
