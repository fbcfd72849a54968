"""Checks of user arguments at the edge of the public API, each failing with a ConfigError.

Every public entry point checks its plain arguments (whole numbers, numbers,
flags, choices among strings) with these helpers before anything is read, so a
wrong type or value fails at once with a :class:`~earthstream.errors.ConfigError`
that names the argument, its value and what to pass instead, never with a
``TypeError`` from deep inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from ._names import suggest
from .errors import ConfigError

__all__ = [
    "CORRUPT",
    "MISSING",
    "Corrupt",
    "Missing",
    "Shuffle",
    "check_choice",
    "check_flag",
    "check_names",
    "check_number",
    "check_numbers",
    "check_whole",
]

S = TypeVar("S", bound=str)

#: A chunk that is not stored: read as the fill value, or raise.
Missing = Literal["fill", "error"]
MISSING: tuple[Missing, ...] = ("fill", "error")
#: A chunk that does not decode: raise, or drop its samples (counted).
Corrupt = Literal["error", "skip"]
CORRUPT: tuple[Corrupt, ...] = ("error", "skip")
#: The order of an epoch's windows.
Shuffle = bool | Literal["chunks", "full", "none"]
#: Largest seed (it is kept in resume states as a JSON integer).
MAX_SEED = 2**63 - 1


def _show(name: str, value: Any) -> str:
    """``name=value``; ``"Forecast(inputs)"`` shows as ``Forecast(inputs=value)``."""
    if name.endswith(")") and "(" in name:
        return f"{name[:-1]}={value!r})"
    return f"{name}={value!r}"


def check_whole(
    value: Any, name: str, *, minimum: int = 0, maximum: int | None = None, none: bool = False
) -> Any:
    """``value`` as an ``int`` (``None`` passes when ``none``); else :class:`ConfigError`.

    Python and NumPy integers count; booleans, floats and strings do not.

    >>> check_whole(np.int64(3), "num_threads", minimum=1)
    3
    >>> check_whole("4", "num_threads", minimum=1)
    Traceback (most recent call last):
    ...
    earthstream.errors.ConfigError: num_threads='4' must be a whole number >= 1 (a str was given).
    """
    if value is None and none:
        return None
    bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        kind = f" (a {type(value).__name__} was given)" if not isinstance(value, bool) else ""
        alt = " or None" if none else ""
        raise ConfigError(f"{_show(name, value)} must be a whole number {bounds}{alt}{kind}.")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        alt = " (or None)" if none else ""
        raise ConfigError(f"{_show(name, value)} must be a whole number {bounds}{alt}.")
    return number


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    none: bool = False,
) -> Any:
    """``value`` as a finite ``float`` within the bounds; else :class:`ConfigError`.

    >>> check_number(0.5, "q", minimum=0, maximum=1)
    0.5
    >>> check_number(float("nan"), "budget_s", above=0)
    Traceback (most recent call last):
    ...
    earthstream.errors.ConfigError: budget_s=nan must be a finite number > 0.
    """
    if value is None and none:
        return None
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    wanted = f"a finite number{' ' + ' and '.join(parts) if parts else ''}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        given = type(value).__name__
        raise ConfigError(f"{_show(name, value)} must be {wanted} (a {given} was given).")
    number = float(value)
    if (
        not math.isfinite(number)
        or (above is not None and not number > above)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise ConfigError(f"{_show(name, value)} must be {wanted}.")
    return number


def check_numbers(
    value: Any, name: str, *, lengths: Sequence[int], scalar: bool = False, **bounds: Any
) -> tuple[float, ...]:
    """A sequence of ``lengths`` finite numbers (or one number when ``scalar``).

    >>> check_numbers((0, 1, 2, 3), "bounds", lengths=(4,))
    (0.0, 1.0, 2.0, 3.0)
    >>> check_numbers(10, "resolution", lengths=(2,), scalar=True, above=0)
    (10.0,)
    """
    if scalar and not isinstance(value, Sequence):
        return (check_number(value, name, **bounds),)
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) not in lengths:
        counts = " or ".join(str(n) for n in lengths)
        one = "one number or " if scalar else ""
        raise ConfigError(f"{_show(name, value)} must be {one}{counts} numbers.")
    return tuple(check_number(v, name, **bounds) for v in value)


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool`` (or NumPy bool); else :class:`ConfigError`.

    >>> check_flag(True, "drop_last")
    True
    """
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{_show(name, value)} must be True or False.")
    return bool(value)


def check_choice(value: Any, name: str, options: Sequence[S], *, meaning: str = "") -> S:
    """``value`` if it is one of ``options`` (strings); else :class:`ConfigError` with a hint.

    The option comes back typed as the ``Literal`` of ``options``: option strings
    are normalized here, once, at the edge.  ``meaning`` says what the options do
    (appended to the message).

    >>> check_choice("skip", "corrupt", ("error", "skip"))
    'skip'
    >>> check_choice("skpi", "corrupt", ("error", "skip"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    earthstream.errors.ConfigError: corrupt='skpi' is not an option; ... Did you mean 'skip'?
    """
    for option in options:
        if isinstance(value, str) and value == option:
            return option
    listed = ", ".join(repr(o) for o in options[:-1]) + f" or {options[-1]!r}"
    hint = suggest(value, list(options)) if isinstance(value, str) and value else ""
    why = f" ({meaning})" if meaning else ""
    raise ConfigError(f"{_show(name, value)} is not an option; use {listed}{why}.{hint}")


def check_names(value: Any, name: str, *, none: bool = True) -> tuple[str, ...] | None:
    """One name or a sequence of names as a tuple of strings; else :class:`ConfigError`.

    >>> check_names("t2m", "variables"), check_names(["t2m", "u10"], "variables")
    (('t2m',), ('t2m', 'u10'))
    """
    if value is None and none:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{_show(name, value)} must be a name or a list of names (strings).")
