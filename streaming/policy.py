"""What to do with a risk: offer, hold out, or nothing (SPEC section 5).

A pure function of the risk, the session, the active rules and the clock: the caller reads the
rules, today's budget use and the session's last offer, and writes what was decided.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

Outcome = Literal["offer", "holdout", "no_offer"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("offer", "holdout", "no_offer")

# Crockford's base32: no I, L, O or U, so a code read aloud or retyped survives.
CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH: Final = 10  # 50 random bits
HOLDOUT_BUCKETS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Rule:
    """An active offer rule, as plain values. `site` is a site key, or None for every site."""

    id: int
    priority: int
    min_risk: float
    min_cart_value: float
    discount_percent: int
    title: str
    message: str
    daily_budget: int
    valid_minutes: int
    site: str | None = None

    def applies_to(self, site: str) -> bool:
        return self.site is None or self.site == site


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    rule: Rule | None
    reason: str


def in_holdout(session_id: str, percent: float) -> bool:
    """Whether the session belongs to the control group of `percent` % of sessions.

    Depends on the session id alone (sha256, not `hash`, which is seeded per process), so every
    process and every restart agrees.
    """
    digest = hashlib.sha256(f"holdout:{session_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS
    return bucket < percent * (HOLDOUT_BUCKETS / 100)


def decide(
    *,
    risk: float | None,
    site: str,
    session_id: str,
    cart_value: float,
    rules: Sequence[Rule],
    used_today: Mapping[int, int],
    last_offer_at: float | None,
    now: float,
    cooldown_seconds: float,
    holdout_percent: float,
) -> Verdict:
    """One decision for one pause. `used_today` maps a rule id to the offers it made today."""
    if risk is None:
        return Verdict("no_offer", None, "no active model")
    if math.isnan(risk):
        return Verdict("no_offer", None, "the model gave no risk (NaN)")
    if last_offer_at is not None and now - last_offer_at < cooldown_seconds:
        return Verdict("no_offer", None, f"cooldown: offer {now - last_offer_at:.0f} s ago")

    candidates = sorted(
        (rule for rule in rules if rule.applies_to(site)), key=lambda r: (r.priority, r.id)
    )
    if not candidates:
        return Verdict("no_offer", None, f"no offer rule for site {site}")

    risky_enough = [rule for rule in candidates if risk >= rule.min_risk]
    if not risky_enough:
        lowest = min(rule.min_risk for rule in candidates)
        return Verdict(
            "no_offer", None, f"risk {risk:.2f} below every rule (lowest min_risk {lowest:.2f})"
        )
    big_enough = [rule for rule in risky_enough if cart_value >= rule.min_cart_value]
    if not big_enough:
        return Verdict(
            "no_offer",
            None,
            f"cart value {cart_value:.2f} below the minimum of every rule for risk {risk:.2f}",
        )
    with_budget = [rule for rule in big_enough if used_today.get(rule.id, 0) < rule.daily_budget]
    if not with_budget:
        ids = ", ".join(str(rule.id) for rule in big_enough)
        noun = "rule" if len(big_enough) == 1 else "rules"
        return Verdict("no_offer", None, f"budget of {noun} {ids} used up")

    rule = with_budget[0]
    matched = f"rule {rule.id} matched (risk {risk:.2f} ≥ {rule.min_risk:.2f})"
    if in_holdout(session_id, holdout_percent):
        return Verdict("holdout", rule, f"{matched}; session in the {holdout_percent:g}% holdout")
    return Verdict("offer", rule, matched)


def new_offer_code(discount_percent: int) -> str:
    """`SAVE10-7KQ2M9XH4T`: 50 unguessable bits that are easy to read aloud and type.

    A repeat is unlikely before tens of millions of codes; the unique constraint on stored codes
    catches the rare one.
    """
    random_part = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"SAVE{discount_percent}-{random_part}"


def new_offer_id() -> str:
    """`o-` and 128 random bits, url-safe: the offer's public id."""
    return "o-" + secrets.token_urlsafe(16)


def offer_expires_at(now: float, rule: Rule) -> float:
    return now + rule.valid_minutes * 60.0
