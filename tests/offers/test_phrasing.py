"""Reasons in a shop owner's words (offers/phrasing.py): one phrase a topic, the pause never news."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from offers.phrasing import TOPICS, duration, money, phrases, reasons_in_words
from streaming.features import FEATURE_NAMES, as_dicts
from streaming.generator import generate_sessions
from streaming.scoring import Scorer
from streaming.training import pause_examples, train_booster

PAUSE = 30.0


def reason(feature: str, value: float, contribution: float) -> dict[str, Any]:
    return {"feature": feature, "value": value, "contribution": contribution}


def said(*reasons: dict[str, Any], features: dict[str, float] | None = None) -> list[str]:
    return reasons_in_words(list(reasons), features or {}, pause_seconds=PAUSE)


def one(feature: str, value: float, contribution: float = 0.5, **features: float) -> str:
    (text,) = said(reason(feature, value, contribution), features={feature: value, **features})
    return text


# --- every feature -------------------------------------------------------------------------------


def test_every_feature_has_a_topic():
    assert set(TOPICS) == set(FEATURE_NAMES)


def test_the_cart_value_is_money_to_the_cent():
    assert one("cart_value", 340.0) == "cart worth 340.00 (raises risk)"
    assert one("cart_value", 1234.5, -0.3) == "cart worth 1,234.50 (lowers risk)"


def test_the_cart_size_says_items_and_products():
    assert (
        one("cart_quantity", 3, cart_lines=2)
        == "3 items in the cart (2 different products) (raises risk)"
    )
    assert one("cart_lines", 2, -0.4, cart_quantity=2) == "2 items in the cart (lowers risk)"
    assert one("cart_quantity", 1, cart_lines=1) == "only 1 item in the cart (raises risk)"
    assert one("cart_quantity", 1, -0.2, cart_lines=1) == "1 item in the cart (lowers risk)"


def test_adds_alone_say_how_often_the_shopper_added():
    assert said(reason("adds", 3, 0.2)) == ["added to cart 3 times (raises risk)"]
    assert said(reason("adds", 1, 0.2)) == ["added to cart once (raises risk)"]


def test_browsing_says_products_and_pages():
    features = {"distinct_products": 8, "product_views": 9, "page_views": 12}
    assert (
        one("product_views", 9, -0.5, **features)
        == "viewed 8 products across 12 pages (lowers risk)"
    )
    assert (
        one("distinct_products", 2, 0.5, page_views=5)
        == "viewed only 2 products across 5 pages (raises risk)"
    )
    assert one("product_views", 4, 0.5) == "viewed 4 products (raises risk)"
    assert one("page_views", 3, 0.5) == "viewed 3 pages (raises risk)"
    assert (
        one("distinct_products", 0, 0.5, page_views=2)
        == "viewed no product across 2 pages (raises risk)"
    )


def test_comparing_carries_its_direction_in_its_words():
    assert (
        one("views_since_add", 2, 0.6)
        == "compared only 2 products since adding to cart (raises risk)"
    )
    assert (
        one("views_since_add", 5, -0.6) == "compared 5 products since adding to cart (lowers risk)"
    )
    assert (
        one("views_since_add", 7, 0.6) == "compared 7 products since adding to cart (raises risk)"
    )
    assert (
        one("views_since_add", 1, -0.6) == "compared 1 product since adding to cart (lowers risk)"
    )
    assert one("views_since_add", 0, 0.6) == "viewed nothing since adding to cart (raises risk)"


def test_the_time_since_the_add_is_said_only_when_the_add_came_well_before_the_pause():
    assert said(reason("seconds_since_add", PAUSE, 0.9)) == []
    assert said(reason("seconds_since_add", PAUSE + 5, 0.9)) == []
    assert one("seconds_since_add", PAUSE + 12, -0.3) == "added to cart 42 s ago (lowers risk)"
    assert one("seconds_since_add", 180, -0.3) == "added to cart 3 min ago (lowers risk)"


def test_the_pause_is_the_live_one():
    reasons = [reason("seconds_since_add", 120, 0.4)]
    assert reasons_in_words(reasons, {}, pause_seconds=120) == []
    assert reasons_in_words(reasons, {}, pause_seconds=30) == [
        "added to cart 2 min ago (raises risk)"
    ]


def test_time_on_the_site():
    assert one("session_seconds", 45, 0.2) == "on the site for 45 s (raises risk)"
    assert one("session_seconds", 600, -0.2) == "on the site for 10 min (lowers risk)"
    assert one("session_seconds", 3 * 3600, -0.2) == "on the site for 3 h (lowers risk)"


def test_searches_never_say_zero():
    assert one("searches", 0, 0.4) == "made no search (raises risk)"
    assert one("searches", 1, 0.4) == "made only 1 search (raises risk)"
    assert one("searches", 1, -0.4) == "made 1 search (lowers risk)"
    assert one("searches", 4, -0.4) == "made 4 searches (lowers risk)"


def test_removals():
    assert one("removes", 0, -0.1) == "removed nothing from the cart (lowers risk)"
    assert one("removes", 2, 0.3) == "removed from the cart twice (raises risk)"
    assert one("removes", 5, 0.3) == "removed from the cart 5 times (raises risk)"


def test_the_tab_checkout_and_offers_seen():
    assert one("hidden", 1, 0.8) == "left the shop's tab (raises risk)"
    assert one("hidden", 0, -0.8) == "kept the shop's tab in view (lowers risk)"
    assert one("checkout_started", 1, -1.0) == "started checkout (lowers risk)"
    assert one("checkout_started", 0, 0.3) == "has not started checkout (raises risk)"
    assert one("offers_seen", 0, 0.1) == "never shown an offer before (raises risk)"
    assert one("offers_seen", 2, -0.1) == "shown 2 offers before (lowers risk)"


def test_the_hour_is_an_hour_of_utc():
    assert one("hour_of_day", 14, 0.1) == "at 14:00 UTC (raises risk)"
    assert one("hour_of_day", 0, -0.1) == "at 00:00 UTC (lowers risk)"


def test_durations_and_money():
    assert [duration(s) for s in (0.4, 45, 89, 90, 150, 5399, 5400)] == [
        "0 s",
        "45 s",
        "89 s",
        "2 min",
        "2 min",
        "90 min",
        "2 h",
    ]
    assert money(0) == "0.00" and money(19.999) == "20.00"


# --- merging -------------------------------------------------------------------------------------


def test_features_that_say_the_same_thing_become_one_reason_with_their_pushes_summed():
    features = {"product_views": 9, "distinct_products": 8, "page_views": 12}
    found = phrases(
        [reason("product_views", 9, 0.5), reason("distinct_products", 8, -0.2)],
        features,
        pause_seconds=PAUSE,
    )
    assert [(p.topic, p.text, p.features) for p in found] == [
        ("browsing", "viewed 8 products across 12 pages", ("product_views", "distinct_products"))
    ]
    assert found[0].contribution == pytest.approx(0.3) and found[0].raises


def test_the_cart_size_is_one_reason_however_many_of_its_features_pushed():
    found = said(
        reason("cart_lines", 2, 0.3),
        reason("cart_quantity", 3, -0.5),
        reason("adds", 4, 0.1),
        features={"cart_lines": 2, "cart_quantity": 3, "adds": 4},
    )
    assert found == ["3 items in the cart (2 different products) (lowers risk)"]


def test_reasons_come_strongest_first_after_merging():
    found = said(
        reason("views_since_add", 6, 0.9),
        reason("product_views", 9, 0.5),
        reason("page_views", 12, 0.6),
        reason("hidden", 1, -0.2),
        features={"distinct_products": 8},
    )
    assert found == [
        "viewed 8 products across 12 pages (raises risk)",
        "compared 6 products since adding to cart (raises risk)",
        "left the shop's tab (lowers risk)",
    ]


def test_what_is_not_a_reason_is_left_out():
    reasons: Any = [
        "views_since_add",
        {"feature": 3, "value": 1, "contribution": 1},
        {"feature": "searches", "value": "2", "contribution": 1},
        {"feature": "searches", "value": 2, "contribution": float("nan")},
        {"feature": "searches", "value": 2, "contribution": 0.0},
        {"feature": "hidden", "value": True, "contribution": 1},
    ]
    assert reasons_in_words(reasons, {"cart_value": "x"}, pause_seconds=PAUSE) == []
    assert reasons_in_words(None, None, pause_seconds=PAUSE) == []
    assert reasons_in_words({"feature": "x"}, [], pause_seconds=PAUSE) == []  # type: ignore[arg-type]


def test_a_feature_of_another_features_version_is_said_as_it_is():
    assert said(reason("scroll_depth", 0.75, 0.2)) == ["scroll depth 0.75 (raises risk)"]


# --- 200 decisions as the worker explains them ---------------------------------------------------

ZERO_COUNT = re.compile(r"(^|\D)0 (products?|searches|search|items?|pages?|times|offers?)\b")


@pytest.fixture(scope="module")
def explained() -> list[tuple[dict[str, float], list[dict[str, Any]]]]:
    """200 pauses of generated shoppers with their features and top TreeSHAP reasons, from a small
    model trained on a few thousand generated sessions, the way the worker gets them."""
    X, y = pause_examples(generate_sessions(2000, seed=3), pause_seconds=PAUSE)
    booster, _ = train_booster(X, y, seed=1, rounds=40, threads=1)
    scorer = Scorer(booster, label="cart-risk@1")
    paused, _ = pause_examples(generate_sessions(400, seed=9), pause_seconds=PAUSE)
    rows = np.random.default_rng(5).choice(len(paused), 200, replace=False)
    matrix = paused[np.sort(rows)]
    reasons = [
        [{"feature": r.feature, "value": r.value, "contribution": r.contribution} for r in top]
        for top in scorer.reasons(matrix)
    ]
    return list(zip(as_dicts(matrix), reasons, strict=True))


@pytest.mark.slow  # trains a small model (a second or so)
def test_generated_decisions_read_as_plain_words(explained):
    said_any = 0
    for features, reasons in explained:
        found = phrases(reasons, features, pause_seconds=PAUSE)
        words = [str(phrase) for phrase in found]
        said_any += bool(words)
        for text in words:
            assert not ZERO_COUNT.search(text), text
            assert re.search(r" \((raises|lowers) risk\)$", text), text
            assert "_" not in text, text  # no feature names
        topics = [phrase.topic for phrase in found]
        assert len(topics) == len(set(topics)), words
        # the pause itself is never a reason
        since = features["seconds_since_add"]
        if since <= PAUSE + 5:
            assert not any("added to cart" in text and "ago" in text for text in words), words
    assert said_any >= 190


@pytest.mark.slow
def test_generated_decisions_have_reasons_about_several_topics(explained):
    topics = {
        phrase.topic
        for features, reasons in explained
        for phrase in phrases(reasons, features, pause_seconds=PAUSE)
    }
    # (which topics lead follows the generator: its buyers and leavers differ most in what they
    # look at after the add, in the cart and in the tab, not in how much they browsed before)
    assert len(topics) >= 5 and {"comparing", "cart size", "tab"} <= topics
