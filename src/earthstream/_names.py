"""Helpers for messages about names (variables, dims)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def suggest(name: str, choices: Sequence[str]) -> str:
    """A ' Did you mean ...?' hint for an unknown name, or an empty string.

    >>> suggest("latitude", ["time", "lat", "lon"])
    " Did you mean 'lat'?"
    >>> suggest("xyz", ["time"])
    ''
    """
    lowered = name.lower()
    for choice in choices:
        c = choice.lower()
        if c and (lowered.startswith(c) or c.startswith(lowered)):
            return f" Did you mean {choice!r}?"
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
