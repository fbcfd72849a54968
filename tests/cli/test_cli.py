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


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "earthstream", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EARTHSTREAM_DEBUG": "", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "code", "names"),
    [
        (("info", "/nonexistent.zarr"), 1, "'/nonexistent.zarr'"),  # store error
        (("stats", "{store}", "--time", "2020-13:x"), 2, "'2020-13'"),  # bad argument
        (("stats", "{store}", "--variables", "t2mm", "--scheduler", "sync"), 2, "'t2mm'"),
        (("stats", "{store}", "--quantiles", "a,b"), 2, "--quantiles 'a,b'"),
        (("bench", "--layouts", "zstd"), 2, "'zstd'"),
        (("bench", "--torchgeo-python", "/nonexistent/python"), 2, "'/nonexistent/python'"),
        (("info", "http://user:hunter2@127.0.0.1:9/x.zarr"), 1, "127.0.0.1:9"),
    ],
)
def test_user_errors_print_one_line_and_exit_with_their_code(era5_v3, args, code, names) -> None:
    """No traceback: one line on stderr naming the offender; 2 for arguments, 1 for stores."""
    result = _run(*(a.replace("{store}", str(era5_v3)) for a in args))
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("earthstream: error: "), result.stderr
    assert names in lines[0] and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_debug_shows_the_traceback_and_version_works() -> None:
    for result in (
        _run("--debug", "info", "/nonexistent.zarr"),
        _run("info", "/nonexistent.zarr", "--debug"),
        _run("info", "/nonexistent.zarr", env={"EARTHSTREAM_DEBUG": "1"}),
    ):
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr
        assert "StoreNotFoundError" in result.stderr
    import earthstream

    version = _run("--version")
    assert (
        version.returncode == 0
        and version.stdout.strip() == f"earthstream {earthstream.__version__}"
    )
    usage = _run("info")  # argparse: usage error, code 2
    assert usage.returncode == 2 and "the following arguments are required: url" in usage.stderr
