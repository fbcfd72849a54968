"""The unit a stream delivers: a batch of windows with their provenance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from ._records import Record, record_of

__all__ = ["Batch"]


@dataclass(frozen=True, eq=False)
class Batch(Mapping[str, np.ndarray]):
    """A batch of samples: variable name -> array of shape ``(B, *window dims)``.

    The window dims of each variable keep the order they have in the source;
    iterated dims are squeezed out.  Besides the data a batch says where every
    sample comes from:

    ``starts[dim]``
        For every dim of the stream, the integer start index of each sample
        (arrays of length ``B``).
    ``coords[dim]``
        The coordinate value at each sample's start, for dims with a 1-D
        coordinate (e.g. the sample's timestamp and its lat/lon origin).
    ``mask``
        With ``edges="pad"``: boolean ``(B, *window)`` over ``mask_dims``, True
        where the sample holds data, False where it was padded.  ``None``
        otherwise.
    ``stacked`` / ``channels``
        With ``stack=True``: one ``(B, C, *window)`` array and the name of each
        channel; ``batch[name]`` is then a view into it.
    ``padded``
        Boolean ``(B,)``: True for samples that repeat others only so that every
        distributed rank yields the same number of batches
        (``remainder="pad"``).  Weight them out of the loss
        (``loss[~batch.padded].mean()``) to count each window once per epoch.

    ``len(batch)`` is the number of variables (a batch is a mapping); the
    number of samples is :attr:`size`.
    """

    data: Mapping[str, np.ndarray]
    dims: Mapping[str, tuple[str, ...]]
    starts: Mapping[str, np.ndarray]
    coords: Mapping[str, np.ndarray]
    window_ids: np.ndarray
    epoch: int
    index: int
    mask: np.ndarray | None = None
    mask_dims: tuple[str, ...] = ()
    stacked: np.ndarray | None = None
    channels: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)
    padded: np.ndarray = None  # type: ignore[assignment]  # set in __post_init__

    def __post_init__(self) -> None:
        if cast(Any, self.padded) is None:
            object.__setattr__(self, "padded", np.zeros(len(self.window_ids), dtype=bool))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def mask_for(self, name: str) -> np.ndarray | None:
        """The validity mask in the sample layout of variable ``name``.

        ``(B, *sample dims of name)``; dims of the mask the variable lacks (dims
        windowed whole) are reduced.  ``None`` when the stream does not pad.
        """
        if self.mask is None:
            return None
        dims = self.dims[name]
        lacking = tuple(1 + i for i, d in enumerate(self.mask_dims) if d not in dims)
        mask = np.asarray(self.mask.all(axis=lacking)) if lacking else self.mask
        kept = [d for d in self.mask_dims if d in dims]
        return np.transpose(mask, (0, *[1 + kept.index(d) for d in dims]))

    def record(self, name: str) -> Record:
        """Modality ``name`` of a :class:`~earthstream.MultiStream` batch, as a
        :class:`~earthstream.multimodal.Record` (data, layout, channels, metadata)."""
        return record_of(self, name)

    @property
    def size(self) -> int:
        """Number of samples in the batch."""
        return len(self.window_ids)

    @property
    def nbytes(self) -> int:
        """Bytes of the delivered data arrays (and mask)."""
        if self.stacked is not None:
            total = self.stacked.nbytes
        else:
            total = sum(a.nbytes for a in self.data.values())
        return total + (self.mask.nbytes if self.mask is not None else 0)

    def __repr__(self) -> str:
        if self.stacked is not None:
            body = (
                f"stacked={self.stacked.shape} {self.stacked.dtype} channels={list(self.channels)}"
            )
        else:
            body = ", ".join(f"{k}: {v.shape} {v.dtype}" for k, v in self.data.items())
        pad = f" padded={int(self.padded.sum())}" if self.padded.any() else ""
        return f"<Batch epoch={self.epoch} index={self.index} size={self.size}{pad} {body}>"
