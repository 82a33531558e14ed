"""Confidence intervals for a proportion measured on few examples.

Cross-validated accuracy on 15 examples is 15 out-of-fold answers: "100.0% ± 0.0%" (the spread of
the fold scores) says nothing of how far the true accuracy may lie below. The Wilson score interval
(Wilson 1927; recommended over the normal approximation by Brown, Cai and DasGupta 2001) stays inside
[0, 1], is not zero-width at 0 or n successes, and widens as n shrinks: 15 of 15 right gives
about 80-100%, 150 of 150 about 98-100%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Interval:
    """`successes` of `n`, their share, and a two-sided `confidence` interval [low, high] for it."""
    successes: int
    n: int
    low: float
    high: float
    confidence: float

    @property
    def share(self) -> float:
        return self.successes / self.n

    def to_dict(self) -> dict:
        return {"successes": self.successes, "n": self.n, "share": self.share, "low": self.low, "high": self.high,
                "confidence": self.confidence}


def wilson(successes: int, n: int, *, confidence: float = 0.95) -> Interval:
    """The Wilson score interval for `successes` out of `n` trials."""
    if isinstance(successes, bool) or isinstance(n, bool) or int(successes) != successes or int(n) != n:
        raise ValueError(f"successes and n are counts (whole numbers), not {successes!r} and {n!r}")
    successes, n = int(successes), int(n)
    if n < 1:
        raise ValueError(f"an interval needs at least 1 trial, not n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie between 0 and n={n}, not {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is a share between 0 and 1 (e.g. 0.95), not {confidence!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = successes / n
    middle = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    # At 0 or n successes the formula's bound is the share itself; rounding must not cross it.
    low = 0.0 if successes == 0 else max(0.0, middle - half)
    high = 1.0 if successes == n else min(1.0, middle + half)
    return Interval(successes, n, low, high, confidence)
