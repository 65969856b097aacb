"""`manage.py simulate`: replayed timing, reactions to offers, and a run against a real `serve`."""

from __future__ import annotations

import json
import random
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.clients.simulate import (
    PAUSE_MARGIN,
    CannotConnect,
    collector_url,
    reaction_to_offer,
    redeem_url,
    replay_times,
    run_simulation,
)
from streaming.generator import GeneratedEvent, GeneratedSession, Response, generate_session
from tests.subprocesses import Server, free_port, manage, prepared_env


def session_at(*times: float, persona: str = "abandoner") -> GeneratedSession:
    events = [
        GeneratedEvent(at, {"id": f"e-{n}", "event": "page_view", "props": {"url": "/"}})
        for n, at in enumerate(times, start=1)
    ]
    return GeneratedSession(persona, events, purchased=False, buys_with_offer=False)


def test_pauses_last_just_over_the_servers_pause_and_other_gaps_are_sped_up():
    # Gaps of 4 s and 9 s are clicks and reads; 95 s is a pause (the personas' pause is 30 s).
    session = session_at(0.0, 4.0, 13.0, 108.0, 112.0)
    times = replay_times(session, pause_seconds=2.0, speed=10.0)
    gaps = np.diff([0.0, *times])
    assert gaps == pytest.approx([0.0, 0.4, 0.9, 2.0 + PAUSE_MARGIN, 0.4])


def test_compression_never_turns_a_long_read_into_a_pause():
    # 25 s of filling in a form is no pause, even on a server that pauses after 1 s.
    times = replay_times(session_at(0.0, 25.0), pause_seconds=1.0, speed=2.0)
    assert 0 < times[1] < 1.0


def test_shoppers_react_to_offers_as_their_response_says():
    rng = np.random.default_rng(3)
    reactions = defaultdict(set)
    for persona in ("browser", "buyer", "comparer", "abandoner", "persuadable"):
        for n in range(80):
            session = generate_session(rng, persona)
            reactions[session.response].add(reaction_to_offer(session, random.Random(n)))
    assert reactions[Response.PERSUADABLE] == {"accept_and_buy"}
    assert reactions[Response.SURE_THING] == {"accept"}  # takes the code and buys anyway
    assert reactions[Response.PUT_OFF] == {"leave"}
    assert reactions[Response.LOST_CAUSE] == {"dismiss", "ignore"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws/collect/?site=demo"),
        ("https://shop.example/", "wss://shop.example/ws/collect/?site=demo"),
        ("ws://h:1/ws/collect/", "ws://h:1/ws/collect/?site=demo"),
        ("https://h/offers", "wss://h/offers/ws/collect/?site=demo"),
    ],
)
def test_the_collector_address_comes_from_the_servers(url, expected):
    assert collector_url(url, "demo") == expected


@pytest.mark.parametrize("url", ["ftp://h", "127.0.0.1:8000", "http://", "http://h:port"])
def test_an_address_that_is_no_server_is_refused(url):
    with pytest.raises(ValueError, match="--url"):
        collector_url(url, "demo")


# --- against a stand-in collector: acks, an offer after the first add, rate limits -------------


class StandInCollector:
    """Just enough of the collector to play against: one offer per socket after its first add."""

    def __init__(self, *, limit_first_sends: bool = False) -> None:
        self.limit_first_sends = limit_first_sends
        self.events: list[str] = []
        self.props: list[dict[str, Any]] = []

    async def handle(self, ws: ServerConnection) -> None:
        welcome = {"type": "welcome", "session": "s-1", "token": "t", "pause_seconds": 0.2}
        await ws.send(json.dumps(welcome))
        offered, limited = False, set()
        async for message in ws:
            frame: dict[str, Any] = json.loads(message)
            if self.limit_first_sends and frame["id"] not in limited:
                limited.add(frame["id"])
                error = {"type": "error", "code": "rate_limited", "detail": "slow down"}
                await ws.send(json.dumps({**error, "id": frame["id"]}))
                continue
            self.events.append(frame["event"])
            self.props.append(frame.get("props") or {})
            await ws.send(json.dumps({"type": "ack", "ids": [frame["id"]]}))
            if frame["event"] == "add_to_cart" and not offered:
                offered = True
                offer = {"type": "offer", "offer_id": "o-1", "code": "SAVE10-X"}
                await ws.send(json.dumps({**offer, "discount_percent": 10}))


@asynccontextmanager
async def stand_in(collector: StandInCollector) -> AsyncIterator[str]:
    async with serve(collector.handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}"


async def test_a_persuadable_shopper_accepts_the_offer_and_buys():
    collector = StandInCollector()
    async with stand_in(collector) as url:
        report = await run_simulation(
            url=url,
            site="demo",
            shoppers=1,
            seconds=2.0,
            seed=2,  # (a shopper whose pause comes within the first second)
            speed=1000,
            mix={"persuadable": 1.0},
        )
    # Each shopper reads for half a minute a page (longer reads replay as pauses): those still
    # browsing when the run stops have had no offer yet.
    assert report.started >= 1 and report.offers_received >= 1
    assert report.offers_accepted == report.purchases_with_offer == report.offers_received
    assert report.acked == report.sent and report.refused == 0 and report.problems == []
    reaction = collector.events[collector.events.index("offer_shown") :][:4]
    assert reaction == ["offer_shown", "offer_accepted", "checkout_start", "purchase"]
    # It pays with the offer's code, the total after its 10% off the cart it added
    added = sum(
        p["price"] * p.get("quantity", 1)
        for e, p in zip(collector.events, collector.props, strict=True)
        if e == "add_to_cart"
    )
    purchase = collector.props[collector.events.index("purchase")]
    assert purchase["code"] == "SAVE10-X" and purchase["total"] == round(added * 0.9, 2)
    assert report.personas["persuadable"].purchases == report.offers_received


async def test_rate_limited_events_are_sent_again_until_acknowledged():
    collector = StandInCollector(limit_first_sends=True)
    async with stand_in(collector) as url:
        report = await run_simulation(
            url=url,
            site="demo",
            shoppers=2,
            seconds=0.2,
            seed=2,
            speed=1000,
            mix={"browser": 1.0},
        )
    assert report.sent > 0 and report.acked == report.sent == report.resent
    assert report.errors["rate_limited"] == report.sent
    assert report.refused == 0 and report.problems == []


async def test_it_says_plainly_when_no_server_answers():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CannotConnect, match=r"cannot reach ws://.*: connection refused"):
        await run_simulation(url=url, site="demo", shoppers=2, seconds=1)


# --- against a real server ----------------------------------------------------------------------


def summary(stdout: str) -> dict[str, float]:
    """The summary's "label   value" rows."""
    rows = re.findall(r"^([a-z/ ]+?) {2,}(\d+(?:\.\d+)?)$", stdout, re.MULTILINE)
    return {label: float(value) for label, value in rows}


def offer_decisions(server: Server, cookie: str, *, at_least: int, timeout: float = 5) -> int:
    """How many `offer` decisions the server recorded, once there are `at_least`."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            f"{server.url}/api/decisions/?limit=1000", headers={"Cookie": f"sessionid={cookie}"}
        )
        with urllib.request.urlopen(request) as response:
            decisions: list[dict[str, object]] = json.load(response)["decisions"]
        found = sum(d["outcome"] == "offer" for d in decisions)
        if found >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/api/redeem/"),
        ("wss://shop.example/ws/collect/", "https://shop.example/api/redeem/"),
        ("https://h/offers/", "https://h/offers/api/redeem/"),
    ],
)
def test_codes_are_redeemed_at_the_servers_api(url, expected):
    assert redeem_url(url) == expected


NEW_KEY = (
    "from offers.models import Site; from offers.services import api_key_create; "
    "print(api_key_create(site=Site.objects.get(key='demo'), name='simulate')[1])"
)


@pytest.mark.e2e
def test_simulated_shoppers_pause_and_get_the_offers_the_server_decided(tmp_path):
    env, cookie = prepared_env(tmp_path, PAUSE_SECONDS="1")
    made = manage("shell", "-v", "0", "-c", NEW_KEY, env=env)
    assert made.returncode == 0, made.stderr
    with Server(env) as server:
        began = time.monotonic()
        result = manage(
            "simulate",
            "--url",
            server.url,
            "--shoppers",
            "20",
            "--seconds",
            "6",
            "--seed",
            "7",
            "--api-key",
            made.stdout.strip(),
            env=env,
            timeout=60,
        )
        took = time.monotonic() - began
        assert result.returncode == 0, result.stderr
        figures = summary(result.stdout)
        assert figures["events acked"] > 0 and figures["events refused"] == 0, result.stdout
        assert "errors " not in result.stdout and "problems" not in result.stdout
        assert figures["shoppers started"] >= 20 and figures["shoppers dropped"] == 0
        offers = int(figures["offers received"])
        assert offers >= 1, result.stdout
        assert offer_decisions(server, cookie, at_least=offers) >= offers
        # Every purchase through an offer used its code, and the shop's backend redeemed it:
        # the discounts count in the money figures.
        with_offer = int(figures["purchases with offer"])
        assert with_offer >= 1 and figures["codes redeemed"] == with_offer, result.stdout
        request = urllib.request.Request(
            f"{server.url}/api/uplift/?window=1h", headers={"Cookie": f"sessionid={cookie}"}
        )
        with urllib.request.urlopen(request) as response:
            assert json.load(response)["offered"]["discount"] > 0
    # 6 s of shoppers, then the server's pause + 2 s for the last decisions, plus start-up.
    assert took < 6 + 1 + 2 + 5
