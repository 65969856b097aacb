"""The demo checkout: Apply only checks a code, placing the order redeems it; and the favicon."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from offers.models import Decision, Offer, Site
from offers.services import offer_check
from streaming.policy import Outcome

pytestmark = pytest.mark.django_db

CODE = "SAVE15-ABCDEFGHJK"


def an_offer(site: Site, *, code: str = CODE, expires_in: float = 30 * 60) -> Offer:
    now = timezone.now()
    decision = Decision.objects.create(
        site=site, session=f"s-{code}", pause_key=f"s-{code}:1", at=now, outcome=Outcome.OFFER
    )
    return Offer.objects.create(
        decision=decision,
        public_id=f"o-{code}",
        session=f"s-{code}",
        code=code,
        title="t",
        message="m",
        discount_percent=15,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=expires_in),
    )


def order(client: Client, code: str = CODE, order_id: str = "D-ABC123", total: str = "249.00"):
    return client.post("/checkout/order/", {"order_id": order_id, "total": total, "code": code})


def test_applying_a_code_checks_it_and_leaves_it_usable(client: Client, demo_site):
    offer = an_offer(demo_site)
    for code in ["save15-abcdefghjk", CODE]:
        answer = client.post("/checkout/code/", {"code": code})
        assert answer.status_code == 200
        assert answer.json() == {"valid": True, "discount_percent": 15}
    offer.refresh_from_db()
    assert offer.redeemed_at is None


def test_the_order_redeems_the_code_once(client: Client, demo_site):
    offer = an_offer(demo_site)
    first = order(client, code=CODE.lower())
    assert first.status_code == 200
    assert first.json() == {
        "placed": True,
        "order_id": "D-ABC123",
        "discount_percent": 15,
        "total": 211.65,
    }
    offer.refresh_from_db()
    redeemed_at = offer.redeemed_at
    assert redeemed_at is not None

    again = order(client, order_id="D-ABC124")
    assert again.status_code == 409
    assert again.json() == {
        "placed": False,
        "error": "code_refused",
        "detail": "That code is already used.",
    }
    offer.refresh_from_db()
    assert offer.redeemed_at == redeemed_at  # the refused order changed nothing
    # and Apply now says so
    answer = client.post("/checkout/code/", {"code": CODE})
    assert answer.status_code == 400
    assert answer.json() == {"valid": False, "detail": "That code is already used."}


def test_an_order_without_a_code_is_placed_at_the_full_price(client: Client, demo_site):
    an_offer(demo_site)
    answer = order(client, code="", total="378.5")
    assert answer.status_code == 200
    assert answer.json() == {
        "placed": True,
        "order_id": "D-ABC123",
        "discount_percent": 0,
        "total": 378.5,
    }
    assert Offer.objects.get().redeemed_at is None


def test_expired_unknown_and_other_sites_codes_are_refused(client: Client, demo_site):
    expired = an_offer(demo_site, code="SAVE15-EXPIREDXXX", expires_in=-1)
    other = Site.objects.create(key="other", name="Other shop", allowed_origins="*")
    elsewhere = an_offer(other, code="SAVE15-ELSEWHEREX")
    cases = [
        ("SAVE15-EXPIREDXXX", "That code has expired."),
        ("SAVE15-NOSUCHCODE", "That code is unknown."),
        ("SAVE15-ELSEWHEREX", "That code is unknown."),  # offered by another shop
        ("", "That code is unknown."),
    ]
    for code, detail in cases:
        checked = client.post("/checkout/code/", {"code": code})
        assert checked.status_code == 400, code
        assert checked.json() == {"valid": False, "detail": detail}, code
        if code:
            placed = order(client, code=code)
            assert placed.status_code == 409, code
            assert placed.json()["placed"] is False
            assert placed.json()["detail"] == detail
    for offer in (expired, elsewhere):
        offer.refresh_from_db()
        assert offer.redeemed_at is None


def test_offer_check_only_reads(demo_site):
    offer = an_offer(demo_site)
    later = timezone.now() + dt.timedelta(hours=1)
    assert offer_check(code=CODE, site="demo") == offer
    assert offer_check(code=CODE, site="demo") == offer
    assert offer_check(code=CODE, site="other") is None
    assert offer_check(code=CODE, site="demo", at=later) is None
    offer.refresh_from_db()
    assert offer.redeemed_at is None


def test_a_bad_order_is_refused_and_redeems_nothing(client: Client, demo_site):
    an_offer(demo_site)
    for order_id, total in [
        ("", "10.00"),
        ("X-1", "10.00"),
        ("D-" + "A" * 21, "10.00"),
        ("D-1", ""),
        ("D-1", "-1"),
        ("D-1", "NaN"),
        ("D-1", "sNaN"),
        ("D-1", "Infinity"),
        ("D-1", "1e9"),
        ("D-1", "ten"),
    ]:
        answer = order(client, order_id=order_id, total=total)
        assert answer.status_code == 400, (order_id, total)
        assert answer.json()["error"] in {"bad_order", "bad_total"}
    assert Offer.objects.get().redeemed_at is None


def test_the_checkout_needs_its_csrf_token(demo_site):
    an_offer(demo_site)
    client = Client(enforce_csrf_checks=True)
    assert order(client).status_code == 403
    assert client.post("/checkout/code/", {"code": CODE}).status_code == 403
    assert Offer.objects.get().redeemed_at is None
    page = client.get("/checkout/")
    token = page.cookies["csrftoken"].value
    placed = client.post(
        "/checkout/order/",
        {"order_id": "D-1", "total": "10", "code": CODE},
        headers={"X-CSRFToken": token},
    )
    assert placed.status_code == 200 and placed.json()["discount_percent"] == 15


def test_the_checkout_only_takes_posts(client: Client):
    assert client.get("/checkout/order/").status_code == 405
    assert client.get("/checkout/code/").status_code == 405


def test_the_favicon_is_served_and_linked(client: Client, demo_site):  # noqa: ARG001
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response.content.lstrip().startswith(b"<svg")
    assert client.head("/favicon.ico").status_code == 200
    icon = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
    for url in ["/", "/cart/", "/checkout/"]:
        assert icon in client.get(url).content.decode(), url
    linked = client.get("/static/favicon.svg")
    linked.close()  # whitenoise streams the file
    assert linked.status_code == 200
    assert linked["Content-Type"].startswith("image/svg+xml")
