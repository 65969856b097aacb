from __future__ import annotations

import datetime as dt
import json

import pytest
from django.test import Client
from django.utils import timezone

from offers.models import Decision, Offer, Product
from streaming.policy import Outcome

pytestmark = pytest.mark.django_db

EMBED = '<script async src="/static/liveoffers.js" data-site="demo"></script>'


@pytest.fixture
def catalogue(demo_site) -> list[Product]:
    return [
        Product.objects.create(
            site=demo_site,
            sku="sku-espresso",
            name="Espresso machine",
            category="Kitchen",
            price="249.00",
        ),
        Product.objects.create(
            site=demo_site,
            sku="sku-grinder",
            name="Burr grinder",
            category="Kitchen",
            price="129.00",
        ),
    ]


@pytest.mark.usefixtures("catalogue")
def test_every_page_embeds_the_snippet_as_the_readme_says(client: Client):
    for url in ["/", "/product/sku-espresso/", "/cart/", "/checkout/"]:
        page = client.get(url).content.decode()
        assert EMBED in page, url
        assert (
            "window.liveoffers = window.liveoffers || function(){(liveoffers.q = liveoffers.q || []).push(arguments)}"
            in page
        )


@pytest.mark.usefixtures("catalogue")
def test_the_catalogue_has_add_buttons_that_autocapture_reads(client: Client):
    page = client.get("/").content.decode()
    assert 'data-lo-event="add_to_cart" data-lo-product="sku-espresso"' in page
    assert 'data-lo-price="249.00" data-lo-quantity="1"' in page
    assert 'data-lo-page-type="home"' in page


@pytest.mark.usefixtures("catalogue")
def test_a_product_page_tracks_its_product_view(client: Client):
    response = client.get("/product/sku-espresso/")
    page = response.content.decode()
    view = json.loads(
        page.split('id="product-view" type="application/json">')[1].split("</script>")[0]
    )
    assert view == {"product_id": "sku-espresso", "price": 249.0, "category": "Kitchen"}
    assert "liveoffers('track', 'product_view'" in page
    assert "Burr grinder" in page  # from the same category
    assert client.get("/product/nope/").status_code == 404


def test_an_offer_code_takes_off_its_discount_once_when_the_order_is_placed(
    client: Client, demo_site
):
    decision = Decision.objects.create(
        site=demo_site, session="s", pause_key="s:1", at=timezone.now(), outcome=Outcome.OFFER
    )
    now = timezone.now()
    Offer.objects.create(
        decision=decision,
        public_id="o-1",
        session="s",
        code="SAVE15-ABCDEFGHJK",
        title="t",
        message="m",
        discount_percent=15,
        created_at=now,
        expires_at=now + dt.timedelta(minutes=30),
    )
    first = client.post("/checkout/code/", {"code": "save15-abcdefghjk"})
    assert first.status_code == 200 and first.json() == {"valid": True, "discount_percent": 15}
    order = {"order_id": "D-1", "total": "100.00", "code": "SAVE15-ABCDEFGHJK"}
    assert client.post("/checkout/order/", order).status_code == 200
    again = client.post("/checkout/code/", {"code": "SAVE15-ABCDEFGHJK"})
    assert again.status_code == 400 and again.json()["valid"] is False
    assert client.post("/checkout/order/", order | {"order_id": "D-2"}).status_code == 409
    assert client.post("/checkout/code/", {"code": ""}).status_code == 400
