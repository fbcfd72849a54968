"""Streaming what users hold: an ``xarray.Dataset`` or ``DataArray``.

Two paths, chosen per dataset by :func:`open_xarray`:

* **fast**: every variable is still xarray's lazy Zarr backend array (not
  loaded, not edited, no dask graph beyond the one ``open_zarr`` made, no CF
  decoding that the Zarr source would not reproduce).  The store behind it is
  opened with :func:`~earthstream.open_zarr` and the dataset's lazy indexer
  becomes the source's :attr:`~earthstream.ZarrSource.selection`: the same
  codecs, the same chunk grid, each chunk decoded once.
* **general**: anything else (NetCDF/HDF5 through h5netcdf or netCDF4, GRIB,
  arrays loaded or edited in memory, dask arrays) becomes an
  :class:`XarraySource` that reads block by block through xarray itself, on
  the variable's dask chunks, else its ``encoding["preferred_chunks"]`` /
  ``encoding["chunks"]``, else a default chunking (see
  :func:`default_chunks`).  Slower (xarray's indexing and decoding per
  block), with the same values, NaNs, times and coordinates as xarray.

xarray is never imported here unless the user handed in an xarray object.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, UnsupportedFormatError
from ..protocols import Span
from ._base import VariableInfo, check_variables
from ._cf import CFOptions
from ._xarray_backing import ZarrBacking, coords_match, zarr_backing
from ._zarr import ZarrSource
from ._zarr_open import open_store

__all__ = [
    "XarraySource",
    "ZarrBacking",
    "default_chunks",
    "is_xarray",
    "open_xarray",
    "zarr_backing",
]

log = logging.getLogger("earthstream")

PackedDtype = Literal["float32", "float64"]

_PACKING = ("scale_factor", "add_offset")

#: Decoded bytes per block of the general path when nothing suggests a chunking.
DEFAULT_BLOCK_BYTES = 8 * 2**20


def is_xarray(obj: Any) -> bool:
    """Whether ``obj`` is an ``xarray.Dataset`` or ``DataArray`` (without importing xarray)."""
    xr = sys.modules.get("xarray")
    return xr is not None and isinstance(obj, xr.Dataset | xr.DataArray)


def _as_dataset(obj: Any) -> Any:
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        name = obj.name if obj.name is not None else "data"
        return obj.to_dataset(name=name)
    return obj


# -- fast path: the zarr array behind a variable --------------------------------------------
def default_chunks(
    shape: Sequence[int], itemsize: int, target: int = DEFAULT_BLOCK_BYTES
) -> tuple[int, ...]:
    """Blocks of about ``target`` bytes: whole trailing dims, leading dims split first.

    >>> default_chunks((1000, 721, 1440), 4)
    (2, 721, 1440)
    >>> default_chunks((10, 20), 8)
    (10, 20)
    """
    chunks = [max(1, int(n)) for n in shape]
    inner = itemsize * math.prod(chunks)
    for axis in range(len(chunks)):
        if inner <= target:
            break
        inner //= chunks[axis]
        chunks[axis] = max(1, min(chunks[axis], target // max(1, inner)))
        inner *= chunks[axis]
    return tuple(chunks)


def _chunks_of(variable: Any) -> tuple[tuple[int, ...], str]:
    """The block shape of a general-path variable and where it comes from."""
    shape = tuple(int(n) for n in variable.shape)
    dask_chunks = variable.chunks
    if dask_chunks is not None:
        regular = all(len(set(c[:-1])) <= 1 and (len(c) < 2 or c[-1] <= c[0]) for c in dask_chunks)
        if regular:
            return tuple(max(1, int(c[0])) for c in dask_chunks), "dask"
    preferred = variable.encoding.get("preferred_chunks")
    if isinstance(preferred, Mapping) and preferred:
        chunks = []
        for dim, n in zip(variable.dims, shape, strict=True):
            value = preferred.get(dim, n)
            chunks.append(max(1, min(n, int(value if isinstance(value, int) else n))))
        return tuple(chunks), "preferred_chunks"
    stored = variable.encoding.get("chunks") or variable.encoding.get("chunksizes")
    if isinstance(stored, Sequence) and len(stored) == len(shape):
        return tuple(max(1, min(n, int(c))) for c, n in zip(stored, shape, strict=True)), "chunks"
    return default_chunks(shape, np.dtype(variable.dtype).itemsize), "default"


def _delivered_dtype(variable: Any, packed: PackedDtype) -> np.dtype[Any]:
    """xarray's decoded dtype, but packed integers as ``packed`` (float32 by default)."""
    dtype: np.dtype[Any] = np.dtype(variable.dtype).newbyteorder("=")
    is_packed = any(k in variable.encoding for k in _PACKING)
    if is_packed and dtype.kind == "f":
        return np.dtype(np.float32 if packed == "float32" else np.float64)
    return dtype


class XarraySource:
    """The general path: any ``xarray.Dataset`` read block by block through xarray.

    Create it with :func:`open_xarray` (or pass a dataset wherever a source is
    accepted).  Each block is ``dataset[name].isel(region)`` loaded by xarray
    (its backend, CF decoding and dask chunks), so values, NaNs, times and
    coordinates are xarray's.  Dask blocks are computed in the reading thread
    (``scheduler="synchronous"``); the engine's threads give the parallelism.

    The dtype delivered is xarray's, except packed integers (``scale_factor`` /
    ``add_offset``), which arrive as ``float32`` unless ``dtype="float64"``.
    ``path`` says why the dataset did not take the Zarr fast path.
    """

    def __init__(self, dataset: Any, *, dtype: PackedDtype = "float32", why: str = "") -> None:
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype={dtype!r} must be 'float32' or 'float64'.")
        self._dataset = dataset
        self.packed_dtype: PackedDtype = dtype
        self.why = why
        infos: dict[str, VariableInfo] = {}
        self.chunk_origin: dict[str, str] = {}
        for name, array in dataset.data_vars.items():
            variable = array.variable
            if variable.ndim == 0:
                continue
            if np.dtype(variable.dtype).kind not in "biufcmM":
                continue
            chunks, origin = _chunks_of(variable)
            self.chunk_origin[str(name)] = origin
            infos[str(name)] = VariableInfo(
                name=str(name),
                dims=tuple(str(d) for d in variable.dims),
                shape=tuple(int(n) for n in variable.shape),
                dtype=_delivered_dtype(variable, dtype),
                chunks=chunks,
                fill_value=None,
                codecs=("xarray",),
                attrs=dict(variable.attrs),
            )
        if not infos:
            raise UnsupportedFormatError(
                "the dataset has no numeric data variables with dims to stream; its variables: "
                f"{', '.join(map(str, dataset.data_vars)) or '(none)'}."
            )
        self._variables = infos
        self._coords: dict[str, np.ndarray] | None = None
        self.decodes = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def dataset(self) -> Any:
        return self._dataset

    @property
    def variables(self) -> Mapping[str, VariableInfo]:
        return self._variables

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        """1-D coordinates of the streamed dims, as xarray decoded them."""
        if self._coords is None:
            dims = {d for info in self._variables.values() for d in info.dims}
            coords = {}
            for dim in self._dataset.dims:
                if dim in dims and dim in self._dataset.coords and self._dataset[dim].ndim == 1:
                    coords[str(dim)] = np.asarray(self._dataset[dim].values)
            self._coords = coords
        return self._coords

    @property
    def selection(self) -> Mapping[str, Span]:
        """Empty: the dataset is the selection (xarray already cut it)."""
        return {}

    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        info = self._variables[name]
        region = {
            dim: slice(i * c, min((i + 1) * c, s))
            for dim, i, c, s in zip(info.dims, index, info.chunks, info.shape, strict=True)
        }
        variable = self._dataset[name].variable.isel(region)
        if variable.chunks is not None:
            variable = variable.compute(scheduler="synchronous")
        values = np.asarray(variable.values)
        with self._lock:
            self.decodes += 1
        if values.dtype != info.dtype:
            values = values.astype(info.dtype)
        if out is None:
            return values
        out[tuple(slice(0, n) for n in values.shape)] = values
        return out

    def select(self, variables: Sequence[str]) -> XarraySource:
        names = check_variables(variables, self._variables)
        return XarraySource(self._dataset[names], dtype=self.packed_dtype, why=self.why)

    def __repr__(self) -> str:
        body = ", ".join(
            f"{n}{v.dims}{v.shape} blocks={v.chunks} ({self.chunk_origin.get(n, '?')})"
            for n, v in self._variables.items()
        )
        why = f"; general path: {self.why}" if self.why else ""
        return f"<XarraySource {body}{why}>"


def open_xarray(
    obj: Any,
    variables: Sequence[str] | str | None = None,
    *,
    dtype: PackedDtype = "float32",
) -> ZarrSource | XarraySource:
    """A source over an ``xarray.Dataset`` or ``DataArray``, on the fastest path it allows.

    A dataset whose variables are all still xarray's lazy Zarr arrays (opened
    with ``xarray.open_zarr``/``open_dataset(engine="zarr")``, possibly cut with
    ``.sel``/``.isel`` and subset to some variables, not loaded or edited)
    becomes a :class:`~earthstream.ZarrSource` on the same store, whose
    :attr:`~earthstream.ZarrSource.selection` is the dataset's selection: the
    Zarr fast path.  Any other dataset becomes an :class:`XarraySource` (the
    general, slower path through xarray).  Both deliver what xarray delivers.

    Parameters
    ----------
    obj
        An ``xarray.Dataset`` or ``xarray.DataArray`` (named by its ``name``, or ``"data"``).
    variables
        Data variables to keep (default: all numeric data variables with dims).
    dtype
        The delivered dtype of packed integer variables on the general path.

    Examples
    --------
    >>> import earthstream as es, xarray as xr
    >>> path = es.datasets.era5_like(tmp_path / "e.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> ds = xr.open_zarr(path, chunks=None).sel(lat=slice(60, -60))
    >>> source = es.open_zarr(ds[["t2m"]])
    >>> type(source).__name__, source.selection["lat"]
    ('ZarrSource', Span(start=3, stop=13, scalar=False))
    >>> type(es.open_zarr(ds[["t2m"]].load())).__name__
    'XarraySource'
    """
    if not is_xarray(obj):
        raise ConfigError(f"expected an xarray Dataset or DataArray, got {type(obj).__name__}.")
    dataset = _as_dataset(obj)
    if variables is not None:
        names = check_variables(variables, {str(k): None for k in dataset.data_vars})
        dataset = dataset[names]
    names = [
        str(n)
        for n, v in dataset.data_vars.items()
        if v.ndim and np.dtype(v.dtype).kind in "biufcmM"
    ]
    found = zarr_backing(dataset, names) if names else "no numeric variables"
    why = found if isinstance(found, str) else ""
    if isinstance(found, ZarrBacking):
        source = open_store(
            found.target(),
            [found.arrays[n] for n in names],
            storage_options=found.storage_options,
            options=CFOptions(decoded_dtype="float32" if dtype == "float32" else "xarray"),
        )
        renamed = {found.arrays[n]: n for n in names}
        if any(k != v for k, v in renamed.items()):
            why = "its variables are named otherwise than the store's arrays"
        else:
            source = source.with_selection(found.selection)
            why = coords_match(source, dataset, found.selection)
            if not why:
                return source
    log.info("earthstream: streaming the dataset through xarray (general path): %s", why)
    return XarraySource(dataset, dtype=dtype, why=why)
