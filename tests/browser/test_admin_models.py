"""The model registry in real Chromium against a real `serve`: compare two models on recorded
outcomes, activate one through its confirmation, roll back with the button."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.subprocesses import ROOT, Server, manage, prepared_env

pytestmark = pytest.mark.e2e

DOCS = ROOT / "docs"
MODELS = "/admin/offers/scoringmodel/"
# A superuser (models are changed by those who may change them) and her session cookie.
OPERATOR_COOKIE = (
    "from django.contrib.auth.models import User; from django.test import Client; "
    "u = User.objects.create_superuser('olga', password='pw-for-tests'); "
    "c = Client(); c.force_login(u); print(c.cookies['sessionid'].value)"
)
# Decisions whose outcome is known (generated pauses; a buyer bought a minute after), made
# without an offer: what the admin measures models on.
KNOWN_OUTCOMES = (
    "from offers.models import Site; from tests.offers.outcomes import record_outcomes; "
    "record_outcomes(Site.objects.get(key='demo'), 800)"
)


@dataclass(frozen=True)
class Registry:
    server: Server
    cookie: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A server whose registry holds, beside the tests' small model (cart-risk@1, retired), a
    model trained on generated shoppers (cart-risk@2, active) and a shallow one trained on fewer
    (cart-risk@3, in shadow), with 800 known outcomes recorded."""
    env, _ = prepared_env(tmp_path_factory.mktemp("registry"), PAUSE_SECONDS="30")
    for command in (
        ["train_model", "--force", "--sessions", "4000", "--rounds", "60"],
        ["train_model", "--shadow", "--sessions", "2000", "--rounds", "6", "--max-depth", "2"],
        ["shell", "-v", "0", "-c", KNOWN_OUTCOMES],
    ):
        result = manage(*command, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
    cookie = manage("shell", "-v", "0", "-c", OPERATOR_COOKIE, env=env)
    assert cookie.returncode == 0, cookie.stderr
    server = Server(env)
    yield Registry(server, cookie.stdout.strip())
    server.stop()


@pytest.fixture
def operator(browser: Browser, registry: Registry) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies(
        [{"name": "sessionid", "value": registry.cookie, "url": registry.server.url}]
    )
    page = context.new_page()
    yield page
    context.close()


def test_operators_compare_two_models_on_recorded_outcomes(operator: Page, registry: Registry):
    operator.goto(f"{registry.server.url}{MODELS}")
    for label in ("cart-risk@2", "cart-risk@3"):
        row = operator.locator("#result_list tbody tr", has_text=label)
        row.locator("input.action-select").check()
    operator.select_option("select[name=action]", "compare")
    operator.get_by_role("button", name="Go").click()

    expect(operator.locator("h1")).to_have_text("Compare models: cart-risk@2, cart-risk@3")
    expect(operator.locator("[data-outcomes]")).to_contain_text(
        "800 decisions of the last 30 days with a known outcome"
    )
    table = operator.locator("[data-figures] tbody tr")
    expect(table).to_have_count(2)
    for label in ("cart-risk@2", "cart-risk@3"):
        cells = table.filter(has_text=label).locator("td.num")
        expect(cells).to_have_count(7)
        expect(cells.nth(0)).to_have_text("800")
        expect(cells.nth(2)).to_have_text(re.compile(r"^0\.\d{4}$"))  # ROC-AUC
    for chart in ("roc", "calibration"):
        svg = operator.locator(f"svg[data-chart={chart}]")
        expect(svg).to_be_visible()
        expect(svg.locator("g[data-model]")).to_have_count(2)
        assert svg.bounding_box()["width"] > 300  # type: ignore[index]  # visible: has a box
    expect(operator.locator("[data-card]")).to_have_count(2)
    expect(operator.locator("[data-card='cart-risk@3']")).to_contain_text("generated sessions")
    expect(operator.locator("[data-card='cart-risk@2'] [data-importance] li").first).to_be_visible()
    if os.environ.get("LIVEOFFERS_SCREENSHOTS") == "1":
        operator.screenshot(path=str(DOCS / "compare.png"), full_page=True)


def test_operators_activate_with_a_confirmation_and_roll_back_with_the_button(
    operator: Page, registry: Registry
):
    url = registry.server.url
    operator.goto(f"{url}{MODELS}")
    operator.locator("#result_list a", has_text="cart-risk@3").click()
    operator.get_by_role("link", name="Activate…").click()

    expect(operator.locator("h1")).to_have_text("Activate cart-risk@3?")
    expect(operator.locator("[data-figures] tbody tr")).to_have_count(2)
    verdict = operator.locator("[data-verdict]")
    expect(verdict).to_contain_text("By the gate's rule cart-risk@3")
    operator.locator("[data-confirm-button]").click()

    expect(operator.locator(".messagelist")).to_contain_text(
        "Activated cart-risk@3 in place of cart-risk@2"
    )
    row = operator.locator("#result_list tbody tr", has_text="cart-risk@3")
    expect(row).to_contain_text("Active")

    operator.get_by_role("link", name="Roll back to cart-risk@2…").click()
    expect(operator.locator("[data-question]")).to_contain_text(
        "Roll back from cart-risk@3 to cart-risk@2"
    )
    operator.locator("[data-confirm-button]").click()
    expect(operator.locator(".messagelist")).to_contain_text(
        "Rolled back from cart-risk@3 to cart-risk@2"
    )

    operator.goto(f"{url}{MODELS}")
    operator.locator("#result_list a", has_text="cart-risk@3").click()
    timeline = operator.locator(".lo-timeline tbody tr")
    expect(timeline.first).to_contain_text("Retired")
    expect(operator.locator(".lo-timeline")).to_contain_text("olga")
    operator.get_by_role("link", name="History").click()
    expect(operator.locator("#change-history")).to_contain_text(
        "Activated: from cart-risk@2 to cart-risk@3"
    )
