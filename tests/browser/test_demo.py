"""The demo as a newcomer tries it, in real Chromium against the server `make run` starts.

A fresh database, `bootstrap_demo` (its rules, and the model it trains at first start), and the
demo's pause. Two checks:

- the generator's personas, walked through the demo shop by hand, give the features the
  generator gives the same persona: what the model learnt is what a real browser produces;
- a newcomer who fills a cart and dithers sees an offer within the pause and two seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from streaming.features import FEATURE_NAMES
from streaming.generator import CATALOGUE, generate_sessions
from streaming.training import pause_examples
from tests.browser.conftest import LiveOffers, ShopDatabase, Wire
from tests.subprocesses import STAFF_COOKIE, manage, project_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEMO_PAUSE = 10.0  # the Makefile's DEMO_PAUSE_SECONDS
# Time goes faster in a test than for a shopper: features of the clock are left out.
CLOCK = {"seconds_since_add", "session_seconds", "hour_of_day"}
DEMO_SKUS = [product.sku for product in CATALOGUE[:12]]  # the demo shop's products


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> ShopDatabase:
    """What `make run` sets up, with no control group (a held-out shopper gets no offer)."""
    tmp = tmp_path_factory.mktemp("demo")
    env = project_env(
        DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
        LIVEOFFERS_TEST_DIR=str(tmp),
        PAUSE_SECONDS=str(DEMO_PAUSE),
        HOLDOUT_PERCENT="0",
    )
    for command in (["migrate", "--noinput"], ["bootstrap_demo"]):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    cookie = manage("shell", "-v", "0", "-c", STAFF_COOKIE, env=env)
    assert cookie.returncode == 0, cookie.stderr
    return ShopDatabase(env, cookie.stdout.strip())


@pytest.fixture(scope="module")
def demo(demo_database: ShopDatabase) -> Iterator[LiveOffers]:
    server = LiveOffers(demo_database)
    yield server
    server.stop()


@dataclass
class Visit:
    """One shopper on the demo shop: a browser profile of its own, and its wire."""

    name: str
    context: BrowserContext
    page: Page
    wire: Wire
    url: str
    done_at: float = 0.0  # monotonic time of the last click
    offers: list[dict[str, Any]] = field(default_factory=list)

    def home(self) -> None:
        self.page.goto(self.url + "/")

    def view(self, sku: str) -> None:
        self.page.goto(f"{self.url}/product/{sku}/")

    def add(self, sku: str | None = None) -> None:
        """Add to the cart: on a product's page, or from the home page's list."""
        selector = "button.add" if sku is None else f"button.add[data-lo-product='{sku}']"
        adds = len(self.wire.said_event("add_to_cart"))
        self.page.click(selector)
        self.wire.wait_acked("add_to_cart", count=adds + 1)

    def cart(self) -> None:
        self.page.goto(self.url + "/cart/")

    def checkout(self) -> None:
        self.page.goto(self.url + "/checkout/")

    def settle(self) -> None:
        """Until the last page's events are acknowledged: from here on it dithers."""
        self.wire.wait_until("the page's events are said", lambda: self.wire.said)
        self.wire.wait_until(
            "the last event is acknowledged", lambda: self.wire.said[-1]["id"] in self.wire.acked
        )
        self.done_at = time.monotonic()


def open_visit(browser: Browser, demo: LiveOffers, name: str) -> Visit:
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    page = context.new_page()
    return Visit(name, context, page, Wire(page, demo.url), demo.url)


@pytest.fixture(scope="module")
def walked(browser: Browser, demo: LiveOffers) -> Iterator[dict[str, Visit]]:
    """Every persona and every newcomer walked through the shop, each in a browser profile of
    its own; then the pause and two seconds for all of them at once, offers heard meanwhile."""
    visits: dict[str, Visit] = {}
    try:
        for name, walk in (PERSONAS | NEWCOMERS).items():
            visits[name] = open_visit(browser, demo, name)
            walk(visits[name])
            visits[name].settle()
        last = visits[name]
        # Offers are heard by each tab while any page waits; each gets the pause and two seconds.
        while time.monotonic() < max(v.done_at for v in visits.values()) + DEMO_PAUSE + 2:
            last.page.wait_for_timeout(100)
            for v in visits.values():
                if not v.offers and v.wire.frames("offer"):
                    v.offers = v.wire.frames("offer")
        yield visits
    finally:
        for v in visits.values():
            v.context.close()


# --- the generator's personas, by hand --------------------------------------------------------
def browse(v: Visit) -> None:
    v.home()
    for sku in DEMO_SKUS[4:7]:
        v.view(sku)


def buy(v: Visit) -> None:
    """Looks at two others, adds the one it came for, and stops at checkout (the address and
    the card send no events)."""
    v.home()
    v.view(DEMO_SKUS[1])
    v.view(DEMO_SKUS[2])
    v.view(DEMO_SKUS[3])
    v.add(DEMO_SKUS[3])
    v.cart()
    v.checkout()


def compare(v: Visit) -> None:
    """Adds an expensive one, then looks at others of its kind."""
    v.home()
    v.view("sku-headphones")
    v.add("sku-headphones")
    for sku in ("sku-speaker", "sku-earbuds", "sku-speaker"):
        v.view(sku)


def abandon(v: Visit) -> None:
    """A look, an add, a look or two, then nothing."""
    v.home()
    v.view(DEMO_SKUS[9])
    v.add(DEMO_SKUS[9])
    v.view(DEMO_SKUS[10])


PERSONAS: dict[str, Callable[[Visit], None]] = {
    "browser": browse,
    "buyer": buy,
    "comparer": compare,
    "abandoner": abandon,
}


def generated_envelope(persona: str) -> dict[str, tuple[float, float]]:
    """Per feature, the lowest and highest value at the pauses of 2,000 generated sessions of
    the persona (at the demo's pause); empty when the persona never pauses with a cart."""
    sessions = generate_sessions(2000, seed=1, mix={persona: 1.0})
    X, _ = pause_examples(sessions, pause_seconds=DEMO_PAUSE)
    if not len(X):
        return {}
    return {
        name: (float(np.min(X[:, i])), float(np.max(X[:, i])))
        for i, name in enumerate(FEATURE_NAMES)
    }


def test_personas_walked_in_chromium_get_the_features_the_generator_gives_them(
    walked: dict[str, Visit], demo: LiveOffers
) -> None:
    for persona in PERSONAS:
        v = walked[persona]
        envelope = generated_envelope(persona)
        found = demo.decisions_of(v.wire.session, timeout=5)
        if not envelope:  # never fills a cart: never pauses
            assert found == [], f"{persona}: {found}"
            continue
        assert found, f"no decision for the {persona}"
        features = found[0]["features"]
        outside = {
            name: (features[name], envelope[name])
            for name in FEATURE_NAMES
            if name not in CLOCK
            and not envelope[name][0] - 1e-6 <= features[name] <= envelope[name][1] + 1e-6
        }
        assert outside == {}, f"{persona}: browser value, generated (low, high): {outside}"
        assert features["hidden"] == 0  # the tab stayed in front all along


# --- a newcomer -----------------------------------------------------------------------------
def two_items(v: Visit) -> None:
    v.home()
    v.view("sku-espresso")
    v.add("sku-espresso")
    v.view("sku-grinder")
    v.add("sku-grinder")


def one_and_five_compared(v: Visit) -> None:
    v.home()
    v.view("sku-espresso")
    v.add("sku-espresso")
    for sku in DEMO_SKUS[1:6]:
        v.view(sku)


def three_items(v: Visit) -> None:
    v.home()
    for sku in ("sku-espresso", "sku-grinder", "sku-kettle"):
        v.view(sku)
        v.add(sku)


def to_checkout(v: Visit) -> None:
    v.home()
    v.view("sku-espresso")
    v.add("sku-espresso")
    v.cart()
    v.checkout()


NEWCOMERS: dict[str, Callable[[Visit], None]] = {
    "added two products": two_items,
    "added one, compared five": one_and_five_compared,
    "added three products": three_items,
    "added one, went to checkout": to_checkout,
}


def test_a_newcomer_who_fills_a_cart_and_dithers_sees_an_offer(
    walked: dict[str, Visit], demo: LiveOffers
) -> None:
    shoppers = [walked[name] for name in NEWCOMERS]
    offered = [v.name for v in shoppers if v.offers]
    risks = {v.name: [d["risk"] for d in demo.decisions_of(v.wire.session)] for v in shoppers}
    print("risks at the pause:", risks)
    assert len(offered) >= 3, f"offers within the pause and 2 s for {offered} only; risks {risks}"
    for v in shoppers:  # the banner shows it
        if v.offers:
            assert v.page.locator("#liveoffers-banner").count() == 1
