from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from config.asgi import application
from offers.runtime import Runtime
from offers.tokens import issue_token
from tests.factories import T0, track

pytestmark = pytest.mark.django_db(transaction=True)

ADD = track("e-1", "add_to_cart", product_id="sku-1", price=19.99, quantity=2)


def shopper(query: str = "site=demo", origin: str | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode())] if origin else []
    return WebsocketCommunicator(application, f"/ws/collect/?{query}", headers=headers)


async def connected(
    query: str = "site=demo", origin: str | None = None
) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    ws = shopper(query, origin)
    ok, _ = await ws.connect()
    assert ok
    welcome = await ws.receive_json_from()
    return ws, welcome


async def send(ws: WebsocketCommunicator, frame: Any) -> dict[str, Any]:
    await ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
    reply: dict[str, Any] = await ws.receive_json_from()
    return reply


@pytest.mark.usefixtures("demo_site")
async def test_it_welcomes_a_shopper_with_a_session_and_signed_token(runtime: Runtime):
    ws, welcome = await connected()
    assert welcome["type"] == "welcome"
    assert welcome["pause_seconds"] == 30.0
    assert len(welcome["session"]) >= 16
    assert welcome["token"].count(":") == 2
    assert await runtime.store.get(welcome["session"]) is not None
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_it_acknowledges_and_applies_each_valid_event(runtime: Runtime):
    ws, welcome = await connected()
    assert await send(ws, ADD) == {"type": "ack", "ids": ["e-1"]}
    batch = {
        "type": "batch",
        "events": [
            {"id": "e-2", "event": "product_view", "props": {"product_id": "sku-2", "price": 5}},
            {"id": "e-3", "event": "visibility", "props": {"state": "hidden"}},
        ],
    }
    assert await send(ws, batch) == {"type": "ack", "ids": ["e-2", "e-3"]}
    state = await runtime.store.get(welcome["session"])
    assert state is not None
    assert state.cart_value == 39.98 and state.product_views == 1 and state.hidden
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_a_repeated_id_is_acknowledged_again_and_applied_once(runtime: Runtime):
    ws, welcome = await connected()
    await send(ws, ADD)
    assert await send(ws, ADD) == {"type": "ack", "ids": ["e-1"]}
    state = await runtime.store.get(welcome["session"])
    assert state is not None and state.cart == {"sku-1": (2, 19.99)}
    await ws.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ({"type": "shout", "id": "e-9"}, "bad_frame"),
        (track("e-9", "teleport"), "unknown_event"),
        (track("e-9", "add_to_cart", product_id="sku-1", price=-3), "invalid_props"),
    ],
)
@pytest.mark.usefixtures("demo_site")
async def test_bad_frames_get_an_error_and_the_socket_stays_open(runtime: Runtime, frame, code):
    ws, welcome = await connected()
    error = await send(ws, frame)
    assert error["type"] == "error" and error["code"] == code and error["detail"]
    state = await runtime.store.get(welcome["session"])
    assert state is not None and state.cart == {} and state.activity_seq == 0
    assert await send(ws, ADD) == {"type": "ack", "ids": ["e-1"]}
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_a_frame_over_16_kib_closes_with_1009():
    ws, _ = await connected()
    await ws.send_to(text_data=json.dumps(track("e-1", "search", query="q")) + " " * 16 * 1024)
    assert await ws.receive_output() == {
        "type": "websocket.close",
        "code": 1009,
        "reason": "frame over 16 KiB",
    }


@pytest.mark.usefixtures("demo_site")
async def test_more_than_a_hundred_errors_close_with_4400():
    ws, _ = await connected()
    for _ in range(100):
        assert (await send(ws, "nope"))["code"] == "bad_json"
    await ws.send_to(text_data="nope")
    assert (await ws.receive_json_from())["code"] == "bad_json"
    assert (await ws.receive_output())["code"] == 4400


@pytest.mark.usefixtures("demo_site")
async def test_a_sessions_sockets_share_one_rate_limit(runtime: Runtime):
    runtime.limits.session_burst, runtime.limits.session_rate = 4, 0.001
    first, welcome = await connected()
    second, _ = await connected(f"site=demo&token={welcome['token']}")
    search = {"event": "search", "props": {"query": "x"}}
    assert (
        len(
            (
                await send(
                    first,
                    {"type": "batch", "events": [{"id": f"a-{i}", **search} for i in range(3)]},
                )
            )["ids"]
        )
        == 3
    )
    reply = await send(
        second, {"type": "batch", "events": [{"id": f"b-{i}", **search} for i in range(3)]}
    )
    assert reply["ids"] == ["b-0"]  # the same session's bucket, not a fresh one a socket
    await first.disconnect()
    await second.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_sockets_past_the_clients_limit_are_refused_and_given_back_on_close(
    runtime: Runtime,
):
    runtime.limits.sockets_per_client = 3
    sockets = [(await connected())[0] for _ in range(3)]
    assert runtime.limits.open == {"unknown": 3}  # the test client has no peer address
    refused = shopper()
    assert (await refused.connect())[0] is False
    await sockets[0].disconnect()
    again, _ = await connected()
    for ws in [*sockets[1:], again]:
        await ws.disconnect()
    assert runtime.limits.total == 0 and not runtime.limits.open


@pytest.mark.usefixtures("demo_site")
async def test_rate_limited_events_are_refused_and_not_acknowledged(runtime: Runtime):
    runtime.limits.session_burst, runtime.limits.session_rate = 3, 0.001
    ws, welcome = await connected()
    events = [{"id": f"e-{i}", "event": "search", "props": {"query": "x"}} for i in range(5)]
    assert await send(ws, {"type": "batch", "events": events}) == {
        "type": "ack",
        "ids": ["e-0", "e-1", "e-2"],
    }
    error = await ws.receive_json_from()
    assert (error["code"], error["id"]) == ("rate_limited", "e-3")
    state = await runtime.store.get(welcome["session"])
    assert state is not None and state.searches == 3
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_an_unknown_site_is_refused_at_the_handshake():
    ok, code = await shopper("site=nope").connect()
    assert not ok and code == 1000  # daphne answers a close before accept with HTTP 403


@pytest.mark.usefixtures("demo_site")
async def test_a_missing_site_key_is_refused():
    ok, _ = await shopper("").connect()
    assert not ok


@pytest.mark.usefixtures("strict_site")
async def test_an_origin_the_site_does_not_allow_is_refused():
    ok, _ = await shopper("site=strict", origin="https://evil.example").connect()
    assert not ok
    ok, _ = await shopper("site=strict").connect()  # no Origin at all
    assert not ok


@pytest.mark.usefixtures("strict_site")
async def test_an_allowed_origin_is_accepted():
    ws, welcome = await connected("site=strict", origin="https://www.shop.example")
    assert welcome["type"] == "welcome"
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_a_valid_token_resumes_the_same_session_and_state(runtime: Runtime):
    ws, welcome = await connected()
    await send(ws, ADD)
    await ws.disconnect()
    ws, again = await connected(f"site=demo&token={welcome['token']}")
    assert again["session"] == welcome["session"]
    state = await runtime.store.get(again["session"])
    assert state is not None and state.cart_value == 39.98
    assert await send(ws, ADD) == {"type": "ack", "ids": ["e-1"]}  # still de-duplicated
    assert state.cart_value == 39.98
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_a_forged_token_starts_a_new_session():
    _, welcome = await connected()
    forged = welcome["token"][:-2] + ("AA" if not welcome["token"].endswith("AA") else "BB")
    ws, again = await connected(f"site=demo&token={forged}")
    assert again["session"] != welcome["session"]
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site", "strict_site")
async def test_a_token_for_another_site_starts_a_new_session():
    token = issue_token("someone-elses", "strict")
    ws, welcome = await connected(f"site=demo&token={token}")
    assert welcome["session"] != "someone-elses"
    await ws.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_one_bad_client_never_harms_another_session(runtime: Runtime):
    good, good_welcome = await connected()
    bad, _ = await connected()
    for _ in range(101):
        await bad.send_to(text_data="{")
    assert await send(good, ADD) == {"type": "ack", "ids": ["e-1"]}
    state = await runtime.store.get(good_welcome["session"])
    assert state is not None and state.cart_value == 39.98
    await good.disconnect()
    await bad.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_sockets_are_registered_for_delivery_while_open(runtime: Runtime):
    tab1, welcome = await connected()
    tab2, _ = await connected(f"site=demo&token={welcome['token']}")
    assert runtime.delivery.open_sockets() == 2
    assert await runtime.delivery.deliver(welcome["session"], '{"type":"offer"}') == 2
    assert await tab1.receive_json_from() == {"type": "offer"}
    assert await tab2.receive_json_from() == {"type": "offer"}
    await tab1.disconnect()
    await tab2.disconnect()
    assert runtime.delivery.open_sockets() == 0


@pytest.mark.usefixtures("demo_site")
async def test_hostile_binary_frames_get_errors_and_the_socket_stays_open(runtime: Runtime):
    ws, _ = await connected()
    frames = [
        b'{"type":"track","id":"e-\xff","event":"heartbeat"}',
        b'{"type":"track","id":"e-2","event":"search","props":{"query":"\xc3\x28"}}',
        ("[" * 15_000).encode(),
        '{"type":"track","id":"e-3","event":"search","props":' + "[" * 1000 + "]" * 1000 + "}",
        '{"type":"track","id":"e-4","event":"add_to_cart","props":{"product_id":"a","price":NaN}}',
        '{"type":"track","id":"e-5","event":"add_to_cart","props":{"product_id":"a","price":1e400}}',
        '{"type":"track","id":"e-6","event":"add_to_cart","ts":' + "9" * 5000 + "}",
    ]
    for frame in frames:
        if isinstance(frame, bytes):
            await ws.send_to(bytes_data=frame)
        else:
            await ws.send_to(text_data=frame)
        answer = await ws.receive_json_from()
        assert answer["type"] == "error" and answer["code"] in {
            "bad_json",
            "bad_frame",
            "invalid_props",
        }, answer
    assert await send(ws, ADD) == {"type": "ack", "ids": ["e-1"]}
    await ws.disconnect()
    assert runtime.delivery.open_sockets() == 0


@pytest.mark.usefixtures("demo_site")
async def test_a_frame_that_fails_unexpectedly_gets_an_error_frame_and_is_counted(
    runtime: Runtime, monkeypatch
):
    from prometheus_client import REGISTRY

    from offers import consumers

    def crashes() -> float:
        return REGISTRY.get_sample_value("liveoffers_frame_crashes_total") or 0.0

    def broken(_data):
        raise ZeroDivisionError("a bug in a future decoder")

    ws, _ = await connected()
    before = crashes()
    monkeypatch.setattr(consumers, "decode_frame", broken)
    error = await send(ws, ADD)
    assert error["type"] == "error" and error["code"] == "bad_frame"
    assert crashes() == before + 1
    monkeypatch.undo()
    # The socket is open and well.
    assert await send(ws, ADD) == {"type": "ack", "ids": ["e-1"]}
    await ws.disconnect()
    assert runtime.delivery.open_sockets() == 0


@pytest.mark.usefixtures("demo_site")
async def test_a_socket_whose_consumer_dies_is_detached_from_delivery(
    runtime: Runtime, monkeypatch
):
    from offers import consumers

    async def broken(_self, _message):
        raise ZeroDivisionError("a bug outside the frame guard")

    ws, _ = await connected()
    assert runtime.delivery.open_sockets() == 1
    monkeypatch.setattr(consumers.CollectorConsumer, "websocket_receive", broken)
    await ws.send_to(text_data=json.dumps(ADD))
    with pytest.raises(ZeroDivisionError):
        await ws.wait(timeout=2)
    assert runtime.delivery.open_sockets() == 0


@pytest.mark.usefixtures("demo_site", "runtime")
async def test_while_the_database_is_away_a_known_site_is_still_found(monkeypatch):
    from django.db import OperationalError

    from offers import sites

    first, _ = await connected()  # the site is looked up, and remembered
    await first.disconnect()

    def away(_key: str) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(sites, "_load", away)
    monkeypatch.setattr(sites, "CACHE_SECONDS", 0.0)  # the cached look-up has gone stale
    again, welcome = await connected()  # found all the same
    assert welcome["type"] == "welcome"
    await again.disconnect()
    sites.forget_sites()  # never looked up: it cannot be found, and the shopper is told later
    ws = shopper()
    assert (await ws.connect())[0] is False


@pytest.mark.usefixtures("demo_site")
async def test_a_site_key_no_site_can_have_is_refused_without_a_query():
    for key in ("demo%00", "%00", "de mo", "d%C3%A9mo", "x" * 65):
        ws = shopper(f"site={key}")
        ok, _ = await ws.connect()
        assert not ok, key


@pytest.mark.usefixtures("demo_site")
async def test_frames_read_after_the_server_closed_are_neither_applied_nor_answered(
    runtime: Runtime,
):
    from prometheus_client import REGISTRY

    def crashes() -> float:
        return REGISTRY.get_sample_value("liveoffers_frame_crashes_total") or 0.0

    before = crashes()
    ws, welcome = await connected()
    await ws.send_to(text_data=json.dumps(track("e-0", "search", query="q")) + " " * 16 * 1024)
    await ws.send_to(text_data=json.dumps(ADD))
    assert (await ws.receive_output())["code"] == 1009
    assert await ws.receive_nothing(timeout=0.2)
    state = await runtime.store.get(welcome["session"])
    assert state is not None and state.cart == {}
    assert crashes() == before


class StalledOutput(asyncio.Queue[dict[str, Any]]):
    """A connection whose client stops reading: once stalled, a send never completes; a close
    is let through, as the server cuts such a connection."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = False

    async def put(self, item: dict[str, Any]) -> None:
        if self.stalled and item["type"] == "websocket.send":
            await asyncio.Event().wait()
        await super().put(item)


@pytest.mark.usefixtures("demo_site")
async def test_a_client_that_does_not_read_is_closed_and_delays_nobody(runtime: Runtime, settings):
    settings.MAX_UNSENT_BYTES = 16 * 1024
    stalled = shopper()
    output = stalled._output_queue = StalledOutput()
    ok, _ = await stalled.connect()
    assert ok
    stalled_session = (await stalled.receive_json_from())["session"]
    good, welcome = await connected()
    output.stalled = True
    frame = json.dumps({"type": "offer", "padding": "x" * 1000})
    for _ in range(40):
        await runtime.delivery.deliver(stalled_session, frame)
        assert await runtime.delivery.deliver(welcome["session"], '{"type":"offer"}') == 1
    for _ in range(40):
        assert await good.receive_json_from() == {"type": "offer"}
    assert await stalled.receive_output() == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "not reading",
    }
    assert runtime.delivery.open_sockets() == 1
    assert await send(good, ADD) == {"type": "ack", "ids": ["e-1"]}
    await stalled.disconnect()
    await good.disconnect()


@pytest.mark.usefixtures("demo_site")
async def test_frames_are_written_in_order_and_an_error_goes_out_before_its_close(runtime: Runtime):
    ws, welcome = await connected()
    for i in range(5):
        await runtime.delivery.deliver(welcome["session"], json.dumps({"type": "offer", "n": i}))
    await ws.send_to(text_data="x" * (17 * 1024))
    assert [(await ws.receive_json_from())["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert (await ws.receive_output())["code"] == 1009
    await ws.disconnect()


def _ignored_offer_events() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("liveoffers_offer_events_ignored_total") or 0.0


@pytest.mark.usefixtures("demo_site")
async def test_offer_events_count_only_for_the_sessions_own_offer(runtime: Runtime):
    from asgiref.sync import sync_to_async

    from offers import services
    from offers.models import Offer
    from tests.offers.test_recorder import decision

    runtime.limits.session_burst = 5000
    ws, welcome = await connected()
    session = welcome["session"]
    made = decision(f"{session}:1")
    assert made.offer is not None
    await sync_to_async(services.decision_record_batch)(decisions=[made])
    await runtime.store.note_offer(
        session, at=T0, offer_id=made.offer.offer_id, frame="{}", expires_at=T0 + 1800
    )
    ignored = _ignored_offer_events()
    for start in range(0, 1500, 100):
        made_up = [
            {"id": f"f-{i}", "event": "offer_accepted", "props": {"offer_id": f"o-made-up-{i}"}}
            for i in range(start, start + 100)
        ]
        ack = await send(ws, {"type": "batch", "events": made_up})
        assert len(ack["ids"]) == 100
    assert _ignored_offer_events() - ignored == 1500
    assert runtime.feed.counted.offers_accepted == 0
    assert runtime.journal.waiting() == 0
    real = track("e-real", "offer_accepted", offer_id=made.offer.offer_id)
    assert await send(ws, real) == {"type": "ack", "ids": ["e-real"]}
    assert runtime.feed.counted.offers_accepted == 1 and runtime.journal.waiting() == 1
    await runtime.recorder.step(T0)
    offer = await Offer.objects.aget(public_id=made.offer.offer_id)
    assert offer.accepted_at is not None and runtime.journal.waiting() == 0
    await ws.disconnect()
