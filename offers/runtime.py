"""The live parts of one process: session store, socket delivery and stream worker.

Built once from settings on first use; tests rebuild it with `reset_runtime()`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from django.conf import settings

from offers import metrics
from offers.dashboard import DashboardFeed
from offers.engine import ModelWatcher, Recorder, RuleBook
from streaming.decider import Budget, Decider, DecisionMade, ModelSlot
from streaming.delivery import Delivery, LocalDelivery
from streaming.ratelimit import TokenBucket
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


_runtime: Runtime | None = None


def build_runtime() -> Runtime:
    pause_seconds = settings.PAUSE_SECONDS
    store = MemoryStore(idle_seconds=settings.SESSION_IDLE_SECONDS, pause_seconds=pause_seconds)
    delivery = LocalDelivery()
    models = ModelSlot()
    budget = Budget()
    watcher = ModelWatcher(models)
    rulebook = RuleBook(budget)
    recorder = Recorder()
    feed = DashboardFeed(store=store, models=models)

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
    )
    worker = StreamWorker(
        store=store, tick_seconds=min(0.25, pause_seconds / 2), wake_at=store.next_deadline
    )
    worker.steps = [
        watcher.step,
        rulebook.step,
        decider.step,
        recorder.step,
        feed.step,
        worker.step_evict,
    ]

    async def finish() -> None:
        await decider.drain()
        await recorder.step(0.0)

    worker.finishers.append(finish)
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


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = build_runtime()
    return _runtime


def reset_runtime() -> Runtime:
    global _runtime
    _runtime = build_runtime()
    return _runtime
