"""Doctest fixtures shared by the docstrings under src/."""

import pytest


@pytest.fixture(autouse=True)
def _doctest_tmp_path(doctest_namespace: dict, tmp_path) -> None:
    doctest_namespace["tmp_path"] = tmp_path
