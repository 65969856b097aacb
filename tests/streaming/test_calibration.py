"""The calibration's statistics (streaming/calibration.py): on the shipped UCI table, on a small
clickstream whose figures are known by hand, and the generator within its targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.calibration import (
    STATISTICS,
    TARGETS,
    Figures,
    as_clicksessions,
    even_users,
    of_sessions,
    of_uci,
    table,
)
from streaming.clickstream import ClickSession, read_events_csv
from streaming.generator import generate_sessions

UCI = Path(__file__).parent.parent / "fixtures/online_shoppers/online_shoppers_intention.csv"


@pytest.fixture(scope="module")
def uci() -> Figures:
    return of_uci(UCI)


def test_the_uci_table_gives_its_published_purchase_rate_and_pages(uci: Figures):
    # 12,330 rows less those with a missing or negative figure; 15.5% bought (Sakar et al.)
    assert uci["sessions"] == 12_283
    assert uci["bought"] == pytest.approx(0.1553, abs=0.0005)
    assert uci["product_views"] == 18
    assert uci["product_views_bought"] == 29
    assert uci["product_views_left"] == 16
    assert uci["gap_seconds"] == pytest.approx(30.3, abs=0.05)
    assert uci["session_seconds"] == pytest.approx(683.8, abs=0.5)


def test_the_uci_table_has_no_carts_and_no_prices(uci: Figures):
    for name in ("carted", "carts_bought", "basket_adds", "price", "add_to_purchase_seconds"):
        assert uci[name] is None


# Four sessions (seconds, event, product, price): one buys after a gap, one keeps browsing
# after the add and leaves, one only looks, one adds twice and leaves at once.
HISTORY = """session,time,event,product,price
bought,0,product_view,p1,10
bought,10,product_view,p2,20
bought,40,add_to_cart,p2,20
bought,100,purchase,,20
browsed,0,product_view,p1,10
browsed,20,add_to_cart,p1,10
browsed,50,product_view,p3,30
browsed,70,product_view,p4,40
looked,0,product_view,p5,50
twice,0,product_view,p1,10
twice,5,add_to_cart,p1,10
twice,15,add_to_cart,p1,10
"""


@pytest.fixture
def known(tmp_path: Path) -> Figures:
    path = tmp_path / "history.csv"
    path.write_text(HISTORY)
    read = read_events_csv(path)
    assert read.skipped == 0
    return of_sessions(read.sessions, source="by hand")


def test_a_small_clickstream_gives_the_figures_counted_by_hand(known: Figures):
    assert known["sessions"] == 4
    # gaps 10, 30, 60 | 20, 30, 20 | - | 5, 10
    assert known["gap_seconds"] == 20
    assert known["product_views"] == 1.5  # 2, 3, 1, 1
    assert known["product_views_bought"] == 2
    assert known["product_views_left"] == 1
    assert known["session_seconds"] == 42.5  # 100, 70, 0, 15
    assert known["bought"] == 0.25
    assert known["carted"] == 0.75
    assert known["carts_bought"] == pytest.approx(1 / 3)
    assert known["basket_adds"] == pytest.approx(4 / 3)
    assert known["views_before_add"] == 1  # 2, 1, 1
    assert known["bought_browsing_on"] == 0
    assert known["left_browsing_on"] == 0.5  # browsed did, twice did not
    assert known["add_to_purchase_seconds"] == 60
    assert known["price"] == 20  # 10, 20, 10, 30, 40, 50, 10


def test_only_shoppers_of_an_even_user_id_are_measured():
    sessions = [ClickSession(str(n), "x", user=user) for n, user in enumerate(["2", "3", "", "a"])]
    assert [s.user for s in even_users(sessions)] == ["2"]


@pytest.fixture(scope="module")
def generated() -> Figures:
    return of_sessions(as_clicksessions(generate_sessions(4000, seed=0)), source="generator")


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.statistic)
def test_the_generator_meets_each_calibration_target(generated: Figures, target):
    figure = generated[target.statistic]
    assert target.met_by(figure), f"{target.statistic}: {figure} against {target.value}"


def test_every_target_is_a_statistic_with_a_source():
    assert {t.statistic for t in TARGETS} <= set(STATISTICS)
    assert all(t.source and t.tolerance >= 0 for t in TARGETS)


def test_the_table_puts_sources_side_by_side(uci: Figures, known: Figures):
    text = table([uci, known])
    assert "UCI Online Shoppers" in text and "by hand" in text
    assert all(name in text for name in STATISTICS)
    assert "target gap_seconds:" in text
