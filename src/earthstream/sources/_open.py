"""Opening what users hand in: Zarr stores and store objects, xarray datasets, sources.

:func:`open_zarr` dispatches: an ``xarray`` object to :func:`open_xarray` (the
Zarr store behind it, or the general path), anything else to the Zarr opener
(:mod:`~earthstream.sources._zarr_open`).  :func:`as_source` is what every
stream accepts as its source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np

from .._validate import check_flag, check_names
from ..errors import ConfigError, UnsupportedInputError
from ..protocols import SOURCE_MEMBERS, ChunkedSource, is_chunked_source, missing_members
from ._cf import CFOptions, DecodedDtype
from ._xarray import is_xarray, open_xarray
from ._zarr import ZarrSource
from ._zarr_open import is_zarr_input, open_store
from ._zarr_units import READ_UNIT_BYTES

__all__ = ["as_source", "open_zarr"]


@overload
def open_zarr(
    url_or_path: str | os.PathLike[str],
    variables: Sequence[str] | str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    decode_cf: bool = True,
    mask_and_scale: bool = True,
    decode_times: bool = True,
    decoded_dtype: DecodedDtype = "float32",
    read_unit_bytes: int = READ_UNIT_BYTES,
) -> ZarrSource: ...


@overload
def open_zarr(
    url_or_path: Any,
    variables: Sequence[str] | str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    decode_cf: bool = True,
    mask_and_scale: bool = True,
    decode_times: bool = True,
    decoded_dtype: DecodedDtype = "float32",
    read_unit_bytes: int = READ_UNIT_BYTES,
) -> ChunkedSource: ...


def open_zarr(
    url_or_path: Any,
    variables: Sequence[str] | str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    decode_cf: bool = True,
    mask_and_scale: bool = True,
    decode_times: bool = True,
    decoded_dtype: DecodedDtype = "float32",
    read_unit_bytes: int = READ_UNIT_BYTES,
) -> ChunkedSource:
    """Open a Zarr v2 or v3 store (group or single array) lazily.

    An ``xarray.Dataset`` or ``DataArray`` is opened with
    :func:`~earthstream.open_xarray`: the Zarr store behind it when it is still
    xarray's lazy read of one, else a source that reads through xarray.

    Only metadata is read: consolidated metadata when the store has it,
    otherwise each array's ``.zarray``/``zarr.json``.  No chunk is read and no
    dask graph is built.

    Values are CF-decoded as ``xarray.open_zarr`` decodes them by default:
    ``_Unsigned``, ``_FillValue`` and ``missing_value`` to NaN (and a Zarr
    **v2** array's ``fill_value``, as xarray's Zarr backend does; a v3 array's
    ``fill_value`` is not a mask), ``scale_factor``/``add_offset``.  Each chunk
    is decoded once, when it is read; packed integers become float32
    (``decoded_dtype="xarray"`` for xarray's float64).  Time coordinates are
    decoded for every CF calendar, to ``datetime64[ns]`` or ``cftime`` objects
    as xarray does.

    Parameters
    ----------
    url_or_path
        A local path, a ``file://`` URL, or an object-store URL (``s3://``,
        ``gs://``, ``az://``, ``http(s)://``).  Or a store a user already holds:
        any zarr-python ``Store`` (``LocalStore``, ``ObjectStore``,
        ``FsspecStore``, ``ZipStore``, ``MemoryStore``, an Icechunk session's
        ``.store``), a ``zarr.Group`` or a ``zarr.Array`` (with the coordinates
        of its parent group), or an fsspec mapper.  Chunk bytes of a store
        object come through its own ``get`` (byte ranges for shards) and take
        the same fast decode path as a URL.
    variables
        Data variables to keep (default: all arrays that are not coordinates).
    storage_options
        Options for the object-store client of remote URLs (endpoint, region,
        credentials); never logged.  A store object brings its own client:
        only ``retry`` and ``max_requests`` apply to it.
    decode_cf
        ``False``: no decoding at all, the stored values and numbers (sets
        ``mask_and_scale`` and ``decode_times`` to ``False``).
    mask_and_scale
        Mask fill values to NaN and unpack ``scale_factor``/``add_offset`` and
        ``_Unsigned`` (as xarray's argument of the same name).
    decode_times
        Decode CF time coordinates to ``datetime64[ns]`` (or ``cftime`` objects).
    decoded_dtype
        ``"float32"`` (default): values that decoding turns into floats are
        float32 wherever xarray would give float64 from a stored type other than
        float64 (packed int16 becomes float32: half of xarray's bytes, values
        equal to xarray's rounded to float32).  ``"xarray"``: xarray's dtype rule
        (float64 for packed data, since Zarr attributes are JSON doubles).
    read_unit_bytes
        Sharded Zarr v3 arrays: the largest block (decoded bytes) of one shard's
        inner chunks read, cached and cut as one chunk (a *read unit*: whole
        inner chunks, starting along the last dim, never across a shard's
        border; default 4 MiB).  Windows that cross inner chunks' borders then
        lie in one block, and one request fetches the unit.  ``0``: inner chunks
        one by one.  The chosen unit shows in the source's ``repr`` and is its
        variables' ``chunks``.

    Returns
    -------
    ZarrSource

    Raises
    ------
    UnsupportedInputError
        ``url_or_path`` is none of the above (the message lists what is accepted).

    Examples
    --------
    >>> import earthstream as es
    >>> path = es.datasets.era5_like(tmp_path / "era5.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> source = es.open_zarr(path, variables=["t2m", "u10"])
    >>> source.variables["t2m"].dims
    ('time', 'lat', 'lon')
    >>> source.coords["time"][:2]
    array(['2020-01-01T00:00:00.000000000', '2020-01-01T06:00:00.000000000'],
          dtype='datetime64[ns]')

    A zarr-python group (or store, or array) opens the same way:

    >>> import zarr
    >>> group = zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r")
    >>> es.open_zarr(group["t2m"]).variables["t2m"].shape
    (8, 16, 32)
    """
    chosen = check_names(variables, "variables")
    variables = list(chosen) if chosen is not None else None
    decode_times = check_flag(decode_times, "decode_times")
    decode_cf = check_flag(decode_cf, "decode_cf")
    mask_and_scale = check_flag(mask_and_scale, "mask_and_scale")
    if decoded_dtype not in ("float32", "xarray"):
        raise ConfigError(
            f"decoded_dtype={decoded_dtype!r}: use 'float32' (packed values as float32) or "
            "'xarray' (xarray's dtype rule: float64 for packed values)."
        )
    options = (
        CFOptions(bool(mask_and_scale), bool(decode_times), decoded_dtype)
        if decode_cf
        else CFOptions(False, False, decoded_dtype)
    )
    if isinstance(read_unit_bytes, bool) or not isinstance(read_unit_bytes, int | np.integer):
        raise ConfigError(
            f"read_unit_bytes={read_unit_bytes!r}: pass a number of bytes (an int >= 0; "
            "0 reads a shard's inner chunks one by one)."
        )
    if read_unit_bytes < 0:
        raise ConfigError(
            f"read_unit_bytes={read_unit_bytes}: pass a number of bytes >= 0 (0 reads a "
            "shard's inner chunks one by one)."
        )
    if is_xarray(url_or_path):
        return open_xarray(url_or_path, variables)
    return open_store(
        url_or_path,
        variables,
        storage_options=storage_options,
        options=options,
        read_unit_bytes=int(read_unit_bytes),
    )


def as_source(
    source: ChunkedSource | str | os.PathLike[str] | Any,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> ChunkedSource:
    """What every stream accepts as a source, as a :class:`~earthstream.protocols.ChunkedSource`.

    A path or URL, a zarr-python store/group/array, or an ``xarray.Dataset``/
    ``DataArray`` is opened with :func:`open_zarr`; an object with the source
    members is taken to be a source already (checked without calling them: a
    remote source's ``coords`` read the store); anything else raises
    :class:`~earthstream.errors.UnsupportedInputError`.
    """
    if isinstance(source, str | os.PathLike) or is_xarray(source) or is_zarr_input(source):
        return open_zarr(source, storage_options=storage_options)
    if is_chunked_source(source):
        return source
    lacks = missing_members(source)
    has = [m for m in SOURCE_MEMBERS if m not in lacks]
    if has:
        raise UnsupportedInputError(
            f"a {type(source).__name__} has {', '.join(has)} but not {', '.join(lacks)}: a "
            "source implements every member of earthstream.protocols.ChunkedSource "
            f"({', '.join(SOURCE_MEMBERS)}; selection may be an empty mapping)."
        )
    return open_zarr(source, storage_options=storage_options)  # raises UnsupportedInputError
