"""The live parts of one process: session store, socket delivery and stream worker.

Built once from settings on first use; tests rebuild it with `reset_runtime()`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from django.conf import settings

from offers import metrics
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
    store = MemoryStore(idle_seconds=settings.SESSION_IDLE_SECONDS)
    delivery = LocalDelivery()
    runtime = Runtime(
        store=store,
        delivery=delivery,
        worker=StreamWorker(store=store),
        rate=settings.RATE_EVENTS_PER_SECOND,
        burst=settings.RATE_BURST,
        pause_seconds=settings.PAUSE_SECONDS,
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
