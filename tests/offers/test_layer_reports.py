"""The channel layer's reports (offers/layer_reports.py) from a real channels-redis on a real Redis, and
how a collector socket keeps its offers when the layer loses some."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from prometheus_client import REGISTRY

from config.asgi import application
from offers import layer_reports
from offers.consumers import CollectorConsumer
from offers.runtime import Runtime
from streaming.delivery import LayerDelivery, session_group
from streaming.state import SessionState
from tests.conftest import service_missing
from tests.redis_servers import RedisServer, answers

REDIS_URL = "redis://127.0.0.1:6379/0"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def on_receive_failure() -> Iterator[asyncio.Event]:
    failed = asyncio.Event()
    layer_reports.on_receive_failure(failed.set)
    yield failed
    layer_reports.on_receive_failure(None)


@pytest.mark.services
async def test_a_message_dropped_for_a_full_channel_is_counted_and_logged_as_a_warning(caplog):
    if not answers(6379):
        service_missing("Redis at 127.0.0.1:6379")
    full = RedisChannelLayer(hosts=[REDIS_URL], prefix=f"lo-test-{uuid.uuid4().hex}", capacity=2)
    before = sample("liveoffers_channel_layer_drops_total")
    try:
        channel = await full.new_channel()
        await full.group_add("lo.session.s-1", channel)
        for n in range(5):  # nobody reads the channel: the last three find it full
            await full.group_send("lo.session.s-1", {"type": "offer.push", "text": str(n)})
        assert (await full.receive(channel))["text"] == "0"
    finally:
        await full.flush()
    assert sample("liveoffers_channel_layer_drops_total") - before == 3
    warnings = [r for r in caplog.records if r.name == "channels_redis.core"]
    assert [r.levelname for r in warnings] == ["WARNING"] * 3
    assert "over capacity in group lo.session.s-1" in warnings[0].getMessage()


@pytest.mark.services
async def test_a_subscriber_that_loses_redis_is_counted_and_reported(
    tmp_path: Path, on_receive_failure: asyncio.Event
):
    redis = RedisServer(tmp_path)
    pubsub = RedisPubSubChannelLayer(hosts=[redis.url])
    before = sample("liveoffers_channel_layer_receive_failures_total")
    try:
        await pubsub.new_channel()  # subscribes, and starts the layer's receive loop
        redis.kill()
        await asyncio.wait_for(on_receive_failure.wait(), 5)
    finally:
        redis.kill()
        logging.getLogger("channels_redis.pubsub").disabled = True  # its retries, until flushed
        try:
            await pubsub.flush()
        finally:
            logging.getLogger("channels_redis.pubsub").disabled = False
    assert sample("liveoffers_channel_layer_receive_failures_total") - before >= 1


# --- the collector socket in Redis mode (the in-memory layer standing in for Redis) -------------
OFFER = json.dumps({"type": "offer", "offer_id": "o-1", "expires_at": "2099-01-01T00:00:00Z"})


@pytest.fixture
def layered(runtime: Runtime, monkeypatch) -> Iterator[Runtime]:
    """A runtime whose collector sockets join their session's group, as in Redis mode."""
    monkeypatch.setattr(CollectorConsumer, "channel_layer_alias", "default")
    runtime.delivery = LayerDelivery(get_channel_layer)
    layer_reports.on_receive_failure(runtime.delivery.layer_lost)
    yield runtime
    layer_reports.on_receive_failure(None)


async def connected() -> tuple[WebsocketCommunicator, dict[str, object]]:
    ws = WebsocketCommunicator(application, "/ws/collect/?site=demo")
    ok, _ = await ws.connect()
    assert ok
    return ws, await ws.receive_json_from()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("demo_site")
async def test_an_offer_sent_while_the_socket_opens_comes_after_the_welcome(
    layered: Runtime, monkeypatch
):
    store_open = layered.store.open

    async def open_while_a_worker_sends(*, session_id: str, site: str, now: float) -> SessionState:
        # A worker decides the pause right now: the offer is in neither the state read below
        # nor, unless the socket is already in its group, on the way.
        await get_channel_layer().group_send(
            session_group(session_id), {"type": "offer.push", "text": OFFER}
        )
        return await store_open(session_id=session_id, site=site, now=now)

    monkeypatch.setattr(layered.store, "open", open_while_a_worker_sends)
    ws, welcome = await connected()
    assert welcome["type"] == "welcome"
    assert await ws.receive_json_from() == json.loads(OFFER)
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("demo_site")
async def test_a_lost_subscriber_closes_the_sockets_with_4503_to_reconnect(layered: Runtime):
    sockets = [await connected() for _ in range(2)]
    assert layered.delivery.open_sockets() == 2
    closed = "liveoffers_connections_closed_by_server_total"
    before = sample(closed, code="4503")
    # What channels-redis logs when its receive loop fails (offers/layer_reports.py).
    logging.getLogger("channels_redis.pubsub").error(layer_reports.RECEIVE_FAILED)
    for ws, _ in sockets:
        output = await ws.receive_output()
        assert (output["type"], output["code"]) == ("websocket.close", 4503)
        await ws.disconnect()
    assert layered.delivery.open_sockets() == 0
    assert sample(closed, code="4503") - before == 2
