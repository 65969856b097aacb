"""Offers in real Chromium: the default banner, what the shopper does with it, and `onOffer`."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import (
    ADD_TO_CART,
    KEEP_OFFERS,
    PAUSE,
    LiveOffers,
    Shopper,
    ThirdPartyShop,
)
from tests.subprocesses import ROOT

pytestmark = pytest.mark.e2e

CODE = re.compile(r"SAVE\d+-[0-9A-Z]{10}")
OFFER_WAIT_MS = (PAUSE + 4) * 1000  # the pause, the decision, the frame


def wait_for_banner(page: Page) -> Locator:
    banner = page.locator("#liveoffers-banner")
    expect(banner.get_by_role("status")).to_contain_text("Your code", timeout=OFFER_WAIT_MS)
    return banner


def test_after_the_pause_the_banner_shows_the_code_and_accepting_is_recorded(
    shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=third_party_shop.url
    )
    page.goto(third_party_shop.page("banner"))
    page.click(ADD_TO_CART)
    banner = wait_for_banner(page)
    (offer,) = wire.frames("offer")
    status = banner.get_by_role("status")
    code = status.locator("strong")
    expect(code).to_have_text(offer["code"])
    assert CODE.fullmatch(offer["code"])
    expect(status).to_contain_text(offer["title"])
    expect(status).to_contain_text(offer["message"])
    expect(banner.get_by_role("timer")).to_have_text(re.compile(r"Expires in \d\d:\d\d"))
    # The shop's stylesheet hides every section and paints buttons yellow; not this one's.
    box = banner.get_by_role("region", name="Offer")
    expect(box).to_be_visible()
    expect(box).to_be_focused()
    copy = banner.get_by_role("button", name="Copy code")
    expect(copy).to_have_css("background-color", "rgb(31, 111, 235)")

    copy.click()
    expect(banner.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == offer["code"]
    row = live_offers.offer_row(offer["offer_id"], "shown_at", "accepted_at")
    assert row == {"shown_at": True, "accepted_at": True, "dismissed_at": False}
    banner.get_by_role("button", name="Close").click()
    expect(banner).to_have_count(0)
    assert [e["event"] for e in wire.said if e["event"].startswith("offer_")] == [
        "offer_shown",
        "offer_accepted",
    ]

    if os.environ.get("LIVEOFFERS_SCREENSHOTS") == "1":
        # For the docs: the banner on the demo shop, as a shopper sees it.
        page.goto(f"{live_offers.url}/")
        page.locator(ADD_TO_CART).first.click()
        wait_for_banner(page)
        page.wait_for_timeout(500)  # past the slide-in
        page.screenshot(path=ROOT / "docs" / "banner.png")


def test_an_unanswered_offer_comes_back_after_a_reload_until_it_is_closed(
    shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    page.goto(third_party_shop.page("returning"))
    page.click(ADD_TO_CART)
    banner = wait_for_banner(page)
    (offer,) = wire.frames("offer")

    page.reload()  # unanswered: the server sends it again, and the embed shows it again
    expect(wait_for_banner(page).locator("strong")).to_have_text(offer["code"])
    wire.linger(0.3)
    assert len(wire.said_event("offer_shown")) == 1  # shown was said once, on the first page

    page.keyboard.press("Escape")
    expect(banner).to_have_count(0)
    wire.wait_acked("offer_dismissed")
    row = live_offers.offer_row(offer["offer_id"], "shown_at", "dismissed_at")
    assert row == {"shown_at": True, "accepted_at": False, "dismissed_at": True}

    page.reload()  # answered: not shown again
    wire.wait_until("welcomed a third time", lambda: len(wire.frames("welcome")) == 3)
    wire.linger(0.5)
    expect(banner).to_have_count(0)


def test_on_offer_replaces_the_banner(shopper: Shopper, third_party_shop: ThirdPartyShop):
    page, wire = shopper.page, shopper.wire
    page.goto(third_party_shop.page("own-offers", calls=KEEP_OFFERS))
    page.click(ADD_TO_CART)
    page.wait_for_function("window.offers.length == 1", timeout=OFFER_WAIT_MS)
    (offer,) = wire.frames("offer")
    assert page.evaluate("offers[0]") == offer
    wire.linger(0.3)
    expect(page.locator("#liveoffers-banner")).to_have_count(0)
    assert wire.said_event("offer_shown") == []  # the shop's to say, when it shows it


def test_a_handler_registered_after_the_offer_arrived_takes_it_over_from_the_banner(
    shopper: Shopper, third_party_shop: ThirdPartyShop
):
    page, wire = shopper.page, shopper.wire
    page.goto(third_party_shop.page("late-handler"))
    page.click(ADD_TO_CART)
    banner = wait_for_banner(page)
    page.evaluate(KEEP_OFFERS)  # a shop script that loaded late
    expect(banner).to_have_count(0)
    (offer,) = wire.frames("offer")
    assert page.evaluate("offers") == [offer]
