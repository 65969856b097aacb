from __future__ import annotations

import json
import pickle
import random
from typing import Any

import numpy as np
import pytest
import xgboost

from streaming.features import FEATURE_NAMES
from streaming.model_file import ModelError, sniff_format
from streaming.scoring import Reason, Scorer, load_model

VIEWS_SINCE_ADD = FEATURE_NAMES.index("views_since_add")


def train(objective: str = "binary:logistic", names: list[str] | None = None) -> xgboost.Booster:
    """20 small trees on synthetic sessions where risk grows with views_since_add."""
    rng = np.random.default_rng(42)
    X = rng.uniform(0, 20, size=(2000, len(FEATURE_NAMES))).astype(np.float32)
    risk = 1 / (1 + np.exp(-(X[:, VIEWS_SINCE_ADD] - 10) / 2))
    y = (rng.random(len(X)) < risk).astype(np.float32)
    data = xgboost.DMatrix(X, y, feature_names=names or list(FEATURE_NAMES))
    params = {"objective": objective, "max_depth": 3, "nthread": 1, "seed": 0}
    return xgboost.train(params, data, num_boost_round=20)


@pytest.fixture(scope="module")
def booster() -> xgboost.Booster:
    return train()


@pytest.fixture(scope="module")
def json_model(booster: xgboost.Booster) -> bytes:
    return bytes(booster.save_raw("json"))


@pytest.fixture(scope="module")
def ubj_model(booster: xgboost.Booster) -> bytes:
    return bytes(booster.save_raw("ubj"))


@pytest.fixture(scope="module")
def scorer(ubj_model: bytes) -> Scorer:
    return load_model(ubj_model, label="cart-risk@3")


@pytest.fixture(scope="module")
def sessions() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(0, 20, size=(50, len(FEATURE_NAMES))).astype(np.float32)


def edited(model: bytes, edit) -> bytes:
    """The JSON model with one part changed by `edit(document)`."""
    document = json.loads(model)
    edit(document)
    return json.dumps(document).encode()


def first_tree(document: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = document["learner"]["gradient_booster"]["model"]["trees"][0]
    return tree


# --- formats ---------------------------------------------------------------------------------


def test_it_tells_json_from_ubjson(json_model: bytes, ubj_model: bytes) -> None:
    assert ubj_model.startswith(b"{")
    assert sniff_format(json_model) == "json"
    assert sniff_format(b"  \n" + json_model) == "json"
    assert sniff_format(ubj_model) == "ubj"


def test_a_json_model_and_its_ubjson_twin_predict_the_same(
    json_model: bytes, ubj_model: bytes, sessions: np.ndarray
) -> None:
    from_json = load_model(json_model, label="cart-risk@1")
    from_ubj = load_model(ubj_model, label="cart-risk@1")

    np.testing.assert_array_equal(
        from_json.predict_proba(sessions), from_ubj.predict_proba(sessions)
    )


def test_a_pretty_printed_json_model_with_leading_whitespace_loads(
    json_model: bytes, scorer: Scorer, sessions: np.ndarray
) -> None:
    pretty = b"\n  " + json.dumps(json.loads(json_model), indent=2).encode()

    np.testing.assert_array_equal(
        load_model(pretty, label="x").predict_proba(sessions), scorer.predict_proba(sessions)
    )


# --- predictions -----------------------------------------------------------------------------


def test_it_predicts_what_xgboost_predicts(
    scorer: Scorer, booster: xgboost.Booster, sessions: np.ndarray
) -> None:
    expected = booster.predict(xgboost.DMatrix(sessions, feature_names=list(FEATURE_NAMES)))

    risks = scorer.predict_proba(sessions)

    assert risks.shape == (len(sessions),)
    assert risks.dtype == np.float64
    assert np.all((risks >= 0) & (risks <= 1))
    np.testing.assert_allclose(risks, expected, rtol=1e-6)


def test_batch_and_single_predictions_agree(scorer: Scorer, sessions: np.ndarray) -> None:
    batch = scorer.predict_proba(sessions)

    one_by_one = [scorer.predict_proba_one(row.tolist()) for row in sessions]

    assert all(isinstance(risk, float) for risk in one_by_one)
    np.testing.assert_allclose(one_by_one, batch, rtol=1e-6)


def test_float64_rows_score_like_float32_rows(scorer: Scorer, sessions: np.ndarray) -> None:
    np.testing.assert_allclose(
        scorer.predict_proba(sessions.astype(np.float64)), scorer.predict_proba(sessions), rtol=1e-6
    )


def test_risk_grows_with_views_since_add(scorer: Scorer) -> None:
    calm, comparing = np.full((2, len(FEATURE_NAMES)), 10.0, dtype=np.float32)
    calm[VIEWS_SINCE_ADD], comparing[VIEWS_SINCE_ADD] = 1.0, 19.0

    assert scorer.predict_proba_one(comparing.tolist()) > scorer.predict_proba_one(calm.tolist())


def test_an_empty_batch_gives_no_predictions_and_no_reasons(scorer: Scorer) -> None:
    empty = np.empty((0, len(FEATURE_NAMES)), dtype=np.float32)

    assert scorer.predict_proba(empty).shape == (0,)
    assert scorer.reasons(empty) == []


@pytest.mark.parametrize("shape", [(3, len(FEATURE_NAMES) - 1), (len(FEATURE_NAMES),)])
def test_it_refuses_rows_of_the_wrong_width(scorer: Scorer, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="FEATURE_NAMES order"):
        scorer.predict_proba(np.zeros(shape, dtype=np.float32))
    with pytest.raises(ValueError, match="FEATURE_NAMES order"):
        scorer.reasons(np.zeros(shape, dtype=np.float32))


def test_it_scores_on_one_thread(scorer: Scorer) -> None:
    config = json.loads(scorer.booster.save_config())

    assert config["learner"]["generic_param"]["nthread"] == "1"
    assert scorer.label == "cart-risk@3"


# --- reasons ---------------------------------------------------------------------------------


def test_reasons_are_the_top_features_by_absolute_contribution(
    scorer: Scorer, sessions: np.ndarray
) -> None:
    all_reasons = scorer.reasons(sessions, top=len(FEATURE_NAMES))
    top_three = scorer.reasons(sessions)

    assert len(top_three) == len(sessions)
    for row, everything, top in zip(sessions, all_reasons, top_three, strict=True):
        sizes = [abs(reason.contribution) for reason in everything]
        assert sizes == sorted(sizes, reverse=True)
        assert top == everything[:3]
        for reason in everything:
            assert isinstance(reason, Reason)
            assert reason.contribution != 0
            assert reason.value == float(row[FEATURE_NAMES.index(reason.feature)])


def test_the_strongest_reason_to_worry_is_comparing(scorer: Scorer) -> None:
    comparing = np.full((1, len(FEATURE_NAMES)), 10.0, dtype=np.float32)
    comparing[0, VIEWS_SINCE_ADD] = 19.0

    [[first, *_]] = scorer.reasons(comparing)

    assert first.feature == "views_since_add"
    assert first.value == 19.0
    assert first.contribution > 0  # log-odds: it raises the risk


def test_contributions_and_bias_sum_to_the_margin(
    scorer: Scorer, booster: xgboost.Booster, sessions: np.ndarray
) -> None:
    margins = booster.predict(
        xgboost.DMatrix(sessions, feature_names=list(FEATURE_NAMES)), output_margin=True
    )
    contributions = scorer.contributions(sessions)
    bias = contributions[:, -1]

    np.testing.assert_allclose(contributions.sum(axis=1), margins, rtol=1e-5, atol=1e-5)
    for i, reasons in enumerate(scorer.reasons(sessions, top=len(FEATURE_NAMES))):
        total = sum(reason.contribution for reason in reasons) + float(bias[i])
        assert total == pytest.approx(float(margins[i]), abs=1e-4)
        assert 1 / (1 + np.exp(-total)) == pytest.approx(
            scorer.predict_proba(sessions[i : i + 1])[0]
        )


# --- refusals --------------------------------------------------------------------------------


def test_it_refuses_a_pickle_without_unpickling_it(booster: xgboost.Booster) -> None:
    with pytest.raises(ModelError, match=r"pickle.*JSON or UBJSON only.*pickles are refused"):
        load_model(pickle.dumps(booster), label="x")


def test_it_refuses_random_bytes() -> None:
    noise = random.Random(1).randbytes(4096)

    with pytest.raises(ModelError, match="not an XGBoost model"):
        load_model(noise, label="x")


def test_it_refuses_an_empty_file() -> None:
    with pytest.raises(ModelError, match="empty"):
        load_model(b"", label="x")


def test_it_refuses_a_zip() -> None:
    with pytest.raises(ModelError, match="zip"):
        sniff_format(b"PK\x03\x04" + bytes(100))


@pytest.mark.parametrize(
    "text", [b'{"hello": "world"}', b"{}", b'{"learner": {}}', b'{"learner": [1, 2]', b"[1, 2]"]
)
def test_it_refuses_json_that_is_not_a_model(text: bytes) -> None:
    with pytest.raises(ModelError, match=r"not an XGBoost model|not valid JSON"):
        load_model(text, label="x")


def test_it_refuses_a_regression_model() -> None:
    regression = bytes(train(objective="reg:squarederror").save_raw("ubj"))

    with pytest.raises(ModelError, match="'reg:squarederror': it is a regression model"):
        load_model(regression, label="x")


def test_it_refuses_a_model_that_outputs_log_odds() -> None:
    raw = bytes(train(objective="binary:logitraw").save_raw("json"))

    with pytest.raises(ModelError, match="log-odds rather than probabilities"):
        load_model(raw, label="x")


def test_it_refuses_a_model_trained_on_other_features() -> None:
    names = [*FEATURE_NAMES[:-1], "weather"]
    raw = bytes(train(names=names).save_raw("ubj"))

    with pytest.raises(ModelError, match="missing: hour_of_day; unexpected: weather"):
        load_model(raw, label="x")


def test_it_refuses_features_in_another_order() -> None:
    names = list(FEATURE_NAMES)
    names[0], names[1] = names[1], names[0]
    raw = bytes(train(names=names).save_raw("json"))

    with pytest.raises(ModelError, match="out of order: position 1 holds 'cart_lines'"):
        load_model(raw, label="x")


def test_it_refuses_a_model_without_feature_names(json_model: bytes) -> None:
    def forget_names(document: dict[str, Any]) -> None:
        document["learner"]["feature_names"] = []

    with pytest.raises(ModelError, match="has no feature names"):
        load_model(edited(json_model, forget_names), label="x")


# XGBoost does not check these, and would crash the process (or loop forever) on them.
def point_a_child_outside_the_tree(document: dict[str, Any]) -> None:
    first_tree(document)["left_children"][0] = 10**6


def split_on_a_missing_feature(document: dict[str, Any]) -> None:
    first_tree(document)["split_indices"][0] = 10**6


def make_a_cycle(document: dict[str, Any]) -> None:
    tree = first_tree(document)
    child = tree["left_children"][0]
    tree["left_children"][child] = tree["right_children"][child] = 0


def add_to_a_second_output(document: dict[str, Any]) -> None:
    document["learner"]["gradient_booster"]["model"]["tree_info"][0] = 5


def give_leaves_vectors(document: dict[str, Any]) -> None:
    first_tree(document)["tree_param"]["size_leaf_vector"] = "5"


@pytest.mark.parametrize(
    "damage",
    [
        point_a_child_outside_the_tree,
        split_on_a_missing_feature,
        make_a_cycle,
        add_to_a_second_output,
        give_leaves_vectors,
    ],
)
def test_it_refuses_a_damaged_tree_before_xgboost_sees_it(json_model: bytes, damage) -> None:
    with pytest.raises(ModelError):
        load_model(edited(json_model, damage), label="x")


def test_it_refuses_a_json_model_with_a_repeated_key(json_model: bytes) -> None:
    # Python would read the second "learner", XGBoost the first: they must not disagree.
    doubled = json_model.rstrip()[:-1] + b', "learner": {}}'

    with pytest.raises(ModelError, match="twice"):
        load_model(doubled, label="x")


def test_it_refuses_ubjson_that_announces_more_bytes_than_it_has() -> None:
    # A key claiming to be 1 GiB long: XGBoost would read past the end of the buffer.
    lying = b"{L" + (2**30).to_bytes(8, "big") + b"learner"

    with pytest.raises(ModelError, match="damaged or truncated"):
        load_model(lying, label="x")


def test_every_truncation_of_a_ubjson_model_is_refused(ubj_model: bytes) -> None:
    for cut in [1, 2, 9, 10, *range(11, len(ubj_model), max(1, len(ubj_model) // 60))]:
        with pytest.raises(ModelError):
            load_model(ubj_model[:cut], label="x")


def test_damaged_models_are_refused_or_still_score(ubj_model: bytes, json_model: bytes) -> None:
    # Random damage never gets past the checks into a crash: a file loads and scores, or is refused.
    rng = random.Random(3)
    rows = np.ones((2, len(FEATURE_NAMES)), dtype=np.float32)
    for model in (ubj_model, json_model):
        for _ in range(150):
            damaged = bytearray(model)
            for _ in range(rng.randint(1, 3)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            try:
                scorer = load_model(bytes(damaged), label="x")
            except ModelError:
                continue
            assert scorer.predict_proba(rows).shape == (2,)
            scorer.reasons(rows)


def test_what_xgboost_itself_refuses_becomes_a_model_error(json_model: bytes) -> None:
    def miscount_trees(document: dict[str, Any]) -> None:
        document["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] = "99"

    with pytest.raises(ModelError, match=r"XGBoost could not load the model: Check failed"):
        load_model(edited(json_model, miscount_trees), label="x")
