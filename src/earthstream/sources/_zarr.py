"""The Zarr source: lazy metadata at open, direct chunk decoding in the hot path."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .._names import suggest
from .._units import format_bytes
from .._validate import check_flag, check_names
from ..errors import (
    ChunkDecodeError,
    ConfigError,
    StoreNotFoundError,
    UnsupportedFormatError,
    UnsupportedInputError,
    VariableNotFoundError,
)
from ..sampling._select import Span
from ..storage import StoreLocation, parse_location
from ..storage._location import join_key
from ..storage._readers import ByteReader, keep_inherited, open_reader
from ..storage._zarr_store import StoreHandle, is_zarr_store
from ._base import ChunkedSource, VariableInfo
from ._cf import CFOptions, DecodedDtype, backend_attrs, cf_coder, decode_reference
from ._cftime import decode_cf_time, is_cf_time
from ._zarr_codecs import ChunkDecoder, ZarrArraySpec, spec_from_metadata
from ._zarr_meta import CheckedStore, call_zarr

__all__ = [
    "ZarrInput",
    "ZarrSource",
    "describe_array",
    "is_zarr_input",
    "open_zarr",
    "resolve_input",
]

_FALLBACK = object()  # fetch result of arrays read through zarr-python at decode time


def _zarr_store(location: StoreLocation, reader: ByteReader | None = None) -> Any:
    """A read-only zarr-python store for metadata, coordinates and the slow fallback path.

    Remote bytes come through earthstream's reader (``reader``, or a new one): the
    same retry policy, budget, timeouts, error classes and redaction as chunk reads.
    Every metadata document is checked as it is read (:class:`CheckedStore`).
    """
    import zarr.storage

    if location.is_local:
        return CheckedStore(zarr.storage.LocalStore(location.path, read_only=True), location.path)
    from ..storage._reader_store import ReaderStore

    inner = ReaderStore(reader if reader is not None else open_reader(location), location.display)
    return CheckedStore(inner, location.display)


#: Where a source's bytes come from: a path/URL, or a zarr-python store object.
Location = StoreLocation | StoreHandle


def _metadata_store(location: Location, reader: ByteReader | None = None) -> tuple[Any, str]:
    """The zarr-python store for metadata (and fallback) reads, and the node's path in it.

    For a path or URL, remote bytes come through ``reader`` (or a new one) with
    earthstream's retries; a store object reads through its own client, its
    failures typed and redacted.
    """
    if isinstance(location, StoreHandle):
        return CheckedStore(location.metadata_store(), location.display), location.root
    return _zarr_store(location, reader), ""


def _chunk_reader(location: Location) -> ByteReader:
    """The reader of chunk bytes in this process."""
    if isinstance(location, StoreHandle):
        return location.open_reader()
    return open_reader(location)


def _join(root: str, path: str) -> str:
    return "/".join(p for p in (root, path) if p)


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
    name: str, path: str, array: Any, options: CFOptions | None = None
) -> tuple[ZarrArraySpec, VariableInfo]:
    """The decode spec and description of one zarr-python array as a data variable.

    CF decoding (``options``) is described here once: the delivered dtype, the
    decoded fill value and the :class:`~earthstream.sources._cf.CFCoder` that
    :meth:`ZarrSource.read_chunk` applies to every chunk.  Any source built on
    zarr-python arrays gets the same decoding by describing them with this.
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
    info = VariableInfo(
        name=name,
        dims=_dims_of(array),
        shape=tuple(int(n) for n in array.shape),
        dtype=coder.np_dtype if coder is not None else native,
        chunks=spec.chunks,
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


class ZarrSource:
    """A Zarr v2 or v3 group (or single array), opened lazily.

    Create it with :func:`open_zarr`.  It holds only metadata: variables with
    their dims, shapes, dtypes, chunk grids, codecs and fill values, and the
    names of 1-D coordinate variables.  Coordinate values are read on first use
    of :attr:`coords`; chunk bytes only by :meth:`read_chunk`.  A source pickles
    as this description; each process opens its own storage client.
    """

    def __init__(
        self,
        location: Location,
        specs: Mapping[str, ZarrArraySpec],
        variables: Mapping[str, VariableInfo],
        coord_arrays: Mapping[str, tuple[str, Mapping[str, Any]]],
        attrs: Mapping[str, Any],
        *,
        decode_times: bool = True,
        cf: CFOptions | None = None,
    ) -> None:
        self.location = location
        self._specs = dict(specs)
        self._variables = dict(variables)
        self._coord_arrays = dict(coord_arrays)
        self.attrs = dict(attrs)
        self.cf = cf if cf is not None else CFOptions(decode_times=decode_times)
        self._selection: dict[str, Span] = {}
        self._init_lazy()

    @property
    def decode_times(self) -> bool:
        """Whether CF time coordinates are decoded to datetimes."""
        return self.cf.decode_times

    # -- process-local state, rebuilt after unpickling ----------------------------
    def _init_lazy(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._reader: ByteReader | None = None
        self._decoders: dict[str, ChunkDecoder] = {}
        self._fallback: dict[str, Any] = {}
        self._fallback_reads = 0
        self._coords: dict[str, np.ndarray] | None = None
        self._local = threading.local()  # per-thread buffers of stored values

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in (
            "_lock",
            "_pid",
            "_reader",
            "_decoders",
            "_fallback",
            "_fallback_reads",
            "_local",
        ):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        coords = state.pop("_coords", None)
        self.__dict__.update(state)
        self._init_lazy()
        self._coords = coords

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked: never share clients across processes
            keep_inherited(self._reader, self._decoders, self._fallback)
            coords = self._coords
            self._init_lazy()
            self._coords = coords

    @property
    def reader(self) -> ByteReader:
        self._check_process()
        if self._reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = _chunk_reader(self.location)
        return self._reader

    # -- description ---------------------------------------------------------------
    @property
    def variables(self) -> Mapping[str, VariableInfo]:
        """The data variables, by name, in name order (or the order passed as ``variables``)."""
        return self._variables

    @property
    def specs(self) -> Mapping[str, ZarrArraySpec]:
        """The decode spec of each variable (codec chain, keys, sharding)."""
        return self._specs

    @property
    def dims(self) -> dict[str, int]:
        """Every dim of the selected variables with its size, in first-seen order."""
        sizes: dict[str, int] = {}
        for info in self._variables.values():
            for dim, size in zip(info.dims, info.shape, strict=True):
                sizes.setdefault(dim, size)
        return sizes

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        """1-D coordinate values by dim name, read on first use.

        Values are CF-decoded as xarray decodes them (fill values masked, scale
        and offset applied; see ``open_zarr``).  CF time axes (``units: "hours
        since ..."``) become ``datetime64[ns]``, or ``cftime`` datetimes for other
        calendars and dates ``datetime64[ns]`` cannot hold, unless the source was
        opened with ``decode_times=False``.
        """
        self._check_process()
        if self._coords is None:
            import zarr

            store, root = _metadata_store(
                self.location, None if self.location.is_local else self.reader
            )

            def load(item: tuple[str, tuple[str, Mapping[str, Any]]]) -> tuple[str, np.ndarray]:
                dim, (path, attrs) = item
                values = call_zarr(
                    lambda: np.asarray(
                        zarr.open_array(store, path=_join(root, path), mode="r")[...]
                    ),
                    self.location,
                    f"the coordinate {dim!r}",
                )
                return dim, _decode_coord(dim, values, attrs, self.cf)

            items = list(self._coord_arrays.items())
            if len(items) > 1 and not self.location.is_local:  # concurrent requests
                with ThreadPoolExecutor(min(len(items), 8)) as pool:
                    self._coords = dict(pool.map(load, items))
            else:
                self._coords = dict(map(load, items))
        return self._coords

    def select(self, variables: Sequence[str]) -> ZarrSource:
        """The same store restricted to ``variables`` (in the given order)."""
        names = _check_names(variables, self._variables)
        source = ZarrSource(
            self.location,
            {n: self._specs[n] for n in names},
            {n: self._variables[n] for n in names},
            self._coord_arrays,
            self.attrs,
            cf=self.cf,
        )
        source._coords = self._coords
        source._selection = self._selection
        return source

    @property
    def selection(self) -> Mapping[str, Span]:
        """Position ranges this source is cut to, per dim (e.g. from a sliced
        ``xarray.Dataset``); streams and statistics start from it.  Empty: all of it."""
        return self._selection

    def with_selection(self, selection: Mapping[str, Span]) -> ZarrSource:
        """The same source cut to ``selection`` (position ranges of the stored arrays)."""
        source = self.select(list(self._variables))
        source._selection = dict(selection)
        return source

    # -- data ------------------------------------------------------------------------
    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode chunk ``index`` of variable ``name`` (``None``: not stored, all fill).

        Values are CF-decoded (in the variable's ``dtype``).  With ``out`` (an
        array of the chunk's full shape and the variable's dtype) the chunk is
        decoded into it and ``out`` is returned.
        """
        spec = self._specs[name]
        coder = self._variables[name].cf
        if spec.fast:
            decoder = self._decoders.get(name)
            if decoder is None or self._pid != os.getpid():
                decoder = self._decoder(name)
            if coder is None:
                return decoder.read(self.reader, index, out)
            raw = decoder.read(self.reader, index, self._stored_buffer(name))
            return None if raw is None else self._cf_decode(name, raw, out)
        chunk = self._read_fallback(name, index)
        if coder is not None:
            return self._cf_decode(name, chunk, out)
        if out is None:
            return chunk
        out[tuple(slice(0, n) for n in chunk.shape)] = chunk
        return out

    def _stored_buffer(self, name: str) -> np.ndarray:
        """This thread's buffer for one chunk of ``name``'s stored values (reused)."""
        buffers: dict[str, np.ndarray] | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        buf = buffers.get(name)
        if buf is None:
            info = self._variables[name]
            buf = buffers[name] = np.empty(info.chunks, info.stored_dtype)
        return buf

    def _cf_decode(self, name: str, raw: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """CF-decode stored values (a whole chunk, or its part inside the array) into ``out``."""
        coder = self._variables[name].cf
        assert coder is not None
        if out is None:
            return coder.decode(raw)
        region = out[tuple(slice(0, n) for n in raw.shape)]
        coder.decode(raw, region)
        return out

    # -- split reads: I/O and decoding in separate pools (remote stores) ------------
    @property
    def io_concurrency(self) -> int:
        """Requests worth keeping in flight: 0 for local files (one stage is enough)."""
        if self.location.is_local:
            return 0
        if isinstance(self.location, StoreHandle):
            return self.location.max_requests
        return self.location.store_options().max_requests

    def fetch_chunks(self, name: str, indices: Sequence[tuple[int, ...]]) -> list[Any]:
        """The stored bytes of several chunks of ``name`` (I/O only; ``None``: not stored).

        Inner chunks of one shard are fetched with one merged range request.
        """
        spec = self._specs[name]
        if not spec.fast:
            return [_FALLBACK] * len(indices)
        decoder = self._decoders.get(name)
        if decoder is None or self._pid != os.getpid():
            decoder = self._decoder(name)
        return list(decoder.fetch_many(self.reader, indices))

    def fetch_group(self, name: str, index: tuple[int, ...]) -> Any:
        """Chunks with the same group are best fetched together (one shard's inner
        chunks: their byte ranges merge)."""
        shard = self._specs[name].shard
        if shard is None:
            return index
        return tuple(i // n for i, n in zip(index, shard.chunks_per_shard, strict=True))

    def decode_chunk(
        self, name: str, index: tuple[int, ...], raw: Any, out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode what :meth:`fetch_chunks` returned for chunk ``index``."""
        if raw is None:
            return None
        if raw is _FALLBACK:
            return self.read_chunk(name, index, out)
        decoder = self._decoders.get(name)
        if decoder is None or self._pid != os.getpid():
            decoder = self._decoder(name)
        if self._variables[name].cf is None:
            return decoder.decode(raw.data, raw.where, out)
        stored = decoder.decode(raw.data, raw.where, self._stored_buffer(name))
        return self._cf_decode(name, stored, out)

    def chunk_location(self, name: str, index: tuple[int, ...]) -> str:
        """Where chunk ``index`` of ``name`` is stored (for messages and reports)."""
        spec = self._specs[name]
        if not spec.fast:
            return f"{join_key(self.location.display, spec.path)} chunk {index}"
        return join_key(self.location.display, self._decoder(name).where(index))

    def request_stats(self) -> dict[str, Any]:
        """Requests, retries, bytes and failures by kind of this process's reader, and
        ``fallback``: chunks read through zarr-python (codec chains the fast path lacks)."""
        if self._reader is None or self._pid != os.getpid():
            stats: dict[str, Any] = {"requests": 0, "retries": 0, "bytes": 0, "failures": {}}
        else:
            stats = self._reader.stats.snapshot()
        stats["fallback"] = self._fallback_reads if self._pid == os.getpid() else 0
        return stats

    @property
    def fallback_variables(self) -> list[str]:
        """Variables whose codec chain the fast path lacks: read through zarr-python
        (slower; counted in ``report.chunks_fallback``)."""
        return [name for name, spec in self._specs.items() if not spec.fast]

    def _decoder(self, name: str) -> ChunkDecoder:
        self._check_process()
        with self._lock:
            decoder = self._decoders.get(name)
            if decoder is None:
                decoder = self._decoders[name] = ChunkDecoder(self._specs[name])
        return decoder

    def _read_fallback(self, name: str, index: tuple[int, ...]) -> np.ndarray:
        """Read a chunk through zarr-python, for codec chains the fast path lacks."""
        self._check_process()
        reader = None if self.location.is_local else self.reader  # before the lock: it locks
        with self._lock:
            array = self._fallback.get(name)
            if array is None:
                import zarr

                store, root = _metadata_store(self.location, reader)
                path = _join(root, self._specs[name].path)
                array = call_zarr(
                    lambda: zarr.open_array(store, path=path, mode="r"),
                    self.location,
                    f"the metadata of {name!r}",
                )
                self._fallback[name] = array
        info = self._variables[name]
        region = tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(index, info.chunks, info.shape, strict=True)
        )
        chunk = call_zarr(
            lambda: np.asarray(array[region]),
            self.location,
            f"chunk {index} of {name!r}",
            error=ChunkDecodeError,
        )
        with self._lock:
            self._fallback_reads += 1
        return chunk

    def __repr__(self) -> str:
        fast = all(s.fast for s in self._specs.values())
        lines = [f"<ZarrSource {self.location.display!r}>"]
        lines.append("Dimensions: " + ", ".join(f"{d}: {n}" for d, n in self.dims.items()))
        lines.append("Variables:")
        width = max((len(n) for n in self._variables), default=0)
        for name, info in self._variables.items():
            decoded = f"  CF: {info.cf.describe()}" if info.cf is not None else ""
            lines.append(
                f"  {name:<{width}}  ({', '.join(info.dims)})  {info.dtype}  "
                f"chunks={info.chunks}  {'+'.join(info.codecs) or 'raw'}  "
                f"{format_bytes(info.nbytes)}{decoded}"
            )
        if self._coord_arrays:
            lines.append("Coordinates: " + ", ".join(self._coord_arrays))
        if self._selection:
            cut = ", ".join(f"{d}: {s.start}:{s.stop}" for d, s in self._selection.items())
            lines.append(f"Selection (positions): {cut}")
        if not fast:
            lines.append(
                "(read through zarr-python, slower: " + ", ".join(self.fallback_variables) + ")"
            )
        return "\n".join(lines)


def _decode_coord(
    dim: str, values: np.ndarray, attrs: Mapping[str, Any], options: CFOptions
) -> np.ndarray:
    """A coordinate's values decoded as xarray decodes them (exact dtype, no float32 rule)."""
    exact = CFOptions(options.mask_and_scale, options.decode_times, "xarray")
    coder = cf_coder(dim, attrs, values.dtype, exact, times=True)
    if coder is not None:
        values = decode_reference(coder, values.astype(coder.raw_dtype, copy=False))
    if options.decode_times and is_cf_time(attrs):
        values = decode_cf_time(values, attrs, name=dim)
    return values


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


def _check_names(requested: Sequence[str] | str, available: Mapping[str, Any]) -> list[str]:
    names = [requested] if isinstance(requested, str) else list(requested)
    if not names:
        raise VariableNotFoundError(
            "no variables were selected; pass at least one of: " + ", ".join(available)
        )
    for name in names:
        if name not in available:
            raise VariableNotFoundError(
                f"variable {name!r} is not in the source.{suggest(name, list(available))} "
                f"Available variables: {', '.join(available) or '(none)'}."
            )
    return names


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
    import zarr

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

    from ._xarray import is_xarray, open_xarray

    if is_xarray(url_or_path):
        return open_xarray(url_or_path, variables)
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
        specs[name], infos[name] = describe_array(name, path, arr, options)
    source = ZarrSource(location, specs, infos, coord_arrays, dict(node.attrs), cf=options)
    if variables is not None:
        source = source.select(variables)
    elif not infos:
        raise StoreNotFoundError(
            f"the store at {location.display} has no data variables (only coordinates: "
            f"{', '.join(coord_arrays) or 'none'}). Check the path."
        )
    return source
