"""xbatcher's windows and batches, planned without xarray, against xbatcher 0.4's own
``BatchSchema`` on random dims, input dims, overlaps and batch dims (hypothesis)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

xr = pytest.importorskip("xarray")
xbatcher = pytest.importorskip("xbatcher")

from earthstream.xbatcher import plan_batches  # noqa: E402

DIMS = ("t", "y", "x")


@st.composite
def configs(draw: Any) -> dict[str, Any]:
    sizes = {d: draw(st.integers(1, 14)) for d in DIMS[: draw(st.integers(1, 3))]}
    names = list(sizes)
    inputs = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    input_dims = {d: draw(st.integers(1, sizes[d] + 1)) for d in inputs}
    overlap = {d: draw(st.integers(0, input_dims[d])) for d in inputs if draw(st.booleans())}
    batch = draw(st.lists(st.sampled_from(names), unique=True))
    batch_dims = {d: draw(st.integers(1, sizes[d])) for d in batch}
    return {
        "sizes": sizes,
        "input_dims": input_dims,
        "input_overlap": overlap,
        "batch_dims": batch_dims,
        "concat_input_dims": draw(st.booleans()),
    }


def _theirs(config: dict[str, Any]) -> list[list[dict[str, slice]]] | str:
    ds = xr.Dataset({"v": (tuple(config["sizes"]), np.zeros(tuple(config["sizes"].values())))})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schema = xbatcher.BatchSchema(
                ds,
                input_dims=config["input_dims"],
                input_overlap=config["input_overlap"],
                batch_dims=config["batch_dims"],
                concat_input_bins=config["concat_input_dims"],
            )
    except (ValueError, ZeroDivisionError) as exc:  # overlap == window: xbatcher divides by 0
        return type(exc).__name__
    return [schema.selectors[k] for k in sorted(schema.selectors)]


def _ours(config: dict[str, Any]) -> list[list[dict[str, slice]]] | str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = plan_batches(
                config["sizes"],
                config["input_dims"],
                config["input_overlap"],
                config["batch_dims"],
                config["concat_input_dims"],
            )
    except ValueError:
        return "ValueError"
    return [[plan.selector(int(p)) for p in batch] for batch in plan.batches]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_batches_are_xbatchers(config: dict[str, Any]) -> None:
    expected, ours = _theirs(config), _ours(config)
    if isinstance(expected, str):  # refused: ours with a ValueError that says why
        assert ours == "ValueError"
    else:
        assert ours == expected


def test_the_warning_for_dims_in_both_without_concatenation() -> None:
    with pytest.warns(UserWarning, match="will not impact batch generation"):
        plan_batches({"x": 10}, {"x": 5}, {}, {"x": 10}, False)
