"""Money per 1,000 at-risk sessions, offered against held out, with 95% Welch intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streaming.money import Interval, Sessions, money, per_1000
from streaming.uplift import MIN_SESSIONS, Z95

# Four offered sessions: two bought (one paid 90 with a 10% code: 10 off; one paid 60), two did
# not; three held out: one paid 100.
OFFERED = Sessions.of(bought=[1, 1, 0, 0], revenue=[90, 60, 0, 0], discount=[10, 0, 0, 0])
HOLDOUT = Sessions.of(bought=[1, 0, 0], revenue=[100, 0, 0], discount=[0, 0, 0])


def test_the_figures_of_a_small_hand_made_dataset():
    figures = money(OFFERED, HOLDOUT).as_json()
    assert figures["offered"] == {"sessions": 4, "buyers": 2, "revenue": 150.0, "discount": 10.0}
    assert figures["holdout"] == {"sessions": 3, "buyers": 1, "revenue": 100.0, "discount": 0.0}
    per = figures["per_1000"]
    # buyers: 1000 x (2/4 - 1/3) = 166.67; s2 = 1/3 in both groups,
    # se = sqrt(1/3/4 + 1/3/3) = sqrt(7/36) = 0.440959; 1000 x 1.959964 x se = 864.26
    assert per["incremental_buyers"] == {"estimate": 166.67, "low": -697.6, "high": 1030.93}
    # revenue: 1000 x (150/4 - 100/3) = 4166.67; s2 = 2025 and 3333.33,
    # se = sqrt(2025/4 + 3333.33/3) = 40.2164; 1000 x 1.959964 x se = 78822.75
    assert per["incremental_revenue"] == {"estimate": 4166.67, "low": -74656.09, "high": 82989.42}
    # net: offered pays 80, 60, 0, 0 after its discount: 1000 x (140/4 - 100/3) = 1666.67;
    # s2 = 1700, se = sqrt(1700/4 + 3333.33/3) = 39.1933; 1000 x 1.959964 x se = 76817.37
    assert per["net_incremental_revenue"] == {
        "estimate": 1666.67,
        "low": -75150.7,
        "high": 78484.03,
    }
    assert figures["verdict"] == (
        "Too early to tell: 4 offered and 3 held-out sessions so far; "
        f"at least {MIN_SESSIONS} of each are needed."
    )


def test_the_interval_is_welchs_with_the_normal_quantile():
    rng = np.random.default_rng(7)
    a, b = rng.exponential(50, 300), rng.exponential(40, 100)
    found = per_1000(a, b)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    difference = a.mean() - b.mean()
    assert found.estimate == pytest.approx(1000 * difference)
    assert found.low == pytest.approx(1000 * (difference - Z95 * se))
    assert found.high == pytest.approx(1000 * (difference + Z95 * se))


def test_an_empty_group_has_null_figures_and_a_lone_session_no_bounds():
    empty = Sessions.of()
    nothing = money(OFFERED, empty)
    for interval in (
        nothing.incremental_buyers,
        nothing.incremental_revenue,
        nothing.net_incremental_revenue,
    ):
        assert interval == Interval(None, None, None)
    assert nothing.as_json()["holdout"] == {
        "sessions": 0,
        "buyers": 0,
        "revenue": 0.0,
        "discount": 0.0,
    }
    assert nothing.verdict.startswith("Too early to tell: 4 offered and 0 held-out")
    lone = per_1000(np.array([1.0]), np.array([0.0, 1.0]))
    assert lone == Interval(500.0, None, None)


def many(n: int, *, bought: float, revenue: float, discount: float = 0.0) -> Sessions:
    return Sessions.of([bought] * n, [revenue] * n, [discount] * n)


def join(*groups: Sessions) -> Sessions:
    return Sessions.of(
        np.concatenate([g.bought for g in groups]),
        np.concatenate([g.revenue for g in groups]),
        np.concatenate([g.discount for g in groups]),
    )


def test_the_verdict_once_both_groups_are_large_enough():
    holdout = join(many(20, bought=1, revenue=100), many(20, bought=0, revenue=0))
    # offered: 35 of 40 pay 90 after 10 off (net 70 a session), held out: 20 of 40 pay 100 (50)
    paying = join(many(35, bought=1, revenue=90, discount=10), many(5, bought=0, revenue=0))
    assert money(paying, holdout).verdict.startswith("Offers pay: +20,000.00 net revenue")
    # everyone buys anyway: the offers only give money away
    sure = many(MIN_SESSIONS, bought=1, revenue=90, discount=10)
    anyway = join(many(MIN_SESSIONS - 1, bought=1, revenue=100), many(1, bought=1, revenue=99))
    assert money(sure, anyway).verdict.startswith("Offers cost more than they bring: -19,966.67")
    unclear = money(holdout, holdout)
    assert unclear.verdict.startswith("No clear difference yet: +0.00 net revenue")


def test_a_group_needs_one_entry_a_session_in_each_column():
    with pytest.raises(ValueError, match="one entry a session"):
        Sessions.of([1, 0], [10.0], [0.0, 0.0])
