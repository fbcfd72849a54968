"""The Zarr source: lazy metadata at open, direct chunk decoding in the hot path."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._units import format_bytes
from ..errors import ChunkDecodeError
from ..protocols import RequestCounts, Span
from ..storage import StoreLocation
from ..storage._location import join_key
from ..storage._readers import ByteReader, keep_inherited, open_reader
from ..storage._zarr_store import StoreHandle
from ._base import VariableInfo, check_variables
from ._cf import CFOptions, cf_coder, decode_reference
from ._cftime import decode_cf_time, is_cf_time
from ._zarr_codecs import ChunkDecoder, ZarrArraySpec
from ._zarr_meta import CheckedStore, call_zarr
from ._zarr_units import UnitRaw, unit_parts

__all__ = ["Location", "ZarrSource"]

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


class ZarrSource:
    """A Zarr v2 or v3 group (or single array), opened lazily.

    Create it with :func:`~earthstream.open_zarr`.  It holds only metadata: variables with
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
        names = check_variables(variables, self._variables)
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
        if spec.read_unit is not None:
            return self._decode_unit(name, self._fetch_units(name, [index])[0], out)
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

    def _inner_buffer(self, name: str) -> np.ndarray:
        """This thread's buffer for one inner chunk of ``name``'s stored values (reused)."""
        buffers: dict[str, np.ndarray] | None = getattr(self._local, "inner", None)
        if buffers is None:
            buffers = self._local.inner = {}
        buf = buffers.get(name)
        if buf is None:
            buf = buffers[name] = np.empty(
                self._specs[name].chunks, self._variables[name].stored_dtype
            )
        return buf

    # -- read units of sharded arrays (see _zarr_units) ------------------------------
    def _fetch_units(self, name: str, indices: Sequence[tuple[int, ...]]) -> list[UnitRaw | None]:
        """The stored bytes of read units: their inner chunks, fetched together (ranges
        of one shard merge); ``None`` for a unit none of whose inner chunks is stored."""
        spec = self._specs[name]
        decoder = self._decoders.get(name)
        if decoder is None or self._pid != os.getpid():
            decoder = self._decoder(name)
        parts = [unit_parts(spec, index) for index in indices]
        raws = decoder.fetch_many(self.reader, [p.index for unit in parts for p in unit])
        out: list[UnitRaw | None] = []
        at = 0
        for unit in parts:
            mine = tuple(raws[at : at + len(unit)])
            at += len(unit)
            out.append(None if all(r is None for r in mine) else UnitRaw(tuple(unit), mine))
        return out

    def _decode_unit(
        self, name: str, raw: UnitRaw | None, out: np.ndarray | None
    ) -> np.ndarray | None:
        """Decode a read unit's inner chunks, each into its region of ``out`` (the unit's
        shape); inner chunks not stored hold the fill value, as zarr-python reads them.
        Any inner chunk that fails to decode fails the whole unit (ChunkDecodeError)."""
        if raw is None:
            return None
        info = self._variables[name]
        decoder = self._decoders.get(name)
        if decoder is None or self._pid != os.getpid():
            decoder = self._decoder(name)
        if out is None:
            out = np.empty(info.chunks, info.dtype)
        stored = out if info.cf is None else self._stored_buffer(name)
        missing = []
        for part, chunk in zip(raw.parts, raw.raws, strict=True):
            if chunk is None:
                missing.append(part.region)
                if info.cf is not None:
                    stored[part.region] = 0  # defined values for the CF coder; filled below
                continue
            region = stored[part.region]
            if region.flags.c_contiguous:  # e.g. units stacked along the first dim
                decoder.decode(chunk.data, chunk.where, region)
            else:
                region[...] = decoder.decode(chunk.data, chunk.where, self._inner_buffer(name))
        if info.cf is not None:
            self._cf_decode(name, stored, out)
        for where in missing:
            out[where] = info.fill_value
        return out

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
        if spec.read_unit is not None:
            return list(self._fetch_units(name, indices))
        decoder = self._decoders.get(name)
        if decoder is None or self._pid != os.getpid():
            decoder = self._decoder(name)
        return list(decoder.fetch_many(self.reader, indices))

    def fetch_group(self, name: str, index: tuple[int, ...]) -> Any:
        """Chunks with the same group are best fetched together (one shard's inner
        chunks: their byte ranges merge)."""
        spec = self._specs[name]
        shard = spec.shard
        if shard is None:
            return index
        per_unit = spec.read_unit or (1,) * len(index)
        return tuple(
            i * k // n for i, k, n in zip(index, per_unit, shard.chunks_per_shard, strict=True)
        )

    def decode_chunk(
        self, name: str, index: tuple[int, ...], raw: Any, out: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Decode what :meth:`fetch_chunks` returned for chunk ``index``."""
        if raw is None:
            return None
        if raw is _FALLBACK:
            return self.read_chunk(name, index, out)
        if isinstance(raw, UnitRaw):
            return self._decode_unit(name, raw, out)
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
        if spec.read_unit is not None and spec.shard is not None:
            parts = unit_parts(spec, index)
            cps = spec.shard.chunks_per_shard
            outer = tuple(i // n for i, n in zip(parts[0].index, cps, strict=True))
            first = tuple(i % n for i, n in zip(parts[0].index, cps, strict=True))
            last = tuple(i % n for i, n in zip(parts[-1].index, cps, strict=True))
            return join_key(
                self.location.display,
                f"{spec.key(outer)} (read unit {index}: inner chunks {first} to {last})",
            )
        return join_key(self.location.display, self._decoder(name).where(index))

    def request_stats(self) -> RequestCounts:
        """Requests, retries, bytes and failures by kind of this process's reader, and
        ``fallback``: chunks read through zarr-python (codec chains the fast path lacks)."""
        if self._reader is None or self._pid != os.getpid():
            stats: RequestCounts = {"requests": 0, "retries": 0, "bytes": 0, "failures": {}}
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
            spec = self._specs[name]
            if spec.read_unit is not None and spec.shard is not None:
                n = int(np.prod(spec.read_unit))
                lines.append(
                    f"  {'':<{width}}  read unit {info.chunks}: {n} inner chunks "
                    f"{spec.chunks} of shards {spec.grid_chunks}"
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
