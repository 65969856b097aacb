from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from offers.models import Decision, Offer, Outcome, Product, Site

pytestmark = pytest.mark.django_db

MODELS = ["site", "product", "offerrule", "scoringmodel", "decision", "offer"]


@pytest.fixture
def operator(client: Client) -> Client:
    user = User.objects.create_user(
        "olga", password="pw-for-tests", is_staff=True, is_superuser=True
    )
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", MODELS)
def test_operators_see_every_model_under_its_contract_url(operator: Client, model):
    assert operator.get(f"/admin/offers/{model}/").status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, model):
    response = client.get(f"/admin/offers/{model}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_decisions_and_offers_are_read_only(operator: Client):
    site = Site.objects.create(key="demo", name="Demo", allowed_origins="*")
    decision = Decision.objects.create(
        site=site,
        session="s-1",
        pause_key="s-1:1",
        at=timezone.now(),
        outcome=Outcome.OFFER,
        risk=0.9,
    )
    now = timezone.now()
    offer = Offer.objects.create(
        decision=decision,
        public_id="o-1",
        session="s-1",
        code="SAVE10-TEST",
        title="t",
        message="m",
        discount_percent=10,
        created_at=now,
        expires_at=now,
    )
    assert operator.get("/admin/offers/decision/add/").status_code == 403
    assert operator.get("/admin/offers/offer/add/").status_code == 403
    page = operator.get(f"/admin/offers/decision/{decision.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    response = operator.post(f"/admin/offers/offer/{offer.pk}/change/", {"code": "CHANGED"})
    assert response.status_code == 403
    offer.refresh_from_db()
    assert offer.code == "SAVE10-TEST"
    assert (
        operator.post(f"/admin/offers/decision/{decision.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert Decision.objects.count() == 1


def test_operators_can_edit_demo_products(operator: Client):
    call_command("bootstrap_demo", stdout=io.StringIO())
    product = Product.objects.get(sku="sku-mug")
    data = {
        "site": product.site_id,
        "sku": product.sku,
        "name": "Big stoneware mug",
        "category": product.category,
        "price": "16.50",
        "description": product.description,
        "active": "on",
    }
    response = operator.post(f"/admin/offers/product/{product.pk}/change/", data)
    assert response.status_code == 302, response.content
    product.refresh_from_db()
    assert (product.name, str(product.price)) == ("Big stoneware mug", "16.50")


def test_allowed_origins_are_compared_in_their_normal_form():
    site = Site(
        key="s", name="S", allowed_origins="https://Shop.Example:443/\nhttp://localhost:8080\n"
    )
    assert site.allows_origin("https://shop.example")
    assert site.allows_origin("http://localhost:8080")
    assert not site.allows_origin("http://shop.example")
    assert not site.allows_origin("https://shop.example.evil.example")
    assert not site.allows_origin(None)
    assert Site(key="any", name="Any", allowed_origins="*").allows_origin(None)


def test_the_demo_and_the_staff_user_are_made_once(tmp_path, settings, capsys, monkeypatch):
    from offers.management.commands import ensure_staff

    monkeypatch.setattr(ensure_staff, "PASSWORD_FILE", tmp_path / ".admin-password")
    for _ in range(2):
        call_command("bootstrap_demo")
        call_command("ensure_staff")
    out = capsys.readouterr().out
    assert Site.objects.filter(key="demo").count() == 1
    assert Product.objects.filter(site__key="demo").count() == 12
    assert User.objects.filter(is_staff=True).count() == 1
    password = (tmp_path / ".admin-password").read_text().strip()
    assert out.count(password) == 2
    assert Client().login(username="admin", password=password)
