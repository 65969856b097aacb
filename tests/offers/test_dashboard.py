from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from config.asgi import application
from offers.alerts import GROUP as DASHBOARD_GROUP
from offers.alerts import alert_json
from offers.dashboard import DashboardFeed, SharedBoard
from offers.models import Alert, Decision, ModelEvent, ScoringModel, Site
from offers.runtime import Runtime
from offers.services import model_shadow
from streaming.decider import ModelSlot
from streaming.policy import Outcome
from streaming.records import DecisionMade, MarkMade, OfferMade
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


WHY = {
    "offer": "risk 0.90 reached the rule's 0.60",
    "holdout": "holdout: control group (risk 0.70 reached the rule's 0.60)",
    "no_offer": "risk 0.20 below the rule's 0.60",
}


def made(
    i: int, outcome: str = "offer", risk: float = 0.9, *, reasons: bool = True
) -> DecisionMade:
    offer = None
    if outcome == "offer":
        offer = OfferMade(f"o-{i}", f"SAVE10-{i}", 1, "t", "m", 10, T0, T0 + 1800)
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
        features={"views_since_add": 6.0, "cart_value": 340.0, "seconds_since_add": 30.0},
        cart_value=340.0,
        offer=offer,
        reasons=[{"feature": "views_since_add", "value": 6.0, "contribution": 1.4}]
        if reasons and outcome != "no_offer"
        else [],
        why=WHY[outcome],
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
    third: dict[str, Any] = await ws.receive_json_from()
    assert (first["type"], first["outcome"], first["session"]) == ("decision", "offer", "s1")
    assert first["reasons"][0]["feature"] == "views_since_add" and first["cart_value"] == 340.0
    assert second["outcome"] == "holdout"
    # no_offer decisions go out too, after the batch's offers (the page shows them when asked),
    # each saying why
    assert (third["outcome"], third["why"]) == ("no_offer", "risk 0.20 below the rule's 0.60")
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


async def watched_dashboard(monkeypatch) -> tuple[Client, WebsocketCommunicator]:
    """An operator's open dashboard whose login is checked every 50 ms, still open after 0.3 s."""
    from offers.consumers import DashboardConsumer

    monkeypatch.setattr(DashboardConsumer, "login_check_seconds", 0.05)
    client = await sync_to_async(logged_in)(staff=True)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    ws = WebsocketCommunicator(
        application, "/ws/dashboard/", headers=[ORIGIN, HOST, (b"cookie", cookie)]
    )
    assert (await ws.connect())[0] is True
    await ws.receive_json_from()  # the snapshot
    assert await ws.receive_nothing(timeout=0.3)  # still an operator: stays open
    return client, ws


@pytest.mark.usefixtures("runtime")
async def test_the_dashboard_socket_closes_soon_after_its_user_logs_out(monkeypatch):
    from offers.consumers import CLOSE_LOGGED_OUT

    client, ws = await watched_dashboard(monkeypatch)
    await sync_to_async(client.logout)()
    assert (await ws.receive_output(timeout=2))["code"] == CLOSE_LOGGED_OUT


@pytest.mark.parametrize("revoked", ["is_staff", "permission"])
@pytest.mark.usefixtures("runtime")
async def test_the_dashboard_socket_closes_soon_after_its_user_loses_the_right(
    monkeypatch, caplog, revoked: str
):
    from django.contrib.auth.models import Permission

    from offers.consumers import CLOSE_LOGGED_OUT

    client, ws = await watched_dashboard(monkeypatch)

    def revoke() -> None:
        user = User.objects.get(pk=client.session["_auth_user_id"])
        if revoked == "is_staff":
            User.objects.filter(pk=user.pk).update(is_staff=False)
        else:
            user.user_permissions.remove(Permission.objects.get(codename="view_decision"))

    await sync_to_async(revoke)()
    assert (await ws.receive_output(timeout=2))["code"] == CLOSE_LOGGED_OUT
    assert "could not check the dashboard's login" not in caplog.text


async def test_stats_go_out_once_a_second_with_what_happened_in_it(runtime: Runtime):
    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    runtime.feed.count_events(120)
    await runtime.feed.on_decisions([made(1), made(2, "no_offer", 0.15)], now=T0)
    await ws.receive_json_from()  # the offer's decision frame
    await ws.receive_json_from()  # the no_offer's
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


async def test_a_batch_is_counted_at_once_whatever_its_risks(runtime: Runtime):
    no_risk = made(4, "no_offer", 0.2)
    no_risk.risk = None
    batch = [made(1, risk=1.0), made(2, "holdout", 0.05), made(3, risk=float("nan")), no_risk]
    await runtime.feed.on_decisions(batch, now=T0)
    counted = runtime.feed.counted
    assert counted.decisions == {"offer": 2, "holdout": 1, "no_offer": 1}
    assert counted.risk_bins == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]


async def test_a_decision_frame_says_why_in_words_and_links_to_the_decision(runtime: Runtime):
    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    await runtime.feed.on_decisions([made(1)], now=T0)
    frame = await ws.receive_json_from()
    assert frame["why"] == "risk 0.90 reached the rule's 0.60"
    assert frame["offer_id"] == "o-1" and frame["pause_key"] == "s1:1"
    # the reasons as recorded, and in words (the pause itself left out)
    assert frame["reasons_in_words"] == ["compared 6 products since adding to cart (raises risk)"]
    assert frame["reasons_pending"] is False
    assert frame["admin_url"] == "/admin/offers/decision/?pause_key=s1%3A1"
    await ws.disconnect()


async def test_offers_go_out_as_decided_and_their_reasons_follow(runtime: Runtime):
    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    offer, holdout = made(1, reasons=False), made(2, "holdout", 0.7, reasons=False)
    await runtime.feed.on_decisions([offer, holdout, made(3, "no_offer", 0.2)], now=T0)
    frames = [await ws.receive_json_from() for _ in range(3)]
    assert [(f["outcome"], f["reasons_pending"]) for f in frames] == [
        ("offer", True),
        ("holdout", True),
        ("no_offer", False),
    ]  # offers and holdouts first
    offer.reasons = [{"feature": "searches", "value": 0.0, "contribution": 0.8}]
    await runtime.feed.on_reasons([offer, holdout])
    first, second = await ws.receive_json_from(), await ws.receive_json_from()
    assert (first["type"], first["pause_key"]) == ("reasons", "s1:1")
    assert first["reasons_in_words"] == ["made no search (raises risk)"]
    # explaining failed for the holdout: it says so rather than waiting for ever
    assert (second["pause_key"], second["reasons_in_words"]) == ("s2:1", [])
    await runtime.feed.on_reasons([offer])  # told twice: nothing more
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()
    # a dashboard that connects now gets the frames with their reasons
    again = await operator_socket()
    await again.connect()
    snapshot = await again.receive_json_from()
    first_frame = snapshot["decisions"][0]
    assert first_frame["reasons_in_words"] == ["made no search (raises risk)"]
    assert first_frame["reasons_pending"] is False
    await again.disconnect()


async def test_a_flood_of_no_offers_never_pushes_out_offers(runtime: Runtime):
    from offers.dashboard import NO_OFFER_FRAMES_PER_SECOND, RECENT_NO_OFFERS

    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    flood = [made(100 + i, "no_offer", 0.1) for i in range(500)]
    await runtime.feed.on_decisions([*flood[:250], made(1), *flood[250:], made(2)], now=T0)
    frames = []
    while not await ws.receive_nothing(timeout=0.1):
        frames.append(await ws.receive_json_from())
    offers = [f["session"] for f in frames if f["outcome"] == "offer"]
    assert offers == ["s1", "s2"]
    assert len(frames) == NO_OFFER_FRAMES_PER_SECOND + 2
    await runtime.feed.on_decisions([made(3, "no_offer", 0.1)], now=T0 + 1)
    late = await ws.receive_json_from()
    assert (late["session"], late["skipped"]) == ("s3", 500 - NO_OFFER_FRAMES_PER_SECOND)
    for second in range(2, 10):
        await runtime.feed.on_decisions(flood[:50], now=T0 + second)
    snapshot = json.loads(await runtime.feed.snapshot())
    assert [d["session"] for d in snapshot["decisions"]] == ["s1", "s2"]
    assert len(snapshot["no_offer_decisions"]) == RECENT_NO_OFFERS
    await ws.disconnect()


async def shopper_with_an_offer(runtime: Runtime) -> str:
    session = "shopper-1"
    await runtime.store.open(session_id=session, site="demo", now=T0)
    await runtime.store.note_offer(session, at=T0, offer_id="o-1", frame="{}", expires_at=T0 + 1800)
    return session


@pytest.mark.usefixtures("demo_site")
async def test_what_shoppers_do_with_offers_and_carts_updates_the_feed(runtime: Runtime):
    from offers.collector import ingest
    from streaming.protocol import Event, ProtocolError
    from tests.factories import event

    session = await shopper_with_an_offer(runtime)
    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    events: list[Event | ProtocolError] = [
        event("e1", "offer_shown", offer_id="o-1"),
        event("e2", "offer_accepted", offer_id="o-1"),
        event("e3", "purchase", order_id="D-1", total=300.0),
    ]
    result = await ingest(
        runtime, session_id=session, site="demo", items=events, client="c", now=T0 + 5
    )
    assert result.acked == ["e1", "e2", "e3"]
    marks = [await ws.receive_json_from() for _ in range(3)]
    assert [(m["type"], m["session"], m["offer_id"], m["kind"]) for m in marks] == [
        ("mark", session, "o-1", "offer_shown"),
        ("mark", session, "o-1", "offer_accepted"),
        ("mark", session, None, "purchase"),
    ]
    # an event sent again is acknowledged again, and shown once
    again = await ingest(
        runtime, session_id=session, site="demo", items=events[1:2], client="c", now=T0 + 6
    )
    assert again.acked == ["e2"] and await ws.receive_nothing(timeout=0.1)
    snapshot = json.loads(await runtime.feed.snapshot())
    assert [m["kind"] for m in snapshot["marks"]] == ["offer_shown", "offer_accepted", "purchase"]
    await ws.disconnect()


async def test_marks_have_a_rate_of_their_own(runtime: Runtime):
    from offers.dashboard import MARK_FRAMES_PER_SECOND, RECENT_MARKS

    ws = await operator_socket()
    await ws.connect()
    await ws.receive_json_from()
    await runtime.feed.on_marks([MarkMade(f"s{i}", None, "purchase", T0) for i in range(300)])
    await runtime.feed.on_decisions([made(1)], now=T0)
    frames = []
    while not await ws.receive_nothing(timeout=0.1):
        frames.append(await ws.receive_json_from())
    assert sum(f["type"] == "mark" for f in frames) == MARK_FRAMES_PER_SECOND
    assert [f["session"] for f in frames if f["type"] == "decision"] == ["s1"]
    for second in range(1, 10):
        await runtime.feed.on_marks(
            [MarkMade(f"s{i}", None, "purchase", T0 + second) for i in range(50)]
        )
    assert len(json.loads(await runtime.feed.snapshot())["marks"]) == RECENT_MARKS
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
    await front.on_marks([MarkMade("s1", "o-1", "offer_accepted", T0 + 1)])
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
    assert [d["session"] for d in snapshot["no_offer_decisions"]] == ["s2"]
    assert [(m["session"], m["kind"]) for m in snapshot["marks"]] == [("s1", "offer_accepted")]

    # the publisher stops (its lease runs out): the other worker takes over, rates unbroken
    await client.delete(f"{prefix}{{dash}}:lead")
    front.count_events(5)
    for process in (front, second):
        await process.step(T0 + 3)
    [taken_over] = await stats_frames(layer, channel)
    assert taken_over["decisions"] == {"offer": 2, "holdout": 1, "no_offer": 1}
    assert taken_over["events"] == 132 and taken_over["events_per_second"] == 5


# --- alerts, drift, money and the models ---------------------------------------------------------


def raised(kind: str, subject: str, severity: str, at: dt.datetime, **fields: Any) -> Alert:
    return Alert.objects.create(
        kind=kind,
        subject=subject,
        severity=severity,
        message=f"{kind} {subject}",
        first_seen=at,
        last_seen=at,
        **fields,
    )


async def test_a_dashboard_opens_with_the_open_alerts_then_the_latest_resolved():
    from offers.dashboard import RESOLVED_ALERTS

    now = timezone.now()

    def alerts() -> tuple[list[int], list[int]]:
        resolved = [
            raised(
                "budget_spent",
                f"rule:{i}",
                "warning",
                now - dt.timedelta(hours=2),
                resolved_at=now - dt.timedelta(minutes=60 - i),
            ).pk
            for i in range(RESOLVED_ALERTS + 2)
        ]
        dead = raised("dead_records", "", "critical", now - dt.timedelta(minutes=5))
        drift = raised("drift", "feature:cart_value", "warning", now - dt.timedelta(minutes=1))
        return [drift.pk, dead.pk], resolved[::-1][:RESOLVED_ALERTS]

    open_ids, latest_resolved = await sync_to_async(alerts)()
    ws = await operator_socket()
    await ws.connect()
    snapshot = await ws.receive_json_from()
    shown = snapshot["alerts"]
    assert [a["id"] for a in shown] == open_ids + latest_resolved
    dead = await Alert.objects.aget(pk=open_ids[1])
    assert shown[1] == alert_json(dead)
    assert (shown[1]["severity"], shown[1]["resolved_at"]) == ("critical", None)
    await ws.disconnect()


async def test_raised_alerts_go_out_live_and_acknowledging_one_from_the_page_records_who():
    from offers.alerts import AlertWatch, DeadRecordsCheck
    from offers.models import DeadRecord

    ws = await operator_socket()
    await ws.connect()
    assert (await ws.receive_json_from())["alerts"] == []
    await DeadRecord.objects.acreate(kind="decision", payload={}, error="site 'x' is gone")
    await AlertWatch([DeadRecordsCheck()]).step(T0)
    frame = await ws.receive_json_from()
    assert (frame["type"], frame["change"], frame["kind"], frame["severity"]) == (
        "alert",
        "raised",
        "dead_records",
        "critical",
    )
    assert frame["acknowledged_by"] == ""

    def acknowledge_from_the_page(alert_id: int) -> dict[str, Any]:
        # as the page does it: the token the page carries, in the header
        client = Client(enforce_csrf_checks=True)
        client.force_login(operator_user("ada"))
        page = client.get("/dashboard/").content.decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None
        refused = client.post(f"/api/alerts/{alert_id}/acknowledge/")
        assert refused.status_code == 403  # without the token
        answer = client.post(
            f"/api/alerts/{alert_id}/acknowledge/", HTTP_X_CSRFTOKEN=token.group(1)
        )
        assert answer.status_code == 200
        acknowledged: dict[str, Any] = answer.json()
        return acknowledged

    acknowledged = await sync_to_async(acknowledge_from_the_page)(frame["id"])
    assert acknowledged["acknowledged_by"] == "ada" and acknowledged["resolved_at"] is None
    # a dashboard open meanwhile (another operator's) is told at once
    told = await ws.receive_json_from()
    assert (told["type"], told["change"], told["id"]) == ("alert", "acknowledged", frame["id"])
    assert told["acknowledged_by"] == "ada"
    await ws.disconnect()
    again = await operator_socket()
    await again.connect()
    [alert] = (await again.receive_json_from())["alerts"]
    assert (alert["id"], alert["acknowledged_by"]) == (frame["id"], "ada")
    await again.disconnect()


async def test_stats_show_drift_per_feature_once_it_is_measured(runtime: Runtime):
    from offers.drift import DriftResult

    await runtime.feed.step(T0)
    assert runtime.feed.last_stats is not None and runtime.feed.last_stats["drift"] is None
    measured = dt.datetime(2025, 11, 24, 15, 0, tzinfo=dt.UTC)
    runtime.drift.result = DriftResult(
        at=measured,
        since=measured - dt.timedelta(hours=24),
        model="cart-risk@1",
        n=240,
        features={"cart_value": 0.31, "hour_of_day": 0.02},
        score=0.05,
    )
    await runtime.feed.step(T0 + 1)
    assert runtime.feed.last_stats["drift"] == {
        "at": "2025-11-24T15:00:00+00:00",
        "model": "cart-risk@1",
        "n": 240,
        "features": {"cart_value": 0.31, "hour_of_day": 0.02},
        "score": 0.05,
        "limit": 0.2,
    }


def offered_and_held_out(site: Site, sessions: int = 40) -> None:
    """`sessions` at-risk sessions offered and as many held out, in the last hour: every third
    offered one buys for 90 with its 10% code, every fourth held-out one pays 80."""
    from offers.models import Offer
    from offers.services import offer_redeem, record_write

    at = timezone.now() - dt.timedelta(minutes=30)
    marks = []
    for i in range(sessions):
        offered = Decision.objects.create(
            site=site, session=f"o{i}", pause_key=f"o{i}:1", at=at, outcome=Outcome.OFFER
        )
        if i % 3 == 0:
            Offer.objects.create(
                decision=offered,
                public_id=f"o-{i}",
                session=f"o{i}",
                code=f"SAVE10-{i}",
                title="t",
                message="m",
                discount_percent=10,
                created_at=at,
                expires_at=at + dt.timedelta(hours=1),
            )
            offer_redeem(code=f"SAVE10-{i}", site=site.key, order_id=f"{i}", total=Decimal(90))
        Decision.objects.create(
            site=site, session=f"h{i}", pause_key=f"h{i}:1", at=at, outcome=Outcome.HOLDOUT
        )
        if i % 4 == 0:
            marks.append(MarkMade(f"h{i}", None, "purchase", at.timestamp() + 60, total=80.0))
    record_write(records=marks)


async def test_stats_show_the_money_and_the_chart_gets_a_point_per_refresh(
    runtime: Runtime, demo_site: Site
):
    from offers.dashboard import UPLIFT_EVERY
    from offers.money import uplift_money

    await sync_to_async(offered_and_held_out)(demo_site)
    feed = runtime.feed
    await feed.step(T0)
    money = feed.last_stats["money"]  # type: ignore[index]
    assert money == {**await sync_to_async(uplift_money)(window="24h"), "at": round(T0)}
    assert money["offered"] == {"sessions": 40, "buyers": 14, "revenue": 1260.0, "discount": 140.0}
    assert money["holdout"] == {"sessions": 40, "buyers": 10, "revenue": 800.0, "discount": 0.0}
    net = money["per_1000"]["net_incremental_revenue"]
    assert net["estimate"] == 8_000.0 and net["low"] < net["estimate"] < net["high"]
    assert money["per_1000"]["incremental_buyers"]["estimate"] == 100.0
    assert money["verdict"].startswith("No clear difference yet: +8,000.00")
    await feed.step(T0 + 1)  # in between: the same figures, no new point
    await feed.step(T0 + UPLIFT_EVERY)
    snapshot = json.loads(await feed.snapshot())
    assert snapshot["money_history"] == [
        [round(T0), net["estimate"], net["low"], net["high"]],
        [round(T0 + UPLIFT_EVERY), net["estimate"], net["low"], net["high"]],
    ]
    assert snapshot["stats"]["money"]["at"] == round(T0 + UPLIFT_EVERY)


async def test_before_any_sessions_the_money_is_there_without_estimates(runtime: Runtime):
    await runtime.feed.step(T0)
    money = runtime.feed.last_stats["money"]  # type: ignore[index]
    assert money["per_1000"]["net_incremental_revenue"] == {
        "estimate": None,
        "low": None,
        "high": None,
    }
    assert money["verdict"].startswith("Too early to tell")
    snapshot = json.loads(await runtime.feed.snapshot())
    assert snapshot["money_history"] == [[round(T0), None, None, None]]


async def test_the_model_tile_has_the_active_and_shadow_models_on_known_outcomes(
    runtime: Runtime, demo_site: Site
):
    from offers.dashboard import MODELS_EVERY
    from tests.offers.outcomes import record_outcomes, registered

    feed = runtime.feed
    await feed.step_models(T0)
    assert feed.model_figures is None  # no model at all

    def models() -> tuple[str, str]:
        poor = registered(rounds=1, max_depth=1, state=ScoringModel.State.ACTIVE)
        ScoringModel.objects.filter(pk=poor.pk).update(metrics={"auc": 0.7})
        good = registered(rounds=30)
        model_shadow(model=good)
        good.events.filter(action=ModelEvent.Action.SHADOWED).update(
            at=timezone.now() - dt.timedelta(hours=5)
        )
        record_outcomes(demo_site, 200, age=dt.timedelta(hours=8), key="before")
        record_outcomes(demo_site, 120, seed=6, key="since")
        return poor.label, good.label

    poor, good = await sync_to_async(models)()
    await feed.step_models(T0 + MODELS_EVERY)
    figures = feed.model_figures
    assert figures is not None
    # the shadow's trial: only the known outcomes since it entered shadow, both models on them
    assert (figures["basis"], figures["n"], figures["at"]) == (
        "shadow_trial",
        120,
        T0 + MODELS_EVERY,
    )
    active, shadow = figures["models"]
    assert (active["model"], active["role"], active["trained_roc_auc"]) == (poor, "active", 0.7)
    assert (shadow["model"], shadow["role"], shadow["trained_roc_auc"]) == (good, "shadow", None)
    assert active["n"] == shadow["n"] == 120
    assert shadow["roc_auc"] > active["roc_auc"] and shadow["log_loss"] < active["log_loss"]
    assert feed.stats(T0 + MODELS_EVERY)["model_figures"] == figures
    await feed.step_models(T0 + MODELS_EVERY + 30)  # within the minute: not again
    assert feed.model_figures is figures

    # without a shadow: the active model on the known outcomes of the last day
    await ScoringModel.objects.filter(state=ScoringModel.State.SHADOW).aupdate(
        state=ScoringModel.State.CANDIDATE
    )
    await feed.step_models(T0 + 3 * MODELS_EVERY)
    alone = feed.model_figures
    assert alone is not None and alone["basis"] == "last_day"
    assert [(m["model"], m["role"], m["n"]) for m in alone["models"]] == [(poor, "active", 320)]


class MeasuredDrift:
    """A drift source that has measured once."""

    def latest(self) -> dict[str, Any] | None:
        return {
            "at": "2025-11-24T15:00:00+00:00",
            "model": "cart-risk@1",
            "n": 240,
            "features": {"hour_of_day": 0.64},
            "score": 0.03,
        }


async def test_in_redis_mode_the_publisher_works_out_money_models_and_drift_for_every_server(
    board: tuple[aioredis.Redis, str], demo_site: Site
):
    from offers.dashboard import UPLIFT_EVERY
    from offers.services import model_activate
    from tests.factories import stored_model
    from tests.offers.outcomes import record_outcomes

    client, prefix = board

    def feed(*, publishes: bool) -> DashboardFeed:
        shared = SharedBoard(client, prefix=prefix)
        return DashboardFeed(
            store=MemoryStore(),
            models=ModelSlot(),
            shared=shared,
            publishes=publishes,
            drift=MeasuredDrift(),
        )

    def known_outcomes() -> str:
        model = stored_model()
        model_activate(model=model)
        record_outcomes(demo_site, 60, age=dt.timedelta(hours=2))
        offered_and_held_out(demo_site)
        return str(model.label)

    active = await sync_to_async(known_outcomes)()
    front, first, second = feed(publishes=False), feed(publishes=True), feed(publishes=True)
    for process in (front, first, second):
        await process.step(T0)
        await process.step_models(T0)
    # only the holder of the lease worked the figures out
    assert first.model_figures is not None
    assert front.model_figures is None and second.model_figures is None
    assert [m["model"] for m in first.model_figures["models"]] == [active]
    assert second.money is None and front.money is None
    await first.step(T0 + UPLIFT_EVERY)

    # a dashboard connecting to the front end sees what the publisher worked out
    snapshot = json.loads(await front.snapshot())
    stats = snapshot["stats"]
    assert stats["money"]["offered"]["sessions"] == 40
    assert stats["model_figures"]["models"][0]["n"] == 60
    assert stats["drift"]["features"] == {"hour_of_day": 0.64} and stats["drift"]["limit"] == 0.2
    net = stats["money"]["per_1000"]["net_incremental_revenue"]
    assert [row[0] for row in snapshot["money_history"]] == [round(T0), round(T0 + UPLIFT_EVERY)]
    assert snapshot["money_history"][-1] == [round(T0 + UPLIFT_EVERY), *net.values()]
    assert snapshot["alerts"] == []

    # the publisher stops: the other worker takes over and goes on with the chart
    await client.delete(f"{prefix}{{dash}}:lead")
    await second.step(T0 + 2 * UPLIFT_EVERY)
    await second.step_models(T0 + 2 * UPLIFT_EVERY)
    assert second.model_figures is not None
    history = json.loads(await front.snapshot())["money_history"]
    assert len(history) == 3 and history[-1][0] == round(T0 + 2 * UPLIFT_EVERY)
