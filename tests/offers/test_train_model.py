from __future__ import annotations

import io
from datetime import timedelta

import pytest
import xgboost as xgb
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from offers.models import Decision, ScoringModel
from offers.training import train_default_model
from streaming.features import FEATURE_NAMES, as_dict, feature_row
from streaming.generator import generate_sessions
from streaming.policy import Outcome
from streaming.state import SessionState

pytestmark = pytest.mark.django_db

SMALL = ["--sessions", "400", "--rounds", "10"]


def train(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("train_model", *SMALL, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def recorded_features(count: int) -> list[dict[str, float]]:
    """Feature dicts as the worker stores them, from sessions replayed up to their last event."""
    rows = []
    for i, generated in enumerate(generate_sessions(count * 3, seed=9)):
        state = SessionState(f"s-{i}", "demo", started_at=0.0, last_seen=0.0, last_activity=0.0)
        for now, event in generated.timed_events(0.0):
            state.apply(event, now)
        if state.cart:
            rows.append(as_dict(feature_row(state, now=state.last_activity + 30.0)))
    return rows[:count]


def record_decisions(site, count: int, *, age: timedelta, outcome: str = Outcome.NO_OFFER):
    at = timezone.now() - age
    decisions = [
        Decision(
            site=site,
            session=f"s-{i}",
            pause_key=f"{outcome}-{age}-s-{i}:1",
            at=at,
            features=features,
            outcome=outcome,
            # Sessions that got as far as checkout bought, so the labels mean something.
            converted_at=at if features["checkout_started"] else None,
        )
        for i, features in enumerate(recorded_features(count))
    ]
    Decision.objects.bulk_create(decisions)


def test_it_stores_a_candidate_trained_on_generated_sessions():
    out, err = train()
    model = ScoringModel.objects.get()
    assert model.label == "cart-risk@1"
    assert model.state == ScoringModel.State.CANDIDATE
    assert model.artifact_format == "ubj"
    assert model.feature_names == list(FEATURE_NAMES)
    assert model.notes.startswith("trained on 400 generated sessions")
    assert model.pause_seconds == settings.PAUSE_SECONDS  # the pause it learnt
    assert "cart-risk@1" in out and "auc" in out and "n_test" in out
    assert "generating: 100%" in err and "replaying: 100%" in err and "training rounds" in err


def test_the_stored_booster_loads_with_its_feature_names():
    train("--format", "json")
    model = ScoringModel.objects.get()
    assert model.artifact_format == "json"
    booster = xgb.Booster()
    booster.load_model(bytearray(model.artifact))
    assert booster.feature_names == list(FEATURE_NAMES)


def test_activate_makes_the_new_version_the_only_active_one():
    train()
    out, _ = train("--activate")
    first, second = ScoringModel.objects.get(version=1), ScoringModel.objects.get(version=2)
    assert second.state == ScoringModel.State.ACTIVE and second.activated_at is not None
    assert first.state != ScoringModel.State.ACTIVE
    assert "cart-risk@2 (active)" in out


def test_with_enough_recorded_decisions_it_trains_on_them(demo_site):
    record_decisions(demo_site, 120, age=timedelta(hours=2))
    out, _ = train("--min-recorded", "100")
    model = ScoringModel.objects.get()
    assert "training on 120 recorded decisions" in out
    assert model.notes == "trained on 120 recorded decisions"
    assert model.metrics["n_train"] + model.metrics["n_test"] == 120


def test_recent_decisions_and_offers_made_are_not_trained_on(demo_site):
    record_decisions(demo_site, 120, age=timedelta(minutes=5))
    record_decisions(demo_site, 120, age=timedelta(hours=2), outcome=Outcome.OFFER)
    out, _ = train("--min-recorded", "100")
    assert "0 usable recorded decisions" in out
    assert "training on 400 generated sessions" in out


def test_the_default_model_can_be_trained_and_activated_in_one_call():
    out = io.StringIO()
    model = train_default_model(activate=True, stdout=out, sessions=300)
    assert model.state == ScoringModel.State.ACTIVE
    assert f"{model.label} (active)" in out.getvalue()


@pytest.mark.parametrize(("option", "value"), [("--max-depth", "65"), ("--rounds", "2001")])
def test_a_model_past_the_limits_is_refused_before_it_is_trained(option: str, value: str):
    with pytest.raises(CommandError, match="at most"):
        call_command("train_model", option, value)
    assert not ScoringModel.objects.exists()
