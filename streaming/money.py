"""Do offers pay? Offered against held-out at-risk sessions, in money.

Each group is its sessions, one entry each: whether it bought, what it paid (purchase totals,
after any discount) and the discount it was given (a redeemed code's: total x percent /
(100 - percent), the total being after the discount). Per 1,000 at-risk sessions, the
incremental buyers, incremental revenue and net incremental revenue (revenue minus discount)
are 1,000 x the difference of the two groups' means, with a 95% interval from Welch's
unequal-variance standard error and the normal quantile:

    (mean_o - mean_h) +/- 1.96 x sqrt(s2_o / n_o + s2_h / n_h)

(s2 the sample variance, n - 1 in the denominator). Estimates are null while a group is empty;
bounds are null while a group has fewer than two sessions (no variance to speak of). The
verdict says "too early to tell" until each group has `MIN_SESSIONS` sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streaming.uplift import MIN_SESSIONS, Z95

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Sessions:
    """One group's sessions: bought (1.0 or 0.0), revenue and discount, one entry a session."""

    bought: Floats
    revenue: Floats
    discount: Floats

    @classmethod
    def of(
        cls,
        bought: npt.ArrayLike = (),
        revenue: npt.ArrayLike = (),
        discount: npt.ArrayLike = (),
    ) -> Sessions:
        arrays = [np.asarray(a, dtype=np.float64) for a in (bought, revenue, discount)]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
            raise ValueError("bought, revenue and discount need one entry a session each")
        return cls(*arrays)

    @property
    def count(self) -> int:
        return len(self.bought)

    @property
    def net(self) -> Floats:
        return self.revenue - self.discount

    def totals(self) -> dict[str, Any]:
        return {
            "sessions": self.count,
            "buyers": int(self.bought.sum()),
            "revenue": round(float(self.revenue.sum()), 2),
            "discount": round(float(self.discount.sum()), 2),
        }


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None

    def as_json(self) -> dict[str, float | None]:
        def cents(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        return {"estimate": cents(self.estimate), "low": cents(self.low), "high": cents(self.high)}


NO_INTERVAL = Interval(None, None, None)


def per_1000(offered: Floats, holdout: Floats) -> Interval:
    """1,000 x (mean of `offered` - mean of `holdout`), with its 95% Welch interval."""
    n_o, n_h = len(offered), len(holdout)
    if n_o == 0 or n_h == 0:
        return NO_INTERVAL
    difference = float(offered.mean() - holdout.mean())
    if n_o < 2 or n_h < 2:
        return Interval(1000 * difference, None, None)
    se = float(np.sqrt(offered.var(ddof=1) / n_o + holdout.var(ddof=1) / n_h))
    return Interval(
        1000 * difference, 1000 * (difference - Z95 * se), 1000 * (difference + Z95 * se)
    )


@dataclass(frozen=True, slots=True)
class Money:
    offered: Sessions
    holdout: Sessions
    incremental_buyers: Interval
    incremental_revenue: Interval
    net_incremental_revenue: Interval
    verdict: str

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "offered": self.offered.totals(),
            "holdout": self.holdout.totals(),
            "per_1000": {
                "incremental_buyers": self.incremental_buyers.as_json(),
                "incremental_revenue": self.incremental_revenue.as_json(),
                "net_incremental_revenue": self.net_incremental_revenue.as_json(),
            },
        }


def money(offered: Sessions, holdout: Sessions) -> Money:
    net = per_1000(offered.net, holdout.net)
    return Money(
        offered,
        holdout,
        incremental_buyers=per_1000(offered.bought, holdout.bought),
        incremental_revenue=per_1000(offered.revenue, holdout.revenue),
        net_incremental_revenue=net,
        verdict=_verdict(offered, holdout, net),
    )


def _verdict(offered: Sessions, holdout: Sessions, net: Interval) -> str:
    if min(offered.count, holdout.count) < MIN_SESSIONS or net.low is None or net.high is None:
        return (
            f"Too early to tell: {offered.count} offered and {holdout.count} held-out sessions "
            f"so far; at least {MIN_SESSIONS} of each are needed."
        )
    assert net.estimate is not None
    span = f"(95% CI {net.low:+,.2f} to {net.high:+,.2f})"
    if net.low > 0:
        return (
            f"Offers pay: {net.estimate:+,.2f} net revenue per 1,000 at-risk sessions, "
            f"after discounts {span}."
        )
    if net.high < 0:
        return (
            f"Offers cost more than they bring: {net.estimate:+,.2f} net revenue per 1,000 "
            f"at-risk sessions, after discounts {span}."
        )
    return (
        f"No clear difference yet: {net.estimate:+,.2f} net revenue per 1,000 at-risk sessions, "
        f"after discounts {span}."
    )
