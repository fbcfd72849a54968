"""The Python examples of docs/experiment.md run as written, in order, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["experiment.md"])
def test_doc_examples_run(page: str, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert len(blocks) >= 5
    script = "\n\n".join(block.replace("/tmp/", f"{tmp_path}/") for block in blocks)
    (tmp_path / "doc.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "doc.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{page} examples failed:\n{done.stdout}\n{done.stderr}"
