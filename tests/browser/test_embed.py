"""The embed in real Chromium on a shop of another origin: sessions, events, reliability, privacy."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import (
    ADD_TO_CART,
    KEEP_OFFERS,
    SITE,
    LiveOffers,
    ShopDatabase,
    Shopper,
    SocketValve,
    ThirdPartyShop,
    event_counters,
)
from tests.subprocesses import Server

pytestmark = pytest.mark.e2e

TOKEN_KEY = f"liveoffers:token:{SITE}"


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def stored_token(shopper: Shopper) -> str | None:
    token: str | None = shopper.page.evaluate(f"sessionStorage.getItem({TOKEN_KEY!r})")
    return token


def test_a_page_on_another_origin_embeds_the_tag(
    shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    page.goto(third_party_shop.page("embed"))
    assert page.evaluate("location.origin") != live_offers.url

    (view,) = wire.wait_acked("page_view")
    assert view["props"] == {"url": "/embed.html", "page_type": "product"}
    (welcome,) = wire.frames("welcome")
    assert stored_token(shopper) == welcome["token"]
    assert wire.sockets[0].url.startswith(f"ws://127.0.0.1:{live_offers.server.port}/ws/collect/")

    page.reload()  # the token resumes the same session
    wire.wait_until("the page says welcome again", lambda: len(wire.frames("welcome")) == 2)
    assert query_of(wire.sockets[1].url) == {"site": [SITE], "token": [welcome["token"]]}
    assert wire.frames("welcome")[1]["session"] == welcome["session"]


def test_calls_made_before_load_are_replayed_and_autocapture_sends_add_to_cart(
    shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    page.goto(
        third_party_shop.page(
            "replay",
            calls="liveoffers('track', 'search', {query: 'shoes'}); "
            "window.queued = liveoffers.q.length;",
        )
    )
    # The stub queued the call; the embed, once loaded, took over and replayed it.
    page.wait_for_function("window.liveoffers.loaded")
    assert page.evaluate("window.queued") == 1
    page.click(ADD_TO_CART)
    (added,) = wire.wait_acked("add_to_cart")
    assert added["props"] == {"product_id": "sku-espresso", "price": 249.0, "quantity": 1}
    (decision,) = live_offers.decisions_of(wire.session)
    features = decision["features"]
    assert (features["searches"], features["adds"], features["page_views"]) == (1, 1, 1)
    assert features["cart_value"] == 249.0


def test_navigating_away_delivers_the_last_events_by_beacon(
    shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    valve = SocketValve(page)
    page.goto(third_party_shop.page("leaving"))
    page.click(ADD_TO_CART)
    wire.wait_acked("add_to_cart")
    accepted, duplicate = live_offers.events()
    valve.close()  # whatever the socket sends from now on, no ack comes back
    page.evaluate(
        "liveoffers('track', 'search', {query: 'last words'}); location.href = 'other.html'"
    )
    page.wait_for_url("**/other.html")

    beacons = wire.beacons()
    assert beacons and all(b["url"] == f"{live_offers.url}/collect/" for b in beacons)
    body = json.loads(beacons[0]["body"])
    assert (body["site"], body["token"]) == (SITE, wire.frames("welcome")[0]["token"])
    beaconed = wire.beaconed()
    assert [e["props"] for e in beaconed if e["event"] == "search"] == [{"query": "last words"}]
    wire.wait_until(
        "the server has the beaconed events",
        lambda: live_offers.events() == (accepted + len(beaconed), duplicate),
    )
    (decision,) = live_offers.decisions_of(wire.session)
    assert decision["features"]["searches"] == 1


def test_events_made_while_the_server_was_down_arrive_once_after_reconnect(
    shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = shopper.page, shopper.wire
    # A shop that renders offers itself: the embed sends nothing of its own about them.
    page.goto(third_party_shop.page("outage", calls=KEEP_OFFERS))
    wire.wait_acked("page_view")
    live_offers.stop()
    wire.wait_until("the socket is closed", lambda: wire.sockets[0].is_closed())
    page.evaluate(
        "for (let i = 1; i <= 5; i++) liveoffers('track', 'search', {query: `shoes ${i}`})"
    )
    page.click(ADD_TO_CART)
    wire.linger(1)  # the embed tries to reconnect, and fails, meanwhile
    assert wire.said_event("search") == []

    live_offers.start_again()  # same port and database; live sessions are forgotten
    wire.wait_until("the new server says welcome", lambda: len(wire.frames("welcome")) == 2, 20)
    assert wire.frames("welcome")[1]["session"] == wire.session  # the token resumed it
    wire.wait_acked("search", 5)
    wire.wait_acked("add_to_cart")
    (decision,) = live_offers.decisions_of(wire.session)
    assert (decision["features"]["searches"], decision["features"]["adds"]) == (5, 1)
    page.wait_for_function("window.offers.length == 1")  # the new server's offer
    assert live_offers.events() == (6, 0)  # each applied once, none sent twice


def test_events_over_the_rate_limit_are_sent_again_later_and_applied_once(
    shopper: Shopper, third_party_shop: ThirdPartyShop, shop_database: ShopDatabase, tmp_path
):
    page, wire = shopper.page, shopper.wire
    env = {
        **shop_database.env,
        "RATE_EVENTS_PER_SECOND": "5",
        "RATE_BURST": "5",
        # a second server beside the shop's own: a journal of its own
        "RECORD_JOURNAL": str(tmp_path / "journal"),
    }
    with Server(env) as strict:
        page.goto(third_party_shop.page("busy", live_offers_url=strict.url, calls=KEEP_OFFERS))
        page.evaluate(
            "for (let i = 1; i <= 12; i++) liveoffers('track', 'search', {query: `shoes ${i}`})"
        )
        wire.wait_acked("search", 12, timeout=10)
        assert [f["code"] for f in wire.frames("error")][:1] == ["rate_limited"]
        assert event_counters(strict.url) == (
            14,
            0,
        )  # the page view, its visibility and 12 searches, once each


def test_do_not_track_sends_nothing(
    private_shopper: Shopper, third_party_shop: ThirdPartyShop, live_offers: LiveOffers
):
    page, wire = private_shopper.page, private_shopper.wire
    page.goto(third_party_shop.page("private"))
    page.wait_for_function("window.liveoffers.loaded")
    assert page.evaluate("navigator.doNotTrack") == "1"
    page.click(ADD_TO_CART)
    page.evaluate("liveoffers('track', 'search', {query: 'shoes'})")
    wire.linger(0.5)
    page.click("text=Another page")  # the page hides: still nothing
    page.wait_for_url("**/other.html")
    assert wire.sockets == []
    assert wire.beacons() == []
    assert wire.requests == [f"{live_offers.url}/static/liveoffers.js"]


@pytest.mark.usefixtures("live_offers")
def test_withdrawn_consent_sends_nothing_until_it_is_given_again(
    shopper: Shopper, third_party_shop: ThirdPartyShop
):
    page, wire = shopper.page, shopper.wire
    page.goto(third_party_shop.page("consent", calls="liveoffers('consent', false);"))
    page.wait_for_function("window.liveoffers.loaded")
    page.click(ADD_TO_CART)
    wire.linger(0.5)
    assert wire.sockets == []

    page.evaluate("liveoffers('consent', true)")
    page.click(ADD_TO_CART)
    wire.wait_acked("add_to_cart")
    assert [e["event"] for e in wire.said] == ["add_to_cart"]  # what came before was dropped

    page.evaluate("liveoffers('consent', false)")
    wire.wait_until("the socket is closed", lambda: wire.sockets[0].is_closed())
    page.click(ADD_TO_CART)
    page.evaluate("liveoffers('track', 'search', {query: 'shoes'})")
    page.click("text=Another page")
    page.wait_for_url("**/other.html")
    assert len(wire.sockets) == 1
    assert [e["event"] for e in wire.said] == ["add_to_cart"]
    assert wire.beacons() == []
