"""How good a cart-risk model's probabilities are, on outcomes it did not learn from (numpy only).

Truth is 1 for a cart abandoned and 0 for one bought; scores are the model's risk (probability
of abandonment). `figures` gives every number `manage.py evaluate_models` prints; `gate` is the
rule a new model must pass to replace the active one (`train_model --activate`,
`promote_shadow`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

CALIBRATION_BINS: Final = 10
# The gate: a new model may rank at most this much worse (ROC-AUC) ...
AUC_TOLERANCE: Final = 0.005
# ... and its log-loss be at most this many times the current one's.
LOG_LOSS_TOLERANCE: Final = 1.02


# --- one number each ---------------------------------------------------------------------------


def auc(truth: Floats, scores: Floats) -> float:
    """ROC AUC by ranks (Mann-Whitney U), tied scores sharing their average rank.

    NaN when one of the two classes is missing.
    """
    positives = truth == 1
    n_pos = int(positives.sum())
    n_neg = len(truth) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


roc_auc = auc


def _average_ranks(values: Floats) -> Floats:
    """1-based ranks of values, each group of equal values given the mean of its ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)  # rank of each distinct value's last copy
    means = ends - (counts - 1) / 2.0
    ranks: Floats = means[inverse]
    return ranks


def average_precision(truth: Floats, scores: Floats) -> float:
    """Area under the precision-recall curve as a step sum over distinct thresholds.

    sum of (recall_k - recall_{k-1}) * precision_k, tied scores taken as one threshold.

    NaN when one of the two classes is missing (with positives alone every ranking scores 1).
    """
    n_pos = float((truth == 1).sum())
    if n_pos == 0 or n_pos == len(truth):
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    hits = np.cumsum(truth[order] == 1).astype(np.float64)
    # the last index of each run of equal scores: where a threshold takes in all its ties
    last = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    true_positives = hits[last]
    precision = true_positives / (last + 1)
    recall = true_positives / n_pos
    gained = np.diff(recall, prepend=0.0)
    return float((gained * precision).sum())


pr_auc = average_precision


def log_loss(truth: Floats, probabilities: Floats) -> float:
    if len(truth) == 0:
        return float("nan")
    p = np.clip(probabilities, 1e-15, 1 - 1e-15)
    return float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p)))


def brier(truth: Floats, probabilities: Floats) -> float:
    """Mean squared difference between probability and outcome: 0 is perfect, 0.25 a coin."""
    if len(truth) == 0:
        return float("nan")
    return float(np.mean((probabilities - truth) ** 2))


def expected_calibration_error(
    truth: Floats, probabilities: Floats, *, bins: int = CALIBRATION_BINS
) -> float:
    """Sum over equal-width probability bins of (share of rows) x |mean probability - rate|."""
    if len(truth) == 0:
        return float("nan")
    counts, predicted, observed = _calibration_bins(truth, probabilities, bins)
    gaps = np.abs(predicted - observed)
    return float(np.sum(counts * np.nan_to_num(gaps)) / len(truth))


def _calibration_bins(truth: Floats, probabilities: Floats, bins: int) -> tuple[Floats, ...]:
    """(rows, mean probability, rate of 1s) per bin [0, 1/bins), ..., [1 - 1/bins, 1]; NaN
    means for empty bins."""
    index = np.clip((probabilities * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(index, weights=probabilities, minlength=bins) / counts
        observed = np.bincount(index, weights=truth, minlength=bins) / counts
    return counts, predicted, observed


# --- curves, for plots -------------------------------------------------------------------------


def roc_curve(truth: Floats, scores: Floats, *, max_points: int = 201) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1), one point per distinct
    threshold, thinned to about `max_points`; [] when a class is missing."""
    n_pos = float((truth == 1).sum())
    n_neg = float(len(truth) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    hits = np.cumsum(truth[order] == 1).astype(np.float64)
    last = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    tpr = np.concatenate(([0.0], hits[last] / n_pos))
    fpr = np.concatenate(([0.0], (last + 1 - hits[last]) / n_neg))
    if len(tpr) > max_points:
        keep = np.unique(np.linspace(0, len(tpr) - 1, max(2, max_points)).round().astype(int))
        tpr, fpr = tpr[keep], fpr[keep]
    return [(float(x), float(y)) for x, y in zip(fpr, tpr, strict=True)]


def calibration_curve(
    truth: Floats, probabilities: Floats, *, bins: int = CALIBRATION_BINS
) -> list[tuple[float, float, int]]:
    """(mean probability, rate of 1s, rows) of each non-empty equal-width bin, lowest first."""
    counts, predicted, observed = _calibration_bins(truth, probabilities, bins)
    return [
        (float(p), float(o), int(c))
        for c, p, o in zip(counts, predicted, observed, strict=True)
        if c > 0
    ]


# --- all of them -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """A model's figures on `n` outcomes, `buyers` of which bought (truth 0). NaN: not known
    (no rows, or one outcome only)."""

    n: int
    buyers: int
    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: NaN becomes None, figures are rounded to 6 decimals."""
        return {
            name: (None if math.isnan(value) else round(value, 6))
            if isinstance(value, float)
            else value
            for name, value in asdict(self).items()
        }


def figures(truth: Floats, probabilities: Floats) -> Figures:
    truth = np.asarray(truth, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return Figures(
        n=len(truth),
        buyers=int((truth == 0).sum()),
        roc_auc=auc(truth, probabilities),
        pr_auc=average_precision(truth, probabilities),
        log_loss=log_loss(truth, probabilities),
        brier=brier(truth, probabilities),
        ece=expected_calibration_error(truth, probabilities),
    )


# --- the gate ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]  # why not, when it did not pass; what held when it did


def gate(new: Figures, current: Figures) -> Verdict:
    """Whether `new` may replace `current`, both measured on the same outcomes: its ROC-AUC at
    least the current one's minus AUC_TOLERANCE, and its log-loss at most LOG_LOSS_TOLERANCE
    times the current one's. A figure not known for either (one outcome only) is not compared;
    with neither known the new model does not pass."""
    compared = False
    failed: list[str] = []
    held: list[str] = []
    if not (math.isnan(new.roc_auc) or math.isnan(current.roc_auc)):
        compared = True
        floor = current.roc_auc - AUC_TOLERANCE
        line = f"ROC-AUC {new.roc_auc:.4f}, at least {floor:.4f} needed"
        (held if new.roc_auc >= floor else failed).append(line)
    if not (math.isnan(new.log_loss) or math.isnan(current.log_loss)):
        compared = True
        ceiling = current.log_loss * LOG_LOSS_TOLERANCE
        line = f"log-loss {new.log_loss:.4f}, at most {ceiling:.4f} allowed"
        (held if new.log_loss <= ceiling else failed).append(line)
    if not compared:
        return Verdict(False, ("no outcomes to compare the two models on",))
    return Verdict(not failed, tuple(failed or held))
