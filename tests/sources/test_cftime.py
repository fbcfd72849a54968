"""CF time decoding agrees with xarray's."""

from __future__ import annotations

import numpy as np
import pytest

from earthstream.sources._cftime import decode_cf_time, is_cf_time


@pytest.mark.parametrize(
    ("values", "units"),
    [
        (np.arange(0, 48, 6, dtype="i8"), "hours since 1979-01-01"),
        (np.arange(0, 48, 6, dtype="i8"), "hours since 1900-01-01 00:00:00.0"),
        (np.array([0.5, 1.25, 365.0]), "days since 2000-1-1"),
        (np.array([0, 90, 3600], dtype="i4"), "seconds since 1970-01-01T00:00:00Z"),
        (np.array([0, 1, 2], dtype="i8"), "minutes since 2010-06-01 12:30:00"),
        (np.array([0, 1], dtype="i8"), "hours since 2000-01-01 00:00:00 +05:30"),
    ],
)
def test_matches_xarray(values: np.ndarray, units: str) -> None:
    from xarray.coding.times import decode_cf_datetime

    attrs = {"units": units, "calendar": "proleptic_gregorian"}
    assert is_cf_time(attrs)
    expected = decode_cf_datetime(values, units, "proleptic_gregorian")
    np.testing.assert_array_equal(decode_cf_time(values, attrs), expected.astype("M8[ns]"))


def test_not_time() -> None:
    assert not is_cf_time({"units": "K"})
    assert not is_cf_time({})
