"""Models measured on the record: the decisions whose outcome is known, re-scored by each model.

A decision's outcome is known once its session had OUTCOME_WINDOW_SECONDS to buy: 0 when it
bought within that window, 1 when it did not (abandoned). Only `no_offer` and `holdout`
decisions measure a model: an offer changes the outcome it would be judged on. Every model
compared is scored on the same stored features, so their figures are of the same decisions.

Used by `manage.py evaluate_models`, the gate of `train_model --activate`, `promote_shadow`,
and the admin's "Compare selected models" page (`compare_models`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.utils import timezone

from offers.models import Decision, ModelEvent, ScoringModel
from streaming.evaluation import Figures, calibration_curve, figures, roc_curve
from streaming.features import FEATURE_NAMES
from streaming.policy import Outcome
from streaming.scoring import load_model

Progress = Callable[[int, int], None]

# The outcomes that measure a model: no offer changed what the shopper did.
MEASURING: Final = (Outcome.NO_OFFER.value, Outcome.HOLDOUT.value)
_CHUNK: Final = 5000
_LABEL: Final = re.compile(r"^(?:(?P<name>[\w.-]+)@)?(?P<version>\d+)$")


def outcome_window() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.OUTCOME_WINDOW_SECONDS)


# --- which decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownOutcomes:
    """Decisions with a known outcome, oldest first: X (rows x FEATURE_NAMES, float32), y
    (1 = abandoned, 0 = bought, float64) and when each was decided."""

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.float64]
    at: list[datetime.datetime]

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def buyers(self) -> int:
        return int((self.y == 0).sum())

    def both_outcomes(self) -> bool:
        return 0 < self.buyers < self.n


def known_outcomes(
    *,
    now: datetime.datetime | None = None,
    since: datetime.datetime | None = None,
    progress: Progress | None = None,
) -> KnownOutcomes:
    """The `no_offer` and `holdout` decisions decided at least OUTCOME_WINDOW_SECONDS before
    `now` (and at or after `since`), oldest first. Decisions whose features are not exactly
    FEATURE_NAMES (another features version) are left out. `progress(done, total)` is called
    every 5000 rows read."""
    window = outcome_window()
    known_before = (now or timezone.now()) - window
    decisions = Decision.objects.filter(at__lt=known_before, outcome__in=MEASURING)
    if since is not None:
        decisions = decisions.filter(at__gte=since)
    total = decisions.count() if progress is not None else 0
    names = set(FEATURE_NAMES)
    rows: list[list[float]] = []
    labels: list[float] = []
    at: list[datetime.datetime] = []
    done = 0
    for decided_at, features, converted_at in (
        decisions.order_by("at", "id")
        .values_list("at", "features", "converted_at")
        .iterator(chunk_size=_CHUNK)
    ):
        done += 1
        if progress is not None and done % _CHUNK == 0:
            progress(done, total)
        if not isinstance(features, dict) or set(features) != names:
            continue
        rows.append([float(features[name]) for name in FEATURE_NAMES])
        bought = converted_at is not None and converted_at <= decided_at + window
        labels.append(0.0 if bought else 1.0)
        at.append(decided_at)
    if progress is not None and done % _CHUNK:
        progress(done, total)
    X = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    return KnownOutcomes(X, np.asarray(labels, dtype=np.float64), at)


# --- which models ------------------------------------------------------------------------------


def default_models() -> list[ScoringModel]:
    """The active model, the shadow model and the latest candidate, those that exist."""
    chosen = [
        ScoringModel.objects.filter(state=state).order_by("-version").first()
        for state in (
            ScoringModel.State.ACTIVE,
            ScoringModel.State.SHADOW,
            ScoringModel.State.CANDIDATE,
        )
    ]
    return [model for model in chosen if model is not None]


def models_by_label(labels: Iterable[str]) -> list[ScoringModel]:
    """Models named `cart-risk@3` (or `3`, in the default name), in the order given; ValueError
    names the first that does not exist."""
    from offers.services import MODEL_NAME

    found = []
    for label in labels:
        match = _LABEL.match(label.strip())
        model = None
        if match:
            name, version = match["name"] or MODEL_NAME, int(match["version"])
            model = ScoringModel.objects.filter(name=name, version=version).first()
        if model is None:
            raise ValueError(f"no model {label!r} (give name@version, e.g. cart-risk@3)")
        found.append(model)
    return found


def score(model: ScoringModel, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """`model`'s risk for each row of X, loaded as a server loads it (ModelError if it cannot)."""
    return load_model(bytes(model.artifact), label=model.label).predict_proba(X)


def feature_importance(model: ScoringModel) -> dict[str, float]:
    """Each feature's total gain in `model`'s trees (0 for features it never splits on), as
    shares summing to 1, largest first."""
    booster = load_model(bytes(model.artifact), label=model.label).booster
    gains = {
        name: float(value)
        for name, value in booster.get_score(importance_type="total_gain").items()
        if isinstance(value, float | int)
    }
    total = sum(gains.values()) or 1.0
    shares = {name: gains.get(name, 0.0) / total for name in FEATURE_NAMES}
    return dict(sorted(shares.items(), key=lambda item: -item[1]))


# --- the comparison ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEvaluation:
    """One model's figures on the compared decisions, and the points of its curves:
    `roc` as (false positive rate, true positive rate) from (0, 0) to (1, 1), `calibration` as
    (mean predicted risk, share abandoned, decisions) for each non-empty tenth of risk."""

    model: ScoringModel
    figures: Figures
    roc: list[tuple[float, float]] = field(default_factory=list)
    calibration: list[tuple[float, float, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """{"model": "cart-risk@3", "n", "buyers", "roc_auc", "pr_auc", "log_loss", "brier",
        "ece"}; a figure that is not known (no decisions, one outcome only) is None."""
        return {"model": self.model.label, **self.figures.as_dict()}


@dataclass(frozen=True)
class Comparison:
    """Models measured on the same `n` decisions (`buyers` of them bought), decided from
    `since` (None: from the first) to before `known_before`."""

    n: int
    buyers: int
    since: datetime.datetime | None
    known_before: datetime.datetime
    models: list[ModelEvaluation]

    def as_json(self) -> dict[str, Any]:
        """What `evaluate_models --json` writes: {"models": [ModelEvaluation.as_dict(), ...]}."""
        return {"models": [evaluation.as_dict() for evaluation in self.models]}


def compare_models(
    models: Sequence[ScoringModel],
    *,
    since: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
    progress: Callable[[str], object] | None = None,
) -> Comparison:
    """Every model in `models` re-scored on the stored features of the same decisions: those
    with a known outcome (`known_outcomes`), decided at or after `since`.

    The admin's compare page calls `compare_models(models)` and shows, per
    `comparison.models[i]`: `.model.label`, `.figures` (n, buyers, roc_auc, pr_auc, log_loss,
    brier, ece; NaN when not known), `.roc` and `.calibration` (points for the plots);
    `feature_importance(model)` gives the bars. ModelError when a model cannot be loaded.
    `progress`, if given, gets lines of progress (reading decisions, scoring each model).
    """
    now = now or timezone.now()
    read = _reading(progress)
    known = known_outcomes(now=now, since=since, progress=read)
    evaluations = []
    for model in models:
        if progress is not None:
            progress(f"scoring {known.n} decisions with {model.label}")
        risk = score(model, known.X)
        evaluations.append(
            ModelEvaluation(
                model,
                figures(known.y, risk),
                roc_curve(known.y, risk),
                calibration_curve(known.y, risk),
            )
        )
    return Comparison(known.n, known.buyers, since, now - outcome_window(), evaluations)


def _reading(progress: Callable[[str], object] | None) -> Progress | None:
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(f"reading decisions: {done}/{total}")

    return report


def figures_table(rows: Sequence[tuple[str, Figures]]) -> str:
    """A plain-text table: one line per (name, figures), '-' for a figure not known."""
    header = ("model", "decisions", "buyers", "ROC-AUC", "PR-AUC", "log-loss", "Brier", "ECE")
    lines = [header] + [
        (
            name,
            str(f.n),
            str(f.buyers),
            *(_figure(v) for v in (f.roc_auc, f.pr_auc, f.log_loss, f.brier, f.ece)),
        )
        for name, f in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def _figure(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.4f}"


# --- a shadow on trial -------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowTrial:
    """The shadow model and the active one on the known outcomes decided since the shadow
    entered shadow (`since`)."""

    shadow: ScoringModel
    active: ScoringModel | None
    since: datetime.datetime
    comparison: Comparison

    @property
    def n(self) -> int:
        return self.comparison.n


def shadow_trial(*, now: datetime.datetime | None = None) -> ShadowTrial | None:
    """The shadow model against the active one, both re-scored on the known outcomes decided
    since the shadow's latest `shadowed` event (or, without one, since the first decision it
    scored); None when no model is in shadow."""
    shadow = ScoringModel.objects.filter(state=ScoringModel.State.SHADOW).first()
    if shadow is None:
        return None
    active = ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).first()
    entered = (
        ModelEvent.objects.filter(model=shadow, action=ModelEvent.Action.SHADOWED)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    if entered is None:
        entered = (
            Decision.objects.filter(shadow_model=shadow.label)
            .order_by("at")
            .values_list("at", flat=True)
            .first()
        )
    models = [shadow] if active is None else [shadow, active]
    if entered is None:
        # it has scored nothing yet: no decision can be since
        entered = now or timezone.now()
    comparison = compare_models(models, since=entered, now=now)
    return ShadowTrial(shadow, active, entered, comparison)
