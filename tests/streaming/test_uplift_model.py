"""The uplift model: trained, stored as an envelope, loaded and scored; the Qini curve."""

from __future__ import annotations

import base64
import json
import pickle

import numpy as np
import pytest

from streaming.features import FEATURE_NAMES
from streaming.generator import generate_sessions
from streaming.model_file import ModelError
from streaming.uplift_model import booster_files, envelope, load_uplift_model
from streaming.uplift_training import (
    Randomised,
    compare_learners,
    qini,
    randomised_from_generated,
    split_randomised,
    train_t_learner,
)


@pytest.fixture(scope="module")
def randomised() -> Randomised:
    return randomised_from_generated(generate_sessions(3000, seed=4), pause_seconds=30.0, seed=4)


def test_randomised_decisions_are_first_pauses_half_offered(randomised):
    assert randomised.X.shape == (len(randomised), len(FEATURE_NAMES))
    assert 0.45 < randomised.offered.mean() < 0.55
    # offers raise buying: generated shoppers include persuadables
    assert (
        randomised.bought[randomised.offered].mean() > randomised.bought[~randomised.offered].mean()
    )
    assert randomised.both_arms()


def test_an_uplift_model_round_trips_through_its_envelope(randomised):
    model = train_t_learner(randomised, seed=0)
    raw = envelope(model.treated, model.control)
    document = json.loads(raw)
    assert document["uplift_model"] == 1 and document["learner"] == "t"
    loaded = load_uplift_model(raw, label="uplift@1")
    p_offer, p_none = loaded.predict(randomised.X[:50])
    want_offer, want_none = model.predict(randomised.X[:50])
    np.testing.assert_allclose(p_offer, want_offer, rtol=1e-6)
    np.testing.assert_allclose(p_none, want_none, rtol=1e-6)
    one = loaded.predict_one(randomised.X[0].tolist())
    assert one == pytest.approx((float(p_offer[0]), float(p_none[0])))
    assert loaded.label == "uplift@1"


def _document(randomised: Randomised) -> dict[str, object]:
    model = train_t_learner(randomised, seed=0)
    loaded: dict[str, object] = json.loads(envelope(model.treated, model.control))
    return loaded


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"uplift_model": 2}, "Not an uplift model envelope"),
        ({"learner": "s"}, "Only a two-booster"),
        ({"feature_names": ["cart_value"]}, "other features"),
        ({"control": "not base64!"}, "not base64"),
        ({"treated": None}, "no treated booster"),
        ({"control": base64.b64encode(b"{not a model").decode()}, "not an XGBoost model"),
    ],
)
def test_an_envelope_that_is_not_right_is_refused_with_words(randomised, change, message):
    document = _document(randomised) | change
    with pytest.raises(ModelError, match=message):
        load_uplift_model(json.dumps(document).encode(), label="uplift@9")


def test_a_pickle_is_never_an_uplift_model(randomised):
    model = train_t_learner(randomised, seed=0)
    with pytest.raises(ModelError, match="not JSON"):
        load_uplift_model(pickle.dumps(model.treated), label="uplift@9")
    treated, control = booster_files(envelope(model.treated, model.control))
    assert treated[:1] == b"{" and control[:1] == b"{"  # UBJSON documents, as saved


def test_the_model_ranks_held_out_decisions_better_than_chance(randomised):
    train, test = split_randomised(randomised, test_fraction=0.3, seed=0)
    model = train_t_learner(randomised.take(train), seed=0)
    held = randomised.take(test)
    p_offer, p_none = model.predict(held.X)
    assert qini(held.bought, p_offer - p_none, held.offered).coefficient > 0.05


def test_the_qini_coefficient_is_one_for_the_perfect_ranking_and_about_zero_at_random():
    rng = np.random.default_rng(0)
    n = 4000
    offered = rng.random(n) < 0.5
    persuadable = rng.random(n) < 0.3
    bought = offered & persuadable
    perfect = bought.astype(float) - (~offered & bought).astype(float)
    assert qini(bought, perfect, offered).coefficient == pytest.approx(1.0)
    # the true uplift ranks as well as can be hoped; a random one, about as well as chance
    assert qini(bought, persuadable.astype(float), offered).coefficient > 0.6
    assert abs(qini(bought, rng.random(n), offered).coefficient) < 0.1
    assert qini(bought, -persuadable.astype(float), offered).coefficient < 0


def test_the_qini_curve_starts_at_zero_and_ends_at_the_incremental_buyers():
    offered = np.array([True, True, False, False])
    bought = np.array([True, False, False, True])
    curve = qini(bought, np.array([0.9, 0.1, 0.5, 0.2]), offered)
    assert curve.x[0] == 0 and curve.model[0] == 0
    # all sessions: 1 offered buyer, 1 held-out buyer among as many: 0 incremental
    assert curve.x[-1] == 4 and curve.model[-1] == pytest.approx(0.0)
    drawn = curve.as_json(points=5)
    assert drawn["sessions"] == 4 and len(drawn["model"]) == 5  # type: ignore[arg-type]


def test_both_learners_are_measured_on_the_same_splits(randomised):
    results = compare_learners(randomised, seeds=[0])
    assert [r.learner for r in results] == ["t", "s"]
    assert all(r.qini > 0 for r in results)
