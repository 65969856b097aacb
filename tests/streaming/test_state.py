from __future__ import annotations

import pytest

from streaming.state import (
    MAX_CART_LINES,
    MAX_DISTINCT_PRODUCTS,
    RECENT_IDS,
    CartFull,
    SessionState,
)
from tests.factories import T0, event


def test_it_keeps_cart_lines_and_value(shopper_with_full_cart: SessionState):
    s = shopper_with_full_cart
    assert s.cart == {"sku-1": (2, 20.0)}
    assert s.cart_value == 40.0
    assert (s.page_views, s.product_views, s.adds) == (1, 2, 1)
    assert s.distinct_products == 2
    assert s.last_add_at == T0 + 3
    assert s.views_since_add == 1


def test_adding_the_same_product_again_adds_to_its_line(shopper_with_full_cart: SessionState):
    shopper_with_full_cart.apply(event("e5", "add_to_cart", product_id="sku-1", price=18.0), T0 + 5)
    assert shopper_with_full_cart.cart == {"sku-1": (3, 18.0)}
    assert shopper_with_full_cart.views_since_add == 0


def test_remove_takes_part_or_all_of_a_line(shopper_with_full_cart: SessionState):
    s = shopper_with_full_cart
    s.apply(event("e5", "remove_from_cart", product_id="sku-1", quantity=1), T0 + 5)
    assert s.cart == {"sku-1": (1, 20.0)}
    s.apply(event("e6", "remove_from_cart", product_id="sku-1"), T0 + 6)
    assert s.cart == {}
    assert s.removes == 2
    s.apply(event("e7", "remove_from_cart", product_id="never-added"), T0 + 7)
    assert s.cart == {}


def test_only_activity_events_move_the_last_activity(shopper_with_full_cart: SessionState):
    s = shopper_with_full_cart
    before = s.activity_seq
    s.apply(event("e5", "heartbeat"), T0 + 50)
    s.apply(event("e6", "visibility", state="hidden"), T0 + 60)
    s.apply(event("e7", "offer_shown", offer_id="o-1"), T0 + 70)
    assert s.last_activity == T0 + 4
    assert s.last_seen == T0 + 70
    assert s.activity_seq == before
    assert s.hidden is True
    assert s.offers_shown == 1
    s.apply(event("e8", "search", query="cheaper"), T0 + 80)
    assert (s.last_activity, s.activity_seq, s.searches) == (T0 + 80, before + 1, 1)


def test_the_pause_deadline_follows_the_last_activity(shopper_with_full_cart: SessionState):
    assert shopper_with_full_cart.pause_deadline(30) == T0 + 4 + 30


def test_an_empty_cart_never_pauses(fresh_session: SessionState):
    fresh_session.apply(event("e1", "product_view", product_id="a", price=1), T0 + 1)
    assert fresh_session.pause_deadline(30) is None


def test_a_purchase_ends_pausing(shopper_with_full_cart: SessionState):
    shopper_with_full_cart.apply(event("e5", "checkout_start"), T0 + 5)
    shopper_with_full_cart.apply(event("e6", "purchase", order_id="o-1", total=40), T0 + 6)
    assert shopper_with_full_cart.checkout_started and shopper_with_full_cart.purchased
    assert shopper_with_full_cart.pause_deadline(30) is None


def test_a_full_cart_refuses_another_product_and_changes_nothing(fresh_session: SessionState):
    for i in range(MAX_CART_LINES):
        fresh_session.apply(event(f"a{i}", "add_to_cart", product_id=f"p{i}", price=1), T0 + 1)
    with pytest.raises(CartFull):
        fresh_session.apply(event("over", "add_to_cart", product_id="one-more", price=1), T0 + 2)
    assert fresh_session.cart_lines == MAX_CART_LINES
    assert fresh_session.last_activity == T0 + 1
    fresh_session.apply(event("more", "add_to_cart", product_id="p0", price=1), T0 + 3)
    assert fresh_session.cart["p0"][0] == 2


def test_distinct_products_are_counted_up_to_a_bound(fresh_session: SessionState):
    for i in range(MAX_DISTINCT_PRODUCTS + 10):
        fresh_session.apply(event(f"v{i}", "product_view", product_id=f"p{i}", price=1), T0 + i)
        fresh_session.apply(event(f"w{i}", "product_view", product_id=f"p{i}", price=1), T0 + i)
    assert fresh_session.distinct_products == MAX_DISTINCT_PRODUCTS


def test_ids_are_matched_whole_not_across_neighbouring_hashes(fresh_session: SessionState):
    for i in range(RECENT_IDS):
        fresh_session.remember(f"id-{i}")
    for i in range(RECENT_IDS):
        assert fresh_session.has_seen(f"id-{i}")
    assert sum(fresh_session.has_seen(f"other-{i}") for i in range(10_000)) == 0


def test_it_remembers_a_bounded_window_of_event_ids(fresh_session: SessionState):
    for i in range(RECENT_IDS + 5):
        fresh_session.remember(f"e-{i}")
    assert not fresh_session.has_seen("e-0")
    assert not fresh_session.has_seen("e-4")
    assert fresh_session.has_seen("e-5")
    assert fresh_session.has_seen(f"e-{RECENT_IDS + 4}")
    assert not fresh_session.has_seen("never")
