"""`GET /api/uplift/` and `uplift_money`: what offers earned against the holdout, from the
record, on a small hand-made dataset."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from offers.models import Decision, Offer, Site
from offers.money import uplift_money
from offers.services import offer_redeem, record_write
from streaming.policy import Outcome
from streaming.records import MarkMade
from tests.factories import operator_user

pytestmark = pytest.mark.django_db


def decided(site: Site, session: str, outcome: Outcome, at: dt.datetime, n: int = 1) -> Decision:
    return Decision.objects.create(
        site=site, session=session, pause_key=f"{session}:{n}", at=at, outcome=outcome
    )


def bought(session: str, total: float, at: dt.datetime) -> None:
    record_write(records=[MarkMade(session, None, "purchase", at.timestamp(), total=total)])


@pytest.fixture
def record(demo_site) -> dt.datetime:
    """Four offered and three held-out at-risk sessions in the last hour, and others around."""
    now = timezone.now()
    recently = now - dt.timedelta(minutes=20)
    # o1 redeems its 10% code and pays 90 (10 off); o2 pays 60 without it; o3, o4 do not buy
    o1 = decided(demo_site, "o1", Outcome.OFFER, recently)
    Offer.objects.create(
        decision=o1,
        public_id="o-o1",
        session="o1",
        code="SAVE10-O1",
        title="t",
        message="m",
        discount_percent=10,
        created_at=recently,
        expires_at=now + dt.timedelta(minutes=10),
    )
    offer_redeem(code="SAVE10-O1", site="demo", order_id="1", total=Decimal("90.00"))
    decided(demo_site, "o1", Outcome.NO_OFFER, recently, n=2)  # a later pause: still offered
    decided(demo_site, "o2", Outcome.OFFER, recently)
    bought("o2", 60.0, now)
    decided(demo_site, "o3", Outcome.OFFER, recently)
    decided(demo_site, "o4", Outcome.OFFER, recently)
    # h1 pays 100; h2, h3 do not buy
    for session in ("h1", "h2", "h3"):
        decided(demo_site, session, Outcome.HOLDOUT, recently)
    bought("h1", 100.0, now)
    # not at risk enough to be offered or held out: in neither group
    decided(demo_site, "n1", Outcome.NO_OFFER, recently)
    bought("n1", 500.0, now)
    # held out 3 hours ago: in the 24 h window, not in the last hour's
    decided(demo_site, "h-old", Outcome.HOLDOUT, now - dt.timedelta(hours=3))
    bought("h-old", 40.0, now)
    # 8 days ago: in no window
    decided(demo_site, "o-gone", Outcome.OFFER, now - dt.timedelta(days=8))
    bought("o-gone", 1000.0, now)
    return now


def test_the_figures_of_the_last_hour_are_the_hand_checked_ones(record):
    figures = uplift_money(window="1h", now=record)
    assert figures == {
        "window": "1h",
        "verdict": "Too early to tell: 4 offered and 3 held-out sessions so far; at least 30 "
        "of each are needed.",
        "offered": {"sessions": 4, "buyers": 2, "revenue": 150.0, "discount": 10.0},
        "holdout": {"sessions": 3, "buyers": 1, "revenue": 100.0, "discount": 0.0},
        # worked out by hand in tests/streaming/test_money.py (the same sessions)
        "per_1000": {
            "incremental_buyers": {"estimate": 166.67, "low": -697.6, "high": 1030.93},
            "incremental_revenue": {"estimate": 4166.67, "low": -74656.09, "high": 82989.42},
            "net_incremental_revenue": {"estimate": 1666.67, "low": -75150.7, "high": 78484.03},
        },
    }


def test_a_longer_window_takes_in_older_sessions(record):
    day = uplift_money(window="24h", now=record)
    assert day["holdout"] == {"sessions": 4, "buyers": 2, "revenue": 140.0, "discount": 0.0}
    assert day["offered"]["sessions"] == 4
    week = uplift_money(window="7d", now=record)
    assert (week["offered"], week["holdout"]) == (day["offered"], day["holdout"])
    with pytest.raises(ValueError, match="window"):
        uplift_money(window="2h", now=record)


def test_no_sessions_yet_means_null_figures():
    figures = uplift_money(window="24h")
    assert figures["offered"] == {"sessions": 0, "buyers": 0, "revenue": 0.0, "discount": 0.0}
    assert figures["per_1000"]["net_incremental_revenue"] == {
        "estimate": None,
        "low": None,
        "high": None,
    }
    assert figures["verdict"].startswith("Too early to tell")


@pytest.mark.usefixtures("record")
def test_operators_get_the_figures_at_api_uplift(client: Client):
    client.force_login(operator_user())
    answer = client.get("/api/uplift/?window=1h")
    assert answer.status_code == 200
    assert answer.json()["offered"]["revenue"] == 150.0
    assert answer.json()["window"] == "1h"
    assert client.get("/api/uplift/").json()["window"] == "24h"
    refused = client.get("/api/uplift/?window=1y")
    assert refused.status_code == 400
    assert refused.json() == {"error": "bad_window", "detail": "window must be one of 1h, 24h, 7d"}


def test_only_operators_see_the_money(client: Client):
    assert client.get("/api/uplift/").status_code == 403
    client.force_login(operator_user("sam", permission=False))
    answer = client.get("/api/uplift/")
    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"
