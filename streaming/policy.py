"""What to do with a risk: offer, hold out, or nothing (README.md, "Decisions and offers").

A pure function of the risks, the sessions, the active rules and the clock, for a whole batch
of paused sessions at once: the caller reads the rules, today's budget use and the sessions'
last offers, and writes what was decided. The batch is decided as if row after row, in order:
a row's offer spends its rule's budget before the next row is looked at.

A rule targets by risk (offers from its `min_risk` up) or by uplift (README.md, "Targeting by
uplift"): it then offers only where the expected margin with the offer beats the margin without
it, `p_offer x cart x (margin - discount) > p_none x cart x margin`, the two chances from the
uplift model (streaming/uplift_model.py). Its `min_risk`, cart minimum, budget, cooldown and
holdout hold as for any rule. An `explore_percent` share of sessions (from the same bucket as
the holdout, the other end of it) is offered or held out at random, half and half, wherever a
rule's cart minimum and budget allow, whatever its risk or uplift: with the holdout, these are
the randomised decisions an uplift model learns from.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt


class Outcome(StrEnum):
    """What a decision did. The one list of outcomes: the policy, the records (`Decision.outcome`),
    the metrics and the dashboard all read it."""

    OFFER = "offer"
    HOLDOUT = "holdout"
    NO_OFFER = "no_offer"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


class Targeting(StrEnum):
    """How a rule picks whom to offer. The one list: rules, the admin and the README read it."""

    RISK = "risk"
    UPLIFT = "uplift"

    @property
    def label(self) -> str:
        return {"risk": "By risk (min_risk and up)", "uplift": "By uplift (offers that pay)"}[
            self.value
        ]


OUTCOMES: Final[tuple[Outcome, ...]] = tuple(Outcome)
OFFER, HOLDOUT, NO_OFFER = (OUTCOMES.index(o) for o in Outcome)  # indexes into OUTCOMES

# Crockford's base32: no I, L, O or U, so a code read aloud or retyped survives.
CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH: Final = 10  # 50 random bits
HOLDOUT_BUCKETS: Final = 10_000
# A site's gross margin when none is known: Site.gross_margin_percent's default.
DEFAULT_MARGIN: Final = 0.30
_TO_CODE_ALPHABET: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CODE_ALPHABET)

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

# Why a row got what it got (`Verdicts.why`); the words are made only when asked for.
MATCHED, NO_MODEL, NO_RISK, COOLDOWN, NO_RULE, LOW_RISK, SMALL_CART, NO_BUDGET, SKIPPED = range(9)
EXPLORED, LOW_UPLIFT, NO_UPLIFT = range(9, 12)


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
    targeting: Targeting = Targeting.RISK

    def applies_to(self, site: str) -> bool:
        return self.site is None or self.site == site

    @property
    def by_uplift(self) -> bool:
        return self.targeting == Targeting.UPLIFT


@dataclass(frozen=True, slots=True)
class Verdict:
    """One row of `Verdicts`, in words."""

    outcome: Outcome
    rule: Rule | None
    reason: str


def holdout_bucket(session_id: str) -> int:
    """The session's place among HOLDOUT_BUCKETS: below `percent` % of them is the holdout.

    Depends on the session id alone (sha256, not `hash`, which is seeded per process), so every
    process and every restart agrees. A session works it out once, when it starts.
    """
    digest = hashlib.sha256(f"holdout:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS


def holdout_limit(percent: float) -> float:
    """Buckets below this are held out."""
    return percent * (HOLDOUT_BUCKETS / 100)


def in_holdout(session_id: str, percent: float) -> bool:
    """Whether the session belongs to the control group of `percent` % of sessions."""
    return holdout_bucket(session_id) < holdout_limit(percent)


def exploring(buckets: Floats, percent: float) -> Bools:
    """Which buckets explore: the top `percent` % of them, apart from the holdout at the bottom
    as long as the two percentages add up to at most 100."""
    return np.asarray(buckets >= HOLDOUT_BUCKETS - holdout_limit(percent))


def explore_offers(buckets: Floats) -> Bools:
    """Of exploring buckets, which are offered (even) rather than held out (odd): half and half,
    at random as the bucket is (a hash of the session id)."""
    return np.asarray(np.fmod(buckets, 2) == 0)


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What the policy decided for each row of a batch."""

    outcome: npt.NDArray[np.int8]  # OFFER, HOLDOUT or NO_OFFER
    rule: npt.NDArray[np.intp]  # index into `rules`, -1 for none
    why: npt.NDArray[np.int8]  # MATCHED, NO_MODEL, ...
    rules: tuple[Rule, ...]  # the rules tried, by priority
    spent: dict[int, int]  # rule id -> offers and holdouts it made in this batch
    # the inputs, for the reasons in words
    risks: Floats
    cart_values: Floats
    last_offer_at: Floats
    sites: Sequence[str]
    now: float
    holdout_percent: float
    cooldown_seconds: float = 0.0
    # uplift targeting: each row's chances to buy with and without an offer (None: no uplift
    # model), its site's margin, and the rule whose uplift its words show (-1: none)
    p_offer: Floats | None = None
    p_none: Floats | None = None
    margins: Floats | None = None
    uplift_rule: npt.NDArray[np.intp] | None = None

    def __len__(self) -> int:
        return len(self.outcome)

    def keep_within(self, granted: Mapping[int, int]) -> int:
        """Take back, from the end of the batch, each rule's offers and holdouts beyond what
        its shared budget `granted` (rule id -> how many); returns how many were taken back."""
        taken = 0
        for index, rule in enumerate(self.rules):
            over = self.spent.get(rule.id, 0) - granted.get(rule.id, 0)
            if over <= 0:
                continue
            rows = np.flatnonzero(self.rule == index)[-over:]
            self.outcome[rows] = NO_OFFER
            self.rule[rows] = -1
            self.why[rows] = NO_BUDGET
            self.spent[rule.id] -= len(rows)
            taken += len(rows)
        return taken

    def rule_of(self, i: int) -> Rule | None:
        index = int(self.rule[i])
        return None if index < 0 else self.rules[index]

    def verdict(self, i: int) -> Verdict:
        """Row `i` in words: the outcome, its rule and why."""
        outcome, rule, why = OUTCOMES[self.outcome[i]], self.rule_of(i), int(self.why[i])
        return Verdict(outcome, rule, self._reason(i, why, rule))

    def whys(self) -> list[str]:
        """Why each row got its outcome, in words: `verdict(i).reason` of every row.

        The words of a row depend only on its why, outcome, rule, site and risk to the cent (or
        finer, where the cents would misread against the rule), and which rules that risk
        reached, so each distinct text is made once, from one of its rows: a batch of thousands of
        pauses has a few dozen.
        """
        n = len(self)
        if n == 0:
            return []
        why = self.why
        matched, low = why == MATCHED, why == LOW_RISK
        sites = _site_indexes(self.sites)
        # (n,) the threshold a shown risk is read against: the rule's, or the lowest of the site's
        mins = np.asarray([rule.min_risk for rule in self.rules] + [np.nan], dtype=np.float64)
        lowest = np.asarray(self._lowest_min_risks(), dtype=np.float64)
        threshold = np.where(matched, mins[self.rule], np.where(low, lowest[sites], np.nan))
        # (n,) the risk in cents where the words show it (-1: they do not), or past 100 a rank of
        # the exact risk, where the cents would misread (0.597 "below" 0.60)
        shows_risk = (matched | low) & ~np.isnan(self.risks)
        risks = np.where(shows_risk, self.risks, 0.0)
        cents = np.rint(risks * 100)
        misread = shows_risk & ((cents / 100 < threshold) != low)
        cents = np.where(shows_risk, cents, -1).astype(np.int64)
        if misread.any():
            _, rank = np.unique(risks[misread], return_inverse=True)
            cents[misread] = 101 + rank.reshape(-1)
        # (n,) how many rules, by min_risk, a too small cart's risk reached: the same rules for
        # the same site
        thresholds = np.sort(np.asarray([rule.min_risk for rule in self.rules], dtype=np.float64))
        small = why == SMALL_CART
        reached = np.where(
            small, np.searchsorted(thresholds, np.where(small, self.risks, 0.0), side="right"), 0
        )
        # the site, where the words depend on its rules
        site = np.where(small | low, sites, 0)
        # (n,) one integer a distinct text
        rules = len(self.rules) + 1
        key = why.astype(np.int64) * len(OUTCOMES) + self.outcome
        key = key * rules + (self.rule + 1)
        key = key * (int(site.max()) + 1) + site
        key = key * (int(cents.max()) + 2) + (cents + 1)
        key = key * rules + reached
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        texts = np.asarray(
            [self._reason(int(i), int(self.why[i]), self.rule_of(int(i))) for i in first],
            dtype=object,
        )
        whys: list[str] = texts[inverse.reshape(-1)].tolist()
        # words with a row's own uplift and money in them: made row by row
        if self.uplift_rule is not None:
            for i in np.flatnonzero(self.uplift_rule >= 0):
                whys[i] = self._reason(int(i), int(why[i]), self.rule_of(int(i)))
        return whys

    def uplift_words(self, i: int, rule: Rule) -> str:
        """Row `i`'s uplift under `rule` in words: "uplift: +0.12 chance to buy, worth 18.20 net"
        (the chance with the offer less without it, and the expected margin it adds)."""
        assert self.p_offer is not None
        assert self.p_none is not None
        p_offer, p_none = float(self.p_offer[i]), float(self.p_none[i])
        margin = DEFAULT_MARGIN if self.margins is None else float(self.margins[i])
        worth = float(self.cart_values[i]) * uplift_gain(
            p_offer, p_none, margin=margin, discount=rule.discount_percent / 100
        )
        return f"uplift: {p_offer - p_none:+.2f} chance to buy, worth {worth:,.2f} net"

    def _lowest_min_risks(self) -> list[float]:
        """The lowest min_risk of the rules for each site, by `_site_indexes`."""
        distinct = sorted(set(self.sites))
        return [
            min((rule.min_risk for rule in self.rules if rule.applies_to(site)), default=np.nan)
            for site in distinct
        ]

    def _reason(self, i: int, why: int, rule: Rule | None) -> str:
        risk, site = float(self.risks[i]), self.sites[i]
        if why == MATCHED and rule is not None and rule.by_uplift and self.p_offer is not None:
            words = self.uplift_words(i, rule)
            if self.outcome[i] == HOLDOUT:
                return f"holdout: control group ({words})"
            return words
        if why == EXPLORED:
            if self.outcome[i] == HOLDOUT:
                return "explore: held out at random, to learn what offers change"
            return "explore: offered at random, to learn what offers change"
        if why == LOW_UPLIFT:
            index = -1 if self.uplift_rule is None else int(self.uplift_rule[i])
            shown_rule = self.rules[index] if index >= 0 else None
            if shown_rule is None or self.p_offer is None:
                return "uplift: not worth the discount"
            return f"{self.uplift_words(i, shown_rule)}: not worth the discount"
        if why == NO_UPLIFT:
            return "no uplift model yet: the rule targets by uplift"
        if why == MATCHED:
            assert rule is not None
            shown = _risk_text(risk, rule.min_risk, below=False)
            matched = f"risk {shown} reached the rule's {_threshold_text(rule.min_risk)}"
            if self.outcome[i] == HOLDOUT:
                return f"holdout: control group ({matched})"
            return matched
        if why == NO_MODEL:
            return "no active model"
        if why == NO_RISK:
            return "the model gave no risk"
        if why == COOLDOWN:
            return f"cooldown: last offer or holdout under {_duration(self.cooldown_seconds)} ago"
        if why == NO_RULE:
            return "no offer rule for this shop"
        candidates = [rule for rule in self.rules if rule.applies_to(site)]
        if why == LOW_RISK:
            bar = min(rule.min_risk for rule in candidates)
            shown, lowest = _risk_text(risk, bar, below=True), _threshold_text(bar)
            if len(candidates) == 1:
                return f"risk {shown} below the rule's {lowest}"
            return f"risk {shown} below every rule (lowest {lowest})"
        if why == SMALL_CART:
            reached = [rule for rule in candidates if risk >= rule.min_risk]
            least = f"{min(rule.min_cart_value for rule in reached):,.2f}"
            if len(reached) == 1:
                return f"cart under the rule's minimum of {least}"
            return f"cart under every rule's minimum (lowest {least})"
        if why == NO_BUDGET:
            return "daily budget spent"
        return "taken over: decided before its worker stopped"


def uplift_gain(p_offer: float, p_none: float, *, margin: float, discount: float) -> float:
    """What an offer is worth per unit of cart: the expected margin with it less without it."""
    return p_offer * (margin - discount) - p_none * margin


def _site_indexes(sites: Sequence[str]) -> npt.NDArray[np.int64]:
    """Each row's site as a small integer (the usual batch: one shop, all 0)."""
    distinct = set(sites)
    if len(distinct) == 1:
        return np.zeros(len(sites), dtype=np.int64)
    index = {site: i for i, site in enumerate(sorted(distinct))}
    return np.fromiter(map(index.__getitem__, sites), dtype=np.int64, count=len(sites))


def _risk_text(risk: float, threshold: float, *, below: bool) -> str:
    """The risk to the cent, or finer where the cents would misread against the threshold: "0.47"
    below 0.60, "0.597" below 0.60 (not "0.60"), "0.625" reaching 0.625 (not "0.62")."""
    for digits in (2, 3, 4, 5, 6):
        scale = 10**digits
        shown = round(risk * scale) / scale  # as `whys` rounds: half to even, as np.rint
        if (shown < threshold) == below:
            break
    return f"{shown:.{digits}f}"


def _threshold_text(value: float) -> str:
    """0.60, or 0.625 when the cents do not say it."""
    return f"{value:.2f}" if abs(value * 100 - round(value * 100)) < 1e-6 else f"{value:.3f}"


def _duration(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 90 else f"{seconds / 60:.3g} min"


def decide(
    *,
    risks: Floats | None,
    sites: Sequence[str],
    cart_values: Floats,
    last_offer_at: Floats,
    holdout_buckets: Floats,
    rules: Sequence[Rule],
    used_today: Mapping[int, int],
    now: float,
    cooldown_seconds: float,
    holdout_percent: float,
    skip: Bools | None = None,
    p_offer: Floats | None = None,
    p_none: Floats | None = None,
    margins: Mapping[str, float] | None = None,
    explore_percent: float = 0.0,
) -> Verdicts:
    """One decision for each paused session of a batch, row after row.

    Row i is a session: its risk (None for all: no active model), site, cart value, last offer
    or holdout (NaN: never) and holdout bucket. `used_today` maps a rule id to the offers it made
    today; `skip` marks rows decided before (no verdict, no budget spent). Each row gets the
    first rule by (priority, id) that applies to its site, whose `min_risk` and
    `min_cart_value` it reaches and whose daily budget is not used up by then, unless it is in
    its cooldown; a matched row in the holdout gets `holdout`, the others `offer`.

    A rule that targets by uplift also needs the offer to pay for the row: `p_offer` and
    `p_none` (None: no uplift model, and such a rule matches nothing), the margin of the row's
    site in `margins` (site key -> fraction, DEFAULT_MARGIN for a site not in it) and the rule's
    discount. A row in the `explore_percent` share (`exploring`) gets the first rule that applies
    to its site, whose cart minimum it reaches and whose budget is left, whatever its risk and
    uplift, and is offered or held out at random (`explore_offers`).
    """
    n = len(sites)
    ordered = tuple(sorted(rules, key=lambda r: (r.priority, r.id)))
    outcome = np.full(n, NO_OFFER, dtype=np.int8)
    chosen = np.full(n, -1, dtype=np.intp)
    why = np.empty(n, dtype=np.int8)
    spent: dict[int, int] = {}
    known = np.full(n, np.nan) if risks is None else np.asarray(risks, dtype=np.float64)
    by_uplift = any(rule.by_uplift for rule in ordered)
    margin_of = (
        _site_margins(sites, margins)
        if by_uplift or margins
        else np.full(n, DEFAULT_MARGIN, dtype=np.float64)
    )
    shown_uplift = np.full(n, -1, dtype=np.intp) if by_uplift and p_offer is not None else None
    verdicts = Verdicts(
        outcome,
        chosen,
        why,
        ordered,
        spent,
        known,
        cart_values,
        last_offer_at,
        sites,
        now,
        holdout_percent,
        cooldown_seconds,
        p_offer,
        p_none,
        margin_of,
        shown_uplift,
    )
    if risks is None:
        why[:] = NO_MODEL
        return verdicts

    why[:] = NO_RISK
    open_ = ~np.isnan(known)
    # NaN (never offered) compares False: not in cooldown
    cooling = open_ & (now - last_offer_at < cooldown_seconds)
    why[cooling] = COOLDOWN
    open_ &= ~cooling
    if skip is not None:
        why[skip] = SKIPPED
        open_ &= ~skip
    # For each rule, the rows it applies to, and the furthest each open row got: no rule for
    # its site, below every rule's risk, every cart minimum, or every budget.
    site_of = _site_masks(sites, ordered)
    has_rule = np.zeros(n, dtype=bool)
    risky = np.zeros(n, dtype=bool)
    fits = np.zeros(n, dtype=bool)
    worth = np.zeros(n, dtype=bool)  # fits a rule that would offer: by risk, or paying uplift
    waits = np.zeros(n, dtype=bool)  # fits a rule by uplift, without an uplift model
    explores = (
        open_ & exploring(holdout_buckets, explore_percent)
        if explore_percent > 0
        else np.zeros(n, dtype=bool)
    )
    unassigned = open_.copy()
    for index, rule in enumerate(ordered):
        applies = site_of[index]
        cart_ok = applies & (cart_values >= rule.min_cart_value)
        rule_risky = applies & (known >= rule.min_risk)
        rule_fits = rule_risky & cart_ok
        has_rule |= applies
        risky |= rule_risky
        fits |= rule_fits
        if not rule.by_uplift:
            rule_worth = rule_fits
        elif p_offer is None or p_none is None or shown_uplift is None:
            rule_worth = np.zeros(n, dtype=bool)
            waits |= rule_fits
        else:
            # (n,) the offer's worth per unit of cart: margin with it less margin without it
            gain = p_offer * (margin_of - rule.discount_percent / 100) - p_none * margin_of
            rule_worth = rule_fits & (gain > 0)
            # the words show the first uplift rule a row fits (its own, once matched)
            shown_uplift[rule_fits & (shown_uplift < 0) & unassigned] = index
        worth |= rule_worth
        left = rule.daily_budget - used_today.get(rule.id, 0)
        takers = np.flatnonzero(unassigned & (rule_worth | (explores & cart_ok)))[: max(left, 0)]
        if len(takers):
            chosen[takers] = index
            unassigned[takers] = False
            spent[rule.id] = len(takers)
    matched = chosen >= 0
    why[open_ & ~has_rule] = NO_RULE
    why[open_ & has_rule & ~risky] = LOW_RISK
    why[open_ & risky & ~fits] = SMALL_CART
    why[open_ & fits & ~worth] = LOW_UPLIFT
    why[open_ & fits & ~worth & waits] = NO_UPLIFT
    why[open_ & worth & ~matched] = NO_BUDGET
    why[matched] = MATCHED
    explored = matched & explores
    why[explored] = EXPLORED
    held = matched & (holdout_buckets < holdout_limit(holdout_percent))
    outcome[matched] = OFFER
    outcome[held | (explored & ~explore_offers(holdout_buckets))] = HOLDOUT
    if shown_uplift is not None:
        # only a row matched by an uplift rule, or one that such a rule found not worth it,
        # shows an uplift
        chosen_uplift = np.asarray([rule.by_uplift for rule in ordered] + [False])[chosen]
        shows = (why == LOW_UPLIFT) | ((why == MATCHED) & chosen_uplift)
        shown_uplift[(why == MATCHED) & chosen_uplift] = chosen[(why == MATCHED) & chosen_uplift]
        shown_uplift[~shows] = -1
    return verdicts


def _site_margins(sites: Sequence[str], margins: Mapping[str, float] | None) -> Floats:
    """Each row's site's gross margin, as a fraction."""
    margins = margins or {}
    distinct = set(sites)
    if len(distinct) == 1:
        (site,) = distinct
        return np.full(len(sites), margins.get(site, DEFAULT_MARGIN), dtype=np.float64)
    return np.fromiter(
        (margins.get(site, DEFAULT_MARGIN) for site in sites), dtype=np.float64, count=len(sites)
    )


def _site_masks(sites: Sequence[str], rules: Sequence[Rule]) -> list[Bools]:
    """For each rule, which rows' sites it applies to."""
    n = len(sites)
    everywhere = np.ones(n, dtype=bool)
    distinct = set(sites)
    if len(distinct) == 1:  # the usual batch: one shop
        (site,) = distinct
        nowhere = np.zeros(n, dtype=bool)
        return [everywhere if rule.applies_to(site) else nowhere for rule in rules]
    keys = np.asarray(sites, dtype=object)
    return [everywhere if rule.site is None else keys == rule.site for rule in rules]


def new_offer_code(discount_percent: int) -> str:
    """`SAVE10-7KQ2M9XH4T`: 50 unguessable bits that are easy to read aloud and type.

    A repeat is unlikely before tens of millions of codes; the unique constraint on stored codes
    catches the rare one.
    """
    # 56 random bits as standard base32, of which the first 10 digits (50 bits) are kept
    random_part = base64.b32encode(secrets.token_bytes(7))[:CODE_LENGTH].decode()
    return f"SAVE{discount_percent}-{random_part.translate(_TO_CODE_ALPHABET)}"


def new_offer_id() -> str:
    """`o-` and 128 random bits, url-safe: the offer's public id."""
    return "o-" + secrets.token_urlsafe(16)


def offer_expires_at(now: float, rule: Rule) -> float:
    return now + rule.valid_minutes * 60.0
