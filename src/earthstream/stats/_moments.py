"""Mergeable accumulators: exact moments (Chan's parallel merge) and a quantile sketch.

:class:`Moments` holds, per group (e.g. per pressure level), the count, mean
and sum of squared deviations (``M2``), min and max of the valid values; two
accumulators merge exactly (Chan, Golub and LeVeque's pairwise formula), so
partial results from any split of the data combine to the statistics of the
whole, up to floating-point rounding.

:class:`Digest` is a merging t-digest (Dunning, 2019) with the ``k1``
(arcsine) scale function: weighted centroids, sorted by value, where each
centroid spans at most one unit of ``k(q) = compression / (2 pi) * asin(2q - 1)``.
A centroid near quantile ``q`` therefore holds at most about
``2 pi sqrt(q (1 - q)) / compression`` of the data: 0.31% at the median and
0.06% at the 1st/99th percentile with the default compression of 1000.
Quantiles are interpolated between centroid centres, so the rank error is
normally well under that width; it is not a hard bound once digests built
from overlapping data are merged (t-digest's known limitation).  Memory per
group is at most ``compression`` centroids (16 kB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_COMPRESSION", "Digest", "Moments"]

DEFAULT_COMPRESSION = 1000


def _k(q: np.ndarray, compression: float) -> np.ndarray:
    """The k1 scale function: dense near the tails, sparse near the median."""
    k: np.ndarray = compression / (2 * np.pi) * np.arcsin(np.clip(2 * q - 1, -1.0, 1.0))
    return k


@dataclass(frozen=True, eq=False)
class Digest:
    """A t-digest of one group: centroid ``means`` (increasing) and their ``weights``."""

    means: np.ndarray
    weights: np.ndarray
    compression: float = DEFAULT_COMPRESSION

    @classmethod
    def empty(cls, compression: float = DEFAULT_COMPRESSION) -> Digest:
        return cls(np.zeros(0), np.zeros(0), compression)

    @classmethod
    def from_sorted(cls, values: np.ndarray, compression: float = DEFAULT_COMPRESSION) -> Digest:
        """The digest of sorted, finite ``values`` (each of weight 1), vectorized.

        >>> d = Digest.from_sorted(np.arange(10_000.0))
        >>> len(d.means) <= 1000, float(d.weights.sum())
        (True, 10000.0)
        """
        n = len(values)
        if n == 0:
            return cls.empty(compression)
        # Element i (ranks [i, i + 1)) joins bucket j = floor(k(i / n) - k(0)): a bucket
        # spans at most one unit of k plus one element.  Bucket j starts at the first i
        # with i / n >= q_j, where k(q_j) = k(0) + j: O(compression) work, not O(n).
        j = np.arange(int(np.ceil(compression / 2)) + 1)
        q = (np.sin(2 * np.pi * (j - compression / 4) / compression) + 1) / 2
        edges = np.ceil(np.clip(q, 0.0, 1.0) * n - 1e-9).astype(np.int64)
        starts = np.unique(np.clip(edges, 0, n - 1))
        starts[0] = 0
        weights = np.diff(np.append(starts, n)).astype(np.float64)
        sums = np.add.reduceat(values.astype(np.float64, copy=False), starts)
        return cls(sums / weights, weights, compression)

    @property
    def count(self) -> float:
        return float(self.weights.sum())

    @staticmethod
    def merge(digests: Sequence[Digest]) -> Digest:
        """One digest of the union of the digests' data (in their order: deterministic)."""
        digests = [d for d in digests if len(d.weights)]
        if not digests:
            return Digest.empty()
        compression = digests[0].compression
        if len(digests) == 1:
            return digests[0]
        means = np.concatenate([d.means for d in digests])
        weights = np.concatenate([d.weights for d in digests])
        order = np.argsort(means, kind="stable")
        means, weights = means[order], weights[order]
        total = weights.sum()
        right = np.cumsum(weights) / total
        left = right - weights / total
        k_left = _k(left, compression)
        k_right = _k(right, compression)
        # Greedy: extend the current centroid while its span stays within one unit of k.
        out_m: list[float] = []
        out_w: list[float] = []
        cur_w = weights[0]
        cur_s = means[0] * weights[0]
        k_start = k_left[0]
        for i in range(1, len(means)):
            if k_right[i] - k_start <= 1.0:
                cur_w += weights[i]
                cur_s += means[i] * weights[i]
            else:
                out_m.append(cur_s / cur_w)
                out_w.append(cur_w)
                cur_w = weights[i]
                cur_s = means[i] * weights[i]
                k_start = k_left[i]
        out_m.append(cur_s / cur_w)
        out_w.append(cur_w)
        return Digest(np.asarray(out_m), np.asarray(out_w), compression)

    def quantiles(self, qs: Sequence[float], lo: float, hi: float) -> np.ndarray:
        """Estimated quantiles ``qs``, given the exact minimum ``lo`` and maximum ``hi``.

        Interpolates linearly between centroid centres (at their middle rank),
        and between the extremes and the outer centroids.

        >>> values = np.sort(np.random.default_rng(0).normal(size=100_000))
        >>> d = Digest.from_sorted(values)
        >>> est = d.quantiles([0.01, 0.5, 0.99], values[0], values[-1])
        >>> ranks = np.searchsorted(values, est) / len(values)
        >>> bool(np.all(np.abs(ranks - [0.01, 0.5, 0.99]) < 1e-3))
        True
        """
        q = np.asarray(qs, dtype=np.float64)
        if not len(self.weights):
            return np.full(q.shape, np.nan)
        total = self.weights.sum()
        mid = (np.cumsum(self.weights) - self.weights / 2) / total
        xs = np.concatenate([[0.0], mid, [1.0]])
        ys = np.concatenate([[lo], self.means, [hi]])
        out: np.ndarray = np.clip(np.interp(q, xs, ys), lo, hi)
        return out


@dataclass(frozen=True, eq=False)
class Moments:
    """Count, mean, M2, min, max (arrays of one shape: the groups) and a digest per group."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    digests: tuple[Digest, ...]

    @classmethod
    def empty(cls, groups: int, compression: float = DEFAULT_COMPRESSION) -> Moments:
        return cls(
            count=np.zeros(groups, dtype=np.int64),
            mean=np.zeros(groups),
            m2=np.zeros(groups),
            min=np.full(groups, np.inf),
            max=np.full(groups, -np.inf),
            digests=tuple(Digest.empty(compression) for _ in range(groups)),
        )

    @classmethod
    def from_groups(
        cls, values: Sequence[np.ndarray], compression: float = DEFAULT_COMPRESSION
    ) -> Moments:
        """Exact moments and a digest of each group's valid (finite) ``values``.

        The values are sorted in place.

        >>> m = Moments.from_groups([np.array([3.0, 1.0, 2.0]), np.array([], "f4")])
        >>> m.count.tolist(), m.mean.tolist(), m.m2.tolist(), m.min.tolist()
        ([3, 0], [2.0, 0.0], [2.0, 0.0], [1.0, inf])
        """
        n = len(values)
        out = cls.empty(n, compression)
        digests = []
        for g, v in enumerate(values):
            if not len(v):
                digests.append(Digest.empty(compression))
                continue
            v.sort()
            count = len(v)
            mean = float(np.sum(v, dtype=np.float64)) / count
            d = v.astype(np.float64)
            d -= mean
            out.count[g] = count
            out.mean[g] = mean
            d *= d  # not np.dot: BLAS sums in an order that depends on its thread count
            out.m2[g] = float(d.sum())
            out.min[g] = float(v[0])
            out.max[g] = float(v[-1])
            digests.append(Digest.from_sorted(v, compression))
        return cls(out.count, out.mean, out.m2, out.min, out.max, tuple(digests))

    @staticmethod
    def merge(parts: Sequence[Moments]) -> Moments:
        """The accumulator of the union of the parts' data (Chan's formula, in order).

        >>> a = Moments.from_groups([np.array([1.0, 2.0])])
        >>> b = Moments.from_groups([np.array([3.0, 4.0, 5.0])])
        >>> m = Moments.merge([a, b])
        >>> m.count.tolist(), m.mean.tolist(), (m.m2 / m.count).tolist()
        ([5], [3.0], [2.0])
        """
        first = parts[0]
        count = first.count.copy()
        mean = first.mean.copy()
        m2 = first.m2.copy()
        lo = first.min.copy()
        hi = first.max.copy()
        for p in parts[1:]:
            n = count + p.count
            safe = np.maximum(n, 1)
            delta = p.mean - mean
            mean = np.where(n > 0, mean + delta * (p.count / safe), 0.0)
            m2 = m2 + p.m2 + delta * delta * (count * (p.count / safe))
            count = n
            lo = np.minimum(lo, p.min)
            hi = np.maximum(hi, p.max)
        digests = tuple(
            Digest.merge([p.digests[g] for p in parts]) for g in range(len(first.digests))
        )
        return Moments(count, mean, m2, lo, hi, digests)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (``ddof=0``, as ``numpy.nanstd``); NaN without data."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, np.sqrt(self.m2 / np.maximum(self.count, 1)), np.nan)

    def quantiles(self, qs: Sequence[float]) -> np.ndarray:
        """``(len(qs), groups)`` estimated quantiles (NaN for empty groups)."""
        out = np.full((len(qs), len(self.digests)), np.nan)
        for g, d in enumerate(self.digests):
            if self.count[g]:
                out[:, g] = d.quantiles(qs, float(self.min[g]), float(self.max[g]))
        return out
