"""The console command: the demo runs end to end on a small store; info describes a store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from earthstream.cli import main


def test_info(era5_v3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(era5_v3)]) == 0
    out = capsys.readouterr().out
    assert "t2m" in out and "chunks=(1, 16, 32)" in out


@pytest.mark.slow
def test_demo_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "earthstream",
            "demo",
            "--small",
            "--seconds",
            "6",
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "demo-prediction.png").stat().st_size > 10_000
    assert "samples/s" in result.stdout and "figure:" in result.stdout


@pytest.mark.slow
def test_demo_multimodal_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "earthstream", "demo", "--multimodal", "--small"),
            *("--seconds", "6", "--cache-dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "demo-multimodal-prediction.png").stat().st_size > 10_000
    out = result.stdout
    assert "static: CHW [2, 24, 24] channels=['lsm', 'orography']" in out
    assert "upper: VTLHW [1, 2, 3, 24, 24]" in out and "persistence" in out
