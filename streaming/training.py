"""From sessions to a cart-risk model: pause examples, an XGBoost booster and its held-out figures.

An example is what the live worker sees at a pause's deadline: the session's
features `PAUSE_SECONDS` after its last activity, with a non-empty cart and no purchase yet.
Its label is 1 when the session then ends without a purchase (abandoned), 0 when it buys.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Final

import numpy as np
import numpy.typing as npt
import xgboost as xgb

# The figures live in streaming.evaluation; named here too, where they were first.
from streaming.evaluation import auc as auc
from streaming.evaluation import average_precision as average_precision
from streaming.evaluation import figures
from streaming.evaluation import log_loss as log_loss
from streaming.features import FEATURE_NAMES, FEATURES_VERSION, feature_row
from streaming.generator import GeneratedSession
from streaming.state import SessionState

Floats = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]

DAY_SECONDS: Final = 86400.0
EARLY_STOPPING_ROUNDS: Final = 20
LEARNING_RATE: Final = 0.1
# Examples a thread should have before training uses more than one (see `training_threads`).
ROWS_PER_THREAD: Final = 250_000


# --- examples ----------------------------------------------------------------------------------


def pause_examples(
    sessions: Iterable[GeneratedSession],
    *,
    pause_seconds: float,
    start: float = 0.0,
    progress: Progress | None = None,
) -> tuple[Floats, Floats]:
    """Every pause of every session as (X: n x features, y: 1 = abandoned), both float32.

    The sessions start one after another over the day from `start` (midnight UTC by default),
    as live traffic does, so that `hour_of_day` takes every value it will meet when served.
    """
    sessions = list(sessions)
    rows: list[list[float]] = []
    labels: list[float] = []
    spacing = DAY_SECONDS / max(len(sessions), 1)
    for done, session in enumerate(sessions, start=1):
        session_rows, purchased = _replay(
            session, pause_seconds=pause_seconds, start=start + (done - 1) * spacing
        )
        rows.extend(session_rows)
        labels.extend([0.0 if purchased else 1.0] * len(session_rows))
        if progress is not None and (done % 1000 == 0 or done == len(sessions)):
            progress(done, len(sessions))
    return _matrix(rows), np.asarray(labels, dtype=np.float32)


def session_pauses(
    session: GeneratedSession, *, pause_seconds: float, start: float
) -> tuple[list[list[float]], bool]:
    """The feature rows at each of the session's pauses, in order, and whether it bought."""
    return _replay(session, pause_seconds=pause_seconds, start=start)


def _replay(
    session: GeneratedSession, *, pause_seconds: float, start: float
) -> tuple[list[list[float]], bool]:
    """The feature rows at each pause's deadline, and whether the session bought in the end.

    Like the live detector, a pause is measured from the last activity event: a visibility
    change during it is part of the features, and does not end it.
    """
    state = SessionState(
        "replay", "generated", started_at=start, last_seen=start, last_activity=start
    )
    rows: list[list[float]] = []
    taken = -1  # activity_seq of the last pause taken: one example per pause
    for now, event in session.timed_events(start):
        deadline = state.pause_deadline(pause_seconds)
        if deadline is not None and deadline <= now and state.activity_seq != taken:
            rows.append(feature_row(state, now=deadline))
            taken = state.activity_seq
        state.apply(event, now)
    # The session ends here: a cart left behind pauses for good.
    deadline = state.pause_deadline(pause_seconds)
    if deadline is not None and state.activity_seq != taken:
        rows.append(feature_row(state, now=deadline))
    return rows, state.purchased


def labelled_from_decisions(rows: list[tuple[dict[str, float], bool]]) -> tuple[Floats, Floats]:
    """Recorded decisions as (X, y): each is (features as stored, converted); 1 = not converted.

    Decisions whose features are not exactly FEATURE_NAMES (another features version) are skipped.
    """
    names = set(FEATURE_NAMES)
    usable = [(features, converted) for features, converted in rows if set(features) == names]
    X = _matrix([[float(features[name]) for name in FEATURE_NAMES] for features, _ in usable])
    y = np.asarray([0.0 if converted else 1.0 for _, converted in usable], dtype=np.float32)
    return X, y


def _matrix(rows: list[list[float]]) -> Floats:
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))


# --- training ----------------------------------------------------------------------------------


Split = tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]  # (training rows, held-out rows)


def train_booster(
    X: Floats,
    y: Floats,
    *,
    seed: int = 0,
    rounds: int = 200,
    max_depth: int = 6,
    test_fraction: float = 0.2,
    split: Split | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> tuple[xgb.Booster, dict[str, float | int | None]]:
    """Train on one part of the rows and measure on the other, held-out part.

    `split` is (training rows, held-out rows): `time_split` for recorded decisions; by default a
    `stratified_split` holding out `test_fraction`. The held-out part is never seen in training:
    training stops early when the log-loss on the last `test_fraction` of the training rows (the
    most recent ones, in a time split) has not improved for 20 rounds, and the booster returned
    keeps the trees up to its best round. `threads` defaults to `training_threads` for the size
    of the training part.
    """
    if split is None:
        split = stratified_split(y, test_fraction=test_fraction, seed=seed)
    train_index, test_index = split
    fit_index, stop_index = _tail_split(train_index, fraction=test_fraction)
    names = list(FEATURE_NAMES)
    dfit = xgb.DMatrix(X[fit_index], label=y[fit_index], feature_names=names)
    dstop = xgb.DMatrix(X[stop_index], label=y[stop_index], feature_names=names)
    params: dict[str, object] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": max_depth,
        "eta": LEARNING_RATE,
        "nthread": threads or training_threads(len(train_index)),
        "seed": seed,
    }
    callbacks: list[xgb.callback.TrainingCallback] = []
    if progress is not None:
        callbacks.append(_RoundProgress(progress, rounds))
    booster = xgb.train(
        params,
        dfit,
        num_boost_round=rounds,
        evals=[(dstop, "stop")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
        callbacks=callbacks,
    )
    # best_iteration is 0-based; slicing keeps the best trees and the feature names.
    kept = booster.best_iteration + 1
    if kept < booster.num_boosted_rounds():
        booster = booster[:kept]
    scores = booster.inplace_predict(X[test_index]).astype(np.float64)
    held_out = figures(y[test_index].astype(np.float64), scores)
    # None for a figure not known (one outcome only among the held-out rows): JSON has no NaN
    metrics: dict[str, float | int | None] = {
        "auc": _rounded(held_out.roc_auc),
        "pr_auc": _rounded(held_out.pr_auc),
        "log_loss": _rounded(held_out.log_loss),
        "n_train": len(train_index),
        "n_test": len(test_index),
        "positive_rate": round(float(y.mean()), 4) if len(y) else 0.0,
        "rounds": kept,
        "features_version": FEATURES_VERSION,
    }
    return booster, metrics


def _rounded(figure: float) -> float | None:
    return None if math.isnan(figure) else round(figure, 4)


def _tail_split(rows: npt.NDArray[np.intp], *, fraction: float) -> Split:
    """(the first rows, the last `fraction` of them): at least one row in each when possible."""
    cut = len(rows) - min(max(1, round(len(rows) * fraction)), max(len(rows) - 1, 1))
    return rows[:cut], rows[cut:]


class _RoundProgress(xgb.callback.TrainingCallback):
    def __init__(self, progress: Progress, rounds: int) -> None:
        super().__init__()
        self.progress = progress
        self.rounds = rounds

    def after_iteration(
        self,
        _model: xgb.Booster,
        epoch: int,
        _evals_log: dict[str, dict[str, list[float] | list[tuple[float, float]]]],
    ) -> bool:
        self.progress(epoch + 1, self.rounds)
        return False  # never asks to stop: early stopping decides that


def training_threads(rows: int) -> int:
    """All cores for a large training set, fewer for a small one.

    A round on up to a few hundred thousand rows takes milliseconds, and OpenMP threads that
    wait for each other at every step then cost more than they save as soon as another process
    wants a core: on a busy 2-core machine, 2 threads trained 14,000 rows in 2.1 s against 0.19 s
    for 1 thread, and 140,000 rows in 11 s against 1.4 s.
    """
    return max(1, min(all_cores(), rows // ROWS_PER_THREAD))


def all_cores() -> int:
    """The cores this process may run on (fewer than the machine's in a limited container)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def stratified_split(
    y: Floats, *, test_fraction: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Row indices (train, test), each label represented in the test part by its share."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    rng = np.random.default_rng(seed)
    train: list[npt.NDArray[np.intp]] = []
    test: list[npt.NDArray[np.intp]] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        cut = min(max(1, round(len(members) * test_fraction)), len(members) - 1)
        test.append(members[:cut])
        train.append(members[cut:])
    if not test:
        raise ValueError("no examples to train on")
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def time_split(rows: int, *, test_fraction: float) -> Split:
    """Row indices (train, test) of rows in time order: the most recent `test_fraction` held out.

    Never a random split for recorded decisions: a model is judged on what came after what it
    learnt from, as it will be when it serves.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    if rows < 2:
        raise ValueError("no examples to train on")
    cut = rows - min(max(1, round(rows * test_fraction)), rows - 1)
    index = np.arange(rows, dtype=np.intp)
    return index[:cut], index[cut:]
