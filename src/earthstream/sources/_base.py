"""What every source shares: the contract (from :mod:`earthstream.protocols`) and helpers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._names import suggest
from ..errors import VariableNotFoundError
from ..protocols import ChunkedSource, Span, VariableInfo

__all__ = ["ChunkedSource", "VariableInfo", "check_variables", "source_selection"]


def source_selection(source: ChunkedSource) -> dict[str, Span]:
    """The position ranges (:class:`~earthstream.protocols.Span` per dim) a source is
    already cut to, e.g. a :class:`~earthstream.ZarrSource` opened from a sliced
    ``xarray.Dataset``; empty for the whole source."""
    return dict(source.selection)


def check_variables(requested: Sequence[str] | str, available: Mapping[str, Any]) -> list[str]:
    """``requested`` as a list of names, each one of ``available``; else
    :class:`~earthstream.errors.VariableNotFoundError` naming it and what there is.

    >>> check_variables("t2m", {"t2m": 1, "u10": 2})
    ['t2m']
    """
    names = [requested] if isinstance(requested, str) else list(requested)
    if not names:
        raise VariableNotFoundError(
            "no variables were selected; pass at least one of: " + ", ".join(available)
        )
    for name in names:
        if name not in available:
            raise VariableNotFoundError(
                f"variable {name!r} is not in the source.{suggest(name, list(available))} "
                f"Available variables: {', '.join(available) or '(none)'}."
            )
    return names
