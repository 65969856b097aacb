"""Train and store a cart-risk model, on recorded decisions or on generated shoppers.

Recorded decisions are used when there are enough of them, else sessions from
`streaming.generator` replayed into pause examples. Used by `manage.py train_model`, and by
`bootstrap_demo`, which trains one at first start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.utils import timezone

from offers import services
from offers.models import Decision, ScoringModel
from streaming.features import FEATURE_NAMES
from streaming.generator import generate_sessions
from streaming.policy import Outcome
from streaming.training import labelled_from_decisions, pause_examples, train_booster

DEFAULT_SESSIONS = 20_000
DEFAULT_MIN_RECORDED = 500
DEFAULT_ROUNDS = 200
DEFAULT_MAX_DEPTH = 6
# A decision's outcome is known once its session had this long to buy.
OUTCOME_KNOWN_AFTER = timedelta(minutes=30)

Say = Callable[[str], object]


class Writer(Protocol):
    def write(self, msg: str, /) -> object: ...


@dataclass(frozen=True)
class TrainingData:
    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    source: str  # "recorded" or "generated"
    description: str  # "N recorded decisions", "N generated sessions (M pauses)"


def recorded_rows(*, now: datetime) -> list[tuple[dict[str, float], bool]]:
    """(features, converted) of decisions whose outcome is known.

    Decisions that made an offer are left out: whether those sessions bought says as much about
    the offer as about the shopper, and the model is to predict what happens without one.
    """
    decisions = (
        Decision.objects.filter(at__lt=now - OUTCOME_KNOWN_AFTER)
        .exclude(outcome=Outcome.OFFER)
        .values_list("features", "converted_at")
    )
    return [(features, converted_at is not None) for features, converted_at in decisions]


def training_data(
    *,
    sessions: int,
    seed: int,
    min_recorded: int,
    say: Say,
    progress: Say | None = None,
) -> TrainingData:
    """Recorded decisions when there are `min_recorded` usable ones with both outcomes.

    Otherwise `sessions` generated sessions, replayed into pause examples.
    """
    X, y = labelled_from_decisions(recorded_rows(now=timezone.now()))
    if len(y) >= min_recorded and 0 < y.sum() < len(y):
        return TrainingData(X, y, "recorded", f"{len(y)} recorded decisions")
    say(f"{len(y)} usable recorded decisions (fewer than {min_recorded} or one outcome only)")
    generated = generate_sessions(sessions, seed=seed, progress=_percent("generating", progress))
    # list[GeneratedSession], one per shopper
    X, y = pause_examples(
        generated,
        pause_seconds=settings.PAUSE_SECONDS,
        progress=_percent("replaying", progress),
    )
    # X: pauses x features, y: 1 = abandoned
    return TrainingData(X, y, "generated", f"{sessions} generated sessions ({len(y)} pauses)")


def train_model(
    *,
    sessions: int = DEFAULT_SESSIONS,
    seed: int = 0,
    min_recorded: int = DEFAULT_MIN_RECORDED,
    rounds: int = DEFAULT_ROUNDS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    artifact_format: str = ScoringModel.Format.UBJSON,
    activate: bool = False,
    say: Say,
    progress: Say | None = None,
) -> ScoringModel:
    """Train, store as a new version, and activate it when asked.

    `say` gets the summary lines; `progress`, if given, percentage lines while generating,
    replaying and training.
    """
    started = time.perf_counter()
    data = training_data(
        sessions=sessions, seed=seed, min_recorded=min_recorded, say=say, progress=progress
    )
    say(f"training on {data.description}")
    booster, metrics = train_booster(
        data.X,
        data.y,
        seed=seed,
        rounds=rounds,
        max_depth=max_depth,
        progress=_percent("training rounds", progress),
    )
    stored: dict[str, object] = dict(metrics)
    model = services.model_create(
        artifact=bytes(booster.save_raw(artifact_format)),
        artifact_format=artifact_format,
        feature_names=list(FEATURE_NAMES),
        metrics=stored,
        notes=f"trained on {data.description}",
        # generated pauses are cut at it, recorded decisions were made at it
        pause_seconds=settings.PAUSE_SECONDS,
    )
    if activate:
        model = services.model_activate(model=model)
    say(f"{model.label} ({model.state}) in {time.perf_counter() - started:.1f} s")
    say(metrics_table(model.metrics))
    return model


def train_default_model(
    *, activate: bool, stdout: Writer, sessions: int = DEFAULT_SESSIONS, seed: int = 0
) -> ScoringModel:
    return train_model(
        sessions=sessions,
        seed=seed,
        activate=activate,
        say=lambda line: stdout.write(line + "\n"),
    )


def metrics_table(metrics: dict[str, object]) -> str:
    width = max((len(name) for name in metrics), default=0)
    return "\n".join(f"  {name:<{width}}  {_figure(value)}" for name, value in metrics.items())


def _figure(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _percent(what: str, say: Say | None) -> Callable[[int, int], None] | None:
    """A progress callback that says `what: 40% (8000/20000)` at each new tenth."""
    if say is None:
        return None
    said = -1

    def report(done: int, total: int) -> None:
        nonlocal said
        tenth = done * 10 // max(total, 1)
        if tenth != said:
            said = tenth
            say(f"{what}: {tenth * 10}% ({done}/{total})")

    return report
