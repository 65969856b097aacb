"""The live parts of one process: session store, socket delivery and stream worker.

Built once from settings on first use; tests rebuild it with `reset_runtime()`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis
from django.conf import settings

from offers import layer, metrics
from offers.dashboard import DashboardFeed, SharedBoard
from offers.engine import ModelWatcher, Recorder, RuleBook
from streaming.decider import Budget, Decider, DecisionMade, ModelSlot
from streaming.delivery import Delivery, LocalDelivery, Socket
from streaming.ratelimit import TokenBucket
from streaming.redis_store import CLAIM_CHUNK, RedisStore
from streaming.store import MemoryStore, SessionStore
from streaming.worker import StreamWorker

_MAX_HTTP_BUCKETS = 50_000


@dataclass
class Runtime:
    store: SessionStore
    delivery: Delivery
    worker: StreamWorker
    models: ModelSlot
    watcher: ModelWatcher
    rulebook: RuleBook
    decider: Decider
    recorder: Recorder
    feed: DashboardFeed
    rate: float
    burst: int
    pause_seconds: float
    token_max_age: int
    _http_buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)

    def new_bucket(self, now: float) -> TokenBucket:
        return TokenBucket(rate=self.rate, burst=self.burst, now=now)

    def http_bucket(self, session_id: str, now: float) -> TokenBucket:
        """The token bucket of a session's `POST /collect/` requests (bounded LRU)."""
        bucket = self._http_buckets.get(session_id)
        if bucket is None:
            bucket = self._http_buckets[session_id] = self.new_bucket(now)
            if len(self._http_buckets) > _MAX_HTTP_BUCKETS:
                self._http_buckets.popitem(last=False)
        else:
            self._http_buckets.move_to_end(session_id)
        return bucket


def session_group(session_id: str) -> str:
    """The channel-layer group of a session's open sockets (Redis mode)."""
    return f"lo.session.{session_id}"


@runtime_checkable
class LayerSocket(Socket, Protocol):
    async def layer_lost(self) -> None:
        """The channel layer may have lost messages for this socket: close it, to reconnect."""


class LayerDelivery(Delivery):
    """Redis mode: a session's sockets may be held by any server; the channel layer reaches them.

    Each collector socket joins its session's group itself; this process keeps its own sockets,
    to count them and to close them when its subscriber to the layer fails (offers/layer.py).
    """

    def __init__(self, publisher: aioredis.Redis | None = None) -> None:
        self._sockets: set[Socket] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._publisher = publisher

    def attach(self, session_id: str, socket: Socket) -> None:
        self._sockets.add(socket)

    def detach(self, session_id: str, socket: Socket) -> None:
        self._sockets.discard(socket)

    async def deliver(self, session_id: str, data: str) -> int:
        from channels.layers import get_channel_layer

        channel_layer = get_channel_layer()
        await channel_layer.group_send(
            session_group(session_id), {"type": "offer.push", "text": data}
        )
        return 1

    async def deliver_many(self, frames: Sequence[tuple[str, str]]) -> int:
        """A batch's offers in one round trip on the pub/sub layer, rather than one each.

        The pub/sub layer's `group_send` is a PUBLISH of the serialized message on the group's
        Redis channel, under a lock, one round trip a message: 2,000 offers took about a second.
        Here the same PUBLISHes go out in one pipeline, in order. Other layers (and a lone offer)
        go through `group_send`.
        """
        from channels.layers import get_channel_layer
        from channels_redis.pubsub import RedisPubSubChannelLayer

        channel_layer = get_channel_layer()
        if (
            len(frames) < 2
            or self._publisher is None
            or not isinstance(channel_layer, RedisPubSubChannelLayer)
        ):
            return await super().deliver_many(frames)
        async with self._publisher.pipeline(transaction=False) as pipe:
            for session_id, data in frames:
                pipe.publish(
                    channel_layer._get_group_channel_name(session_group(session_id)),
                    channel_layer.serialize({"type": "offer.push", "text": data}),
                )
            await pipe.execute()
        return len(frames)

    def open_sockets(self) -> int:
        return len(self._sockets)

    def layer_lost(self) -> None:
        """What was published to this process until its subscriber is back is lost: its sockets
        close with 4503, and each page, reconnecting, is sent its live offer again."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not from the loop that holds the sockets: none of ours
            return
        for socket in list(self._sockets):
            if isinstance(socket, LayerSocket):
                task = loop.create_task(socket.layer_lost())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)


class CountsRefresher:
    """Refreshes the store's cached counts (live sessions, carts at risk) once a second."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._next = 0.0

    async def step(self, now: float) -> bool:
        if now >= self._next:
            self._next = now + 1.0
            await self.store.refresh_counts(now)
        return False


_runtime: Runtime | None = None
_decides = True


def build_runtime() -> Runtime:
    pause_seconds = settings.PAUSE_SECONDS
    store: SessionStore
    delivery: Delivery
    if settings.REDIS_URL:
        store = RedisStore(
            settings.REDIS_URL,
            idle_seconds=settings.SESSION_IDLE_SECONDS,
            pause_seconds=pause_seconds,
        )
        delivery = LayerDelivery(publisher=store.redis)
        layer.on_receive_failure(delivery.layer_lost)
    else:
        store = MemoryStore(idle_seconds=settings.SESSION_IDLE_SECONDS, pause_seconds=pause_seconds)
        delivery = LocalDelivery()
        layer.on_receive_failure(None)
    models = ModelSlot()
    budget = Budget()
    watcher = ModelWatcher(models)
    rulebook = RuleBook(budget)
    recorder = Recorder(store=store)
    shared = SharedBoard(store.redis) if isinstance(store, RedisStore) else None
    feed = DashboardFeed(store=store, models=models, shared=shared, publishes=_decides)

    async def record(decisions: list[DecisionMade]) -> None:
        await recorder.record(decisions)
        await feed.on_decisions(decisions)

    decider = Decider(
        store=store,
        delivery=delivery,
        models=models,
        rules=rulebook.rules,
        budget=budget,
        record=record,
        pause_seconds=pause_seconds,
        cooldown_seconds=settings.OFFER_COOLDOWN_SECONDS,
        holdout_percent=settings.HOLDOUT_PERCENT,
        # Redis mode: claims the size of one claim script, so that the workers share a burst
        batch_size=CLAIM_CHUNK if isinstance(store, RedisStore) else 5000,
    )
    worker = StreamWorker(
        store=store, tick_seconds=min(0.25, pause_seconds / 2), wake_at=store.next_deadline
    )
    counts = CountsRefresher(store)
    if _decides:
        worker.steps = [
            watcher.step,
            rulebook.step,
            decider.step,
            decider.explain,
            recorder.step_in_background,
            feed.step,
            counts.step,
            worker.step_evict,
        ]
    else:
        # A front end of Redis mode: decisions are the `runstream` workers' job; this process
        # still records what shoppers did with their offers.
        worker.steps = [recorder.step_in_background, feed.step, counts.step]

    async def finish() -> None:
        await decider.drain()
        await recorder.flush()

    worker.finishers.append(finish)
    closer = getattr(store, "aclose", None)
    if closer is not None:
        worker.finishers.append(closer)
    runtime = Runtime(
        store=store,
        delivery=delivery,
        worker=worker,
        models=models,
        watcher=watcher,
        rulebook=rulebook,
        decider=decider,
        recorder=recorder,
        feed=feed,
        rate=settings.RATE_EVENTS_PER_SECOND,
        burst=settings.RATE_BURST,
        pause_seconds=pause_seconds,
        token_max_age=settings.SESSION_TOKEN_MAX_AGE,
    )
    metrics.LIVE_SESSIONS.set_function(lambda: len(runtime.store))
    metrics.OPEN_SOCKETS.set_function(lambda: runtime.delivery.open_sockets())
    return runtime


def configure_runtime(*, decides: bool) -> Runtime:
    """Build this process's runtime: with the decision steps (a worker) or without (a front end)."""
    global _decides, _runtime
    _decides = decides
    _runtime = build_runtime()
    return _runtime


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = build_runtime()
    return _runtime


def reset_runtime() -> Runtime:
    global _runtime
    _runtime = build_runtime()
    return _runtime
