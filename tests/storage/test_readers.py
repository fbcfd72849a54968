"""Readers' error classes: a short read is an EarthstreamError (and still an OSError)."""

from __future__ import annotations

from pathlib import Path

import pytest

from earthstream.errors import EarthstreamError, ShortReadError
from earthstream.storage._readers import LocalReader
from earthstream.storage._readers import ShortReadError as ReadersShortReadError
from earthstream.storage._retry import classify


def test_short_read_error_lives_under_the_common_root(tmp_path: Path) -> None:
    assert ReadersShortReadError is ShortReadError  # the old import keeps working
    assert issubclass(ShortReadError, EarthstreamError) and issubclass(ShortReadError, OSError)
    (tmp_path / "k").write_bytes(b"0123456789")
    with pytest.raises(ShortReadError, match=r"k\[4:20\].*expected 16 bytes, got 6"):
        LocalReader(str(tmp_path)).get_range("k", 4, 20)
    assert classify(ShortReadError("short"))[:2] == ("short_read", True)  # still retried
