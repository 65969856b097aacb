"""The operator dashboard in real Chromium, while `manage.py simulate` shops against the server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ADD_TO_CART, PAUSE, LiveOffers, Shopper, ThirdPartyShop
from tests.subprocesses import ROOT

pytestmark = pytest.mark.e2e

DOCS = ROOT / "docs"


@pytest.fixture
def operator(browser: Browser, live_offers: LiveOffers) -> Iterator[Page]:
    """A staff member's browser, logged in."""
    live_offers.ensure_running()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies(
        [{"name": "sessionid", "value": live_offers.database.staff_cookie, "url": live_offers.url}]
    )
    page = context.new_page()
    yield page
    context.close()


NOT_YET = "\u2013"  # what a tile shows before its first figure


def tile(page: Page, name: str) -> int:
    text = page.locator(f"[data-tile={name}]").inner_text().replace(",", "")
    return 0 if text in ("", NOT_YET) else int(text)


def simulate(live_offers: LiveOffers, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "simulate",
                "--url",
                live_offers.url,
                "--shoppers",
                "20",
                "--seconds",
                "8",
            ],
            cwd=ROOT,
            env=live_offers.database.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_staff_watch_tiles_charts_and_at_risk_carts_change_under_simulated_shoppers(
    operator: Page, live_offers: LiveOffers, tmp_path: Path
):
    operator.goto(f"{live_offers.url}/dashboard/")
    expect(operator.locator("[data-status]")).to_have_text("Live", timeout=10_000)
    expect(operator.locator("[data-tile=model]")).to_have_text(
        re.compile(r"cart-risk@\d+"), timeout=5_000
    )
    chart_before = operator.locator("[data-chart=rate]").screenshot()
    decisions_before = tile(operator, "decisions")
    shoppers = simulate(live_offers, tmp_path / "simulate.log")
    try:
        busy = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and busy == 0:
            busy = tile(operator, "events_per_second")
            operator.wait_for_timeout(250)
        assert busy > 0, "events/s never moved"
        first_cart = operator.locator("[data-feed] > li").first
        expect(first_cart).to_be_visible(timeout=20_000)
        reasons = first_cart.locator(".reasons li")
        expect(reasons.first).to_contain_text(re.compile(r"(raises|lowers) risk"), timeout=10_000)
        expect(first_cart.locator(".why")).to_contain_text("reached the rule's")
        expect(first_cart.locator(".outcome")).to_have_text(re.compile("Offer|Holdout"))
        expect(first_cart.locator(".meta")).to_contain_text(re.compile(r"cart-risk@\d+"))
        assert shoppers.wait(40) == 0, (tmp_path / "simulate.log").read_text()
    finally:
        if shoppers.poll() is None:
            shoppers.kill()
            shoppers.wait()
    operator.wait_for_timeout(1500)
    assert tile(operator, "decisions") > decisions_before
    assert tile(operator, "live_sessions") > 0
    assert operator.locator("[data-chart=rate]").screenshot() != chart_before
    assert operator.locator("[data-uplift=verdict]").inner_text() != ""
    if os.environ.get("LIVEOFFERS_SCREENSHOTS") == "1":
        operator.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)


def test_anonymous_visitors_are_sent_to_the_login_page(browser: Browser, live_offers: LiveOffers):
    live_offers.ensure_running()
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_offers.url}/dashboard/")
    assert "/admin/login/" in page.url
    expect(page.locator("#id_username")).to_be_visible()
    context.close()


ITEM_WAIT_MS = (PAUSE + 5) * 1000  # the pause, the decision, the frame


def test_a_cart_in_the_feed_follows_its_offer_and_no_offers_show_when_asked(
    operator: Page, shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    operator.goto(f"{live_offers.url}/dashboard/")
    expect(operator.locator("[data-status]")).to_have_text("Live", timeout=10_000)
    toggle = operator.get_by_label("show no-offer decisions")
    expect(toggle).not_to_be_checked()  # off until asked for

    page, wire = shopper.page, shopper.wire
    page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=third_party_shop.url
    )
    page.goto(third_party_shop.page("dashboard-shopper"))
    page.click(ADD_TO_CART)
    banner = page.locator("#liveoffers-banner")
    expect(banner.get_by_role("status")).to_contain_text("Your code", timeout=ITEM_WAIT_MS)
    (offer,) = wire.frames("offer")

    # the operator sees the offer at once, why it was made, its reasons in words, then what the
    # shopper does with it
    item = operator.locator(f'[data-feed] > li[data-offer="{offer["offer_id"]}"]')
    expect(item).to_be_visible(timeout=5_000)
    expect(item.locator(".outcome")).to_have_text("Offer")
    expect(item.locator(".why")).to_have_text(re.compile(r"risk \d\.\d\d reached the rule's 0\.00"))
    expect(item.locator(".reasons li").first).to_contain_text(
        re.compile(r"(raises|lowers) risk"), timeout=5_000
    )
    expect(item.locator(".reasons")).not_to_contain_text(re.compile(r"\b0 (products|searches)"))
    expect(item.locator(".marks")).to_contain_text("shown", timeout=5_000)
    banner.get_by_role("button", name="Copy code").click()
    expect(item.locator(".mark.offer_accepted")).to_have_text("accepted", timeout=5_000)

    # another pause inside the cooldown: decided, no offer, and hidden until asked for
    page.click(ADD_TO_CART)
    no_offer = operator.locator(f'[data-feed] > li.no_offer[data-session="{wire.session}"]')
    expect(no_offer).to_have_count(1, timeout=ITEM_WAIT_MS)
    expect(no_offer).to_be_hidden()
    toggle.check()
    expect(no_offer).to_be_visible()
    expect(no_offer.locator(".outcome")).to_have_text("No offer")
    expect(no_offer.locator(".why")).to_have_text(re.compile(r"^cooldown: "))

    # remembered: after a reload the snapshot shows both, the offer still accepted
    operator.reload()
    expect(operator.locator("[data-status]")).to_have_text("Live", timeout=10_000)
    expect(toggle).to_be_checked()
    expect(no_offer).to_be_visible()
    expect(item.locator(".mark.offer_accepted")).to_be_visible()

    # the decision in the admin, once it is recorded
    link = item.get_by_role("link", name="in the admin").get_attribute("href")
    assert link is not None and "pause_key=" in link
    admin = operator.context.new_page()
    deadline = time.monotonic() + 10
    while True:
        admin.goto(f"{live_offers.url}{link}")
        if "/change/" in admin.url or time.monotonic() > deadline:
            break
        admin.wait_for_timeout(250)
    assert re.search(r"/admin/offers/decision/\d+/change/$", admin.url), admin.url
    expect(admin.locator("#content")).to_contain_text("reached the rule")
    expect(admin.locator("#content")).to_contain_text(re.compile(r"(raises|lowers) risk"))
    admin.close()
