"""What a modality is and what its records say: the frozen, picklable descriptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .._records import Record, RecordInfo
from .._validate import check_choice

__all__ = [
    "MISSING",
    "RESOLUTIONS",
    "MissingModality",
    "Modality",
    "Record",
    "RecordInfo",
    "Resolution",
]

#: A modality with no data for a sample: raise, drop the sample, or zeros.
MissingModality = Literal["error", "skip", "zero"]
MISSING: tuple[MissingModality, ...] = ("error", "skip", "zero")
#: Where a modality is read: on the primary's grid, or at its own resolution.
Resolution = Literal["common", "native"]
RESOLUTIONS: tuple[Resolution, ...] = ("common", "native")

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
    missing: MissingModality | None = None
    resolution: Resolution | None = None
    resampling: str = "nearest"
    broadcast_time: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.variables, str):
            object.__setattr__(self, "variables", (self.variables,))
        elif self.variables is not None:
            object.__setattr__(self, "variables", tuple(self.variables))
        if self.missing is not None:
            object.__setattr__(self, "missing", check_choice(self.missing, "missing", MISSING))
        if self.resolution is not None:
            resolution = check_choice(self.resolution, "resolution", RESOLUTIONS)
            object.__setattr__(self, "resolution", resolution)


def layout_of(dims: tuple[str, ...], first: str = "channel") -> str:
    """``("channel", "time", "lat", "lon")`` -> ``"CTHW"``."""
    letters = []
    for d in (first, *dims):
        role = {"latitude": "lat", "longitude": "lon", "y": "lat", "x": "lon"}.get(d, d)
        letters.append(_LETTERS.get(role, d[:1].upper()))
    return "".join(letters)
