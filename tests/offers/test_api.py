from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.test import Client

from offers.models import Decision, Offer
from streaming.policy import Outcome

pytestmark = pytest.mark.django_db

AT = dt.datetime(2026, 11, 24, 18, 0, tzinfo=dt.UTC)


@pytest.fixture
def decisions(demo_site) -> list[Decision]:
    made = []
    for i, outcome in enumerate([Outcome.OFFER, Outcome.NO_OFFER, Outcome.HOLDOUT]):
        made.append(
            Decision.objects.create(
                site=demo_site,
                session=f"s{i}",
                pause_key=f"s{i}:1",
                at=AT + dt.timedelta(minutes=i),
                outcome=outcome,
                risk=0.8 - i / 10,
                model_label="cart-risk@2",
                features={"cart_value": 120.0},
                reasons=[]
                if outcome == Outcome.NO_OFFER
                else [{"feature": "views_since_add", "value": 8.0, "contribution": 1.1}],
                cart_value="120.00",
            )
        )
    Offer.objects.create(
        decision=made[0],
        public_id="o-abc",
        session="s0",
        code="SAVE10-ABCDEFGHJK",
        title="t",
        message="m",
        discount_percent=10,
        created_at=AT,
        expires_at=AT + dt.timedelta(minutes=30),
    )
    return made


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_user("sam", password="x", is_staff=True))
    return client


def test_decisions_come_oldest_first_with_features_and_reasons(staff: Client, decisions):
    body = staff.get("/api/decisions/").json()
    assert [d["session"] for d in body["decisions"]] == ["s0", "s1", "s2"]
    first = body["decisions"][0]
    assert first == {
        "id": decisions[0].pk,
        "session": "s0",
        "at": "2026-11-24T18:00:00Z",
        "outcome": "offer",
        "risk": 0.8,
        "model": "cart-risk@2",
        "features": {"cart_value": 120.0},
        "reasons": [{"feature": "views_since_add", "value": 8.0, "contribution": 1.1}],
        "cart_value": 120.0,
        "offer_id": "o-abc",
    }
    assert body["decisions"][1]["reasons"] == [] and body["decisions"][1]["offer_id"] is None


def test_since_and_limit_page_through_decisions(staff: Client, decisions):
    body = staff.get("/api/decisions/", {"since": "2026-11-24T18:01:00Z", "limit": "1"}).json()
    assert [d["session"] for d in body["decisions"]] == ["s1"]
    body = staff.get("/api/decisions/", {"since": "2026-11-24T18:01:00+00:00"}).json()
    assert [d["session"] for d in body["decisions"]] == ["s1", "s2"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"since": "yesterday"}, "bad_since"),
        ({"limit": "0"}, "bad_limit"),
        ({"limit": "x"}, "bad_limit"),
        ({"limit": "1001"}, "bad_limit"),
    ],
)
def test_bad_parameters_get_a_clear_400(staff: Client, params, error):
    response = staff.get("/api/decisions/", params)
    assert response.status_code == 400 and response.json()["error"] == error


def test_only_staff_may_read_decisions(client: Client, decisions):
    assert client.get("/api/decisions/").status_code == 403
    client.force_login(User.objects.create_user("shopper", password="x"))
    assert client.get("/api/decisions/").status_code == 403
