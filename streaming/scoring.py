"""The cart-risk model at serving time: load a checked model file (streaming/model_file.py),
then score."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import xgboost

from streaming.features import FEATURE_NAMES
from streaming.model_file import ModelError, check_booster, check_model_file

ModelFormat = Literal["json", "ubj"]

Matrix = npt.NDArray[np.float32] | npt.NDArray[np.float64]
Probabilities = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature's push on a decision, in log-odds: positive raises the risk."""

    feature: str
    value: float
    contribution: float


# --- loading --------------------------------------------------------------------------------


def load_model(raw: bytes, *, label: str) -> Scorer:
    """A Scorer for an uploaded model file, or ModelError saying why it cannot serve."""
    fmt = check_model_file(raw)
    if fmt == "json":
        raw = raw.lstrip()  # XGBoost's own sniffing expects `{` as the very first byte
    try:
        booster = xgboost.Booster(model_file=bytearray(raw))
    except xgboost.core.XGBoostError as error:
        raise ModelError(f"XGBoost could not load the model: {_first_line(error)}") from None
    # One thread per prediction: a decision scores a handful of rows, where spreading work over
    # an OpenMP pool costs more than it saves, and several workers on one machine would otherwise
    # each claim every core. Latency stays flat and predictable under load.
    booster.set_param({"nthread": 1})
    check_booster(booster)
    return Scorer(booster, label=label)


def _first_line(error: Exception) -> str:
    # "[16:35:45] /workspace/src/...cc:90: Check failed: ..." -> "Check failed: ..."
    lines = str(error).strip().splitlines() or ["unknown error"]
    return re.sub(r"^\[[0-9:]+\] \S+: ", "", lines[0])


# --- scoring --------------------------------------------------------------------------------


class Scorer:
    """A loaded cart-risk model. Safe to share between threads: it only ever predicts."""

    def __init__(self, booster: xgboost.Booster, *, label: str) -> None:
        self._booster = booster
        self.label = label

    def __repr__(self) -> str:
        return f"Scorer({self.label!r})"

    @property
    def booster(self) -> xgboost.Booster:
        """The underlying Booster, for benchmarks against bare XGBoost; never train it."""
        return self._booster

    def predict_proba(self, X: Matrix) -> Probabilities:
        """Risk (probability of abandonment) of each row of a (rows x FEATURE_NAMES) matrix."""
        _check_matrix(X)
        if len(X) == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self._booster.inplace_predict(X), dtype=np.float64)

    def predict_proba_one(self, row: Sequence[float]) -> float:
        matrix = np.asarray(row, dtype=np.float32).reshape(1, -1)
        return float(self.predict_proba(matrix)[0])

    def contributions(self, X: Matrix) -> npt.NDArray[np.float32]:
        """Exact TreeSHAP values in log-odds: (rows x (features + 1)), the bias last.

        Each row sums to the model's margin, whose logistic is `predict_proba`.
        """
        _check_matrix(X)
        if len(X) == 0:
            return np.empty((0, len(FEATURE_NAMES) + 1), dtype=np.float32)
        data = xgboost.DMatrix(X, feature_names=list(FEATURE_NAMES), nthread=1)
        values = self._booster.predict(data, pred_contribs=True, approx_contribs=False)
        return np.asarray(values, dtype=np.float32)

    def reasons(self, X: Matrix, *, top: int = 3) -> list[list[Reason]]:
        """Each row's `top` features by absolute contribution (log-odds), largest first.

        The bias is left out, and so are features that did not move the score at all.
        """
        values = self.contributions(X)[:, :-1]
        # A stable sort on -|contribution| keeps ties in FEATURE_NAMES order.
        order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :top]
        return [
            [
                Reason(FEATURE_NAMES[j], float(X[i, j]), float(values[i, j]))
                for j in order[i]
                if values[i, j] != 0.0
            ]
            for i in range(len(values))
        ]


def _check_matrix(X: Matrix) -> None:
    if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(
            f"expected a (rows x {len(FEATURE_NAMES)}) matrix in FEATURE_NAMES order, "
            f"got shape {X.shape}"
        )
