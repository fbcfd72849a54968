"""Selections named as xarray names them: ``sel`` by labels, ``isel`` by positions.

A selection is resolved once, from the coordinates, into one contiguous range
of positions per dim in the source arrays (a :class:`Span`).  Everything after
that works on positions: the window grid carries each range as an origin and a
size per axis, so the engine still plans from the store's own chunk grid, and
statistics crop the chunks they read.

The rules are xarray's (``Dataset.isel`` then ``Dataset.sel``):

* ``isel`` takes a position (``-1`` counts from the end) or a ``slice`` of
  positions (end exclusive, Python's rules);
* ``sel`` takes a label or a ``slice`` of labels, both ends inclusive, looked
  up in the dim's index exactly as xarray does (a pandas index; a
  ``CFTimeIndex`` for cftime axes): on ascending *and* descending coordinates
  (``slice(60, -60)`` on a latitude stored from 90 to -90), with strings and
  partial dates on time axes (``slice("1979", "2015")`` is 1979-01-01 up to the
  end of 2015);
* a single label or position (a *scalar* selection) selects one element and,
  as in xarray, drops the dim from the samples: the dim is iterated over its
  one position.  A one-element range (``slice(500, 500)``) keeps the dim;
* steps (``slice(a, b, k)``) are refused: use ``stride=`` for every k-th window;
* a selection that selects nothing raises :class:`~earthstream.errors.SelectionError`
  saying which way the coordinate runs and what to write instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._names import suggest
from ..errors import ConfigError, DimensionError, SelectionError
from ..protocols import Span

__all__ = ["Span", "format_label", "resolve_selection", "selected_coords"]


def format_label(value: Any) -> str:
    """A label as a user writes it."""
    if isinstance(value, np.datetime64):
        return repr(str(value))
    if isinstance(value, np.generic):
        return repr(value.item())
    if hasattr(value, "isoformat"):
        return repr(value.isoformat())
    return repr(value)


def _key_text(kind: str, dim: str, key: Any) -> str:
    if isinstance(key, slice):
        parts = [format_label(key.start), format_label(key.stop)]
        if key.step is not None:
            parts.append(format_label(key.step))
        return f"{kind}[{dim!r}]=slice({', '.join(parts)})"
    return f"{kind}[{dim!r}]={format_label(key)}"


def _scalar(value: Any) -> Any:
    """0-d arrays and NumPy scalars as plain labels (what xarray's sanitizing does)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def _no_step(kind: str, dim: str, key: slice) -> None:
    if key.step is not None and key.step != 1:
        raise SelectionError(
            f"{_key_text(kind, dim, key)} has a step; selections are contiguous ranges. "
            f"For every {key.step}-th window start write stride={{{dim!r}: {key.step}}} "
            f"(with {dim!r} iterated, that is every {key.step}-th element), and "
            f"{kind}={{{dim!r}: slice({format_label(key.start)}, {format_label(key.stop)})}} "
            "for the range."
        )


def _is_cftime(values: np.ndarray) -> bool:
    if values.dtype != object or not len(values):
        return False
    module = type(values[0]).__module__ or ""
    return module.split(".")[0] == "cftime"


def _index(dim: str, values: np.ndarray) -> Any:
    """The index xarray builds for ``values``: a pandas index, or a CFTimeIndex."""
    if _is_cftime(values):
        try:
            from xarray import CFTimeIndex
        except ImportError:  # pragma: no cover - xarray is in the dev extra
            raise SelectionError(
                f"labels on {dim!r} (cftime dates) are looked up with xarray's CFTimeIndex: "
                f"pip install xarray, or select {dim!r} by position with isel="
            ) from None
        return CFTimeIndex(values)
    import pandas as pd

    return pd.Index(values)


def _direction(index: Any) -> str:
    if index.is_monotonic_increasing:
        return "ascending"
    if index.is_monotonic_decreasing:
        return "descending"
    return "unsorted"


def _runs(dim: str, values: np.ndarray, index: Any) -> str:
    first, last = format_label(values[0]), format_label(values[-1])
    return f"{dim!r} runs {_direction(index)} ({first} -> {last})"


def _label_span(dim: str, key: Any, values: np.ndarray) -> tuple[int, int, bool]:
    """Positions in ``values`` that ``key`` selects, xarray's way."""
    n = len(values)
    if n == 0:
        raise SelectionError(f"{_key_text('sel', dim, key)}: {dim!r} has no elements left.")
    index = _index(dim, values)
    text = _key_text("sel", dim, key)
    if isinstance(key, slice):
        _no_step("sel", dim, key)
        lo, hi = _scalar(key.start), _scalar(key.stop)
        try:
            indexer = index.slice_indexer(lo, hi)
        except (KeyError, TypeError, ValueError) as exc:
            raise SelectionError(
                f"{text} cannot be looked up in {dim!r}: {exc} ({_runs(dim, values, index)})."
            ) from None
        if not isinstance(indexer, slice):
            raise SelectionError(
                f"{text} is not one range of positions: {dim!r} is unsorted or has repeated "
                "labels. Select it by position with isel=."
            )
        start, stop, step = indexer.indices(n)
        if step == 1 and stop > start:
            return start, stop, False
        raise SelectionError(_empty_message(dim, key, values, index))
    if isinstance(key, list | tuple | np.ndarray) or (hasattr(key, "ndim") and key.ndim):
        raise SelectionError(
            f"{text}: lists of labels are not supported; select a range with "
            f"slice(first, last) (both ends inclusive, as xarray's sel)."
        )
    label = _scalar(key)
    if values.dtype.kind == "f" and isinstance(label, int | float | np.number):
        label = np.asarray(label, dtype=values.dtype).item()  # as xarray's normalize_label
    try:
        loc = index.get_loc(label)
    except (KeyError, TypeError, ValueError):
        raise SelectionError(
            f"{text} is not a label of {dim!r} ({_runs(dim, values, index)}, {n} labels); a "
            f"single label must match exactly, as in xarray. Select a range with "
            f"slice(first, last), or a position with isel=."
        ) from None
    if isinstance(loc, int | np.integer):
        return int(loc), int(loc) + 1, True
    if isinstance(loc, slice):  # a partial date: every label in that period, dim kept
        start, stop, step = loc.indices(n)
        if step == 1 and stop > start:
            return start, stop, False
    raise SelectionError(
        f"{text} matches labels that are not one range of positions ({dim!r} has repeated "
        "labels). Select it by position with isel=."
    )


def _empty_message(dim: str, key: slice, values: np.ndarray, index: Any) -> str:
    text = _key_text("sel", dim, key)
    runs = _runs(dim, values, index)
    if key.start is not None and key.stop is not None:
        try:
            flipped = index.slice_indexer(_scalar(key.stop), _scalar(key.start))
        except (KeyError, TypeError, ValueError):
            flipped = None
        if isinstance(flipped, slice):
            start, stop, step = flipped.indices(len(values))
            if step == 1 and stop > start:
                return (
                    f"{text} is inverted: {runs}, so its labels run the other way. Write "
                    f"slice({format_label(key.stop)}, {format_label(key.start)}) (xarray's sel "
                    "takes the bounds "
                    "in the coordinate's own order)."
                )
    return (
        f"{text} selects nothing: {runs}, and no label lies in that range. Check the bounds "
        "against the coordinate."
    )


def _position_span(dim: str, key: Any, n: int) -> tuple[int, int, bool]:
    text = _key_text("isel", dim, key)
    if isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_):
        i = int(key)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise SelectionError(
                f"{text} is out of range: {dim!r} has {n} positions (0..{n - 1}, or -{n}..-1 "
                "from the end)."
            )
        return j, j + 1, True
    if isinstance(key, slice):
        _no_step("isel", dim, key)
        for bound in (key.start, key.stop):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int | np.integer)
            ):
                raise SelectionError(
                    f"{text}: isel takes positions (whole numbers); select labels with sel="
                )
        start, stop, _ = key.indices(n)
        if stop > start:
            return start, stop, False
        hint = ""
        if key.start is not None and key.stop is not None:
            back, forth, _ = slice(key.stop, key.start).indices(n)
            if forth > back:
                hint = f" Write slice({key.stop}, {key.start})."
        raise SelectionError(
            f"{text} selects nothing: positions of {dim!r} run 0 -> {n - 1} (ascending).{hint}"
        )
    raise SelectionError(
        f"{text}: use a position (an int) or slice(start, stop) of positions; lists and "
        "arrays of positions are not supported."
    )


def _check_mapping(kind: str, value: Any, sizes: Mapping[str, int]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{kind} must be a mapping from dim name to a selection, e.g. "
            f"{kind}={{'time': slice(...)}}; got {value!r}."
        )
    for dim in value:
        if dim not in sizes:
            raise DimensionError(
                f"{kind} names dim {dim!r}, which the selected variables do not have."
                f"{suggest(str(dim), list(sizes))} Dims: {', '.join(sizes)}."
            )
    return value


def resolve_selection(
    sizes: Mapping[str, int],
    coords: Mapping[str, Any],
    *,
    sel: Mapping[str, Any] | None = None,
    isel: Mapping[str, Any] | None = None,
    base: Mapping[str, Span] | None = None,
) -> dict[str, Span]:
    """The position range of every selected dim in the source arrays.

    Applied in xarray's order: ``base`` (a selection the source already
    carries, e.g. an opened ``xarray.Dataset``'s), then ``isel`` relative to it,
    then ``sel`` on the labels left.

    Parameters
    ----------
    sizes
        Dim -> length in the source arrays.
    coords
        Dim -> 1-D coordinate values over the whole source dim (only needed for
        dims selected by label).
    sel, isel
        Dim -> label (slice), dim -> position (slice).
    base
        Ranges already selected.

    Returns
    -------
    dict
        Dim -> :class:`Span` for every dim with a selection.

    Examples
    --------
    >>> import numpy as np
    >>> lat = np.linspace(90, -90, 19)        # 90, 80, ..., -90 (descending, as ERA5)
    >>> resolve_selection({"lat": 19}, {"lat": lat}, sel={"lat": slice(60, -60)})
    {'lat': Span(start=3, stop=16, scalar=False)}
    >>> resolve_selection({"lat": 19}, {"lat": lat}, isel={"lat": -1})
    {'lat': Span(start=18, stop=19, scalar=True)}
    >>> resolve_selection({"lat": 19}, {"lat": lat}, sel={"lat": slice(-60, 60)})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    earthstream.errors.SelectionError: sel['lat']=slice(-60, 60) is inverted: 'lat' runs ...
    """
    spans: dict[str, Span] = dict(base or {})
    for kind, given in (("isel", isel), ("sel", sel)):
        for dim, key in _check_mapping(kind, given, sizes).items():
            current = spans.get(dim, Span(0, int(sizes[dim])))
            if current.scalar:
                raise SelectionError(
                    f"{_key_text(kind, dim, key)}: {dim!r} is already selected by a single "
                    "label or position, which leaves nothing to select from."
                )
            if kind == "isel":
                a, b, scalar = _position_span(dim, key, current.size)
            else:
                values = coords.get(dim)
                if values is None:
                    raise SelectionError(
                        f"{_key_text(kind, dim, key)}: {dim!r} has no coordinate values to "
                        f"look labels up in; select it by position with isel={{{dim!r}: ...}}."
                    )
                values = np.asarray(values)[current.start : current.stop]
                a, b, scalar = _label_span(dim, key, values)
            spans[dim] = Span(current.start + a, current.start + b, scalar)
    return spans


def selected_coords(coords: Mapping[str, Any], spans: Mapping[str, Span]) -> dict[str, np.ndarray]:
    """``coords`` cut to the selection (1-D coordinates of selected dims sliced).

    >>> selected_coords({"t": np.arange(5)}, {"t": Span(1, 3)})
    {'t': array([1, 2])}
    """
    out: dict[str, np.ndarray] = {}
    for dim, values in coords.items():
        array = np.asarray(values)
        span = spans.get(dim)
        out[dim] = array[span.as_slice()] if span is not None else array
    return out
