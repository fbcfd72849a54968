"""The chip suite and its torchgeo peer harness (figures are not checked).

The peer's torchgeo parts run only where a torchgeo 0.10 environment is given
(``EARTHSTREAM_TORCHGEO_PYTHON``, see docs/performance.md); CI has none, so they
are skipped there.  Everything else (measuring, files, rows, the earthstream
rows end to end) runs here.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rasterio")

from earthstream.benchmarks import _torchgeo_peer as peer
from earthstream.benchmarks._chips_suite import (
    EARTHSTREAM_ROWS,
    ENV_VAR,
    PEER_SCRIPT,
    chip_rows,
    make_chip_files,
    peer_python,
)
from earthstream.errors import ConfigError

TORCHGEO = os.environ.get(ENV_VAR)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_chip_files(tmp_path_factory.mktemp("chips"), scenes=2, size=1024)


def test_peer_imports_no_earthstream_code() -> None:
    """It runs by path in another environment: no earthstream import, no relative import."""
    tree = ast.parse(PEER_SCRIPT.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("earthstream")
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("earthstream") for a in node.names)


def test_peer_runs_by_path_without_loading_earthstream(files) -> None:  # type: ignore[no-untyped-def]
    """The plain loader, through the peer's own ``main``, loaded from its file."""
    spec = {
        "method": "rasterio",
        "files": files.paths,
        "size": files.size,
        "order": "random",
        "repeats": 1,
        "budget_s": 0.2,
        "warmup_s": 0.1,
    }
    code = (
        "import importlib.util, sys\n"
        f"s = importlib.util.spec_from_file_location('peer', {str(PEER_SCRIPT)!r})\n"
        "m = sys.modules['peer'] = importlib.util.module_from_spec(s)\n"
        "s.loader.exec_module(m)\n"
        "m.main(sys.argv[1:])\n"
        "print(sorted(n for n in sys.modules if n.startswith('earthstream')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    *_, result, loaded = out.stdout.strip().splitlines()
    assert loaded == "[]"
    run = json.loads(result)["runs"][0]
    assert run["samples"] > 0 and run["cpu_s"] > 0 and run["elapsed_s"] > 0


def test_tree_cpu_counts_live_children_as_the_kernel_does() -> None:
    """A child burning CPU shows while it lives; after it is reaped, ``getrusage`` of the
    children (the kernel's account, not our /proc reading) agrees."""
    before = peer.tree_cpu_s()
    reaped0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    burn = (
        "import time, sys\nt = time.process_time()\n"
        "while time.process_time() - t < 0.4: pass\nprint('done', flush=True)\ntime.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        live = peer.tree_cpu_s() - before
        assert live >= 0.35
    finally:
        child.kill()
        child.wait()
    reaped1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    kernel = (reaped1.ru_utime + reaped1.ru_stime) - (reaped0.ru_utime + reaped0.ru_stime)
    assert abs(live - kernel) < 0.15 + 0.1 * kernel
    assert peer.tree_cpu_s() - before >= kernel - 0.05  # continuous once reaped


def test_slicer_stops_at_budget_or_chips() -> None:
    def batches():  # type: ignore[no-untyped-def]
        while True:
            time.sleep(0.01)
            yield np.zeros((16, 1))

    slicer = peer.Slicer(batches(), len)
    by_chips = slicer.slice(10.0, max_chips=48)
    assert by_chips["samples"] == 48 and by_chips["batches"] == 3
    by_time = slicer.slice(0.1)
    assert 0.1 <= by_time["elapsed_s"] < 1.0 and by_time["samples"] % 16 == 0
    assert by_time["machine_busy_cores"] is not None and len(by_time["load_average"]) == 6
    epochs = peer.endless(lambda n: iter([n, n]))
    assert [next(epochs) for _ in range(5)] == [0, 0, 1, 1, 2]


def test_plain_loader_reads_the_files_chips(files) -> None:  # type: ignore[no-untyped-def]
    """Every chip of an epoch, in the permuted order, against whole-file rasterio reads."""
    import rasterio

    whole = []
    for path in files.paths:
        with rasterio.open(path) as ds:
            whole.append(ds.read())
    positions = peer.chip_positions(files.paths, files.size, "random", seed=3)
    assert sorted(positions) == peer.chip_positions(files.paths, files.size, "grid")
    chips = np.concatenate(list(peer.rasterio_batches(files.paths, files.size, "random", seed=3)))
    assert len(chips) == files.epoch_chips == len(positions)
    for chip, (f, r, c) in zip(chips, positions, strict=True):
        np.testing.assert_array_equal(chip, whole[f][:, r : r + 256, c : c + 256])


def test_labels_cover_the_scenes_in_both_formats(files) -> None:  # type: ignore[no-untyped-def]
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    parquet = gpd.read_parquet(files.labels)
    fgb = gpd.read_file(files.labels_fgb)
    assert len(parquet) == len(fgb) > 0 and parquet.crs.to_epsg() == 4326
    assert set(parquet["class"]) == {1, 2, 3} and parquet.is_valid.all()
    with rasterio.open(files.cogs[0]) as ds:
        scene = box(*ds.bounds)
    assert parquet.to_crs(32633).intersects(scene).sum() > 0.3 * len(parquet)


def test_rows_pair_with_earthstream_rows() -> None:
    plain = chip_rows(torchgeo=False)
    assert {r.method for r in plain} == {"limit", "rasterio", "earthstream"}
    full = chip_rows(torchgeo=True)
    tg = [r for r in full if r.method == "torchgeo"]
    assert len(tg) == 10 and {r.spec["workers"] for r in tg} == {0, 2}
    for row in full:
        assert row.pair is None or row.pair in EARTHSTREAM_ROWS


def test_peer_python_from_argument_or_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert peer_python(None) is None
    monkeypatch.setenv(ENV_VAR, sys.executable)
    assert peer_python(None) == sys.executable
    missing = tmp_path / "nope" / "python"
    with pytest.raises(ConfigError, match=r"docs/performance\.md") as info:
        peer_python(missing)
    assert repr(str(missing)) in str(info.value)


@pytest.mark.slow
def test_chip_suite_smoke_without_torchgeo(tmp_path: Path) -> None:
    """``earthstream bench --smoke --suite chips`` with no torchgeo environment: every
    earthstream row measured, the torchgeo rows skipped with a note saying how to enable them."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    args = ["bench", "--smoke", "--suite", "chips", "--cache-dir", str(tmp_path), "--json", "-"]
    result = subprocess.run(
        [sys.executable, "-m", "earthstream", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    rows = out["rows"]
    variants = {r["variant"] for r in rows if r["method"] == "earthstream"}
    assert variants == set(EARTHSTREAM_ROWS)
    assert not [r for r in rows if r["method"] == "torchgeo"]
    assert "--torchgeo-python" in out["chips"]["skipped"]
    for row in rows:
        assert row["samples_per_s"] > 0 and row["cpu_ms_per_chip"] > 0
        assert row["ratio_to_limit"] > 0
    assert any(t["target"].startswith("COG chips") for t in out["targets"])


@pytest.mark.slow
@pytest.mark.skipif(not TORCHGEO, reason=f"no torchgeo environment (${ENV_VAR})")
def test_torchgeo_peer_measures_and_checks(files) -> None:  # type: ignore[no-untyped-def]
    """In the torchgeo environment: a grid run through a DataLoader, and torchgeo's chips
    against rasterio's reads (native grid equal; reprojection differs, by design)."""
    base = {"files": files.paths, "size": files.size, "labels": str(files.labels)}
    base |= {"crs": "EPSG:4326", "res": None, "repeats": 1, "budget_s": 0.5, "warmup_s": 0.2}

    def run(spec: dict) -> dict:  # type: ignore[type-arg]
        out = subprocess.run(
            [str(TORCHGEO), str(PEER_SCRIPT), json.dumps({**base, **spec})],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    measured = run({"method": "torchgeo", "variant": "grid", "workers": 0})
    assert measured["runs"][0]["samples"] > 0
    assert measured["info"]["torchgeo"].startswith("0.10")
    assert measured["info"]["epoch_chips"] == files.epoch_chips
    check = run({"method": "check", "chips": 2})
    for order in ("grid", "random"):
        assert check["native"][order]["equal"] == check["native"][order]["chips"] == 2
    assert check["labels"]["pixels_equal"] > 0.99  # torchgeo misses a few edge polygons
    assert check["reprojection"]["bilinear"]["pixels_compared"] > 0
