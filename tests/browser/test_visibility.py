"""The `hidden` feature from real Chromium: leaving a page is not hiding the tab, and a tab the
shopper leaves for another is hidden until they come back.

Chromium fires `pagehide`, then `visibilitychange` (hidden), when a page is left. Playwright's
own tabs never hide: the focus emulation it turns on for every page it drives keeps the page
visible whatever tab is in front, and its launch turns the back/forward cache off. So the tests
of tabs and of that cache run a Chromium of their own, attached over CDP without Playwright's
defaults, where a tab in front hides the others and a page left can be kept, as for a shopper.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.browser.conftest import (
    ADD_TO_CART,
    BEACON_SPY,
    CHROMIUM_ARGS,
    PAUSE,
    LiveOffers,
    Shopper,
    ThirdPartyShop,
    Wire,
)

pytestmark = pytest.mark.e2e

# Shop pages linking each to the next: `calls` runs in the body, before the tag loads.
NEXT_LINK = (
    "document.currentScript.after(Object.assign(document.createElement('a'), "
    "{{href: {href!r}, textContent: 'Next page'}}));"
)


def visibility_said(wire: Wire) -> list[str]:
    """The states the tab's pages said, over sockets or by beacon, once each, in order."""
    events = {e["id"]: e for e in wire.said + wire.beaconed() if e["event"] == "visibility"}
    return [e["props"]["state"] for e in sorted(events.values(), key=lambda e: e["ts"])]


def decisions_until(live_offers: LiveOffers, session: str, count: int) -> list[dict[str, Any]]:
    """The session's decisions once there are `count` (recorded a moment after each pause)."""
    deadline = time.monotonic() + PAUSE + 5
    while len(found := live_offers.decisions_of(session, timeout=0)) < count:
        assert time.monotonic() < deadline, f"{len(found)} decisions, not {count}"
        time.sleep(0.1)
    return found


@pytest.fixture
def tabbed_shopper(
    browser: Browser, chromium: Path, live_offers: LiveOffers, tmp_path: Path
) -> Iterator[Shopper]:
    """A shopper's tab in a Chromium whose tabs hide when another comes to the front, and
    whose back/forward cache keeps pages."""
    live_offers.ensure_running()
    process = subprocess.Popen(
        [
            str(chromium),
            *CHROMIUM_ARGS,
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = tmp_path / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, "Chromium did not start"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        own = browser.browser_type.connect_over_cdp(f"http://127.0.0.1:{port}", no_defaults=True)
        context = own.contexts[0]
        context.add_init_script(BEACON_SPY)
        page = context.pages[0]
        yield Shopper(page, Wire(page, live_offers.url))
        own.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_shopper_going_from_page_to_page_is_not_hidden(
    shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    first = third_party_shop.page("walk-1", calls=NEXT_LINK.format(href="walk-2.html"))
    for n in range(2, 5):
        third_party_shop.page(f"walk-{n}", calls=NEXT_LINK.format(href=f"walk-{n + 1}.html"))
    third_party_shop.page("walk-5")
    page.goto(first)
    page.click(ADD_TO_CART)
    wire.wait_acked("add_to_cart")  # the session is known: what pages leave goes by beacon
    for n in range(2, 6):
        page.click("text=Next page")  # each page hides as it is left, after its pagehide
        page.wait_for_url(f"**/walk-{n}.html")

    (decision,) = live_offers.decisions_of(wire.session)
    features = decision["features"]
    assert (features["page_views"], features["adds"]) == (5, 1)
    assert features["hidden"] == 0
    assert visibility_said(wire) == ["visible"] * 5  # one a page, none on leaving


def test_a_tab_left_for_another_is_hidden_until_the_shopper_comes_back(
    tabbed_shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = tabbed_shopper.page, tabbed_shopper.wire
    other = page.context.new_page()  # another tab, in front of the shop's for now
    other.goto(f"{third_party_shop.url}/other.html")
    page.bring_to_front()
    page.goto(third_party_shop.page("tabs"))
    assert page.evaluate("document.visibilityState") == "visible"
    page.click(ADD_TO_CART)
    wire.wait_acked("add_to_cart")

    other.bring_to_front()  # the shopper looks at another tab: the shop's page stays, hidden
    wire.wait_until(
        "the page said hidden", lambda: visibility_said(wire) == ["visible", "hidden"], 2
    )
    (paused,) = decisions_until(live_offers, wire.session, 1)
    assert paused["features"]["hidden"] == 1

    page.bring_to_front()  # back to the shop: visible again
    wire.wait_until(
        "the page said visible",
        lambda: visibility_said(wire) == ["visible", "hidden", "visible"],
        2,
    )
    page.click(ADD_TO_CART)
    back = decisions_until(live_offers, wire.session, 2)[-1]
    assert back["features"]["hidden"] == 0
    assert back["features"]["adds"] == 2


def test_a_page_back_from_the_back_forward_cache_says_visible_again(
    tabbed_shopper: Shopper, third_party_shop: ThirdPartyShop
):
    page, wire = tabbed_shopper.page, tabbed_shopper.wire
    page.goto(third_party_shop.page("cached"))
    wire.wait_acked("visibility")
    page.evaluate("addEventListener('pageshow', (e) => (window.restored = e.persisted))")
    page.click("text=Another page")
    page.wait_for_url("**/other.html")
    page.evaluate("history.back()")
    # the same page, not loaded again (a new one would have no `restored`)
    page.wait_for_function("window.restored === true", timeout=5000)
    wire.wait_until("the page said visible again", lambda: len(wire.said_event("visibility")) == 2)
    assert visibility_said(wire) == ["visible", "visible"]


def test_a_page_hidden_just_before_its_pagehide_says_nothing_of_it(
    shopper: Shopper, third_party_shop: ThirdPartyShop
):
    # Chromium fires pagehide first; a browser firing it just after, in the same task, by hand.
    page, wire = shopper.page, shopper.wire
    page.goto(third_party_shop.page("hide-then-pagehide"))
    wire.wait_acked("visibility")
    page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {value: 'hidden'});"
        "document.dispatchEvent(new Event('visibilitychange'));"
        "dispatchEvent(new PageTransitionEvent('pagehide'));"
    )
    wire.linger(0.3)
    assert visibility_said(wire) == ["visible"]
