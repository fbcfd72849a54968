"""The Zarr source: lazy metadata at open, direct chunk decoding in the hot path."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._names import suggest
from .._units import format_bytes
from .._validate import check_flag, check_names
from ..errors import StoreNotFoundError, UnsupportedFormatError, VariableNotFoundError
from ..storage import StoreLocation, parse_location
from ..storage._readers import (
    ByteReader,
    keep_inherited,
    make_object_store,
    open_reader,
    split_options,
)
from ._base import VariableInfo
from ._cftime import decode_cf_time, is_cf_time
from ._zarr_codecs import ChunkDecoder, ZarrArraySpec, spec_from_metadata

__all__ = ["ZarrSource", "open_zarr"]

_FALLBACK = object()  # fetch result of arrays read through zarr-python at decode time


def _zarr_store(location: StoreLocation) -> Any:
    """A read-only zarr-python store for metadata (and the slow fallback path).

    Metadata reads keep obstore's own retries; chunk reads go through
    :class:`~earthstream.storage.ObjectStoreReader`, which retries itself.
    """
    import zarr.storage

    if location.is_local:
        return zarr.storage.LocalStore(location.path, read_only=True)
    return zarr.storage.ObjectStore(make_object_store(location, retries=True), read_only=True)


def _dims_of(array: Any) -> tuple[str, ...]:
    meta = array.metadata
    names = getattr(meta, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    if names is None or any(n is None for n in names):
        return tuple(f"dim_{i}" for i in range(array.ndim))
    return tuple(str(n) for n in names)


def _fill_value(array: Any) -> Any:
    value = array.metadata.fill_value
    if value is None:
        return None
    return np.asarray(value).item()


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
        location: StoreLocation,
        specs: Mapping[str, ZarrArraySpec],
        variables: Mapping[str, VariableInfo],
        coord_arrays: Mapping[str, tuple[str, Mapping[str, Any]]],
        attrs: Mapping[str, Any],
        *,
        decode_times: bool = True,
    ) -> None:
        self.location = location
        self._specs = dict(specs)
        self._variables = dict(variables)
        self._coord_arrays = dict(coord_arrays)
        self.attrs = dict(attrs)
        self.decode_times = decode_times
        self._init_lazy()

    # -- process-local state, rebuilt after unpickling ----------------------------
    def _init_lazy(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._reader: ByteReader | None = None
        self._decoders: dict[str, ChunkDecoder] = {}
        self._fallback: dict[str, Any] = {}
        self._coords: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_pid", "_reader", "_decoders", "_fallback"):
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
                    self._reader = open_reader(self.location)
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

        CF time axes (``units: "hours since ..."``) are decoded to
        ``datetime64[ns]`` unless the source was opened with ``decode_times=False``.
        """
        self._check_process()
        if self._coords is None:
            import zarr

            store = _zarr_store(self.location)

            def load(item: tuple[str, tuple[str, Mapping[str, Any]]]) -> tuple[str, np.ndarray]:
                dim, (path, attrs) = item
                values = np.asarray(zarr.open_array(store, path=path, mode="r")[...])
                if self.decode_times and is_cf_time(attrs):
                    values = decode_cf_time(values, attrs)
                return dim, values

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
            decode_times=self.decode_times,
        )
        source._coords = self._coords
        return source

    # -- data ------------------------------------------------------------------------
    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode chunk ``index`` of variable ``name`` (``None``: not stored, all fill).

        With ``out`` (an array of the chunk's full shape and the variable's
        dtype) the chunk is decoded into it and ``out`` is returned.
        """
        spec = self._specs[name]
        if spec.fast:
            decoder = self._decoders.get(name)
            if decoder is None or self._pid != os.getpid():
                decoder = self._decoder(name)
            return decoder.read(self.reader, index, out)
        chunk = self._read_fallback(name, index)
        if out is None:
            return chunk
        out[tuple(slice(0, n) for n in chunk.shape)] = chunk
        return out

    # -- split reads: I/O and decoding in separate pools (remote stores) ------------
    @property
    def io_concurrency(self) -> int:
        """Requests worth keeping in flight: 0 for local files (one stage is enough)."""
        if self.location.is_local:
            return 0
        _, max_requests, _ = split_options(dict(self.location.options))
        return max_requests

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
        return decoder.decode(raw.data, raw.where, out)

    def chunk_location(self, name: str, index: tuple[int, ...]) -> str:
        """Where chunk ``index`` of ``name`` is stored (for messages and reports)."""
        spec = self._specs[name]
        if not spec.fast:
            return f"{self.location.url}/{spec.path} chunk {index}"
        return f"{self.location.url}/{self._decoder(name).where(index)}"

    def request_stats(self) -> dict[str, Any]:
        """Requests, retries, bytes and failures by kind of this process's reader."""
        if self._reader is None or self._pid != os.getpid():
            return {"requests": 0, "retries": 0, "bytes": 0, "failures": {}}
        return self._reader.stats.snapshot()

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
        with self._lock:
            array = self._fallback.get(name)
            if array is None:
                import zarr

                store = _zarr_store(self.location)
                array = zarr.open_array(store, path=self._specs[name].path, mode="r")
                self._fallback[name] = array
        info = self._variables[name]
        region = tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(index, info.chunks, info.shape, strict=True)
        )
        return np.asarray(array[region])

    def __repr__(self) -> str:
        fast = all(s.fast for s in self._specs.values())
        lines = [f"<ZarrSource {self.location.url!r}>"]
        lines.append("Dimensions: " + ", ".join(f"{d}: {n}" for d, n in self.dims.items()))
        lines.append("Variables:")
        width = max((len(n) for n in self._variables), default=0)
        for name, info in self._variables.items():
            lines.append(
                f"  {name:<{width}}  ({', '.join(info.dims)})  {info.dtype}  "
                f"chunks={info.chunks}  {'+'.join(info.codecs) or 'raw'}  "
                f"{format_bytes(info.nbytes)}"
            )
        if self._coord_arrays:
            lines.append("Coordinates: " + ", ".join(self._coord_arrays))
        if not fast:
            lines.append("(some variables use codecs read through zarr-python: slower)")
        return "\n".join(lines)


def _cannot_list(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    signs = ("notsupported", "not supported", "not implemented", "propfind", "405", "not allowed")
    return any(sign in text for sign in signs)


def _named_members(
    group: Any, location: StoreLocation, variables: Sequence[str] | str
) -> list[tuple[str, str, Any]]:
    """The requested arrays, opened by path (no listing: works on HTTP stores), plus
    the 1-D coordinate arrays named after their dims."""
    names = [variables] if isinstance(variables, str) else list(variables)
    members: list[tuple[str, str, Any]] = []
    for name in names:
        try:
            members.append((name, name, group[name]))
        except KeyError:
            try:
                available = [key for key, _ in group.arrays()]
            except Exception:
                available = []
            hint = f" Available variables: {', '.join(available)}." if available else ""
            raise VariableNotFoundError(
                f"variable {name!r} is not in the store at {location.url!r}."
                f"{suggest(name, available)}{hint}"
            ) from None
    seen = {name for name, _, _ in members}
    for _, _, arr in list(members):
        for dim in _dims_of(arr):
            if dim in seen:
                continue
            seen.add(dim)
            try:
                coord = group[dim]
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


def open_zarr(
    url_or_path: str | os.PathLike[str],
    variables: Sequence[str] | str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    decode_times: bool = True,
) -> ZarrSource:
    """Open a Zarr v2 or v3 store (group or single array) lazily.

    Only metadata is read: consolidated metadata when the store has it,
    otherwise each array's ``.zarray``/``zarr.json``.  No chunk is read and no
    dask graph is built.

    Parameters
    ----------
    url_or_path
        A local path, a ``file://`` URL, or an object-store URL (``s3://``,
        ``gs://``, ``az://``, ``http(s)://``).
    variables
        Data variables to keep (default: all arrays that are not coordinates).
    storage_options
        Options for the object-store client of remote URLs (endpoint, region,
        credentials); never logged.
    decode_times
        Decode CF time coordinates to ``datetime64[ns]``.

    Returns
    -------
    ZarrSource

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
    """
    import zarr

    chosen = check_names(variables, "variables")
    variables = list(chosen) if chosen is not None else None
    decode_times = check_flag(decode_times, "decode_times")
    location = parse_location(url_or_path, storage_options)
    if location.is_local and not os.path.exists(location.path):
        raise StoreNotFoundError(
            f"no store at {location.path!r}: the path does not exist. Check the path, or pass "
            "a URL (s3://, gs://, az://, http(s)://) for a remote store."
        )
    try:
        node = zarr.open(store=_zarr_store(location), mode="r")
    except (FileNotFoundError, KeyError) as exc:
        raise StoreNotFoundError(
            f"no Zarr group or array at {location.url!r} ({type(exc).__name__}). Point at the "
            "directory that holds zarr.json (v3) or .zgroup/.zarray (v2)."
        ) from exc

    if isinstance(node, zarr.Array):
        name = os.path.basename(location.path.rstrip("/")) or "data"
        if name.endswith(".zarr"):
            name = name[: -len(".zarr")]
        members: list[tuple[str, str, Any]] = [(name, "", node)]
    elif variables is not None:
        members = _named_members(node, location, variables)
    else:
        try:
            # in name order: a store without consolidated metadata lists its keys in
            # whatever order the file system returns, and two opens of the same store
            # must stack their channels alike
            members = [(key, key, arr) for key, arr in sorted(node.arrays(), key=lambda m: m[0])]
        except Exception as exc:  # e.g. HTTP stores cannot list keys
            if not _cannot_list(exc):
                raise
            raise UnsupportedFormatError(
                f"the store at {location.url!r} has no consolidated metadata and "
                f"{location.scheme}:// cannot list its keys, so its arrays cannot be found. "
                "Consolidate the metadata (zarr.consolidate_metadata) or pass variables=[...]."
            ) from None

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
            coord_arrays[name] = (path, dict(arr.attrs))
            continue
        if name in listed_coords or arr.ndim == 0:
            continue
        dtype = np.dtype(arr.dtype)
        spec = spec_from_metadata(path, arr.metadata.to_dict(), dtype)
        specs[name] = spec
        infos[name] = VariableInfo(
            name=name,
            dims=dims,
            shape=tuple(int(s) for s in arr.shape),
            dtype=dtype.newbyteorder("="),
            chunks=spec.chunks,
            fill_value=_fill_value(arr),
            codecs=spec.codec_names,
            attrs=dict(arr.attrs),
        )
    source = ZarrSource(
        location, specs, infos, coord_arrays, dict(node.attrs), decode_times=decode_times
    )
    if variables is not None:
        source = source.select(variables)
    elif not infos:
        raise StoreNotFoundError(
            f"the store at {location.url!r} has no data variables (only coordinates: "
            f"{', '.join(coord_arrays) or 'none'}). Check the path."
        )
    return source
