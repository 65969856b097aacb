"""From randomised decisions to an uplift model, and how well it ranks: the Qini curve.

An uplift model predicts, for a paused cart, the chance that the session buys with an offer
(`p_offer`) and without one (`p_none`). It can only be learnt where the offer was given or
withheld at random: the holdout, and the `EXPLORE_PERCENT` share of eligible sessions that are
offered or held out at random (streaming/policy.py). Each example is one such decision: its
features at the pause, whether it was offered, and whether the session bought.

Two ways of learning it with XGBoost were measured (`compare_learners`, docs/BENCHMARKS.md,
"Uplift model"), as CausalML's meta-learners name them (CausalML documentation, "Meta-Learner
Algorithms"; Künzel et al., "Metalearners for estimating heterogeneous treatment effects using
machine learning", PNAS 116(10), 2019):

- T-learner: one classifier on the offered examples and one on the held-out ones; the uplift is
  the difference of their predictions (scikit-uplift's `TwoModels`, "vanilla" method);
- S-learner: one classifier with `offered` as one more feature, predicted twice, offered and not
  (scikit-uplift's `SoloModel`).

On 40,000 generated shoppers (seed 0: 23,316 with a cart, one randomised decision each at its
first pause, half offered), trained on 70% and measured on the other 30%, five splits: held-out
Qini coefficient T-learner 0.243 (0.226 to 0.261), S-learner 0.230 (0.209 to 0.253), the
T-learner ahead on every split; offered minus held-out conversion among the top 30% by predicted
uplift 0.547 against 0.537 (docs/BENCHMARKS.md, "Uplift model"). The T-learner is the one kept,
for that and because its two boosters each take exactly FEATURE_NAMES: each passes the same
model-file checks as a risk model (streaming/model_file.py) and scores with the same call, with
no made-up `offered` column at serving time. Its trees are few and shallow (at most 15 rounds of
depth 4 a booster, learning rate 0.3): 80 rounds at 0.1 ranked no better (Qini 0.246) and cost
twice as much to score, and both models together must stay within 2x a bare prediction of the
risk model (`bench scoring`).

The Qini curve and coefficient follow scikit-uplift (`sklift.metrics.qini_curve`,
`perfect_qini_curve`, `qini_auc_score`; Radcliffe, "Using control groups to target on predicted
lift", 2007): sessions ranked by predicted uplift, the curve at k is the offered buyers among the
first k minus the held-out buyers among them scaled to the offered count; the coefficient is the
area between the curve and the random line, over the same area of the perfect ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from streaming.features import FEATURE_NAMES
from streaming.generator import GeneratedSession
from streaming.training import DAY_SECONDS, session_pauses, training_threads

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Learner = Literal["t", "s"]

UPLIFT_ROUNDS: Final = 15
UPLIFT_MAX_DEPTH: Final = 4
UPLIFT_LEARNING_RATE: Final = 0.3
_EARLY_STOPPING: Final = 15
OFFERED_FEATURE: Final = "offered"  # the S-learner's extra column


@dataclass(frozen=True)
class Randomised:
    """Randomised decisions: features (n x FEATURE_NAMES, float32), whether each was offered,
    whether its session bought, and its cart's value."""

    X: npt.NDArray[np.float32]
    offered: Bools
    bought: Bools
    cart: Floats

    def __len__(self) -> int:
        return len(self.bought)

    def take(self, rows: npt.NDArray[np.intp]) -> Randomised:
        return Randomised(self.X[rows], self.offered[rows], self.bought[rows], self.cart[rows])

    def both_arms(self) -> bool:
        """Whether each arm has buyers and non-buyers: what training needs."""
        return all(
            0 < int(self.bought[arm].sum()) < int(arm.sum())
            for arm in (self.offered, ~self.offered)
        )


def randomised_from_generated(
    sessions: Iterable[GeneratedSession],
    *,
    pause_seconds: float,
    seed: int,
    offered_share: float = 0.5,
    start: float = 0.0,
) -> Randomised:
    """One randomised decision a generated shopper, at its first pause with a cart: offered with
    chance `offered_share`, and bought as its hidden response says (streaming/generator.py).

    Shoppers who never pause with a cart are left out. The sessions start one after another over
    the day from `start`, as in `streaming.training.pause_examples`.
    """
    sessions = list(sessions)
    rng = np.random.default_rng([seed, 2])
    spacing = DAY_SECONDS / max(len(sessions), 1)
    rows: list[list[float]] = []
    offered: list[bool] = []
    bought: list[bool] = []
    for i, session in enumerate(sessions):
        pauses, _ = session_pauses(session, pause_seconds=pause_seconds, start=start + i * spacing)
        if not pauses:
            continue
        treated = bool(rng.random() < offered_share)
        rows.append(pauses[0])
        offered.append(treated)
        bought.append(session.buys(offered=treated))
    X = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    cart = X[:, FEATURE_NAMES.index("cart_value")].astype(np.float64)
    return Randomised(X, np.asarray(offered, dtype=bool), np.asarray(bought, dtype=bool), cart)


def split_randomised(
    data: Randomised, *, test_fraction: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(training rows, held-out rows), each arm held out in its share."""
    rng = np.random.default_rng([seed, 3])
    train: list[npt.NDArray[np.intp]] = []
    test: list[npt.NDArray[np.intp]] = []
    for arm in (data.offered, ~data.offered):
        members = rng.permutation(np.flatnonzero(arm))
        cut = min(max(1, round(len(members) * test_fraction)), max(len(members) - 1, 0))
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# --- learning ------------------------------------------------------------------------------------


def fit_arm(
    X: npt.NDArray[np.float32],
    bought: Bools,
    *,
    seed: int,
    names: list[str] | None = None,
    rounds: int = UPLIFT_ROUNDS,
    max_depth: int = UPLIFT_MAX_DEPTH,
) -> xgb.Booster:
    """A classifier of buying (1 = bought), stopped early on the last fifth of its rows."""
    names = names or list(FEATURE_NAMES)
    order = np.random.default_rng([seed, 4]).permutation(len(X))
    cut = max(1, len(order) - max(1, len(order) // 5))
    fit, stop = order[:cut], order[cut:]
    y = bought.astype(np.float32)
    dfit = xgb.DMatrix(X[fit], label=y[fit], feature_names=names)
    dstop = xgb.DMatrix(X[stop], label=y[stop], feature_names=names)
    params: dict[str, object] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": max_depth,
        "eta": UPLIFT_LEARNING_RATE,
        "min_child_weight": 5,
        "nthread": training_threads(len(X)),
        "seed": seed,
    }
    booster = xgb.train(
        params,
        dfit,
        num_boost_round=rounds,
        evals=[(dstop, "stop")],
        early_stopping_rounds=_EARLY_STOPPING,
        verbose_eval=False,
    )
    kept = booster.best_iteration + 1
    return booster[:kept] if kept < booster.num_boosted_rounds() else booster


@dataclass(frozen=True)
class TwoBoosters:
    """A T-learner: what `UpliftScorer` serves (streaming/uplift_model.py)."""

    treated: xgb.Booster
    control: xgb.Booster

    def predict(self, X: npt.NDArray[np.float32]) -> tuple[Floats, Floats]:
        """(p_offer, p_none) of each row."""
        return (
            np.asarray(self.treated.inplace_predict(X), dtype=np.float64),
            np.asarray(self.control.inplace_predict(X), dtype=np.float64),
        )


@dataclass(frozen=True)
class OneBooster:
    """An S-learner: `offered` as the last feature, predicted both ways."""

    model: xgb.Booster

    def predict(self, X: npt.NDArray[np.float32]) -> tuple[Floats, Floats]:
        ones, zeros = np.ones((len(X), 1), np.float32), np.zeros((len(X), 1), np.float32)
        return (
            np.asarray(self.model.inplace_predict(np.hstack([X, ones])), dtype=np.float64),
            np.asarray(self.model.inplace_predict(np.hstack([X, zeros])), dtype=np.float64),
        )


def train_t_learner(data: Randomised, *, seed: int) -> TwoBoosters:
    treated, control = data.offered, ~data.offered
    return TwoBoosters(
        fit_arm(data.X[treated], data.bought[treated], seed=seed),
        fit_arm(data.X[control], data.bought[control], seed=seed + 1),
    )


def train_s_learner(data: Randomised, *, seed: int) -> OneBooster:
    X = np.hstack([data.X, data.offered.astype(np.float32).reshape(-1, 1)])
    return OneBooster(fit_arm(X, data.bought, seed=seed, names=[*FEATURE_NAMES, OFFERED_FEATURE]))


def train_learner(data: Randomised, *, learner: Learner, seed: int) -> TwoBoosters | OneBooster:
    return train_t_learner(data, seed=seed) if learner == "t" else train_s_learner(data, seed=seed)


# --- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QiniCurve:
    """Points (sessions ranked first, incremental buyers among them) of a model, of the perfect
    ranking and the end of the random line; `coefficient` as scikit-uplift's `qini_auc_score`."""

    x: Floats
    model: Floats
    perfect_x: Floats
    perfect: Floats
    coefficient: float

    def as_json(self, points: int = 101) -> dict[str, object]:
        """The curve at `points` evenly spaced shares of the sessions, for a chart."""
        n = float(self.x[-1]) if len(self.x) else 0.0
        at = np.linspace(0.0, n, points)
        return {
            "sessions": int(n),
            "share": [round(float(v / n), 4) if n else 0.0 for v in at],
            "model": [round(float(v), 2) for v in np.interp(at, self.x, self.model)],
            "perfect": [round(float(v), 2) for v in np.interp(at, self.perfect_x, self.perfect)],
            "random_end": round(float(self.model[-1]), 2) if len(self.model) else 0.0,
            "qini": round(self.coefficient, 4),
        }


def qini_points(bought: Bools, uplift: Floats, offered: Bools) -> tuple[Floats, Floats]:
    """(k, Qini(k)) at each distinct predicted uplift, from (0, 0): sklift's `qini_curve`."""
    order = np.argsort(uplift, kind="mergesort")[::-1]
    y, t, u = bought[order].astype(np.float64), offered[order].astype(np.float64), uplift[order]
    ends = np.r_[np.flatnonzero(np.diff(u)), len(u) - 1] if len(u) else np.empty(0, np.intp)
    n_t = np.cumsum(t)[ends]
    y_t = np.cumsum(y * t)[ends]
    n_all = (ends + 1).astype(np.float64)
    n_c = n_all - n_t
    y_c = np.cumsum(y * (1 - t))[ends]
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c != 0)
    return np.r_[0.0, n_all], np.r_[0.0, y_t - y_c * ratio]


def qini(bought: Bools, uplift: Floats, offered: Bools) -> QiniCurve:
    """The model's Qini curve, the perfect one, and the coefficient (NaN when undefined)."""
    x, model = qini_points(bought, uplift, offered)
    # the perfect ranking, negative effects allowed: offered buyers first, held-out buyers last
    best = bought.astype(np.float64) * np.where(offered, 1.0, -1.0)
    perfect_x, perfect = qini_points(bought, best, offered)
    if len(x) < 2:
        return QiniCurve(x, model, perfect_x, perfect, math.nan)
    random_area = x[-1] * model[-1] / 2
    model_area = float(np.trapezoid(model, x)) - random_area
    perfect_area = float(np.trapezoid(perfect, perfect_x)) - random_area
    coefficient = model_area / perfect_area if perfect_area else math.nan
    return QiniCurve(x, model, perfect_x, perfect, coefficient)


@dataclass(frozen=True)
class LearnerFigures:
    learner: Learner
    qini: float
    uplift_top_30: float  # offered minus held-out conversion among the top 30% by uplift
    seconds: float


def compare_learners(
    data: Randomised, *, seeds: Iterable[int], test_fraction: float = 0.3
) -> list[LearnerFigures]:
    """Each learner trained and measured on the same splits of `data`, one split a seed."""
    import time

    results: list[LearnerFigures] = []
    for seed in seeds:
        train, test = split_randomised(data, test_fraction=test_fraction, seed=seed)
        held = data.take(test)
        learners: tuple[Learner, ...] = ("t", "s")
        for learner in learners:
            began = time.perf_counter()
            model = train_learner(data.take(train), learner=learner, seed=seed)
            p_offer, p_none = model.predict(held.X)
            uplift = p_offer - p_none
            results.append(
                LearnerFigures(
                    learner,
                    qini(held.bought, uplift, held.offered).coefficient,
                    uplift_at(held.bought, uplift, held.offered, share=0.3),
                    time.perf_counter() - began,
                )
            )
    return results


def uplift_at(bought: Bools, uplift: Floats, offered: Bools, *, share: float) -> float:
    """Offered minus held-out conversion among the first `share` by predicted uplift."""
    top = np.argsort(uplift, kind="mergesort")[::-1][: max(1, math.ceil(len(uplift) * share))]
    t, y = offered[top], bought[top]
    if not t.any() or t.all():
        return math.nan
    return float(y[t].mean() - y[~t].mean())
