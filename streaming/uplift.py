"""Do offers raise conversion? Offered against holdout at-risk sessions, honestly.

The difference of two conversion rates with a 95% Newcombe (Wilson score) interval, and a verdict
in plain words that says "too early" while the samples are small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

Z95: Final = 1.959964
MIN_SESSIONS: Final = 30  # per group, before any verdict


@dataclass(frozen=True, slots=True)
class Group:
    sessions: int
    converted: int

    @property
    def rate(self) -> float | None:
        return self.converted / self.sessions if self.sessions else None

    def wilson(self) -> tuple[float, float]:
        """95% Wilson score interval of the conversion rate."""
        n = self.sessions
        if n == 0:
            return 0.0, 1.0
        p = self.converted / n
        centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Uplift:
    offered: Group
    holdout: Group
    difference: float | None  # offered rate - holdout rate
    low: float | None
    high: float | None
    verdict: str


def uplift(offered: Group, holdout: Group) -> Uplift:
    if offered.rate is None or holdout.rate is None:
        return Uplift(offered, holdout, None, None, None, "No sessions in both groups yet.")
    p1, p2 = offered.rate, holdout.rate
    (l1, u1), (l2, u2) = offered.wilson(), holdout.wilson()
    difference = p1 - p2
    # Newcombe's hybrid score interval for a difference of two independent proportions.
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Uplift(
        offered, holdout, difference, low, high, _verdict(offered, holdout, difference, low, high)
    )


def _verdict(offered: Group, holdout: Group, difference: float, low: float, high: float) -> str:
    span = f"(95% CI {low * 100:+.1f} to {high * 100:+.1f} points)"
    if min(offered.sessions, holdout.sessions) < MIN_SESSIONS:
        return (
            f"Too early to tell: {offered.sessions} offered and {holdout.sessions} held-out sessions "
            f"so far; at least {MIN_SESSIONS} of each are needed."
        )
    if low > 0:
        return f"Offers raise conversion by {difference * 100:.1f} points {span}."
    if high < 0:
        return f"Offers lower conversion by {-difference * 100:.1f} points {span}."
    return f"No clear difference yet: {difference * 100:+.1f} points {span}."
