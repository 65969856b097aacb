from __future__ import annotations

from streaming.state import MAX_CART_LINES
from streaming.store import MemoryStore
from tests.factories import T0, event


async def test_a_repeated_id_is_acknowledged_again_and_applied_once():
    store = MemoryStore()
    add = event("e-1", "add_to_cart", product_id="sku-1", price=10)
    first = await store.apply(session_id="s", site="demo", events=[add], now=T0)
    again = await store.apply(session_id="s", site="demo", events=[add, add], now=T0 + 1)
    assert first.acked == ["e-1"] and first.duplicates == 0
    assert again.acked == ["e-1", "e-1"] and again.duplicates == 2
    state = await store.get("s")
    assert state is not None and state.cart == {"sku-1": (1, 10.0)}


async def test_a_refused_event_is_not_remembered_as_seen():
    store = MemoryStore()
    adds = [
        event(f"a{i}", "add_to_cart", product_id=f"p{i}", price=1) for i in range(MAX_CART_LINES)
    ]
    await store.apply(session_id="s", site="demo", events=adds, now=T0)
    over = event("over", "add_to_cart", product_id="new", price=1)
    result = await store.apply(session_id="s", site="demo", events=[over], now=T0 + 1)
    assert result.acked == [] and [e.code for e in result.errors] == ["invalid_props"]
    await store.apply(
        session_id="s",
        site="demo",
        events=[event("r", "remove_from_cart", product_id="p0")],
        now=T0 + 2,
    )
    result = await store.apply(session_id="s", site="demo", events=[over], now=T0 + 3)
    assert result.acked == ["over"] and result.duplicates == 0


async def test_sessions_idle_for_thirty_minutes_are_evicted():
    store = MemoryStore(idle_seconds=1800)
    await store.open(session_id="idle", site="demo", now=T0)
    await store.open(session_id="busy", site="demo", now=T0)
    await store.apply(
        session_id="busy", site="demo", events=[event("h", "heartbeat")], now=T0 + 1000
    )
    assert await store.evict_idle(T0 + 1799) == 0
    assert await store.evict_idle(T0 + 1800) == 1
    assert await store.get("idle") is None
    assert await store.get("busy") is not None
    assert len(store) == 1
    assert await store.evict_idle(T0 + 2800) == 1
    assert len(store) == 0


async def test_opening_an_evicted_session_starts_it_empty_under_the_same_id():
    store = MemoryStore(idle_seconds=10)
    await store.apply(
        session_id="s",
        site="demo",
        events=[event("a", "add_to_cart", product_id="p", price=1)],
        now=T0,
    )
    await store.evict_idle(T0 + 10)
    state = await store.open(session_id="s", site="demo", now=T0 + 11)
    assert state.session_id == "s" and state.cart == {} and state.started_at == T0 + 11


async def test_past_its_limit_the_store_forgets_the_least_recently_active_session():
    store = MemoryStore(pause_seconds=30, max_sessions=3)
    for i in range(3):
        await store.apply(
            session_id=f"s{i}",
            site="demo",
            events=[event(f"a{i}", "add_to_cart", product_id="p", price=5)],
            now=T0 + i,
        )
    await store.apply(
        session_id="s0", site="demo", events=[event("v", "search", query="x")], now=T0 + 5
    )  # s0 is active again: s1 is now the least recent
    await store.open(session_id="s3", site="demo", now=T0 + 6)
    assert len(store) == 3 and store.forgotten_full == 1
    assert await store.get("s1") is None and await store.get("s0") is not None
    assert store.open_carts() == 2
    assert await store.claim_due(T0 + 100, 10) != []  # the forgotten one's timer is dropped


async def test_live_counts_fall_to_zero_ten_pauses_after_the_last_event():
    store = MemoryStore(pause_seconds=30, idle_seconds=1800)
    assert store.live_seconds == 300
    add = event("a", "add_to_cart", product_id="p", price=5)
    await store.apply(session_id="cart", site="demo", events=[add], now=T0)
    await store.open(session_id="browser", site="demo", now=T0 + 100)
    await store.apply(
        session_id="bought", site="demo", events=[add, event("b", "purchase")], now=T0 + 150
    )
    await store.refresh_counts(T0 + 200)
    assert store.live_counts() == (3, 1)
    await store.refresh_counts(T0 + 320)  # the cart's last event is 320 s old
    assert store.live_counts() == (2, 0)
    # still held (not idle for 30 minutes), no longer live
    assert len(store) == 3 and store.open_carts() == 1
    await store.refresh_counts(T0 + 451)
    assert store.live_counts() == (0, 0)
