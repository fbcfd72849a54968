"""`earthstream bench --smoke`: runs every method on a tiny store; the JSON has every field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from earthstream.benchmarks import FIELDS


@pytest.mark.slow
def test_smoke_json_has_every_field(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "earthstream",
            "bench",
            "--smoke",
            "--suite",
            "patches",
            "--layouts",
            "zstd-t1,sharded",
            "--cache-dir",
            str(tmp_path),
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    rows = out["rows"]
    methods = {(r["layout"], r["method"]) for r in rows}
    for method in ("limit", "earthstream", "xbatcher", "es.xbatcher", "naive"):
        assert ("zstd-t1", method) in methods
    assert ("sharded", "earthstream") in methods
    variants = {r["variant"] for r in rows if r["method"] == "earthstream"}
    assert {"shuffle=chunks", "grid order", "shuffle=full, cache 1/4 of data"} <= variants
    for row in rows:
        assert set(FIELDS) <= set(row), set(FIELDS) - set(row)
        if row["method"] != "limit":
            assert row["samples"] > 0 and row["samples_per_s"] > 0
            assert row["ratio_to_limit"] > 0 and row["peak_rss_mb"] > 0
    assert out["scale"]["sizes"] == ["smoke", "smoke-x4"]
    assert out["scale"]["limit_normalized_ratio"] > 0
    assert all(v > 0 for v in out["scale"]["budget_rss_mb"])
    # every process reports its own peak (VmHWM), not the runner's carried over fork/exec
    assert len({round(r["peak_rss_mb"]) for r in rows}) > 1
    remote = {r["variant"] for r in rows if "http" in r["variant"] or "s3" in r["variant"]}
    assert {"shuffle=chunks, http, proxy +0 ms", "shuffle=chunks, http, proxy +20 ms"} <= remote
    assert any("s3, moto" in v for v in remote)
    assert out["remote"]["ratio_latency_over_none"] > 0
    assert {t["target"].split(" ")[0] for t in out["targets"]} >= {
        "shuffle=chunks",
        "time",
        "earthstream.xbatcher",
    }


@pytest.mark.slow
def test_weather_smoke_rows(tmp_path: Path) -> None:
    """The weather suite: whole-field forecast rows against the limit and the plain
    xarray DataLoader, through earthstream plain and its torch loader; 1-degree patches."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "earthstream",
            "bench",
            "--smoke",
            "--suite",
            "weather",
            "--cache-dir",
            str(tmp_path),
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    rows = out["rows"]
    for layout in ("era5-1deg", "era5-025"):
        mine = {r["method"]: r for r in rows if r["layout"] == layout}
        assert set(mine) == {"limit", "earthstream", "xarray"}, layout
        variants = [r["variant"] for r in rows if r["layout"] == layout]
        assert any("torch loader" in v for v in variants)
        for row in (r for r in rows if r["layout"] == layout and r["method"] != "limit"):
            assert row["samples"] > 0 and row["ratio_to_limit"] > 0
            assert row["earthstream_over_this"] > 0
    assert any(r["layout"].startswith("zstd-t1") and r["method"] == "limit" for r in rows)
    names = {t["target"] for t in out["targets"]}
    assert "era5-1deg: >= 8x xarray Dataset + DataLoader" in names
    assert any(n.startswith("1-degree chunks") for n in names)
    # a MultiStream joining a second store, against one Stream of the same variables
    multi = [r for r in rows if r["layout"] == "multistream-1deg"]
    assert [r["method"] for r in multi] == ["limit"] + ["earthstream"] * 3
    assert multi[-1]["variant"].startswith("MultiStream") and multi[-1]["samples"] > 0
    assert multi[1]["samples"] == multi[-1]["samples"]  # the same windows
    assert any(n.startswith("multistream-1deg: MultiStream") for n in names)
