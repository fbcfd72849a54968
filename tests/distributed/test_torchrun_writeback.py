"""Inference and write-back under a real ``torchrun --nproc-per-node 2`` (gloo, CPU, one
DataLoader worker per rank): the 2-rank store is bitwise equal to one process's, ranks
write disjoint chunks, and a job pre-empted after k batches per rank resumes (in fresh
processes) to the same store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from .test_torchrun import launch

JOB = Path(__file__).with_name("writeback_job.py")
K = 2  # batches per rank before the pre-emption

pytestmark = pytest.mark.slow


def job(store: Path, target: Path, report: Path, *, ranks: int, stop: int | None = None) -> None:
    args = ["--store", str(store), "--target", str(target), "--report", str(report)]
    if stop is not None:
        args += ["--stop", str(stop)]
    if ranks == 1:
        launch([sys.executable, str(JOB), *args], store.parent)
        return
    launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(ranks),
            str(JOB),
            *args,
        ],
        store.parent,
    )


def files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def reports(path: Path, name: str, ranks: int) -> list[dict[str, Any]]:
    return [json.loads((path / f"{name}-rank{r}.json").read_text()) for r in range(ranks)]


def test_two_ranks_write_the_same_store_as_one(era5_v3: Path, tmp_path: Path) -> None:
    job(era5_v3, tmp_path / "one.zarr", tmp_path / "one", ranks=1)
    job(era5_v3, tmp_path / "two.zarr", tmp_path / "two", ranks=2)
    two = reports(tmp_path, "two", 2)
    assert two[0]["len"] == two[1]["len"] == two[0]["steps"] == two[1]["steps"]
    assert sum(r["written"] for r in two) == two[0]["total"]
    assert all(r["written"] == r["owned"] for r in two)
    assert files(tmp_path / "one.zarr") == files(tmp_path / "two.zarr")
    src, out = xr.open_zarr(era5_v3), xr.open_zarr(tmp_path / "two.zarr")
    for name in ("t2m", "u10"):
        np.testing.assert_array_equal(out[name].values, src[name].values)

    # pre-empted after K batches per rank, then resumed by a fresh 2-rank job
    job(era5_v3, tmp_path / "again.zarr", tmp_path / "part", ranks=2, stop=K)
    part = reports(tmp_path, "part", 2)
    assert all(r["steps"] == K for r in part)
    assert 0 < sum(r["written"] for r in part) < part[0]["total"]
    job(era5_v3, tmp_path / "again.zarr", tmp_path / "rest", ranks=2)
    rest = reports(tmp_path, "rest", 2)
    assert sum(r["skipped"] for r in rest) == sum(r["written"] for r in part)
    assert rest[0]["steps"] == rest[1]["steps"]
    assert files(tmp_path / "again.zarr") == files(tmp_path / "one.zarr")
