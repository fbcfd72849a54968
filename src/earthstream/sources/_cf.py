"""CF decoding of variable values, with xarray's semantics, one chunk at a time.

``xarray.open_zarr`` decodes a variable's stored values with three CF rules:
``_Unsigned`` reinterprets signed integers as unsigned (or the reverse),
``_FillValue`` and ``missing_value`` become NaN, and ``scale_factor`` /
``add_offset`` unpack integers into floats.  Its Zarr backend adds one more:
a Zarr **v2** array's ``fill_value`` is its ``_FillValue`` (so it is masked),
a Zarr **v3** array's ``fill_value`` is not (only a ``_FillValue`` attribute is,
stored base64-encoded for floats).

This module turns a variable's attributes into a frozen, picklable
:class:`CFCoder` once, at open time, and applies it to whole chunks:

* integers of one or two bytes (the usual packed types) go through a lookup
  table of every possible stored value, decoded once per process with
  xarray's arithmetic: one gather per chunk, exact by construction;
* other types are decoded with a few fused NumPy passes into reused scratch
  buffers, the arithmetic done in the dtype xarray uses and rounded once into
  the delivered dtype.

:func:`decode_reference` is the straightforward (allocating) version of the
same rules, used for coordinates, fill values and the lookup tables.
"""

from __future__ import annotations

import base64
import functools
import math
import re
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import UnsupportedFormatError

__all__ = [
    "CFCoder",
    "CFOptions",
    "DecodedDtype",
    "backend_attrs",
    "cf_coder",
    "decode_reference",
    "fill_values",
    "is_time_like",
]

#: How values that CF decoding turns into floats are delivered: ``"float32"``
#: (default) wherever xarray's decoded dtype is float64 and the stored dtype is not
#: float64 (packed integers: Zarr attributes are JSON doubles, so xarray unpacks
#: them into float64), or ``"xarray"`` for xarray's own dtype rule.
DecodedDtype = Literal["float32", "xarray"]

_TIMEDELTA_UNITS = {
    "days",
    "hours",
    "minutes",
    "seconds",
    "milliseconds",
    "microseconds",
    "nanoseconds",
}
_TIME_UNITS_RE = re.compile(r"(.+) since (.+)")
_INT64_MIN = np.iinfo(np.int64).min


@dataclass(frozen=True)
class CFOptions:
    """Which CF rules apply, named as in :func:`xarray.open_zarr`.

    ``mask_and_scale``: ``_FillValue``/``missing_value`` to NaN, ``scale_factor``,
    ``add_offset`` and ``_Unsigned``; ``decode_times``: CF time coordinates to
    datetimes; ``decoded_dtype``: see :data:`DecodedDtype`.
    """

    mask_and_scale: bool = True
    decode_times: bool = True
    decoded_dtype: DecodedDtype = "float32"

    @classmethod
    def raw(cls) -> CFOptions:
        """No decoding at all (``decode_cf=False``)."""
        return cls(mask_and_scale=False, decode_times=False)


def is_time_like(units: Any) -> Literal["datetime", "timedelta", False]:
    """xarray's test of CF time units: ``"<unit> since <date>"`` or a bare duration unit.

    >>> is_time_like("hours since 1900-01-01"), is_time_like("hours"), is_time_like("K")
    ('datetime', 'timedelta', False)
    """
    if units is None:
        return False
    text = str(units)
    if "since" in text:
        match = _TIME_UNITS_RE.match(text)
        if match is None:
            return False
        ref = match.group(2).strip()
        if not (re.match(r".*\d{4}.*", ref) or re.match(r"(\d+)(.*)", ref)):
            return False
        return "datetime"
    return "timedelta" if text in _TIMEDELTA_UNITS else False


def _isnull(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False


def _decode_v3_fill(value: Any, dtype: np.dtype[Any]) -> Any:
    """A Zarr v3 ``_FillValue`` attribute as xarray's ``FillValueCoder`` reads it.

    xarray writes floats as the base64 of a little-endian double; plain numbers
    (written by other tools) are accepted as they are.
    """
    if dtype.kind == "f" and isinstance(value, str | bytes):
        try:
            raw = base64.standard_b64decode(value)
            if len(raw) == 8:
                return struct.unpack("<d", raw)[0]
        except ValueError:
            pass
        return float(value)  # "NaN", "Infinity"
    if dtype.kind in "iu" and isinstance(value, int | float | np.integer | np.floating):
        return int(value)
    return value


def backend_attrs(
    attrs: Mapping[str, Any], dtype: np.dtype[Any], zarr_format: int, fill_value: Any
) -> dict[str, Any]:
    """A Zarr array's attributes as xarray's Zarr backend hands them to the CF coders.

    v2: the array's ``fill_value`` (when set) is the ``_FillValue``.  v3: a
    ``_FillValue`` attribute is decoded from its JSON form; ``fill_value`` is
    not a mask.  ``_ARRAY_DIMENSIONS`` is dropped.

    >>> backend_attrs({"_ARRAY_DIMENSIONS": ["x"]}, np.dtype("f4"), 2, np.float32(-9999))
    {'_FillValue': np.float32(-9999.0)}
    >>> backend_attrs({"_FillValue": "AAAAAAAAJMA="}, np.dtype("f4"), 3, np.float32(0))
    {'_FillValue': -10.0}
    """
    out = {k: v for k, v in attrs.items() if k != "_ARRAY_DIMENSIONS"}
    if zarr_format == 2:
        if fill_value is not None:
            out["_FillValue"] = fill_value
    elif out.get("_FillValue") is not None:
        out["_FillValue"] = _decode_v3_fill(out["_FillValue"], dtype)
    return out


def _scalar(name: str, key: str, value: Any) -> Any:
    """A ``scale_factor``/``add_offset`` as xarray uses it (one-element lists unwrapped)."""
    if isinstance(value, list | tuple | np.ndarray) and np.ndim(value) > 0:
        if np.size(value) != 1:
            raise UnsupportedFormatError(
                f"variable {name!r} has {key}={value!r}: CF needs one number. Fix the "
                "attribute, or open with mask_and_scale=False to read the stored values."
            )
        value = np.asarray(value).item()
    # numpy scalars stay numpy scalars (their type decides the arithmetic, as in xarray)
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise UnsupportedFormatError(
            f"variable {name!r} has {key}={value!r}, which is not a number. Fix the "
            "attribute, or open with mask_and_scale=False to read the stored values."
        )
    return value


def _choose_float_dtype(
    dtype: np.dtype[Any], scale: Any, offset: Any, has_scale: bool, has_offset: bool
) -> np.dtype[Any]:
    """xarray's ``_choose_float_dtype``: the type packed values are unpacked into."""
    if has_scale or has_offset:
        scale_type = np.dtype(type(scale)) if scale is not None else None
        offset_type = np.dtype(type(offset)) if offset is not None else None
        if (
            offset is not None
            and scale is not None
            and offset_type == scale_type
            and scale_type in (np.float32, np.float64)
        ):
            if dtype.itemsize == 4 and dtype.kind in "iu":
                return np.dtype(np.float64)
            return np.dtype(scale_type)
        if offset is not None:
            return np.dtype(np.float64)
        if scale_type is not None:
            return scale_type
    if dtype.itemsize <= 4 and dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.itemsize <= 2 and dtype.kind in "iu":
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _maybe_promote(dtype: np.dtype[Any]) -> np.dtype[Any]:
    if dtype.kind in "fc":
        return dtype
    if dtype.kind in "iu":
        return np.dtype(np.float32 if dtype.itemsize <= 2 else np.float64)
    return np.dtype(object)


@dataclass(frozen=True)
class CFCoder:
    """The CF decoding of one variable: stored values -> delivered values.

    Built by :func:`cf_coder`; frozen and picklable.  Steps, in xarray's order:
    reinterpret as ``unsigned`` (``_Unsigned``), cast to ``mask_dtype`` and set
    the values equal to any of ``fills`` to ``masked`` (``_FillValue``,
    ``missing_value``), cast to ``scale_dtype`` and apply ``scale``/``offset``;
    ``xarray_dtype`` is the result's dtype in xarray, ``dtype`` the delivered one
    (a single rounding from ``xarray_dtype``).
    """

    name: str
    raw_dtype: str
    dtype: str
    xarray_dtype: str
    unsigned: str | None = None
    fills: tuple[Any, ...] = ()
    mask_dtype: str | None = None
    masked: Any = None
    scale_dtype: str | None = None
    scale: Any = None
    offset: Any = None
    _scratch: Any = field(default=None, compare=False, hash=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scratch"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        """The delivered dtype."""
        return np.dtype(self.dtype)

    @property
    def uses_table(self) -> bool:
        """Decoded through a lookup table of every stored value (1- and 2-byte integers)."""
        raw = np.dtype(self.raw_dtype)
        return raw.kind in "iu" and raw.itemsize <= 2

    def describe(self) -> str:
        """A short description for reprs, e.g. ``"int16 -> float32 (scale, offset, mask)"``."""
        steps = []
        if self.unsigned:
            steps.append("unsigned")
        if self.scale is not None:
            steps.append("scale")
        if self.offset is not None:
            steps.append("offset")
        if self.fills:
            steps.append("mask")
        raw = np.dtype(self.raw_dtype).name
        return f"{raw} -> {np.dtype(self.dtype).name} ({', '.join(steps)})"

    # -- decoding -------------------------------------------------------------------
    def table(self) -> np.ndarray:
        """Decoded value of every stored value (1- and 2-byte integers), indexed by the
        stored bits read as an unsigned integer; built once per process."""
        return _table(self)

    def decode(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Decode ``raw`` (stored dtype, native byte order) into ``out`` (delivered dtype).

        ``out`` must have ``raw``'s shape; it is allocated when ``None``.  No
        allocation happens per call for contiguous arrays (scratch buffers are
        kept per thread).
        """
        raw = np.asarray(raw)
        if raw.dtype != np.dtype(self.raw_dtype):
            raw = raw.astype(self.raw_dtype)
        if out is None:
            out = np.empty(raw.shape, self.dtype)
        if out.shape != raw.shape:
            raise ValueError(f"out has shape {out.shape}, the values {raw.shape}")
        target = out
        if not out.flags.c_contiguous or out.dtype != np.dtype(self.dtype):
            target = self._buffer("out", raw.shape, np.dtype(self.dtype))
        if not raw.flags.c_contiguous:
            raw = np.ascontiguousarray(raw)
        if self.uses_table:
            index_type = np.dtype(f"u{raw.dtype.itemsize}")
            flat = raw.reshape(-1).view(index_type)
            np.take(self.table(), flat, out=target.reshape(-1), mode="clip")
        else:
            self._arithmetic(raw, target)
        if target is not out:
            out[...] = target
        return out

    def _buffer(self, key: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        local = self._scratch
        if local is None:
            local = threading.local()
            object.__setattr__(self, "_scratch", local)
        buffers: dict[str, np.ndarray] | None = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = {}
        n = math.prod(shape)
        buf = buffers.get(key)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = buffers[key] = np.empty(n, dtype)
        return buf[:n].reshape(shape)

    def _arithmetic(self, raw: np.ndarray, out: np.ndarray) -> None:
        """The fused passes of types without a table: the same arithmetic as
        :func:`decode_reference`, through reused scratch buffers."""
        data = raw
        if self.unsigned is not None:
            data = raw.view(self.unsigned)  # same bits: what NumPy's integer cast gives
        cond: np.ndarray | None = None
        if self.mask_dtype is not None:
            mask_dtype = np.dtype(self.mask_dtype)
            if data.dtype != mask_dtype:
                cast = self._buffer("mask", data.shape, mask_dtype)
                np.copyto(cast, data, casting="unsafe")
                data = cast
            cond = self._buffer("cond", data.shape, np.dtype(bool))
            for i, fv in enumerate(self.fills):
                if i == 0:
                    np.equal(data, fv, out=cond)
                else:
                    cond |= data == fv
        if self.scale_dtype is not None:
            # xarray: data.astype(work); data *= scale; data += offset (in place, so
            # each step is computed in result_type(work, scalar) and stored as work)
            work = np.dtype(self.scale_dtype)
            steps: list[tuple[Any, Any]] = [
                (np.multiply, v) for v in (self.scale,) if v is not None
            ]
            steps += [(np.add, v) for v in (self.offset,) if v is not None]
            loops = [np.result_type(work, v) for _, v in steps]
            if data.dtype != work and any(loop != work for loop in loops):
                cast = self._buffer("work", data.shape, work)
                np.copyto(cast, data, casting="unsafe")
                data = cast
            if not steps:
                np.copyto(out, data, casting="unsafe")
            for i, ((ufunc, value), loop) in enumerate(zip(steps, loops, strict=True)):
                last = i == len(steps) - 1
                if last:
                    target = out
                else:
                    target = out if out.dtype == work else self._buffer("scale", data.shape, work)
                ufunc(data, value, out=target, dtype=loop, casting="unsafe")
                data = target
        else:
            np.copyto(out, data, casting="unsafe")
        if cond is not None:
            np.copyto(out, self.masked, where=cond, casting="unsafe")

    def decode_scalar(self, value: Any) -> Any:
        """One stored value decoded (e.g. the fill value of missing chunks), as a Python scalar."""
        return decode_reference(self, np.asarray([value], dtype=self.raw_dtype))[0].item()


@functools.lru_cache(maxsize=64)
def _table(coder: CFCoder) -> np.ndarray:
    raw = np.dtype(coder.raw_dtype)
    bits = np.arange(2 ** (8 * raw.itemsize), dtype=f"u{raw.itemsize}")
    table = decode_reference(coder, bits.view(raw))
    table.flags.writeable = False
    return table


def decode_reference(coder: CFCoder, raw: np.ndarray) -> np.ndarray:
    """The CF decoding of ``raw``, step by step as xarray's coders do it (allocates).

    >>> coder = cf_coder("t", {"scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32768},
    ...                  np.dtype("int16"))
    >>> decode_reference(coder, np.array([126, -132, -32768], dtype="int16"))
    array([281.26, 278.68,    nan], dtype=float32)
    """
    data = np.asarray(raw)
    if coder.unsigned is not None:
        data = np.asarray(data, dtype=coder.unsigned)
    if coder.mask_dtype is not None:
        data = np.array(data, dtype=coder.mask_dtype, copy=True)
        condition: Any = False
        for fv in coder.fills:
            condition = condition | (data == fv)
        data[condition] = coder.masked
    if coder.scale_dtype is not None:
        data = data.astype(coder.scale_dtype, copy=True)
        if coder.scale is not None:
            data *= coder.scale
        if coder.offset is not None:
            data += coder.offset
    return np.asarray(data).astype(coder.dtype, copy=False)


def fill_values(attrs: Mapping[str, Any], dtype: np.dtype[Any]) -> tuple[Any, ...]:
    """The stored values xarray masks (``missing_value`` then ``_FillValue``; NaN left out)."""
    fills: list[Any] = []
    for key in ("missing_value", "_FillValue"):
        value = attrs.get(key)
        if value is None:
            continue
        for fv in np.ravel(value):
            if not _isnull(fv) and not any(_same(fv, f) for f in fills):
                fills.append(fv)
    return tuple(fills)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and hash(a) == hash(b)
    except (TypeError, ValueError):
        return False


def cf_coder(
    name: str,
    attrs: Mapping[str, Any],
    dtype: np.dtype[Any],
    options: CFOptions = CFOptions(),
    *,
    times: bool = False,
) -> CFCoder | None:
    """The CF decoding of a variable with ``attrs`` (as :func:`backend_attrs` gives them)
    and stored ``dtype``, or ``None`` when its values are delivered as stored.

    A variable with CF time units (``"days since ..."``) is left alone unless
    ``times`` (a time coordinate about to be decoded to datetimes): then its
    fill values are masked as xarray masks them before time decoding (integers
    to the smallest int64, which becomes ``NaT``).

    >>> cf_coder("t2m", {"units": "K"}, np.dtype("float32")) is None
    True
    >>> cf_coder("t", {"scale_factor": 0.01, "_FillValue": -32768}, np.dtype("int16")).describe()
    'int16 -> float32 (scale, mask)'
    """
    dtype = np.dtype(dtype).newbyteorder("=")
    if not options.mask_and_scale or dtype.kind not in "iufc":
        return None
    time_like = is_time_like(attrs.get("units"))
    if time_like == "datetime" and options.decode_times and not times:
        # xarray decodes such a variable to datetimes; streamed data variables are
        # delivered as their stored numbers (see the docs)
        return None
    raw = dict(attrs)
    fill_dict = {k: raw[k] for k in ("missing_value", "_FillValue") if raw.get(k) is not None}
    encoded: list[Any] = []
    for key, value in list(fill_dict.items()):
        kfill = [fv for fv in np.ravel(value) if not _isnull(fv)]
        if not kfill and dtype.kind in "iu":
            del fill_dict[key]  # xarray drops a fill value an integer cannot hold
            continue
        for fv in kfill:
            if not any(_same(fv, f) for f in encoded):
                encoded.append(fv)
    unsigned_attr = raw.get("_Unsigned")
    has_scale = raw.get("scale_factor") is not None
    has_offset = raw.get("add_offset") is not None
    if unsigned_attr is None and not fill_dict and not has_scale and not has_offset:
        return None

    data_dtype = dtype
    unsigned: str | None = None
    if unsigned_attr is not None:
        if dtype.kind == "i" and unsigned_attr == "true":
            unsigned_dtype = np.dtype(f"u{dtype.itemsize}")
            raw_fill = fill_dict.get("_FillValue")
            if raw_fill is not None and np.ndim(raw_fill) == 0:
                encoded = [f for f in encoded if not _same(f, np.ravel(raw_fill)[0])]
                encoded.append(np.array(raw_fill, dtype=dtype).view(unsigned_dtype).item())
            unsigned, data_dtype = unsigned_dtype.str, unsigned_dtype
        elif dtype.kind == "u" and unsigned_attr == "false":
            signed_dtype = np.dtype(f"i{dtype.itemsize}")
            raw_fill = fill_dict.get("_FillValue")
            if raw_fill is not None and np.ndim(raw_fill) == 0:
                encoded = [f for f in encoded if not _same(f, np.ravel(raw_fill)[0])]
                encoded.append(np.asarray(raw_fill).astype(signed_dtype)[()])
            unsigned, data_dtype = signed_dtype.str, signed_dtype

    scale = _scalar(name, "scale_factor", raw["scale_factor"]) if has_scale else None
    offset = _scalar(name, "add_offset", raw["add_offset"]) if has_offset else None
    has_scale, has_offset = scale is not None, offset is not None

    mask_dtype: np.dtype[Any] | None = None
    masked: Any = None
    if encoded:
        if has_scale or has_offset:
            mask_dtype, masked = _choose_float_dtype(data_dtype, scale, offset, True, True), np.nan
        elif time_like and options.decode_times and data_dtype.kind in "iu":
            mask_dtype, masked = np.dtype(np.int64), _INT64_MIN
        else:
            mask_dtype, masked = _maybe_promote(data_dtype), np.nan
        if mask_dtype.kind == "O":
            return None
    current = mask_dtype if mask_dtype is not None else data_dtype

    scale_dtype: np.dtype[Any] | None = None
    if has_scale or has_offset:
        if ("_FillValue" not in fill_dict and "missing_value" not in fill_dict) or (
            time_like and options.decode_times
        ):
            scale_dtype = _choose_float_dtype(current, scale, offset, has_scale, has_offset)
        else:
            scale_dtype = current
        current = scale_dtype
    if unsigned is None and mask_dtype is None and scale_dtype is None:
        return None

    delivered = current
    if (
        options.decoded_dtype == "float32"
        and current == np.float64
        and dtype != np.float64
        and (mask_dtype is not None or scale_dtype is not None)
    ):
        delivered = np.dtype(np.float32)
    return CFCoder(
        name=name,
        raw_dtype=dtype.str,
        dtype=delivered.str,
        xarray_dtype=current.str,
        unsigned=unsigned,
        fills=tuple(encoded) if mask_dtype is not None else (),
        mask_dtype=None if mask_dtype is None else mask_dtype.str,
        masked=masked,
        scale_dtype=None if scale_dtype is None else scale_dtype.str,
        scale=scale,
        offset=offset,
    )
