"""The JAX tests (``jax_cases.py``) and the doctests of ``delivery/_jax.py``, in a fresh
interpreter.

JAX starts threads when it initializes; a process that forks afterwards (this test
process starts DataLoader workers with ``fork``) risks a deadlock, and JAX warns about
it.  So JAX is never initialized here: the root ``conftest.py`` leaves ``_jax.py`` out
of the doctests of this process, and the JAX tests run in their own pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[2]


def test_jax_delivery(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "pytest"),
            str(ROOT / "tests" / "delivery" / "jax_cases.py"),
            str(ROOT / "src" / "earthstream" / "delivery" / "_jax.py"),
        ],
        cwd=ROOT,
        env={**os.environ, "EARTHSTREAM_JAX_TESTS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert " passed" in done.stdout and "skipped" not in done.stdout, report
