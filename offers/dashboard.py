"""What the operator dashboard shows, aggregated in the worker and pushed once a second.

The cost of a `stats` frame does not grow with the event rate: events are counted with one
addition a frame, and everything else is read from counters, the store's own tallies, or (for
the uplift) one database query every few seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter, deque
from typing import Any

import msgspec
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Count, Q
from django.utils import timezone

from offers.models import Decision, Outcome
from streaming.decider import DecisionMade, ModelSlot
from streaming.ratelimit import TokenBucket
from streaming.store import SessionStore
from streaming.uplift import Group, uplift

log = logging.getLogger(__name__)

GROUP = "dashboard"
HISTORY_SECONDS = 15 * 60
DECISION_FRAMES_PER_SECOND = 50
RECENT_DECISIONS = 50
RISK_BINS = 10
UPLIFT_EVERY = 5.0
UPLIFT_WINDOW = dt.timedelta(hours=24)


class DashboardFeed:
    def __init__(self, *, store: SessionStore, models: ModelSlot) -> None:
        self.store = store
        self.models = models
        self.events = 0
        self.offers_accepted = 0
        self.decisions: Counter[str] = Counter()
        self.risk_bins = [0] * RISK_BINS
        self.history: deque[list[float]] = deque(maxlen=HISTORY_SECONDS)
        self.recent: deque[str] = deque(maxlen=RECENT_DECISIONS)
        self.last_stats: dict[str, Any] | None = None
        self._bucket: TokenBucket | None = None
        self._skipped = 0
        self._seen_events = 0
        self._seen_decisions = 0
        self._next_stats = 0.0
        self._next_uplift = 0.0
        self._uplift: dict[str, Any] = _uplift_json(uplift(Group(0, 0), Group(0, 0)))

    # --- counted as things happen ---------------------------------------------------------------
    def count_events(self, n: int) -> None:
        self.events += n

    def count_accepted(self) -> None:
        self.offers_accepted += 1

    async def on_decisions(self, decisions: list[DecisionMade], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for decision in decisions:
            self.decisions[decision.outcome] += 1
            if decision.risk is not None:
                self.risk_bins[min(RISK_BINS - 1, int(decision.risk * RISK_BINS))] += 1
            if decision.outcome == Outcome.NO_OFFER:
                continue
            # Above DECISION_FRAMES_PER_SECOND the feed samples, and says how many it left out.
            if self._bucket is None:
                self._bucket = TokenBucket(
                    rate=DECISION_FRAMES_PER_SECOND, burst=DECISION_FRAMES_PER_SECOND, now=now
                )
            if self._bucket.take(1, now) == 0:
                self._skipped += 1
                continue
            frame = _encode(decision_frame(decision, skipped=self._skipped))
            self._skipped = 0
            self.recent.append(frame)
            await _broadcast(frame)

    # --- the worker step ------------------------------------------------------------------------
    async def step(self, now: float) -> bool:
        if now >= self._next_uplift:
            self._next_uplift = now + UPLIFT_EVERY
            try:
                self._uplift = await database_sync_to_async(_uplift_now)()
            except Exception:
                log.exception("could not work out the uplift; showing the last figures")
        if now < self._next_stats:
            return False
        self._next_stats = now + 1.0
        stats = self.stats(now)
        await _broadcast(_encode(stats))
        return False

    def stats(self, now: float) -> dict[str, Any]:
        decided = sum(self.decisions.values())
        events_per_second = self.events - self._seen_events
        decisions_per_second = decided - self._seen_decisions
        self._seen_events, self._seen_decisions = self.events, decided
        self.history.append([round(now), events_per_second, decisions_per_second])
        self.last_stats = {
            "type": "stats",
            "at": round(now, 3),
            "events_per_second": events_per_second,
            "decisions_per_second": decisions_per_second,
            "live_sessions": len(self.store),
            "carts_at_risk": self.store.open_carts(),
            "decisions": {outcome: self.decisions[outcome] for outcome in Outcome.values},
            "offers_sent": self.decisions[Outcome.OFFER],
            "offers_accepted": self.offers_accepted,
            "conversion": self._uplift,
            "risk_histogram": list(self.risk_bins),
            "model": self.models.active.label if self.models.active else None,
            "shadow_model": self.models.shadow.label if self.models.shadow else None,
        }
        return self.last_stats

    def snapshot(self) -> str:
        """What a dashboard gets on (re)connect: the last 15 minutes and the latest decisions."""
        return _encode(
            {
                "type": "snapshot",
                "history": list(self.history),
                "stats": self.last_stats,
                "decisions": [msgspec.json.decode(frame) for frame in self.recent],
            }
        )


def decision_frame(decision: DecisionMade, *, skipped: int = 0) -> dict[str, Any]:
    return {
        "type": "decision",
        "session": decision.session_id,
        "at": round(decision.at, 3),
        "outcome": decision.outcome,
        "risk": None if decision.risk is None else round(decision.risk, 4),
        "cart_value": round(decision.cart_value, 2),
        "model": decision.model,
        "reasons": decision.reasons,
        "features": decision.features,
        "skipped": skipped,
    }


def _uplift_now() -> dict[str, Any]:
    since = timezone.now() - UPLIFT_WINDOW
    rows = (
        Decision.objects.filter(at__gte=since, outcome__in=[Outcome.OFFER, Outcome.HOLDOUT])
        .values("outcome")
        .annotate(
            sessions=Count("session", distinct=True),
            converted=Count("session", distinct=True, filter=Q(converted_at__isnull=False)),
        )
    )
    groups = {row["outcome"]: Group(row["sessions"], row["converted"]) for row in rows}
    return _uplift_json(
        uplift(groups.get(Outcome.OFFER, Group(0, 0)), groups.get(Outcome.HOLDOUT, Group(0, 0)))
    )


def _uplift_json(result: Any) -> dict[str, Any]:
    def group(g: Group) -> dict[str, Any]:
        return {"sessions": g.sessions, "converted": g.converted, "rate": g.rate}

    return {
        "offered": group(result.offered),
        "holdout": group(result.holdout),
        "difference": result.difference,
        "low": result.low,
        "high": result.high,
        "verdict": result.verdict,
    }


def _encode(frame: dict[str, Any]) -> str:
    return msgspec.json.encode(frame).decode()


async def _broadcast(text: str) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(GROUP, {"type": "dashboard.frame", "text": text})
