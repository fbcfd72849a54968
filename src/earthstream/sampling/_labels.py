"""Label-centred, class-balanced chip positions: chips around vector features.

torchgeo users ask for chips centred on labelled features, with classes
balanced (rare classes oversampled).  This is the pure part: given each
feature's centre in pixel coordinates of the target grid and its class, draw
``samples`` chip positions per ``(seed, epoch)`` so that

- class ``c`` gets ``round(share_c * samples)`` chips (largest remainders, so
  every class's share is within ``1 / samples`` of the requested one),
- within a class, features are drawn uniformly with replacement,
- every chip contains its feature's centre pixel (a random offset inside the
  chip with ``jitter``, else the chip centre; chips are kept inside the grid),

in a seeded random order.  The positions are window starts on a stride-1
grid of chips, so a stream's order can take them (the chip path is being
redesigned; wiring this in is left to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._split import _largest_remainder

__all__ = ["LabelChips", "label_chip_positions"]

_STREAM = 0x1A8E1


@dataclass(frozen=True, eq=False)
class LabelChips:
    """Chip positions of one epoch: top-left ``rows``/``cols`` on the target grid, the
    ``classes`` and ``features`` (indices into the input) they were drawn for, and
    the features left out because their centre lies outside the grid."""

    rows: np.ndarray
    cols: np.ndarray
    classes: np.ndarray
    features: np.ndarray
    outside: int

    def __len__(self) -> int:
        return len(self.rows)

    def shares(self) -> dict[Any, float]:
        """Each class's share of the chips."""
        values, counts = np.unique(self.classes, return_counts=True)
        return {
            (v.item() if isinstance(v, np.generic) else v): float(c) / len(self)
            for v, c in zip(values, counts, strict=True)
        }

    def window_ids(self, grid_shape: Sequence[int], chip: Sequence[int]) -> np.ndarray:
        """The chips as window ids of a stride-1 grid of ``chip``-sized windows."""
        counts = (int(grid_shape[0]) - int(chip[0]) + 1, int(grid_shape[1]) - int(chip[1]) + 1)
        return np.asarray(np.ravel_multi_index((self.rows, self.cols), counts), dtype=np.int64)


def label_chip_positions(
    centers: np.ndarray,
    classes: Sequence[Any] | np.ndarray,
    *,
    grid_shape: Sequence[int],
    chip: Sequence[int] | int,
    samples: int,
    shares: Mapping[Any, float] | None = None,
    seed: int = 0,
    epoch: int = 0,
    jitter: bool = True,
) -> LabelChips:
    """Draw ``samples`` chip positions around labelled features, with class shares.

    Parameters
    ----------
    centers
        ``(n, 2)`` feature centres ``(row, col)`` in pixels of the target grid
        (fractional; e.g. centroids through the grid's inverse transform).
    classes
        ``(n,)`` class of each feature.
    grid_shape
        ``(height, width)`` of the target grid in pixels.
    chip
        Chip ``(height, width)`` (or one size).
    samples
        Chips per epoch.
    shares
        Class -> requested share of the chips (normalized); default: equal
        shares for the classes present.  A class with a share but no feature
        is refused.
    seed, epoch
        The positions are a pure function of them (and the inputs).
    jitter
        Place each feature at a random pixel of its chip (default), else at the
        chip's centre (as near as the grid's edges allow).

    Examples
    --------
    >>> centers = np.array([[5.5, 5.5], [40.2, 10.0], [50.0, 60.0]])
    >>> got = label_chip_positions(centers, ["road", "road", "lake"], grid_shape=(64, 64),
    ...                            chip=16, samples=1000, shares={"road": 0.3, "lake": 0.7})
    >>> got.shares()
    {'lake': 0.7, 'road': 0.3}
    >>> inside = (got.rows <= np.floor(centers[got.features, 0])) & (
    ...     np.floor(centers[got.features, 0]) < got.rows + 16)
    >>> bool(inside.all()), int(got.rows.max()) <= 64 - 16
    (True, True)
    """
    h, w = (chip, chip) if isinstance(chip, int | np.integer) else (int(chip[0]), int(chip[1]))
    height, width = int(grid_shape[0]), int(grid_shape[1])
    if h < 1 or w < 1 or h > height or w > width:
        raise ConfigError(f"chip {(h, w)} must fit the grid {(height, width)} (and be >= 1).")
    if isinstance(samples, bool) or not isinstance(samples, int | np.integer) or samples < 1:
        raise ConfigError(f"samples={samples!r} must be a whole number >= 1.")
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(classes)
    if len(labels) != len(centers):
        raise ConfigError(f"{len(centers)} centres but {len(labels)} classes; give one each.")
    pixel = np.floor(centers).astype(np.int64)
    inside = (
        np.isfinite(centers).all(axis=1)
        & (pixel[:, 0] >= 0)
        & (pixel[:, 0] < height)
        & (pixel[:, 1] >= 0)
        & (pixel[:, 1] < width)
    )
    present = list(dict.fromkeys(labels[inside].tolist()))
    if shares is None:
        if not present:
            raise ConfigError("no feature centre lies inside the grid; nothing to sample around.")
        wanted = dict.fromkeys(present, 1.0)
    else:
        wanted = {k: float(v) for k, v in shares.items() if float(v) > 0}
        if any(float(v) < 0 for v in shares.values()) or not wanted:
            raise ConfigError(f"shares={dict(shares)!r} must be non-negative, some positive.")
        empty = [k for k in wanted if k not in present]
        if empty:
            raise ConfigError(
                f"classes {empty} have a share but no feature inside the grid; drop them from "
                f"shares= (classes present: {present})."
            )
    names = list(wanted)
    weights = np.array([wanted[c] for c in names])
    counts = _largest_remainder(weights / weights.sum(), int(samples))
    rng = np.random.default_rng([int(seed), int(epoch), _STREAM])
    features = []
    for c, k in zip(names, counts.tolist(), strict=True):
        pool = np.flatnonzero(inside & (labels == c))
        features.append(pool[rng.integers(0, len(pool), k)])
    chosen = np.concatenate(features)
    if jitter:
        off_r = rng.integers(0, h, len(chosen))
        off_c = rng.integers(0, w, len(chosen))
    else:
        off_r = np.full(len(chosen), h // 2)
        off_c = np.full(len(chosen), w // 2)
    rows = np.clip(pixel[chosen, 0] - off_r, 0, height - h)
    cols = np.clip(pixel[chosen, 1] - off_c, 0, width - w)
    order = rng.permutation(len(chosen))
    return LabelChips(
        rows=rows[order],
        cols=cols[order],
        classes=labels[chosen][order],
        features=chosen[order],
        outside=int((~inside).sum()),
    )
