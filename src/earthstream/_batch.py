"""The unit a stream delivers: a batch of windows with their provenance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from ._records import Record, record_of

__all__ = ["Batch", "WindowLabels", "window_labels"]


def window_labels(values: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``(B, length)`` coordinate labels of windows starting at ``starts``.

    Positions past the end of ``values`` (padded windows) hold NaN (numbers,
    as float64), NaT (datetimes) or None (other labels).

    >>> window_labels(np.array([10, 20, 30]), np.array([0, 2]), 2).tolist()
    [[10.0, 20.0], [30.0, nan]]
    """
    values = np.asarray(values)
    index = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length, dtype=np.int64)
    inside = index < len(values)
    picked = values[np.minimum(index, max(len(values) - 1, 0))]
    if inside.all():
        return np.asarray(picked)
    if values.dtype.kind == "M":
        picked = picked.copy()
        picked[~inside] = np.datetime64("NaT")
    elif values.dtype.kind in "iufb":
        picked = picked.astype(np.float64)
        picked[~inside] = np.nan
    else:
        picked = picked.astype(object)
        picked[~inside] = None
    return np.asarray(picked)


@dataclass(frozen=True)
class WindowLabels:
    """The coordinate labels a batch's windows along one dim are cut from: ``values``
    (labels ``offset`` onwards) and the window ``length``; :meth:`cut` gives the
    ``(B, length)`` labels of windows starting at ``starts`` (see :func:`window_labels`).

    >>> WindowLabels(np.array([20, 30]), 1, 2).cut(np.array([1, 2])).tolist()
    [[20.0, 30.0], [30.0, nan]]
    """

    values: np.ndarray
    offset: int
    length: int

    def cut(self, starts: np.ndarray) -> np.ndarray:
        return window_labels(self.values, np.asarray(starts) - self.offset, self.length)


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

    def to_xarray(self) -> Any:
        """This batch as an ``xarray.Dataset``, for quick looks.

        Every array gets a leading ``sample`` dim and its own dims; windowed dims
        get each sample's coordinate labels as 2-D coordinates ``(sample, dim)``
        (NaN / NaT where a window is padded), iterated dims one label per sample
        ``(sample,)``.  ``<dim>_start`` holds the window starts (positions in
        the selection), ``window_id`` and ``padded`` each sample's id and padding
        flag, ``mask`` (with ``edges="pad"``) where samples hold data.  Forecast
        targets get their time dim as ``target_<dim>`` with ``target_times``;
        inputs ``input_times``.

        Examples
        --------
        >>> import earthstream as es
        >>> path = es.datasets.era5_like(tmp_path / "b.zarr", n_times=4, n_lat=16, n_lon=32)
        >>> batch = next(iter(es.Stream(path, {"lat": 8, "lon": 8}, variables="t2m",
        ...                             batch_size=4, shuffle=False)))
        >>> ds = batch.to_xarray()
        >>> dict(ds.sizes), ds["lat"].dims, ds["time"].dims
        ({'sample': 4, 'lat': 8, 'lon': 8}, ('sample', 'lat'), ('sample',))
        >>> one = ds.isel(sample=1)                    # one window with its lat/lon labels
        >>> float(one["lon"][0]) == float(batch.coords["lon"][1])
        True
        """
        import xarray as xr

        n = self.size
        window = {
            dim: span.cut(self.starts[dim])
            for dim, span in self.attrs.get("window_coords", {}).items()
        }
        fdim = self.attrs.get("forecast_dim")
        forecast = fdim is not None and "target_times" in self.coords
        renamed: dict[str, dict[str, str]] = {}
        sizes: dict[str, int] = {"sample": n}
        data_vars: dict[str, Any] = {}
        for name, array in self.data.items():
            dims = list(self.dims.get(name, ()))
            if len(dims) != array.ndim - 1:
                dims = [f"{name}_dim_{i}" for i in range(array.ndim - 1)]
            mapping: dict[str, str] = {}
            for i, dim in enumerate(dims):
                new = dim
                if forecast and name.startswith("target/") and dim == fdim:
                    new = f"target_{dim}"
                if sizes.get(new, array.shape[i + 1]) != array.shape[i + 1]:
                    new = f"{new}_{name}"
                sizes[new] = array.shape[i + 1]
                mapping[dim] = new
            renamed[name] = mapping
            data_vars[name] = (("sample", *[mapping[d] for d in dims]), array)
        if self.mask is not None:
            data_vars["mask"] = (("sample", *self.mask_dims), self.mask)
        coords: dict[str, Any] = {
            "window_id": ("sample", np.asarray(self.window_ids)),
            "padded": ("sample", np.asarray(self.padded)),
        }
        for dim, starts in self.starts.items():
            coords[f"{dim}_start"] = ("sample", np.asarray(starts))
        for dim, labels in window.items():
            if forecast and dim == fdim:
                continue
            if sizes.get(dim) == labels.shape[1]:
                coords[dim] = (("sample", dim), labels)
        for key, values in self.coords.items():
            values = np.asarray(values)
            if key in window or key in coords:
                continue
            if values.ndim == 1 and len(values) == n:
                coords[key] = ("sample", values)
        if forecast:
            dim = str(fdim)
            inputs = np.asarray(self.coords["input_times"])
            targets = np.asarray(self.coords["target_times"])
            if sizes.get(dim) == inputs.shape[1]:
                coords["input_times"] = (("sample", dim), inputs)
            if sizes.get(f"target_{dim}") == targets.shape[1]:
                coords["target_times"] = (("sample", f"target_{dim}"), targets)
        return xr.Dataset(
            data_vars, coords=coords, attrs={"epoch": self.epoch, "batch_index": self.index}
        )

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
