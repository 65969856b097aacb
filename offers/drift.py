"""Drift, watched: do today's shoppers look like those the active model learnt from?

A worker step (`async def step(now) -> bool`) that, every DRIFT_CHECK_SECONDS, measures the
population stability index (`streaming.drift`) of each feature and of the risk score over the
last 24 hours of decisions against the active model's reference, exports it as the gauges
`liveoffers_feature_psi{feature}` and `liveoffers_score_psi`, and keeps it for the dashboard and
the alerts (`DriftWatch.latest()`). The database is read in a thread, in one query; in Redis mode
every worker measures the same and exports it alike.
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import F, TextField
from django.db.models.functions import Cast, Mod

from offers import metrics
from offers.models import Decision, ScoringModel
from streaming.drift import drift_of
from streaming.features import FEATURE_NAMES

log = logging.getLogger(__name__)

# A decision's stored features, exactly FEATURE_NAMES (another version's fail to decode).
_Features = msgspec.defstruct(
    "_Features", [(name, float) for name in FEATURE_NAMES], forbid_unknown_fields=True
)
_features_decoder: Final = msgspec.json.Decoder(_Features)

WINDOW_SECONDS: Final = 24 * 3600.0
# Below this many decisions in the window the shares say more about chance than about drift.
MIN_DECISIONS: Final = 50
# At most about this many decisions are read: a larger day is sampled evenly (every k-th id).
MAX_ROWS: Final = 50_000


@dataclass(frozen=True)
class DriftResult:
    """PSI of each feature and of the score (None: too few scores by the model) over `n`
    decisions decided from `since`, against `model`'s reference; measured `at`."""

    at: datetime.datetime
    since: datetime.datetime
    model: str
    n: int
    features: dict[str, float]
    score: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "model": self.model,
            "n": self.n,
            "features": dict(self.features),
            "score": self.score,
        }


class DriftWatch:
    """Measures drift every `every` seconds (DRIFT_CHECK_SECONDS by default).

    `result` is the latest measure: None before the first, and while there is no active model
    with a reference or fewer than `min_decisions` decisions in the window.
    """

    def __init__(
        self,
        *,
        every: float | None = None,
        window_seconds: float = WINDOW_SECONDS,
        min_decisions: int = MIN_DECISIONS,
    ) -> None:
        self.every = settings.DRIFT_CHECK_SECONDS if every is None else every
        self.window_seconds = window_seconds
        self.min_decisions = min_decisions
        self.result: DriftResult | None = None
        self._next = 0.0

    def latest(self) -> dict[str, Any] | None:
        """{"at": ISO time, "model": "cart-risk@3", "n": decisions, "features": {name: psi},
        "score": psi or None} of the latest measure, or None (see `result`)."""
        return self.result.as_dict() if self.result is not None else None

    async def step(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.every
        self.result = await database_sync_to_async(measure_drift)(
            now=now, window_seconds=self.window_seconds, min_decisions=self.min_decisions
        )
        export(self.result)
        return self.result is not None


def measure_drift(*, now: float, window_seconds: float, min_decisions: int) -> DriftResult | None:
    """The drift of the decisions of the `window_seconds` before `now` from the active model's
    reference; None when there is no such model or too few decisions."""
    active = (
        ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE)
        .values_list("pk", "name", "version", "reference")
        .first()
    )
    if active is None or not active[3]:
        return None
    model_id, name, version, reference = active
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    since = at - datetime.timedelta(seconds=window_seconds)
    decisions = Decision.objects.filter(at__gte=since, at__lte=at)
    count = decisions.count()
    if count < min_decisions:
        return None
    if count > MAX_ROWS:
        every = math.ceil(count / MAX_ROWS)
        decisions = decisions.annotate(sample=Mod(F("id"), every)).filter(sample=0)
    rows: list[list[float]] = []
    scores: list[float] = []
    # The features as the database keeps them (JSON text), decoded by msgspec into rows: the
    # thread holds the interpreter a fraction of the time json.loads and dicts would take.
    texts = decisions.annotate(text=Cast("features", TextField())).values_list(
        "text", "risk", "model_id"
    )
    for text, risk, scored_by in texts:
        try:
            features = _features_decoder.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
            continue  # another features version
        rows.append([getattr(features, name) for name in FEATURE_NAMES])
        if risk is not None and scored_by == model_id:
            scores.append(risk)
    if len(rows) < min_decisions:
        return None
    X = np.asarray(rows, dtype=np.float64)
    # the score's shares are the active model's only: risks by an earlier model say nothing
    scored = np.asarray(scores, dtype=np.float64) if len(scores) >= min_decisions else None
    drift = drift_of(reference, X, scored)
    return DriftResult(
        at=at,
        since=since,
        model=f"{name}@{version}",
        n=len(rows),
        features={feature: round(psi, 4) for feature, psi in drift.features.items()},
        score=None if drift.score is None else round(drift.score, 4),
    )


def export(result: DriftResult | None) -> None:
    """The gauges: PSI per feature and of the score; none per feature (and NaN for the score)
    while there is nothing to tell."""
    metrics.FEATURE_PSI.clear()
    if result is None:
        metrics.SCORE_PSI.set(float("nan"))
        return
    for feature, psi in result.features.items():
        metrics.FEATURE_PSI.labels(feature).set(psi)
    metrics.SCORE_PSI.set(float("nan") if result.score is None else result.score)
