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
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, UnsupportedFormatError
from ..protocols import Span
from ._base import VariableInfo, check_variables
from ._cf import CFOptions
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

#: CF encoding attributes: in a variable's ``encoding`` when xarray decoded them (the
#: Zarr fast path decodes them alike), in its ``attrs`` when it left them raw.
_CF_KEYS = ("scale_factor", "add_offset", "_Unsigned", "missing_value", "_FillValue")
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
@dataclass(frozen=True)
class ZarrBacking:
    """The Zarr group behind a dataset, found by :func:`zarr_backing`.

    ``url`` (with ``storage_options``) opens the group with
    :func:`~earthstream.open_zarr` when the store lives at a path or URL (chunk
    bytes then come through earthstream's own readers); otherwise ``url`` is
    ``None`` and the group is opened from the zarr-python ``store`` object at
    ``group`` (memory, zip and Icechunk stores).  ``arrays`` maps each variable
    to its array name in that group; ``selection`` is the dataset's lazy indexer
    as position ranges per dim of the stored arrays.
    """

    url: str | None
    storage_options: Mapping[str, Any] | None
    arrays: Mapping[str, str]
    selection: Mapping[str, Span]
    store: Any = None
    group: str = ""

    def target(self) -> Any:
        """What :func:`~earthstream.open_zarr` opens: the URL, or the zarr group."""
        if self.url is not None:
            return self.url
        import zarr

        return zarr.open_group(self.store, path=self.group, mode="r")


def _lazy_zarr_array(variable: Any) -> tuple[Any, tuple[Any, ...]] | str:
    """The zarr array and the lazy key of a variable, or why it is not a plain lazy read.

    Walks xarray's wrappers: ``MemoryCachedArray`` (not loaded yet),
    ``CopyOnWriteArray`` (not written), CF coder wrappers, one
    ``LazilyIndexedArray`` (its key: slices and integers), down to the Zarr
    backend's ``ZarrArrayWrapper``.  A dask array qualifies when its graph is
    the one ``xarray.open_zarr`` built (the backend array plus one getter layer):
    anything computed on top, including a selection, takes the general path.
    """
    from xarray.backends.zarr import ZarrArrayWrapper
    from xarray.core import indexing

    data = variable._data  # the wrapped array; xarray has no public accessor
    if _is_dask(data):
        found = _dask_original(data)
        if isinstance(found, str):
            return found
        data = found
    key: tuple[Any, ...] | None = None
    transparent = (
        indexing.ImplicitToExplicitIndexingAdapter,
        indexing.CopyOnWriteArray,
        indexing.MemoryCachedArray,
    )
    for _ in range(32):
        if isinstance(data, ZarrArrayWrapper):
            array = data.get_array()
            if key is None:
                key = tuple(slice(None) for _ in array.shape)
            return array, key
        if isinstance(data, indexing.MemoryCachedArray | indexing.CopyOnWriteArray) and (
            getattr(data, "_copied", False)
        ):
            return "edited in memory"
        if isinstance(data, indexing.LazilyIndexedArray):
            if key is not None:
                return "indexed twice lazily"
            indexer = data.key
            if not isinstance(indexer, indexing.BasicIndexer | indexing.OuterIndexer):
                return f"indexed with {type(indexer).__name__}"
            key = tuple(indexer.tuple)
            data = data.array
            continue
        if isinstance(data, transparent) or _is_coder_wrapper(data):
            data = data.array
            continue
        if isinstance(data, np.ndarray | indexing.NumpyIndexingAdapter):
            return "loaded into memory"
        return f"held as {type(data).__name__}, not xarray's lazy Zarr array"
    return "wrapped too deeply"  # pragma: no cover - defensive


def _is_coder_wrapper(data: Any) -> bool:
    from xarray.coding import common, variables

    kinds = [common._ElementwiseFunctionArray]
    kinds += [getattr(variables, n) for n in ("NativeEndiannessArray", "BoolTypeArray")]
    return isinstance(data, tuple(k for k in kinds if isinstance(k, type)))


def _is_dask(data: Any) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(data, da.Array)


def _dask_original(data: Any) -> Any:
    """The backend array of a dask array exactly as ``xarray.open_zarr`` made it, or why not."""
    layers = dict(data.dask.layers)
    originals = [name for name in layers if str(name).startswith("original-")]
    if len(layers) != 2 or len(originals) != 1:
        return "a dask array with computations or a selection on top of the store"
    layer = layers[originals[0]]
    values = list(layer.values()) if hasattr(layer, "values") else []
    if len(values) != 1:
        return "a dask array whose source is not one array"
    original = values[0]
    if tuple(getattr(original, "shape", ())) != tuple(data.shape):
        return "a dask array of another shape than its source"
    return original


def _store_url(store: Any) -> tuple[str, Mapping[str, Any] | None]:
    """The path or URL (and storage options) of a zarr-python store.

    Stores that are not on a path or URL (memory, zip, Icechunk ...) raise
    :class:`~earthstream.errors.UnsupportedFormatError`: they are opened as store
    objects instead (see :meth:`ZarrBacking.target`).
    """
    import zarr.storage

    if isinstance(store, zarr.storage.LocalStore):
        return os.fspath(store.root), None
    fsspec_store = getattr(zarr.storage, "FsspecStore", None)
    if fsspec_store is not None and isinstance(store, fsspec_store):
        fs = store.fs
        url = fs.unstrip_protocol(store.path)
        if url.startswith("file://"):
            return url[len("file://") :], None
        return url, dict(getattr(fs, "storage_options", {}) or {}) or None
    object_store = getattr(zarr.storage, "ObjectStore", None)
    if object_store is not None and isinstance(store, object_store):
        return _obstore_url(store.store)
    raise UnsupportedFormatError(
        f"the dataset's Zarr store is a {type(store).__name__}, which earthstream cannot open "
        "by path or URL yet. Open the store by its path or URL (xarray.open_zarr(path) or "
        "earthstream.open_zarr(path)), or load the data (dataset.load()) to stream it from "
        "memory."
    )


def _obstore_url(client: Any) -> tuple[str, Mapping[str, Any] | None]:
    kind = type(client).__name__
    prefix = str(getattr(client, "prefix", "") or "").strip("/")
    if kind == "LocalStore":
        return "/" + prefix if not prefix.startswith("/") else prefix, None
    if kind == "HTTPStore":
        url = str(client.url).rstrip("/")
        return (url + "/" + prefix if prefix else url), None
    config = dict(getattr(client, "config", {}) or {})
    scheme = {"S3Store": "s3", "GCSStore": "gs", "AzureStore": "az"}.get(kind)
    bucket = config.pop("bucket", None) or config.pop("container_name", None)
    if scheme is None or bucket is None:
        raise UnsupportedFormatError(
            f"the dataset's obstore {kind} has no URL earthstream can open; open the store by "
            "its URL with earthstream.open_zarr(url, storage_options=...)."
        )
    options = {str(k): v for k, v in config.items()}
    client_options = getattr(client, "client_options", None)
    if client_options:
        options["client_options"] = dict(client_options)
    url = f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else "")
    return url, options or None


def zarr_backing(dataset: Any, names: Sequence[str]) -> ZarrBacking | str:
    """Find the Zarr group and selection behind ``names`` of ``dataset``, or why there is none.

    The one place that looks behind xarray's lazy arrays (see :func:`_lazy_zarr_array`).
    """
    location: tuple[str | None, Mapping[str, Any] | None, str] | None = None
    store: Any = None
    arrays: dict[str, str] = {}
    selection: dict[str, Span] = {}
    sizes: dict[str, int] = {}
    for name in names:
        variable = dataset[name].variable
        found = _lazy_zarr_array(variable)
        if isinstance(found, str):
            return f"variable {name!r} is {found}"
        array, key = found
        why = _decoding_differs(variable, array)
        if why:
            return f"variable {name!r} {why}"
        try:
            store_url, options = _store_url(array.store)
        except UnsupportedFormatError:  # not at a path or URL: open the store object
            store_url, options = None, None
        path = str(array.path).strip("/")
        group, _, array_name = path.rpartition("/")
        here = (store_url, options, group)
        if location is None:
            location, store = here, array.store
        elif (
            here[0] != location[0]
            or here[2] != location[2]
            or (store_url is None and array.store is not store)
        ):
            return f"variable {name!r} comes from another Zarr group than the others"
        arrays[name] = array_name
        stored_dims = _stored_dims(array)
        kept = [d for d, k in zip(stored_dims, key, strict=True) if not _is_int(k)]
        if tuple(kept) != tuple(variable.dims):
            return f"variable {name!r} has dims {variable.dims}, the store {stored_dims}"
        for dim, k, n in zip(stored_dims, key, array.shape, strict=True):
            span = _span_of(k, int(n))
            if span is None:
                return f"variable {name!r} is selected with {k!r} along {dim!r}"
            if selection.setdefault(dim, span) != span:
                return f"variable {name!r} is selected differently along {dim!r}"
            sizes[dim] = int(n)
    if location is None:
        return "no variables"
    store_url, options, group = location
    url = None
    if store_url is not None:
        url = store_url.rstrip("/") + "/" + group if group else store_url
    # a range over the whole stored dim selects nothing
    cut = {d: s for d, s in selection.items() if s.scalar or (s.start, s.stop) != (0, sizes[d])}
    return ZarrBacking(url, options, arrays, cut, store=store, group=group)


def _is_int(key: Any) -> bool:
    return isinstance(key, int | np.integer) and not isinstance(key, bool)


def _span_of(key: Any, n: int) -> Span | None:
    if _is_int(key):
        i = int(key) + n if int(key) < 0 else int(key)
        return Span(i, i + 1, scalar=True)
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1 and stop > start:
            return Span(start, stop)
    return None


def _stored_dims(array: Any) -> tuple[str, ...]:
    names = getattr(array.metadata, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    if names is None:
        return tuple(f"dim_{i}" for i in range(array.ndim))
    return tuple(str(n) for n in names)


def _decoding_differs(variable: Any, array: Any) -> str:
    """Why the Zarr source would not deliver what xarray decoded ('' if it would).

    The Zarr source decodes CF attributes itself, as xarray's default
    (``mask_and_scale=True``) does: a variable xarray decoded carries its CF
    attributes in ``encoding`` and streams fast.  One whose CF attributes are
    still in ``attrs`` was opened with ``mask_and_scale=False`` (raw values) and
    takes the general path, as does a data variable xarray decoded to times.
    """
    for key in _CF_KEYS:
        if key not in variable.attrs:
            continue
        value = variable.attrs[key]
        if key == "_FillValue" and (value is None or _is_nan(value)):
            continue
        return f"has CF {key} left undecoded (opened with mask_and_scale=False)"
    kind = np.dtype(variable.dtype).kind
    stored = np.dtype(array.dtype).newbyteorder("=")
    if kind in "mM" and stored.kind not in "mM":
        return f"is decoded to {variable.dtype} from stored {array.dtype} (CF time units)"
    decoded = any(k in variable.encoding for k in _CF_KEYS)
    if not decoded and np.dtype(variable.dtype).newbyteorder("=") != stored:
        return f"is decoded to {variable.dtype} from stored {array.dtype}"
    return ""


def _is_nan(value: Any) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return False


def _coords_match(source: ZarrSource, dataset: Any, selection: Mapping[str, Span]) -> str:
    """'' if the store's coordinates, cut to the selection, are the dataset's."""
    stored = source.coords
    for dim in source.dims:
        span = selection.get(dim)
        if span is not None and span.scalar and dim in stored and dim in dataset.coords:
            if not np.array_equal(np.asarray(stored[dim])[span.start], dataset[dim].values):
                return f"coordinate {dim!r} differs from the store's"
            continue
        if dim not in dataset.coords or dataset[dim].ndim != 1:
            if dim in stored and dim in dataset.dims:
                return f"coordinate {dim!r} was dropped from the dataset"
            continue
        if dim not in stored:
            return f"coordinate {dim!r} is not the store's"
        values = np.asarray(stored[dim])
        values = values[span.as_slice()] if span is not None else values
        theirs = np.asarray(dataset[dim].values).reshape(-1)
        if values.shape != theirs.shape or not np.array_equal(values, theirs):
            return f"coordinate {dim!r} differs from the store's (assigned or decoded otherwise)"
    return ""


# -- general path ------------------------------------------------------------------------------
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
            why = _coords_match(source, dataset, found.selection)
            if not why:
                return source
    log.info("earthstream: streaming the dataset through xarray (general path): %s", why)
    return XarraySource(dataset, dtype=dtype, why=why)
