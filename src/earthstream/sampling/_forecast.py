"""Forecasting windows: input steps up to a reference time ``t``, targets at ``t + lead``.

The time axis is read from the coordinate, never assumed regular: a sample
exists only where every step it needs is present *and* no step is missing
between its first and last one.  Such samples become explicit window starts on
the time axis (:class:`~earthstream.sampling.AxisWindows` ``explicit``), and the
window reads only the steps a sample uses (``AxisWindows.offsets``: a 72-hour
rollout on a 1-hourly axis reads its inputs and leads, not every hour between);
:func:`split_forecast` takes the input and target steps out of it (views when
they are evenly spaced).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .._validate import check_names, check_whole
from ..errors import ConfigError, ForecastError, TimeAxisError
from ._time import as_datetime64, format_time, is_time_axis, time_of_year

__all__ = ["Forecast", "ForecastPlan", "parse_timedelta", "plan_forecast", "split_forecast"]

_UNITS = {"s": "s", "sec": "s", "min": "m", "m": "m", "h": "h", "hr": "h", "d": "D", "D": "D"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([a-zA-Z]+)\s*$")

#: Batch keys of target variables: ``"target/<variable>"``.
TARGET_PREFIX = "target/"


def parse_timedelta(value: Any, *, what: str = "lead") -> Any:
    """A duration as ``timedelta64[ns]``: ``"6h"``, ``"90min"``, ``"1D"``, a ``timedelta``.

    >>> parse_timedelta("6h"), bool(parse_timedelta("1D") == parse_timedelta("24h"))
    (np.timedelta64(21600000000000,'ns'), True)
    """
    if isinstance(value, np.timedelta64):
        return value.astype("timedelta64[ns]")
    if isinstance(value, _dt.timedelta):
        return np.timedelta64(value).astype("timedelta64[ns]")
    if isinstance(value, str):
        match = _PATTERN.match(value)
        unit = _UNITS.get(match.group(2), _UNITS.get(match.group(2).lower())) if match else None
        if match and unit:
            return np.timedelta64(int(match.group(1)), cast(Any, unit)).astype("timedelta64[ns]")
    raise ConfigError(
        f"{what}={value!r} is not a duration; use e.g. '6h', '90min', '1D', "
        "a datetime.timedelta or a numpy.timedelta64."
    )


@dataclass(frozen=True)
class Forecast:
    """Forecast samples along a time dim: ``inputs`` steps up to ``t``, targets at ``t + lead``.

    Parameters
    ----------
    inputs
        Input steps per sample, ending at the reference time ``t``, ``step`` apart.
    lead
        One duration (``"6h"``) or several (``("6h", "24h")``): a target step at
        each ``t + lead``.
    step
        Spacing of the input steps (default: the spacing of the time axis).
    dim
        The time dim (it must have a datetime coordinate).
    targets
        Variables delivered as targets (default: every streamed variable).
        Targets are keyed ``"target/<name>"`` in the batch.
    input_variables
        Variables delivered as inputs (default: every streamed variable).
    every
        Keep every ``every``-th reference time (e.g. 4 on a 6-hourly axis: one
        sample start per day).

    Examples
    --------
    >>> Forecast(inputs=2, lead="24h").leads
    (np.timedelta64(86400000000000,'ns'),)
    """

    inputs: int = 1
    lead: Any = "6h"
    step: Any = None
    dim: str = "time"
    targets: tuple[str, ...] | None = None
    input_variables: tuple[str, ...] | None = None
    every: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "inputs", check_whole(self.inputs, "Forecast(inputs)", minimum=1, maximum=2**31)
        )
        object.__setattr__(
            self, "every", check_whole(self.every, "Forecast(every)", minimum=1, maximum=2**31)
        )
        if not isinstance(self.dim, str):
            raise ConfigError(f"Forecast(dim={self.dim!r}) must be the name of the time dim.")
        for name in ("targets", "input_variables"):
            object.__setattr__(self, name, check_names(getattr(self, name), f"Forecast({name})"))
        for lead in self.leads:
            if lead <= np.timedelta64(0, "ns"):
                raise ForecastError(
                    f"Forecast lead {self.lead!r} must be positive: targets lie after the "
                    "reference time."
                )

    @property
    def leads(self) -> tuple[np.timedelta64, ...]:
        leads = self.lead if isinstance(self.lead, list | tuple) else (self.lead,)
        if not leads:
            raise ConfigError("Forecast(lead=()) needs at least one lead, e.g. '6h'.")
        return tuple(parse_timedelta(v) for v in leads)

    @classmethod
    def coerce(cls, value: Forecast | Mapping[str, Any]) -> Forecast:
        """A :class:`Forecast` from itself or a mapping of its fields."""
        if isinstance(value, Forecast):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise ConfigError(
                    f"forecast has unknown keys {unknown}; use {sorted(names)} "
                    "(see earthstream.Forecast)."
                )
            return cls(**value)
        raise ConfigError(
            f"forecast={value!r} must be an earthstream.Forecast or a mapping such as "
            "{'inputs': 2, 'lead': '24h'}."
        )


@dataclass(frozen=True)
class ForecastPlan:
    """Where a forecast's steps lie inside the window the engine cuts; picklable.

    ``starts`` are the window starts on the time axis (the first input step of
    each sample); the window spans ``length`` steps; input steps are at
    ``input_offsets`` and target steps at ``target_offsets`` from its start.
    ``steps`` are the offsets the window reads (inputs and targets, ascending,
    each once): the sample's time axis holds these steps, in this order.
    """

    dim: str
    starts: tuple[int, ...]
    length: int
    input_offsets: tuple[int, ...]
    target_offsets: tuple[int, ...]
    leads: tuple[np.timedelta64, ...]
    spacing: np.timedelta64
    input_variables: tuple[str, ...]
    target_variables: tuple[str, ...]
    dropped: int  # reference times left out because a step was missing
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.steps:
            merged = sorted(set(self.input_offsets) | set(self.target_offsets))
            object.__setattr__(self, "steps", tuple(merged))

    @property
    def reference_offset(self) -> int:
        return self.input_offsets[-1]

    def positions(self, offsets: Sequence[int]) -> list[int]:
        """Where steps at ``offsets`` (from the window start) sit on the sample's time axis."""
        where = {step: i for i, step in enumerate(self.steps)}
        return [where[o] for o in offsets]


def _time_axis(dim: str, coords: Mapping[str, np.ndarray]) -> np.ndarray:
    time = coords.get(dim)
    if time is None:
        raise TimeAxisError(
            f"forecast windows need a 1-D coordinate for dim {dim!r} to find the steps; the "
            f"source has coordinates {sorted(coords)}. Pass Forecast(dim=...) naming its time dim."
        )
    labels = np.asarray(time)
    if not is_time_axis(labels):
        raise TimeAxisError(
            f"coordinate {dim!r} holds {labels.dtype}, not datetimes; forecast windows need "
            "decoded times (CF 'units: hours since ...' are decoded by open_zarr)."
        )
    # cftime axes (any CF calendar) as microseconds counted in their own calendar:
    # only differences are used below, so steps and gaps are calendar-correct
    time = labels.astype("datetime64[ns]") if labels.dtype.kind == "M" else as_datetime64(labels)
    if len(time) > 1 and not (np.diff(time) > np.timedelta64(0, "ns")).all():
        bad = int(np.flatnonzero(~(np.diff(time) > np.timedelta64(0, "ns")))[0])
        raise TimeAxisError(
            f"coordinate {dim!r} is not strictly increasing (index {bad}: "
            f"{format_time(labels[bad])} then {format_time(labels[bad + 1])}); forecast "
            "windows need a sorted time axis without duplicates or missing times."
        )
    return time


def _steps(value: np.timedelta64, spacing: np.timedelta64, what: str) -> int:
    if value % spacing != np.timedelta64(0, "ns"):
        raise ForecastError(
            f"{what} of {_fmt(value)} is not a whole number of the time axis spacing "
            f"({_fmt(spacing)}); use a multiple of {_fmt(spacing)}."
        )
    return int(value // spacing)


def _fmt(delta: np.timedelta64) -> str:
    hours = delta / np.timedelta64(1, "h")
    return f"{hours:g}h" if hours >= 1 else f"{delta / np.timedelta64(1, 'm'):g}min"


def plan_forecast(
    forecast: Forecast,
    coords: Mapping[str, np.ndarray],
    variables: Mapping[str, tuple[str, ...]],
) -> ForecastPlan:
    """Find every reference time whose inputs and targets are all present, gap-free.

    ``variables`` maps each streamed variable to its dims.

    >>> t = np.array(["2020-01-01T00", "2020-01-01T06", "2020-01-01T12", "2020-01-01T18",
    ...               "2020-01-02T06"], dtype="datetime64[ns]")  # 2020-01-02T00 is missing
    >>> plan = plan_forecast(Forecast(inputs=2, lead="6h"), {"time": t},
    ...                      {"t2m": ("time", "lat", "lon")})
    >>> plan.starts, plan.input_offsets, plan.target_offsets, plan.dropped
    ((0, 1), (0, 1), (2,), 1)
    >>> regular = np.datetime64("2020-01-01T00", "ns") + np.arange(8) * np.timedelta64(6, "h")
    >>> rollout = plan_forecast(Forecast(inputs=2, lead=("6h", "18h")), {"time": regular},
    ...                         {"t2m": ("time", "lat", "lon")})
    >>> rollout.length, rollout.steps, rollout.starts  # reads 3 of the 5 steps it spans
    (5, (0, 1, 2, 4), (0, 1, 2, 3))
    """
    dim = forecast.dim
    time = _time_axis(dim, coords)
    names = tuple(variables)
    for role, chosen in (
        ("targets", forecast.targets),
        ("input_variables", forecast.input_variables),
    ):
        for name in chosen or ():
            if name not in variables:
                raise ForecastError(
                    f"Forecast({role}=...) names {name!r}, which the stream does not deliver; "
                    f"streamed variables: {', '.join(names)}. Add it to variables= or drop it."
                )
    inputs_v = forecast.input_variables or names
    targets_v = forecast.targets or names
    for name in dict.fromkeys((*inputs_v, *targets_v)):
        if dim not in variables[name]:
            raise ForecastError(
                f"variable {name!r} has no {dim!r} dim (dims {variables[name]}), so it has no "
                "steps to forecast; stream it in its own modality or leave it out of the "
                "forecast variables."
            )
    if len(time) < 2:
        raise ForecastError(
            f"the {dim!r} axis has {len(time)} step(s); a forecast needs at least an input and "
            "a later target."
        )
    spacing = np.diff(time).min()
    step = spacing if forecast.step is None else parse_timedelta(forecast.step, what="step")
    k_step = _steps(step, spacing, "the input step")
    if k_step < 1:
        raise ForecastError(f"Forecast(step={forecast.step!r}) must be positive.")
    if (forecast.inputs - 1) * k_step >= len(time):  # before listing the input offsets
        raise ForecastError(
            f"{forecast.inputs} inputs {_fmt(step)} apart span more than the {dim!r} axis, "
            f"which covers only {_fmt(time[-1] - time[0])}; use fewer inputs or a shorter lead."
        )
    ins = [-(forecast.inputs - 1 - j) * k_step for j in range(forecast.inputs)]
    outs = [_steps(lead, spacing, "the lead") for lead in forecast.leads]
    offsets = np.array(sorted(set(ins) | set(outs)), dtype=np.int64)
    lo, hi = int(offsets.min()), int(offsets.max())
    n = len(time)
    refs = np.arange(-lo, n - hi, dtype=np.int64)
    if len(refs) == 0:
        span = (hi - lo) * spacing
        raise ForecastError(
            f"a sample spans {_fmt(span)} ({forecast.inputs} inputs and lead up to "
            f"{_fmt(max(forecast.leads))}) but the {dim!r} axis covers only "
            f"{_fmt(time[-1] - time[0])}; use fewer inputs or a shorter lead."
        )
    # gap-free: every step from the first input to the last target is where a regular
    # axis would have it, so no timestamp is missing in between
    expected = time[refs][:, None] + np.arange(lo, hi + 1) * spacing
    actual = time[refs[:, None] + np.arange(lo, hi + 1)]
    ok = (expected == actual).all(axis=1)
    gaps = int((~ok).sum())
    if forecast.every > 1:
        # on the regular axis (steps since the first time), so gaps do not shift it
        ok &= ((time[refs] - time[0]) // spacing) % forecast.every == 0
    kept = refs[ok]
    if len(kept) == 0:
        raise ForecastError(
            f"no reference time on the {dim!r} axis has all of its input and target steps "
            f"without a gap (spacing {_fmt(spacing)}, span {_fmt((hi - lo) * spacing)}); check "
            "the time coordinate for missing steps, or use a shorter lead or fewer inputs."
        )
    return ForecastPlan(
        dim=dim,
        starts=tuple(int(v) for v in kept + lo),
        length=hi - lo + 1,
        input_offsets=tuple(v - lo for v in ins),
        target_offsets=tuple(v - lo for v in outs),
        leads=forecast.leads,
        spacing=spacing,
        input_variables=tuple(inputs_v),
        target_variables=tuple(targets_v),
        dropped=gaps,
    )


def _take(array: np.ndarray, axis: int, offsets: Sequence[int]) -> np.ndarray:
    """Steps ``offsets`` along ``axis``: a view when they are evenly spaced."""
    first, last = offsets[0], offsets[-1]
    if len(offsets) == 1:
        index: list[Any] = [slice(None)] * array.ndim
        index[axis] = slice(first, first + 1)
        return cast(np.ndarray, array[tuple(index)])
    step = offsets[1] - offsets[0]
    if step > 0 and list(offsets) == list(range(first, last + 1, step)):
        index = [slice(None)] * array.ndim
        index[axis] = slice(first, last + 1, step)
        return cast(np.ndarray, array[tuple(index)])
    return np.take(array, offsets, axis=axis)


def split_forecast(
    data: Mapping[str, np.ndarray],
    dims: Mapping[str, tuple[str, ...]],
    plan: ForecastPlan,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Input arrays under each variable's name, targets under ``"target/<name>"``.

    Arrays are ``(B, *sample dims)`` with the time dim holding the window's
    ``plan.steps``; they come out cut to the input or target steps (length
    ``inputs`` and ``len(leads)``).
    """
    out: dict[str, np.ndarray] = {}
    out_dims: dict[str, tuple[str, ...]] = {}
    for name, array in data.items():
        var_dims = dims[name]
        if plan.dim not in var_dims:  # not part of the forecast: passed on unchanged
            out[name], out_dims[name] = array, var_dims
            continue
        axis = 1 + var_dims.index(plan.dim)
        if name in plan.input_variables:
            out[name] = _take(array, axis, plan.positions(plan.input_offsets))
            out_dims[name] = var_dims
        if name in plan.target_variables:
            out[TARGET_PREFIX + name] = _take(array, axis, plan.positions(plan.target_offsets))
            out_dims[TARGET_PREFIX + name] = var_dims
    return out, out_dims


def time_encoding(times: np.ndarray) -> np.ndarray:
    """``(n, 4)`` float32: sin/cos of the day of the year and of the hour of the day.

    ``times`` are ``datetime64`` or ``cftime`` datetimes; the year has 365.25 days,
    or 360/365/366 in the ``360_day``/``noleap``/``all_leap`` calendars.

    >>> enc = time_encoding(np.array(["2020-01-01T00", "2020-07-01T12"], dtype="datetime64[ns]"))
    >>> enc.shape, [round(float(v), 3) for v in enc[1, 2:]]
    ((2, 4), [0.0, -1.0])
    """
    day, hour, year = time_of_year(np.asarray(times))
    a, b = 2 * np.pi * day / year, 2 * np.pi * hour / 24.0
    out = np.stack([np.sin(a), np.cos(a), np.sin(b), np.cos(b)], axis=-1)
    return np.asarray(out, dtype=np.float32)


def position_encoding(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``(n, 4)`` float32: sin/cos of latitude and of longitude (degrees).

    >>> [round(float(v), 3) for v in position_encoding(np.array([90.0]), np.array([180.0]))[0]]
    [1.0, 0.0, 0.0, -1.0]
    """
    la, lo = np.deg2rad(np.asarray(lat, np.float64)), np.deg2rad(np.asarray(lon, np.float64))
    out = np.stack([np.sin(la), np.cos(la), np.sin(lo), np.cos(lo)], axis=-1)
    return np.asarray(out, dtype=np.float32)
