"""The live parts of one process: session store, socket delivery and stream worker.

Built once from settings on first use; tests rebuild it with `reset_runtime()`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings

from offers import layer_reports, metrics
from offers.alerts import (
    AlertWatch,
    BudgetCheck,
    DeadRecordsCheck,
    DelayCheck,
    DriftCheck,
    Every,
    LayerDropsCheck,
    LiveAucCheck,
    ModelLoadCheck,
    OffersHurtCheck,
    Webhook,
)
from offers.dashboard import DashboardFeed, SharedBoard, conversion_now
from offers.drift import DriftWatch
from offers.limits import Limits, parse_networks
from offers.recorder import Recorder, record_decisions
from offers.registry import RegistryWatcher
from offers.rulebook import RuleBook
from streaming.budget import Budget, RedisBudget
from streaming.decider import Decider, ModelSlot
from streaming.delivery import Delivery, LayerDelivery, LocalDelivery
from streaming.eventlog import EventLog
from streaming.journal import FileJournal, Journal, RedisJournal
from streaming.records import DecisionMade
from streaming.redis_client import node_url
from streaming.redis_store import CLAIM_CHUNK, RedisStore
from streaming.store import MemoryStore, SessionStore
from streaming.worker import Background, StreamWorker


@dataclass
class Runtime:
    store: SessionStore
    delivery: Delivery
    worker: StreamWorker
    models: ModelSlot
    watcher: RegistryWatcher
    drift: DriftWatch
    rulebook: RuleBook
    decider: Decider
    recorder: Recorder
    journal: Journal
    feed: DashboardFeed
    limits: Limits
    pause_seconds: float
    token_max_age: int
    event_log: EventLog | None = None
    alerts: AlertWatch | None = None


class EventLogWriter:
    """Writes the event log's queue once a second (in a thread); every hour compresses the days
    that are over and deletes those past the retention."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._next = 0.0
        self._next_prune = 0.0

    async def step(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + 1.0
        if self.log.waiting():
            await asyncio.to_thread(self.log.write, self.log.take())
        if now >= self._next_prune:
            self._next_prune = now + 3600.0
            await asyncio.to_thread(self.log.prune, now)
            await asyncio.to_thread(self.log.compress_days, now)
        return False

    async def finish(self) -> None:
        await asyncio.to_thread(self.log.write, self.log.take())


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


def build_runtime(*, decides: bool = True) -> Runtime:
    """This process's live parts: with the decision steps (embedded mode, a `runstream` worker),
    or without them (a front end of Redis mode, `serve --no-worker`)."""
    pause_seconds = settings.PAUSE_SECONDS
    store: SessionStore
    delivery: Delivery
    journal: Journal
    budget: Budget
    if settings.REDIS_URL:
        store = RedisStore(
            settings.REDIS_URL,
            idle_seconds=settings.SESSION_IDLE_SECONDS,
            pause_seconds=pause_seconds,
            lease_seconds=settings.CLAIM_LEASE_SECONDS,
        )
        # A cluster's pipelines take no PUBLISH: offers go out through one node, which the
        # cluster passes on to every subscriber.
        publisher = (
            store.redis
            if isinstance(store.redis, aioredis.Redis)
            else aioredis.Redis.from_url(node_url(settings.REDIS_URL))
        )
        delivery = LayerDelivery(get_channel_layer, publisher=publisher)
        layer_reports.on_receive_failure(delivery.layer_lost)
        journal = RedisJournal(store.redis)
        budget = RedisBudget(store.redis)
    else:
        store = MemoryStore(
            idle_seconds=settings.SESSION_IDLE_SECONDS,
            pause_seconds=pause_seconds,
            max_sessions=settings.MAX_SESSIONS,
        )
        delivery = LocalDelivery(on_failure=metrics.DELIVERIES_FAILED.inc)
        layer_reports.on_receive_failure(None)
        journal = FileJournal(settings.RECORD_JOURNAL or None)
        budget = Budget()
    models = ModelSlot()
    watcher = RegistryWatcher(models)
    drift = DriftWatch()
    rulebook = RuleBook(budget)
    # Batches of 500 (about 0.1 s of the interpreter's time, which the loop that sends offers
    # shares), and a deciding process lets a pause about to fall due go first.
    recorder = Recorder(journal, batch_size=500, next_due=store.next_deadline if decides else None)
    shared = SharedBoard(store.redis) if isinstance(store, RedisStore) else None
    feed = DashboardFeed(
        store=store,
        models=models,
        shared=shared,
        publishes=decides,
        journal=journal,
        pause_seconds=pause_seconds,
        drift=drift,
    )

    async def record(decisions: list[DecisionMade]) -> None:
        record_decisions(decisions)
        await feed.on_reasons(decisions)

    decider = Decider(
        store=store,
        delivery=delivery,
        models=models,
        rules=rulebook.rules,
        budget=budget,
        journal=journal,
        record=record,
        pause_seconds=pause_seconds,
        cooldown_seconds=settings.OFFER_COOLDOWN_SECONDS,
        holdout_percent=settings.HOLDOUT_PERCENT,
        margins=rulebook.margins,
        explore_percent=settings.EXPLORE_PERCENT,
        # Redis mode: claims the size of one claim script, so that the workers share a burst
        batch_size=CLAIM_CHUNK if isinstance(store, RedisStore) else 5000,
        backlog_limit=settings.RECORD_BACKLOG_MAX,
        on_held_back=metrics.RECORD_HELD_BACK.inc,
        # the feed shows decisions as they are made, and their reasons when they come
        on_decided=feed.on_decisions,
    )
    worker = StreamWorker(
        store=store, tick_seconds=min(0.25, pause_seconds / 2), wake_at=store.next_deadline
    )
    counts = CountsRefresher(store)
    event_log = (
        EventLog(settings.EVENT_LOG, days=settings.EVENT_LOG_DAYS) if settings.EVENT_LOG else None
    )
    alerts = AlertWatch(
        [
            ModelLoadCheck(watcher),
            DriftCheck(drift),
            Every(LiveAucCheck(settings.OUTCOME_WINDOW_SECONDS), 300.0),
            DelayCheck(),
            Every(OffersHurtCheck(conversion_now), 60.0),
            Every(BudgetCheck(), 30.0),
            DeadRecordsCheck(),
            LayerDropsCheck(),
        ],
        redis=store.redis if isinstance(store, RedisStore) else None,
        webhook=Webhook(settings.ALERT_WEBHOOK_URL) if settings.ALERT_WEBHOOK_URL else None,
    )
    # What waits on the database runs beside the loop, never in its way: pauses are decided
    # with the rules and models last loaded while the database is slow or away.
    feed_step = Background(feed.step)
    if decides:
        worker.steps = [
            Background(watcher.step),
            Background(rulebook.step),
            Background(drift.step),
            decider.step,
            decider.explain,
            recorder.step_in_background,
            feed_step,
            Background(feed.step_models),
            counts.step,
            worker.step_evict,
            Background(alerts.step),
        ]
    else:
        # A front end of Redis mode: decisions are the `runstream` workers' job; this process
        # still writes the record (what any process put in the journal).
        worker.steps = [recorder.step_in_background, feed_step, counts.step, Background(drift.step)]
        worker.started_message = (
            "front end started: no pauses decided here (runstream workers decide them); "
            "recording, the dashboard's feed and counts"
        )

    async def finish() -> None:
        await decider.drain()
        await recorder.flush()

    if event_log is not None:
        writer = EventLogWriter(event_log)
        worker.steps.append(Background(writer.step))
        worker.finishers.append(writer.finish)
    worker.finishers.append(finish)
    worker.finishers.append(journal.aclose)
    closer = getattr(store, "aclose", None)
    if closer is not None:
        worker.finishers.append(closer)
    runtime = Runtime(
        store=store,
        delivery=delivery,
        worker=worker,
        models=models,
        watcher=watcher,
        drift=drift,
        rulebook=rulebook,
        decider=decider,
        recorder=recorder,
        journal=journal,
        feed=feed,
        limits=Limits(
            sockets_per_client=settings.MAX_SOCKETS_PER_CLIENT,
            sockets=settings.MAX_SOCKETS,
            client_rate=settings.CLIENT_RATE_EVENTS_PER_SECOND,
            client_burst=settings.CLIENT_RATE_BURST,
            session_rate=settings.RATE_EVENTS_PER_SECOND,
            session_burst=settings.RATE_BURST,
            trusted_proxies=parse_networks(settings.TRUSTED_PROXIES),
        ),
        pause_seconds=pause_seconds,
        token_max_age=settings.SESSION_TOKEN_MAX_AGE,
        event_log=event_log,
        alerts=alerts,
    )
    metrics.LIVE_SESSIONS.set_function(lambda: len(runtime.store))
    metrics.OPEN_SOCKETS.set_function(lambda: runtime.delivery.open_sockets())
    metrics.ACTIVE_SESSIONS.set_function(lambda: runtime.store.live_counts()[0])
    metrics.CARTS_AT_RISK.set_function(lambda: runtime.store.live_counts()[1])
    metrics.RECORD_BACKLOG.set_function(lambda: runtime.journal.waiting())
    return runtime


_runtime: Runtime | None = None


def configure_runtime(*, decides: bool) -> Runtime:
    """Build this process's runtime: with the decision steps (a worker) or without (a front end)."""
    global _runtime
    if _runtime is not None:
        _runtime.journal.close()  # a journal file is this process's: let the new one have it
    _runtime = build_runtime(decides=decides)
    return _runtime


def get_runtime() -> Runtime:
    """This process's runtime, built with the decision steps on first use if not configured."""
    global _runtime
    if _runtime is None:
        _runtime = build_runtime()
    return _runtime


def reset_runtime() -> Runtime:
    return configure_runtime(decides=True)
