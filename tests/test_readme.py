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

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run(tmp_path: Path) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2
    script = "\n\n".join(block.replace("/tmp/", f"{tmp_path}/") for block in blocks)
    (tmp_path / "readme.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "readme.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
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
