"""Paired statistics for two runs over one question set: how big a change is, and whether it is noise.

Every question is answered by both runs, so the questions are the unit: a paired bootstrap
over questions gives the interval of a mean difference (any metric, shares or yes/no), an
exact McNemar test (a binomial on the questions that changed) says whether a yes/no metric
moved, and a normal-approximation power calculation says how many questions would tell a
difference of the measured size apart. Pure Python and seeded: the same runs always give
the same interval, and nothing heavier than `statistics` is imported.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, stdev

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
POWER = 0.8
ALPHA = 0.05
PAIRED_PROPORTIONS = "Connor (1987) for paired proportions: n = (z(1-a/2)·√ψ + z(power)·√(ψ-δ²))² / δ²"
PAIRED_MEANS = "paired means, normal approximation: n = ((z(1-a/2) + z(power))·sd(d) / δ)²"


@dataclass(frozen=True)
class Interval:
    """A mean paired difference and its bootstrap interval."""

    diff: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    before: Sequence[float],
    after: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """Mean of `after - before` with a percentile interval from resampling the pairs (questions) with replacement."""
    if len(before) != len(after) or not before:
        raise ValueError(f"need two equally long, non-empty lists of paired values, got {len(before)} and {len(after)}")
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(fmean(rng.choices(diffs, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return Interval(fmean(diffs), _quantile(means, tail), _quantile(means, 1 - tail))


def _quantile(ordered: Sequence[float], share: float) -> float:
    """Linear interpolation between ranks (numpy's default), on an already sorted list."""
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p: under no change, each of the `gained + lost` discordant pairs is a fair coin."""
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _z(share: float) -> float:
    return NormalDist().inv_cdf(share)


def questions_for_proportions(gained: float, lost: float, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Pairs needed to detect a paired-proportion difference, from the discordant shares (Connor 1987).

    `gained` and `lost` are the shares of pairs that went no->yes and yes->no; None when they are
    equal (no difference to detect).
    """
    delta, psi = gained - lost, gained + lost
    if delta == 0:
        return None
    root = _z(1 - alpha / 2) * math.sqrt(psi) + _z(power) * math.sqrt(max(psi - delta**2, 0.0))
    return math.ceil(root**2 / delta**2)


def questions_for_means(diffs: Sequence[float], *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Pairs needed to detect the mean of `diffs` given their spread (normal approximation); None if unsizable."""
    if len(diffs) < 2:
        return None
    delta, spread = fmean(diffs), stdev(diffs)
    if delta == 0:
        return None
    if spread == 0:
        return 2  # every pair moved by the same amount: any two show it
    return math.ceil(((_z(1 - alpha / 2) + _z(power)) * spread / delta) ** 2)


__all__ = [
    "PAIRED_MEANS",
    "PAIRED_PROPORTIONS",
    "Interval",
    "mcnemar_exact",
    "paired_bootstrap",
    "questions_for_means",
    "questions_for_proportions",
]
