"""ZarrStoreReader: earthstream's ByteReader over a zarr-python store's own ``get``.

Oracle: Python slicing of the bytes the store holds (written through zarr-python's
``set``), not the reader's own code.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from earthstream.errors import ConfigError, StoreRequestError
from earthstream.storage import StoreHandle, ZarrStoreReader
from earthstream.storage._zarr_store import merge_ranges

BLOB = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()


def memory_store(root: str = "") -> zarr.storage.MemoryStore:
    store = zarr.storage.MemoryStore()
    buffer = default_buffer_prototype().buffer.from_bytes(BLOB)
    sync(store.set(f"{root}/a/c/0" if root else "a/c/0", buffer))
    return store


@pytest.mark.parametrize("root", ["", "nested/group"])
def test_reads_equal_the_stored_bytes(root: str) -> None:
    reader = ZarrStoreReader(memory_store(root), root, "memory://test")
    assert bytes(reader.get("a/c/0")) == BLOB
    assert bytes(reader.get_range("a/c/0", 10, 400)) == BLOB[10:400]
    assert bytes(reader.get_suffix("a/c/0", 16)) == BLOB[-16:]
    parts = reader.get_ranges("a/c/0", [4000, 0, 100], [4100, 50, 300])
    assert parts is not None
    assert [bytes(p) for p in parts] == [BLOB[4000:4100], BLOB[0:50], BLOB[100:300]]
    assert reader.get("a/c/1") is None  # missing: Zarr's fill value
    assert reader.get_range("a/c/1", 0, 4) is None
    assert reader.stats.snapshot()["requests"] == 6
    # the three ranges are close: one request for bytes [0, 4100)
    assert reader.stats.snapshot()["bytes"] == len(BLOB) + 390 + 16 + 4100


def test_a_short_range_is_a_typed_error_never_data() -> None:
    reader = ZarrStoreReader(memory_store(), "", "memory://test")
    with pytest.raises(StoreRequestError, match="short_read"):
        reader.get_range("a/c/0", 4900, 5100)  # zarr returns what there is: 100 bytes
    assert reader.stats.snapshot()["failures"] == {"short_read": 1}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 1000)), min_size=1, max_size=12),
    st.integers(0, 300),
)
def test_merged_ranges_cover_each_range(ranges: list[tuple[int, int]], gap: int) -> None:
    starts = [s for s, _ in ranges]
    ends = [s + n for s, n in ranges]
    groups = merge_ranges(starts, ends, gap=gap)
    members = sorted(i for _, _, m in groups for i in m)
    assert members == list(range(len(ranges)))  # each range in exactly one request
    for lo, hi, m in groups:
        assert all(lo <= starts[i] and ends[i] <= hi for i in m)
    for (_, hi, _), (lo, _, _) in itertools.pairwise(groups):
        assert lo - hi > gap  # requests farther apart than the gap stay separate


def test_handle_options_and_pickling() -> None:
    with pytest.raises(ConfigError, match="endpoint_url"):
        StoreHandle(zarr.storage.MemoryStore(), options={"endpoint_url": "http://x"})
    with pytest.raises(ConfigError, match="max_requests"):
        StoreHandle(zarr.storage.MemoryStore(), options={"max_requests": 0})
    handle = StoreHandle(memory_store("g"), "g", {"max_requests": 3})
    copy = pickle.loads(pickle.dumps(handle))
    assert copy.root == "g" and copy.options == (("max_requests", 3),)
    assert bytes(copy.open_reader().get("a/c/0")) == BLOB
