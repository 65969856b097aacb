from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from streaming.policy import (
    CODE_ALPHABET,
    OUTCOMES,
    Outcome,
    Rule,
    Verdict,
    Verdicts,
    decide,
    holdout_bucket,
    in_holdout,
    new_offer_code,
    new_offer_id,
    offer_expires_at,
)

NOW = 1_764_000_000.0

GENTLE = Rule(
    id=1,
    priority=20,
    min_risk=0.5,
    min_cart_value=0.0,
    discount_percent=5,
    title="A little something",
    message="5% off if you check out now.",
    daily_budget=100,
    valid_minutes=30,
    site=None,
)
GENEROUS = replace(
    GENTLE, id=2, priority=10, min_risk=0.8, min_cart_value=50.0, discount_percent=15
)


def session_outside_holdout(percent: float = 10) -> str:
    return next(f"s-{i}" for i in range(1000) if not in_holdout(f"s-{i}", percent))


def session_in_holdout(percent: float = 10) -> str:
    return next(f"s-{i}" for i in range(1000) if in_holdout(f"s-{i}", percent))


def decision(
    *,
    risk: float | None = 0.9,
    site: str = "demo",
    session_id: str | None = None,
    cart_value: float = 60.0,
    rules: Sequence[Rule] = (GENTLE, GENEROUS),
    used_today: Mapping[int, int] | None = None,
    last_offer_at: float | None = None,
    cooldown_seconds: float = 600.0,
    holdout_percent: float = 10.0,
) -> Verdict:
    """One shopper, by default on `demo` with a 60.00 cart, never offered, outside the holdout."""
    verdicts = decide(
        risks=None if risk is None else np.array([risk]),
        sites=[site],
        cart_values=np.array([cart_value]),
        last_offer_at=np.array([np.nan if last_offer_at is None else last_offer_at]),
        holdout_buckets=np.array([holdout_bucket(session_id or session_outside_holdout())]),
        rules=rules,
        used_today=used_today or {},
        now=NOW,
        cooldown_seconds=cooldown_seconds,
        holdout_percent=holdout_percent,
    )
    assert len(verdicts) == 1
    return verdicts.verdict(0)


# --- which rule ------------------------------------------------------------------------------


def test_the_first_matching_rule_by_priority_makes_the_offer() -> None:
    verdict = decision(risk=0.9)

    assert verdict.outcome == "offer"
    assert verdict.rule == GENEROUS
    assert verdict.reason == "risk 0.90 reached the rule's 0.80"


def test_equal_priorities_are_tried_in_id_order() -> None:
    twin = replace(GENTLE, id=7)

    assert decision(risk=0.6, rules=[twin, GENTLE]).rule == GENTLE


def test_a_lower_risk_falls_through_to_a_gentler_rule() -> None:
    verdict = decision(risk=0.6)

    assert verdict.outcome == "offer"
    assert verdict.rule == GENTLE


def test_risk_exactly_at_min_risk_matches() -> None:
    assert decision(risk=0.5, rules=[GENTLE]).rule == GENTLE


def test_a_risk_below_every_rule_gets_no_offer() -> None:
    verdict = decision(risk=0.42)

    assert verdict == Verdict(Outcome.NO_OFFER, None, verdict.reason)
    assert verdict.reason == "risk 0.42 below every rule (lowest 0.50)"
    assert decision(risk=0.42, rules=[GENTLE]).reason == "risk 0.42 below the rule's 0.50"


def test_a_risk_is_shown_to_the_cent_or_finer_where_the_cents_would_misread() -> None:
    assert decision(risk=0.4712, rules=[GENTLE]).reason == "risk 0.47 below the rule's 0.50"
    assert decision(risk=0.497, rules=[GENTLE]).reason == "risk 0.497 below the rule's 0.50"
    assert decision(risk=0.4999, rules=[GENTLE]).reason == "risk 0.4999 below the rule's 0.50"
    assert decision(risk=0.996, rules=[GENTLE]).reason == "risk 1.00 reached the rule's 0.50"
    assert decision(risk=0.29, rules=[replace(GENTLE, min_risk=0.29)]).reason == (
        "risk 0.29 reached the rule's 0.29"
    )
    assert decision(risk=0.625, rules=[replace(GENTLE, min_risk=0.625)]).reason == (
        "risk 0.625 reached the rule's 0.625"
    )
    assert decision(risk=0.6, rules=[replace(GENTLE, min_risk=0.625)]).reason == (
        "risk 0.60 below the rule's 0.625"
    )


def test_a_batch_near_its_rules_says_each_rows_risk_as_the_row_does() -> None:
    risks = [0.495, 0.4951, 0.4999, 0.5, 0.5004, 0.497, 0.497, 0.47, 0.4712, 0.8, 0.7999]
    verdicts = batch(risks, rules=[GENTLE, GENEROUS])

    whys = verdicts.whys()

    assert whys == [verdicts.verdict(i).reason for i in range(len(risks))]
    assert whys[0] == "risk 0.495 below every rule (lowest 0.50)"
    assert whys[3] == whys[4] == "risk 0.50 reached the rule's 0.50"
    assert whys[5] == whys[6] and whys[7] == whys[8] == "risk 0.47 below every rule (lowest 0.50)"
    assert whys[10] == "risk 0.80 reached the rule's 0.50"  # 0.7999 is below GENEROUS's 0.80


def test_a_small_cart_falls_through_to_a_rule_without_minimum() -> None:
    assert decision(risk=0.9, cart_value=49.99).rule == GENTLE


def test_a_cart_too_small_for_every_rule_gets_no_offer() -> None:
    verdict = decision(risk=0.9, cart_value=10.0, rules=[GENEROUS])

    assert verdict.outcome == "no_offer"
    assert verdict.reason == "cart under the rule's minimum of 50.00"
    both = decision(
        risk=0.9, cart_value=10.0, rules=[replace(GENTLE, min_cart_value=20.0), GENEROUS]
    )
    assert both.reason == "cart under every rule's minimum (lowest 20.00)"


def test_a_site_rule_applies_only_to_its_site() -> None:
    shop_only = replace(GENEROUS, site="shop")

    assert decision(site="shop", rules=[GENTLE, shop_only]).rule == shop_only
    assert decision(site="demo", rules=[GENTLE, shop_only]).rule == GENTLE


def test_a_site_without_any_rule_gets_no_offer() -> None:
    verdict = decision(site="demo", rules=[replace(GENTLE, site="shop")])

    assert verdict.outcome == "no_offer"
    assert verdict.reason == "no offer rule for this shop"


# --- budget, cooldown, model -----------------------------------------------------------------


def test_an_exhausted_budget_falls_through_to_the_next_rule() -> None:
    verdict = decision(risk=0.9, used_today={GENEROUS.id: GENEROUS.daily_budget})

    assert verdict.outcome == "offer"
    assert verdict.rule == GENTLE


def test_when_every_budget_is_used_up_there_is_no_offer() -> None:
    verdict = decision(risk=0.9, rules=[GENEROUS], used_today={2: 100})

    assert verdict.outcome == "no_offer"
    assert verdict.reason == "daily budget spent"


def test_a_zero_budget_never_offers() -> None:
    assert decision(rules=[replace(GENTLE, daily_budget=0)]).outcome == "no_offer"


def test_a_session_in_cooldown_gets_no_offer() -> None:
    verdict = decision(last_offer_at=NOW - 120, cooldown_seconds=600)

    assert verdict.outcome == "no_offer"
    assert verdict.rule is None
    assert verdict.reason == "cooldown: last offer or holdout under 10 min ago"


def test_a_session_whose_cooldown_has_passed_gets_an_offer() -> None:
    assert decision(last_offer_at=NOW - 600, cooldown_seconds=600).outcome == "offer"


def test_without_a_model_there_is_no_offer() -> None:
    verdict = decision(risk=None)

    assert verdict == Verdict(Outcome.NO_OFFER, None, "no active model")


def test_a_risk_that_is_not_a_number_gets_no_offer() -> None:
    assert decision(risk=float("nan")).outcome == "no_offer"


# --- a batch --------------------------------------------------------------------------------


def batch(
    risks: list[float],
    *,
    sites: list[str] | None = None,
    cart_values: list[float] | None = None,
    last_offer_at: list[float] | None = None,
    buckets: list[int] | None = None,
    rules: Sequence[Rule] = (GENTLE, GENEROUS),
    used_today: Mapping[int, int] | None = None,
    skip: list[bool] | None = None,
    cooldown_seconds: float = 600.0,
    holdout_percent: float = 10.0,
) -> Verdicts:
    n = len(risks)
    outside = holdout_bucket(session_outside_holdout())
    return decide(
        risks=np.array(risks),
        sites=sites or ["demo"] * n,
        cart_values=np.array(cart_values or [60.0] * n),
        last_offer_at=np.array(last_offer_at or [np.nan] * n),
        holdout_buckets=np.array(buckets or [outside] * n, dtype=np.float64),
        rules=rules,
        used_today=used_today or {},
        now=NOW,
        cooldown_seconds=cooldown_seconds,
        holdout_percent=holdout_percent,
        skip=None if skip is None else np.array(skip),
    )


def test_rows_spend_the_budget_in_order_then_fall_through() -> None:
    verdicts = batch(
        [0.9] * 5, rules=[GENTLE, replace(GENEROUS, daily_budget=3)], used_today={2: 1}
    )

    assert [getattr(verdicts.rule_of(i), "id", None) for i in range(5)] == [2, 2, 1, 1, 1]
    assert verdicts.spent == {2: 2, 1: 3}


def test_a_holdout_spends_its_rule_s_budget_too() -> None:
    inside = holdout_bucket(session_in_holdout(10))
    outside = holdout_bucket(session_outside_holdout(10))
    verdicts = batch(
        [0.9, 0.9], buckets=[inside, outside], rules=[replace(GENEROUS, daily_budget=1)]
    )

    assert [verdicts.verdict(i).outcome for i in range(2)] == ["holdout", "no_offer"]
    assert verdicts.verdict(1).reason == "daily budget spent"
    assert verdicts.spent == {2: 1}


def test_skipped_rows_get_nothing_and_spend_nothing() -> None:
    verdicts = batch([0.9, 0.9], skip=[True, False], rules=[replace(GENEROUS, daily_budget=1)])

    assert verdicts.verdict(0).outcome == "no_offer" and verdicts.rule_of(0) is None
    assert getattr(verdicts.verdict(1).rule, "id", None) == 2
    assert verdicts.spent == {2: 1}


def test_each_row_gets_its_own_site_s_rules() -> None:
    shop_only = replace(GENEROUS, site="shop")
    verdicts = batch([0.9, 0.9, 0.9], sites=["shop", "demo", "other"], rules=[shop_only])

    assert [verdicts.rule_of(i) for i in range(3)] == [shop_only, None, None]
    assert verdicts.verdict(2).reason == "no offer rule for this shop"


def one_at_a_time(
    rows: list[tuple[float, str, float, float, int]],
    rules: Sequence[Rule],
    used_today: Mapping[int, int],
    cooldown_seconds: float,
    holdout_percent: float,
) -> list[tuple[str, int | None]]:
    """The policy as docs/PROTOCOL.md words it, a session after another: (outcome, rule id) each."""
    used = dict(used_today)
    out: list[tuple[str, int | None]] = []
    for risk, site, cart_value, last_offer_at, bucket in rows:
        if np.isnan(risk) or NOW - last_offer_at < cooldown_seconds:
            out.append(("no_offer", None))
            continue
        fitting = [
            rule
            for rule in sorted(rules, key=lambda r: (r.priority, r.id))
            if rule.applies_to(site)
            and risk >= rule.min_risk
            and cart_value >= rule.min_cart_value
            and used.get(rule.id, 0) < rule.daily_budget
        ]
        if not fitting:
            out.append(("no_offer", None))
            continue
        rule = fitting[0]
        used[rule.id] = used.get(rule.id, 0) + 1
        held = bucket < holdout_percent * 100
        out.append(("holdout" if held else "offer", rule.id))
    return out


def test_a_batch_decides_as_one_session_after_another() -> None:
    rng = np.random.default_rng(7)
    rules = [
        replace(GENTLE, daily_budget=40),
        replace(GENEROUS, daily_budget=25),
        replace(GENTLE, id=3, priority=5, min_risk=0.95, site="shop", daily_budget=10),
        replace(GENTLE, id=4, priority=10, min_risk=0.7, min_cart_value=80.0, daily_budget=0),
    ]
    n = 600
    risks = rng.random(n)
    risks[rng.random(n) < 0.05] = np.nan
    sites = [str(site) for site in rng.choice(["demo", "shop", "other"], n)]
    cart_values = np.round(rng.random(n) * 120, 2)
    last_offer_at = np.where(rng.random(n) < 0.2, NOW - rng.random(n) * 1200, np.nan)
    buckets = rng.integers(0, 10_000, n).astype(np.float64)
    used_today = {1: 5, 2: 20}

    verdicts = decide(
        risks=risks,
        sites=sites,
        cart_values=cart_values,
        last_offer_at=last_offer_at,
        holdout_buckets=buckets,
        rules=rules,
        used_today=used_today,
        now=NOW,
        cooldown_seconds=600.0,
        holdout_percent=15.0,
    )

    rows = list(zip(risks, sites, cart_values, last_offer_at, buckets, strict=True))
    want = one_at_a_time(rows, rules, used_today, 600.0, 15.0)
    got = [
        (OUTCOMES[verdicts.outcome[i]], getattr(verdicts.rule_of(i), "id", None)) for i in range(n)
    ]
    assert got == want
    assert {outcome for outcome, _ in got} == {"offer", "holdout", "no_offer"}
    spent = Counter(rule for _, rule in got if rule is not None)
    assert verdicts.spent == dict(spent) and spent[2] == 5  # what was left of rule 2's


# --- holdout ---------------------------------------------------------------------------------


def test_a_matching_session_in_the_holdout_is_held_out_with_its_rule() -> None:
    verdict = decision(session_id=session_in_holdout(10), holdout_percent=10)

    assert verdict.outcome == "holdout"
    assert verdict.rule == GENEROUS
    assert verdict.reason == "holdout: control group (risk 0.90 reached the rule's 0.80)"


def test_a_session_in_the_holdout_without_a_matching_rule_gets_no_offer() -> None:
    verdict = decision(risk=0.1, session_id=session_in_holdout(10))

    assert verdict.outcome == "no_offer"


def test_holdout_is_close_to_the_percent_over_many_sessions() -> None:
    held = sum(in_holdout(f"session-{i}", 10) for i in range(10_000))

    assert 850 <= held <= 1150


def test_holdout_edges_hold_nobody_and_everybody() -> None:
    ids = [f"session-{i}" for i in range(2000)]

    assert not any(in_holdout(session, 0) for session in ids)
    assert all(in_holdout(session, 100) for session in ids)


def test_a_larger_holdout_keeps_everyone_a_smaller_one_held() -> None:
    ids = [f"session-{i}" for i in range(2000)]

    assert all(in_holdout(session, 20) for session in ids if in_holdout(session, 10))


def test_holdout_is_the_same_in_another_process_with_another_hash_seed() -> None:
    ids = [f"session-{i}" for i in range(200)]
    here = [in_holdout(session, 25) for session in ids]
    script = (
        "from streaming.policy import in_holdout;"
        f"print([in_holdout(f'session-{{i}}', 25) for i in range({len(ids)})])"
    )

    there = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": "."},
    ).stdout

    assert there.strip() == str(here)


# --- offers ----------------------------------------------------------------------------------


def test_offer_codes_are_unique_and_easy_to_type() -> None:
    codes = [new_offer_code(10) for _ in range(10_000)]

    assert len(set(codes)) == len(codes)
    pattern = re.compile(rf"SAVE10-[{CODE_ALPHABET}]{{10}}")
    assert all(pattern.fullmatch(code) for code in codes)
    assert not set("ILOU") & set("".join(codes))


def test_offer_ids_are_unique_and_url_safe() -> None:
    ids = [new_offer_id() for _ in range(10_000)]

    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"o-[A-Za-z0-9_-]{22}", offer_id) for offer_id in ids)


def test_an_offer_expires_after_its_rule_s_valid_minutes() -> None:
    assert offer_expires_at(NOW, replace(GENTLE, valid_minutes=30)) == NOW + 1800


def test_the_whys_of_a_batch_are_each_rows_verdict_in_words() -> None:
    rng = np.random.default_rng(11)
    rules = [
        replace(GENTLE, daily_budget=60, site="shop"),
        replace(GENEROUS, daily_budget=25, site="demo"),
        replace(GENTLE, id=6, priority=40, min_risk=0.2, site="demo", daily_budget=5),
        replace(GENTLE, id=3, priority=5, min_risk=0.955, site="shop", daily_budget=10),
        replace(
            GENTLE,
            id=4,
            priority=10,
            min_risk=0.7,
            min_cart_value=80.0,
            daily_budget=0,
            site="demo",
        ),
        replace(GENTLE, id=5, priority=30, min_risk=0.3, min_cart_value=100.0, site="other"),
    ]
    n = 2000
    risks = rng.random(n)
    risks[rng.random(n) < 0.05] = np.nan
    verdicts = decide(
        risks=risks,
        sites=[str(site) for site in rng.choice(["demo", "shop", "other", "bare"], n)],
        cart_values=np.round(rng.random(n) * 120, 2),
        last_offer_at=np.where(rng.random(n) < 0.2, NOW - rng.random(n) * 1200, np.nan),
        holdout_buckets=rng.integers(0, 10_000, n).astype(np.float64),
        rules=rules,
        used_today={1: 5, 2: 20},
        now=NOW,
        cooldown_seconds=600.0,
        holdout_percent=15.0,
        skip=rng.random(n) < 0.02,
    )

    whys = verdicts.whys()

    assert whys == [verdicts.verdict(i).reason for i in range(n)]
    assert len(set(whys)) < n / 4  # each text made once, not once a row
    said = " | ".join(sorted(set(whys)))
    for words in ("reached the rule's", "below", "cooldown", "daily budget spent", "holdout"):
        assert words in said
    assert "no offer rule for this shop" in said and "cart under" in said
    assert "taken over" in said


def test_an_empty_batch_has_no_whys() -> None:
    assert batch([]).whys() == []


def test_without_a_model_every_row_says_so() -> None:
    verdicts = decide(
        risks=None,
        sites=["demo"] * 3,
        cart_values=np.full(3, 60.0),
        last_offer_at=np.full(3, np.nan),
        holdout_buckets=np.zeros(3),
        rules=[GENTLE],
        used_today={},
        now=NOW,
        cooldown_seconds=600.0,
        holdout_percent=10.0,
    )

    assert verdicts.whys() == ["no active model"] * 3
