"""Train and store a cart-risk model, on recorded decisions or on generated shoppers.

Recorded decisions are used when there are enough of them, else sessions from
`streaming.generator` replayed into pause examples. Used by `manage.py train_model`, and by
`bootstrap_demo`, which trains one at first start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.utils import timezone

from offers import services
from offers.evaluation import figures_table, known_outcomes, score
from offers.models import ScoringModel
from streaming.clickstream import Replayed, from_log, read_clickstream, replay
from streaming.drift import reference_of
from streaming.evaluation import Figures, figures, gate
from streaming.eventlog import read_log
from streaming.features import FEATURE_NAMES
from streaming.generator import generate_sessions
from streaming.model_file import ModelError
from streaming.training import Split, pause_examples, stratified_split, time_split, train_booster

DEFAULT_SESSIONS = 20_000
DEFAULT_MIN_RECORDED = 500
DEFAULT_ROUNDS = 200
DEFAULT_MAX_DEPTH = 6
# The share of examples held out: to measure the new model, and to compare it with the active
# one at the gate.
TEST_FRACTION = 0.2

Say = Callable[[str], object]


class Writer(Protocol):
    def write(self, msg: str, /) -> object: ...


@dataclass(frozen=True)
class TrainingData:
    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    source: str  # "recorded" or "generated"
    description: str  # "N recorded decisions", "N generated sessions (M pauses)"
    split: Split  # (training rows, held-out rows)
    held_out: str  # the held-out rows in words


class GateRefused(Exception):
    """The new model did worse than the active one on the held-out rows: kept as a candidate."""

    def __init__(self, model: ScoringModel, message: str) -> None:
        super().__init__(message)
        self.model = model


@dataclass(frozen=True)
class ClickstreamSource:
    """A clickstream to train on: the event log ('log') or a file, in a `streaming.clickstream`
    format, cut to [since, until) and, for sources that know their shoppers (REES46's user_id),
    to the even or the odd ones (so that one half can train and the other judge)."""

    path: str
    fmt: str = "events"
    since: float | None = None
    until: float | None = None
    users: str | None = None  # "even", "odd" or None: all


def clickstream_pauses(source: ClickstreamSource, *, progress: Say | None = None) -> Replayed:
    """The source's real pauses at the live PAUSE_SECONDS, labelled within OUTCOME_WINDOW_SECONDS,
    in time order."""
    if source.path == "log":
        if not settings.EVENT_LOG:
            raise ValueError("EVENT_LOG is off: there is no event log to read")
        read = from_log(read_log(settings.EVENT_LOG, since=source.since, until=source.until))
    else:
        read = read_clickstream(source.path, source.fmt)
    picked = [
        session
        for session in read.sessions
        if (source.since is None or session.events[0][0] >= source.since)
        and (source.until is None or session.events[0][0] < source.until)
        and (source.users is None or user_half(session.user) == source.users)
    ]
    replayed = replay(
        picked,
        pause_seconds=settings.PAUSE_SECONDS,
        outcome_window=settings.OUTCOME_WINDOW_SECONDS,
        progress=_percent("replaying", progress),
    )
    order = np.argsort([pause.at for pause in replayed.pauses], kind="stable")
    return Replayed(replayed.X[order], replayed.y[order], [replayed.pauses[i] for i in order])


def user_half(user: str) -> str | None:
    """'even' or 'odd' for a numeric user id, else None."""
    return ("odd" if int(user) % 2 else "even") if user.isdigit() else None


def training_data(
    *,
    sessions: int,
    seed: int,
    min_recorded: int,
    say: Say,
    progress: Say | None = None,
    clickstream: ClickstreamSource | None = None,
) -> TrainingData:
    """Recorded decisions when there are `min_recorded` with a known outcome, both outcomes
    among them: the most recent TEST_FRACTION of them held out (a time split).

    Otherwise `sessions` generated sessions, replayed into pause examples, a stratified
    TEST_FRACTION of them held out. Decisions that made an offer are never used: whether those
    sessions bought says as much about the offer as about the shopper, and the model is to
    predict what happens without one.
    """
    if clickstream is not None:
        pauses = clickstream_pauses(clickstream, progress=progress)
        if len(pauses) < 2 or pauses.y.min() == pauses.y.max():
            raise ValueError(
                f"{len(pauses)} pauses in the clickstream, with one outcome only or none: "
                "nothing to learn from"
            )
        split = time_split(len(pauses), test_fraction=TEST_FRACTION)
        since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(pauses.pauses[int(split[1][0])].at))
        return TrainingData(
            pauses.X,
            pauses.y,
            "clickstream",
            f"{len(pauses)} real pauses of {clickstream.path}",
            split,
            f"the {len(split[1])} most recent real pauses (from {since} UTC)",
        )
    known = known_outcomes(now=timezone.now())
    if known.n >= min_recorded and known.both_outcomes():
        split = time_split(known.n, test_fraction=TEST_FRACTION)
        first = known.at[int(split[1][0])]
        return TrainingData(
            known.X,
            known.y.astype(np.float32),
            "recorded",
            f"{known.n} recorded decisions",
            split,
            f"the {len(split[1])} most recent recorded decisions (from {first:%Y-%m-%d %H:%M})",
        )
    say(f"{known.n} usable recorded decisions (fewer than {min_recorded} or one outcome only)")
    generated = generate_sessions(sessions, seed=seed, progress=_percent("generating", progress))
    # list[GeneratedSession], one per shopper
    X, y = pause_examples(
        generated,
        pause_seconds=settings.PAUSE_SECONDS,
        progress=_percent("replaying", progress),
    )
    # X: pauses x features, y: 1 = abandoned
    split = stratified_split(y, test_fraction=TEST_FRACTION, seed=seed)
    return TrainingData(
        X,
        y,
        "generated",
        f"{sessions} generated sessions ({len(y)} pauses)",
        split,
        f"{len(split[1])} held-out generated pauses",
    )


def train_model(
    *,
    sessions: int = DEFAULT_SESSIONS,
    seed: int = 0,
    min_recorded: int = DEFAULT_MIN_RECORDED,
    rounds: int = DEFAULT_ROUNDS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    artifact_format: str = ScoringModel.Format.UBJSON,
    activate: bool = False,
    force: bool = False,
    shadow: bool = False,
    say: Say,
    progress: Say | None = None,
    clickstream: ClickstreamSource | None = None,
) -> ScoringModel:
    """Train, store as a new version, and activate it or put it in shadow when asked.

    With `clickstream`, on its real pauses (the most recent ones held out) rather than on
    recorded decisions or generated shoppers.

    `activate` goes through the gate: the new model and the active one are scored on the same
    held-out rows, and the new one is activated only when its ROC-AUC is at least the active
    one's minus 0.005 and its log-loss at most 2% worse (`streaming.evaluation.gate`); else it
    stays a candidate and GateRefused says why. `force` activates past the gate; with no active
    model there is nothing to pass. `shadow` puts it in shadow instead (no gate).
    `say` gets the summary lines; `progress`, if given, percentage lines while generating,
    replaying and training.
    """
    if shadow and (activate or force):
        raise ValueError("a new model is either activated or put in shadow, not both")
    started = time.perf_counter()
    data = training_data(
        sessions=sessions,
        seed=seed,
        min_recorded=min_recorded,
        say=say,
        progress=progress,
        clickstream=clickstream,
    )
    say(f"training on {data.description}")
    booster, metrics = train_booster(
        data.X,
        data.y,
        seed=seed,
        rounds=rounds,
        max_depth=max_depth,
        split=data.split,
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
        # what it learnt from, in bins: live decisions are compared with it for drift
        reference=reference_of(data.X, booster.inplace_predict(data.X).astype(np.float64)),
    )
    refused = None
    if shadow:
        services.model_shadow(model=model, note="trained with --shadow")
    elif activate or force:
        refused = _through_the_gate(model, data, force=force, say=say)
    say(f"{model.label} ({model.state}) in {time.perf_counter() - started:.1f} s")
    say(metrics_table(model.metrics))
    if refused is not None:
        raise GateRefused(model, refused)
    return model


def _through_the_gate(
    model: ScoringModel, data: TrainingData, *, force: bool, say: Say
) -> str | None:
    """Activate `model` if it passes the gate (or is forced past it); else why it did not."""
    active = ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).first()
    if active is None:
        services.model_activate(model=model, note="no model was active")
        return None
    if force:
        say(f"gate: not applied (--force), {model.label} replaces {active.label}")
        services.model_activate(model=model, note="activated past the gate (--force)")
        return None
    held_out = data.split[1]
    X, y = data.X[held_out], data.y[held_out].astype(np.float64)
    new = figures(y, score(model, X))
    try:
        current = figures(y, score(active, X))
    except ModelError as exc:
        say(f"gate: {active.label} cannot be scored ({exc}), {model.label} replaces it")
        services.model_activate(model=model, note=f"{active.label} could not be scored: {exc}")
        return None
    verdict = gate(new, current)
    say(f"gate: {model.label} against {active.label} on {data.held_out}")
    table = figures_table([(model.label, new), (f"{active.label} (active)", current)])
    say("\n".join(f"  {line}" for line in table.splitlines()))
    why = "; ".join(verdict.reasons)
    both = f"{_compact(model.label, new)}; {_compact(active.label, current)}"
    note = f"on {data.held_out}: {why} ({both})"
    if verdict.passed:
        say(f"gate: passed ({why})")
        services.model_activate(model=model, note=note)
        return None
    say(f"gate: refused ({why})")
    services.model_refuse(model=model, note=note, compared_with=active.label)
    return (
        f"{model.label} is kept as a candidate: against {active.label} on {data.held_out}, {why} "
        "(--force activates it anyway)"
    )


def _compact(label: str, f: Figures) -> str:
    return f"{label}: ROC-AUC {f.roc_auc:.4f}, log-loss {f.log_loss:.4f}"


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
