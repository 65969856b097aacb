from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client
from redis.exceptions import ConnectionError as RedisConnectionError

from config.asgi import application
from offers.dashboard import GROUP as DASHBOARD_GROUP
from offers.dashboard import DashboardFeed, SharedBoard
from offers.runtime import Runtime
from streaming.decider import ModelSlot
from streaming.policy import Outcome
from streaming.records import DecisionMade
from streaming.store import MemoryStore
from tests.conftest import service_missing
from tests.factories import T0, operator_user

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")
HOST = (b"host", b"localhost")


def logged_in(*, staff: bool, permission: bool = True) -> Client:
    if staff:
        user = operator_user(f"user-{uuid.uuid4().hex[:6]}", permission=permission)
    else:
        user = User.objects.create_user(f"user-{uuid.uuid4().hex[:6]}", password="x")
    client = Client()
    client.force_login(user)
    return client


def session_cookie(*, staff: bool, permission: bool = True) -> bytes:
    client = logged_in(staff=staff, permission=permission)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def operator_socket(
    *, staff: bool = True, permission: bool = True, origin: bytes = ORIGIN[1]
) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(staff=staff, permission=permission)
    return WebsocketCommunicator(
        application, "/ws/dashboard/", headers=[(b"origin", origin), HOST, (b"cookie", cookie)]
    )


def made(i: int, outcome: str = "offer", risk: float = 0.9) -> DecisionMade:
    return DecisionMade(
        session_id=f"s{i}",
        site="demo",
        pause_key=f"s{i}:1",
        deadline=T0,
        at=T0,
        outcome=Outcome(outcome),
        risk=risk,
        shadow_risk=None,
        model="cart-risk@1",
        shadow_model="",
        features={"views_since_add": 6.0, "cart_value": 340.0},
        cart_value=340.0,
        reasons=[{"feature": "views_since_add", "value": 6.0, "contribution": 1.4}],
    )


async def test_staff_get_a_snapshot_then_live_frames(runtime: Runtime):
    ws = await operator_socket()
    connected, _ = await ws.connect()
    assert connected
    snapshot = await ws.receive_json_from()
    assert snapshot["type"] == "snapshot" and snapshot["decisions"] == []
    await runtime.feed.on_decisions(
        [made(1), made(2, "no_offer", 0.2), made(3, "holdout", 0.7)], now=T0
    )
    first: dict[str, Any] = await ws.receive_json_from()
    second: dict[str, Any] = await ws.receive_json_from()
    assert (first["type"], first["outcome"], first["session"]) == ("decision", "offer", "s1")
    assert first["reasons"][0]["feature"] == "views_since_add" and first["cart_value"] == 340.0
    assert second["outcome"] == "holdout"  # no_offer decisions are counted, not listed
    await ws.disconnect()


async def test_anonymous_visitors_and_shoppers_are_refused():
    anonymous = WebsocketCommunicator(application, "/ws/dashboard/", headers=[ORIGIN, HOST])
    assert (await anonymous.connect())[0] is False
    shopper = await operator_socket(staff=False)
    assert (await shopper.connect())[0] is False
    staff_alone = await operator_socket(permission=False)
    assert (await staff_alone.connect())[0] is False


@pytest.mark.parametrize(
    "origin",
    [b"https://evil.example", b"http://localhost:9999", b"https://localhost", b"null"],
)
async def test_an_origin_other_than_the_dashboards_own_page_is_refused(origin: bytes):
    ws = await operator_socket(origin=origin)
    assert (await ws.connect())[0] is False


@pytest.mark.usefixtures("runtime")
async def test_the_dashboard_socket_closes_soon_after_its_user_logs_out(monkeypatch):
    from offers.consumers import CLOSE_LOGGED_OUT, DashboardConsumer

    monkeypatch.setattr(DashboardConsumer, "login_check_seconds", 0.05)
    client = await sync_to_async(logged_in)(staff=True)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    ws = WebsocketCommunicator(
        application, "/ws/dashboard/", headers=[ORIGIN, HOST, (b"cookie", cookie)]
    )
    assert (await ws.connect())[0] is True
    await ws.receive_json_from()  # the snapshot
    assert await ws.receive_nothing(timeout=0.3)  # still logged in: stays open
    await sync_to_async(client.logout)()
    assert (await ws.receive_output(timeout=2))["code"] == CLOSE_LOGGED_OUT


async def test_stats_go_out_once_a_second_with_what_happened_in_it(runtime: Runtime):
    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    runtime.feed.count_events(120)
    await runtime.feed.on_decisions([made(1), made(2, "no_offer", 0.15)], now=T0)
    await ws.receive_json_from()  # the offer's decision frame
    await runtime.feed.step(T0)
    stats = await ws.receive_json_from()
    assert stats["type"] == "stats"
    assert stats["events_per_second"] == 120 and stats["decisions_per_second"] == 2
    assert stats["decisions"] == {"offer": 1, "holdout": 0, "no_offer": 1}
    assert (
        stats["offers_sent"] == 1
        and stats["risk_histogram"][9] == 1
        and stats["risk_histogram"][1] == 1
    )
    assert stats["conversion"]["verdict"].startswith("No sessions in both groups")
    await runtime.feed.step(T0 + 0.5)
    assert await ws.receive_nothing(timeout=0.1)
    runtime.feed.count_events(7)
    await runtime.feed.step(T0 + 1.0)
    later = await ws.receive_json_from()
    assert later["events_per_second"] == 7 and later["decisions_per_second"] == 0
    await ws.disconnect()


async def test_stats_say_when_the_record_is_behind_or_has_records_set_aside(runtime: Runtime):
    from offers.dashboard import RECORD_BEHIND
    from offers.models import DeadRecord
    from streaming.records import MarkMade

    await runtime.journal.append([MarkMade(f"s-{i}", None, "purchase", T0) for i in range(5)])
    assert runtime.feed.stats(T0)["record"] == {"waiting": 5, "set_aside": 0, "behind": False}
    await DeadRecord.objects.acreate(kind="decision", payload={}, error="site 'x' is gone")
    await runtime.journal.append(
        [MarkMade(f"s-{i}", None, "purchase", T0) for i in range(RECORD_BEHIND)]
    )
    await runtime.feed.step(T0 + 10)  # counts what was set aside with the uplift
    stats = runtime.feed.last_stats
    assert stats is not None
    assert stats["record"] == {"waiting": RECORD_BEHIND + 5, "set_aside": 1, "behind": True}


async def test_above_fifty_decisions_a_second_the_feed_samples_and_says_how_many_it_left_out(
    runtime: Runtime,
):
    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    await runtime.feed.on_decisions([made(i) for i in range(80)], now=T0)
    frames = [await ws.receive_json_from() for _ in range(50)]
    assert await ws.receive_nothing(timeout=0.1)
    assert all(f["skipped"] == 0 for f in frames)
    await runtime.feed.on_decisions([made(99)], now=T0 + 1)
    late = await ws.receive_json_from()
    assert (late["session"], late["skipped"]) == ("s99", 30)
    await ws.disconnect()


async def test_a_dashboard_that_comes_back_catches_up_from_the_snapshot(runtime: Runtime):
    runtime.feed.count_events(10)
    await runtime.feed.step(T0)
    await runtime.feed.on_decisions([made(1)], now=T0)
    ws = await operator_socket()
    await ws.connect()
    snapshot = await ws.receive_json_from()
    assert snapshot["history"][-1][1] == 10
    assert [d["session"] for d in snapshot["decisions"]] == ["s1"]
    assert snapshot["stats"]["events_per_second"] == 10
    await ws.disconnect()


def test_the_page_is_for_staff_only(client: Client):
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(operator_user("sam", permission=False))
    assert client.get("/dashboard/").status_code == 403  # staff alone is not enough
    client.force_login(operator_user())
    page = client.get("/dashboard/").content.decode()
    assert "vendor/uplot/uPlot.iife.min.js" in page and "dashboard.js" in page


# --- Redis mode: counts from every process, stats from one ---------------------------------------

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
async def board() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A Redis client and a key prefix of the test's own."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisConnectionError:
        await client.aclose()
        service_missing("Redis at 127.0.0.1:6379")
    prefix = f"lo-test-{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    keys = [key async for key in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def dashboard_frames() -> tuple[Any, str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(DASHBOARD_GROUP, channel)
    return layer, channel


async def stats_frames(layer: Any, channel: str) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 0.2)
        except TimeoutError:
            return frames
        frame = json.loads(message["text"])
        if frame["type"] == "stats":
            frames.append(frame)


async def test_in_redis_mode_every_process_counts_and_one_publishes(
    board: tuple[aioredis.Redis, str],
):
    client, prefix = board

    def feed(*, publishes: bool) -> DashboardFeed:
        shared = SharedBoard(client, prefix=prefix)
        return DashboardFeed(
            store=MemoryStore(), models=ModelSlot(), shared=shared, publishes=publishes
        )

    front, first, second = feed(publishes=False), feed(publishes=True), feed(publishes=True)
    layer, channel = await dashboard_frames()
    for process in (front, first, second):
        await process.step(T0)
    [opening] = await stats_frames(layer, channel)  # from `first`, which took the lease
    assert opening["decisions"] == {"offer": 0, "holdout": 0, "no_offer": 0}
    assert opening["events"] == 0

    front.count_events(120)
    front.count_accepted()
    await first.on_decisions([made(1)], now=T0 + 1)
    await second.on_decisions([made(2, "no_offer", 0.2), made(3, "holdout", 0.7)], now=T0 + 1)
    # each process adds its counts once a second; the publisher shows what was added by then
    for process in (front, second, first):
        await process.step(T0 + 1)
    [counted] = await stats_frames(layer, channel)
    assert counted["decisions"] == {"offer": 1, "holdout": 1, "no_offer": 1}
    assert counted["events_per_second"] == 120 and counted["decisions_per_second"] == 3
    assert counted["offers_accepted"] == 1 and counted["offers_sent"] == 1

    front.count_events(7)
    await second.on_decisions([made(4)], now=T0 + 2)
    for process in (front, second, first):
        await process.step(T0 + 2)
    [later] = await stats_frames(layer, channel)
    assert later["events_per_second"] == 7 and later["decisions_per_second"] == 1
    assert later["offers_sent"] == 2 and sum(later["risk_histogram"]) == 4

    # a dashboard connecting to the front end sees what the publisher published
    snapshot = json.loads(await front.snapshot())
    assert [row[1:] for row in snapshot["history"]] == [[0, 0], [120, 3], [7, 1]]
    assert snapshot["stats"] == later
    # in the order the processes added them
    assert sorted(d["session"] for d in snapshot["decisions"]) == ["s1", "s3", "s4"]

    # the publisher stops (its lease runs out): the other worker takes over, rates unbroken
    await client.delete(f"{prefix}dash:lead")
    front.count_events(5)
    for process in (front, second):
        await process.step(T0 + 3)
    [taken_over] = await stats_frames(layer, channel)
    assert taken_over["decisions"] == {"offer": 2, "holdout": 1, "no_offer": 1}
    assert taken_over["events"] == 132 and taken_over["events_per_second"] == 5
