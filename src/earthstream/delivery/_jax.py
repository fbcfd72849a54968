"""JAX delivery: batches as ``jax.Array``s on a device or with a sharding, transferred ahead.

A :class:`JaxStream` wraps any stream with the public stream API (iteration
yielding :class:`~earthstream.Batch`, ``len``, ``set_epoch``, ``state_dict`` /
``load_state_dict``, ``placement``).  It places every batch with
``jax.device_put`` (or, for a sharding that spans several processes,
``jax.make_array_from_process_local_data``) ``prefetch`` batches ahead of the
one the training step is using: JAX transfers asynchronously, so while the step
runs on batch ``k`` the transfer of batch ``k + 1`` is already under way.

On CPU, ``jax.device_put`` aliases a NumPy buffer instead of copying it when the
buffer is 64-byte aligned (jaxlib's rule; checked with ``unsafe_buffer_pointer``
and counted in :attr:`JaxStream.transfers`).  The engine allocates ``stack=True``
batches 64-byte aligned, so they reach a CPU device without a copy; per-variable
arrays come out of NumPy's gather with NumPy's own alignment and are copied once.
Other devices always receive a copy (the host-to-device transfer).

Resume counts the batches handed to the caller, not those transferred ahead:
:meth:`JaxStream.state_dict` is the stream's state right after the last batch
the loop received.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from .._batch import Batch
from ..errors import ConfigError

if TYPE_CHECKING:
    from .._sharding import ShardedStream
    from ..engine import EpochReport

__all__ = ["JaxBatch", "JaxStream"]


@dataclass(frozen=True, eq=False)
class JaxBatch(Mapping[str, jax.Array]):
    """A batch on the device: ``batch[name]`` -> ``jax.Array`` ``(B, *window dims)``.

    ``arrays`` holds the data variables (a plain dict, ready for a jitted
    step); with ``stack=True`` the variables are in ``stacked`` ``(B, C,
    *window)`` (channel names in ``channels``) and ``arrays`` holds only what
    is not stacked (encodings, forecast targets).  ``padded`` (bool ``(B,)``)
    and ``mask`` are on the device too, with the same batch sharding, to weight
    the loss inside the step.  Provenance stays on the host in ``host`` (the
    NumPy :class:`~earthstream.Batch`): ``window_ids``, ``starts``, ``coords``,
    ``epoch``, ``index``.
    """

    arrays: Mapping[str, jax.Array]
    padded: jax.Array
    host: Batch
    stacked: jax.Array | None = None
    mask: jax.Array | None = None
    stacked_names: tuple[str, ...] = field(default=())

    def __getitem__(self, name: str) -> jax.Array:
        try:
            return self.arrays[name]
        except KeyError:
            if name in self.stacked_names:
                raise KeyError(
                    f"{name!r} is a channel block of batch.stacked (stack=True), which is what "
                    f"goes to the device; its channels: {list(self.host.channels)}."
                ) from None
            raise

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def size(self) -> int:
        """Samples in this process's part of the batch."""
        return self.host.size

    @property
    def window_ids(self) -> np.ndarray:
        return self.host.window_ids

    @property
    def starts(self) -> Mapping[str, np.ndarray]:
        return self.host.starts

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        return self.host.coords

    @property
    def channels(self) -> tuple[str, ...]:
        return self.host.channels

    @property
    def epoch(self) -> int:
        return self.host.epoch

    @property
    def index(self) -> int:
        return self.host.index

    def __repr__(self) -> str:
        if self.stacked is not None:
            body = f"stacked={tuple(self.stacked.shape)} channels={list(self.channels)}"
        else:
            body = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in self.arrays.items())
        return (
            f"<JaxBatch epoch={self.epoch} index={self.index} size={self.size} {body} "
            f"sharding={_describe(self.padded.sharding)}>"
        )


def _describe(sharding: Sharding) -> str:
    if isinstance(sharding, SingleDeviceSharding):
        return str(next(iter(sharding.device_set)))
    if isinstance(sharding, NamedSharding):
        return f"NamedSharding({dict(sharding.mesh.shape)}, {sharding.spec})"
    return type(sharding).__name__


def _as_sharding(placement: Any) -> Sharding:
    if placement is None:
        return SingleDeviceSharding(jax.local_devices()[0])
    if isinstance(placement, Sharding):
        return placement
    if isinstance(placement, jax.Device):
        return SingleDeviceSharding(placement)
    raise ConfigError(
        f"to_jax(placement={type(placement).__name__}): pass a jax.Device (e.g. "
        "jax.devices()[0]), a jax.sharding.Sharding (e.g. NamedSharding(mesh, "
        "PartitionSpec('data')) to split each batch over the mesh's 'data' axis), or None "
        "for the first local device."
    )


def _batch_parts(sharding: Sharding) -> int | None:
    """Into how many pieces the sharding cuts the batch axis, when that is knowable."""
    if isinstance(sharding, SingleDeviceSharding):
        return 1
    if isinstance(sharding, NamedSharding):
        spec = tuple(sharding.spec)
        first = spec[0] if spec else None
        if first is None:
            return 1
        names = first if isinstance(first, tuple) else (first,)
        shape = dict(sharding.mesh.shape)
        return int(np.prod([shape[n] for n in names], dtype=np.int64))
    return None


class JaxStream:
    """A stream delivering :class:`JaxBatch`es placed with a device or sharding.

    Iterating it yields this process's batches of the current epoch (the
    stream's ``rank`` of ``world_size``, under a multi-process JAX job
    ``jax.process_index()`` of ``jax.process_count()``), each already on its
    device(s), ``prefetch`` batches transferred ahead of the caller.  Call
    :meth:`set_epoch` before each epoch; :meth:`state_dict` /
    :meth:`load_state_dict` resume mid-epoch exactly where the loop stopped.

    Parameters
    ----------
    stream
        An :class:`earthstream.Stream` (or any stream of the same API).
    placement
        A ``jax.Device``, a ``jax.sharding.Sharding``, or None (the first local
        device).  A ``NamedSharding`` applies to every delivered array: its
        first ``PartitionSpec`` entry shards the batch axis, entries past an
        array's rank are dropped (so ``padded`` ``(B,)`` follows the batch
        axis).  A sharding that spans several processes assembles one global
        batch of every process's local batch
        (``jax.make_array_from_process_local_data``).
    prefetch
        Batches transferred ahead of the one the caller holds (2: double buffering).

    Examples
    --------
    >>> import earthstream as es, jax
    >>> path = es.datasets.era5_like(tmp_path / "j.zarr", n_times=8, n_lat=16, n_lon=32)
    >>> stream = es.Stream(path, {"lat": 8, "lon": 8}, variables="t2m", batch_size=16)
    >>> batches = stream.to_jax(jax.devices("cpu")[0])
    >>> batch = next(iter(batches))
    >>> type(batch["t2m"]).__name__, batch["t2m"].shape, batch.window_ids.shape
    ('ArrayImpl', (16, 8, 8), (16,))
    """

    def __init__(self, stream: ShardedStream, placement: Any = None, *, prefetch: int = 2) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch={prefetch!r} must be a whole number >= 1.")
        self.stream = stream
        self.prefetch = prefetch
        self.sharding = _as_sharding(placement)
        self._global = not self.sharding.is_fully_addressable
        self._check_processes()
        self._check_batch_axis()
        self._by_ndim: dict[int, Sharding] = {}
        self._cpu = all(getattr(d, "platform", "") == "cpu" for d in self.sharding.device_set)
        self._state: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._transfers = {"arrays": 0, "aliased": 0, "copied": 0, "bytes_copied": 0}

    # -- placement checks ---------------------------------------------------------------
    def _check_processes(self) -> None:
        count, index = jax.process_count(), jax.process_index()
        rank, world = self.stream.placement()
        if count > 1 and (rank, world) != (index, count):
            raise ConfigError(
                f"this JAX job has {count} processes (this is process {index}), but the stream "
                f"serves rank {rank} of {world}. Each process must stream its own part: build "
                "the stream after jax.distributed.initialize() without rank=/world_size= (they "
                f"are then taken from JAX), or pass rank={index}, world_size={count}."
            )
        if self._global and count == 1:  # pragma: no cover - a sharding JAX cannot address
            raise ConfigError("the sharding spans devices this process cannot address.")

    def _check_batch_axis(self) -> None:
        parts = _batch_parts(self.sharding)
        if parts is None or parts == 1:
            return
        order = self.stream.order
        local_parts = max(1, parts // jax.process_count() if self._global else parts)
        b = order.batch_size
        if b % local_parts:
            raise ConfigError(
                f"the sharding splits the batch axis into {parts} parts ({local_parts} on this "
                f"process's devices), which batch_size={b} does not divide. Use a batch_size "
                f"that is a multiple of {local_parts}."
            )
        last = order.n_windows % b
        if last and not order.drop_last:
            raise ConfigError(
                f"the sharding splits the batch axis into {parts} parts, but the epoch's last "
                f"batch holds {last} of {b} samples ({order.n_windows} windows), which does not "
                "split alike. Pass drop_last=True to the stream (or a batch_size dividing the "
                "number of windows)."
            )

    def _sharding_for(self, ndim: int) -> Sharding:
        found = self._by_ndim.get(ndim)
        if found is None:
            found = self.sharding
            if isinstance(found, NamedSharding) and len(tuple(found.spec)) > ndim:
                found = NamedSharding(found.mesh, PartitionSpec(*tuple(found.spec)[:ndim]))
            self._by_ndim[ndim] = found
        return found

    # -- the stream's API ---------------------------------------------------------------
    def __len__(self) -> int:
        """Batches this process yields per epoch (every process the same number)."""
        return len(self.stream)

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        """See :meth:`earthstream.Stream.set_epoch`; call it before each epoch."""
        self.stream.set_epoch(epoch)
        self._state = None

    def state_dict(self) -> dict[str, Any]:
        """The stream state after the last batch this iterator handed out (batches
        transferred ahead are not counted), as :meth:`earthstream.Stream.state_dict`."""
        if self._state is not None:
            return dict(self._state)
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the epoch ``state`` describes on the next iteration."""
        self.stream.load_state_dict(state)
        self._state = None

    @property
    def report(self) -> EpochReport | None:
        """The stream's report of the last (or current) pass."""
        report: EpochReport | None = getattr(self.stream, "report", None)
        return report

    @property
    def transfers(self) -> dict[str, int]:
        """Arrays placed so far: ``aliased`` (the device buffer is the NumPy buffer,
        checked on CPU devices) and ``copied`` (with their bytes)."""
        with self._lock:
            return dict(self._transfers)

    # -- delivery -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[JaxBatch]:
        self._state = None
        source = iter(self.stream)
        ahead: deque[tuple[JaxBatch, dict[str, Any]]] = deque()

        def enqueue(n: int) -> None:
            for _ in range(n):
                host = next(source, None)
                if host is None:
                    return
                # the stream's state counts this batch as consumed: keep it with the batch
                ahead.append((self.put(host), self.stream.state_dict()))

        enqueue(self.prefetch)
        while ahead:
            batch, state = ahead.popleft()
            enqueue(1)  # transfer the next batch while the caller's step runs on this one
            self._state = state
            yield batch
        self._state = None  # every batch handed out: the stream's own state is the truth

    def put(self, batch: Batch) -> JaxBatch:
        """Place one NumPy batch on the device(s) (asynchronously, as JAX transfers)."""
        stacked = None
        names: list[str] = []
        arrays: dict[str, jax.Array] = {}
        if batch.stacked is not None:
            stacked = self._place("stacked", batch.stacked)
        for name, values in batch.items():
            if batch.stacked is not None and np.may_share_memory(values, batch.stacked):
                names.append(name)  # a view into the stacked array, already on its way
                continue
            arrays[name] = self._place(name, values)
        mask = None if batch.mask is None else self._place("mask", batch.mask)
        return JaxBatch(
            arrays=arrays,
            padded=self._place("padded", batch.padded),
            host=batch,
            stacked=stacked,
            mask=mask,
            stacked_names=tuple(names),
        )

    def _place(self, name: str, values: np.ndarray) -> jax.Array:
        _check_dtype(name, values)
        sharding = self._sharding_for(values.ndim)
        out: jax.Array
        if self._global:
            out = jax.make_array_from_process_local_data(sharding, values)
        else:
            out = jax.device_put(values, sharding)
        self._count(values, out)
        return out

    def _count(self, values: np.ndarray, out: jax.Array) -> None:
        aliased = False
        if self._cpu and values.nbytes:
            lo = values.__array_interface__["data"][0]
            hi = lo + values.nbytes
            aliased = all(
                lo <= shard.data.unsafe_buffer_pointer() < hi for shard in out.addressable_shards
            )
        with self._lock:
            self._transfers["arrays"] += 1
            if aliased:
                self._transfers["aliased"] += 1
            else:
                self._transfers["copied"] += 1
                self._transfers["bytes_copied"] += int(values.nbytes)

    def __repr__(self) -> str:
        return (
            f"<JaxStream {len(self)} batches per epoch on {_describe(self.sharding)}, "
            f"prefetch={self.prefetch}; {self.stream!r}>"
        )


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def _check_dtype(name: str, values: np.ndarray) -> None:
    """Refuse what ``jax.device_put`` would change silently."""
    kind = values.dtype.kind
    if kind in "MmOSUV":
        raise ConfigError(
            f"{name!r} has dtype {values.dtype}, which JAX cannot hold; stream numeric variables."
        )
    if values.dtype.itemsize == 8 and kind in "fiu" and not _x64():
        raise ConfigError(
            f"{name!r} is {values.dtype}, but JAX runs with 64-bit types disabled and would "
            "silently turn it into a 32-bit array. Stream 32-bit values (e.g. "
            "decoded_dtype='float32', the default of open_zarr) or enable 64-bit JAX "
            "(jax.config.update('jax_enable_x64', True))."
        )
    if values.dtype.itemsize == 16 and kind == "c" and not _x64():
        raise ConfigError(
            f"{name!r} is {values.dtype}; enable 64-bit JAX (jax_enable_x64) to keep it."
        )
