from __future__ import annotations

import datetime as dt
import random

import pytest
from django.contrib.auth.models import User
from django.test import Client

from offers.models import Decision, Offer
from streaming.policy import Outcome
from tests.factories import operator_user

pytestmark = pytest.mark.django_db

AT = dt.datetime(2026, 11, 24, 18, 0, tzinfo=dt.UTC)
WHY = {
    Outcome.OFFER: "risk 0.80 reached the rule's 0.60",
    Outcome.NO_OFFER: "risk 0.70 below the rule's 0.75",
    Outcome.HOLDOUT: "holdout: control group (risk 0.60 reached the rule's 0.60)",
}


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
                why=WHY[outcome],
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
    client.force_login(operator_user("sam"))
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
        "shadow_risk": None,
        "shadow_model": None,
        "features": {"cart_value": 120.0},
        "reasons": [{"feature": "views_since_add", "value": 8.0, "contribution": 1.1}],
        "reasons_in_words": ["compared 8 products since adding to cart (raises risk)"],
        "why": "risk 0.80 reached the rule's 0.60",
        "cart_value": 120.0,
        "converted_at": None,
        "offer_id": "o-abc",
        "offer": {
            "id": "o-abc",
            "code": "SAVE10-ABCDEFGHJK",
            "discount_percent": 10,
            "shown_at": None,
            "accepted_at": None,
            "dismissed_at": None,
            "redeemed_at": None,
        },
    }
    assert body["decisions"][1]["reasons"] == [] and body["decisions"][1]["offer_id"] is None
    assert body["decisions"][1]["offer"] is None
    assert body["next"] is None


def test_every_decision_says_why_and_its_reasons_in_words_beside_the_reasons(
    staff: Client, decisions
):
    Decision.objects.filter(pk=decisions[2].pk).update(
        features={"views_since_add": 0.0, "seconds_since_add": 31.0, "product_views": 9.0},
        reasons=[
            {"feature": "views_since_add", "value": 0.0, "contribution": 0.7},
            {"feature": "seconds_since_add", "value": 31.0, "contribution": 0.5},
            {"feature": "product_views", "value": 9.0, "contribution": -0.2},
        ],
    )
    body = staff.get("/api/decisions/").json()
    no_offer, holdout = body["decisions"][1], body["decisions"][2]
    assert no_offer["why"] == "risk 0.70 below the rule's 0.75"
    assert no_offer["reasons_in_words"] == []
    assert holdout["why"].startswith("holdout: control group")
    # the contract stays as it was: the reasons as recorded, beside their words
    assert holdout["reasons"][1] == {
        "feature": "seconds_since_add",
        "value": 31.0,
        "contribution": 0.5,
    }
    assert holdout["reasons_in_words"] == [
        "viewed nothing since adding to cart (raises risk)",
        "viewed 9 products (lowers risk)",
    ]


def test_a_decision_shows_its_shadow_conversion_and_what_became_of_its_offer(
    staff: Client, decisions
):
    Decision.objects.filter(pk=decisions[0].pk).update(
        shadow_risk=0.4, shadow_model="cart-risk@3", converted_at=AT + dt.timedelta(minutes=9)
    )
    Offer.objects.filter(public_id="o-abc").update(
        shown_at=AT + dt.timedelta(seconds=1),
        accepted_at=AT + dt.timedelta(seconds=5),
        redeemed_at=AT + dt.timedelta(minutes=9),
    )
    first = staff.get("/api/decisions/").json()["decisions"][0]
    assert first["shadow_risk"] == 0.4 and first["shadow_model"] == "cart-risk@3"
    assert first["converted_at"] == "2026-11-24T18:09:00Z"
    assert first["offer"] == {
        "id": "o-abc",
        "code": "SAVE10-ABCDEFGHJK",
        "discount_percent": 10,
        "shown_at": "2026-11-24T18:00:01Z",
        "accepted_at": "2026-11-24T18:00:05Z",
        "dismissed_at": None,
        "redeemed_at": "2026-11-24T18:09:00Z",
    }


@pytest.mark.usefixtures("decisions")
def test_since_and_limit_page_through_decisions(staff: Client):
    body = staff.get("/api/decisions/", {"since": "2026-11-24T18:01:00Z", "limit": "1"}).json()
    assert [d["session"] for d in body["decisions"]] == ["s1"]
    body = staff.get("/api/decisions/", {"since": "2026-11-24T18:01:00+00:00"}).json()
    assert [d["session"] for d in body["decisions"]] == ["s1", "s2"]


def _pages(client: Client, url: str) -> list[list[str]]:
    """Follow `next` from `url` to the last page: each page's sessions."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([d["session"] for d in body["decisions"]])
        url = body["next"]
        assert len(pages) < 100
    return pages


def test_next_pages_through_decisions_that_share_a_moment_once_each(staff: Client, demo_site):
    # Seven decisions, five of them at the same microsecond: ties in time are where an offset
    # or a time-only cursor skips or repeats.
    moments = [AT, AT, AT + dt.timedelta(seconds=1)] + [AT + dt.timedelta(seconds=2)] * 4
    for i, at in enumerate(moments):
        Decision.objects.create(
            site=demo_site, session=f"t{i}", pause_key=f"t{i}:1", at=at, outcome=Outcome.NO_OFFER
        )
    expected = [f"t{i}" for i in range(7)]
    for limit in (1, 2, 3, 6, 7, 100):
        pages = _pages(staff, f"/api/decisions/?limit={limit}")
        assert [s for page in pages for s in page] == expected, limit
        assert all(len(page) == limit for page in pages[:-1]) and len(pages[-1]) <= limit
    assert _pages(staff, "/api/decisions/?limit=2&since=2026-11-24T18:00:01Z") == [
        ["t2", "t3"],
        ["t4", "t5"],
        ["t6"],
    ]


@pytest.mark.usefixtures("decisions")
def test_next_is_a_full_url_that_keeps_the_query(staff: Client):
    body = staff.get("/api/decisions/", {"limit": "2", "since": "2026-11-24T18:00:00Z"}).json()
    assert body["next"].startswith("http://testserver/api/decisions/?")
    assert "limit=2" in body["next"] and "since=2026-11-24T18" in body["next"]
    assert "cursor=" in body["next"]


@pytest.mark.usefixtures("decisions")
def test_a_full_last_page_has_no_next(staff: Client):
    assert staff.get("/api/decisions/", {"limit": "3"}).json()["next"] is None


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"since": "yesterday"}, "bad_since"),
        ({"since": "2024-02-30T00:00"}, "bad_since"),
        ({"since": "2024-13-01T00:00"}, "bad_since"),
        ({"since": "2024-01-01T25:00"}, "bad_since"),
        ({"since": "2024-01-01T00:00+25:00"}, "bad_since"),
        ({"since": "0001-01-01T00:00+05:00"}, "bad_since"),
        ({"since": "9999-12-31T23:59-05:00"}, "bad_since"),
        ({"since": "2024-01-01T00:00\x00"}, "bad_since"),
        ({"since": ""}, "bad_since"),
        ({"since": "2" * 10_000}, "bad_since"),
        ({"limit": "0"}, "bad_limit"),
        ({"limit": "x"}, "bad_limit"),
        ({"limit": "1001"}, "bad_limit"),
        ({"limit": "-1"}, "bad_limit"),
        ({"limit": "1_0"}, "bad_limit"),
        ({"limit": " 5"}, "bad_limit"),
        ({"limit": "\u00b2"}, "bad_limit"),
        ({"limit": "9" * 5000}, "bad_limit"),
        ({"limit": ""}, "bad_limit"),
        ({"cursor": "x"}, "bad_cursor"),
        ({"cursor": "1.x"}, "bad_cursor"),
        ({"cursor": ""}, "bad_cursor"),
        ({"cursor": "999999999999999999.1"}, "bad_cursor"),
        ({"cursor": "-999999999999999999.1"}, "bad_cursor"),
        ({"cursor": "1." + "9" * 40}, "bad_cursor"),
    ],
)
def test_bad_parameters_get_a_clear_400(staff: Client, params, error):
    response = staff.get("/api/decisions/", params)
    assert response.status_code == 400 and response.json()["error"] == error


@pytest.mark.usefixtures("decisions")
def test_generated_query_strings_never_get_a_500(staff: Client):
    rng = random.Random(6)
    alphabet = "0123456789-:+.TZ _%x\x00\u00e9\u00b2"
    for _ in range(300):
        params = {
            name: "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
            for name in rng.sample(["since", "limit", "cursor", "other"], rng.randrange(1, 4))
        }
        response = staff.get("/api/decisions/", params)
        assert response.status_code in (200, 400), (params, response.status_code)
        assert "decisions" in response.json() or "error" in response.json()


@pytest.mark.usefixtures("decisions")
def test_only_operators_may_read_decisions(client: Client):
    assert client.get("/api/decisions/").status_code == 403
    client.force_login(User.objects.create_user("shopper", password="x"))
    assert client.get("/api/decisions/").status_code == 403
    client.force_login(operator_user("staff-alone", permission=False))
    assert client.get("/api/decisions/").json()["error"] == "forbidden"
    client.force_login(operator_user("operator"))
    assert client.get("/api/decisions/").status_code == 200
