"""Every exception earthstream raises on purpose.

Each class subclasses the built-in exception a caller would naturally catch
(``KeyError`` for an unknown name, ``ValueError`` for a bad setting,
``FileNotFoundError`` for a missing store ...), so ``except ValueError`` keeps
working, and also :class:`EarthstreamError`, so ``except EarthstreamError``
catches everything of ours.  Messages name the offending value and say what to
change.
"""

from __future__ import annotations

__all__ = [
    "CRSError",
    "ChunkDecodeError",
    "ConfigError",
    "CorruptChunksError",
    "DimensionError",
    "EarthstreamError",
    "ForecastError",
    "ForkError",
    "GridMismatchError",
    "MetadataError",
    "MemoryBudgetError",
    "MissingChunkError",
    "MissingModalityError",
    "MissingProjectionError",
    "ResumeError",
    "SelectionError",
    "ShortReadError",
    "StatsFileError",
    "StatsMismatchError",
    "StoreAccessError",
    "StoreNotFoundError",
    "StoreRequestError",
    "TimeAxisError",
    "TimeDecodeError",
    "UnsupportedFormatError",
    "UnsupportedGeometryError",
    "UnsupportedInputError",
    "VariableNotFoundError",
    "WorkerError",
    "WindowError",
    "CorruptFileError",
]


class EarthstreamError(Exception):
    """Base class of all earthstream errors."""


class ConfigError(EarthstreamError, ValueError):
    """An option has a value that is not allowed (e.g. ``shuffle="sometimes"``)."""


class VariableNotFoundError(EarthstreamError, KeyError):
    """A variable name that the source does not have."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class DimensionError(EarthstreamError, ValueError):
    """An unknown dimension, or dimensions that do not fit together."""


class WindowError(EarthstreamError, ValueError):
    """A window or stride that cannot be cut from the data."""


class MemoryBudgetError(EarthstreamError, ValueError):
    """``memory_limit`` is too small for what the stream must hold at once."""


class ResumeError(EarthstreamError, ValueError):
    """A saved stream state that does not fit this stream (other data, settings or layout)."""


class SelectionError(EarthstreamError, ValueError):
    """A ``sel``/``isel`` selection that selects nothing, is inverted, names a label the
    coordinate does not have, or cannot be represented as one range of positions."""


class StoreNotFoundError(EarthstreamError, FileNotFoundError):
    """The store (path or URL) does not exist or holds no Zarr data."""


class UnsupportedFormatError(EarthstreamError, ValueError):
    """Data in a format or encoding that earthstream cannot read."""


class UnsupportedInputError(EarthstreamError, TypeError):
    """An object that cannot be opened as a source (the message lists what can), or a
    store object that cannot be sent to worker processes."""


class MetadataError(UnsupportedFormatError):
    """A Zarr metadata document (``zarr.json``, ``.zarray``, ``.zgroup``, ``.zattrs``,
    ``.zmetadata``) that is not valid JSON or does not describe a valid node; the
    message names the file and what is wrong."""


class ChunkDecodeError(EarthstreamError, ValueError):
    """A chunk's bytes could not be decoded with the array's codecs."""


class CorruptChunksError(ChunkDecodeError):
    """More chunks than ``max_corrupt`` failed to decode in one epoch (``corrupt="skip"``)."""


class MissingChunkError(EarthstreamError, FileNotFoundError):
    """A chunk is not stored and the stream was asked to treat that as an error."""


class StoreAccessError(EarthstreamError, PermissionError):
    """The store refused access (HTTP 401/403): credentials or permissions."""


class StoreRequestError(EarthstreamError, OSError):
    """A storage request failed: at once for non-retryable errors, or after retries."""


class ShortReadError(EarthstreamError, OSError):
    """A storage answer had fewer bytes than asked for.

    Readers retry it (a truncated answer is never used as data); it is an
    ``OSError`` so that storage-failure handling treats it as I/O.
    """


class ForkError(EarthstreamError, RuntimeError):
    """An object-store client used in a process forked after its parent used one."""


class WorkerError(EarthstreamError, RuntimeError):
    """A DataLoader worker process died (killed, out of memory, crashed) mid-epoch."""


class CRSError(EarthstreamError, ValueError):
    """A coordinate reference system that is missing, unknown, or in the wrong units."""


class MissingProjectionError(EarthstreamError, ValueError):
    """A STAC asset without the projection metadata (CRS, transform, shape) needed to plan."""


class UnsupportedGeometryError(UnsupportedFormatError):
    """Vector features of a geometry type that cannot be rasterized (e.g. curves)."""


class TimeAxisError(EarthstreamError, ValueError):
    """A time axis that is missing, not datetimes, not increasing, or differs between sources."""


class TimeDecodeError(TimeAxisError):
    """CF times that cannot be decoded (units, calendar or values); names the variable."""


class ForecastError(WindowError):
    """Forecast inputs/targets that do not fit the time series (steps, leads, gaps)."""


class GridMismatchError(EarthstreamError, ValueError):
    """Modalities whose grids cannot be matched over the same footprint."""


class MissingModalityError(EarthstreamError, LookupError):
    """A modality has no data for a sample and its policy is ``"error"``."""


class StatsFileError(EarthstreamError, ValueError):
    """A statistics file that is missing, damaged or not written by ``earthstream stats``."""


class StatsMismatchError(EarthstreamError, ValueError):
    """Statistics that do not fit the data they should normalize (variables, levels)."""


class CorruptFileError(EarthstreamError, ValueError):
    """A file whose structure is damaged: a truncated header, offsets past its end."""
