"""RedisStore against a real Redis (database 14) and a real Redis Cluster of three masters, with
a fixed clock passed as `now`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from streaming.generator import generate_sessions
from streaming.journal import RedisJournal
from streaming.policy import Outcome
from streaming.protocol import Event
from streaming.records import DecisionMade
from streaming.redis_client import Shards, connect
from streaming.redis_store import RedisStore
from streaming.state import FIELDS, MAX_CART_LINES, MAX_DISTINCT_PRODUCTS, RECENT_IDS, SessionState
from streaming.store import Applied, MemoryStore, OfferNote, Settled
from tests.conftest import service_missing
from tests.factories import T0, event

pytestmark = pytest.mark.services

REDIS_URL = "redis://127.0.0.1:6379/14"
PAUSE = 30.0


@pytest.fixture(params=["redis", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """Each test on one Redis and on a cluster (where keys spread over 16 shards)."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return REDIS_URL


async def _client(url: str) -> Any:
    client = connect(url)
    try:
        await client.ping()
    except (RedisConnectionError, RedisClusterException, OSError):
        await client.aclose()
        service_missing(f"Redis at {url}")
    return client


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    client = await _client(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def other_client(client: Any, redis_url: str) -> AsyncIterator[Any]:  # noqa: ARG001  # after client's flush
    """A second connection, as another worker process would have."""
    other = await _client(redis_url)
    yield other
    await other.aclose()


@pytest.fixture
def store(client: aioredis.Redis) -> RedisStore:
    return RedisStore(client, pause_seconds=PAUSE)


async def shopper_with_full_cart(store: RedisStore, session_id: str = "s-1") -> None:
    """Viewed a product, put it in the cart twice over, then compared another one."""
    for at, item in enumerate(
        [
            event(f"{session_id}-e1", "page_view", url="/"),
            event(f"{session_id}-e2", "product_view", product_id="sku-1", price=20.0),
            event(f"{session_id}-e3", "add_to_cart", product_id="sku-1", price=20.0, quantity=2),
            event(f"{session_id}-e4", "product_view", product_id="sku-2", price=35.5),
        ],
        start=1,
    ):
        await store.apply(session_id=session_id, site="demo", events=[item], now=T0 + at)


async def state_of(store: RedisStore, session_id: str = "s-1") -> SessionState:
    state = await store.get(session_id)
    assert state is not None
    return state


async def apply(store: RedisStore, at: float, *events: Event, session_id: str = "s-1") -> None:
    await store.apply(session_id=session_id, site="demo", events=list(events), now=at)


# --- the session's state ----------------------------------------------------------------------
async def test_a_repeated_id_is_acknowledged_again_and_applied_once(store: RedisStore):
    add = event("e-1", "add_to_cart", product_id="sku-1", price=10)
    first = await store.apply(session_id="s", site="demo", events=[add], now=T0)
    again = await store.apply(session_id="s", site="demo", events=[add, add], now=T0 + 1)
    assert first.acked == ["e-1"] and first.duplicates == 0 and first.fresh == [add]
    assert again.acked == ["e-1", "e-1"] and again.duplicates == 2 and again.fresh == []
    assert (await state_of(store, "s")).cart == {"sku-1": (1, 10.0)}


async def test_a_refused_event_is_not_remembered_as_seen(store: RedisStore):
    adds = [
        event(f"a{i}", "add_to_cart", product_id=f"p{i}", price=1) for i in range(MAX_CART_LINES)
    ]
    await store.apply(session_id="s", site="demo", events=adds, now=T0)
    over = event("over", "add_to_cart", product_id="new", price=1)
    result = await store.apply(session_id="s", site="demo", events=[over], now=T0 + 1)
    assert result.acked == [] and [e.code for e in result.errors] == ["invalid_props"]
    assert result.errors[0].detail == "the cart already holds 50 different products"
    assert result.errors[0].id == "over"
    state = await state_of(store, "s")
    assert state.cart_lines == MAX_CART_LINES and state.last_activity == T0
    await store.apply(
        session_id="s",
        site="demo",
        events=[event("r", "remove_from_cart", product_id="p0")],
        now=T0 + 2,
    )
    result = await store.apply(session_id="s", site="demo", events=[over], now=T0 + 3)
    assert result.acked == ["over"] and result.duplicates == 0
    assert (await state_of(store, "s")).cart["new"] == (1, 1.0)


async def test_it_keeps_cart_lines_value_and_counters(store: RedisStore):
    await shopper_with_full_cart(store)
    s = await state_of(store)
    assert s.site == "demo" and s.started_at == T0 + 1
    assert s.cart == {"sku-1": (2, 20.0)}
    assert s.cart_value == 40.0
    assert (s.page_views, s.product_views, s.adds) == (1, 2, 1)
    assert s.distinct_products == 2
    assert s.last_add_at == T0 + 3
    assert s.views_since_add == 1
    assert (s.last_activity, s.activity_seq) == (T0 + 4, 4)


async def test_adding_the_same_product_again_adds_to_its_line(store: RedisStore):
    await shopper_with_full_cart(store)
    await apply(store, T0 + 5, event("e5", "add_to_cart", product_id="sku-1", price=18.0))
    s = await state_of(store)
    assert s.cart == {"sku-1": (3, 18.0)}
    assert s.views_since_add == 0
    await apply(
        store, T0 + 6, event("e6", "add_to_cart", product_id="sku-1", price=18.0, quantity=999)
    )
    assert (await state_of(store)).cart == {"sku-1": (999, 18.0)}


async def test_remove_takes_part_or_all_of_a_line(store: RedisStore):
    await shopper_with_full_cart(store)
    await apply(store, T0 + 5, event("e5", "remove_from_cart", product_id="sku-1", quantity=1))
    assert (await state_of(store)).cart == {"sku-1": (1, 20.0)}
    await apply(store, T0 + 6, event("e6", "remove_from_cart", product_id="sku-1"))
    await apply(store, T0 + 7, event("e7", "remove_from_cart", product_id="never-added"))
    s = await state_of(store)
    assert s.cart == {} and s.removes == 3


async def test_only_activity_events_move_the_last_activity(store: RedisStore):
    await shopper_with_full_cart(store)
    await apply(store, T0 + 50, event("e5", "heartbeat"))
    await apply(store, T0 + 60, event("e6", "visibility", state="hidden"))
    await apply(store, T0 + 70, event("e7", "offer_shown", offer_id="o-1"))
    s = await state_of(store)
    assert (s.last_activity, s.last_seen, s.activity_seq) == (T0 + 4, T0 + 70, 4)
    assert s.hidden is True and s.offers_shown == 1
    await apply(store, T0 + 80, event("e8", "search", query="cheaper"))
    await apply(store, T0 + 81, event("e9", "visibility", state="visible"))
    s = await state_of(store)
    assert (s.last_activity, s.activity_seq, s.searches, s.hidden) == (T0 + 80, 5, 1, False)


async def test_checkout_and_purchase_are_kept(store: RedisStore):
    await shopper_with_full_cart(store)
    await apply(store, T0 + 5, event("e5", "checkout_start"))
    await apply(store, T0 + 6, event("e6", "purchase", order_id="o-1", total=40))
    s = await state_of(store)
    assert s.checkout_started and s.purchased and not s.cart_open
    assert s.pause_deadline(PAUSE) is None


async def test_distinct_products_are_counted_up_to_a_bound(store: RedisStore):
    views = [
        event(f"{kind}{i}", "product_view", product_id=f"p{i}", price=1)
        for i in range(MAX_DISTINCT_PRODUCTS + 10)
        for kind in "vw"
    ]
    await apply(store, T0, *views)
    assert (await state_of(store)).distinct_products == MAX_DISTINCT_PRODUCTS


async def test_it_remembers_a_bounded_window_of_event_ids(store: RedisStore):
    ids = [f"e-{i}" for i in range(RECENT_IDS + 5)]
    await apply(store, T0, *(event(i, "heartbeat") for i in ids))
    again = await store.apply(
        session_id="s-1",
        site="demo",
        events=[event(i, "heartbeat") for i in (ids[-1], "e-5", "e-4")],
        now=T0 + 1,
    )
    # e-4 has left the window (applied again), e-5 and the newest are still in it
    assert [e.id for e in again.fresh] == ["e-4"] and again.duplicates == 2


async def test_a_session_of_another_site_with_the_same_id_starts_empty(store: RedisStore):
    await shopper_with_full_cart(store)
    state = await store.open(session_id="s-1", site="other", now=T0 + 10)
    assert state.site == "other" and state.cart == {} and state.started_at == T0 + 10


# --- eviction ---------------------------------------------------------------------------------
async def test_every_key_of_a_session_lives_idle_seconds_from_its_last_event(
    store: RedisStore, client: aioredis.Redis
):
    await shopper_with_full_cart(store)
    await store.note_offer("s-1", at=T0 + 5, offer_id="o-1", frame="{}", expires_at=T0 + 900)
    keys = [store.session_key("s-1"), store.offer_key("s-1")]
    assert all(1_799_000 < ttl <= 1_800_000 for ttl in [await client.pttl(k) for k in keys])
    for key in keys:
        await client.pexpire(key, 60_000)
    await apply(store, T0 + 6, event("h", "heartbeat"))
    assert all(1_799_000 < ttl <= 1_800_000 for ttl in [await client.pttl(k) for k in keys])
    assert await store.evict_idle(T0 + 7) == 0


async def test_an_expired_session_is_opened_empty_under_the_same_id(client: aioredis.Redis):
    store = RedisStore(client, idle_seconds=0.2, pause_seconds=PAUSE)
    await apply(store, T0, event("a", "add_to_cart", product_id="p", price=1))
    await asyncio.sleep(0.3)
    assert await store.get("s-1") is None
    state = await store.open(session_id="s-1", site="demo", now=T0 + 11)
    assert state.session_id == "s-1" and state.cart == {} and state.started_at == T0 + 11
    # the id ring went with the rest: the same event id is applied afresh
    result = await store.apply(
        session_id="s-1",
        site="demo",
        events=[event("a", "add_to_cart", product_id="p", price=1)],
        now=T0 + 12,
    )
    assert result.duplicates == 0 and len(result.fresh) == 1


async def test_live_sessions_and_open_carts_are_counted(store: RedisStore):
    await shopper_with_full_cart(store, "cart")
    await store.open(session_id="browser", site="demo", now=T0 + 100)
    await shopper_with_full_cart(store, "buyer")
    await apply(store, T0 + 5, event("buy", "purchase"), session_id="buyer")
    await store.refresh_counts(T0 + 200)
    assert (len(store), store.open_carts()) == (3, 1)
    assert store.live_counts() == (3, 1)
    # ten pauses (300 s) after their last events: held still, live no more
    await store.refresh_counts(T0 + 399)
    assert (len(store), store.open_carts()) == (3, 1) and store.live_counts() == (1, 0)
    await store.refresh_counts(T0 + 401)
    assert store.live_counts() == (0, 0)
    await store.refresh_counts(T0 + 1805)
    assert (len(store), store.open_carts()) == (1, 0)
    assert await store.evict_idle(T0 + 1805) == 2
    await store.refresh_counts(T0 + 1850)
    assert (len(store), store.open_carts()) == (1, 0)
    await store.refresh_counts(T0 + 1900)
    assert (len(store), store.open_carts()) == (0, 0)


# --- pause timers -----------------------------------------------------------------------------
def keys_of(client: Any) -> Shards:
    return Shards.of_client(client)


async def pause_at(client: Any, session_id: str = "s-1") -> float | None:
    keys = keys_of(client)
    score: float | None = await client.zscore(keys.pauses(keys.shard_of(session_id)), session_id)
    return score


async def pauses(client: Any) -> int:
    """Pause timers, over every shard."""
    keys = keys_of(client)
    return sum([await client.zcard(keys.pauses(shard)) for shard in keys])


async def leases(client: Any) -> int:
    keys = keys_of(client)
    return sum([await client.zcard(keys.leases(shard)) for shard in keys])


async def test_the_pause_timer_follows_the_last_activity(store: RedisStore, client: aioredis.Redis):
    await apply(store, T0 + 1, event("v", "product_view", product_id="a", price=1))
    assert await pause_at(client) is None  # an empty cart never pauses
    await shopper_with_full_cart(store)
    assert await pause_at(client) == T0 + 4 + PAUSE
    await apply(store, T0 + 20, event("h", "heartbeat"), event("x", "visibility", state="hidden"))
    assert await pause_at(client) == T0 + 4 + PAUSE
    await apply(store, T0 + 25, event("s", "search", query="socks"))
    assert await pause_at(client) == T0 + 25 + PAUSE
    assert (await state_of(store)).pause_deadline(PAUSE) == T0 + 25 + PAUSE


async def test_a_purchase_or_an_empty_cart_removes_the_timer(
    store: RedisStore, client: aioredis.Redis
):
    await shopper_with_full_cart(store, "buyer")
    await apply(store, T0 + 6, event("buy", "purchase"), session_id="buyer")
    await shopper_with_full_cart(store, "changed-mind")
    await apply(
        store,
        T0 + 6,
        event("rm", "remove_from_cart", product_id="sku-1"),
        session_id="changed-mind",
    )
    assert await pauses(client) == 0
    assert await store.claim_due(T0 + 1000, 10) == []


# --- claims -----------------------------------------------------------------------------------
async def test_a_due_pause_is_claimed_once(store: RedisStore):
    await shopper_with_full_cart(store)
    assert await store.claim_due(T0 + 4 + PAUSE - 0.001, 10) == []
    assert store.next_deadline() == T0 + 4 + PAUSE
    (claimed,) = await store.claim_due(T0 + 4 + PAUSE, 10)
    assert claimed.pause_key == "s-1:4" and claimed.cart == {"sku-1": (2, 20.0)}
    assert claimed.pause_deadline(PAUSE) is None  # taken, as MemoryStore leaves it
    assert await store.claim_due(T0 + 4 + PAUSE + 1, 10) == []
    # a heartbeat during the decision does not bring the pause back
    await apply(store, T0 + 36, event("h", "heartbeat"))
    assert await store.claim_due(T0 + 38.9, 10) == []


async def test_claims_take_the_oldest_pauses_first_up_to_the_limit(store: RedisStore):
    for i in range(5):
        await apply(
            store,
            T0 + 10 - i,
            event(f"a{i}", "add_to_cart", product_id="p", price=1),
            session_id=f"s{i}",
        )
    first = await store.claim_due(T0 + 100, 2)
    assert [s.session_id for s in first] == ["s4", "s3"]
    assert [s.session_id for s in await store.claim_due(T0 + 100, 10)] == ["s2", "s1", "s0"]


async def test_two_workers_claiming_at_once_never_get_the_same_pause(
    store: RedisStore, other_client: aioredis.Redis
):
    other = RedisStore(other_client, pause_seconds=PAUSE)
    for i in range(300):
        add = event(f"a{i}", "add_to_cart", product_id="p", price=1)
        await apply(store, T0 + i / 100, add, session_id=f"s{i}")
    claimed: list[str] = []
    for _ in range(10):
        mine, theirs = await asyncio.gather(
            store.claim_due(T0 + 100, 20), other.claim_due(T0 + 100, 20)
        )
        claimed += [s.pause_key for s in mine + theirs]
    assert len(claimed) == len(set(claimed)) == 300


async def test_an_expired_lease_goes_to_another_worker(
    store: RedisStore, other_client: aioredis.Redis
):
    other = RedisStore(other_client, pause_seconds=PAUSE, lease_seconds=5)
    await shopper_with_full_cart(store)
    (first,) = await store.claim_due(T0 + 40, 10)
    # the first worker dies without finishing; its lease still runs for 5 seconds
    assert await other.claim_due(T0 + 44.9, 10) == []
    (second,) = await other.claim_due(T0 + 45, 10)
    assert second.pause_key == first.pause_key == "s-1:4"
    assert await store.claim_due(T0 + 46, 10) == []


async def test_a_worker_whose_lease_was_taken_over_stores_nothing(
    store: RedisStore, other_client: aioredis.Redis
):
    other = RedisStore(other_client, pause_seconds=PAUSE, lease_seconds=5)
    journal = RedisJournal(store.redis)
    await shopper_with_full_cart(store)
    (slow,) = await store.claim_due(T0 + 40, 10)
    (taken,) = await other.claim_due(T0 + 45, 10)  # the first worker stalled past its lease
    assert not await settle(store, slow, journal)  # so it sends nothing
    assert await store.redis.xlen(journal.shards.records_of("s-1")) == 0
    assert await settle(other, taken, journal)
    (entry,) = await journal.take(10)
    assert isinstance(entry.record, DecisionMade) and entry.record.pause_key == "s-1:4"
    assert await store.claim_due(T0 + 100, 10) == []


async def test_a_decision_is_stored_with_its_offer_noted(store: RedisStore):
    journal = RedisJournal(store.redis)
    await shopper_with_full_cart(store)
    (claimed,) = await store.claim_due(T0 + 40, 10)
    note = OfferNote("s-1", T0 + 40, "o-1", '{"type":"offer"}', T0 + 900)
    made = decided(claimed)
    assert await store.settle([Settled(made, claimed.activity_seq, note)], journal) == [True]
    state = await state_of(store)
    assert (state.offer_id, state.offer_frame, state.last_offer_at) == (
        "o-1",
        '{"type":"offer"}',
        T0 + 40,
    )
    assert state.decided_seq == 4
    assert [e.record for e in await journal.take(10)] == [made]


async def test_a_finished_pause_is_not_claimed_again(store: RedisStore):
    await shopper_with_full_cart(store)
    (claimed,) = await store.claim_due(T0 + 40, 10)
    assert await settle(store, claimed)
    assert await store.claim_due(T0 + 100, 10) == []
    state = await state_of(store)
    assert state.decided_seq == state.activity_seq == 4
    await apply(store, T0 + 200, event("v", "product_view", product_id="sku-3", price=5))
    assert await store.claim_due(T0 + 229, 10) == []
    (again,) = await store.claim_due(T0 + 230, 10)
    assert again.pause_key == "s-1:5"


async def test_new_activity_during_a_decision_starts_a_new_pause(store: RedisStore):
    await shopper_with_full_cart(store)
    (claimed,) = await store.claim_due(T0 + 40, 10)
    await apply(store, T0 + 41, event("v", "product_view", product_id="sku-3", price=5))
    # the old decision is stored late: it must not mark the new pause decided
    assert await settle(store, claimed)
    assert (await state_of(store)).decided_seq == -1
    (again,) = await store.claim_due(T0 + 71, 10)
    assert again.pause_key == "s-1:5"


async def test_an_expired_lease_of_a_pause_that_ended_is_dropped(
    store: RedisStore, client: aioredis.Redis
):
    await shopper_with_full_cart(store)
    await store.claim_due(T0 + 40, 10)
    await apply(store, T0 + 41, event("v", "product_view", product_id="sku-3", price=5))
    # the worker died; the shopper came back, so only the new pause is decided
    (claimed,) = await store.claim_due(T0 + 71, 10)
    assert claimed.pause_key == "s-1:5"
    assert await settle(store, claimed)
    assert await store.claim_due(T0 + 200, 10) == []
    assert await leases(client) == 0


async def test_a_timer_of_an_expired_session_is_dropped(store: RedisStore, client: aioredis.Redis):
    await shopper_with_full_cart(store)
    await client.delete(store.session_key("s-1"))
    assert await store.claim_due(T0 + 100, 10) == []
    assert await pauses(client) == 0
    gone = SessionState("s-1", "demo", started_at=T0, last_seen=T0, last_activity=T0)
    gone.activity_seq = 4
    assert not await settle(store, gone)
    assert not await client.exists(store.session_key("s-1"))


def decided(state: SessionState) -> DecisionMade:
    return DecisionMade(
        session_id=state.session_id,
        site=state.site,
        pause_key=state.pause_key,
        deadline=state.last_activity + PAUSE,
        at=state.last_activity + PAUSE,
        outcome=Outcome.NO_OFFER,
        risk=None,
        shadow_risk=None,
        model="",
        shadow_model="",
        features={},
        cart_value=state.cart_value,
    )


async def settle(
    store: RedisStore, state: SessionState, journal: RedisJournal | None = None
) -> bool:
    """Store a no_offer decision of the claimed `state` as a worker does; whether it was."""
    journal = journal or RedisJournal(store.redis)
    (stored,) = await store.settle([Settled(decided(state), state.activity_seq, None)], journal)
    return stored


# --- offers -----------------------------------------------------------------------------------
async def test_an_offer_is_kept_for_a_reconnect_until_it_expires_or_is_answered(
    store: RedisStore, client: aioredis.Redis
):
    await shopper_with_full_cart(store)
    frame = '{"type": "offer", "offer_id": "o-1"}'
    await store.note_offer("s-1", at=T0 + 40, offer_id="o-1", frame=frame, expires_at=T0 + 900)
    state = await store.open(session_id="s-1", site="demo", now=T0 + 60)
    assert state.last_offer_at == T0 + 40 and state.offer_id == "o-1"
    assert state.live_offer(T0 + 60) == frame
    assert state.live_offer(T0 + 900) is None
    await apply(store, T0 + 61, event("d", "offer_dismissed", offer_id="o-other"))
    assert (await state_of(store)).live_offer(T0 + 62) == frame
    await apply(store, T0 + 63, event("k", "offer_accepted", offer_id="o-1"))
    s = await state_of(store)
    assert s.live_offer(T0 + 64) is None and (s.offers_accepted, s.offers_dismissed) == (1, 1)
    await store.note_offer("nobody", at=T0, offer_id="o-2", frame=frame, expires_at=T0 + 900)
    assert await client.exists(store.session_key("nobody"), store.offer_key("nobody")) == 0


async def test_a_batch_of_notes_is_one_round_trip_with_each_note_applied(store: RedisStore):
    for session_id in ("s-1", "s-2", "s-3"):
        await shopper_with_full_cart(store, session_id)
    frame = '{"type": "offer", "offer_id": "o-2"}'
    await store.note_offers(
        [
            OfferNote("s-1", T0 + 40),
            OfferNote("s-2", T0 + 41, "o-2", frame, T0 + 900),
            OfferNote("gone", T0 + 42, "o-3", frame, T0 + 900),  # expired meanwhile: skipped
        ]
    )
    held, offered, untouched = [await store.get(sid) for sid in ("s-1", "s-2", "s-3")]
    assert held is not None and offered is not None and untouched is not None
    assert held.last_offer_at == T0 + 40 and held.live_offer(T0 + 41) is None
    assert offered.last_offer_at == T0 + 41 and offered.live_offer(T0 + 42) == frame
    assert untouched.last_offer_at is None
    assert await store.redis.exists(store.session_key("gone"), store.offer_key("gone")) == 0


async def test_a_holdout_decision_records_only_the_time(store: RedisStore):
    await shopper_with_full_cart(store)
    await store.note_offer("s-1", at=T0 + 40)
    s = await state_of(store)
    assert s.last_offer_at == T0 + 40 and s.offer_id is None and s.live_offer(T0 + 41) is None


def test_a_client_that_decodes_responses_is_refused():
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(client)


# --- the same as MemoryStore ------------------------------------------------------------------
COMPARED = [*FIELDS, "_products"]


def generated_calls(batch: int) -> list[tuple[float, str, list[Event]]]:
    """(now, session, events): 20 generated sessions interleaved in time, every 7th call
    sent twice as a reconnecting snippet would."""
    timed = [
        (at, f"g{i}", item)
        for i, session in enumerate(generate_sessions(20, seed=1))
        for at, item in session.timed_events(T0 + 13 * i)
    ]
    timed.sort(key=lambda t: t[0])
    calls: list[tuple[float, str, list[Event]]] = []
    open_batches: dict[str, list[Event]] = {}
    for at, session_id, item in timed:
        pending = open_batches.setdefault(session_id, [])
        pending.append(item)
        if len(pending) == batch:
            calls.append((at, session_id, pending))
            del open_batches[session_id]
    calls += [(T0 + 10_000, sid, pending) for sid, pending in open_batches.items()]
    return [c for n, c in enumerate(calls) for _ in range(2 if n % 7 == 3 else 1)]


@pytest.mark.parametrize("batch", [1, 6])
async def test_it_holds_the_same_state_as_the_memory_store(store: RedisStore, batch: int):
    memory = MemoryStore(pause_seconds=PAUSE)
    calls = generated_calls(batch)
    assert sum(len(events) for _, _, events in calls) > 300
    decided = 0
    for now, session_id, events in calls:
        want = await memory.apply(session_id=session_id, site="demo", events=events, now=now)
        got = await store.apply(session_id=session_id, site="demo", events=events, now=now)
        assert got == want
        # pauses fall due in between, and each is decided as the worker would
        claimed = await store.claim_due(now, 100)
        assert {s.pause_key for s in claimed} == {
            s.pause_key for s in await memory.claim_due(now, 100)
        }
        for state in claimed:
            assert await settle(store, state)
        decided += len(claimed)
    assert decided > 0
    for i in range(20):
        want_state = await memory.get(f"g{i}")
        got_state = await store.get(f"g{i}")
        assert want_state is not None and got_state is not None
        for name in COMPARED:
            assert getattr(got_state, name) == getattr(want_state, name), (i, name)
        assert got_state.pause_deadline(PAUSE) == want_state.pause_deadline(PAUSE)
    later = T0 + 20_000
    last = {s.pause_key for s in await store.claim_due(later, 100)}
    assert last == {s.pause_key for s in await memory.claim_due(later, 100)}


# --- many sockets at once ---------------------------------------------------------------------
async def test_calls_made_at_once_each_get_their_own_answer(store: RedisStore):
    adds = [event(f"a{i}", "add_to_cart", product_id=f"p{i}", price=i) for i in range(40)]
    applied, opened = await asyncio.gather(
        asyncio.gather(
            *(
                store.apply(session_id=f"s{i}", site="demo", events=[add, add], now=T0 + i)
                for i, add in enumerate(adds)
            )
        ),
        store.open(session_id="s0", site="demo", now=T0 + 100),
    )
    assert [r.acked for r in applied] == [[f"a{i}", f"a{i}"] for i in range(40)]
    assert all(r.duplicates == 1 and len(r.fresh) == 1 for r in applied)
    assert opened.cart == {"p0": (1, 0.0)}
    assert (await state_of(store, "s39")).cart == {"p39": (1, 39.0)}


async def heartbeat(store: RedisStore, session_id: str) -> Applied:
    return await store.apply(
        session_id=session_id, site="demo", events=[event("h", "heartbeat")], now=T0
    )


async def test_a_script_redis_forgot_is_loaded_again(store: RedisStore):
    # A digest Redis has never seen stands in for a script lost in a restart, without flushing
    # the scripts of everyone else sharing this Redis.
    script = store._apply._script
    script.sha = "0" * 40
    assert (await heartbeat(store, "lone")).acked == ["h"]
    assert script.sha != "0" * 40
    first = asyncio.create_task(heartbeat(store, "first"))
    await asyncio.sleep(0)  # in flight: the next calls wait and go out as one pipeline
    script.sha = "0" * 40
    results = await asyncio.gather(first, *(heartbeat(store, f"s{i}") for i in range(4)))
    assert [r.acked for r in results] == [["h"]] * 5
    assert script.sha != "0" * 40


async def test_a_burst_of_due_pauses_is_claimed_in_chunks_up_to_the_limit(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("streaming.redis_store.CLAIM_CHUNK", 3)
    adds = [event(f"a{i}", "add_to_cart", product_id="p", price=1) for i in range(8)]
    await asyncio.gather(
        *(apply(store, T0 + i, add, session_id=f"s{i}") for i, add in enumerate(adds))
    )
    first = await store.claim_due(T0 + 100, 7)
    assert [s.session_id for s in first] == [f"s{i}" for i in range(7)]
    assert [s.session_id for s in await store.claim_due(T0 + 100, 7)] == ["s7"]


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_offer_events_tell_whether_they_name_the_sessions_own_offer(
    store: RedisStore, kind: str
):
    shared = store if kind == "redis" else MemoryStore()
    calls = 0

    async def applied(*events: Event) -> Applied:
        nonlocal calls
        calls += 1
        return await shared.apply(
            session_id="s-1", site="demo", events=list(events), now=T0 + calls
        )

    made_up = event("m1", "offer_accepted", offer_id="o-made-up")
    before = await applied(made_up, event("h1", "heartbeat"))
    assert before.offer_id is None and before.names_another_offer(made_up)
    await shared.note_offer("s-1", at=T0 + 10, offer_id="o-1", frame="{}", expires_at=T0 + 900)
    own = event("k1", "offer_accepted", offer_id="o-1")
    after = await applied(event("m2", "offer_shown", offer_id="o-made-up"), own)
    assert after.offer_id == "o-1"
    assert [after.names_another_offer(e) for e in after.fresh] == [True, False]
    assert (await applied(event("h2", "heartbeat"))).offer_id is None  # not read without need


async def test_an_offer_stored_but_never_sent_goes_to_the_next_worker_to_send(
    store: RedisStore, other_client: aioredis.Redis
):
    other = RedisStore(other_client, pause_seconds=PAUSE, lease_seconds=5)
    journal = RedisJournal(store.redis)
    await shopper_with_full_cart(store)
    (claimed,) = await store.claim_due(T0 + 40, 10)
    note = OfferNote("s-1", T0 + 40, "o-1", '{"type":"offer"}', T0 + 900)
    kept = Settled(decided(claimed), claimed.activity_seq, note, sends=True)
    assert await store.settle([kept], journal) == [True]
    # the worker dies before sending: after its lease, the other one gets the pause to send
    assert await other.claim_due(T0 + 44, 10) == []
    (again,) = await other.claim_due(T0 + 46, 10)
    assert (again.pause_key, again.offer_frame) == ("s-1:4", '{"type":"offer"}')
    await other.release([Settled(decided(again), again.activity_seq, None, sends=True)])
    assert await other.claim_due(T0 + 100, 10) == []  # sent: done with for good
    assert await leases(store.redis) == 0


async def test_a_session_kept_as_a_hash_by_an_earlier_version_starts_afresh(client, store):
    """Sessions of the earlier layout (a hash of fields) are read as absent and replaced, not a
    WRONGTYPE error for every frame until they expire."""
    await client.hset(store.session_key("s-1"), mapping={"st": "demo", "pv": "3"})
    await client.zadd(store.shards.pauses(store.shards.shard_of("s-1")), {"s-1": T0})

    assert await store.claim_due(T0 + PAUSE, 10) == []
    await store.apply(
        session_id="s-1", site="demo", events=[event("e1", "page_view", url="/")], now=T0
    )

    state = await state_of(store)
    assert state.page_views == 1 and state.started_at == T0
