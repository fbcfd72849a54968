"""Normalization ``(x - mean) / std`` from a statistics file, for NumPy and torch batches.

Statistics kept per level (or band) are looked up by each sample's position
along that dim (``batch.starts``), so they are right whether the level is a
windowed dim of the sample, a stacked channel, or iterated (one level per
sample).  Torch batches are normalized on their device, in place when their
dtype is floating (batches belong to the consumer: the engine allocates each
one afresh).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._batch import Batch
from ..errors import ConfigError, StatsMismatchError
from ._result import Stats, VariableStats

if TYPE_CHECKING:
    import torch

__all__ = ["Normalizer"]


def _scale(v: VariableStats) -> np.ndarray:
    """The divisor: std, or 1 where it is 0 or unknown (a constant or empty group)."""
    std = np.asarray(v.std, dtype=np.float64)
    return np.where(np.isfinite(std) & (std > 0), std, 1.0)


class Normalizer:
    """Applies ``(x - mean) / std`` per variable (and per level or band) from :class:`Stats`.

    Parameters
    ----------
    stats
        Statistics from :func:`~earthstream.compute_stats`, or the path of a
        JSON file written by ``earthstream stats`` / :meth:`Stats.to_json`.

    A group whose std is 0 (constant data) is only shifted; NaN stays NaN.
    Use it with ``stream.to_torch(device, normalize=...)`` (applied on the
    device, in the last stage) or call :meth:`apply_numpy` / :meth:`apply_torch`.

    Examples
    --------
    >>> import numpy as np, earthstream as es
    >>> src = es.ArraySource({"x": (("t", "y"), np.arange(40.0).reshape(10, 4))})
    >>> norm = es.Normalizer(es.compute_stats(src, scheduler="sync", progress=False))
    >>> batch = next(iter(es.Stream(src, {"y": 4}, batch_size=10, shuffle=False)))
    >>> out = norm.apply_numpy(batch)["x"]
    >>> bool(abs(out.mean()) < 1e-6), bool(abs(out.std() - 1) < 1e-6)
    (True, True)
    """

    def __init__(
        self,
        stats: Stats | str | os.PathLike[str] | Sequence[Stats | str | os.PathLike[str]],
    ) -> None:
        several = isinstance(stats, list | tuple)
        parts: list[Any] = list(stats) if isinstance(stats, list | tuple) else [stats]
        if not parts or not all(isinstance(p, Stats | str | os.PathLike) for p in parts):
            raise ConfigError(
                f"Normalizer({stats!r}): pass the path of a statistics file (`earthstream "
                "stats URL`), a Stats, or a list of them (one per store)."
            )
        loaded = [s if isinstance(s, Stats) else Stats.from_json(s) for s in parts]
        wheres = ["the statistics" if isinstance(s, Stats) else repr(str(s)) for s in parts]
        self._where = " and ".join(wheres)
        if not several:
            self.stats: Mapping[str, VariableStats] = loaded[0]
        else:  # several files, e.g. one per store of a multi-modal stream
            merged: dict[str, VariableStats] = {}
            for where, st in zip(wheres, loaded, strict=True):
                for name, v in st.items():
                    if name in merged:
                        raise StatsMismatchError(
                            f"variable {name!r} has statistics in more than one of "
                            f"{self._where} (again in {where}); pass each variable's once."
                        )
                    merged[name] = v
            self.stats = merged
        self._tables = {
            name: (np.asarray(v.mean, dtype=np.float64), _scale(v))
            for name, v in self.stats.items()
        }
        self._device_tables: dict[tuple[str, str, Any], tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"<Normalizer of {', '.join(self.stats)} from {self._where}>"

    # -- validation -----------------------------------------------------------------
    def check(
        self,
        variables: Mapping[str, tuple[Sequence[str], Sequence[int]]],
        coords: Mapping[str, Any] | None = None,
    ) -> None:
        """Check that the statistics cover ``variables`` (name -> (dims, shape)).

        With ``coords``, per-dim statistics must also be for the same labels
        (e.g. the same pressure levels, when a stream selects some of them).

        Raises
        ------
        StatsMismatchError
            A variable the statistics lack, a per-level dim the variable does
            not have, or a different number of levels.
        """
        self._check_names(list(variables))
        for name, (dims, shape) in variables.items():
            v = self.stats[name]
            sizes = dict(zip(dims, shape, strict=True))
            for dim, n in zip(v.per, v.shape, strict=True):
                if dim not in sizes:
                    raise StatsMismatchError(
                        f"the statistics of {name!r} in {self._where} are per {dim!r}, but "
                        f"{name!r} here has dims {tuple(dims)}. Recompute them without it "
                        f"(`earthstream stats URL --per ''`) or for this data."
                    )
                if sizes[dim] != n:
                    raise StatsMismatchError(
                        f"the statistics of {name!r} in {self._where} have {n} {dim!r} "
                        f"entries but {name!r} here has {sizes[dim]}. Recompute them on this "
                        "store (with no selection on that dim), or pass normalize= a "
                        "statistics file that matches."
                    )
                labels = v.labels.get(dim)
                here = (coords or {}).get(dim)
                if labels is not None and here is not None and len(here) == n:
                    mine = tuple(np.asarray(here).tolist())
                    numeric = np.asarray(here).dtype.kind in "iuf"
                    if numeric and mine != tuple(labels):
                        raise StatsMismatchError(
                            f"the statistics of {name!r} in {self._where} are for {dim!r} "
                            f"{list(labels)}, but {name!r} here has {list(mine)} (a selection?). "
                            "Compute them with the same sel=/isel= as the stream."
                        )

    def check_stream(self, stream: Any) -> None:
        """:meth:`check` against a stream's variables (before any data is read).

        For a :class:`~earthstream.MultiStream`, every channel of every gridded
        modality must have statistics (pass several files, e.g. one per store).
        """
        layout = getattr(stream, "layout", None)
        if layout is None:  # streams without a chunk layout are checked batch by batch
            return
        sizes = {a.dim: a.size for a in layout.grid.axes}  # within the stream's selection
        self.check(
            {
                v.name: (
                    v.dims,
                    tuple(sizes.get(d, n) for d, n in zip(v.dims, v.shape, strict=True)),
                )
                for v in layout.variables
            },
            getattr(stream, "coords", None),
        )
        for info in getattr(stream, "infos", {}).values():
            if info.kind != "gridded":
                continue
            missing = [c for c in info.channels if c not in self.stats]
            if missing:
                raise StatsMismatchError(
                    f"modality {info.name!r} has channels {', '.join(missing)} that "
                    f"{self._where} do not cover. Compute statistics for its store too "
                    f"(`earthstream stats {info.source}`) and pass both files: "
                    "normalize=[weather_stats, static_stats]."
                )

    def _plan(self, batch: Any) -> list[tuple[str, str, Any]]:
        """``(batch key, action, what)`` for every entry: ``"var"`` (statistics of a
        variable), ``"record"`` (a multi-modal record, per channel) or ``"skip"``."""
        records = batch.attrs.get("modalities", {}) if hasattr(batch, "attrs") else {}
        plan: list[tuple[str, str, Any]] = []
        unknown: list[str] = []
        for key in batch.dims:
            if key in records:
                info = records[key]
                if info.kind == "raster" and not all(c in self.stats for c in info.channels):
                    plan.append((key, "skip", None))  # reflectances: as the raster scales them
                    continue
                missing = [c for c in info.channels if c not in self.stats]
                unknown.extend(f"{key}[{c}]" for c in missing)
                plan.append((key, "record", info))
            elif key in self.stats:
                plan.append((key, "var", key))
            elif key.startswith("target/") and key[len("target/") :] in self.stats:
                plan.append((key, "var", key[len("target/") :]))
            elif key in ("time_encoding", "position_encoding") or key.endswith(
                ("/present", "/mask")
            ):
                plan.append((key, "skip", None))
            else:
                unknown.append(key)
        if unknown:
            self._check_names(unknown)
        return plan

    @staticmethod
    def _record_starts(starts: Mapping[str, Any], dims: Sequence[str], like: Any) -> dict[str, Any]:
        """A record's dims beyond the primary's (levels of another variable) are whole: 0."""
        out = dict(starts)
        for d in dims:
            if d not in out:
                out[d] = like * 0
        return out

    # -- lookups --------------------------------------------------------------------
    def _index(
        self,
        name: str,
        dims: Sequence[str],
        starts: Mapping[str, Any],
        shape: Sequence[int],
        xp: Any,
    ) -> tuple[Any, ...] | None:
        """Index arrays into ``name``'s tables, broadcastable to a ``(B, *dims)`` batch."""
        v = self.stats[name]
        if not v.per:
            return None
        ndim = len(shape)
        index = []
        for dim, size in zip(v.per, v.shape, strict=True):
            if dim not in starts:
                raise StatsMismatchError(
                    f"the statistics of {name!r} are per {dim!r}, but the batch has no "
                    f"position along {dim!r}. Recompute them without it (--per '')."
                )
            start = starts[dim]
            if dim in dims:
                axis = 1 + list(dims).index(dim)
                if xp is np:
                    offsets = np.arange(shape[axis])
                else:
                    offsets = xp.arange(shape[axis], device=start.device)
                idx = start.reshape(-1, 1) + offsets.reshape(1, -1)
                view = [1] * ndim
                view[0], view[axis] = idx.shape[0], idx.shape[1]
                idx = idx.reshape(view)
            else:
                idx = start.reshape([-1] + [1] * (ndim - 1))
            index.append(idx.clip(0, size - 1))
        return tuple(index)

    # -- numpy ----------------------------------------------------------------------
    def normalize_array(
        self, name: str, x: np.ndarray, dims: Sequence[str], starts: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """``(x - mean) / std`` of a ``(B, *dims)`` array of ``name`` (a new float array)."""
        mean, scale = self._tables[name]
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        index = self._index(name, dims, starts, x.shape, np)
        if index is not None:
            mean, scale = mean[index], scale[index]
        out = (x - mean.astype(dtype)) / scale.astype(dtype)
        return np.asarray(out, dtype=dtype)

    def apply_numpy(self, batch: Batch) -> Batch:
        """A normalized copy of a :class:`~earthstream.Batch` (stacked or not).

        Floating data keeps its dtype, other data becomes float32.
        """
        plan = self._plan(batch)
        starts = {d: np.asarray(s) for d, s in batch.starts.items()}
        if batch.stacked is None:
            data = dict(batch.data)
            for key, action, what in plan:
                x = batch[key]
                if action == "var":
                    data[key] = self.normalize_array(what, x, batch.dims[key], starts)
                elif action == "record":
                    dims = what.dims[1:]
                    rec = self._record_starts(starts, dims, batch.window_ids)
                    out = np.empty(x.shape, x.dtype if x.dtype.kind == "f" else np.float32)
                    for c, name in enumerate(what.channels):
                        out[:, c] = self.normalize_array(name, x[:, c], dims, rec)
                    data[key] = out
            return dataclasses.replace(batch, data=data)
        old = batch.stacked
        dtype = old.dtype if old.dtype.kind == "f" else np.dtype(np.float32)
        stacked = old.astype(dtype, copy=True)
        data = {}
        for n, view in batch.items():
            new = _rebase(view, old, stacked)
            new[...] = self.normalize_array(n, view, batch.dims[n], starts)
            data[n] = new
        return dataclasses.replace(batch, data=data, stacked=stacked)

    def _check_names(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.stats]
        if missing:
            have = ", ".join(self.stats) or "(none)"
            raise StatsMismatchError(
                f"the statistics in {self._where} have no entry for {', '.join(missing)} "
                f"(they cover: {have}). Recompute them with those variables "
                f"(`earthstream stats URL --variables {','.join(names)}`), or pass "
                "normalize= a statistics file that has them."
            )

    # -- torch ----------------------------------------------------------------------
    def _torch_tables(self, name: str, device: Any, dtype: Any) -> tuple[Any, Any]:
        key = (name, str(device), dtype)
        found = self._device_tables.get(key)
        if found is None:
            import torch

            mean, scale = self._tables[name]
            found = (
                torch.as_tensor(mean, dtype=dtype).to(device),
                torch.as_tensor(scale, dtype=dtype).to(device),
            )
            self._device_tables[key] = found
        return found

    def normalize_tensor(
        self, name: str, x: torch.Tensor, dims: Sequence[str], starts: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """``(x - mean) / std`` of a ``(B, *dims)`` tensor, on its device.

        In place (``x`` is returned) when ``x`` is floating, else a new float32 tensor.
        """
        import torch

        inplace = x.is_floating_point()
        dtype = x.dtype if inplace else torch.float32
        mean, scale = self._torch_tables(name, x.device, dtype)
        index = self._index(name, dims, starts, x.shape, torch)
        if index is not None:
            mean, scale = mean[index], scale[index]
        out: torch.Tensor = x.sub_(mean).div_(scale) if inplace else (x.to(dtype) - mean) / scale
        return out

    def apply_torch(self, batch: Any) -> Any:
        """Normalize a :class:`~earthstream.delivery.TorchBatch` on its device (in place
        for floating tensors); returns the batch (a new one when dtypes change).

        (Typed loosely: statistics sit below the delivery floor and do not import it.)
        """
        import torch

        plan = self._plan(batch)
        if batch.stacked is not None:
            if not batch.stacked.is_floating_point():
                batch = dataclasses.replace(batch, stacked=batch.stacked.to(torch.float32))
            for key, action, what in plan:
                if action == "var":
                    self.normalize_tensor(what, batch[key], batch.dims[key], batch.starts)
            return batch
        tensors = dict(batch.tensors)
        for key, action, what in plan:
            x = tensors[key]
            if action == "var":
                tensors[key] = self.normalize_tensor(what, x, batch.dims[key], batch.starts)
            elif action == "record":
                dims = what.dims[1:]
                rec = self._record_starts(batch.starts, dims, batch.window_ids)
                if not x.is_floating_point():
                    x = tensors[key] = x.to(torch.float32)
                for c, name in enumerate(what.channels):
                    self.normalize_tensor(name, x[:, c], dims, rec)  # in place, on the device
        return dataclasses.replace(batch, tensors=tensors)


def _rebase(view: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The view of ``new`` that ``view`` is of ``old`` (same shape; itemsizes may differ)."""
    ratio_num, ratio_den = new.itemsize, old.itemsize
    offset = view.__array_interface__["data"][0] - old.__array_interface__["data"][0]
    start = offset // old.itemsize
    strides = tuple(s * ratio_num // ratio_den for s in view.strides)
    flat = new.reshape(-1)
    return np.lib.stride_tricks.as_strided(flat[start:], view.shape, strides, writeable=True)
