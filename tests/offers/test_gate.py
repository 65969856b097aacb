from __future__ import annotations

import datetime
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from offers.models import ModelEvent, ScoringModel
from offers.services import model_activate, model_rollback, model_shadow
from tests.factories import stored_model
from tests.offers.outcomes import record_outcomes

pytestmark = pytest.mark.django_db

SMALL = ["--sessions", "400"]
WEAK = [*SMALL, "--rounds", "1", "--max-depth", "1"]
GOOD = [*SMALL, "--rounds", "40"]
Action = ModelEvent.Action


def train(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("train_model", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def events(model: ScoringModel) -> list[tuple[str, str]]:
    """(action, previous) of the model's timeline, oldest first."""
    return [(e.action, e.previous) for e in model.events.order_by("at", "id")]


def active() -> ScoringModel:
    return ScoringModel.objects.get(state=ScoringModel.State.ACTIVE)


@pytest.fixture
def good_active() -> ScoringModel:
    train(*GOOD, "--activate")
    return active()


def test_with_no_active_model_the_new_one_is_activated_without_a_gate():
    out, _ = train(*WEAK, "--activate")
    model = active()
    assert "gate" not in out and f"{model.label} (active)" in out
    assert events(model) == [(Action.CREATED, ""), (Action.ACTIVATED, "")]


def test_the_gate_refuses_a_weak_model_and_keeps_the_active_one(good_active):
    with pytest.raises(CommandError) as refused:
        train(*WEAK, "--activate")
    assert refused.value.returncode == 3
    weak = ScoringModel.objects.get(version=2)
    assert weak.state == ScoringModel.State.CANDIDATE and weak.activated_at is None
    assert active() == good_active
    assert "cart-risk@2 is kept as a candidate: against cart-risk@1" in str(refused.value)
    assert "--force activates it anyway" in str(refused.value)
    assert events(weak) == [(Action.CREATED, ""), (Action.REFUSED, "cart-risk@1")]
    note = weak.events.get(action=Action.REFUSED).note
    assert "held-out generated pauses" in note and "cart-risk@1: ROC-AUC" in note


@pytest.mark.usefixtures("good_active")
def test_the_refusal_prints_both_models_figures():
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("train_model", *WEAK, "--activate", stdout=out, stderr=io.StringIO())
    printed = out.getvalue()
    assert "gate: cart-risk@2 against cart-risk@1 on " in printed
    assert "held-out generated pauses" in printed
    table = [line.split() for line in printed.splitlines() if line.startswith("  cart-risk@")]
    assert [row[0] for row in table] == ["cart-risk@2", "cart-risk@1"]
    assert "ROC-AUC" in printed and "log-loss" in printed
    assert "gate: refused (" in printed
    assert "cart-risk@2 (candidate)" in printed


def test_force_activates_past_the_gate(good_active):
    out, _ = train(*WEAK, "--activate", "--force")
    weak = active()
    assert weak.version == 2 and "gate: not applied (--force)" in out
    assert events(weak) == [(Action.CREATED, ""), (Action.ACTIVATED, good_active.label)]
    assert events(good_active)[-1] == (Action.RETIRED, "")
    good_active.refresh_from_db()
    assert good_active.state == ScoringModel.State.RETIRED


def test_a_model_as_good_passes_the_gate(good_active):
    out, _ = train(*GOOD, "--seed", "3", "--activate")
    assert active().version == 2 and "gate: passed" in out
    assert ScoringModel.objects.get(version=2).events.get(action=Action.ACTIVATED).previous == (
        good_active.label
    )


def test_shadow_puts_the_new_model_in_shadow_with_no_gate(good_active):
    out, _ = train(*WEAK, "--shadow")
    weak = ScoringModel.objects.get(version=2)
    assert weak.state == ScoringModel.State.SHADOW and "gate" not in out
    assert active() == good_active
    assert events(weak) == [(Action.CREATED, ""), (Action.SHADOWED, "")]
    train(*WEAK, "--shadow")
    weak.refresh_from_db()
    assert weak.state == ScoringModel.State.RETIRED
    assert events(weak)[-1] == (Action.UNSHADOWED, "")
    assert events(ScoringModel.objects.get(version=3))[-1] == (Action.SHADOWED, weak.label)


def test_shadow_and_activate_do_not_go_together():
    with pytest.raises(CommandError, match="not both"):
        train(*WEAK, "--shadow", "--activate")
    assert not ScoringModel.objects.exists()


@pytest.mark.usefixtures("good_active")
def test_on_recorded_decisions_the_gate_holds_out_the_most_recent(demo_site):
    record_outcomes(demo_site, 250)
    train("--min-recorded", "200", "--rounds", "40", "--activate", "--force")
    model = ScoringModel.objects.get(version=2)
    assert model.metrics["n_test"] == 50 and model.metrics["n_train"] == 200
    out, _ = train("--min-recorded", "200", "--rounds", "40", "--seed", "1", "--activate")
    assert "on the 50 most recent recorded decisions" in out


def test_the_trained_model_keeps_a_reference_of_its_training_data():
    train(*WEAK)
    reference = ScoringModel.objects.get().reference
    assert reference["rows"] > 0
    assert reference["features"]["checkout_started"]["kind"] == "values"
    assert len(reference["score"]["shares"]) == len(reference["score"]["edges"]) + 1


# --- the registry's timeline ---------------------------------------------------------------------


def test_every_registry_change_is_on_the_models_timeline():
    first, second = stored_model(1), stored_model(2)
    model_activate(model=first, user="olga")
    model_activate(model=second)
    model_shadow(model=first, user="olga")
    model_shadow(model=None)
    model_rollback()
    assert events(first) == [
        (Action.CREATED, ""),
        (Action.ACTIVATED, ""),
        (Action.RETIRED, ""),
        (Action.SHADOWED, ""),
        (Action.UNSHADOWED, ""),
        (Action.ROLLED_BACK, second.label),
    ]
    assert events(second) == [
        (Action.CREATED, ""),
        (Action.ACTIVATED, first.label),
        (Action.RETIRED, ""),
    ]
    assert [e.user for e in first.events.order_by("at", "id")][:4] == ["", "olga", "", "olga"]
    assert first.events.get(action=Action.RETIRED).note == f"replaced by {second.label}"


def test_activated_at_is_the_latest_activation_and_the_timeline_keeps_the_rest():
    first, second = stored_model(1), stored_model(2)
    model_activate(model=first)
    first.refresh_from_db()
    activated = first.activated_at
    assert activated is not None
    ScoringModel.objects.filter(pk=first.pk).update(
        activated_at=activated - datetime.timedelta(hours=1)
    )
    model_activate(model=second)
    model_rollback()
    first.refresh_from_db()
    assert first.activated_at is not None and first.activated_at > activated
    assert first.events.filter(action__in=[Action.ACTIVATED, Action.ROLLED_BACK]).count() == 2
