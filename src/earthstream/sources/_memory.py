"""A source over in-memory NumPy arrays, cut into a chosen chunk grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._validate import check_whole
from ..errors import DimensionError
from ..protocols import Span
from ._base import VariableInfo, check_variables

__all__ = ["ArraySource"]


class ArraySource:
    """Stream NumPy arrays as if they were chunked on disk.

    Useful for data already in memory, and for testing a pipeline without a
    store.  ``read_chunk`` returns a view (no decode); ``decodes`` counts calls.

    Parameters
    ----------
    arrays
        Name -> ``(dims, array)``.
    chunks
        Dim -> chunk length (default: the whole dim).
    coords
        Dim -> 1-D coordinate values.

    Examples
    --------
    >>> import numpy as np
    >>> src = ArraySource({"x": (("t", "y"), np.arange(12.0).reshape(3, 4))}, chunks={"y": 2})
    >>> src.variables["x"].chunks
    (3, 2)
    >>> src.read_chunk("x", (0, 1))
    array([[ 2.,  3.],
           [ 6.,  7.],
           [10., 11.]])
    """

    def __init__(
        self,
        arrays: Mapping[str, tuple[Sequence[str], np.ndarray]],
        *,
        chunks: Mapping[str, int] | None = None,
        coords: Mapping[str, np.ndarray] | None = None,
        fill_value: Any = None,
    ) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        infos: dict[str, VariableInfo] = {}
        chunks = dict(chunks or {})
        for name, (dims, array) in arrays.items():
            array = np.asarray(array)
            dims = tuple(dims)
            if len(dims) != array.ndim:
                raise DimensionError(
                    f"variable {name!r} has {array.ndim} axes but {len(dims)} dim names {dims}; "
                    "give one name per axis."
                )
            for dim, c in chunks.items():
                check_whole(c, f"chunks[{dim!r}]", minimum=1)
            shape = tuple(int(s) for s in array.shape)
            infos[name] = VariableInfo(
                name=name,
                dims=dims,
                shape=shape,
                dtype=array.dtype.newbyteorder("="),
                chunks=tuple(
                    max(1, min(chunks.get(d, s), s)) for d, s in zip(dims, shape, strict=True)
                ),
                fill_value=fill_value,
                codecs=("memory",),
            )
            self._arrays[name] = array
        self._variables = infos
        self._coords = {d: np.asarray(v) for d, v in (coords or {}).items()}
        self.decodes = 0

    @property
    def variables(self) -> Mapping[str, VariableInfo]:
        return self._variables

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        return self._coords

    @property
    def selection(self) -> Mapping[str, Span]:
        """Empty: every position of the arrays is streamed."""
        return {}

    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        info = self._variables[name]
        self.decodes += 1
        region = tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(index, info.chunks, info.shape, strict=True)
        )
        chunk = self._arrays[name][region]
        if out is None:
            return chunk.astype(info.dtype, copy=False)  # a view unless byte order differs
        out[tuple(slice(0, n) for n in chunk.shape)] = chunk
        return out

    def select(self, variables: Sequence[str]) -> ArraySource:
        names = check_variables(variables, self._variables)
        out = ArraySource.__new__(ArraySource)
        out._arrays = {n: self._arrays[n] for n in names}
        out._variables = {n: self._variables[n] for n in names}
        out._coords = self._coords
        out.decodes = 0
        return out

    def __repr__(self) -> str:
        body = ", ".join(f"{n}{v.dims}{v.shape}" for n, v in self._variables.items())
        return f"<ArraySource {body}>"
