from __future__ import annotations

import math

import numpy as np
import pytest

from streaming.features import FEATURE_NAMES, FEATURES_VERSION, as_dict
from streaming.generator import GeneratedEvent, GeneratedSession, generate_sessions
from streaming.training import (
    auc,
    average_precision,
    labelled_from_decisions,
    log_loss,
    pause_examples,
    stratified_split,
    train_booster,
)
from tests.factories import T0

PAUSE = 30.0
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}

# (event, props); the props' type is spelled out, or a dict of floats would not be accepted.
EventStep = tuple[str, dict[str, object]]
ADD: EventStep = ("add_to_cart", {"product_id": "sku-mug", "price": 14.0, "quantity": 2})
VIEW: EventStep = ("product_view", {"product_id": "sku-lamp", "price": 79.0})
HOME: EventStep = ("page_view", {"url": "/", "page_type": "home"})
PURCHASE: EventStep = ("purchase", {"total": 28.0})
HIDDEN: EventStep = ("visibility", {"state": "hidden"})
VISIBLE: EventStep = ("visibility", {"state": "visible"})
HEARTBEAT: EventStep = ("heartbeat", {})


def session(*steps: tuple[float, EventStep]) -> GeneratedSession:
    """A hand-built session from (seconds from start, (event, props)) steps."""
    events = [
        GeneratedEvent(at, {"id": f"e-{i}", "event": name, "props": props})
        for i, (at, (name, props)) in enumerate(steps, start=1)
    ]
    purchased = any(name == "purchase" for _, (name, _) in steps)
    return GeneratedSession("hand-built", events, purchased, purchased)


def examples(*sessions: GeneratedSession) -> tuple[np.ndarray, np.ndarray]:
    return pause_examples(sessions, pause_seconds=PAUSE, start=T0)


# --- pause examples ------------------------------------------------------------------------------


def test_a_cart_that_pauses_and_then_buys_is_one_example_labelled_0():
    X, y = examples(session((0, HOME), (5, ADD), (45, VIEW), (50, PURCHASE)))
    assert X.shape == (1, len(FEATURE_NAMES))
    assert y.tolist() == [0.0]


def test_a_cart_left_behind_is_one_example_labelled_1():
    _, y = examples(session((0, HOME), (5, ADD), (12, VIEW)))
    assert y.tolist() == [1.0]


def test_a_session_that_never_carts_gives_no_example():
    X, y = examples(session((0, HOME), (5, VIEW), (400, VIEW)))
    assert X.shape == (0, len(FEATURE_NAMES))
    assert y.shape == (0,)


def test_a_short_gap_is_no_pause():
    _, y = examples(session((0, ADD), (29.9, VIEW), (59, VIEW), (80, PURCHASE)))
    assert len(y) == 0


def test_a_gap_of_exactly_the_pause_is_one():
    _, y = examples(session((0, ADD), (30, PURCHASE)))
    assert y.tolist() == [0.0]


def test_each_pause_of_a_session_is_an_example_with_the_sessions_label():
    _, y = examples(session((0, ADD), (40, VIEW), (45, VIEW), (200, VIEW)))
    assert y.tolist() == [1.0, 1.0, 1.0]


def test_a_purchase_ends_the_pauses():
    _, y = examples(session((0, ADD), (10, PURCHASE), (100, VIEW)))
    assert len(y) == 0


def test_the_features_are_those_at_the_pauses_deadline():
    X, _ = examples(session((0, HOME), (5, ADD), (10, VIEW), (300, PURCHASE)))
    row = X[0]
    assert row[COLUMN["seconds_since_add"]] == pytest.approx(10 - 5 + PAUSE)
    assert row[COLUMN["session_seconds"]] == pytest.approx(10 + PAUSE)
    assert row[COLUMN["cart_value"]] == pytest.approx(28.0)
    assert row[COLUMN["views_since_add"]] == 1


def test_a_tab_hidden_during_a_pause_shows_in_its_features_without_ending_it():
    X, y = examples(session((0, ADD), (3, HIDDEN), (20, HEARTBEAT), (90, VISIBLE), (95, PURCHASE)))
    assert y.tolist() == [0.0]
    assert X[0, COLUMN["hidden"]] == 1.0


def test_what_happens_after_the_deadline_is_not_in_the_features():
    X, _ = examples(session((0, ADD), (31, HIDDEN)))
    assert X[0, COLUMN["hidden"]] == 0.0


def test_examples_from_generated_sessions_cover_every_feature():
    X, y = pause_examples(generate_sessions(300, seed=4), pause_seconds=PAUSE)
    assert X.dtype == np.float32 and y.dtype == np.float32
    assert X.shape == (len(y), len(FEATURE_NAMES))
    assert 0 < y.mean() < 1


# --- recorded decisions --------------------------------------------------------------------------


def test_recorded_decisions_are_labelled_1_when_not_converted():
    features = as_dict([float(i) for i in range(len(FEATURE_NAMES))])
    X, y = labelled_from_decisions([(features, True), (features, False)])
    assert y.tolist() == [0.0, 1.0]
    assert X[0].tolist() == [float(i) for i in range(len(FEATURE_NAMES))]


def test_decisions_with_other_features_are_skipped():
    features = as_dict([1.0] * len(FEATURE_NAMES))
    older = {"cart_value": 10.0}
    newer = {**features, "scroll_depth": 0.5}
    X, y = labelled_from_decisions([(older, False), (features, False), (newer, True)])
    assert X.shape == (1, len(FEATURE_NAMES))
    assert y.tolist() == [1.0]


def test_no_decisions_make_an_empty_matrix():
    X, y = labelled_from_decisions([])
    assert X.shape == (0, len(FEATURE_NAMES)) and y.shape == (0,)


# --- figures -------------------------------------------------------------------------------------


def floats(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def test_auc_of_a_perfect_ranking_is_1_and_of_a_reversed_one_0():
    truth = floats(0, 0, 1, 1)
    assert auc(truth, floats(0.1, 0.2, 0.7, 0.9)) == 1.0
    assert auc(truth, floats(0.9, 0.7, 0.2, 0.1)) == 0.0


def test_auc_counts_a_tie_between_classes_as_half():
    # pairs (positive, negative): .8~.8 half, .8>.1, .3<.8, .3>.1 -> 2.5 of 4
    assert auc(floats(1, 0, 1, 0), floats(0.8, 0.8, 0.3, 0.1)) == pytest.approx(0.625)
    assert auc(floats(1, 0, 1, 0), floats(0.5, 0.5, 0.5, 0.5)) == pytest.approx(0.5)


def test_auc_with_ties_within_a_class():
    # positives .9 .9 .2, negatives .5 .2: wins 2 + 2 + (0 + 0.5) -> 4.5 of 6
    truth = floats(1, 1, 1, 0, 0)
    assert auc(truth, floats(0.9, 0.9, 0.2, 0.5, 0.2)) == pytest.approx(0.75)


def test_auc_is_not_a_number_with_one_class_only():
    assert math.isnan(auc(floats(1, 1), floats(0.2, 0.3)))


def test_average_precision_sums_precision_at_each_recall_step():
    # .9 hit (P 1, R .5), .8 miss, .7 hit (P 2/3, R 1) -> .5 * 1 + .5 * 2/3
    truth = floats(1, 0, 1, 0)
    assert average_precision(truth, floats(0.9, 0.8, 0.7, 0.1)) == pytest.approx(5 / 6)


def test_average_precision_takes_tied_scores_as_one_threshold():
    # .8 holds one hit and one miss (P .5, R .5), then .3 a hit (P 2/3, R 1)
    truth = floats(1, 0, 1, 0)
    assert average_precision(truth, floats(0.8, 0.8, 0.3, 0.1)) == pytest.approx(0.25 + 1 / 3)


def test_log_loss_of_known_probabilities():
    assert log_loss(floats(1, 0), floats(0.8, 0.2)) == pytest.approx(-math.log(0.8))


def test_the_split_keeps_each_labels_share_in_the_test_part():
    y = np.asarray([1.0] * 80 + [0.0] * 20, dtype=np.float32)
    train, test = stratified_split(y, test_fraction=0.2, seed=0)
    assert sorted([*train, *test]) == list(range(100))
    assert len(test) == 20 and y[test].sum() == 16


# --- training ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run():
    X, y = pause_examples(generate_sessions(3000, seed=1), pause_seconds=PAUSE)
    rounds: list[tuple[int, int]] = []
    booster, metrics = train_booster(
        X, y, seed=1, rounds=50, progress=lambda done, total: rounds.append((done, total))
    )
    return booster, metrics, rounds


def test_a_small_training_run_ranks_abandoners_well(small_run):
    _, metrics, _ = small_run
    assert metrics["auc"] >= 0.8
    assert 0 < metrics["log_loss"] < 0.6
    assert metrics["pr_auc"] > metrics["positive_rate"]


def test_the_booster_knows_the_feature_names(small_run):
    booster, _, _ = small_run
    assert booster.feature_names == list(FEATURE_NAMES)


def test_the_metrics_say_how_the_model_was_made(small_run):
    booster, metrics, _ = small_run
    assert set(metrics) == {
        "auc",
        "pr_auc",
        "log_loss",
        "n_train",
        "n_test",
        "positive_rate",
        "rounds",
        "features_version",
    }
    assert metrics["n_test"] == pytest.approx(0.2 * (metrics["n_train"] + metrics["n_test"]), abs=1)
    assert metrics["rounds"] == booster.num_boosted_rounds() <= 50
    assert metrics["features_version"] == FEATURES_VERSION


def test_training_reports_each_round(small_run):
    _, metrics, rounds = small_run
    assert rounds[0] == (1, 50)
    assert [done for done, _ in rounds] == list(range(1, len(rounds) + 1))
    assert len(rounds) >= metrics["rounds"]
