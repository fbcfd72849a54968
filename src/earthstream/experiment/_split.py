"""``split``: named streams (train / val / test) from one configuration, without leakage.

By time: each split is the stream selected (``sel``) to its time range, so
every window, forecast inputs and targets included, lies inside that range;
ranges may not overlap, and ``gap`` leaves out the steps of a later split that
come within it of the earlier one (the embargo, counted per split).

By spatial blocks: the selection is tiled with blocks of a given size, each
block given to one split (a checkerboard, or a seeded random assignment with
exact shares), and each split keeps the windows whose footprint, grown by
``buffer`` pixels, lies in its own blocks (:class:`~earthstream.sampling.BlockSplit`).
Both can be combined (a later period on held-out blocks).

Normalization statistics come from the train split only:
:meth:`Splits.compute_stats` reads the train split's selection, and with
blocks only the pixels its windows cover.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._stream import Stream
from ..errors import ConfigError, DimensionError
from ..sampling import BlockSplit, TimeSplit, assign_blocks, time_split_spans
from ..sampling._split import block_shape
from ..sampling._time import format_time
from ..sources import ChunkedSource, as_source

__all__ = ["SpatialBlocks", "Splits", "split"]


@dataclass(frozen=True)
class SpatialBlocks:
    """How a domain is cut into blocks given to splits.

    Parameters
    ----------
    size
        Block size in pixels (positions of the selection) per dim, e.g.
        ``{"lat": 32, "lon": 32}``; blocks tile the selection from its first
        position.
    splits
        Split names (a checkerboard over them), or name -> share of blocks
        (a seeded random assignment: ``{"train": 0.7, "val": 0.15, "test": 0.15}``).
    kind
        ``"checkerboard"`` or ``"random"`` (default: checkerboard for names,
        random for shares).
    buffer
        Pixels (per dim, or one for all) by which each window is grown before
        it must lie in its split's blocks: samples of two splits lie more than
        ``2 * buffer`` pixels apart.
    seed
        Seed of a random assignment.
    """

    size: Mapping[str, int]
    splits: Sequence[str] | Mapping[str, float] = ("train", "val")
    kind: Literal["checkerboard", "random"] | None = None
    buffer: int | Mapping[str, int] = 0
    seed: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.splits)

    def assignment(self, shape: tuple[int, ...]) -> np.ndarray:
        kind = self.kind or ("random" if isinstance(self.splits, Mapping) else "checkerboard")
        fractions = (
            [float(v) for v in self.splits.values()] if isinstance(self.splits, Mapping) else None
        )
        if kind == "checkerboard" and fractions is not None:
            raise ConfigError(
                "SpatialBlocks(splits={name: share}) gives shares; a checkerboard gives equal "
                "shares. Pass kind='random', or a list of names for a checkerboard."
            )
        return assign_blocks(shape, len(self.names), kind, fractions=fractions, seed=self.seed)


class Splits(Mapping[str, Stream]):
    """Named streams of one configuration, disjoint by construction.

    A mapping ``name -> Stream``.  ``time`` holds each split's
    :class:`~earthstream.sampling.TimeSplit` (positions in the base selection,
    steps embargoed), ``blocks`` the :class:`SpatialBlocks` and ``assignment``
    the split index of every block.
    """

    def __init__(
        self,
        streams: Mapping[str, Stream],
        source: ChunkedSource,
        sels: Mapping[str, dict[str, Any]],
        isel: Mapping[str, Any] | None,
        time: Mapping[str, TimeSplit] | None,
        time_dim: str,
        blocks: SpatialBlocks | None,
        assignment: np.ndarray | None,
    ) -> None:
        self._streams = dict(streams)
        self.source = source
        self._sels = {k: dict(v) for k, v in sels.items()}
        self._isel = dict(isel or {})
        self.time = dict(time) if time is not None else None
        self.time_dim = time_dim
        self.blocks = blocks
        self.assignment = assignment

    def __getitem__(self, name: str) -> Stream:
        try:
            return self._streams[name]
        except KeyError:
            raise KeyError(f"no split {name!r}; splits: {', '.join(self._streams)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._streams)

    def __len__(self) -> int:
        return len(self._streams)

    def selection(self, name: str = "train") -> dict[str, Any]:
        """``{"sel": ..., "isel": ...}`` selecting split ``name``'s time range (and the
        base selection), for :func:`~earthstream.compute_stats` or xarray."""
        self[name]
        return {"sel": dict(self._sels[name]), "isel": dict(self._isel)}

    def footprint(self, name: str = "train") -> tuple[tuple[str, ...], np.ndarray] | None:
        """``(dims, mask)``: the pixels of the block dims that split ``name``'s windows
        cover (positions of the selection), or None without blocks."""
        if self.blocks is None:
            return None
        stream = self[name]
        dims = tuple(d for d in stream.order.grid.dims if d in self.blocks.size)
        grid = stream.order.grid
        keep = stream.subset.mask() if stream.subset is not None else np.ones(grid.counts, bool)
        other = tuple(i for i, d in enumerate(grid.dims) if d not in dims)
        keep = np.asarray(keep.any(axis=other)) if other else keep  # same on every other position
        axes = [grid.axis(d) for d in dims]
        cover = np.zeros([a.size + 1 for a in axes], dtype=np.int64)
        k = np.nonzero(keep)
        for corner in range(1 << len(axes)):
            index = []
            sign = 1
            for i, ax in enumerate(axes):
                starts = ax.starts()[k[i]]
                if corner >> i & 1:
                    index.append(np.minimum(starts + ax.length, ax.size))
                    sign = -sign
                else:
                    index.append(starts)
            np.add.at(cover, tuple(index), sign)
        for axis in range(cover.ndim):
            cover = np.cumsum(cover, axis=axis)
        mask = cover[tuple(slice(0, a.size) for a in axes)] > 0
        return dims, mask

    def compute_stats(
        self, variables: Sequence[str] | str | None = None, name: str = "train", **kwargs: Any
    ) -> Any:
        """:func:`~earthstream.compute_stats` on split ``name`` only (default: train).

        Its time range and base selection; with spatial blocks only the pixels
        its windows cover (``where=``).  Other arguments go to ``compute_stats``.
        """
        from ..stats import compute_stats

        selection = self.selection(name)
        where = self.footprint(name)
        return compute_stats(
            self.source,
            variables,
            sel=selection["sel"] or None,
            isel=selection["isel"] or None,
            where=where,
            **kwargs,
        )

    def __repr__(self) -> str:
        lines = [f"<Splits {', '.join(self._streams)}>"]
        for name, stream in self._streams.items():
            parts = [f"{stream.n_windows:,} windows"]
            if self.time is not None and name in self.time:
                t = self.time[name]
                times = stream.coords[self.time_dim]
                if len(times):
                    parts.append(f"{self.time_dim} {_short(times[0])} .. {_short(times[-1])}")
                if t.embargoed:
                    parts.append(f"{t.embargoed} steps embargoed")
            for reason, n in stream.excluded.items():
                parts.append(f"{n:,} excluded ({reason})")
            lines.append(f"  {name}: " + "; ".join(parts))
        return "\n".join(lines)


def split(
    source: Any,
    window: Mapping[str, int | None],
    stride: Mapping[str, int] | None = None,
    *,
    time: Mapping[str, Any] | None = None,
    blocks: SpatialBlocks | None = None,
    gap: Any = None,
    time_dim: str = "time",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    **stream_options: Any,
) -> Splits:
    """Named streams (train / val / test ...) over disjoint parts of one source.

    Parameters
    ----------
    source, window, stride
        As :class:`~earthstream.Stream`; every split has the same windows.
    time
        Split name -> time range (``slice(first, last)`` of labels, both ends
        inclusive, as ``sel``; strings and partial dates work), e.g.
        ``{"train": slice(None, "2019"), "val": slice("2020", "2020"), "test":
        slice("2021", None)}``.  Ranges may not overlap.  Each split's stream is
        selected to its range, so its windows, forecast inputs and targets
        included, never reach into another's.
    blocks
        :class:`SpatialBlocks`: split the domain by blocks (with ``time``, the
        split names must match: a split is its time range on its blocks).
    gap
        With ``time``: a duration (``"7D"``) or a number of steps; a later
        split's first step comes more than ``gap`` after the previous split's
        last step (steps closer than that are left out of it, counted in
        ``splits.time[name].embargoed``).
    time_dim
        The time dim of ``time``.
    options
        Split name -> stream options for that split only (e.g.
        ``{"val": {"shuffle": False}}``).
    **stream_options
        Options of every split's :class:`~earthstream.Stream` (``variables``,
        ``batch_size``, ``forecast``, ``sel`` / ``isel`` for the base
        selection the splits divide, ``windows`` for more rules ...).

    Returns
    -------
    Splits
        A mapping name -> :class:`~earthstream.Stream`.

    Examples
    --------
    >>> import earthstream as es
    >>> path = es.datasets.era5_like(tmp_path / "e.zarr", n_times=40, n_lat=16, n_lon=32)
    >>> splits = es.split(path, {"lat": 8, "lon": 8}, variables=["t2m"], gap="12h",
    ...                   time={"train": slice(None, "2020-01-07"),
    ...                         "val": slice("2020-01-08", None)},
    ...                   forecast={"inputs": 1, "lead": "6h"})
    >>> bool(splits["train"].coords["time"][-1] < splits["val"].coords["time"][0])
    True
    >>> splits.time["val"].embargoed   # 2020-01-08T00 and T06 are within 12 h of train
    2
    """
    if time is None and blocks is None:
        raise ConfigError("split() needs time= ranges, blocks=SpatialBlocks(...), or both.")
    opts = dict(stream_options)
    windows = opts.pop("windows", None)
    src = as_source(source)
    if opts.get("variables") is not None:
        v = opts.pop("variables")
        src = src.select([v] if isinstance(v, str) else list(v))
    probe = Stream(src, window, stride, **opts)
    names: tuple[str, ...]
    spans: dict[str, TimeSplit] | None = None
    if time is not None:
        if time_dim not in probe.coords:
            raise DimensionError(
                f"time= splits along {time_dim!r}, which has no coordinate in the stream "
                f"({', '.join(probe.coords)}); pass time_dim=."
            )
        spans = time_split_spans(probe.coords[time_dim], time, gap, dim=time_dim)
        names = tuple(spans)
    if blocks is not None:
        if time is not None and set(blocks.names) != set(names):
            raise ConfigError(
                f"time= names {sorted(names)} and blocks= names {sorted(blocks.names)} differ; "
                "a split is its time range on its blocks, so give the same names."
            )
        names = blocks.names if time is None else names
        grid = probe.order.grid
        for dim in blocks.size:
            if dim not in grid.dims:
                raise DimensionError(
                    f"SpatialBlocks(size=...) names {dim!r}, which is not a dim of the stream "
                    f"({', '.join(grid.dims)})."
                )
        assignment = blocks.assignment(block_shape(grid, blocks.size))
    elif gap is not None and time is None:
        raise ConfigError("gap= applies to time= splits.")
    base_sel = dict(opts.pop("sel", None) or {})
    isel = opts.get("isel")
    streams: dict[str, Stream] = {}
    sels: dict[str, dict[str, Any]] = {}
    for name in names:
        sel = dict(base_sel)
        if spans is not None:
            t = spans[name]
            times = probe.coords[time_dim]
            sel[time_dim] = slice(times[t.start], times[t.stop - 1])
        rules: list[Any] = []
        if blocks is not None:
            rules.append(
                BlockSplit(
                    name, dict(blocks.size), assignment, blocks.names.index(name), blocks.buffer
                )
            )
        if windows is not None:
            rules.extend(windows if isinstance(windows, list | tuple) else [windows])
        per = dict((options or {}).get(name, {}))
        stream = Stream(
            src,
            window,
            stride,
            **{**opts, **per},
            sel=sel or None,
            windows=rules or None,
        )
        if stream.n_windows == 0:
            why = "; ".join(f"{n} {r}" for r, n in stream.excluded.items())
            raise ConfigError(
                f"split {name!r} has no window left ({why or 'empty range'}); use larger blocks, "
                "a smaller buffer or window, or a longer time range."
            )
        streams[name] = stream
        sels[name] = sel
    unknown = set(options or {}) - set(names)
    if unknown:
        raise ConfigError(f"options= names {sorted(unknown)}, which are not splits ({names}).")
    return Splits(
        streams,
        src,
        sels,
        isel,
        spans,
        time_dim,
        blocks,
        assignment if blocks is not None else None,
    )


def _short(value: Any) -> str:
    """A time label to the minute."""
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="m"))
    return format_time(value)
