"""Decisions with known outcomes and models that predict them well or badly, for the tests of
evaluation, the gate, promotion and drift."""

from __future__ import annotations

import datetime
import functools
from typing import Any

import numpy as np
from django.utils import timezone

from offers.models import Decision, ScoringModel, Site
from offers.services import model_create
from streaming.drift import reference_of
from streaming.features import FEATURE_NAMES, as_dicts
from streaming.generator import generate_sessions
from streaming.policy import Outcome
from streaming.scoring import load_model
from streaming.training import pause_examples, train_booster

PAUSE = 30.0


@functools.cache
def pauses(sessions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated shoppers' pauses: (X, y), y 1 = abandoned."""
    return pause_examples(generate_sessions(sessions, seed=seed), pause_seconds=PAUSE)


@functools.cache
def artifact(*, rounds: int, max_depth: int = 3) -> bytes:
    """A model trained on generated pauses: `rounds=30` ranks well, `rounds=1, max_depth=1`
    hardly at all."""
    X, y = pauses(600, 1)
    booster, _ = train_booster(X, y, rounds=rounds, max_depth=max_depth, seed=1, threads=1)
    return bytes(booster.save_raw("ubj"))


def registered(*, rounds: int, max_depth: int = 3, state: str | None = None) -> ScoringModel:
    """A model in the registry; put in `state` directly (no trial: fast)."""
    X, _ = pauses(600, 1)
    raw = artifact(rounds=rounds, max_depth=max_depth)
    model = model_create(
        artifact=raw,
        artifact_format="ubj",
        feature_names=list(FEATURE_NAMES),
        metrics={},
        # what it learnt from, as training stores it
        reference=reference_of(X, load_model(raw, label="reference").predict_proba(X)),
    )
    if state is not None:
        ScoringModel.objects.filter(pk=model.pk).update(state=state)
        model.refresh_from_db()
    return model


def record_outcomes(
    site: Site,
    count: int,
    *,
    seed: int = 5,
    age: datetime.timedelta = datetime.timedelta(hours=2),
    outcome: str = Outcome.NO_OFFER,
    key: str = "",
    **fields: Any,
) -> list[Decision]:
    """`count` decisions of generated pauses, the last `age` ago and one a second before each
    other; those whose shopper bought converted a minute after their decision."""
    X, y = pauses(count * 2 + 50, seed)
    assert len(y) >= count, "more sessions needed"
    # spread over the generated day, as live decisions are (every hour_of_day)
    picked = np.linspace(0, len(y) - 1, count).astype(int)
    X, y = X[picked], y[picked]
    newest = timezone.now() - age
    decisions = []
    for i, (features, label) in enumerate(zip(as_dicts(X[:count]), y[:count], strict=True)):
        at = newest - datetime.timedelta(seconds=count - i)
        decisions.append(
            Decision(
                site=site,
                session=f"s{seed}-{i}",
                pause_key=f"{key}{outcome}-{seed}-{age}-{i}",
                at=at,
                features=features,
                outcome=outcome,
                converted_at=at + datetime.timedelta(minutes=1) if label == 0 else None,
                **fields,
            )
        )
    return Decision.objects.bulk_create(decisions)
