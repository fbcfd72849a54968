"""``PredictionWriter``: model outputs over a whole domain, blended and written back to Zarr.

The writer plans the inference stream from its output chunks
(:mod:`earthstream.sampling._inference`): each output chunk has one owner
(rank), which computes every window touching it, sums ``weight * value`` and
``weight`` in float64 per chunk as batches arrive, and when the last window
of a chunk has been added divides once, casts once, and writes the chunk
(whole, once) with zarr-python.  Partial sums live only in memory, so a run
that stops leaves complete chunks behind, and a new writer on the same store
skips them; two ranks never own, so never write, the same chunk.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._stream import Stream
from ..errors import ConfigError, DimensionError
from ..sampling import OrderSpec
from ..sampling._inference import ExplicitSequence, OutputChunks, plan_inference

__all__ = ["PredictionWriter", "WriteReport", "taper"]

Blend = Literal["mean", "taper"]
#: Group attribute recording how a store was written (checked when a run resumes).
CONFIG_ATTR = "earthstream:prediction"


def taper(length: int) -> np.ndarray:
    """1-D taper weights of a window of ``length``: ``sin(pi (i + 0.5) / length) ** 2``.

    Positive everywhere (so every covered position has weight), near 0 at the
    window's edges and 1 in its middle: overlapping windows fade into each
    other without seams.

    >>> [round(float(w), 3) for w in taper(4)]
    [0.146, 0.854, 0.854, 0.146]
    """
    i = np.arange(length, dtype=np.float64)
    return np.asarray(np.sin(np.pi * (i + 0.5) / length) ** 2, dtype=np.float64)


@dataclass
class WriteReport:
    """What this process's writer did."""

    rank: int = 0
    world_size: int = 1
    chunks_total: int = 0  # output chunks of the whole store
    chunks_owned: int = 0  # owned by this rank
    chunks_skipped: int = 0  # owned, already written by an earlier run
    chunks_written: int = 0  # written by this run
    windows: int = 0  # windows added (this rank; halo windows count on each rank)
    batches: int = 0
    padded_batches: int = 0
    uncovered: dict[str, int] = field(default_factory=dict)  # positions no window writes
    peak_accumulator_bytes: int = 0
    bytes_written: int = 0  # decoded bytes of the chunks written
    elapsed_s: float = 0.0

    def summary(self) -> str:
        missing = ", ".join(f"{d}: {n}" for d, n in self.uncovered.items() if n)
        return (
            f"rank {self.rank} of {self.world_size}: {self.chunks_written} of "
            f"{self.chunks_owned} owned chunks written ({self.chunks_skipped} already there; "
            f"{self.chunks_total} in the store) from {self.windows:,} windows in "
            f"{self.batches} batches ({self.padded_batches} padding) in {self.elapsed_s:.2f} s; "
            f"{self.bytes_written / 1e6:,.1f} MB written; peak accumulators "
            f"{self.peak_accumulator_bytes / 1e6:,.1f} MB"
            + (f"; positions without a prediction (NaN): {missing}" if missing else "")
        )


class _Acc:
    """One chunk's float64 sums while its windows arrive (over the output dims)."""

    __slots__ = ("count", "origin", "region", "stop", "sums")

    def __init__(
        self, region: tuple[slice, ...], out_axes: Sequence[int], names: Sequence[str]
    ) -> None:
        self.region = region
        self.origin = [region[a].start for a in out_axes]
        self.stop = [r.stop for r in region]
        shape = tuple(region[a].stop - region[a].start for a in out_axes)
        self.sums = {n: np.zeros(shape, dtype=np.float64) for n in names}
        self.count = 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.sums.values())


def _numpy(value: Any) -> np.ndarray:
    """A NumPy array from NumPy or a torch tensor (moved to the CPU)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def _distributed() -> Any:
    """``torch.distributed`` when a process group is initialized, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def open_target(target: Any, storage_options: Mapping[str, Any] | None) -> Any:
    """A writable zarr-python store for a path, an object-store URL or a zarr store."""
    import zarr.abc.store
    import zarr.storage

    if isinstance(target, str | os.PathLike):
        from ..storage._location import parse_location
        from ..storage._readers import make_object_store

        location = parse_location(target, storage_options)
        if location.is_local:
            return zarr.storage.LocalStore(location.path)
        return zarr.storage.ObjectStore(make_object_store(location, retries=True))
    if isinstance(target, zarr.abc.store.Store):
        return target
    raise ConfigError(
        f"target={type(target).__name__}: pass a local path, an object-store URL (s3://, "
        "gs://, az://) with storage_options, or a writable zarr-python store."
    )


class PredictionWriter:
    """Write model outputs over a whole domain into a Zarr v3 store, blended, chunk by chunk.

    Build it from the stream whose windows cover the domain (``like``, e.g.
    ``Stream(..., stride < window, edges="pad")``), iterate :attr:`stream`
    (this rank's windows, planned from the output chunks) and hand each
    batch's outputs to :meth:`write`; :meth:`close` waits for the last writes.

    Parameters
    ----------
    target
        A local path, an object-store URL (``s3://``, ``gs://``, ``az://``; with
        ``storage_options``) or a writable zarr-python store.
    like
        The :class:`~earthstream.Stream` over the domain: its selection, window
        grid, coordinates, batch size and placement (rank, world size).  Its
        windows must cover every position (``edges="pad"``, stride at most the
        window); forecast streams write each sample at its target time (one
        lead).
    variables
        Output names, or name -> attributes (``{"t2m": {"units": "K",
        "long_name": "..."}}``): written as given, nothing copied from the
        source (no packing attributes).  A model output of ``(B, C, ...)`` is
        split into these ``C`` variables in order.
    dims
        The output dims (default: every dim of ``like``); dims left out must
        have a single window position (e.g. ``level`` windowed whole).  Arrays
        keep the stream's dim order.
    blend
        ``"mean"``: overlapping windows averaged; ``"taper"``: weighted by
        :func:`taper` along every windowed dim, so windows fade into each other
        without seams.  Sums in float64, divided and cast once per chunk.
    chunks
        Output chunk length per dim (default: the stream's first variable's
        chunks; whole dims otherwise).  A chunk is the unit of ownership, of
        memory (float64 sums while its windows arrive) and of resume.
    dtype
        Floating dtype of the outputs (NaN where nothing was predicted).
    attrs
        Attributes of the output dataset.
    mode
        ``"a"`` (default): create the store, or resume one written by the same
        configuration (chunks already written are skipped); ``"w"``: replace
        it; ``"w-"``: fail if it exists.
    storage_options
        For object-store URLs (credentials, endpoint), as for ``open_zarr``.
    at
        Dim -> offset: outputs of one position along that dim, at the window's
        start plus the offset (e.g. ``{"time": 1}``: a next-step prediction from
        a window of steps ``t, t+1`` lands on ``t+1``); the model's outputs
        then have no such axis.  Forecast streams set it to the target step.
    write_threads
        Threads writing finished chunks while the model runs.

    Examples
    --------
    >>> import earthstream as es, xarray as xr, numpy as np
    >>> path = es.datasets.era5_like(tmp_path / "e.zarr", n_times=4, n_lat=16, n_lon=32)
    >>> domain = es.Stream(path, {"lat": 8, "lon": 8}, {"lat": 6, "lon": 6}, variables="t2m",
    ...                    edges="pad", batch_size=8)
    >>> writer = es.PredictionWriter(tmp_path / "pred.zarr", like=domain, blend="taper",
    ...                              variables={"t2m": {"units": "K"}}, chunks={"lat": 8})
    >>> for batch in writer.stream:
    ...     writer.write(batch, batch["t2m"])          # an identity "model"
    >>> report = writer.close()
    >>> out, src = xr.open_zarr(tmp_path / "pred.zarr"), xr.open_zarr(path)
    >>> bool((out["t2m"] == src["t2m"]).all()), out["t2m"].attrs
    (True, {'units': 'K'})
    """

    def __init__(
        self,
        target: Any,
        like: Stream,
        variables: Sequence[str] | str | Mapping[str, Mapping[str, Any]],
        *,
        dims: Sequence[str] | None = None,
        blend: Blend = "mean",
        chunks: Mapping[str, int] | None = None,
        dtype: Any = "float32",
        attrs: Mapping[str, Any] | None = None,
        mode: Literal["a", "w", "w-"] = "a",
        storage_options: Mapping[str, Any] | None = None,
        at: Mapping[str, int] | None = None,
        write_threads: int = 4,
    ) -> None:
        t0 = time.perf_counter()
        if not isinstance(like, Stream):
            raise ConfigError(f"like= must be an earthstream.Stream, not {type(like).__name__}.")
        order = like.order
        if order.subset is not None or order.samples is not None or order.sequence is not None:
            raise ConfigError(
                "like= must visit every window of its grid: build it without windows= or "
                "samples_per_epoch (they leave positions without a prediction)."
            )
        if blend not in ("mean", "taper"):
            raise ConfigError(f"blend={blend!r}: use 'mean' or 'taper'.")
        if mode not in ("a", "w", "w-"):
            raise ConfigError(f"mode={mode!r}: use 'a' (create or resume), 'w' or 'w-'.")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ConfigError(f"dtype={dtype!r}: blended outputs are floating point.")
        if isinstance(variables, str):
            variables = [variables]
        if isinstance(variables, Mapping):
            self.variables = {str(k): dict(v or {}) for k, v in variables.items()}
        else:
            self.variables = {str(k): {} for k in variables}
        if not self.variables:
            raise ConfigError("variables= names no output.")
        self.like = like
        self.blend = blend
        grid = order.grid
        self.grid = grid
        self.dims = self._output_dims(dims)
        self.rank, self.world_size = like.placement()
        forecast = like.forecast
        offsets: dict[str, int] = {}
        lengths: dict[str, int] = {}
        for axis in grid.axes:
            if axis.squeeze:
                lengths[axis.dim] = 1
        self._at: dict[str, int] = {}
        if forecast is not None:
            if len(forecast.target_offsets) != 1:
                raise ConfigError(
                    "a forecast stream with several leads has several target times per "
                    "sample; write one lead per writer (Forecast(lead=...))."
                )
            self._at[forecast.dim] = forecast.target_offsets[0]
        for dim, offset in (at or {}).items():
            if dim not in grid.dims or dim not in self.dims:
                raise DimensionError(f"at= names {dim!r}, which is not an output dim {self.dims}.")
            axis = grid.axis(dim)
            if (
                isinstance(offset, bool)
                or not isinstance(offset, int)
                or not 0 <= offset < axis.length
            ):
                raise ConfigError(
                    f"at[{dim!r}]={offset!r} must be a position inside the window (0 .. "
                    f"{axis.length - 1})."
                )
            if dim in self._at:
                raise ConfigError(f"at= sets {dim!r}, which the forecast already places.")
            self._at[dim] = int(offset)
        for dim, offset in self._at.items():
            offsets[dim] = offset
            lengths[dim] = 1
        chunk = self._chunks(chunks)
        self.out = OutputChunks.of(grid, chunk, offsets, lengths)
        self._check_coverage()
        self.store = open_target(target, storage_options)
        self._writes = ThreadPoolExecutor(max(1, write_threads), thread_name_prefix="es-write")
        self._futures: list[Future[int]] = []
        self._lock = threading.Lock()
        self._accs: dict[int, _Acc] = {}
        self.report = WriteReport(rank=self.rank, world_size=self.world_size)
        dist = _distributed() if self.world_size > 1 else None
        if dist is None or self.rank == 0:
            self._create(mode, attrs)
        if dist is not None:
            dist.barrier()  # the store exists before any rank opens it
        self._arrays = self._open()
        done = self._written()
        if dist is not None:
            dist.barrier()  # every rank has listed what is written before anyone writes
        sequence, owners = plan_inference(self.out, self.world_size, order.batch_size, done)
        self.sequence: ExplicitSequence = sequence
        self._owned = (owners == self.rank) & ~done
        self._expected = self.out.expected()
        self._out_axes = [self.out.dims.index(d) for d in self.dims]
        self._weights = self._window_weights()
        self._profiles = self._weight_profiles()
        self.report.chunks_total = self.out.n_chunks
        self.report.chunks_owned = int((owners == self.rank).sum())
        self.report.chunks_skipped = int(((owners == self.rank) & done).sum())
        self.report.uncovered = dict(zip(self.out.dims, self.out.uncovered(), strict=True))
        self.stream: Stream = like.with_order(
            OrderSpec(
                grid=grid,
                shuffle="none",
                seed=order.seed,
                batch_size=order.batch_size,
                shuffle_buffer=order.shuffle_buffer,
                sequence=sequence,
            )
        )
        self._t0 = t0
        self._error: BaseException | None = None

    # -- configuration ------------------------------------------------------------------
    def _output_dims(self, dims: Sequence[str] | None) -> tuple[str, ...]:
        grid = self.grid
        if dims is None:
            return grid.dims
        given = [dims] if isinstance(dims, str) else list(dims)
        for d in given:
            if d not in grid.dims:
                raise DimensionError(
                    f"dims names {d!r}, which is not a dim of the stream ({', '.join(grid.dims)})."
                )
        for axis in grid.axes:
            if axis.dim not in given and axis.count > 1:
                raise DimensionError(
                    f"dims leaves out {axis.dim!r}, but the stream has {axis.count} window "
                    f"positions along it, whose outputs would land on the same values. Keep "
                    f"{axis.dim!r} in dims, or window it whole (window={{{axis.dim!r}: None}})."
                )
        return tuple(d for d in grid.dims if d in given)

    def _chunks(self, chunks: Mapping[str, int] | None) -> dict[str, int]:
        grid = self.grid
        out: dict[str, int] = {}
        first = next(iter(self.like.source.variables.values()))
        for axis in grid.axes:
            if axis.dim not in self.dims:
                out[axis.dim] = max(1, axis.size)  # one chunk along dims left out
            elif chunks is not None and axis.dim in chunks:
                value = chunks[axis.dim]
                if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                    raise ConfigError(
                        f"chunks[{axis.dim!r}]={value!r} must be a whole number >= 1."
                    )
                out[axis.dim] = int(value)
            elif axis.dim in first.dims:
                out[axis.dim] = first.chunks[first.dims.index(axis.dim)]
        for d in chunks or {}:
            if d not in self.dims:
                raise DimensionError(f"chunks names {d!r}, which is not an output dim {self.dims}.")
        return out

    def _check_coverage(self) -> None:
        for dim, n in zip(self.out.dims, self.out.uncovered(), strict=True):
            if n and dim in self.dims and dim not in self._at:
                axis = self.grid.axis(dim)
                raise ConfigError(
                    f"the stream's windows leave {n} positions of {dim!r} without a prediction "
                    f"(window {axis.length}, stride {axis.stride}, edges={self.grid.edges!r}); "
                    "use edges='pad' and a stride no larger than the window."
                )

    def _axis_weights(self, axis: int) -> np.ndarray:
        length = self.out.lengths[axis]
        if self.blend == "taper" and length > 1:
            return taper(length)
        return np.ones(length, dtype=np.float64)

    def _window_weights(self) -> np.ndarray:
        """Weights of one window over the output dims (footprint shape): the outer
        product of one weight per position along each dim."""
        w = np.ones((), dtype=np.float64)
        for d in self.dims:
            w = np.multiply.outer(w, self._axis_weights(self.out.dims.index(d)))
        return np.asarray(w, dtype=np.float64)

    def _weight_profiles(self) -> list[np.ndarray]:
        """Per dim, the summed weight of every window at each position.

        Window weights are products over dims and windows a product of starts
        over dims, so the summed weight at a point is the product of these
        profiles: each chunk's normalization, computed once, not accumulated.
        """
        out = self.out
        profiles = []
        for a in range(len(out.dims)):
            w = self._axis_weights(a)
            total = np.zeros(out.sizes[a], dtype=np.float64)
            for j, value in enumerate(w.tolist()):
                pos = out.starts[a] + out.offsets[a] + j
                pos = pos[(pos >= 0) & (pos < out.sizes[a])]
                np.add.at(total, pos, value)
            profiles.append(total)
        return profiles

    # -- the store ------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "dims": list(self.dims),
            "shape": [self.out.sizes[self.out.dims.index(d)] for d in self.dims],
            "chunks": [self.out.chunks[self.out.dims.index(d)] for d in self.dims],
            "variables": list(self.variables),
            "dtype": self.dtype.str,
            "blend": self.blend,
            "at": dict(sorted(self._at.items())),
            "windows": [
                [a.dim, a.size, a.length, a.stride, a.count, a.origin] for a in self.grid.axes
            ],
        }

    def _create(self, mode: str, attrs: Mapping[str, Any] | None) -> None:
        import xarray as xr
        import zarr

        from ..sampling._time import is_time_axis

        exists = _group_exists(self.store)
        if not exists and not _empty(self.store):
            raise ConfigError(
                f"target {self.store} holds files but no Zarr group; write predictions to a new "
                "or empty location (nothing there is deleted)."
            )
        if exists and mode == "w-":
            raise ConfigError(f"target {self.store} exists (mode='w-'); use mode='a' to resume.")
        if exists and mode == "a":
            self._check_existing()
            return
        coords = {}
        for d in self.dims:
            values = self.like.coords.get(d)
            if values is not None:
                coords[d] = values
        ds = xr.Dataset(coords=coords, attrs=dict(attrs or {}))
        for d, values in coords.items():
            if not is_time_axis(values):
                ds[d].attrs.update(_coord_attrs(d))
        ds.to_zarr(self.store, mode="w", zarr_format=3, consolidated=False)
        group = zarr.open_group(self.store, mode="a", zarr_format=3)
        group.attrs[CONFIG_ATTR] = self._config()
        shape = tuple(self.out.sizes[self.out.dims.index(d)] for d in self.dims)
        chunks = tuple(self.out.chunks[self.out.dims.index(d)] for d in self.dims)
        for name, var_attrs in self.variables.items():
            if name in coords:
                raise ConfigError(f"output variable {name!r} clashes with a coordinate name.")
            group.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=self.dtype,
                fill_value=np.nan,
                dimension_names=self.dims,
                attributes=_json_attrs(var_attrs, name),
                config={"write_empty_chunks": True},
            )
        with warnings.catch_warnings():
            # consolidated metadata is an extension of Zarr v3 (xarray reads it: one request)
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            zarr.consolidate_metadata(self.store)

    def _check_existing(self) -> None:
        import zarr

        group = zarr.open_group(self.store, mode="r", zarr_format=3)
        saved = group.attrs.get(CONFIG_ATTR)
        mine = json.loads(json.dumps(self._config()))
        if saved != mine:
            differ = (
                [k for k in mine if not isinstance(saved, Mapping) or saved.get(k) != mine[k]]
                if isinstance(saved, Mapping)
                else ["(no earthstream prediction record)"]
            )
            raise ConfigError(
                f"target {self.store} holds another prediction store (differs in "
                f"{', '.join(differ)}); resume with the same stream, variables, dims, chunks, "
                "dtype and blend, or pass mode='w' to replace it."
            )

    def _open(self) -> dict[str, Any]:
        import zarr

        group = zarr.open_group(self.store, mode="r+", zarr_format=3, use_consolidated=False)
        return {name: group[name] for name in self.variables}

    def _written(self) -> np.ndarray:
        """Output chunks whose every variable's Zarr chunk is stored (written whole)."""
        from zarr.core.sync import sync

        async def listing(prefix: str) -> set[str]:
            return {key async for key in self.store.list_prefix(prefix)}

        done = np.ones(self.out.n_chunks, dtype=bool)
        out_axes = [self.out.dims.index(d) for d in self.dims]
        shape = self.out.shape
        for name, array in self._arrays.items():
            keys = sync(listing(f"{name}/"))
            present = np.zeros(self.out.n_chunks, dtype=bool)
            for c in range(self.out.n_chunks):
                index = np.unravel_index(c, shape)
                key = f"{name}/" + array.metadata.encode_chunk_key(
                    tuple(int(index[a]) for a in out_axes)
                )
                present[c] = key in keys
            done &= present
        return done

    # -- writing --------------------------------------------------------------------------
    def _split_outputs(self, outputs: Any, n: int) -> dict[str, np.ndarray]:
        names = list(self.variables)
        sample = tuple(
            self.out.lengths[self.out.dims.index(d)]
            for d in self.dims
            if not self.grid.axis(d).squeeze and d not in self._at
        )
        if isinstance(outputs, Mapping):
            missing = [k for k in names if k not in outputs]
            if missing:
                raise ConfigError(
                    f"outputs lack {missing}; the writer writes {names}. Pass a mapping with "
                    "those names, or one array (B, C, ...) with C = len(variables)."
                )
            arrays = {k: _numpy(outputs[k]) for k in names}
        else:
            array = _numpy(outputs)
            if array.shape == (n, *sample) and len(names) == 1:
                arrays = {names[0]: array}
            elif array.shape == (n, len(names), *sample):
                arrays = {k: array[:, i] for i, k in enumerate(names)}
            else:
                raise ConfigError(
                    f"outputs of shape {array.shape}: the writer expects ({n}, {len(names)}, "
                    f"{', '.join(map(str, sample))}) for variables {names} over dims "
                    f"{self.dims} (or a mapping name -> ({n}, {', '.join(map(str, sample))}))."
                )
        for k, a in arrays.items():
            if a.shape != (n, *sample):
                raise ConfigError(
                    f"output {k!r} has shape {a.shape}; expected ({n}, "
                    f"{', '.join(map(str, sample))}) (samples, then the window over {self.dims})."
                )
        return arrays

    def write(self, batch: Any, outputs: Any) -> None:
        """Add one batch's model outputs; chunks that become complete are written.

        ``batch`` is the :class:`~earthstream.Batch` (or ``TorchBatch``) of
        :attr:`stream` the outputs belong to; ``outputs`` a mapping name ->
        ``(B, *window)`` or one ``(B, C, *window)`` array / tensor (window over
        the output dims, iterated dims squeezed).  Padded samples are ignored.
        """
        self._raise_failed()
        padded = _numpy(batch.padded).astype(bool)
        n = len(padded)
        self.report.batches += 1
        if padded.all():
            self.report.padded_batches += 1
            return
        arrays = self._split_outputs(outputs, n)
        out = self.out
        # footprints of every sample, in output positions, and the chunks they touch
        lo = (
            np.stack(
                [
                    _numpy(batch.starts[d]).astype(np.int64) + out.offsets[a]
                    for a, d in enumerate(out.dims)
                ],
                axis=1,
            )
            if out.dims
            else np.zeros((n, 0), np.int64)
        )
        sizes, chunks = np.asarray(out.sizes), np.asarray(out.chunks)
        hi = np.minimum(lo + np.asarray(out.lengths), sizes)
        c_lo = np.maximum(lo, 0) // chunks
        c_hi = (hi - 1) // chunks + 1
        weights = self._weights
        if self.blend == "mean":  # added into the float64 sums as they are
            weighted = {k: a.reshape((n, *weights.shape)) for k, a in arrays.items()}
        else:  # weight * value in float64, one vectorized pass per variable
            weighted = {k: weights * a.reshape((n, *weights.shape)) for k, a in arrays.items()}
        shape = out.shape
        live = np.flatnonzero(~padded)
        self.report.windows += len(live)
        # most windows lie in one chunk: grouped by chunk, added in one tight loop each
        one = (c_hi[live] - c_lo[live] == 1).all(axis=1)
        single, several = live[one], live[~one]
        if len(single):
            cids = (
                np.ravel_multi_index(tuple(c_lo[single].T), shape)
                if shape
                else np.zeros(len(single), np.int64)
            )
            order = np.argsort(cids, kind="stable")
            cids, single = cids[order], single[order]
            bounds = np.flatnonzero(np.diff(cids)) + 1
            for members in np.split(np.arange(len(single)), bounds):
                c = int(cids[members[0]])
                if self._owned[c]:  # else another rank's chunk, or written by an earlier run
                    self._add(c, single[members], lo, hi, weighted)
        for i in several.tolist():
            spans = [range(a, b) for a, b in zip(c_lo[i].tolist(), c_hi[i].tolist(), strict=True)]
            for chunk_index in itertools.product(*spans):
                c = int(np.ravel_multi_index(chunk_index, shape)) if shape else 0
                if self._owned[c]:
                    self._add(c, np.array([i]), lo, hi, weighted)
        self.report.elapsed_s = time.perf_counter() - self._t0

    def _add(
        self,
        c: int,
        members: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        weighted: Mapping[str, np.ndarray],
    ) -> None:
        """Add samples ``members`` (footprints ``lo``/``hi``) to chunk ``c``'s sums."""
        acc = self._accs.get(c)
        if acc is None:
            region = self.out.region(c)
            acc = self._accs[c] = _Acc(region, self._out_axes, list(self.variables))
            held = sum(a.nbytes for a in self._accs.values())
            self.report.peak_accumulator_bytes = max(self.report.peak_accumulator_bytes, held)
        axes = self._out_axes
        origin = acc.origin
        stops = [acc.stop[a] for a in axes]
        pairs = [(acc.sums[k], v) for k, v in weighted.items()]
        los, his = lo[members][:, axes].tolist(), hi[members][:, axes].tolist()
        for i, low, high in zip(members.tolist(), los, his, strict=True):
            src, dst = [], []
            for lj, hj, o, st in zip(low, high, origin, stops, strict=True):
                a = lj if lj > o else o
                b = hj if hj < st else st
                src.append(slice(a - lj, b - lj))
                dst.append(slice(a - o, b - o))
            s, d = tuple(src), tuple(dst)
            for total, v in pairs:
                total[d] += v[i][s]
        acc.count += len(members)
        if acc.count == self._expected[c]:
            del self._accs[c]
            self._finish(c, acc, acc.region)

    def _finish(self, c: int, acc: _Acc, region: tuple[slice, ...]) -> None:
        out_region = tuple(region[a] for a in self._out_axes)
        weight = np.ones((), dtype=np.float64)
        for a, r in zip(self._out_axes, out_region, strict=True):
            weight = np.multiply.outer(weight, self._profiles[a][r])
        blocks = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, total in acc.sums.items():
                np.divide(total, weight, out=total)  # 0 / 0: NaN where no window writes
                blocks[name] = total.astype(self.dtype)
        self._owned[c] = False
        self._futures.append(self._writes.submit(self._store_chunk, out_region, blocks))
        if len(self._futures) > 64:
            self._drain(32)

    def _store_chunk(self, region: tuple[slice, ...], blocks: Mapping[str, np.ndarray]) -> int:
        nbytes = 0
        for name, block in blocks.items():
            self._arrays[name][region] = block
            nbytes += block.nbytes
        with self._lock:
            self.report.chunks_written += 1
            self.report.bytes_written += nbytes
        return nbytes

    def _drain(self, keep: int = 0) -> None:
        while len(self._futures) > keep:
            future = self._futures.pop(0)
            try:
                future.result()
            except BaseException as exc:  # surfaced on the next write or close
                self._error = exc
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- ending ---------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Whether every chunk this rank owns is written."""
        return not self._owned.any() and not self._accs

    def close(self) -> WriteReport:
        """Wait for the chunks being written; returns the report.

        Chunks whose windows did not all arrive (an interrupted run) are not
        written: a new writer on the same store computes them again.
        """
        try:
            self._drain()
        finally:
            self._writes.shutdown(wait=True)
        self._accs.clear()
        self.report.elapsed_s = time.perf_counter() - self._t0
        return self.report

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<PredictionWriter {list(self.variables)} over {self.dims}, blend={self.blend!r}; "
            f"{self.out.n_chunks} chunks {self.out.chunks}; rank {self.rank} of "
            f"{self.world_size}: {int(self._owned.sum())} chunks to write, "
            f"{len(self.sequence.runs[self.rank]):,} windows in {self.sequence.steps} batches>"
        )


def _group_exists(store: Any) -> bool:
    from zarr.core.sync import sync

    return bool(sync(store.exists("zarr.json")))


def _empty(store: Any) -> bool:
    from zarr.core.sync import sync

    async def first() -> bool:
        async for _ in store.list():
            return False
        return True

    return bool(sync(first()))


def _coord_attrs(dim: str) -> dict[str, str]:
    if dim in ("lat", "latitude"):
        return {"units": "degrees_north", "standard_name": "latitude"}
    if dim in ("lon", "longitude"):
        return {"units": "degrees_east", "standard_name": "longitude"}
    return {}


def _json_attrs(attrs: Mapping[str, Any], name: str) -> dict[str, Any]:
    bad = [k for k in attrs if k in ("scale_factor", "add_offset", "_FillValue", "missing_value")]
    if bad:
        raise ConfigError(
            f"attributes {bad} of output {name!r} would make readers unpack the values; the "
            "writer stores plain floats (NaN for no data). Leave them out."
        )
    try:
        return dict(json.loads(json.dumps(dict(attrs))))
    except TypeError as exc:
        raise ConfigError(f"attributes of output {name!r} must be JSON values: {exc}") from None
