"""What a modality is and what its records say: the frozen, picklable descriptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["MISSING", "RESOLUTIONS", "Modality", "Record", "RecordInfo"]

MISSING = ("error", "skip", "zero")
RESOLUTIONS = ("common", "native")

#: Letters of a record's declared layout, by dim role.
_LETTERS = {"channel": "C", "variable": "V", "time": "T", "level": "L", "lat": "H", "lon": "W"}


@dataclass(frozen=True)
class Modality:
    """One input of a multi-modal sample and how to read it.

    Parameters
    ----------
    source
        A gridded source (:class:`~earthstream.ZarrSource`, an
        :class:`~earthstream.ArraySource`, or a Zarr path/URL) or a raster
        (:class:`~earthstream.COGSource`, or a GeoTIFF path/URL).
    variables
        Variables (gridded) or bands (raster) to take; default all.
    missing
        When the modality has no data for a sample: ``"error"``
        (:class:`~earthstream.errors.MissingModalityError`), ``"skip"`` (the
        sample is dropped from its batch and counted) or ``"zero"`` (zeros, and
        ``"<name>/present"`` False).  Default: the stream's ``missing_modality``.
    resolution
        ``"common"``: on the primary's grid; ``"native"``: the modality's own
        resolution over the same footprint.  Default: the stream's.
    resampling
        For rasters read onto another grid: ``"nearest"``, ``"bilinear"``,
        ``"average"`` ...
    broadcast_time
        For a static gridded modality (no time dim): repeat it (as a view) over
        the primary's input steps, giving ``(C, T, H, W)``.
    """

    source: Any
    variables: Any = None  # names; normalized to a tuple
    missing: str | None = None
    resolution: str | None = None
    resampling: str = "nearest"
    broadcast_time: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.variables, str):
            object.__setattr__(self, "variables", (self.variables,))
        elif self.variables is not None:
            object.__setattr__(self, "variables", tuple(self.variables))
        if self.missing is not None and self.missing not in MISSING:
            raise ConfigError(f"missing={self.missing!r} must be one of {MISSING}.")
        if self.resolution is not None and self.resolution not in RESOLUTIONS:
            raise ConfigError(f"resolution={self.resolution!r} must be one of {RESOLUTIONS}.")


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


def layout_of(dims: tuple[str, ...], first: str = "channel") -> str:
    """``("channel", "time", "lat", "lon")`` -> ``"CTHW"``."""
    letters = []
    for d in (first, *dims):
        role = {"latitude": "lat", "longitude": "lon", "y": "lat", "x": "lon"}.get(d, d)
        letters.append(_LETTERS.get(role, d[:1].upper()))
    return "".join(letters)


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
