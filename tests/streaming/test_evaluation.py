from __future__ import annotations

import math

import numpy as np
import pytest

from streaming import training
from streaming.evaluation import (
    Figures,
    auc,
    average_precision,
    brier,
    calibration_curve,
    expected_calibration_error,
    figures,
    gate,
    log_loss,
    roc_curve,
)


def floats(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


# Four decisions worked by hand: two abandoned (1), two bought (0).
TRUTH = floats(1, 0, 1, 0)
RISK = floats(0.9, 0.2, 0.6, 0.7)


def test_roc_auc_counts_the_pairs_ranked_right():
    # (abandoned, bought) pairs: .9>.2, .9>.7, .6>.2, .6<.7 -> 3 of 4
    assert auc(TRUTH, RISK) == pytest.approx(0.75)


def test_pr_auc_is_not_known_with_one_outcome_only():
    # all abandoned: every ranking finds them all at full precision, which says nothing
    assert math.isnan(average_precision(np.ones(5), np.linspace(0, 1, 5)))
    assert math.isnan(average_precision(np.zeros(5), np.linspace(0, 1, 5)))


def test_pr_auc_is_the_precision_at_each_recall_step():
    # by risk: .9 (1) precision 1 at recall .5; .7 (0); .6 (1) precision 2/3 at recall 1
    assert average_precision(TRUTH, RISK) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_log_loss_is_the_mean_negative_log_likelihood():
    # likelihoods .9, .8, .6, .3, whose product is .6 ** 4
    assert log_loss(TRUTH, RISK) == pytest.approx(-math.log(0.6))


def test_brier_is_the_mean_squared_error():
    assert brier(TRUTH, RISK) == pytest.approx((0.1**2 + 0.2**2 + 0.4**2 + 0.7**2) / 4)


def test_calibration_error_weighs_each_tenth_by_its_rows():
    # one decision in each of the bins 2, 6, 7, 9: gaps .2, .4, .7, .1
    assert expected_calibration_error(TRUTH, RISK) == pytest.approx((0.2 + 0.4 + 0.7 + 0.1) / 4)
    # .81 and .85 share a bin: mean .83 against a rate of .5
    assert expected_calibration_error(floats(1, 0), floats(0.81, 0.85)) == pytest.approx(0.33)
    # a risk of exactly 1 belongs to the last bin
    assert expected_calibration_error(floats(1), floats(1.0)) == pytest.approx(0.0)


def test_a_well_calibrated_model_has_a_small_calibration_error():
    rng = np.random.default_rng(3)
    risk = rng.random(20_000)
    truth = (rng.random(20_000) < risk).astype(np.float64)
    assert expected_calibration_error(truth, risk) < 0.02
    assert expected_calibration_error(truth, np.clip(risk + 0.2, 0, 1)) > 0.15


def test_the_roc_curve_steps_through_each_threshold():
    assert roc_curve(TRUTH, RISK) == [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
    assert roc_curve(floats(1, 1), floats(0.2, 0.3)) == []


def test_a_long_roc_curve_is_thinned_but_keeps_its_ends():
    rng = np.random.default_rng(1)
    truth = (rng.random(5000) < 0.5).astype(np.float64)
    points = roc_curve(truth, rng.random(5000), max_points=50)
    assert len(points) <= 50
    assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)


def test_the_calibration_curve_lists_the_bins_with_rows():
    points = calibration_curve(TRUTH, RISK)
    assert [(round(p, 6), rate, rows) for p, rate, rows in points] == [
        (0.2, 0.0, 1),
        (0.6, 1.0, 1),
        (0.7, 0.0, 1),
        (0.9, 1.0, 1),
    ]


def test_figures_gather_every_number_and_count_the_buyers():
    f = figures(TRUTH, RISK)
    assert (f.n, f.buyers) == (4, 2)
    assert f.roc_auc == pytest.approx(0.75) and f.brier == pytest.approx(0.175)
    assert f.as_dict()["ece"] == pytest.approx(0.35)


def test_figures_not_known_are_none_in_json():
    f = figures(floats(1, 1), floats(0.4, 0.9))
    assert f.as_dict()["roc_auc"] is None and f.as_dict()["buyers"] == 0
    empty = figures(floats(), floats()).as_dict()
    assert empty["n"] == 0 and empty["log_loss"] is None and empty["ece"] is None


def test_the_figures_are_still_importable_from_training():
    assert training.auc is auc and training.log_loss is log_loss
    assert training.average_precision is average_precision


# --- the gate ------------------------------------------------------------------------------------


def made(roc_auc: float, log_loss: float) -> Figures:
    return Figures(
        n=100, buyers=30, roc_auc=roc_auc, pr_auc=0.9, log_loss=log_loss, brier=0.1, ece=0.01
    )


def test_the_gate_lets_a_model_as_good_within_the_tolerances_pass():
    assert gate(made(0.796, 0.407), made(0.80, 0.40)).passed
    assert gate(made(0.85, 0.30), made(0.80, 0.40)).passed


def test_the_gate_refuses_a_model_that_ranks_worse():
    verdict = gate(made(0.79, 0.40), made(0.80, 0.40))
    assert not verdict.passed
    assert verdict.reasons == ("ROC-AUC 0.7900, at least 0.7950 needed",)


def test_the_gate_refuses_a_model_whose_log_loss_is_more_than_2_percent_worse():
    verdict = gate(made(0.81, 0.41), made(0.80, 0.40))
    assert not verdict.passed
    assert verdict.reasons == ("log-loss 0.4100, at most 0.4080 allowed",)


def test_the_gate_compares_log_loss_alone_when_one_outcome_leaves_no_roc_auc():
    assert gate(made(float("nan"), 0.40), made(float("nan"), 0.40)).passed
    assert not gate(made(float("nan"), float("nan")), made(0.8, 0.4)).passed
