"""A conformance test class every source passes (as zarr-python's ``StoreTests``).

Subclass :class:`SourceTests` in a test module and give it the source under test
and an independent reference, and pytest runs the whole contract of
:class:`earthstream.protocols.ChunkedSource` on it, plus whatever capabilities it
declares::

    import numpy as np, pytest, rasterio
    from earthstream.sources import open_tiff
    from earthstream.testing import SourceTests

    class TestMyCOG(SourceTests):
        capabilities = frozenset({"stats", "locate"})

        @pytest.fixture(scope="class")
        def source(self, cog_path):
            return open_tiff(cog_path)

        @pytest.fixture(scope="class")
        def reference(self, cog_path):  # what an independent reader gives
            with rasterio.open(cog_path) as ds:
                return {"band_data": ds.read()}

Needs pytest (imported with this module, which ``earthstream.testing`` loads only
when :class:`SourceTests` is asked for).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pytest

from ..errors import VariableNotFoundError
from ..protocols import (
    ChunkedSource,
    SourceCapabilities,
    Span,
    VariableInfo,
    is_chunked_source,
    provides_split_fetch,
)

__all__ = ["SourceTests"]

Index = tuple[int, ...]


def chunk_indices(info: VariableInfo, most: int) -> list[Index]:
    """Up to ``most`` chunk indices of ``info``, spread over its grid (first and last
    included)."""
    grid = info.chunk_grid
    total = int(np.prod(grid, dtype=np.int64))
    if total == 0:
        return []
    flat = np.unique(np.linspace(0, total - 1, min(total, most)).round().astype(np.int64))
    return [tuple(int(i) for i in np.unravel_index(f, grid)) for f in flat]


def chunk_region(info: VariableInfo, index: Index) -> tuple[slice, ...]:
    """The part of the array chunk ``index`` covers (cut at the array's end)."""
    return tuple(
        slice(i * c, min((i + 1) * c, s))
        for i, c, s in zip(index, info.chunks, info.shape, strict=True)
    )


def _inside(chunk: np.ndarray, region: tuple[slice, ...]) -> np.ndarray:
    return chunk[tuple(slice(0, r.stop - r.start) for r in region)]


class SourceTests:
    """The gridded-source contract as tests; subclass it with two fixtures.

    Fixtures the subclass gives
    ---------------------------
    ``source``
        The source under test.
    ``reference``
        ``name -> array``: every variable's decoded values over its whole shape,
        as a reader that does not share the source's code gives them (xarray,
        zarr-python, rasterio, or the NumPy arrays themselves), NaN where values
        are masked.  Values are compared exactly after casting to the variable's
        delivered dtype.

    Optional: a ``reference_coords`` fixture (``dim -> values``), and class
    attributes ``capabilities`` (which of ``"split"``, ``"stats"``, ``"locate"``
    :meth:`SourceCapabilities.of <earthstream.protocols.SourceCapabilities.of>` must
    find: declared and found must agree), ``missing`` (``(name, index)`` of chunks
    that are not stored) and ``max_chunks`` (chunks compared per variable).
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    missing: ClassVar[tuple[tuple[str, Index], ...]] = ()
    max_chunks: ClassVar[int] = 48

    @pytest.fixture
    def reference_coords(self) -> Mapping[str, np.ndarray] | None:
        return None

    # -- helpers -----------------------------------------------------------------------
    def _checked(self, source: ChunkedSource) -> Iterator[tuple[VariableInfo, Index]]:
        missing = {(n, tuple(i)) for n, i in self.missing}
        for info in source.variables.values():
            for index in chunk_indices(info, self.max_chunks):
                yield info, index
        for name, index in sorted(missing):
            yield source.variables[name], index

    def _assert_chunk(
        self,
        info: VariableInfo,
        index: Index,
        got: np.ndarray | None,
        reference: Mapping[str, np.ndarray],
    ) -> None:
        region = chunk_region(info, index)
        want = np.asarray(reference[info.name])[region]
        where = f"chunk {index} of {info.name!r}"
        if got is None:
            assert (info.name, index) in {(n, tuple(i)) for n, i in self.missing}, (
                f"{where} read as not stored, but the subclass does not list it in `missing`"
            )
            fill = np.full(want.shape, info.fill_value if info.fill_value is not None else 0)
            np.testing.assert_array_equal(
                fill.astype(info.dtype), want.astype(info.dtype), err_msg=where
            )
            return
        assert got.dtype == info.dtype, f"{where}: dtype {got.dtype}, described {info.dtype}"
        assert all(g >= r.stop - r.start for g, r in zip(got.shape, region, strict=True)), (
            f"{where}: shape {got.shape} does not cover {region}"
        )
        np.testing.assert_array_equal(_inside(got, region), want.astype(info.dtype), err_msg=where)

    # -- the contract --------------------------------------------------------------------
    def test_is_a_source(self, source: Any) -> None:
        assert is_chunked_source(source), f"{type(source).__name__} lacks source members"

    def test_variables_describe_the_reference(
        self, source: ChunkedSource, reference: Mapping[str, np.ndarray]
    ) -> None:
        assert source.variables, "a source has at least one variable"
        for name, info in source.variables.items():
            assert info.name == name
            assert len(info.dims) == len(info.shape) == len(info.chunks)
            assert all(c >= 1 for c in info.chunks), info.chunks
            assert info.dtype.isnative, f"{name}: {info.dtype} is not in native byte order"
            assert name in reference, f"no reference for {name!r}"
            assert tuple(np.shape(reference[name])) == info.shape, name
            assert len(info.chunk_grid) == info.ndim

    def test_chunks_equal_the_reference(
        self, source: ChunkedSource, reference: Mapping[str, np.ndarray]
    ) -> None:
        for info, index in self._checked(source):
            self._assert_chunk(info, index, source.read_chunk(info.name, index), reference)

    def test_chunks_decode_into_out(
        self, source: ChunkedSource, reference: Mapping[str, np.ndarray]
    ) -> None:
        """With ``out`` the chunk is written into it (from its origin) and ``out`` comes
        back; a chunk not stored gives ``None``."""
        for info, index in self._checked(source):
            out = np.empty(info.chunks, dtype=info.dtype)
            got = source.read_chunk(info.name, index, out)
            if got is not None:
                assert got is out, f"chunk {index} of {info.name!r}: `out` was not returned"
            self._assert_chunk(info, index, got, reference)

    def test_missing_chunks_read_as_not_stored(self, source: ChunkedSource) -> None:
        if not self.missing:
            pytest.skip("the subclass lists no missing chunks")
        for name, index in self.missing:
            info = source.variables[name]
            assert source.read_chunk(name, tuple(index)) is None
            assert source.read_chunk(name, tuple(index), np.empty(info.chunks, info.dtype)) is None

    def test_reads_from_threads(
        self, source: ChunkedSource, reference: Mapping[str, np.ndarray]
    ) -> None:
        """``read_chunk`` is thread-safe: chunks read by several threads at once are right."""
        work = list(self._checked(source))

        def read(item: tuple[VariableInfo, Index]) -> np.ndarray | None:
            info, index = item
            return source.read_chunk(info.name, index, np.empty(info.chunks, info.dtype))

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(read, work * 2))
        for (info, index), got in zip(work * 2, results, strict=True):
            self._assert_chunk(info, index, got, reference)

    def test_coords(
        self,
        source: ChunkedSource,
        reference_coords: Mapping[str, np.ndarray] | None,
    ) -> None:
        sizes = {d: n for info in source.variables.values() for d, n in info.sizes().items()}
        for dim, values in source.coords.items():
            assert np.ndim(values) == 1, f"coordinate {dim!r} is not 1-D"
            if dim in sizes:
                assert len(values) == sizes[dim], f"coordinate {dim!r}: {len(values)} values"
        for dim, want in (reference_coords or {}).items():
            np.testing.assert_array_equal(np.asarray(source.coords[dim]), np.asarray(want))

    def test_selection(self, source: ChunkedSource) -> None:
        sizes = {d: n for info in source.variables.values() for d, n in info.sizes().items()}
        selection = source.selection
        assert isinstance(selection, Mapping)
        for dim, span in selection.items():
            assert isinstance(span, Span), f"selection[{dim!r}] is a {type(span).__name__}"
            assert dim in sizes, f"selection names {dim!r}, which no variable has"
            assert 0 <= span.start < span.stop <= sizes[dim], (dim, span)

    def test_select(self, source: ChunkedSource, reference: Mapping[str, np.ndarray]) -> None:
        names = list(source.variables)
        last = names[-1]
        picked = source.select([last])
        assert list(picked.variables) == [last]
        assert dict(picked.selection) == dict(source.selection)
        info = picked.variables[last]
        for index in chunk_indices(info, 4):
            self._assert_chunk(info, index, picked.read_chunk(last, index), reference)
        with pytest.raises(VariableNotFoundError):
            source.select(["no such variable"])
        if len(names) > 1:
            assert list(source.select(names[::-1]).variables) == names[::-1]

    def test_pickles(self, source: ChunkedSource, reference: Mapping[str, np.ndarray]) -> None:
        """A source pickles as its description (to DataLoader and Dask workers)."""
        copy: ChunkedSource = pickle.loads(pickle.dumps(source))
        assert list(copy.variables) == list(source.variables)
        assert dict(copy.selection) == dict(source.selection)
        for info in copy.variables.values():
            index = chunk_indices(info, 1)[0]
            self._assert_chunk(info, index, copy.read_chunk(info.name, index), reference)

    # -- capabilities ----------------------------------------------------------------------
    def test_capabilities_as_declared(self, source: ChunkedSource) -> None:
        caps = SourceCapabilities.of(source)
        found = {
            name
            for name, present in (
                ("split", caps.split is not None),
                ("stats", caps.stats is not None),
                ("locate", caps.locate is not None),
            )
            if present
        }
        assert found == set(self.capabilities), (
            f"declared {sorted(self.capabilities)}, found {sorted(found)}"
        )
        assert (caps.io_concurrency > 0) == ("split" in found)

    def test_split_fetch_equals_read(
        self, source: ChunkedSource, reference: Mapping[str, np.ndarray]
    ) -> None:
        """Fetched then decoded, chunks equal ``read_chunk``'s, grouped or not."""
        variables = source.variables
        if not provides_split_fetch(source):
            pytest.skip("the source reads in one step")
        for info in variables.values():
            indices = chunk_indices(info, 8) + [tuple(i) for n, i in self.missing if n == info.name]
            raws = source.fetch_chunks(info.name, indices)
            assert len(raws) == len(indices)
            for index, raw in zip(indices, raws, strict=True):
                hash(source.fetch_group(info.name, index))
                out = np.empty(info.chunks, dtype=info.dtype)
                got = source.decode_chunk(info.name, index, raw, out)
                assert got is None or got is out
                self._assert_chunk(info, index, got, reference)

    def test_request_counts(self, source: ChunkedSource) -> None:
        caps = SourceCapabilities.of(source)
        if caps.stats is None:
            pytest.skip("the source does not count requests")
        before = caps.counts()
        assert before is not None
        info = next(iter(source.variables.values()))
        stored = [i for i in chunk_indices(info, 8) if (info.name, i) not in set(self.missing)]
        for index in stored:
            source.read_chunk(info.name, index)
        after = caps.counts()
        assert after is not None
        for key in ("requests", "retries", "bytes"):
            assert isinstance(after[key], int) and after[key] >= before[key], key
        assert after["requests"] > before["requests"], "reads were not counted"
        assert all(isinstance(n, int) for n in after["failures"].values())

    def test_chunk_locations(self, source: ChunkedSource) -> None:
        caps = SourceCapabilities.of(source)
        if caps.locate is None:
            pytest.skip("the source does not say where chunks are")
        info = next(iter(source.variables.values()))
        indices = chunk_indices(info, 2)
        places = [caps.where(info.name, index) for index in indices]
        assert all(isinstance(p, str) and p for p in places)
        if len(indices) > 1:
            assert places[0] != places[1], "two chunks located at one place"

    @staticmethod
    def chunk_indices(info: VariableInfo, most: int) -> Sequence[Index]:
        """Chunk indices the tests read (for subclasses that add tests of their own)."""
        return chunk_indices(info, most)
