"""Whether an ``xarray.Dataset`` is still xarray's lazy read of a Zarr store, and of which.

:func:`zarr_backing` finds, for every variable, the Zarr array behind xarray's
lazy indexing (no loading, no edits, no dask graph beyond ``open_zarr``'s, no CF
decoding the Zarr source would not reproduce), the store's URL or group, and the
dataset's selection as position ranges; or says why not (the general path).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedFormatError
from ..protocols import Span
from ._zarr import ZarrSource

__all__ = ["CF_KEYS", "ZarrBacking", "coords_match", "zarr_backing"]

#: CF encoding attributes: in a variable's ``encoding`` when xarray decoded them (the
#: Zarr fast path decodes them alike), in its ``attrs`` when it left them raw.
CF_KEYS = ("scale_factor", "add_offset", "_Unsigned", "missing_value", "_FillValue")


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
    for key in CF_KEYS:
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
    decoded = any(k in variable.encoding for k in CF_KEYS)
    if not decoded and np.dtype(variable.dtype).newbyteorder("=") != stored:
        return f"is decoded to {variable.dtype} from stored {array.dtype}"
    return ""


def _is_nan(value: Any) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return False


def coords_match(source: ZarrSource, dataset: Any, selection: Mapping[str, Span]) -> str:
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
