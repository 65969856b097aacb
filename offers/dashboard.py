"""What the operator dashboard shows, aggregated in the worker and pushed once a second.

The cost of a `stats` frame does not grow with the event rate: events are counted with one
addition a frame, and everything else is read from counters, the store's own tallies, or (for
the uplift) one database query every few seconds.

In Redis mode events are counted by the front ends and decisions by the workers, each in its own
process: `SharedBoard` sums their counts in Redis, and one worker at a time (the holder of a
short lease) publishes the stats, so every dashboard, on whichever server, sees the same figures.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Count, Q
from django.utils import timezone

from offers.models import DeadRecord, Decision
from streaming import lua
from streaming.decider import ModelSlot
from streaming.journal import Journal
from streaming.policy import OUTCOMES, Outcome
from streaming.ratelimit import TokenBucket
from streaming.records import DecisionMade
from streaming.store import SessionStore
from streaming.uplift import Group, uplift

log = logging.getLogger(__name__)

GROUP = "dashboard"
HISTORY_SECONDS = 15 * 60
DECISION_FRAMES_PER_SECOND = 50
RECENT_DECISIONS = 50
RISK_BINS = 10
UPLIFT_EVERY = 5.0
# Records waiting for the database past which the dashboard says the record is behind.
RECORD_BEHIND = 1000
UPLIFT_WINDOW = dt.timedelta(hours=24)
PUBLISHER_LEASE_MS = 3000


@dataclass
class Totals:
    """What the dashboard counts, since the process started (or, shared, since Redis did)."""

    events: int = 0
    offers_accepted: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    risk_bins: list[int] = field(default_factory=lambda: [0] * RISK_BINS)

    def minus(self, other: Totals) -> dict[str, int]:
        """The counts added since `other`, as the fields of `SharedBoard`'s hash."""
        added = {
            "events": self.events - other.events,
            "accepted": self.offers_accepted - other.offers_accepted,
        }
        for outcome in OUTCOMES:
            added[f"d:{outcome}"] = self.decisions[outcome] - other.decisions[outcome]
        for i, count in enumerate(self.risk_bins):
            added[f"r{i}"] = count - other.risk_bins[i]
        return {name: count for name, count in added.items() if count}

    def copy(self) -> Totals:
        return Totals(
            self.events, self.offers_accepted, Counter(self.decisions), list(self.risk_bins)
        )

    @classmethod
    def from_hash(cls, fields: dict[bytes | str, bytes | str]) -> Totals:
        counts = {
            name.decode() if isinstance(name, bytes) else name: int(value)
            for name, value in fields.items()
        }
        return cls(
            counts.get("events", 0),
            counts.get("accepted", 0),
            Counter({o: counts.get(f"d:{o}", 0) for o in OUTCOMES}),
            [counts.get(f"r{i}", 0) for i in range(RISK_BINS)],
        )


_LEAD_LUA: Final = lua.script("lead")


class SharedBoard:
    """Redis mode: the dashboard's counts summed over every process, and one publisher.

    Keys (prefix `lo:`): `dash:totals`, a hash of counts every process adds to once a second;
    `dash:lead`, the publisher's lease; `dash:published`, the totals of the last stats frame, so
    that the rates go on unbroken when another worker takes the lease over; `dash:stats`,
    `dash:history` and `dash:recent`, the last stats frame, the last 15 minutes of per-second
    rates and the latest decision frames, for a dashboard that connects to any server.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "lo:") -> None:
        self.redis = client
        self._totals = f"{prefix}dash:totals"
        self._lead_key = f"{prefix}dash:lead"
        self._stats = f"{prefix}dash:stats"
        self._published = f"{prefix}dash:published"
        self._history = f"{prefix}dash:history"
        self._recent = f"{prefix}dash:recent"
        self._me = secrets.token_hex(8)
        self._lead = client.register_script(_LEAD_LUA)

    async def add(self, counts: dict[str, int], frames: list[str]) -> None:
        """Add this process's counts and decision frames since its last call."""
        if not counts and not frames:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, count in counts.items():
                pipe.hincrby(self._totals, name, count)
            if frames:
                pipe.rpush(self._recent, *frames)
                pipe.ltrim(self._recent, -RECENT_DECISIONS, -1)
            await pipe.execute()

    async def lead(self) -> bool:
        """Whether this process publishes the stats (for the next few seconds)."""
        return bool(await self._lead(keys=[self._lead_key], args=[self._me, PUBLISHER_LEASE_MS]))

    async def totals(self) -> Totals:
        return Totals.from_hash(await self.redis.hgetall(self._totals))

    async def published_totals(self) -> Totals:
        """The totals the last stats frame was made from (by whichever process made it)."""
        return Totals.from_hash(await self.redis.hgetall(self._published))

    async def publish(self, stats: str, history_row: list[float], totals: Totals) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._stats, stats)
            pipe.delete(self._published)
            counts: dict[Any, Any] = totals.minus(Totals()) or {"events": 0}
            pipe.hset(self._published, mapping=counts)
            pipe.rpush(self._history, msgspec.json.encode(history_row))
            pipe.ltrim(self._history, -HISTORY_SECONDS, -1)
            await pipe.execute()

    async def snapshot(self) -> dict[str, Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(self._history, 0, -1)
            pipe.get(self._stats)
            pipe.lrange(self._recent, 0, -1)
            history, stats, recent = await pipe.execute()
        return {
            "type": "snapshot",
            "history": [msgspec.json.decode(row) for row in history],
            "stats": None if stats is None else msgspec.json.decode(stats),
            "decisions": [msgspec.json.decode(frame) for frame in recent],
        }


class DashboardFeed:
    def __init__(
        self,
        *,
        store: SessionStore,
        models: ModelSlot,
        shared: SharedBoard | None = None,
        publishes: bool = True,
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self._set_aside = 0
        self.models = models
        self.shared = shared
        self.publishes = publishes  # a Redis-mode front end only adds its counts
        self.counted = Totals()
        self.history: deque[list[float]] = deque(maxlen=HISTORY_SECONDS)
        self.recent: deque[str] = deque(maxlen=RECENT_DECISIONS)
        self.last_stats: dict[str, Any] | None = None
        self._bucket: TokenBucket | None = None
        self._skipped = 0
        self._shared = Totals()  # what was added to the shared board so far
        self._unshared_frames: list[str] = []
        # the totals of the last stats frame (shared: read when this process takes the lease)
        self._seen: Totals | None = None if shared else Totals()
        self._next_stats = 0.0
        self._next_uplift = 0.0
        self._uplift: dict[str, Any] = _uplift_json(uplift(Group(0, 0), Group(0, 0)))

    # --- counted as things happen ---------------------------------------------------------------
    def count_events(self, n: int) -> None:
        self.counted.events += n

    def count_accepted(self) -> None:
        self.counted.offers_accepted += 1

    async def on_decisions(self, decisions: list[DecisionMade], now: float | None = None) -> None:
        now = time.time() if now is None else now
        counted = self.counted
        for decision in decisions:
            counted.decisions[decision.outcome] += 1
            if decision.risk is not None:
                counted.risk_bins[min(RISK_BINS - 1, int(decision.risk * RISK_BINS))] += 1
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
            if self.shared is not None:
                self._unshared_frames.append(frame)
            await _broadcast(frame)

    # --- the worker step ------------------------------------------------------------------------
    async def step(self, now: float) -> bool:
        if now < self._next_stats:
            return False
        self._next_stats = now + 1.0
        totals = self.counted
        if self.shared is not None:
            await self._share()
            if not self.publishes or not await self.shared.lead():
                self._seen = None
                return False
            if self._seen is None:  # this process has just taken the lease
                self._seen = await self.shared.published_totals()
            totals = await self.shared.totals()
        if now >= self._next_uplift:
            self._next_uplift = now + UPLIFT_EVERY
            try:
                self._uplift = await database_sync_to_async(_uplift_now)()
                self._set_aside = await DeadRecord.objects.acount()
            except Exception:
                log.exception("could not work out the uplift; showing the last figures")
        stats = self.stats(now, totals)
        text = _encode(stats)
        if self.shared is not None:
            await self.shared.publish(text, self.history[-1], totals)
        await _broadcast(text)
        return False

    async def _share(self) -> None:
        """Add what this process counted since its last turn to the shared board."""
        assert self.shared is not None
        # Taken before the await: what is counted meanwhile goes out next time.
        counted = self.counted.copy()
        frames, self._unshared_frames = self._unshared_frames, []
        try:
            await self.shared.add(counted.minus(self._shared), frames)
        except BaseException:
            # kept for the next turn, as many as a snapshot shows
            self._unshared_frames = (frames + self._unshared_frames)[-RECENT_DECISIONS:]
            raise
        self._shared = counted

    def stats(self, now: float, totals: Totals | None = None) -> dict[str, Any]:
        totals = self.counted if totals is None else totals
        seen = self._seen or totals
        decided = sum(totals.decisions.values())
        events_per_second = totals.events - seen.events
        decisions_per_second = decided - sum(seen.decisions.values())
        self._seen = totals.copy()
        self.history.append([round(now), events_per_second, decisions_per_second])
        live_sessions, carts_at_risk = self.store.live_counts()
        self.last_stats = {
            "type": "stats",
            "at": round(now, 3),
            "events_per_second": events_per_second,
            "decisions_per_second": decisions_per_second,
            "events": totals.events,
            "live_sessions": live_sessions,
            "carts_at_risk": carts_at_risk,
            "decisions": {outcome: totals.decisions[outcome] for outcome in OUTCOMES},
            "offers_sent": totals.decisions[Outcome.OFFER],
            "offers_accepted": totals.offers_accepted,
            "conversion": self._uplift,
            "risk_histogram": list(totals.risk_bins),
            "model": self.models.active.label if self.models.active else None,
            "shadow_model": self.models.shadow.label if self.models.shadow else None,
            "record": self._record_status(),
        }
        return self.last_stats

    def _record_status(self) -> dict[str, Any]:
        """Records on their way to the database, and set aside: the record's health."""
        waiting = self.journal.waiting() if self.journal is not None else 0
        return {
            "waiting": waiting,
            "set_aside": self._set_aside,
            "behind": waiting >= RECORD_BEHIND,
        }

    async def snapshot(self) -> str:
        """What a dashboard gets on (re)connect: the last 15 minutes and the latest decisions."""
        if self.shared is not None:
            return _encode(await self.shared.snapshot())
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
