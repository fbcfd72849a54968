"""Batches as PyTorch tensors: :class:`TorchBatch`, made from a :class:`~earthstream.Batch`
without a copy (``torch.from_numpy``), its stacked views kept as views."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data._utils.collate import default_collate_fn_map

from .._batch import Batch
from .._records import Record, record_of
from ..engine import StreamLayout
from ..errors import ConfigError

__all__ = ["TorchBatch", "batch_views", "to_tensor"]


def to_tensor(array: np.ndarray) -> torch.Tensor | np.ndarray:
    """Zero-copy tensor of a NumPy array; datetimes become int64 nanoseconds.

    Arrays torch cannot hold (strings, objects) are returned unchanged.
    """
    if array.dtype.kind == "M":
        array = array.astype("datetime64[ns]").view(np.int64)
    elif array.dtype.kind == "m":
        array = array.astype("timedelta64[ns]").view(np.int64)
    elif array.dtype.kind in "OSUV" or not array.dtype.isnative:
        return array
    return torch.from_numpy(array)


@dataclass(frozen=True)
class _View:
    """How to cut one variable out of a stacked ``(B, C, *common)`` tensor."""

    start: int
    stop: int
    shape: tuple[int, ...]
    perm: tuple[int, ...]

    def __call__(self, stacked: torch.Tensor) -> torch.Tensor:
        block = stacked[:, self.start : self.stop]
        return block.reshape(stacked.shape[0], *self.shape).permute(0, *self.perm)


@dataclass(frozen=True)
class _Strided:
    """A view of the stacked tensor: shape, strides and offset in elements (any view
    NumPy made of the stacked array, e.g. a forecast's input steps of one variable)."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int

    def __call__(self, stacked: torch.Tensor) -> torch.Tensor:
        return stacked.as_strided(self.shape, self.strides, stacked.storage_offset() + self.offset)

    @classmethod
    def of(cls, view: np.ndarray, stacked: np.ndarray) -> _Strided | None:
        """``view`` as a view of the C-contiguous ``stacked``, or None if it is not one."""
        if view.dtype != stacked.dtype or not stacked.flags.c_contiguous:
            return None
        item = stacked.itemsize
        offset = view.__array_interface__["data"][0] - stacked.__array_interface__["data"][0]
        if offset < 0 or offset >= max(stacked.nbytes, 1) or offset % item:
            return None
        if any(s % item for s in view.strides) or any(s < 0 for s in view.strides):
            return None
        last = offset + sum((n - 1) * s for n, s in zip(view.shape, view.strides, strict=True))
        if view.size and last + item > stacked.nbytes:  # not inside the stacked array
            return None
        return cls(view.shape, tuple(s // item for s in view.strides), offset // item)


@dataclass(frozen=True, eq=False)
class TorchBatch:
    """A batch as tensors: ``batch[name]`` -> tensor ``(B, *window dims)``.

    Carries the same fields as :class:`earthstream.Batch`; ``padded`` (bool,
    ``(B,)``) marks samples repeated to even out ranks.  ``coords`` holding
    datetimes are int64 nanoseconds since 1970 (``coords_dtype`` keeps the
    original dtype so they can be turned back with ``.numpy().view(dtype)``).
    With ``stack=True`` only ``stacked`` is stored; ``batch[name]`` is a view.
    """

    tensors: Mapping[str, torch.Tensor]
    starts: Mapping[str, torch.Tensor]
    coords: Mapping[str, Any]
    window_ids: torch.Tensor
    epoch: int
    index: int
    dims: Mapping[str, tuple[str, ...]]
    padded: torch.Tensor
    mask: torch.Tensor | None = None
    mask_dims: tuple[str, ...] = ()
    stacked: torch.Tensor | None = None
    channels: tuple[str, ...] = ()
    views: Mapping[str, _View | _Strided] = field(default_factory=dict)
    coords_dtype: Mapping[str, np.dtype[Any]] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_batch(cls, batch: Batch, views: Mapping[str, _View] | None = None) -> TorchBatch:
        stacked = None if batch.stacked is None else torch.from_numpy(batch.stacked)
        # with stack=True the variables (and a forecast's input and target steps of
        # them) are views of `stacked`, kept as views of it through pinning and device
        # moves; other entries (encodings) stay.  No copy here.
        found: dict[str, _View | _Strided] = {}
        if batch.stacked is not None:
            for k, v in batch.items():
                strided = _Strided.of(v, batch.stacked)
                if strided is not None:  # else a copy (unevenly spaced steps): a tensor
                    found[k] = strided
        tensors = {k: torch.from_numpy(v) for k, v in batch.items() if k not in found}
        return cls(
            tensors=tensors,
            starts={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.starts.items()},
            coords={k: to_tensor(np.ascontiguousarray(v)) for k, v in batch.coords.items()},
            window_ids=torch.from_numpy(np.ascontiguousarray(batch.window_ids)),
            epoch=batch.epoch,
            index=batch.index,
            dims=dict(batch.dims),
            padded=torch.from_numpy(batch.padded),
            mask=None if batch.mask is None else torch.from_numpy(batch.mask),
            mask_dims=batch.mask_dims,
            stacked=stacked,
            channels=batch.channels,
            views=found,
            coords_dtype={k: v.dtype for k, v in batch.coords.items()},
            attrs=dict(batch.attrs),
        )

    # -- mapping-like access ----------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        if self.stacked is not None and name in self.views:
            return self.views[name](self.stacked)
        return self.tensors[name]

    def keys(self) -> list[str]:
        return list(self.dims)

    def record(self, name: str) -> Record:
        """Modality ``name`` of a multi-modal batch (see :meth:`earthstream.Batch.record`)."""
        return record_of(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.dims)

    def __contains__(self, name: object) -> bool:
        return name in self.dims

    @property
    def size(self) -> int:
        return int(self.window_ids.shape[0])

    # -- memory placement ---------------------------------------------------------------
    def _map(self, fn: Any) -> TorchBatch:
        def each(values: Mapping[str, Any]) -> dict[str, Any]:
            return {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()}

        return replace(
            self,
            tensors=each(self.tensors),
            starts=each(self.starts),
            coords=each(self.coords),
            window_ids=fn(self.window_ids),
            padded=fn(self.padded),
            mask=None if self.mask is None else fn(self.mask),
            stacked=None if self.stacked is None else fn(self.stacked),
        )

    def pin_memory(self) -> TorchBatch:
        """The batch in page-locked memory for fast host-to-GPU transfer (called by
        ``DataLoader``): tensors already there (built in pinned memory by the engine)
        stay as they are, the others are copied."""
        return self._map(lambda t: t if t.is_pinned() else t.pin_memory())

    def to(self, device: str | torch.device, non_blocking: bool = False) -> TorchBatch:
        """The batch on ``device``; tensors already there are not copied."""
        device = torch.device(device)
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def __repr__(self) -> str:
        if self.stacked is not None:
            body = f"stacked={tuple(self.stacked.shape)} channels={list(self.channels)}"
        else:
            body = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.tensors.items())
        device = (self.stacked if self.stacked is not None else self.window_ids).device
        pad = int(self.padded.sum())
        head = f"<TorchBatch epoch={self.epoch} index={self.index} size={self.size}"
        head += f" padded={pad}" if pad else ""
        return f"{head} {body} on {device}>"


def batch_views(layout: StreamLayout | None) -> dict[str, _View]:
    """How to cut each variable out of the stacked tensor of a window-grid stream's batches
    (``{}`` when not stacking, or for streams without a window layout)."""
    if layout is None or not layout.stack:
        return {}
    views = {}
    for v in layout.variables:
        extra = [d for d in v.sample_dims if d not in layout.common_dims]
        order = extra + list(layout.common_dims)
        views[v.name] = _View(
            start=v.channel_start,
            stop=v.channel_start + v.n_channels,
            shape=tuple(layout.grid.axis(d).length for d in order),
            perm=tuple(1 + order.index(d) for d in v.sample_dims),
        )
    return views


def _refuse_collation(batch: Any, *, collate_fn_map: Any = None) -> Any:
    """``DataLoader(ds, batch_size=k)`` would batch the stream's batches again."""
    raise ConfigError(
        f"DataLoader(dataset, batch_size={len(batch)}) tried to collate {len(batch)} "
        "earthstream batches into one: the stream makes the batches itself "
        "(es.Stream(..., batch_size=k)). Pass batch_size=None to the DataLoader, or use "
        "ds.loader(num_workers=...), which does, keeps the epoch in the main process and "
        "moves batches to the device."
    )


# torch's documented extension point for default_collate: a TorchBatch is never collated
default_collate_fn_map[TorchBatch] = _refuse_collation
