"""The operator dashboard in real Chromium, while `manage.py simulate` shops against the server.

Before this module's server starts, the database gets a past the panels can show: known outcomes
(the model tile), offered and held-out sessions with their purchases (the money panel), a
reference of the active model's training data (drift) and a resolved alert; all of it is taken
away again after the module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    ADD_TO_CART,
    PAUSE,
    LiveOffers,
    ShopDatabase,
    Shopper,
    ThirdPartyShop,
)
from tests.subprocesses import ROOT, manage

pytestmark = pytest.mark.e2e

DOCS = ROOT / "docs"

# Sessions of the past this module writes (and takes away): their names start with it.
PAST = "past-"
PANELS_PAST = f"""
import datetime as dt
from decimal import Decimal
import numpy as np
from django.utils import timezone
from offers.models import Alert, Decision, Offer, ScoringModel, Site
from offers.services import offer_redeem, record_write
from streaming.drift import reference_of
from streaming.features import FEATURE_NAMES
from streaming.records import MarkMade
from streaming.scoring import load_model
from tests.offers.outcomes import pauses, record_outcomes

site = Site.objects.get(key="demo")
active = ScoringModel.objects.get(state="active")
scorer = load_model(bytes(active.artifact), label=active.label)
# what the active model learnt from, for drift
X, _ = pauses(600, 1)
ScoringModel.objects.filter(pk=active.pk).update(reference=reference_of(X, scorer.predict_proba(X)))
# known outcomes of decisions the active model scored two hours ago
known = record_outcomes(site, 120, age=dt.timedelta(hours=2), key="{PAST}", model=active)
# (shoppers who abandoned as often as the model said they would)
rows = np.asarray([[d.features[name] for name in FEATURE_NAMES] for d in known], np.float32)
chance = np.random.default_rng(7)
for i, (decision, risk) in enumerate(zip(known, scorer.predict_proba(rows))):
    decision.risk, decision.session = float(risk), f"{PAST}k{{i}}"
    bought = chance.random() >= risk
    decision.converted_at = decision.at + dt.timedelta(minutes=1) if bought else None
Decision.objects.bulk_update(known, ["risk", "session", "converted_at"])
# an hour ago, 40 at-risk sessions offered (every third redeemed its 10% code and paid 90)
# and 40 held out (every fourth paid 80)
at = timezone.now() - dt.timedelta(hours=1)
marks = []
for i in range(40):
    offered = Decision.objects.create(
        site=site, session=f"{PAST}o{{i}}", pause_key=f"{PAST}o{{i}}:1", at=at, outcome="offer"
    )
    if i % 3 == 0:
        Offer.objects.create(
            decision=offered, public_id=f"{PAST}{{i}}", session=f"{PAST}o{{i}}",
            code=f"PAST10-{{i}}", title="t", message="m", discount_percent=10, created_at=at,
            expires_at=at + dt.timedelta(hours=2),
        )
        offer_redeem(code=f"PAST10-{{i}}", site="demo", order_id=f"{PAST}{{i}}", total=Decimal(90))
    Decision.objects.create(
        site=site, session=f"{PAST}h{{i}}", pause_key=f"{PAST}h{{i}}:1", at=at, outcome="holdout"
    )
    if i % 4 == 0:
        marks.append(MarkMade(f"{PAST}h{{i}}", None, "purchase", at.timestamp() + 60, total=80.0))
record_write(records=marks)
Alert.objects.create(
    kind="budget_spent", subject="rule:{PAST}", severity="warning",
    message="rule 1 (10% off) spent its daily budget of 500: no more offers from it until "
    "midnight UTC", first_seen=at, last_seen=at, resolved_at=at + dt.timedelta(minutes=20),
)
"""
PANELS_PAST_GONE = f"""
from offers.models import Alert, DeadRecord, Decision, Mark, Offer, ScoringModel
Mark.objects.filter(session__startswith="{PAST}").delete()
Offer.objects.filter(session__startswith="{PAST}").delete()
Decision.objects.filter(session__startswith="{PAST}").delete()
Alert.objects.filter(subject="rule:{PAST}").delete()
Alert.objects.filter(kind="dead_records").delete()
DeadRecord.objects.all().delete()
ScoringModel.objects.filter(state="active").update(reference={{}})
"""


def shell(database: ShopDatabase, code: str) -> str:
    result = manage("shell", "-v", "0", "-c", code, env=database.env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def panels_past(shop_database: ShopDatabase) -> Iterator[None]:
    shell(shop_database, PANELS_PAST)
    yield
    shell(shop_database, PANELS_PAST_GONE)


@pytest.fixture(scope="module")
def live_offers(shop_database: ShopDatabase, panels_past: None) -> Iterator[LiveOffers]:  # noqa: ARG001
    """This module's server, started once the past is written: its first figures show it."""
    server = LiveOffers(shop_database)
    yield server
    server.stop()


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


# Why an offer was made: its risk reached the rule's, or it was one of the EXPLORE_PERCENT offered
# at random.
RULE_OR_EXPLORE = re.compile(r"reached the rule's|explore: offered at random")
NOT_YET = "\u2013"  # what a tile shows before its first figure


def money_figure(page: Page, name: str) -> int:
    return int(page.locator(f'[data-money="{name}"]').inner_text().replace(",", ""))


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
    # the past: the active model on its known outcomes, drift against its training data, money
    active = operator.locator("[data-model-rows] > tr[data-role=active]")
    expect(active.locator("[data-figure=roc_auc]")).to_have_text(
        re.compile(r"^[01]\.\d{3}$"), timeout=5_000
    )
    expect(active.locator("[data-figure=n]")).to_have_text("120")
    expect(operator.locator("[data-drift-rows] > tr")).to_have_count(17)  # the score, 16 features
    expect(operator.locator("[data-drift-summary]")).to_contain_text(
        re.compile(r"on \d+ decisions")
    )
    expect(operator.locator('[data-money="holdout.sessions"]')).to_have_text("40")
    offered_before = money_figure(operator, "offered.sessions")
    expect(operator.locator("[data-money=net_incremental_revenue]")).to_contain_text("95% CI")
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
        expect(first_cart.locator(".why")).to_contain_text(RULE_OR_EXPLORE)
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
    # the simulated shoppers were offered codes and bought (their purchases carry totals): in the
    # money within a refresh, each figure per 1,000 with its interval
    offered = operator.locator('[data-money="offered.sessions"]')
    expect(offered).not_to_have_text(str(offered_before), timeout=10_000)
    for figure in ("incremental_buyers", "incremental_revenue", "net_incremental_revenue"):
        expect(operator.locator(f"[data-money={figure}]")).to_contain_text(
            re.compile(r"\d \(95% CI [+\u2212]?€?[\d,.]+ to [+\u2212]?€?[\d,.]+\)")
        )
    assert operator.locator("[data-money=verdict]").inner_text() != ""
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
    expect(item.locator(".why")).to_have_text(
        re.compile(r"risk \d\.\d\d reached the rule's 0\.00|^explore: offered at random")
    )
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
    expect(admin.locator("#content")).to_contain_text(RULE_OR_EXPLORE)
    expect(admin.locator("#content")).to_contain_text(re.compile(r"(raises|lowers) risk"))
    admin.close()


DEAD_RECORD = (
    "from offers.models import DeadRecord; "
    "DeadRecord.objects.create(kind='decision', payload={}, error='site gone')"
)


def test_an_alert_shows_live_and_is_acknowledged_from_the_dashboard(
    operator: Page, live_offers: LiveOffers
):
    operator.goto(f"{live_offers.url}/dashboard/")
    expect(operator.locator("[data-status]")).to_have_text("Live", timeout=10_000)
    # from the snapshot: the latest resolved alert, greyed, with nothing to acknowledge
    resolved = operator.locator("[data-alerts] > li.resolved[data-kind=budget_spent]")
    expect(resolved).to_contain_text("spent its daily budget")
    expect(resolved.get_by_role("button")).to_have_count(0)

    # a record set aside: the worker's watch raises a critical alert (it checks every 10 s)
    shell(live_offers.database, DEAD_RECORD)
    alert = operator.locator("[data-alerts] > li.open.critical[data-kind=dead_records]")
    expect(alert.locator(".message")).to_contain_text("could not be written", timeout=12_000)
    expect(operator.locator("[data-alert-count]")).to_have_text(re.compile(r"^\d+ open alerts?$"))
    assert re.match(r"^\(\d+\) Live Offers", operator.title()), operator.title()

    alert.get_by_role("button", name="Acknowledge").click()
    expect(alert.locator(".meta")).to_contain_text("acknowledged by op")
    expect(alert.get_by_role("button")).to_have_count(0)
    request = urllib.request.Request(
        f"{live_offers.url}/api/alerts/",
        headers={"Cookie": f"sessionid={live_offers.database.staff_cookie}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        listed = json.load(response)["alerts"]
    [dead] = [a for a in listed if a["kind"] == "dead_records"]
    assert dead["acknowledged_by"] == "op" and dead["acknowledged_at"] is not None
