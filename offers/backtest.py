"""Backtest: yesterday's traffic through a model and a rulebook, as the live worker would have
decided it.

A clickstream is replayed (`streaming.clickstream.replay`: the live state and feature code, on a
simulated clock); each pause is scored by each model and decided by the policy
(`streaming.policy.decide`: rules, cooldown, holdout and daily budgets), pause after pause in
time order. What comes out: decisions by outcome, offers and the discount they would give,
budget use per rule and day, and each model's ROC-AUC and PR-AUC on what shoppers really did
next (with bootstrap 95% intervals).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from streaming.budget import day_of
from streaming.clickstream import Replayed
from streaming.policy import OUTCOMES, Outcome, Rule, Targeting, decide, holdout_bucket
from streaming.scoring import Scorer
from streaming.training import auc, average_precision

Floats = npt.NDArray[np.float64]
BOOTSTRAP_ROUNDS = 1000


@dataclass
class Backtest:
    model: str
    pauses: int
    abandoned: int
    risks: Floats
    outcomes: Counter[str] = field(default_factory=Counter)
    discount: float = 0.0  # what the offers would take off their carts
    budget: dict[str, dict[int, int]] = field(default_factory=dict)  # day -> rule id -> used
    roc_auc: dict[str, float | None] = field(default_factory=dict)
    pr_auc: dict[str, float | None] = field(default_factory=dict)
    # each pause's decision, in time order: {"session", "at", "outcome", "risk", "why"}
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pauses": self.pauses,
            "abandoned": self.abandoned,
            "outcomes": {o.value: self.outcomes.get(o.value, 0) for o in OUTCOMES},
            "discount": round(self.discount, 2),
            "budget": self.budget,
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
        }


def run_backtest(
    replayed: Replayed,
    scorer: Scorer,
    *,
    rules: Sequence[Rule],
    cooldown_seconds: float,
    holdout_percent: float,
    seed: int = 0,
) -> Backtest:
    """The replayed pauses scored by `scorer` and decided by `rules`, in time order."""
    order = sorted(range(len(replayed)), key=lambda i: replayed.pauses[i].at)
    risks = scorer.predict_proba(replayed.X).astype(np.float64) if len(replayed) else np.empty(0)
    result = Backtest(scorer.label, len(replayed), int(replayed.y.sum()), risks)
    last_offer: dict[str, float] = {}
    used: dict[str, Counter[int]] = {}
    for i in order:
        pause = replayed.pauses[i]
        day = day_of(pause.at)
        spent = used.setdefault(day, Counter())
        verdicts = decide(
            risks=risks[i : i + 1],
            sites=[pause.site],
            cart_values=np.array([pause.cart_value]),
            last_offer_at=np.array([last_offer.get(pause.session_id, math.nan)]),
            holdout_buckets=np.array([float(holdout_bucket(pause.session_id))]),
            rules=rules,
            used_today=spent,
            now=pause.at,
            cooldown_seconds=cooldown_seconds,
            holdout_percent=holdout_percent,
        )
        verdict = verdicts.verdict(0)
        result.outcomes[verdict.outcome.value] += 1
        result.decisions.append(
            {
                "session": pause.session_id,
                "at": round(pause.at, 3),
                "outcome": verdict.outcome.value,
                "risk": round(float(risks[i]), 6),
                "why": verdict.reason,
            }
        )
        if verdict.rule is not None and verdict.outcome != Outcome.NO_OFFER:
            spent[verdict.rule.id] += 1
            last_offer[pause.session_id] = pause.at
            if verdict.outcome == Outcome.OFFER:
                result.discount += pause.cart_value * verdict.rule.discount_percent / 100
    result.budget = {day: dict(spent) for day, spent in sorted(used.items()) if spent}
    truth = replayed.y.astype(np.float64)
    result.roc_auc = with_interval(auc, truth, risks, seed=seed)
    result.pr_auc = with_interval(average_precision, truth, risks, seed=seed)
    return result


def with_interval(
    metric: Callable[[Floats, Floats], float],
    truth: Floats,
    scores: Floats,
    *,
    seed: int = 0,
    rounds: int = BOOTSTRAP_ROUNDS,
) -> dict[str, float | None]:
    """The metric and its bootstrap 95% interval (percentiles of `rounds` resamples of pauses)."""
    if len(truth) == 0 or truth.min() == truth.max():
        return {"estimate": None, "low": None, "high": None}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds):
        pick = rng.integers(0, len(truth), len(truth))
        if truth[pick].min() != truth[pick].max():
            samples.append(metric(truth[pick], scores[pick]))
    low, high = np.percentile(samples, [2.5, 97.5])
    return {
        "estimate": round(metric(truth, scores), 4),
        "low": round(float(low), 4),
        "high": round(float(high), 4),
    }


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One rule of a rules file: `id` and `min_risk` at least, the rest as an offer rule's
    defaults (the admin's limits hold: a risk 0-1, a discount of 1-90%)."""

    id: int
    min_risk: Annotated[float, msgspec.Meta(ge=0, le=1)]
    priority: int = 100
    min_cart_value: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    discount_percent: Annotated[int, msgspec.Meta(ge=1, le=90)] = 10
    title: str = ""
    message: str = ""
    daily_budget: Annotated[int, msgspec.Meta(ge=0)] = 1000
    valid_minutes: Annotated[int, msgspec.Meta(ge=1)] = 30
    site: str | None = None
    targeting: Targeting = Targeting.RISK


def rules_from_file(path: str | Path) -> list[Rule]:
    """Rules from a JSON list of objects with `RuleSpec`'s fields; a ValueError says what is
    wrong with the file (or that it cannot be read) before anything is replayed."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the rules file {path}: {exc.strerror or exc}") from exc
    try:
        specs = msgspec.json.decode(raw, type=list[RuleSpec])
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ValueError(
            f"{path}: {exc} (a rules file is a JSON list of rules, each with id and min_risk)"
        ) from exc
    return [Rule(**msgspec.structs.asdict(spec)) for spec in specs]
