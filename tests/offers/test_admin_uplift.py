"""The uplift models in the operator admin: listed with their held-out figures, activated behind
the Qini gate, rolled back, retired, never deleted while live, for staff alone."""

from __future__ import annotations

from functools import cache

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.test import Client

from offers.models import ModelEvent, ScoringModel
from offers.registry import RegistryWatcher
from offers.services import (
    model_activate,
    uplift_model_activate,
    uplift_model_create,
    uplift_model_refusal,
)
from streaming.decider import ModelSlot
from tests.factories import T0, small_model, stored_model

pytestmark = pytest.mark.django_db

UPLIFT_URL = "/admin/offers/upliftmodel/"
RISK_URL = "/admin/offers/scoringmodel/"


@cache
def two_boosters(seed: int = 0) -> bytes:
    """A real uplift envelope: two small boosters on the live features (what they learnt does
    not matter here, only that every worker can load them)."""
    import xgboost

    from streaming.uplift_model import envelope

    def booster(seed: int) -> xgboost.Booster:
        return xgboost.Booster(model_file=bytearray(small_model(seed=seed, rounds=3)))

    return envelope(booster(seed), booster(seed + 1))


def stored_uplift(*, qini: float | None = 0.052, seed: int = 0) -> ScoringModel:
    metrics: dict[str, object] = {"learner": "t", "n_train": 3_200, "n_test": 800}
    if qini is not None:
        metrics |= {"qini": qini, "uplift_top_30": 0.041}
    return uplift_model_create(artifact=two_boosters(seed), metrics=metrics, pause_seconds=30.0)


@pytest.fixture
def tried(monkeypatch) -> list[bytes]:
    """The boosters handed to the trial, which passes them without starting a process."""
    from streaming import model_trial

    files: list[bytes] = []
    monkeypatch.setattr(model_trial, "_passed", {})
    monkeypatch.setattr(model_trial, "_try_in_a_process", lambda raw, **_: files.append(raw))
    return files


@pytest.fixture
def operator(client: Client) -> Client:
    user = User.objects.create_user("olga", password="pw-for-tests", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_scoringmodel", "change_scoringmodel"])
    )
    client.force_login(user)
    return client


@pytest.fixture
def uplift_registry(tried):  # noqa: ARG001  # tried: trials pass without a process
    """A live uplift@1, a candidate uplift@2 that ranks, a candidate uplift@3 that does not,
    beside a live cart-risk@1."""
    risk = model_activate(model=stored_model(1))
    live = uplift_model_activate(model=stored_uplift(qini=0.031))
    good = stored_uplift(qini=0.052, seed=2)
    poor = stored_uplift(qini=-0.004, seed=4)
    return risk, live, good, poor


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def timeline(model: ScoringModel) -> list[tuple[str, str, str]]:
    return [(e.action, e.user, e.previous) for e in model.events.order_by("at", "id")]


def state_of(model: ScoringModel) -> str:
    return ScoringModel.every_kind.get(pk=model.pk).state


def test_the_uplift_list_shows_each_model_s_held_out_figures_and_marks_the_live_one(
    operator: Client, uplift_registry
):
    risk, live, _, _ = uplift_registry
    page = operator.get(UPLIFT_URL).content.decode()
    for label in ("uplift@1", "uplift@2", "uplift@3"):
        assert label in page
    assert "cart-risk@1" not in page  # the cart-risk models keep their own list
    assert "0.052" in page and "0.031" in page and "+0.041" in page
    assert "3,200 / 800" in page  # decisions trained on, held out
    assert 'title="the gate needs above 0">-0.004' in page  # below the gate, flagged
    assert page.count("data-live-uplift") == 1
    row = page[page.index(f"{UPLIFT_URL}{live.pk}/change/") :].split("</tr>")[0]
    assert "data-live-uplift" in row and "the rules that target by uplift use it" in row
    assert "uplift@" not in operator.get(RISK_URL).content.decode()
    assert operator.get(f"{RISK_URL}{live.pk}/change/").status_code == 302  # not a risk model
    assert operator.get(f"{UPLIFT_URL}{risk.pk}/change/").status_code == 302


def test_an_uplift_model_s_page_shows_its_figures_the_gate_and_its_timeline(
    operator: Client, uplift_registry
):
    _, live, good, _ = uplift_registry
    page = operator.get(f"{UPLIFT_URL}{good.pk}/change/").content.decode()
    assert "held-out Qini coefficient" in page and "0.0520" in page
    assert 'data-verdict="passed"' in page
    assert f"{UPLIFT_URL}{good.pk}/activate/" in page and f"{UPLIFT_URL}{good.pk}/retire/" in page
    assert "timeline" in page and "Created" in page
    live_page = operator.get(f"{UPLIFT_URL}{live.pk}/change/").content.decode()
    assert f"{UPLIFT_URL}{live.pk}/activate/" not in live_page
    assert f"{UPLIFT_URL}{live.pk}/retire/" not in live_page
    assert "Activated" in live_page  # its timeline


def test_activating_in_the_admin_swaps_the_live_uplift_model_without_a_restart(
    operator: Client, uplift_registry, tried
):
    _, live, good, _ = uplift_registry
    slot = ModelSlot()
    watcher = RegistryWatcher(slot)
    assert async_to_sync(watcher.step)(T0) is True
    assert slot.uplift is not None and slot.uplift.label == "uplift@1"
    action = operator.post(UPLIFT_URL, {"action": "activate", "_selected_action": [good.pk]})
    assert action["Location"] == f"{UPLIFT_URL}{good.pk}/activate/"
    confirm = operator.get(action["Location"])
    page = confirm.content.decode()
    assert "Activate uplift@2?" in page and "in place of uplift@1" in page
    assert 'data-verdict="passed"' in page and "data-force" not in page
    assert state_of(good) == "candidate"  # nothing changed yet
    tried.clear()
    response = operator.post(
        action["Location"],
        {"replacing": "uplift@1", "verdict": confirm.context["verdict"].text},
        follow=True,
    )
    assert "Activated uplift@2 in place of uplift@1" in " ".join(shown_messages(response))
    assert len(tried) == 2  # both boosters tried, as train_model --uplift --activate does
    assert (state_of(live), state_of(good)) == ("retired", "active")
    assert ScoringModel.objects.get(state="active").label == "cart-risk@1"  # left alone
    assert async_to_sync(watcher.step)(T0 + 1) is True
    assert slot.uplift.label == "uplift@2"
    assert timeline(good)[-1] == (ModelEvent.Action.ACTIVATED, "olga", "uplift@1")
    assert "may be activated" in good.events.get(action=ModelEvent.Action.ACTIVATED).note
    assert timeline(live)[-1][:2] == (ModelEvent.Action.RETIRED, "olga")
    shown = operator.get(f"{UPLIFT_URL}{good.pk}/history/").content.decode()
    assert "Activated: from uplift@1 to uplift@2" in shown


def test_the_qini_gate_refuses_an_uplift_model_that_ranks_no_better_than_chance(
    operator: Client, uplift_registry
):
    _, live, _, poor = uplift_registry
    url = f"{UPLIFT_URL}{poor.pk}/activate/"
    page = operator.get(url).content.decode()
    assert 'data-verdict="refused"' in page and "data-force" in page
    assert "Qini coefficient on 800 held-out randomised decisions is -0.004" in page
    refused = operator.post(url, {"replacing": "uplift@1"}, follow=True)
    said = " ".join(shown_messages(refused))
    assert "uplift@3 was not activated: " in said and "no better than offering at random" in said
    assert (state_of(live), state_of(poor)) == ("active", "candidate")
    assert timeline(poor)[-1] == (ModelEvent.Action.REFUSED, "olga", "uplift@1")
    forced = operator.post(url, {"replacing": "uplift@1", "force": "1"}, follow=True)
    assert "Activated uplift@3 in place of uplift@1" in " ".join(shown_messages(forced))
    assert (state_of(live), state_of(poor)) == ("retired", "active")
    assert "overruling the gate" in poor.events.get(action=ModelEvent.Action.ACTIVATED).note


def test_an_uplift_model_without_a_held_out_qini_is_refused_too(tried):  # noqa: ARG001
    unmeasured = stored_uplift(qini=None)
    assert uplift_model_refusal(model=unmeasured) == (
        "uplift@1 has no held-out Qini coefficient: its training measured none"
    )
    assert uplift_model_refusal(model=stored_uplift(qini=0.0)).endswith(
        "is 0.000, no better than offering at random"
    )
    assert uplift_model_refusal(model=stored_uplift(qini=0.01)) == ""


def test_each_activation_keeps_to_its_own_kind(tried):  # noqa: ARG001
    with pytest.raises(ValueError, match="uplift@1 is not a cart-risk model"):
        model_activate(model=stored_uplift())
    assert ScoringModel.every_kind.get().state == "candidate"


def test_roll_back_re_activates_the_uplift_model_live_before(operator: Client, uplift_registry):
    _, live, good, _ = uplift_registry
    assert "Roll back to" not in operator.get(UPLIFT_URL).content.decode()
    operator.post(f"{UPLIFT_URL}{good.pk}/activate/", {"replacing": "uplift@1"})
    listing = operator.get(UPLIFT_URL).content.decode()
    assert f'href="{UPLIFT_URL}rollback/"' in listing and "Roll back to uplift@1" in listing
    page = operator.get(f"{UPLIFT_URL}rollback/").content.decode()
    assert "Roll back from uplift@2 to uplift@1" in page
    response = operator.post(
        f"{UPLIFT_URL}rollback/", {"from": "uplift@2", "to": "uplift@1"}, follow=True
    )
    assert "Rolled back from uplift@2 to uplift@1" in " ".join(shown_messages(response))
    assert (state_of(live), state_of(good)) == ("active", "retired")
    assert timeline(live)[-1] == (ModelEvent.Action.ROLLED_BACK, "olga", "uplift@2")
    assert ScoringModel.objects.get(state="active").label == "cart-risk@1"


def test_candidates_are_retired_never_the_live_uplift_model(operator: Client, uplift_registry):
    _, live, good, poor = uplift_registry
    refused = operator.post(
        UPLIFT_URL, {"action": "retire", "_selected_action": [live.pk, good.pk]}, follow=True
    )
    assert any("uplift@1 is the active uplift model" in m for m in shown_messages(refused))
    assert state_of(good) == "candidate"
    page = operator.get(f"{UPLIFT_URL}{live.pk}/retire/").content.decode()
    assert "uplift@1 is the active uplift model" in page and "data-confirm-button" not in page
    operator.post(f"{UPLIFT_URL}{poor.pk}/retire/")
    assert (state_of(live), state_of(poor)) == ("active", "retired")
    assert timeline(poor)[-1][:2] == (ModelEvent.Action.RETIRED, "olga")


def test_the_live_uplift_model_cannot_be_deleted(client: Client, uplift_registry):
    _, live, good, _ = uplift_registry
    client.force_login(User.objects.create_superuser("ines", password="pw-for-tests"))
    said = "uplift@1 is the active uplift model: activate another or roll back first; "
    page = client.get(f"{UPLIFT_URL}{live.pk}/delete/", follow=True)
    assert any(m.startswith(said) for m in shown_messages(page)), shown_messages(page)
    gone = client.post(f"{UPLIFT_URL}{live.pk}/delete/", {"post": "yes"}, follow=True)
    assert any(m.startswith(said) for m in shown_messages(gone))
    bulk = client.post(
        UPLIFT_URL,
        {"action": "delete_selected", "_selected_action": [live.pk, good.pk], "post": "yes"},
        follow=True,
    )
    assert said.rstrip("; ") in " ".join(shown_messages(bulk))
    assert "Nothing was deleted." in shown_messages(bulk)
    assert ScoringModel.uplift_models.count() == 3
    client.post(f"{UPLIFT_URL}{good.pk}/delete/", {"post": "yes"})
    assert ScoringModel.uplift_models.count() == 2  # a candidate may go
    assert state_of(live) == "active"


def test_only_staff_with_rights_on_models_see_or_change_uplift_models(
    client: Client, uplift_registry
):
    _, live, good, _ = uplift_registry
    pages = [
        UPLIFT_URL,
        f"{UPLIFT_URL}{good.pk}/change/",
        f"{UPLIFT_URL}{good.pk}/activate/",
        f"{UPLIFT_URL}{good.pk}/retire/",
        f"{UPLIFT_URL}rollback/",
    ]
    for url in pages:  # anonymous
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert client.post(pages[2], {"replacing": "uplift@1"}).status_code == 302
    client.force_login(User.objects.create_user("shopper", password="pw-for-tests"))
    assert client.get(UPLIFT_URL)["Location"].startswith("/admin/login/")  # not staff
    client.force_login(User.objects.create_user("sam", password="pw-for-tests", is_staff=True))
    assert client.get(UPLIFT_URL).status_code == 403  # staff without rights on models
    viewer = User.objects.create_user("vic", password="pw-for-tests", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_scoringmodel"))
    client.force_login(viewer)
    assert client.get(UPLIFT_URL).status_code == 200
    assert f"{UPLIFT_URL}{good.pk}/activate/" not in client.get(pages[1]).content.decode()
    for url in pages[2:]:
        assert client.get(url).status_code == 403
        assert client.post(url, {"replacing": "uplift@1", "force": "1"}).status_code == 403
    assert client.post(f"{UPLIFT_URL}{good.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (state_of(live), state_of(good)) == ("active", "candidate")
