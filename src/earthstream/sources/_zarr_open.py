"""Opening a Zarr store: what the user handed in, its metadata, each array described.

:func:`resolve_input` turns a path, URL or zarr-python object into a location
for chunk bytes and a store for metadata; :func:`open_store` reads the metadata
(consolidated when present) and describes every array (:func:`describe_array`:
the decode spec and the :class:`~earthstream.protocols.VariableInfo`, CF
decoding included), giving a :class:`~earthstream.sources._zarr.ZarrSource`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._names import suggest
from ..errors import (
    ConfigError,
    StoreNotFoundError,
    UnsupportedFormatError,
    UnsupportedInputError,
    VariableNotFoundError,
)
from ..storage import StoreLocation, parse_location
from ..storage._zarr_store import StoreHandle, is_zarr_store
from ._base import VariableInfo
from ._cf import CFOptions, backend_attrs, cf_coder
from ._zarr import Location, ZarrSource, _zarr_store
from ._zarr_codecs import ZarrArraySpec, spec_from_metadata
from ._zarr_meta import CheckedStore, call_zarr
from ._zarr_units import READ_UNIT_BYTES, choose_read_unit

__all__ = [
    "ACCEPTED_INPUTS",
    "ZarrInput",
    "coord_description",
    "describe_array",
    "is_zarr_input",
    "open_store",
    "resolve_input",
]


def _dims_of(array: Any) -> tuple[str, ...]:
    meta = array.metadata
    names = getattr(meta, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    if names is None or any(n is None for n in names):
        return tuple(f"dim_{i}" for i in range(array.ndim))
    return tuple(str(n) for n in names)


def _zarr_fill(array: Any) -> Any:
    """The array's Zarr ``fill_value`` as zarr-python gives it (a NumPy scalar or None)."""
    return array.metadata.fill_value


def describe_array(
    name: str,
    path: str,
    array: Any,
    options: CFOptions | None = None,
    read_unit_bytes: int = READ_UNIT_BYTES,
) -> tuple[ZarrArraySpec, VariableInfo]:
    """The decode spec and description of one zarr-python array as a data variable.

    CF decoding (``options``) is described here once: the delivered dtype, the
    decoded fill value and the :class:`~earthstream.sources._cf.CFCoder` that
    :meth:`ZarrSource.read_chunk` applies to every chunk.  Any source built on
    zarr-python arrays gets the same decoding by describing them with this.
    A sharded array's chunks are read units of up to ``read_unit_bytes``
    (:mod:`~earthstream.sources._zarr_units`).
    """
    options = options or CFOptions()
    dtype = np.dtype(array.dtype)
    spec = spec_from_metadata(path, array.metadata.to_dict(), dtype)
    native = dtype.newbyteorder("=")
    zarr_fill = _zarr_fill(array)
    attrs = backend_attrs(dict(array.attrs), native, spec.zarr_format, zarr_fill)
    coder = cf_coder(name, attrs, native, options)
    # what zarr-python (and so xarray) reads where no chunk is stored
    stored_fill = zarr_fill if zarr_fill is not None else np.zeros((), native)[()]
    if coder is not None:
        fill: Any = coder.decode_scalar(stored_fill)
    else:
        fill = np.asarray(stored_fill).item()
    delivered = coder.np_dtype if coder is not None else native
    spec = choose_read_unit(spec, delivered.itemsize, read_unit_bytes)
    info = VariableInfo(
        name=name,
        dims=_dims_of(array),
        shape=tuple(int(n) for n in array.shape),
        dtype=delivered,
        chunks=spec.unit_chunks,
        fill_value=fill,
        codecs=spec.codec_names,
        attrs=attrs,
        cf=coder,
    )
    return spec, info


def coord_description(path: str, array: Any) -> tuple[str, Mapping[str, Any]]:
    """What :class:`ZarrSource` needs to read and decode a 1-D coordinate array."""
    dtype = np.dtype(array.dtype).newbyteorder("=")
    zarr_format = int(array.metadata.zarr_format)
    return path, backend_attrs(dict(array.attrs), dtype, zarr_format, _zarr_fill(array))


def _named_members(
    group: Any, location: Location, variables: Sequence[str] | str
) -> list[tuple[str, str, Any]]:
    """The requested arrays, opened by path (no listing: works on HTTP stores), plus
    the 1-D coordinate arrays named after their dims."""
    names = [variables] if isinstance(variables, str) else list(variables)
    members: list[tuple[str, str, Any]] = []
    for name in names:
        try:
            member = call_zarr(
                functools.partial(group.__getitem__, name),
                location,
                f"the metadata of {name!r}",
                (KeyError,),
            )
        except KeyError:
            member = None
        if member is None:
            try:
                available = [key for key, _ in group.arrays()]
            except Exception:  # only a hint: listing may be impossible (HTTP)
                available = []
            hint = f" Available variables: {', '.join(available)}." if available else ""
            raise VariableNotFoundError(
                f"variable {name!r} is not in the store at {location.display}."
                f"{suggest(name, available)}{hint}"
            )
        members.append((name, name, member))
    seen = {name for name, _, _ in members}
    for _, _, arr in list(members):
        for dim in _dims_of(arr):
            if dim in seen:
                continue
            seen.add(dim)
            try:
                coord = call_zarr(
                    functools.partial(group.__getitem__, dim),
                    location,
                    f"the metadata of {dim!r}",
                    (KeyError,),
                )
            except KeyError:
                continue
            members.append((dim, dim, coord))
    return members


#: What :func:`open_zarr` (and every ``Stream`` argument that takes a store) accepts.
ACCEPTED_INPUTS = (
    "a local path or URL (str or os.PathLike: file://, s3://, gs://, az://, http(s)://), "
    "a zarr-python Store (LocalStore, ObjectStore, FsspecStore, ZipStore, MemoryStore, an "
    "Icechunk session's .store ...), a zarr.Group or zarr.Array, an fsspec mapper "
    "(fsspec.get_mapper, e.g. over Kerchunk references), or an xarray Dataset/DataArray"
)


@dataclass(frozen=True)
class ZarrInput:
    """What :func:`open_zarr` was handed, resolved: where chunk bytes come from
    (``location``), the zarr-python store its metadata is read from (``store``) and
    the node's path in it, and for a single array handed in, its name."""

    location: Location
    store: Any
    path: str = ""
    array_name: str | None = None


def is_zarr_input(obj: Any) -> bool:
    """Whether ``obj`` is a zarr-python object :func:`open_zarr` opens (store, group,
    array, store path) or an fsspec mapper."""
    import zarr
    from zarr.storage import StorePath

    if isinstance(obj, zarr.Group | zarr.Array | StorePath) or is_zarr_store(obj):
        return True
    fsspec_mapper = type(obj).__name__ == "FSMap" and type(obj).__module__.startswith("fsspec")
    return fsspec_mapper


def resolve_input(obj: Any, storage_options: Mapping[str, Any] | None = None) -> ZarrInput:
    """Resolve a path, URL or zarr-python object into (location, metadata store, path)."""
    import zarr
    from zarr.storage import FsspecStore, StorePath

    if isinstance(obj, str | os.PathLike):
        location = parse_location(obj, storage_options)
        if location.is_local and not os.path.exists(location.path):
            raise StoreNotFoundError(
                f"no store at {location.path!r}: the path does not exist. Check the path, or "
                "pass a URL (s3://, gs://, az://, http(s)://) for a remote store."
            )
        return ZarrInput(location, _zarr_store(location))
    if not is_zarr_input(obj):
        raise UnsupportedInputError(
            f"cannot open a {type(obj).__module__}.{type(obj).__qualname__}: pass "
            f"{ACCEPTED_INPUTS}."
        )
    array_name: str | None = None
    if isinstance(obj, zarr.Array):
        parent, _, name = obj.path.strip("/").rpartition("/")
        store, root, array_name = obj.store, parent, name or None
    elif isinstance(obj, zarr.Group | StorePath):
        store, root = obj.store, obj.path
    elif is_zarr_store(obj):
        store, root = obj, ""
    else:  # an fsspec mapper
        store, root = FsspecStore.from_mapper(obj, read_only=True), ""
    handle = StoreHandle(store, root, storage_options)
    metadata = CheckedStore(handle.metadata_store(), handle.display)
    return ZarrInput(handle, metadata, handle.root, array_name)


def open_store(
    url_or_path: Any,
    variables: list[str] | None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    options: CFOptions | None = None,
    read_unit_bytes: int = READ_UNIT_BYTES,
) -> ZarrSource:
    """Open a Zarr store, group or array (a path, URL or zarr-python object) lazily.

    The work behind :func:`~earthstream.open_zarr` once its arguments are checked
    (see there): ``variables`` already a list (or ``None``), ``options`` the CF rules.
    """
    import zarr

    options = options or CFOptions()
    target = resolve_input(url_or_path, storage_options)
    location = target.location
    if target.array_name is not None and variables not in (
        None,
        target.array_name,
        [target.array_name],
        (target.array_name,),
    ):
        raise ConfigError(
            f"variables={variables!r} was given with the zarr.Array {target.array_name!r}, "
            "which is one variable; leave variables out, or pass its group."
        )
    missing = ""
    try:
        node = call_zarr(
            lambda: zarr.open(store=target.store, path=target.path, mode="r"),
            location,
            "the root metadata",
            (FileNotFoundError, KeyError),
        )
    except (FileNotFoundError, KeyError) as exc:
        missing = type(exc).__name__
    if missing:  # raised here, not chained: zarr-python's message may name the raw URL
        raise StoreNotFoundError(
            f"no Zarr group or array at {location.display} ({missing}). Point at the "
            "directory that holds zarr.json (v3) or .zgroup/.zarray (v2)."
        )
    if target.array_name is not None and not isinstance(node, zarr.Array):
        variables = [target.array_name]

    if isinstance(node, zarr.Array):
        name = target.array_name or os.path.basename(location.path.rstrip("/")) or "data"
        if isinstance(location, StoreHandle):
            name = target.array_name or "data"
        if name.endswith(".zarr"):
            name = name[: -len(".zarr")]
        members: list[tuple[str, str, Any]] = [(name, "", node)]
    elif variables is not None:
        members = _named_members(node, location, variables)
    else:
        unlistable = False
        try:
            # in name order: a store without consolidated metadata lists its keys in
            # whatever order the file system returns, and two opens of the same store
            # must stack their channels alike
            members = call_zarr(
                lambda: [(k, k, a) for k, a in sorted(node.arrays(), key=lambda m: m[0])],
                location,
                "the list of arrays",
                (NotImplementedError,),
            )
        except NotImplementedError:  # HTTP stores cannot list keys
            unlistable = True
        if unlistable:
            raise UnsupportedFormatError(
                f"the store at {location.display} has no consolidated metadata and "
                f"{f'{location.scheme}://' if isinstance(location, StoreLocation) else 'it'} "
                "cannot list its keys, so its arrays cannot be found. "
                "Consolidate the metadata (zarr.consolidate_metadata) or pass variables=[...]."
            )

    dims_by_name = {name: _dims_of(arr) for name, _, arr in members}
    listed_coords: set[str] = set()
    for _, _, arr in members:
        listed_coords.update(str(arr.attrs.get("coordinates", "")).split())
    coord_arrays: dict[str, tuple[str, Mapping[str, Any]]] = {}
    specs: dict[str, ZarrArraySpec] = {}
    infos: dict[str, VariableInfo] = {}
    for name, path, arr in members:
        dims = dims_by_name[name]
        if dims == (name,):
            coord_arrays[name] = coord_description(path, arr)
            continue
        if name in listed_coords or arr.ndim == 0:
            continue
        specs[name], infos[name] = describe_array(name, path, arr, options, read_unit_bytes)
    source = ZarrSource(location, specs, infos, coord_arrays, dict(node.attrs), cf=options)
    if variables is not None:
        source = source.select(variables)
    elif not infos:
        raise StoreNotFoundError(
            f"the store at {location.display} has no data variables (only coordinates: "
            f"{', '.join(coord_arrays) or 'none'}). Check the path."
        )
    return source
