from __future__ import annotations

import json

import numpy as np
import pytest

from streaming.drift import bins_of, column_psi, drift_of, psi, reference_of, shares_in
from streaming.features import FEATURE_NAMES
from streaming.generator import generate_sessions
from streaming.training import pause_examples

CART_VALUE = FEATURE_NAMES.index("cart_value")


@pytest.fixture(scope="module")
def pauses() -> np.ndarray:
    X, _ = pause_examples(generate_sessions(1500, seed=11), pause_seconds=30.0)
    return X


def scores_of(X: np.ndarray) -> np.ndarray:
    # any score will do: a reference bins whatever the model gave
    views = X[:, FEATURE_NAMES.index("views_since_add")].astype(np.float64)
    scores: np.ndarray = 1 / (1 + np.exp(2 - views))
    return scores


def test_psi_of_shares_worked_by_hand():
    # (.9 - .5) ln(.9 / .5) + (.1 - .5) ln(.1 / .5)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5))
    assert psi([0.25] * 4, [0.25] * 4) == 0.0


def test_an_empty_bin_counts_as_rare_not_infinite():
    assert 0 < psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) < 1.0


def test_a_continuous_column_gets_ten_quantile_bins():
    values = np.random.default_rng(0).lognormal(4, 1, 5000)
    bins = bins_of(values)
    assert bins["kind"] == "quantile" and len(bins["edges"]) == 9
    assert bins["shares"] == pytest.approx([0.1] * 10, abs=0.001)


def test_a_flag_gets_a_bin_per_value():
    values = np.array([0.0] * 70 + [1.0] * 30)
    bins = bins_of(values)
    assert bins == {"kind": "values", "values": [0.0, 1.0], "edges": [0.5], "shares": [0.7, 0.3]}
    assert column_psi(bins, np.array([0.0] * 70 + [1.0] * 30)) == 0.0
    # every tab hidden now
    assert column_psi(bins, np.ones(50)) > 1.0


def test_ties_make_fewer_wider_bins():
    values = np.array([0.0] * 600 + list(range(1, 401)), dtype=np.float64)
    bins = bins_of(values)
    assert bins["kind"] == "quantile"
    assert bins["shares"][0] == pytest.approx(0.6)  # every 0 in one bin
    assert sum(bins["shares"]) == pytest.approx(1.0)


def test_a_value_never_seen_in_training_falls_in_the_nearest_bin():
    bins = bins_of(np.array([1.0, 2.0, 3.0, 3.0]))
    assert shares_in(bins, np.array([0.0, 7.0])).tolist() == [0.5, 0.0, 0.5]


def test_the_reference_covers_every_feature_and_the_score_and_is_json(pauses):
    reference = reference_of(pauses, scores_of(pauses))
    assert set(reference["features"]) == set(FEATURE_NAMES)
    assert reference["rows"] == len(pauses)
    assert reference["features"]["hidden"]["kind"] == "values"
    assert reference["features"]["cart_value"]["kind"] == "quantile"
    assert json.loads(json.dumps(reference)) == reference
    assert reference_of(pauses[:0], scores_of(pauses[:0])) == {}


def test_identical_data_does_not_drift(pauses):
    reference = reference_of(pauses, scores_of(pauses))
    drift = drift_of(reference, pauses, scores_of(pauses))
    assert max(drift.features.values()) == pytest.approx(0.0, abs=1e-9)
    assert drift.score == pytest.approx(0.0, abs=1e-9)


def test_other_shoppers_of_the_same_kind_barely_drift(pauses):
    reference = reference_of(pauses, scores_of(pauses))
    others, _ = pause_examples(generate_sessions(1500, seed=12), pause_seconds=30.0)
    drift = drift_of(reference, others, scores_of(others))
    assert drift.features["cart_value"] < 0.1
    assert drift.score is not None and drift.score < 0.1


def test_carts_ten_times_dearer_drift_on_cart_value_only(pauses):
    reference = reference_of(pauses, scores_of(pauses))
    dearer = pauses.copy()
    dearer[:, CART_VALUE] *= 10
    drift = drift_of(reference, dearer, None)
    assert drift.features["cart_value"] > 0.2
    assert all(value < 1e-9 for name, value in drift.features.items() if name != "cart_value")
    assert drift.score is None  # no scores given
