"""The engine reads any number of inputs through a stream kind's planner and assembler.

A kind of this test's own (the seam step 2 builds on): the primary's windows on
one store, and for each of them a box of a second store at a start of its own
(shifted, partly outside the array: padding).  The oracle is NumPy on xarray's
read of both stores.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import earthstream as es
from earthstream.engine import (
    BatchArrays,
    BatchBuffers,
    BatchPlan,
    Budget,
    Engine,
    SlotPool,
    StreamKind,
    VarLayout,
    cut_var,
    frame_of,
    new_array,
    plan_var,
)
from earthstream.errors import ConfigError
from earthstream.protocols import SourceCapabilities, Span, VariableInfo
from earthstream.sampling import OrderSpec, WindowGrid, build_window_grid

SHIFT = np.array([1, -2, 3])  # the second input's box start: the window's, shifted
WINDOW = (1, 8, 8)  # time iterated, 8 x 8 windows


@dataclass(frozen=True)
class ShiftedPlanner:
    """Windows of the grid; variables of input 1 read from shifted starts."""

    grid: WindowGrid
    variables: tuple[VarLayout, ...]

    def plan(self, batches: Sequence[tuple[int, np.ndarray]]) -> list[BatchPlan]:
        ids = np.concatenate([i for _, i in batches])
        bounds = np.concatenate(([0], np.cumsum([len(i) for _, i in batches])))
        starts = self.grid.starts_of(ids)
        per_var = [
            plan_var(var, vi, len(self.variables), starts + (SHIFT if var.input else 0), bounds)
            for vi, var in enumerate(self.variables)
        ]
        return [
            BatchPlan(
                index=j,
                ids=i,
                starts=starts[bounds[b] : bounds[b + 1]],
                vars=[p[b] for p in per_var],
                padded=True,  # shifted boxes leave the array: frames hold the fill value first
            )
            for b, (j, i) in enumerate(batches)
        ]


@dataclass(frozen=True)
class PerVariableAssembler:
    """One array per variable, named by its batch name."""

    variables: tuple[VarLayout, ...]

    def cut(
        self,
        pools: Sequence[SlotPool],
        plan: BatchPlan,
        slots: Sequence[np.ndarray],
        buffers: BatchBuffers | None,
    ) -> BatchArrays:
        n = len(plan.ids)
        data = {
            var.batch_name: cut_var(pool, vplan, s, n, None, plan.padded, buffers)
            for var, vplan, pool, s in zip(self.variables, plan.vars, pools, slots, strict=True)
        }
        return BatchArrays(data, None, sum(a.nbytes for a in data.values()))

    def allocate(self, n: int, prefill: bool, buffers: BatchBuffers | None) -> BatchArrays:
        data = {v.batch_name: new_array(v, n, prefill, buffers) for v in self.variables}
        return BatchArrays(data, None, sum(a.nbytes for a in data.values()))

    def frame(self, arrays: BatchArrays, var: int) -> np.ndarray:
        v = self.variables[var]
        return frame_of(arrays.data[v.batch_name], v)

    def take_rows(self, arrays: BatchArrays, rows: np.ndarray | slice) -> BatchArrays:
        data = {k: np.array(a[rows]) for k, a in arrays.data.items()}
        return BatchArrays(data, None, sum(a.nbytes for a in data.values()))

    def finish(self, plan: BatchPlan, arrays: BatchArrays, epoch: int) -> es.Batch:
        return es.Batch(
            data=arrays.data,
            dims={v.batch_name: v.sample_dims for v in self.variables},
            starts={"time": plan.starts[:, 0], "lat": plan.starts[:, 1], "lon": plan.starts[:, 2]},
            coords={},
            window_ids=plan.ids,
            epoch=epoch,
            index=plan.index,
        )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inputs")
    a = es.datasets.era5_like(
        root / "a.zarr", n_times=5, n_lat=16, n_lon=24, variables=["t2m", "u10"],
        chunks={"time": 1, "lat": 8, "lon": 8},
    )  # fmt: skip
    b = es.datasets.era5_like(
        root / "b.zarr", n_times=5, n_lat=16, n_lon=24, variables=["t2m"], seed=1,
        chunks={"time": 2, "lat": 5, "lon": 7},
    )  # fmt: skip
    return a, b


def kind_for(a: Any, b: Any, shuffle: str) -> tuple[StreamKind, Budget, OrderSpec]:
    keep = (False, True, True)
    variables = (
        VarLayout.of(a.variables["t2m"], WINDOW, keep=keep),
        VarLayout.of(a.variables["u10"], WINDOW, keep=keep),
        VarLayout.of(b.variables["t2m"], WINDOW, input=1, label="b/t2m", keep=keep),
    )
    sizes = dict(zip(("time", "lat", "lon"), a.variables["t2m"].shape, strict=True))
    grid = build_window_grid(sizes, {"lat": 8, "lon": 8}, None, "drop", {"time": 1})
    kind = StreamKind(variables, ShiftedPlanner(grid, variables), PerVariableAssembler(variables))
    memory = 64 << 20
    batch_nbytes = 7 * sum(v.chunk_nbytes for v in variables)
    budget = Budget(memory, batch_nbytes, 2, memory - 3 * batch_nbytes)
    return kind, budget, OrderSpec(grid=grid, shuffle=shuffle, seed=3, batch_size=7)


def build(inputs: Sequence[Any], shuffle: str = "full") -> tuple[Engine, OrderSpec]:
    kind, budget, order = kind_for(inputs[0], inputs[1], shuffle)
    return Engine(inputs, kind, budget, num_threads=2), order


def expected(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    out = np.full(WINDOW, np.nan, dtype=values.dtype)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + WINDOW, values.shape)
    if (hi > lo).all():
        src = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
        out[dst] = values[src]
    return out[0]


def test_two_inputs_through_one_engine(stores: tuple[Path, Path], open_xr: Any) -> None:
    inputs = [es.open_zarr(p) for p in stores]
    engine, order = build(inputs)
    ref_a, ref_b = open_xr(stores[0]), open_xr(stores[1])
    before = [s.request_stats() for s in inputs]
    seen = []
    for batch in engine.run(order.epoch(0), range(order.n_batches)):
        assert set(batch) == {"t2m", "u10", "b/t2m"}
        for i in range(batch.size):
            start = np.array([batch.starts[d][i] for d in ("time", "lat", "lon")])
            for name in ("t2m", "u10"):
                want = expected(ref_a[name].values, start)
                np.testing.assert_array_equal(batch[name][i], want)
            np.testing.assert_array_equal(
                batch["b/t2m"][i], expected(ref_b["t2m"].values, start + SHIFT)
            )
            seen.append(int(batch.window_ids[i]))
    assert sorted(seen) == list(range(order.n_windows))
    report = engine.report
    assert report is not None and report.finished and report.requests > 0
    after = [s.request_stats() for s in inputs]
    # one report: requests and bytes of both inputs, decodes of both keyed by batch name
    assert report.requests == sum(
        x["requests"] - y["requests"] for x, y in zip(after, before, strict=True)
    )
    assert report.bytes_read == sum(
        x["bytes"] - y["bytes"] for x, y in zip(after, before, strict=True)
    )
    names = {name for name, _ in report.decodes}
    assert names == {"t2m", "u10", "b/t2m"}
    assert set(report.decodes.values()) == {1}  # all fits: each chunk decoded once


class FetchedSource:
    """An in-memory source that fetches and decodes in two steps (as a remote store
    does), counting how often its capability members are looked at."""

    def __init__(self, inner: es.ArraySource) -> None:
        self.inner = inner
        self.concurrency_reads = 0
        self.fetches: list[int] = []

    @property
    def variables(self) -> Mapping[str, VariableInfo]:
        return self.inner.variables

    @property
    def coords(self) -> Mapping[str, np.ndarray]:
        raise AssertionError("coords read: capabilities must be looked up without it")

    @property
    def selection(self) -> Mapping[str, Span]:
        return {}

    def read_chunk(
        self, name: str, index: tuple[int, ...], out: np.ndarray | None = None
    ) -> np.ndarray | None:
        raise AssertionError("a two-step source is read in two steps")

    def select(self, variables: Sequence[str]) -> FetchedSource:
        return FetchedSource(self.inner.select(variables))

    @property
    def io_concurrency(self) -> int:
        self.concurrency_reads += 1
        return 3

    def fetch_group(self, name: str, index: tuple[int, ...]) -> Hashable:
        return index[:-1]

    def fetch_chunks(self, name: str, indices: Sequence[tuple[int, ...]]) -> list[Any]:
        self.fetches.append(len(indices))
        return [None if index[0] == 4 else index for index in indices]  # step 4: not stored

    def decode_chunk(
        self, name: str, index: tuple[int, ...], raw: Any, out: np.ndarray | None = None
    ) -> np.ndarray | None:
        assert raw == index
        return self.inner.read_chunk(name, index, out)


def test_capabilities_resolved_once_and_two_steps(stores: tuple[Path, Path], open_xr: Any) -> None:
    """A second input that fetches and decodes in two steps: capabilities are looked up
    once, without reading ``coords``; its fetches are grouped; missing chunks fill."""
    values = np.asarray(open_xr(stores[1])["t2m"].values)
    inner = es.ArraySource(
        {"t2m": (("time", "lat", "lon"), values)},
        chunks={"time": 1, "lat": 5, "lon": 7},
        fill_value=np.nan,
    )
    fetched = FetchedSource(inner)
    caps = SourceCapabilities.of(fetched)
    assert caps.split is fetched and caps.io_concurrency == 3 and caps.stats is None
    fetched.concurrency_reads = 0
    primary = es.open_zarr(stores[0])
    engine, order = build([primary, fetched], shuffle="none")
    assert fetched.concurrency_reads == 1 and engine.io_concurrency == 3
    holes = values.copy()
    holes[4] = np.nan  # the step the source does not store
    for batch in engine.run(order.epoch(1), range(order.n_batches)):
        for i in range(batch.size):
            start = np.array([batch.starts[d][i] for d in ("time", "lat", "lon")])
            want = expected(holes, start + SHIFT)
            np.testing.assert_array_equal(batch["b/t2m"][i], want)
    assert fetched.concurrency_reads == 1  # never again while running
    assert max(fetched.fetches) > 1  # a group's chunks fetched in one call
    report = engine.report
    assert report is not None and report.chunks_missing > 0


def test_variables_must_read_an_input(stores: tuple[Path, Path]) -> None:
    a, b = (es.open_zarr(p) for p in stores)
    kind, budget, _ = kind_for(a, b, "none")
    with pytest.raises(ConfigError, match=r"inputs \[1\], but the engine has 1 inputs"):
        Engine([a], kind, budget, num_threads=1)
