"""What a multi-modal batch says about each of its modalities: records and their descriptions.

A record is a view of a batch's entries: ``batch[name]`` (the data),
``batch[name + "/present"]``, ``batch[name + "/mask"]`` and the per-sample
provenance ``batch.coords[name + "/..."]``, with the static
:class:`RecordInfo` a multi-modal stream puts in ``batch.attrs["modalities"]``.
Part of the batch's vocabulary (the bottom floor): :meth:`earthstream.Batch.record`
and the torch batch read it without importing the stream kinds that make it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Record", "RecordInfo", "record_of"]


@dataclass(frozen=True)
class RecordInfo:
    """The static description of one modality's records (the same for every sample).

    ``layout`` names the sample axes (``"CHW"``, ``"CTHW"``, ``"VLHW"`` ...);
    ``channels`` the entries of the first axis.  Wavelengths (micrometres) and
    GSD (metres) are given where the source says them.
    """

    name: str
    kind: str  # "gridded" or "raster"
    layout: str
    dims: tuple[str, ...]
    channels: tuple[str, ...]
    shape: tuple[int, ...]
    source: str
    crs: str | None = None
    resolution: tuple[float, float] | None = None
    wavelengths: tuple[float | None, ...] | None = None
    gsd: tuple[float | None, ...] | None = None
    static: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Record:
    """One modality of a batch: ``data (B, *layout)`` with its description.

    ``present`` (``(B,)`` bool) is False for samples the modality had no data
    for (``missing="zero"``); ``mask`` (where given) is True on valid pixels.
    ``meta`` holds the per-sample provenance arrays (e.g. ``transform``,
    ``time``).
    """

    info: RecordInfo
    data: Any
    present: Any
    mask: Any = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        return self.info.layout

    @property
    def channels(self) -> tuple[str, ...]:
        return self.info.channels


def record_of(batch: Any, name: str) -> Record:
    """The :class:`Record` of modality ``name`` in a batch (NumPy or torch)."""
    infos: Mapping[str, RecordInfo] = batch.attrs.get("modalities", {})
    if name not in infos:
        raise KeyError(f"no modality {name!r} in this batch; modalities: {', '.join(infos)}")
    prefix = name + "/"
    data = batch[name]
    present = _entry(batch, prefix + "present")
    if present is None:
        present = np.ones(len(data), dtype=bool)
    mask = _entry(batch, prefix + "mask")
    meta = {k[len(prefix) :]: v for k, v in batch.coords.items() if k.startswith(prefix)}
    return Record(info=infos[name], data=data, present=present, mask=mask, meta=meta)


def _entry(batch: Any, key: str) -> Any:
    try:
        return batch[key]
    except KeyError:
        return None
