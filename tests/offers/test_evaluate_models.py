from __future__ import annotations

import datetime
import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from offers import evaluation
from offers.evaluation import compare_models, default_models, feature_importance, known_outcomes
from offers.models import Decision, ScoringModel
from streaming.evaluation import figures
from streaming.features import FEATURE_NAMES
from streaming.policy import Outcome
from streaming.scoring import load_model
from tests.factories import stored_model
from tests.offers.outcomes import record_outcomes, registered

pytestmark = pytest.mark.django_db

ACTIVE, SHADOW, CANDIDATE = (
    ScoringModel.State.ACTIVE,
    ScoringModel.State.SHADOW,
    ScoringModel.State.CANDIDATE,
)


def evaluate(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("evaluate_models", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def three_models():
    """A good active model, a poor shadow one and a factory candidate."""
    good = registered(rounds=30, state=ACTIVE)
    poor = registered(rounds=1, max_depth=1, state=SHADOW)
    candidate = stored_model()
    return good, poor, candidate


def test_only_no_offer_and_holdout_decisions_of_known_outcome_measure_a_model(demo_site):
    record_outcomes(demo_site, 30, key="a")
    record_outcomes(demo_site, 20, key="b", outcome=Outcome.HOLDOUT)
    record_outcomes(demo_site, 25, key="c", outcome=Outcome.OFFER)  # the offer changed it
    record_outcomes(demo_site, 15, key="d", age=datetime.timedelta(minutes=10))  # not yet known
    known = known_outcomes()
    assert known.n == 50
    assert known.X.shape == (50, len(FEATURE_NAMES))
    assert known.at == sorted(known.at)


def test_a_purchase_after_the_window_counts_as_abandoned(demo_site, settings):
    settings.OUTCOME_WINDOW_SECONDS = 600
    (bought, late, never) = record_outcomes(demo_site, 3, age=datetime.timedelta(hours=3))
    Decision.objects.filter(pk=bought.pk).update(
        converted_at=bought.at + datetime.timedelta(minutes=9)
    )
    Decision.objects.filter(pk=late.pk).update(
        converted_at=late.at + datetime.timedelta(minutes=11)
    )
    Decision.objects.filter(pk=never.pk).update(converted_at=None)
    assert known_outcomes().y.tolist() == [0.0, 1.0, 1.0]


def test_the_window_is_the_setting(demo_site, settings):
    record_outcomes(demo_site, 10, age=datetime.timedelta(minutes=20))
    assert known_outcomes().n == 0  # 30 minutes by default
    settings.OUTCOME_WINDOW_SECONDS = 600
    assert known_outcomes().n == 10


def test_it_prints_each_default_model_on_the_same_decisions(demo_site, three_models):
    good, poor, candidate = three_models
    record_outcomes(demo_site, 300)
    out, _ = evaluate()
    lines = out.splitlines()
    assert lines[0].startswith("300 decisions with a known outcome")
    assert lines[1].split() == [
        "model",
        "decisions",
        "buyers",
        "ROC-AUC",
        "PR-AUC",
        "log-loss",
        "Brier",
        "ECE",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert list(rows) == [good.label, poor.label, candidate.label]
    assert rows[good.label][1] == "(active)" and rows[poor.label][1] == "(shadow)"
    assert {row[2] for row in rows.values()} == {"300"}  # the same decisions for each
    assert float(rows[good.label][4]) > float(rows[poor.label][4])  # ranks better


def test_its_figures_are_those_of_the_models_on_the_stored_features(demo_site, three_models):
    good, _, _ = three_models
    record_outcomes(demo_site, 200)
    known = known_outcomes()
    risk = load_model(bytes(good.artifact), label=good.label).predict_proba(known.X)
    expected = figures(known.y, risk)
    (evaluation,) = compare_models([good]).models
    assert evaluation.figures == expected
    assert evaluation.roc[0] == (0.0, 0.0) and evaluation.roc[-1] == (1.0, 1.0)
    assert sum(rows for _, _, rows in evaluation.calibration) == 200


def test_json_has_every_figure_of_every_model(demo_site, three_models, tmp_path):
    good, poor, candidate = three_models
    record_outcomes(demo_site, 120)
    path = tmp_path / "figures.json"
    out, _ = evaluate("--json", str(path))
    document = json.loads(path.read_text())
    assert [m["model"] for m in document["models"]] == [good.label, poor.label, candidate.label]
    for model in document["models"]:
        assert set(model) == {
            "model",
            "n",
            "buyers",
            "roc_auc",
            "pr_auc",
            "log_loss",
            "brier",
            "ece",
        }
        assert model["n"] == 120 and 0 < model["roc_auc"] <= 1
    assert f"written to {path}" in out


def test_json_to_stdout_is_the_document_alone(demo_site, three_models):
    record_outcomes(demo_site, 60)
    out, _ = evaluate(three_models[0].label, "--json", "-")
    assert json.loads(out)["models"][0]["model"] == three_models[0].label


def test_models_are_named_by_label_or_version_and_since_limits_the_decisions(
    demo_site, three_models
):
    good, poor, _ = three_models
    record_outcomes(demo_site, 50, age=datetime.timedelta(days=3), key="old")
    record_outcomes(demo_site, 40, seed=6, key="new")
    since = (timezone.now() - datetime.timedelta(days=1)).isoformat()
    out, _ = evaluate(str(poor.version), good.label, "--since", since, "--json", "-")
    document = json.loads(out)
    assert [m["model"] for m in document["models"]] == [poor.label, good.label]
    assert {m["n"] for m in document["models"]} == {40}


def test_an_unknown_model_is_an_error():
    with pytest.raises(CommandError, match="no model 'cart-risk@9'"):
        evaluate("cart-risk@9")
    with pytest.raises(CommandError, match="no models to evaluate"):
        evaluate()


@pytest.mark.usefixtures("three_models")
def test_no_known_outcomes_leave_the_figures_unknown():
    out, _ = evaluate("--json", "-")
    assert {m["n"] for m in json.loads(out)["models"]} == {0}
    assert {m["roc_auc"] for m in json.loads(out)["models"]} == {None}
    table, _ = evaluate()
    assert table.startswith("0 decisions with a known outcome")


def test_large_sets_report_progress_on_stderr(demo_site, three_models, monkeypatch):
    monkeypatch.setattr(evaluation, "_CHUNK", 100)  # as if thousands
    record_outcomes(demo_site, 250, seed=7)
    _, err = evaluate(three_models[0].label)
    assert err.splitlines() == [
        "evaluate_models: reading decisions: 100/250",
        "evaluate_models: reading decisions: 200/250",
        "evaluate_models: reading decisions: 250/250",
        f"evaluate_models: scoring 250 decisions with {three_models[0].label}",
    ]


def test_default_models_are_the_active_the_shadow_and_the_latest_candidate(three_models):
    good, poor, candidate = three_models
    older = stored_model(seed=3)
    ScoringModel.objects.filter(pk=older.pk).update(version=0)
    assert default_models() == [good, poor, candidate]


def test_feature_importance_shares_sum_to_one(three_models):
    shares = feature_importance(three_models[0])
    assert set(shares) == set(FEATURE_NAMES)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert np.all(np.diff(list(shares.values())) <= 0)  # largest first
