"""``BatchGenerator``: xbatcher 0.4's batches, read by earthstream's engine."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import EpochReport
from ..errors import UnsupportedInputError, WindowError
from ..sources import XarraySource, ZarrSource
from ._reader import PatchReader, streamable
from ._schema import BatchPlan, plan_batches

__all__ = ["BatchGenerator", "drop_input_dims", "maybe_stack_batch_dims"]

#: Suffix of the input dims of concatenated batches (xbatcher's).
SUFFIX = "_input"

#: How xbatcher 0.4 concatenates patches: ``xarray.concat``'s defaults when it was
#: written, given explicitly (xarray warns that its defaults will change).
CONCAT: dict[str, Any] = {
    "data_vars": "all",
    "coords": "different",
    "compat": "equals",
    "join": "outer",
}


def drop_input_dims(obj: Any, input_dims: Mapping[Hashable, int], suffix: str = SUFFIX) -> Any:
    """Rename each input dim ``d`` to ``d + suffix`` and keep its coordinate as a
    non-index coordinate ``d`` along it: the form xbatcher concatenates patches in.

    xbatcher 0.4 tests ``d + suffix in obj``, which on a DataArray looks at its
    values, not its coordinates (so DataArray patches keep an index on each input
    dim and are outer-joined, padded with NaN; dask-backed ones raise).  Here the
    coordinate is looked up as on a Dataset, for both.
    """
    out = obj.copy(deep=False)
    for dim in input_dims:
        new = f"{dim}{suffix}"
        out = out.rename({dim: new})
        if new in out.coords:
            out = out.drop_vars(new)
            out.coords[dim] = new, obj[dim].data, obj[dim].attrs
    return out


def maybe_stack_batch_dims(obj: Any, input_dims: Sequence[Hashable]) -> Any:
    """Stack the dims other than ``input_dims`` into ``sample`` when there are two or more."""
    batch_dims = [d for d in obj.sizes if d not in input_dims]
    if len(batch_dims) < 2:
        return obj
    return obj.stack(sample=batch_dims).transpose("sample", *input_dims)


def _placeholder(variable: Any) -> np.ndarray:
    """A zero-byte stand-in of the variable's shape and dtype (a broadcast scalar)."""
    return np.broadcast_to(np.zeros((), dtype=variable.dtype), variable.shape)


#: Data variables the engine does not read (they lack a sliced dim, or are not numeric)
#: are loaded once up to this size; larger ones are read by xarray for every batch.
PRELOAD_BYTES = 64 * 2**20


@dataclass
class _Access:
    """Where ``bgen[i]`` calls stand: the last index, the step to it, and an open pass
    over the run of batches they follow."""

    last: int | None = None
    last_step: int = 0
    run: Generator[Any, None, None] | None = None
    next: int = -1
    step: int = 0

    def stop(self) -> None:
        if self.run is not None:
            self.run.close()
        self.run = None


@dataclass
class _Setup:
    """What reading needs, built on first use.

    ``reader`` reads the streamed variables (None when none can be streamed).
    ``skeleton`` is the dataset with zero-byte stand-ins for them, its
    coordinates loaded; with ``concat_input_dims`` it is already in the form
    patches are concatenated in (:func:`drop_input_dims` commutes with ``isel``,
    so it is applied once).  ``lazy``: some variable is still read by xarray per
    batch.
    """

    reader: PatchReader | None
    skeleton: Any
    lazy: bool
    paths: dict[str, str]


class BatchGenerator:
    """xbatcher's ``BatchGenerator``, read by earthstream's engine.

    The same arguments, the same batches (values, dims, coordinates,
    attributes, order, ``len`` and ``bgen[i]``) as ``xbatcher.BatchGenerator``
    0.4, but the data variables are read through earthstream's engine: a
    Dataset opened with ``xarray.open_zarr`` (possibly cut with ``.sel`` /
    ``.isel``) is read from its Zarr store by the fast path, each chunk decoded
    once per pass however many patches use it; any other Dataset through
    xarray, block by block (:func:`earthstream.open_xarray`).

    Parameters
    ----------
    ds
        The ``xarray.Dataset`` or ``DataArray`` to iterate over.
    input_dims
        Dim -> window length of each patch, e.g. ``{"lat": 32, "lon": 32}``.
    input_overlap
        Dim -> overlap of consecutive patches along it.
    batch_dims
        Dim -> length of the batch along it (always iterated).
    concat_input_dims
        Concatenate the patches of a batch along ``input_batch`` (renaming each
        input dim ``d`` to ``d_input``) and stack everything else into ``sample``.
    preload_batch
        ``True``: batches are read into memory (by the engine).  ``False``:
        batches are xarray's lazy selections, exactly as xbatcher returns them
        (dask-backed for dask datasets); the engine reads nothing.
    cache, cache_preprocess
        xbatcher's experimental cache: batches are written to the Zarr store
        ``cache`` (after ``cache_preprocess``) and read back from it.
    memory_limit
        Bytes for decoded chunks plus batches being read (default: 1 GiB, or what
        a batch needs).  Chunks reused by later batches stay decoded while this
        allows.
    num_threads, prefetch
        Threads reading and decoding chunks (default: the CPUs available);
        engine reads assembled ahead of the consumer.

    Examples
    --------
    >>> import earthstream as es, xarray as xr
    >>> from earthstream.xbatcher import BatchGenerator
    >>> path = es.datasets.era5_like(tmp_path / "x.zarr", n_times=4, n_lat=16, n_lon=32)
    >>> ds = xr.open_zarr(path)[["t2m", "u10"]]
    >>> bgen = BatchGenerator(ds, input_dims={"lat": 8, "lon": 16}, batch_dims={"time": 2})
    >>> len(bgen), dict(bgen[0].sizes)
    (8, {'time': 2, 'lat': 8, 'lon': 16})
    >>> type(bgen.source).__name__
    'ZarrSource'
    """

    def __init__(
        self,
        ds: Any,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] = {},  # xbatcher's signature
        batch_dims: Mapping[Hashable, int] = {},
        concat_input_dims: bool = False,
        preload_batch: bool = True,
        cache: Any = None,
        cache_preprocess: Callable[[Any], Any] | None = None,
        *,
        memory_limit: int | str | None = None,
        num_threads: int | None = None,
        prefetch: int = 2,
    ) -> None:
        import xarray as xr

        if not isinstance(ds, xr.Dataset | xr.DataArray):
            raise UnsupportedInputError(
                f"BatchGenerator iterates an xarray.Dataset or DataArray, not "
                f"{type(ds).__name__}; for stores and arrays use earthstream.Stream."
            )
        self.ds = ds
        self.cache = cache
        self.cache_preprocess = cache_preprocess
        self._input_dims = dict(input_dims)
        self._input_overlap = input_overlap
        self._batch_dims = dict(batch_dims)
        self._concat = bool(concat_input_dims)
        self._preload = bool(preload_batch)
        self.plan: BatchPlan = plan_batches(
            ds.sizes, self._input_dims, input_overlap, self._batch_dims, self._concat
        )
        self._options: dict[str, Any] = {
            "memory_limit": memory_limit,
            "num_threads": num_threads,
            "prefetch": prefetch,
        }
        self._setup_done: _Setup | None = None
        self._pid = os.getpid()
        self._access = _Access()

    # -- xbatcher's attributes ----------------------------------------------------------
    @property
    def input_dims(self) -> dict[Hashable, int]:
        return self._input_dims

    @property
    def input_overlap(self) -> Mapping[Hashable, int]:
        return self._input_overlap

    @property
    def batch_dims(self) -> dict[Hashable, int]:
        return self._batch_dims

    @property
    def concat_input_dims(self) -> bool:
        return self._concat

    @property
    def preload_batch(self) -> bool:
        return self._preload

    # -- earthstream's -----------------------------------------------------------------
    @property
    def source(self) -> ZarrSource | XarraySource | None:
        """The source the engine reads (None when no variable can be streamed)."""
        reader = self._setup().reader
        return None if reader is None else reader.source

    @property
    def paths(self) -> dict[str, str]:
        """How each data variable is read: by the engine, or by xarray and why."""
        return dict(self._setup().paths)

    @property
    def report(self) -> EpochReport | None:
        """The engine's report of the last read: chunks decoded (``decodes`` per
        chunk), cache hits, memory, requests."""
        reader = self._setup().reader
        return None if reader is None else reader.report

    def close(self) -> None:
        """Stop reading ahead for ``bgen[i]`` and free the engine's decoded-chunk slots
        (reading can start again later)."""
        self._access.stop()
        if self._setup_done is not None and self._setup_done.reader is not None:
            self._setup_done.reader.close()

    def __getstate__(self) -> dict[str, Any]:
        # the engine and its threads stay in this process; a copy (a DataLoader worker)
        # builds its own on first use
        state = self.__dict__.copy()
        state["_setup_done"] = None
        state["_access"] = _Access()
        return state

    def _setup(self) -> _Setup:
        if self._setup_done is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._access = _Access()
            self._setup_done = self._build_setup()
        return self._setup_done

    def _build_setup(self) -> _Setup:
        import xarray as xr

        obj = self.ds
        key = "data"  # the DataArray's variable in the Dataset the engine reads
        if isinstance(obj, xr.DataArray):
            key = str(obj.name) if obj.name is not None else "data"
            dataset = None if key in obj.coords else obj.to_dataset(name=key)
        else:
            dataset = obj
        names: list[str] = []
        paths: dict[str, str] = {}
        if dataset is not None:
            names, why = streamable(dataset, self.plan.dims)
            paths = {n: f"xarray: {w}" for n, w in why.items()}
        reader = None
        if names:
            reader = PatchReader(dataset, self.plan, names, **self._options)
            kind = type(reader.source).__name__
            paths.update(dict.fromkeys(names, f"engine ({kind})"))
        elif dataset is None:
            paths[key] = "xarray: the DataArray is named like one of its coordinates"
        skeleton = obj.copy(deep=False)
        if isinstance(skeleton, xr.DataArray):
            variables = {str(c): skeleton.coords[c].variable for c in skeleton.coords}
            variables[key] = skeleton.variable  # (named like a coordinate: not streamed)
            others = [] if names else [key]
        else:
            variables = {str(k): v for k, v in skeleton.variables.items()}
            others = [str(n) for n in skeleton.data_vars if str(n) not in names]
        for name in names:
            variables[name].data = _placeholder(variables[name])
        lazy = False
        for name, variable in variables.items():
            if name in names:
                continue
            if name not in others or variable.nbytes <= PRELOAD_BYTES:
                variable.load()  # coordinates, and small variables the engine does not read
            else:
                lazy = True
        if self._concat:
            skeleton = drop_input_dims(skeleton, self._input_dims)
        return _Setup(reader, skeleton, lazy, paths)

    # -- batches -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.plan.batches)

    def __iter__(self) -> Iterator[Any]:
        if self.cache is not None or not self._preload:
            for idx in range(len(self)):
                yield self[idx]
            return
        yield from self._read(range(len(self)))

    def __getitem__(self, idx: int) -> Any:
        if not isinstance(idx, int):
            raise NotImplementedError(
                f"{type(self).__name__}.__getitem__ currently requires a single integer key"
            )
        if idx < 0:
            idx = list(range(len(self)))[idx]
        if not 0 <= idx < len(self):
            raise IndexError("list index out of range")
        if self.cache and self._batch_in_cache(idx):
            return self._get_cached_batch(idx)
        if self._preload:
            batch = self._indexed(idx)
        else:
            batch = self._lazy_batch(idx)
        if self.cache is not None and self.cache_preprocess is not None:
            batch = self.cache_preprocess(batch)
        if self.cache is not None:
            batch.to_zarr(self.cache, group=str(idx), mode="a")
        return batch

    def _indexed(self, idx: int) -> Any:
        """``bgen[idx]``, read by the engine.

        A run of calls with a constant step (``0, 1, 2 ...`` in a loop, or ``w, w + k,
        w + 2k ...`` in DataLoader worker ``w`` of ``k`` over xbatcher's ``MapDataset``)
        becomes one pass over the rest of the run, read ahead with chunks decoded once;
        other calls read their batch alone.
        """
        self._setup()  # (a fresh one in a forked process)
        access = self._access
        if access.run is not None and access.next == idx:
            access.next += access.step
            return next(access.run)
        access.stop()
        step = idx - access.last if access.last is not None else 0
        access.last = idx
        if step > 0 and step == access.last_step:  # three calls a constant step apart
            access.run = self._read(range(idx, len(self), step))
            access.next = idx + step
            access.step = step
            return next(access.run)
        access.last_step = step
        (batch,) = self._read([idx])
        return batch

    def _read(self, indices: Sequence[int]) -> Generator[Any, None, None]:
        setup = self._setup()
        batches = self.plan.batches
        if setup.reader is None:
            for b in indices:
                yield self._build(setup, b, {})
            return
        arrays = setup.reader.iter_arrays([b for b in indices if len(batches[b])])
        try:
            for b in indices:
                if not len(batches[b]):
                    raise self._empty(b)
                got, data = next(arrays)
                assert got == b, (got, b)
                yield self._build(setup, b, data)
            assert next(arrays, None) is None  # let the pass finish (its report too)
        finally:
            arrays.close()

    def _fill(self, setup: _Setup, obj: Any, data: Mapping[str, np.ndarray], k: int) -> None:
        """Put patch ``k``'s values into a selection of the skeleton (its own variables:
        ``isel`` made new ones for every streamed variable, which has every sliced dim)."""
        if not data:
            return
        if hasattr(obj, "data_vars"):
            for name, values in data.items():
                obj.variables[name].data = values[k]
        else:
            (values,) = data.values()
            obj.variable.data = values[k]

    def _build(self, setup: _Setup, b: int, data: Mapping[str, np.ndarray]) -> Any:
        import xarray as xr

        patches = self.plan.batches[b].tolist()
        if not patches:
            raise self._empty(b)
        skeleton = setup.skeleton
        if not self._concat:
            batch = skeleton.isel(self.plan.selector(patches[0]))
            self._fill(setup, batch, data, 0)
            if setup.lazy:
                batch.load()
            return maybe_stack_batch_dims(batch, list(self._input_dims))
        parts = []
        for k, patch in enumerate(patches):
            selector = {
                f"{d}{SUFFIX}" if d in self._input_dims else d: s
                for d, s in self.plan.selector(patch).items()
            }
            part = skeleton.isel(selector)  # = drop_input_dims(the patch's isel)
            self._fill(setup, part, data, k)
            parts.append(part)
        batch = xr.concat(parts, dim="input_batch", **CONCAT)
        batch = maybe_stack_batch_dims(batch, [f"{d}{SUFFIX}" for d in self._input_dims])
        if setup.lazy:
            batch.load()
        return batch

    def _empty(self, b: int) -> WindowError:
        return WindowError(
            f"batch {b} holds no patches: with input_dims={self._input_dims}, input_overlap="
            f"{dict(self._input_overlap)} and batch_dims={self._batch_dims}, the patches along a "
            "dim in both end before its last whole batch. xbatcher 0.4 counts such a batch in "
            "len() and fails to build it too (concatenating nothing); choose batch_dims that "
            "are multiples of the input stride."
        )

    def _lazy_batch(self, idx: int) -> Any:
        """``preload_batch=False``: xarray's lazy selection, as xbatcher returns it."""
        import xarray as xr

        patches = self.plan.batches[idx].tolist()
        if not self._concat:
            selected = self.ds.isel(self.plan.selector(patches[0]))
            return maybe_stack_batch_dims(selected, list(self._input_dims))
        parts = [
            drop_input_dims(self.ds.isel(self.plan.selector(p)), self._input_dims) for p in patches
        ]
        batch = xr.concat(parts, dim="input_batch", **CONCAT)
        return maybe_stack_batch_dims(batch, [f"{d}{SUFFIX}" for d in self._input_dims])

    # -- xbatcher's experimental cache ----------------------------------------------------
    def _batch_in_cache(self, idx: int) -> bool:
        # Zarr v2 groups have .zgroup, v3 groups zarr.json (xbatcher 0.4 looks for .zgroup
        # only, so with zarr-python 3 it never finds what it cached)
        return self.cache is not None and (
            f"{idx}/.zgroup" in self.cache or f"{idx}/zarr.json" in self.cache
        )

    def _get_cached_batch(self, idx: int) -> Any:
        import xarray as xr

        ds = xr.open_zarr(self.cache, group=str(idx))
        if self._preload:
            ds = ds.load()
        return ds

    def __repr__(self) -> str:
        kind = "Dataset" if hasattr(self.ds, "data_vars") else "DataArray"
        return (
            f"<earthstream.xbatcher.BatchGenerator {len(self)} batches of a {kind}; "
            f"input_dims={self._input_dims} input_overlap={dict(self._input_overlap)} "
            f"batch_dims={self._batch_dims} concat_input_dims={self._concat} "
            f"preload_batch={self._preload}>"
        )
