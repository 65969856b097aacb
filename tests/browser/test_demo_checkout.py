"""The demo shop's checkout in real Chromium: Apply only checks the offer's code, and it stays
applied across a reload; placing the order is what redeems it, once."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ADD_TO_CART, LiveOffers, Shopper
from tests.browser.test_offers import wait_for_banner

pytestmark = pytest.mark.e2e

THANKS = re.compile(r"Thank you! Order D-[0-9A-Z]+ is placed\.")


def money(value: float) -> str:
    return f"€{value:.2f}"


def an_offer(shopper: Shopper, live_offers: LiveOffers) -> tuple[dict[str, Any], float]:
    """Fills the cart on the demo shop and pauses until an offer comes; closes its banner once
    the offer is recorded. Returns the offer frame and the cart's total."""
    page, wire = shopper.page, shopper.wire
    page.goto(f"{live_offers.url}/")
    add = page.locator(ADD_TO_CART).first
    price = float(add.get_attribute("data-lo-price") or "nan")
    add.click()
    banner = wait_for_banner(page)
    (offer,) = wire.frames("offer")
    recorded_offer(live_offers, wire.session)  # the code is known to the checkout from now on
    banner.get_by_role("button", name="Close").click()
    expect(banner).to_have_count(0)
    return offer, price


def recorded_offer(live_offers: LiveOffers, session: str, timeout: float = 10) -> dict[str, Any]:
    """The session's offer as recorded (through the decisions API), waiting for it."""
    deadline = time.monotonic() + timeout
    while True:
        offers = [d["offer"] for d in live_offers.decisions_of(session) if d["offer"]]
        if offers or time.monotonic() > deadline:
            assert len(offers) == 1, offers
            offer: dict[str, Any] = offers[0]
            return offer
        time.sleep(0.1)


def apply_code(page: Page, code: str) -> None:
    page.get_by_label("Discount code").fill(code)
    page.get_by_role("button", name="Apply").click()


def code_status(page: Page):
    return page.locator("[data-code-status]")


def test_a_code_applied_at_checkout_stays_through_a_reload_and_is_used_by_the_order(
    shopper: Shopper, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    offer, price = an_offer(shopper, live_offers)
    percent = offer["discount_percent"]
    discounted = round(price * (100 - percent)) / 100

    page.goto(f"{live_offers.url}/checkout/")
    apply_code(page, offer["code"].lower())
    expect(code_status(page)).to_have_text(f"{percent}% off applied.")
    expect(page.locator("[data-discount]")).to_have_text(f"({percent}% off)")
    expect(page.locator("[data-cart-total]")).to_have_text(money(discounted))

    page.reload()  # still applied, checked again, and not used by either check
    expect(page.get_by_label("Discount code")).to_have_value(offer["code"])
    expect(page.locator("[data-discount]")).to_have_text(f"({percent}% off)")
    expect(page.locator("[data-cart-total]")).to_have_text(money(discounted))
    wire.linger(0.3)  # the check on load has answered
    expect(code_status(page)).to_have_text(f"{percent}% off applied.")
    assert recorded_offer(live_offers, wire.session)["redeemed_at"] is None

    page.get_by_role("button", name="Place order").click()
    expect(page.locator("[data-order-status]")).to_have_text(THANKS)
    assert recorded_offer(live_offers, wire.session)["redeemed_at"] is not None
    (purchase,) = wire.wait_acked("purchase")
    order = page.locator("[data-order-status]").inner_text().split()[3]
    assert purchase["props"] == {"order_id": order, "total": discounted, "code": offer["code"]}
    assert page.evaluate("sessionStorage.getItem('demo-shop:code')") is None

    # A new checkout with the same code: refused, at the full price.
    page.goto(f"{live_offers.url}/")
    page.locator(ADD_TO_CART).first.click()
    page.goto(f"{live_offers.url}/checkout/")
    apply_code(page, offer["code"])
    expect(code_status(page)).to_have_text("That code is already used.")
    expect(page.locator("[data-discount]")).to_have_text("")
    expect(page.locator("[data-cart-total]")).to_have_text(money(price))


def test_a_code_used_elsewhere_meanwhile_stops_the_order_until_placed_at_the_full_price(
    shopper: Shopper, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    offer, price = an_offer(shopper, live_offers)
    percent = offer["discount_percent"]
    page.goto(f"{live_offers.url}/checkout/")
    apply_code(page, offer["code"])
    expect(code_status(page)).to_have_text(f"{percent}% off applied.")

    # Another checkout (same cookies, another tab's cart) places its order with the code first.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    elsewhere = page.context.request.post(
        f"{live_offers.url}/checkout/order/",
        form={"order_id": "D-ELSEWHERE", "total": "10.00", "code": offer["code"]},
        headers={"X-CSRFToken": token},
    )
    assert elsewhere.status == 200 and elsewhere.json()["placed"] is True

    order_status = page.locator("[data-order-status]")
    page.get_by_role("button", name="Place order").click()
    expect(order_status).to_contain_text("That code is already used. The order is not placed")
    expect(page.locator("[data-discount]")).to_have_text("")
    expect(page.locator("[data-cart-total]")).to_have_text(money(price))
    expect(page.get_by_label("Discount code")).to_have_value("")
    assert page.evaluate("sessionStorage.getItem('demo-shop:code')") is None
    assert wire.said_event("purchase") == []

    page.get_by_role("button", name="Place order").click()
    expect(order_status).to_have_text(THANKS)
    (purchase,) = wire.wait_acked("purchase")
    assert purchase["props"]["total"] == price

    page.reload()  # nothing left applied
    expect(page.locator("[data-cart-total]")).to_have_text(money(0))
    expect(code_status(page)).to_have_text("")


def test_a_kept_code_used_elsewhere_is_dropped_on_reload(shopper: Shopper, live_offers: LiveOffers):
    page = shopper.page
    offer, price = an_offer(shopper, live_offers)
    page.goto(f"{live_offers.url}/checkout/")
    apply_code(page, offer["code"])
    expect(code_status(page)).to_have_text(f"{offer['discount_percent']}% off applied.")

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    elsewhere = page.context.request.post(
        f"{live_offers.url}/checkout/order/",
        form={"order_id": "D-ELSEWHERE2", "total": "10.00", "code": offer["code"]},
        headers={"X-CSRFToken": token},
    )
    assert elsewhere.status == 200 and elsewhere.json()["placed"] is True

    page.reload()
    expect(code_status(page)).to_have_text(
        f"The code {offer['code']} no longer applies: That code is already used."
    )
    expect(page.locator("[data-discount]")).to_have_text("")
    expect(page.locator("[data-cart-total]")).to_have_text(money(price))
    expect(page.get_by_label("Discount code")).to_have_value("")
    assert page.evaluate("sessionStorage.getItem('demo-shop:code')") is None


def test_pages_link_the_favicon_and_favicon_ico_is_found(shopper: Shopper, live_offers: LiveOffers):
    page = shopper.page
    page.context.add_cookies(  # for the dashboard
        [{"name": "sessionid", "value": live_offers.database.staff_cookie, "url": live_offers.url}]
    )
    logged = len(live_offers.server.output())
    for path in ["/", "/checkout/", "/dashboard/"]:
        page.goto(f"{live_offers.url}{path}")
        icon = page.locator("link[rel=icon]")
        expect(icon).to_have_attribute("href", "/static/favicon.svg")
        linked = page.request.get(f"{live_offers.url}/static/favicon.svg")
        assert linked.ok and linked.headers["content-type"].startswith("image/svg+xml")
    answer = page.request.get(f"{live_offers.url}/favicon.ico")
    assert answer.status == 200
    assert answer.headers["content-type"] == "image/svg+xml"
    assert answer.body() == page.request.get(f"{live_offers.url}/static/favicon.svg").body()
    assert "Not Found" not in live_offers.server.output()[logged:]
