"""What statistics cover: selections (``sel``/``isel``, and the old ``selection=``), the
values left out (``nodata``) and a mask of the values kept (``where``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._validate import check_number
from ..errors import ConfigError, DimensionError
from ..protocols import VariableInfo
from ..sampling._select import Span, format_label, resolve_selection
from ..sources import ChunkedSource, source_selection
from ..sources._cf import fill_values
from ..sources._xarray import is_xarray

__all__ = [
    "Selection",
    "check_nodata",
    "check_where",
    "legacy_selection",
    "nodata_of",
    "selection_spans",
]

Selection = Mapping[str, "slice | tuple[Any, Any] | int"]


def _is_label(value: Any) -> bool:
    return value is not None and not isinstance(value, int | np.integer)


def legacy_selection(
    selection: Selection,
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The old ``selection=`` (integers are positions, end exclusive; anything else
    labels, end inclusive) as ``sel``/``isel``, and the call to write instead."""
    if not isinstance(selection, Mapping):
        raise ConfigError(f"selection={selection!r} must be a mapping from dim to a range.")
    sel: dict[str, Any] = {}
    isel: dict[str, Any] = {}
    for dim, value in selection.items():
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            isel[dim] = slice(int(value), int(value) + 1)
            continue
        if isinstance(value, tuple) and len(value) == 2:
            value = slice(*value)
        if not isinstance(value, slice):
            raise ConfigError(
                f"selection[{dim!r}]={value!r} is not a selection; write "
                f"sel={{{dim!r}: slice(first, last)}} (labels) or isel={{{dim!r}: slice(start, "
                "stop)}} (positions)."
            )
        if _is_label(value.start) or _is_label(value.stop):
            sel[dim] = value
        else:
            isel[dim] = value
    parts = []
    for name, given in (("sel", sel), ("isel", isel)):
        if given:
            body = ", ".join(f"{d!r}: {_slice_text(v)}" for d, v in given.items())
            parts.append(f"{name}={{{body}}}")
    return sel, isel, ", ".join(parts)


def _slice_text(value: slice) -> str:
    bounds = [format_label(value.start), format_label(value.stop)]
    if value.step is not None:
        bounds.append(format_label(value.step))
    return f"slice({', '.join(bounds)})"


def selection_spans(
    source: ChunkedSource,
    sel: Mapping[str, Any] | None = None,
    isel: Mapping[str, Any] | None = None,
) -> dict[str, Span]:
    """The position ranges ``sel``/``isel`` select in ``source`` (after its own selection).

    The same rules as :class:`~earthstream.Stream`'s ``sel``/``isel`` (xarray's).

    >>> import numpy as np, earthstream as es
    >>> lat = np.linspace(89.5, -89.5, 180)
    >>> src = es.ArraySource({"x": (("lat",), np.zeros(180))}, coords={"lat": lat})
    >>> selection_spans(src, sel={"lat": slice(29.5, -29.5)})
    {'lat': Span(start=60, stop=120, scalar=False)}
    """
    sizes: dict[str, int] = {}
    for info in source.variables.values():
        for dim, size in zip(info.dims, info.shape, strict=True):
            sizes.setdefault(dim, size)
    base = source_selection(source)
    if not sel and not isel and not base:
        return {}
    coords = source.coords if sel else {}
    return resolve_selection(sizes, coords, sel=sel, isel=isel, base=base)


def check_nodata(nodata: Any) -> None:
    """``"fill"``, ``None``, a finite number, or a name -> one of those; else ConfigError."""
    values = nodata.values() if isinstance(nodata, Mapping) else [nodata]
    for value in values:
        if value is None or (isinstance(value, str) and value == "fill"):
            continue
        if isinstance(value, str):
            raise ConfigError(
                f"nodata={nodata!r}: use 'fill' (each variable's fill value and nodata "
                "attributes), None (only NaN is excluded), a number, or a name -> value mapping."
            )
        check_number(value, "nodata")


def nodata_of(info: VariableInfo, nodata: Any) -> tuple[float, ...]:
    """The values left out besides NaN.

    ``"fill"``: what xarray masks.  A CF-decoded variable already holds NaN
    there, so nothing more; a variable read raw (``mask_and_scale=False``) leaves
    out its stored ``_FillValue``/``missing_value`` (and a Zarr v2 ``fill_value``).
    """
    if isinstance(nodata, Mapping):
        nodata = nodata.get(info.name, "fill")
    if nodata is None:
        return ()
    if isinstance(nodata, str):
        if nodata != "fill":
            raise ConfigError(
                f"nodata={nodata!r}: use 'fill' (the values xarray masks), None (only NaN "
                "is excluded), a number, or a name -> value mapping."
            )
        if info.cf is not None:
            return ()
        values = []
        for value in fill_values(info.attrs, info.dtype):
            number = isinstance(value, int | float | np.number) and not isinstance(value, bool)
            if number:
                values.append(float(value))
        return tuple(values)
    return (float(nodata),)


def check_where(
    where: Any, var_dims: Mapping[str, int], spans: Mapping[str, Span]
) -> tuple[tuple[str, ...], np.ndarray] | None:
    """``where=`` as ``(dims, bool mask)`` over the selection, checked."""
    if where is None:
        return None
    if isinstance(where, tuple) and len(where) == 2:
        dims, mask = tuple(str(d) for d in where[0]), np.asarray(where[1])
    elif is_xarray(where) and isinstance(where, sys.modules["xarray"].DataArray):
        dims, mask = tuple(str(d) for d in where.dims), np.asarray(where.values)
    else:
        raise ConfigError(
            "where= must be (dims, boolean array) or a boolean xarray.DataArray over some dims "
            "of the selection."
        )
    if mask.dtype != bool or mask.ndim != len(dims):
        raise ConfigError(
            f"where= needs a boolean array with one axis per dim {dims}; got {mask.dtype} with "
            f"shape {mask.shape}."
        )
    for dim, n in zip(dims, mask.shape, strict=True):
        if dim not in var_dims:
            raise DimensionError(f"where= names dim {dim!r}, which no selected variable has.")
        size = spans[dim].size if dim in spans else var_dims[dim]
        if dim in spans and spans[dim].scalar:
            raise DimensionError(f"where= names {dim!r}, which the selection drops.")
        if n != size:
            raise ConfigError(
                f"where= has {n} positions along {dim!r}; the selection has {size}. The mask "
                "covers the selection (positions after sel/isel)."
            )
    return dims, mask
