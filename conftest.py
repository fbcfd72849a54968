"""Doctest fixtures shared by the docstrings under src/."""

import os

import pytest

# JAX starts threads when it initializes, and the test process forks DataLoader workers
# afterwards: the doctests of delivery/_jax.py run with the JAX tests in an interpreter
# of their own (tests/delivery/test_jax.py sets EARTHSTREAM_JAX_TESTS there).
collect_ignore = (
    [] if os.environ.get("EARTHSTREAM_JAX_TESTS") else ["src/earthstream/delivery/_jax.py"]
)


@pytest.fixture(autouse=True)
def _doctest_tmp_path(doctest_namespace: dict, tmp_path) -> None:
    doctest_namespace["tmp_path"] = tmp_path
