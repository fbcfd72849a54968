"""xbatcher 0.4's own test suite, run against earthstream's drop-in.

The tests come from the installed xbatcher wheel (``xbatcher/tests/test_generators.py``),
not from a copy: every test function and fixture of that module is collected here, and
the module's ``BatchGenerator`` is replaced by ``earthstream.xbatcher.BatchGenerator``
while each runs.  xbatcher's test helpers (``xbatcher.testing``) check the batches'
dims and the generator's length; the tests compare batches with ``xarray``'s own
``isel``/``stack`` of the dataset.

Tests that cannot pass are marked below with the reason (docs/frameworks/xbatcher.md
lists them too); ``strict=True`` makes a test that starts passing fail here, so the
list stays true.
"""

from __future__ import annotations

import pytest

suite = pytest.importorskip("xbatcher.tests.test_generators")

# the suite reads sizes as ds.dims[name], which xarray now warns about
pytestmark = pytest.mark.filterwarnings("ignore:The return type of `Dataset.dims`:FutureWarning")

from earthstream.xbatcher import BatchGenerator  # noqa: E402

#: Tests of the suite that fail here, and why (the same tests fail for xbatcher 0.4 itself
#: in this environment: see test_the_same_tests_fail_for_xbatcher).
EXPECTED_FAILURES = {
    "test_batcher_cached_getitem": (
        "asserts that xbatcher's experimental cache wrote '0/.zgroup', a Zarr v2 key; with "
        "zarr-python 3 the cache is written as Zarr v3 ('0/zarr.json'). xbatcher 0.4 fails it "
        "too (and never reads its cache back)."
    ),
}
#: Tests that exercise xbatcher's BatchSchema, not the generator: they run xbatcher's code.
NOT_OURS = {"test_to_json"}


@pytest.fixture(autouse=True)
def _earthstream_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite, "BatchGenerator", BatchGenerator)


sample_ds_1d = suite.sample_ds_1d
sample_ds_3d = suite.sample_ds_3d


def _collect() -> None:
    for name in dir(suite):
        if not name.startswith("test_") or name in NOT_OURS:
            continue
        test = getattr(suite, name)
        reason = EXPECTED_FAILURES.get(name)
        if reason:
            test = pytest.mark.xfail(reason=reason, strict=True)(test)
        globals()[name] = test


_collect()


def test_the_suite_is_there() -> None:
    collected = [n for n in dir(suite) if n.startswith("test_")]
    assert len(collected) >= 20
    assert set(EXPECTED_FAILURES) | NOT_OURS <= set(collected)


@pytest.mark.parametrize("preload", [True, False])
def test_the_same_tests_fail_for_xbatcher(
    monkeypatch: pytest.MonkeyPatch, preload: bool, request: pytest.FixtureRequest
) -> None:
    """The expected failures are the suite's, not the drop-in's: xbatcher 0.4 fails them
    here as well, at the same assertion."""
    import xbatcher

    monkeypatch.setattr(suite, "BatchGenerator", xbatcher.BatchGenerator)
    data = request.getfixturevalue("sample_ds_1d")
    with pytest.raises(AssertionError) as failed:
        suite.test_batcher_cached_getitem(data, preload)
    assert failed.traceback[-1].statement.lines[-1].strip() == "assert '0/.zgroup' in cache"
