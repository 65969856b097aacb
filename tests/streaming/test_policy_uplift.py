"""Targeting by uplift and exploration in the policy (streaming/policy.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pytest

from streaming.policy import (
    DEFAULT_MARGIN,
    HOLDOUT_BUCKETS,
    Rule,
    Targeting,
    Verdicts,
    decide,
    explore_offers,
    exploring,
    holdout_bucket,
    holdout_limit,
    uplift_gain,
)
from tests.streaming.test_policy import GENTLE, NOW, session_outside_holdout

# 10% off, by uplift alone (no risk floor)
BY_UPLIFT = replace(
    GENTLE, id=7, min_risk=0.0, discount_percent=10, targeting=Targeting.UPLIFT, daily_budget=1000
)
OUTSIDE = float(holdout_bucket(session_outside_holdout()))
IN_HOLDOUT = 0.0  # the lowest bucket: held out at any holdout percent above 0
EXPLORE_OFFER = float(HOLDOUT_BUCKETS - 2)  # the top buckets: even offered, odd held out
EXPLORE_HOLD = float(HOLDOUT_BUCKETS - 1)


def uplift_batch(
    p_offer: list[float] | None,
    p_none: list[float] | None,
    *,
    risks: list[float] | None = None,
    carts: list[float] | None = None,
    buckets: list[float] | None = None,
    sites: list[str] | None = None,
    rules: Sequence[Rule] = (BY_UPLIFT,),
    margins: Mapping[str, float] | None = None,
    used_today: Mapping[int, int] | None = None,
    explore_percent: float = 0.0,
    holdout_percent: float = 10.0,
) -> Verdicts:
    n = len(p_offer) if p_offer is not None else len(risks or [])
    return decide(
        risks=np.array(risks or [0.5] * n),
        sites=sites or ["demo"] * n,
        cart_values=np.array(carts or [100.0] * n),
        last_offer_at=np.full(n, np.nan),
        holdout_buckets=np.array(buckets or [OUTSIDE] * n, dtype=np.float64),
        rules=rules,
        used_today=used_today or {},
        now=NOW,
        cooldown_seconds=600.0,
        holdout_percent=holdout_percent,
        p_offer=None if p_offer is None else np.array(p_offer),
        p_none=None if p_none is None else np.array(p_none),
        margins=margins,
        explore_percent=explore_percent,
    )


# --- targeting by uplift ---------------------------------------------------------------------


def test_an_uplift_rule_offers_where_the_margin_with_the_offer_beats_the_margin_without():
    # margin 30%, discount 10%: offer when p_offer x 0.20 > p_none x 0.30
    verdicts = uplift_batch([0.50, 0.30, 0.45], [0.10, 0.20, 0.30])
    assert [str(verdicts.verdict(i).outcome) for i in range(3)] == ["offer", "no_offer", "no_offer"]
    assert verdicts.verdict(0).rule == BY_UPLIFT


def test_the_why_of_an_uplift_offer_says_the_chance_it_adds_and_what_it_is_worth():
    verdicts = uplift_batch([0.50], [0.10], carts=[130.0])
    # 130 x (0.50 x 0.20 - 0.10 x 0.30) = 9.10
    assert verdicts.whys() == ["uplift: +0.40 chance to buy, worth 9.10 net"]


def test_an_offer_not_worth_its_discount_says_so():
    verdicts = uplift_batch([0.30], [0.20])
    assert verdicts.whys() == [
        "uplift: +0.10 chance to buy, worth -0.00 net: not worth the discount"
    ]
    verdicts = uplift_batch([0.20], [0.60], carts=[50.0])
    assert verdicts.whys() == [
        "uplift: -0.40 chance to buy, worth -7.00 net: not worth the discount"
    ]


def test_the_site_s_margin_decides():
    # at 30% a 10% discount must lift buying by half; at 60% by a fifth
    p_offer, p_none, sites = [0.40, 0.40], [0.30, 0.30], ["thin", "fat"]
    verdicts = uplift_batch(p_offer, p_none, sites=sites, margins={"thin": 0.30, "fat": 0.60})
    assert [str(verdicts.verdict(i).outcome) for i in range(2)] == ["no_offer", "offer"]
    # a site without a margin of its own has the default
    verdicts = uplift_batch(p_offer, p_none, sites=sites)
    assert [str(verdicts.verdict(i).outcome) for i in range(2)] == ["no_offer", "no_offer"]
    assert DEFAULT_MARGIN == 0.30


def test_an_uplift_rule_keeps_its_risk_floor_cart_minimum_and_budget():
    rule = replace(BY_UPLIFT, min_risk=0.6, min_cart_value=50.0, daily_budget=1)
    verdicts = uplift_batch(
        [0.9] * 4, [0.1] * 4, risks=[0.5, 0.9, 0.9, 0.9], carts=[100, 20, 100, 100], rules=[rule]
    )
    reasons = [verdicts.verdict(i).reason for i in range(4)]
    assert [str(verdicts.verdict(i).outcome) for i in range(4)] == [
        "no_offer",
        "no_offer",
        "offer",
        "no_offer",
    ]
    assert reasons[0].startswith("risk 0.50 below")
    assert reasons[1].startswith("cart under")
    assert reasons[3] == "daily budget spent"


def test_the_holdout_holds_out_uplift_offers_too():
    verdicts = uplift_batch([0.5], [0.1], buckets=[IN_HOLDOUT])
    verdict = verdicts.verdict(0)
    assert str(verdict.outcome) == "holdout" and verdict.rule == BY_UPLIFT
    assert verdict.reason.startswith("holdout: control group (uplift: +0.40 chance to buy")


def test_without_an_uplift_model_an_uplift_rule_offers_nothing_and_a_risk_rule_still_does():
    verdicts = uplift_batch(None, None, risks=[0.9], rules=[BY_UPLIFT])
    assert str(verdicts.verdict(0).outcome) == "no_offer"
    assert verdicts.whys() == ["no uplift model yet: the rule targets by uplift"]
    verdicts = uplift_batch(None, None, risks=[0.9], rules=[replace(BY_UPLIFT, priority=1), GENTLE])
    assert verdicts.verdict(0).rule == GENTLE


def test_a_risk_rule_ignores_the_uplift_model():
    verdicts = uplift_batch([0.0], [0.9], risks=[0.9], rules=[GENTLE])
    assert str(verdicts.verdict(0).outcome) == "offer"
    assert verdicts.whys() == ["risk 0.90 reached the rule's 0.50"]


def test_uplift_gain_is_the_margin_with_the_offer_less_without():
    assert uplift_gain(0.5, 0.1, margin=0.3, discount=0.1) == pytest.approx(0.07)
    assert uplift_gain(0.3, 0.2, margin=0.3, discount=0.1) == pytest.approx(0.0)


# --- exploration -----------------------------------------------------------------------------


def test_an_explored_session_is_offered_or_held_out_at_random_whatever_its_risk_and_uplift():
    verdicts = uplift_batch(
        [0.0, 0.0],
        [0.9, 0.9],
        risks=[0.01, 0.01],
        buckets=[EXPLORE_OFFER, EXPLORE_HOLD],
        explore_percent=5,
    )
    assert [str(verdicts.verdict(i).outcome) for i in range(2)] == ["offer", "holdout"]
    assert verdicts.whys() == [
        "explore: offered at random, to learn what offers change",
        "explore: held out at random, to learn what offers change",
    ]
    assert verdicts.spent == {BY_UPLIFT.id: 2}  # a holdout spends as the offer it stands for


def test_exploration_keeps_to_the_cart_minimum_and_the_budget():
    rule = replace(GENTLE, min_cart_value=50.0, daily_budget=1)
    verdicts = uplift_batch(
        None,
        None,
        risks=[0.0, 0.0, 0.0],
        carts=[20.0, 80.0, 80.0],
        buckets=[EXPLORE_OFFER] * 3,
        rules=[rule],
        explore_percent=5,
    )
    assert [str(verdicts.verdict(i).outcome) for i in range(3)] == ["no_offer", "offer", "no_offer"]


def test_without_exploring_nobody_explores():
    verdicts = uplift_batch([0.0], [0.9], buckets=[EXPLORE_OFFER], explore_percent=0)
    assert str(verdicts.verdict(0).outcome) == "no_offer"


def test_exploration_takes_its_share_half_offered_and_never_the_holdout():
    buckets = np.array([holdout_bucket(f"s-{i}") for i in range(20_000)], dtype=np.float64)
    explores = exploring(buckets, 5.0)
    assert 0.045 < explores.mean() < 0.055
    assert 0.45 < explore_offers(buckets[explores]).mean() < 0.55
    held = buckets < holdout_limit(10.0)
    assert not (explores & held).any()
    # the holdout and exploration together never exceed everyone
    assert not (exploring(buckets, 90.0) & (buckets < holdout_limit(10.0))).any()


# --- the batch against a row-by-row reference ------------------------------------------------


def one_at_a_time(
    rows: list[tuple[float, float, float, float, float]],
    rules: Sequence[Rule],
    *,
    margin: float,
    holdout_percent: float,
    explore_percent: float,
) -> list[tuple[str, int | None]]:
    """The policy as the README words it, a session after another: (outcome, rule id) each.

    Each row: (risk, cart, bucket, p_offer, p_none).
    """
    used: dict[int, int] = {}
    out: list[tuple[str, int | None]] = []
    for risk, cart, bucket, p_offer, p_none in rows:
        explores = bucket >= HOLDOUT_BUCKETS * (1 - explore_percent / 100)
        fitting = []
        for rule in sorted(rules, key=lambda r: (r.priority, r.id)):
            if used.get(rule.id, 0) >= rule.daily_budget or cart < rule.min_cart_value:
                continue
            pays = p_offer * cart * (margin - rule.discount_percent / 100) > p_none * cart * margin
            if explores or (risk >= rule.min_risk and (pays or rule.targeting == "risk")):
                fitting.append(rule)
        if not fitting:
            out.append(("no_offer", None))
            continue
        rule = fitting[0]
        used[rule.id] = used.get(rule.id, 0) + 1
        if bucket < holdout_percent * 100:
            out.append(("holdout", rule.id))
        elif explores:
            out.append(("offer" if bucket % 2 == 0 else "holdout", rule.id))
        else:
            out.append(("offer", rule.id))
    return out


def test_a_batch_with_uplift_rules_decides_as_one_session_after_another():
    rng = np.random.default_rng(11)
    rules = [
        replace(BY_UPLIFT, daily_budget=60),
        replace(GENTLE, id=3, priority=30, min_risk=0.7, daily_budget=40),
        replace(
            BY_UPLIFT, id=4, priority=5, discount_percent=20, min_cart_value=120.0, daily_budget=15
        ),
        replace(BY_UPLIFT, id=5, priority=1, min_risk=0.9, daily_budget=5),
    ]
    n = 600
    risks = rng.random(n)
    carts = rng.choice([20.0, 60.0, 150.0, 400.0], size=n)
    buckets = rng.integers(0, HOLDOUT_BUCKETS, size=n).astype(np.float64)
    p_none = rng.random(n) * 0.6
    p_offer = np.clip(p_none + rng.normal(0.05, 0.15, size=n), 0, 1)
    verdicts = decide(
        risks=risks,
        sites=["demo"] * n,
        cart_values=carts,
        last_offer_at=np.full(n, np.nan),
        holdout_buckets=buckets,
        rules=rules,
        used_today={},
        now=NOW,
        cooldown_seconds=600.0,
        holdout_percent=10.0,
        p_offer=p_offer,
        p_none=p_none,
        margins={"demo": 0.35},
        explore_percent=8.0,
    )
    got = [
        (str(verdicts.verdict(i).outcome), r.id if (r := verdicts.rule_of(i)) else None)
        for i in range(n)
    ]
    rows = list(zip(risks, carts, buckets, p_offer, p_none, strict=True))
    expected = one_at_a_time(rows, rules, margin=0.35, holdout_percent=10.0, explore_percent=8.0)
    assert got == expected
    outcomes = {outcome for outcome, _ in got}
    assert outcomes == {"offer", "holdout", "no_offer"}
    # every row's words are its own verdict's
    assert verdicts.whys() == [verdicts.verdict(i).reason for i in range(n)]
