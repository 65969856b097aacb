"""Drift: whether the sessions a model scores now look like those it learnt from (numpy only).

A model's reference is its training data in bins: per feature ten quantile bins, or one bin per
value for a feature of few distinct values (a 0/1 flag, a small count), and the share of the
training rows in each; the same for its scores. The population stability index (PSI) compares
the shares of live rows in the same bins with those:

    PSI = sum over bins of (actual - expected) x ln(actual / expected)

each share floored at SHARE_FLOOR, so that an empty bin counts as very rare rather than
infinitely so. Below 0.1 is stable; above 0.2 the population has moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streaming.features import FEATURE_NAMES

Floats = npt.NDArray[np.float64]
Column = npt.NDArray[np.float32] | npt.NDArray[np.float64]
# A column in bins, as stored in ScoringModel.reference (JSON):
# {"kind": "quantile" | "values", "edges": [...], "shares": [...]} with len(shares) ==
# len(edges) + 1; bin i holds edges[i-1] < x <= edges[i]. "values" bins also list their values.
Bins = dict[str, Any]

QUANTILE_BINS: Final = 10
# A column with at most this many distinct values gets one bin per value.
MAX_VALUES: Final = QUANTILE_BINS
SHARE_FLOOR: Final = 1e-4


def bins_of(values: Column) -> Bins:
    """The bins of one column of training data, with the share of its rows in each."""
    distinct = np.unique(np.asarray(values, dtype=np.float64))
    if len(distinct) <= MAX_VALUES:
        # a bin per value, split halfway between neighbours: a live value never seen in
        # training falls in the bin of the value nearest to it
        edges = (distinct[:-1] + distinct[1:]) / 2
        bins: Bins = {"kind": "values", "values": distinct.tolist()}
    else:
        quantiles = np.quantile(values, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1])
        # ties make equal quantiles: one edge each, fewer and wider bins
        edges = np.unique(quantiles)
        bins = {"kind": "quantile"}
    bins["edges"] = edges.tolist()
    bins["shares"] = shares_in(bins, values).tolist()
    return bins


def shares_in(bins: Bins, values: Column) -> Floats:
    """The share of `values` in each of the bins (all 0 for no values)."""
    edges = np.asarray(bins["edges"], dtype=np.float64)
    index = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def psi(expected: Sequence[float] | Floats, actual: Sequence[float] | Floats) -> float:
    """The population stability index of `actual` shares against `expected` ones (same bins)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), SHARE_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def column_psi(bins: Bins, values: Column) -> float:
    """PSI of live `values` against a column's reference bins; NaN for no values."""
    if len(values) == 0:
        return float("nan")
    return psi(bins["shares"], shares_in(bins, values))


def reference_of(
    X: npt.NDArray[np.float32] | Floats,
    scores: Floats,
    *,
    names: Sequence[str] = FEATURE_NAMES,
) -> dict[str, Any]:
    """A model's reference (JSON-ready): {"rows", "features": {name: bins}, "score": bins}, of
    its training rows X (rows x names) and its scores on them; {} for no rows."""
    if len(X) == 0:
        return {}
    return {
        "rows": len(X),
        "features": {name: bins_of(X[:, j]) for j, name in enumerate(names)},
        "score": bins_of(scores),
    }


@dataclass(frozen=True, slots=True)
class Drift:
    """PSI of each feature and of the score; score None when there were no scores."""

    features: dict[str, float]
    score: float | None


def drift_of(
    reference: Mapping[str, Any],
    X: npt.NDArray[np.float32] | Floats,
    scores: Floats | None,
    *,
    names: Sequence[str] = FEATURE_NAMES,
) -> Drift:
    """PSI of live rows X (rows x names) and of live scores against a model's reference.

    Features the reference has no bins for are left out.
    """
    binned = reference.get("features", {})
    features = {
        name: column_psi(binned[name], X[:, j]) for j, name in enumerate(names) if name in binned
    }
    score = None
    if scores is not None and len(scores) and "score" in reference:
        score = column_psi(reference["score"], scores)
    return Drift(features, score)
