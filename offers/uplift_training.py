"""Train and store the uplift model, on recorded randomised decisions or on generated shoppers.

Recorded decisions are used when enough of them were randomised and have a known outcome: every
`offer` and `holdout` decision (the holdout, and the explored sessions offered or held out at
random, streaming/policy.py), bought or not within OUTCOME_WINDOW_SECONDS. An ordinary offer
counts too: whether a session a rule matched was offered or held out depended only on its
holdout bucket, so given its features (which decided the match) it was offered at random; the
explored sessions reach the features no rule would have matched. With too few, generated
shoppers with hidden responses to offers (streaming/generator.py), each offered or not at random
at its first pause. Used by `manage.py train_model --uplift`.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.utils import timezone

from offers import services
from offers.evaluation import outcome_window
from offers.models import Decision, ScoringModel
from offers.training import GateRefused, metrics_table
from streaming.features import FEATURE_NAMES, FEATURES_VERSION
from streaming.generator import generate_sessions
from streaming.policy import Outcome
from streaming.uplift_model import envelope
from streaming.uplift_training import (
    UPLIFT_MAX_DEPTH,
    Randomised,
    qini,
    randomised_from_generated,
    split_randomised,
    train_t_learner,
    uplift_at,
)

Say = Callable[[str], object]

DEFAULT_MIN_RANDOMISED = 1000
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class UpliftData:
    data: Randomised
    description: str


def recorded_randomised(*, now: datetime.datetime | None = None) -> Randomised:
    """The recorded `offer` and `holdout` decisions whose outcome is known, oldest first."""
    window = outcome_window()
    known_before = (now or timezone.now()) - window
    names = set(FEATURE_NAMES)
    rows: list[list[float]] = []
    offered: list[bool] = []
    bought: list[bool] = []
    carts: list[float] = []
    decisions = Decision.objects.filter(
        at__lt=known_before, outcome__in=[Outcome.OFFER.value, Outcome.HOLDOUT.value]
    ).order_by("at", "id")
    for at, outcome, features, converted_at, cart in decisions.values_list(
        "at", "outcome", "features", "converted_at", "cart_value"
    ).iterator(chunk_size=5000):
        if not isinstance(features, dict) or set(features) != names:
            continue
        rows.append([float(features[name]) for name in FEATURE_NAMES])
        offered.append(outcome == Outcome.OFFER.value)
        bought.append(converted_at is not None and converted_at <= at + window)
        carts.append(float(cart))
    X = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    return Randomised(
        X,
        np.asarray(offered, dtype=bool),
        np.asarray(bought, dtype=bool),
        np.asarray(carts, dtype=np.float64),
    )


def uplift_training_data(*, sessions: int, seed: int, min_recorded: int, say: Say) -> UpliftData:
    recorded = recorded_randomised()
    if len(recorded) >= min_recorded and recorded.both_arms():
        offered = int(recorded.offered.sum())
        return UpliftData(
            recorded,
            f"{len(recorded)} recorded randomised decisions ({offered} offered, "
            f"{len(recorded) - offered} held out)",
        )
    say(
        f"{len(recorded)} recorded randomised decisions with a known outcome (fewer than "
        f"{min_recorded}, or an arm without buyers or without non-buyers): training on "
        "generated shoppers"
    )
    data = randomised_from_generated(
        generate_sessions(sessions, seed=seed), pause_seconds=settings.PAUSE_SECONDS, seed=seed
    )
    return UpliftData(data, f"{sessions} generated sessions ({len(data)} randomised first pauses)")


def train_uplift_model(
    *,
    sessions: int,
    seed: int = 0,
    min_recorded: int = DEFAULT_MIN_RANDOMISED,
    activate: bool = False,
    force: bool = False,
    say: Say,
) -> ScoringModel:
    """Train a T-learner, measure it on held-out randomised decisions, store it as a new
    version of the uplift model, and activate it when asked.

    `activate` activates it only when it ranks the held-out decisions better than chance (Qini
    coefficient above 0); otherwise it stays a candidate and GateRefused says why. `force`
    activates it regardless.
    """
    started = time.perf_counter()
    source = uplift_training_data(sessions=sessions, seed=seed, min_recorded=min_recorded, say=say)
    data = source.data
    train, test = split_randomised(data, test_fraction=TEST_FRACTION, seed=seed)
    say(f"training the uplift model (two boosters, offered and held out) on {source.description}")
    model = train_t_learner(data.take(train), seed=seed)
    held = data.take(test)
    p_offer, p_none = model.predict(held.X)
    measured = qini(held.bought, p_offer - p_none, held.offered)
    metrics: dict[str, object] = {
        "learner": "t",
        "qini": _rounded(measured.coefficient),
        "uplift_top_30": _rounded(
            uplift_at(held.bought, p_offer - p_none, held.offered, share=0.3)
        ),
        "n_train": len(train),
        "n_test": len(test),
        "offered_share": round(float(data.offered.mean()), 4) if len(data) else 0.0,
        "rounds_treated": model.treated.num_boosted_rounds(),
        "rounds_control": model.control.num_boosted_rounds(),
        "max_depth": UPLIFT_MAX_DEPTH,
        "features_version": FEATURES_VERSION,
    }
    stored = services.uplift_model_create(
        artifact=envelope(model.treated, model.control),
        metrics=metrics,
        notes=f"trained on {source.description}",
        pause_seconds=settings.PAUSE_SECONDS,
    )
    refused = None
    if force:
        services.uplift_model_activate(model=stored, note="activated with --force")
    elif activate:
        refusal = services.uplift_model_refusal(model=stored)
        if refusal:
            active = ScoringModel.uplift_models.filter(state=ScoringModel.State.ACTIVE).first()
            services.model_refuse(
                model=stored,
                note=refusal,
                compared_with="" if active is None else active.label,
            )
            refused = f"{refusal}: it is kept as a candidate (--force activates it anyway)"
        else:
            services.uplift_model_activate(
                model=stored,
                note=f"Qini {measured.coefficient:.3f} on {len(test)} held-out decisions",
            )
    stored.refresh_from_db()
    say(f"{stored.label} ({stored.state}) in {time.perf_counter() - started:.1f} s")
    say(metrics_table(stored.metrics))
    if refused is not None:
        raise GateRefused(stored, refused)
    return stored


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)
