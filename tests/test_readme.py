"""The README's Python examples run as written, in a fresh interpreter.

A fresh process, as a user's script: the examples start DataLoader workers,
and forking them from the test process (which holds the threads of every
server and client earlier tests started) would test the test suite, not the
README.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: One page per framework; each page's ``python`` blocks run as one script, as the README's.
FRAMEWORK_PAGES = sorted((ROOT / "docs" / "frameworks").glob("*.md"))


def python_blocks(page: Path = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def run_blocks(page: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``python`` blocks of ``page`` as one script in a fresh interpreter, with
    ``/tmp/`` paths moved under ``tmp_path``."""
    blocks = python_blocks(page)
    script = "\n\n".join(block.replace("/tmp/", f"{tmp_path}/") for block in blocks)
    (tmp_path / "page.py").write_text(script)
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "page.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_readme_examples_run(tmp_path: Path) -> None:
    assert len(python_blocks()) >= 2
    done = run_blocks(README, tmp_path)
    assert done.returncode == 0, f"README examples failed:\n{done.stdout}\n{done.stderr}"
    assert "samples;" in done.stdout  # the remote example printed its report


def test_failure_semantics_examples_run(tmp_path: Path) -> None:
    """docs/failures.md: the damaged store is refused, then skipped and counted."""
    doc = README.parent / "docs" / "failures.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    script = "\n\n".join(block.replace("/tmp/", f"{tmp_path}/") for block in blocks)
    (tmp_path / "failures.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "failures.py"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "refused: chunk 'x/c/3/0/0' could not be decoded" in done.stdout
    assert "20 samples; [" in done.stdout and "x/c/3/0/0'] 4 dropped" in done.stdout


@pytest.mark.parametrize("page", FRAMEWORK_PAGES, ids=lambda p: p.name)
def test_framework_pages_run(page: Path, tmp_path: Path) -> None:
    assert python_blocks(page), f"{page.name} has no runnable example"
    done = run_blocks(page, tmp_path)
    assert done.returncode == 0, f"{page.name} examples failed:\n{done.stdout}\n{done.stderr}"
