"""The result of :func:`~earthstream.compute_stats`, and its JSON file."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._names import suggest
from ..errors import StatsFileError, VariableNotFoundError

__all__ = ["FORMAT", "Stats", "VariableStats"]

FORMAT = "earthstream-stats/1"


def _floats(values: np.ndarray) -> Any:
    """JSON values: a float or nested lists, NaN as null."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        return None if math.isnan(v) else v
    return [_floats(a) for a in arr]


def _array(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Floats from JSON (null -> NaN) in ``shape``."""
    return np.asarray(np.nan if value is None else value, dtype=np.float64).reshape(shape)


@dataclass(frozen=True, eq=False)
class VariableStats:
    """Statistics of one variable, per group of the ``per`` dims (scalars without them).

    Every array has the shape ``shape`` (``()`` without ``per`` dims, ``(3,)``
    for three pressure levels); ``quantiles[q]`` likewise.  ``std`` is the
    population standard deviation (``ddof=0``).  NaN and nodata values are not
    counted; groups without any valid value hold NaN.
    """

    name: str
    dims: tuple[str, ...]
    per: tuple[str, ...]
    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    quantiles: Mapping[float, np.ndarray]
    labels: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    nodata: float | list[float] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Groups along each ``per`` dim."""
        return tuple(self.count.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": list(self.dims),
            "per": list(self.per),
            "shape": list(self.shape),
            "labels": {d: list(v) for d, v in self.labels.items()},
            "nodata": self.nodata,
            "count": np.asarray(self.count, dtype=np.int64).tolist(),
            "mean": _floats(self.mean),
            "std": _floats(self.std),
            "min": _floats(self.min),
            "max": _floats(self.max),
            "quantiles": {repr(float(q)): _floats(v) for q, v in self.quantiles.items()},
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> VariableStats:
        shape = tuple(int(n) for n in data["shape"])
        return cls(
            name=name,
            dims=tuple(data["dims"]),
            per=tuple(data["per"]),
            count=np.asarray(data["count"], dtype=np.int64).reshape(shape),
            mean=_array(data["mean"], shape),
            std=_array(data["std"], shape),
            min=_array(data["min"], shape),
            max=_array(data["max"], shape),
            quantiles={float(q): _array(v, shape) for q, v in data["quantiles"].items()},
            labels={d: tuple(v) for d, v in data.get("labels", {}).items()},
            nodata=data.get("nodata"),
        )

    def __repr__(self) -> str:
        def fmt(a: np.ndarray) -> str:
            return np.array2string(np.asarray(a), precision=4, separator=", ")

        per = f" per {','.join(self.per)}" if self.per else ""
        return (
            f"<VariableStats {self.name}{per}: count={fmt(self.count)} mean={fmt(self.mean)} "
            f"std={fmt(self.std)} min={fmt(self.min)} max={fmt(self.max)}>"
        )


@dataclass(frozen=True, eq=False)
class Stats(Mapping[str, VariableStats]):
    """Per-variable statistics of a store (or a selection of it).

    ``stats["t2m"].mean``; ``source`` describes what was measured (URL,
    variables with their dims, shapes and dtypes, the selection as index
    ranges) so that a stream can check that the statistics fit its data.
    Write and read it with :meth:`to_json` / :meth:`from_json`.

    Examples
    --------
    >>> import numpy as np, earthstream as es
    >>> src = es.ArraySource({"x": (("t", "y"), np.arange(12.0).reshape(3, 4))})
    >>> stats = es.compute_stats(src, scheduler="sync", progress=False)
    >>> float(stats["x"].mean), float(stats["x"].max), int(stats["x"].count)
    (5.5, 11.0, 12)
    >>> path = stats.to_json(tmp_path / "x.stats.json")
    >>> float(es.Stats.from_json(path)["x"].std) == float(np.std(np.arange(12.0)))
    True
    """

    variables: Mapping[str, VariableStats]
    source: Mapping[str, Any]
    quantile_levels: tuple[float, ...] = ()
    method: Mapping[str, Any] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> VariableStats:
        try:
            return self.variables[name]
        except KeyError:
            names = list(self.variables)
            raise VariableNotFoundError(
                f"these statistics have no variable {name!r}.{suggest(name, names)} "
                f"They cover: {', '.join(names) or '(none)'}."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.variables)

    def __len__(self) -> int:
        return len(self.variables)

    # -- files ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": dict(self.source),
            "quantile_levels": list(self.quantile_levels),
            "method": dict(self.method),
            "run": dict(self.run),
            "variables": {n: v.to_dict() for n, v in self.variables.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "the data") -> Stats:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise StatsFileError(
                f"{where} is not an earthstream statistics file (format {found!r}, expected "
                f"{FORMAT!r}). Write one with `earthstream stats URL` or Stats.to_json()."
            )
        try:
            variables = {n: VariableStats.from_dict(n, v) for n, v in data["variables"].items()}
            return cls(
                variables=variables,
                source=dict(data["source"]),
                quantile_levels=tuple(float(q) for q in data.get("quantile_levels", ())),
                method=dict(data.get("method", {})),
                run=dict(data.get("run", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StatsFileError(
                f"{where} is damaged ({type(exc).__name__}: {exc}). Recompute it with "
                "`earthstream stats URL`."
            ) from exc

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the statistics as JSON to ``path`` (returned as a ``Path``)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Stats:
        """Read statistics written by :meth:`to_json` or ``earthstream stats``."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise StatsFileError(
                f"no statistics file at {str(path)!r}. Compute one with "
                f"`earthstream stats URL --output {path}`."
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StatsFileError(
                f"{str(path)!r} is not valid JSON ({exc}). Recompute it with `earthstream stats`."
            ) from exc
        return cls.from_dict(data, where=repr(str(path)))

    # -- display --------------------------------------------------------------------
    def table(self, variables: Sequence[str] | None = None) -> str:
        """A compact text table: one row per variable and group."""
        qs = self.quantile_levels
        head = ["variable", "count", "mean", "std", "min", "max"] + [f"q{q:g}" for q in qs]
        rows = [head]
        for name in variables or list(self.variables):
            v = self.variables[name]
            for idx in np.ndindex(*v.shape):
                label = name
                if v.per:
                    parts = []
                    for d, i in zip(v.per, idx, strict=True):
                        values = v.labels.get(d)
                        parts.append(f"{d}={values[i] if values else i}")
                    label += f"[{','.join(parts)}]"
                row = [label, f"{int(v.count[idx]):,}"]
                row += [f"{float(a[idx]):.6g}" for a in (v.mean, v.std, v.min, v.max)]
                row += [f"{float(v.quantiles[q][idx]):.6g}" for q in qs]
                rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        url = self.source.get("url", "?")
        return f"<Stats of {url}: {', '.join(self.variables)}>\n{self.table()}"
