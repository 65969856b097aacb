"""The uplift model in the registry: stored, versioned, activated, watched and trained."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from offers.models import Decision, OfferRule, ScoringModel
from offers.registry import RegistryWatcher
from offers.rulebook import RuleBook
from offers.services import model_activate, uplift_model_activate, uplift_model_create
from offers.uplift_training import recorded_randomised
from streaming.budget import Budget
from streaming.decider import ModelSlot
from streaming.features import FEATURE_NAMES
from streaming.generator import generate_sessions
from streaming.policy import Outcome, Targeting
from streaming.uplift_model import envelope
from streaming.uplift_training import randomised_from_generated, train_t_learner
from tests.factories import T0, stored_model

pytestmark = pytest.mark.django_db(transaction=True)


@cache
def small_uplift_artifact(seed: int = 0) -> bytes:
    data = randomised_from_generated(
        generate_sessions(1200, seed=seed), pause_seconds=30.0, seed=seed
    )
    model = train_t_learner(data, seed=seed)
    return envelope(model.treated, model.control)


def stored_uplift(seed: int = 0) -> ScoringModel:
    return uplift_model_create(artifact=small_uplift_artifact(seed), metrics={"qini": 0.2})


def test_uplift_models_are_versioned_on_their_own_beside_the_risk_models():
    risk = stored_model(1)
    first, second = stored_uplift(), stored_uplift()
    assert (first.label, second.label) == ("uplift@1", "uplift@2")
    assert first.kind == ScoringModel.Kind.UPLIFT and first.artifact_format == "json"
    # what every page and command calls "the models" are the cart-risk ones
    assert list(ScoringModel.objects.all()) == [risk]
    assert list(ScoringModel.uplift_models.all()) == [second, first]
    assert ScoringModel.every_kind.count() == 3


def test_activating_an_uplift_model_retires_the_last_one_and_leaves_the_risk_model_alone():
    risk = model_activate(model=stored_model(1))
    first = uplift_model_activate(model=stored_uplift())
    second = uplift_model_activate(model=stored_uplift())
    first.refresh_from_db()
    risk.refresh_from_db()
    assert (first.state, second.state, risk.state) == ("retired", "active", "active")
    assert ScoringModel.objects.filter(state="active").get() == risk
    with pytest.raises(ValueError, match="not an uplift model"):
        uplift_model_activate(model=risk)


async def test_the_watcher_loads_the_active_uplift_model_and_swaps_it_without_a_restart():
    from asgiref.sync import sync_to_async

    slot = ModelSlot()
    watcher = RegistryWatcher(slot, every=1.0)
    first = await sync_to_async(stored_uplift)()
    await sync_to_async(uplift_model_activate)(model=first)
    assert await watcher.step(T0) is True
    assert slot.uplift is not None and slot.uplift.label == "uplift@1"
    assert slot.active is None  # no risk model: the uplift model is not one
    p_offer, p_none = slot.uplift.predict_one([0.0] * len(FEATURE_NAMES))
    assert 0 <= p_offer <= 1 and 0 <= p_none <= 1
    second = await sync_to_async(stored_uplift)(1)
    await sync_to_async(uplift_model_activate)(model=second)
    assert await watcher.step(T0 + 1) is True
    assert slot.uplift.label == "uplift@2"


async def test_an_uplift_model_that_cannot_load_is_refused_and_the_last_good_one_kept():
    from asgiref.sync import sync_to_async

    slot = ModelSlot()
    watcher = RegistryWatcher(slot)
    good = await sync_to_async(stored_uplift)()
    await sync_to_async(uplift_model_activate)(model=good)
    await watcher.step(T0)
    broken = await sync_to_async(uplift_model_create)(artifact=b"\x80\x04pickle", metrics={})
    # made active behind the service's back, which would have tried it first
    await ScoringModel.every_kind.filter(pk=good.pk).aupdate(state="retired")
    await ScoringModel.every_kind.filter(pk=broken.pk).aupdate(state="active")
    assert await watcher.step(T0 + 1) is False
    assert slot.uplift is not None and slot.uplift.label == "uplift@1"
    assert broken.pk in watcher.failing


async def test_the_rule_book_loads_each_rule_s_targeting_and_each_site_s_margin(demo_site):
    from asgiref.sync import sync_to_async

    def setup() -> None:
        demo_site.gross_margin_percent = Decimal("42.50")
        demo_site.save()
        OfferRule.objects.create(
            site=demo_site,
            min_risk=0.0,
            discount_percent=10,
            title="u",
            message="u",
            targeting=Targeting.UPLIFT,
        )
        OfferRule.objects.create(min_risk=0.6, discount_percent=10, title="r", message="r")

    await sync_to_async(setup)()
    book = RuleBook(Budget())
    await book.step(T0)
    assert [(r.title, r.targeting) for r in book.rules()] == [
        ("u", Targeting.UPLIFT),
        ("r", Targeting.RISK),
    ]
    assert book.margins() == {"demo": pytest.approx(0.425)}


def test_a_site_s_margin_is_30_percent_unless_told(demo_site):
    assert demo_site.gross_margin_percent == 30
    assert demo_site.gross_margin == pytest.approx(0.30)


def test_recorded_offers_and_holdouts_of_known_outcome_are_the_randomised_decisions(demo_site):
    features = dict.fromkeys(FEATURE_NAMES, 1.0)
    old = timezone.now() - timedelta(hours=2)
    rows = [
        (Outcome.OFFER, old, old + timedelta(minutes=5)),
        (Outcome.HOLDOUT, old, None),
        (Outcome.HOLDOUT, old, old + timedelta(hours=1)),  # bought after the window
        (Outcome.NO_OFFER, old, None),  # not randomised
        (Outcome.OFFER, timezone.now(), None),  # outcome not known yet
    ]
    for i, (outcome, at, converted_at) in enumerate(rows):
        Decision.objects.create(
            site=demo_site,
            session=f"s-{i}",
            pause_key=f"s-{i}:1",
            at=at,
            outcome=outcome,
            features=features,
            cart_value=Decimal("80.00"),
            converted_at=converted_at,
        )
    data = recorded_randomised()
    assert data.offered.tolist() == [True, False, False]
    assert data.bought.tolist() == [True, False, False]
    assert data.cart.tolist() == [80.0, 80.0, 80.0]


@pytest.mark.slow
def test_train_model_uplift_trains_on_generated_shoppers_and_activates_a_model_that_ranks():
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "train_model", "--uplift", "--sessions", "3000", "--activate", stdout=out, stderr=err
    )
    model = ScoringModel.uplift_models.get()
    assert model.state == "active" and model.label == "uplift@1"
    assert model.metrics["qini"] > 0 and model.metrics["learner"] == "t"
    assert "training on generated shoppers" in out.getvalue()
    assert not ScoringModel.objects.exists()


def test_train_model_uplift_activate_keeps_a_model_that_ranks_no_better_than_chance(demo_site):
    """Recorded decisions that tell offered shoppers from held-out ones by nothing: the model
    ranks them all alike (Qini 0), the gate keeps it a candidate and says so in its timeline."""
    features = dict.fromkeys(FEATURE_NAMES, 1.0)
    old = timezone.now() - timedelta(hours=2)
    Decision.objects.bulk_create(
        Decision(
            site=demo_site,
            session=f"s-{i}",
            pause_key=f"s-{i}:1",
            at=old,
            outcome=Outcome.OFFER if i % 2 else Outcome.HOLDOUT,
            features=features,
            cart_value=Decimal("80.00"),
            converted_at=old if i % 5 < 2 else None,
        )
        for i in range(1200)
    )
    with pytest.raises(CommandError, match="no better than offering at random") as refused:
        call_command("train_model", "--uplift", "--activate", stdout=io.StringIO())
    assert refused.value.returncode == 3
    assert "kept as a candidate" in str(refused.value)
    model = ScoringModel.uplift_models.get()
    assert model.state == "candidate" and model.metrics["qini"] == 0.0
    event = model.events.get(action="refused")
    assert "1,200" not in event.note and "360 held-out randomised decisions" in event.note


def test_train_model_uplift_refuses_shadow():
    with pytest.raises(CommandError, match="no --shadow"):
        call_command("train_model", "--uplift", "--shadow", stdout=io.StringIO())


def test_evaluate_policies_writes_the_contract_s_json_and_a_qini_curve(tmp_path: Path):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "evaluate_policies",
        "--shoppers",
        "1500",
        "--train-sessions",
        "1500",
        "--uplift-sessions",
        "4000",
        "--json",
        str(tmp_path / "policies.json"),
        "--qini",
        str(tmp_path / "qini.svg"),
        stdout=out,
        stderr=err,
    )
    document = json.loads((tmp_path / "policies.json").read_text())
    assert set(document) == {"policies", "qini"}
    assert [p["policy"] for p in document["policies"]] == ["none", "offer_all", "risk", "uplift"]
    for policy in document["policies"]:
        assert set(policy) == {
            "policy",
            "incremental_buyers_per_1000",
            "discount_per_1000",
            "net_incremental_revenue_per_1000",
        }
    none, offer_all = document["policies"][0], document["policies"][1]
    assert none["incremental_buyers_per_1000"] == none["discount_per_1000"] == 0
    assert offer_all["incremental_buyers_per_1000"] > 0 and offer_all["discount_per_1000"] > 0
    assert document["qini"] > 0
    assert (tmp_path / "qini.svg").read_text().startswith("<svg")
    assert "Qini coefficient" in out.getvalue()
    assert "evaluate_policies: done" in err.getvalue()
