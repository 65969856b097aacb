from __future__ import annotations

import datetime
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from offers.models import ModelEvent, ScoringModel
from offers.services import model_shadow
from tests.offers.outcomes import record_outcomes, registered

pytestmark = pytest.mark.django_db

ACTIVE, SHADOW = ScoringModel.State.ACTIVE, ScoringModel.State.SHADOW


def promote(*args: str) -> str:
    out = io.StringIO()
    call_command("promote_shadow", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def in_shadow_since(model: ScoringModel, ago: datetime.timedelta) -> None:
    """Put `model` in shadow, as if `ago`."""
    model_shadow(model=model)
    model.refresh_from_db()
    model.events.filter(action=ModelEvent.Action.SHADOWED).update(at=timezone.now() - ago)


@pytest.fixture
def poor_active_good_shadow():
    poor = registered(rounds=1, max_depth=1, state=ACTIVE)
    good = registered(rounds=30)
    in_shadow_since(good, datetime.timedelta(hours=5))
    return poor, good


def test_it_waits_for_enough_known_outcomes_since_the_shadow_began(
    demo_site, poor_active_good_shadow
):
    poor, good = poor_active_good_shadow
    record_outcomes(demo_site, 300, age=datetime.timedelta(hours=7), key="before")
    record_outcomes(demo_site, 40, seed=6, key="since")
    with pytest.raises(CommandError) as refused:
        promote()
    assert refused.value.returncode == 3
    assert str(refused.value).startswith(
        f"{good.label} stays in shadow: 40 known outcomes since it entered shadow at "
    )
    assert "500 needed to judge it" in str(refused.value)
    good.refresh_from_db()
    assert good.state == SHADOW
    assert ScoringModel.objects.get(state=ACTIVE) == poor


def test_it_promotes_a_shadow_that_does_better(demo_site, poor_active_good_shadow):
    poor, good = poor_active_good_shadow
    record_outcomes(demo_site, 300)
    out = promote("--min-outcomes", "200")
    assert out.startswith("300 known outcomes since it entered shadow at ")
    assert f"{good.label} promoted: it replaces {poor.label}" in out
    good.refresh_from_db()
    poor.refresh_from_db()
    assert good.state == ACTIVE and poor.state == ScoringModel.State.RETIRED
    promoted = good.events.get(action=ModelEvent.Action.PROMOTED)
    assert promoted.previous == poor.label and promoted.user == ""
    assert "on 300 known outcomes" in promoted.note


def test_it_keeps_a_shadow_that_does_worse_in_shadow(demo_site):
    good = registered(rounds=30, state=ACTIVE)
    poor = registered(rounds=1, max_depth=1)
    in_shadow_since(poor, datetime.timedelta(hours=5))
    record_outcomes(demo_site, 300)
    with pytest.raises(
        CommandError, match=f"{poor.label} stays in shadow: against {good.label}, "
    ) as refused:
        promote("--min-outcomes", "200")
    assert refused.value.returncode == 3
    poor.refresh_from_db()
    assert poor.state == SHADOW


def test_without_a_shadow_there_is_nothing_to_promote():
    registered(rounds=1, max_depth=1, state=ACTIVE)
    with pytest.raises(CommandError, match="no model is in shadow") as refused:
        promote()
    assert refused.value.returncode == 3


def test_the_outcomes_counted_are_those_since_its_latest_shadowing(
    demo_site, poor_active_good_shadow
):
    _, good = poor_active_good_shadow
    record_outcomes(demo_site, 300)
    # taken out of shadow and put back an hour ago: the decisions before count no more
    model_shadow(model=None)
    in_shadow_since(ScoringModel.objects.get(pk=good.pk), datetime.timedelta(hours=1))
    with pytest.raises(CommandError, match="0 known outcomes since it entered shadow"):
        promote("--min-outcomes", "200")
