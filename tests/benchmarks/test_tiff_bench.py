"""The COG benchmark groundwork runs end to end on tiny files (figures are not checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rasterio")


@pytest.mark.slow
def test_tiff_bench_smoke(tmp_path: Path) -> None:
    from earthstream.benchmarks._tiff import format_rows, make_cogs, run_tiff_bench

    result = run_tiff_bench(tmp_path, files=2, size=1024, repeats=1)
    methods = [row["method"] for row in result["rows"]]
    assert methods[0].startswith("limit") and len(methods) == 6
    for row in result["rows"]:
        assert row["chips"] == 2 * (1024 // 256) ** 2
        assert row["chips_per_s"] > 0 and row["ratio_to_limit"] > 0
        if row["method"].startswith("earthstream"):
            assert row["max_decodes_per_tile"] == 1 and row["tiles_decoded"] == 2 * 4
    assert "chips/s" in format_rows(result)
    again = make_cogs(tmp_path, files=2, size=1024)  # cached: not written twice
    assert [p.stat().st_mtime for p in again] == [Path(p).stat().st_mtime for p in result["files"]]
