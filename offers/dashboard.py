"""What the operator dashboard shows, aggregated in the worker and pushed once a second.

The cost of a `stats` frame does not grow with the event rate: events are counted with one
addition a frame, and everything else is read from counters, the store's own tallies, the latest
drift measure, or the database in a thread: the uplift and the money every few seconds
(`step`), the models' figures on known outcomes every minute or more (`step_models`, beside the
stats, never holding them up). Alerts come from `offers.alerts.AlertWatch` straight to the
dashboards; a dashboard that connects gets the open ones and the latest resolved in its
snapshot.

In Redis mode events are counted by the front ends and decisions by the workers, each in its own
process: `SharedBoard` sums their counts in Redis, and one worker at a time (the holder of a
short lease) works out the figures and publishes the stats, so every dashboard, on whichever
server, sees the same figures.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
import numpy as np
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from offers.alerts import GROUP, PSI_LIMIT, DriftSource, alert_json
from offers.evaluation import compare_models, shadow_trial
from offers.models import Alert, DeadRecord, Decision, ScoringModel
from offers.money import uplift_money
from offers.phrasing import reasons_in_words
from streaming import lua
from streaming.decider import ModelSlot
from streaming.journal import Journal
from streaming.policy import OUTCOMES, Outcome
from streaming.ratelimit import TokenBucket
from streaming.records import DecisionMade, MarkMade
from streaming.redis_client import Client
from streaming.store import SessionStore
from streaming.uplift import Group, uplift

log = logging.getLogger(__name__)

HISTORY_SECONDS = 15 * 60
# Each kind of frame has a rate of its own: a flood of no_offers or marks never pushes out offers.
DECISION_FRAMES_PER_SECOND = 50
NO_OFFER_FRAMES_PER_SECOND = 20
MARK_FRAMES_PER_SECOND = 50
RECENT_DECISIONS = 50
RECENT_NO_OFFERS = 50
RECENT_MARKS = 200
# Offer and holdout frames sent before their reasons, waiting for them (the oldest are let go).
AWAITING_REASONS = 1000
RISK_BINS = 10
UPLIFT_EVERY = 5.0
# Records waiting for the database past which the dashboard says the record is behind.
RECORD_BEHIND = 1000
UPLIFT_WINDOW = dt.timedelta(hours=24)
PUBLISHER_LEASE_MS = 3000
# The money panel's window, and its chart: a point of net incremental revenue per refresh
# (every UPLIFT_EVERY seconds), for the last two hours.
MONEY_WINDOW = "24h"
MONEY_HISTORY = int(2 * 3600 / UPLIFT_EVERY)
# The models' figures on known outcomes: at most once a minute, and the longer they take to work
# out, the less often (at most 1/MODELS_DUTY of the time spent on them).
MODELS_EVERY = 60.0
MODELS_DUTY = 20
# Without a shadow, the active model is measured on the known outcomes of the last day.
MODELS_WINDOW = dt.timedelta(hours=24)
# Alerts in a snapshot: the open ones, and the latest resolved.
OPEN_ALERTS = 100
RESOLVED_ALERTS = 10


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

    Keys (prefix `lo:{dash}:`, one hash tag, so that a transaction over several keeps to one
    shard of a Redis Cluster): `totals`, a hash of counts every process adds to once a second;
    `lead`, the publisher's lease; `published`, the totals of the last stats frame, so
    that the rates go on unbroken when another worker takes the lease over; `stats`,
    `history` and `recent`, the last stats frame, the last 15 minutes of per-second
    rates and the latest decision frames, for a dashboard that connects to any server;
    `recent_no_offer` and `marks`, the latest no_offer decisions and marks likewise;
    `money`, the points of the money chart (net incremental revenue over time).
    """

    def __init__(self, client: Client, *, prefix: str = "lo:") -> None:
        self.redis = client
        self._totals = f"{prefix}{{dash}}:totals"
        self._lead_key = f"{prefix}{{dash}}:lead"
        self._stats = f"{prefix}{{dash}}:stats"
        self._published = f"{prefix}{{dash}}:published"
        self._history = f"{prefix}{{dash}}:history"
        self._recent = f"{prefix}{{dash}}:recent"
        self._recent_no_offer = f"{prefix}{{dash}}:recent_no_offer"
        self._marks = f"{prefix}{{dash}}:marks"
        self._money = f"{prefix}{{dash}}:money"
        self._me = secrets.token_hex(8)
        self._lead = client.register_script(_LEAD_LUA)

    async def add(
        self,
        counts: dict[str, int],
        frames: list[str],
        no_offers: Sequence[str] = (),
        marks: Sequence[str] = (),
    ) -> None:
        """Add this process's counts, decision frames (offers and holdouts, then no_offers) and
        mark frames since its last call."""
        if not counts and not frames and not no_offers and not marks:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, count in counts.items():
                pipe.hincrby(self._totals, name, count)
            for key, added, kept in (
                (self._recent, frames, RECENT_DECISIONS),
                (self._recent_no_offer, no_offers, RECENT_NO_OFFERS),
                (self._marks, marks, RECENT_MARKS),
            ):
                if added:
                    pipe.rpush(key, *added)
                    pipe.ltrim(key, -kept, -1)
            await pipe.execute()

    async def lead(self) -> bool:
        """Whether this process publishes the stats (for the next few seconds)."""
        return bool(await self._lead(keys=[self._lead_key], args=[self._me, PUBLISHER_LEASE_MS]))

    async def totals(self) -> Totals:
        return Totals.from_hash(await self.redis.hgetall(self._totals))

    async def published_totals(self) -> Totals:
        """The totals the last stats frame was made from (by whichever process made it)."""
        return Totals.from_hash(await self.redis.hgetall(self._published))

    async def publish(
        self,
        stats: str,
        history_row: list[float],
        totals: Totals,
        money_row: list[float | None] | None = None,
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._stats, stats)
            pipe.delete(self._published)
            counts: dict[Any, Any] = totals.minus(Totals()) or {"events": 0}
            pipe.hset(self._published, mapping=counts)
            pipe.rpush(self._history, msgspec.json.encode(history_row))
            pipe.ltrim(self._history, -HISTORY_SECONDS, -1)
            if money_row is not None:
                pipe.rpush(self._money, msgspec.json.encode(money_row))
                pipe.ltrim(self._money, -MONEY_HISTORY, -1)
            await pipe.execute()

    async def snapshot(self) -> dict[str, Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(self._history, 0, -1)
            pipe.get(self._stats)
            pipe.lrange(self._recent, 0, -1)
            pipe.lrange(self._recent_no_offer, 0, -1)
            pipe.lrange(self._marks, 0, -1)
            pipe.lrange(self._money, 0, -1)
            history, stats, recent, no_offers, marks, money = await pipe.execute()
        return {
            "type": "snapshot",
            "history": [msgspec.json.decode(row) for row in history],
            "stats": None if stats is None else msgspec.json.decode(stats),
            "decisions": [msgspec.json.decode(frame) for frame in recent],
            "no_offer_decisions": [msgspec.json.decode(frame) for frame in no_offers],
            "marks": [msgspec.json.decode(frame) for frame in marks],
            "money_history": [msgspec.json.decode(row) for row in money],
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
        pause_seconds: float | None = None,
        drift: DriftSource | None = None,
    ) -> None:
        self.store = store
        self.drift = drift
        # the pause the reasons are worded against (`offers.phrasing`)
        self.pause_seconds = settings.PAUSE_SECONDS if pause_seconds is None else pause_seconds
        self.journal = journal
        self._set_aside = 0
        self.models = models
        self.shared = shared
        self.publishes = publishes  # a Redis-mode front end only adds its counts
        self.counted = Totals()
        self.history: deque[list[float]] = deque(maxlen=HISTORY_SECONDS)
        # the latest frames, for a dashboard's snapshot; a frame's reasons are filled in when
        # they come
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_DECISIONS)
        self.recent_no_offers: deque[dict[str, Any]] = deque(maxlen=RECENT_NO_OFFERS)
        self.recent_marks: deque[dict[str, Any]] = deque(maxlen=RECENT_MARKS)
        self.last_stats: dict[str, Any] | None = None
        self._decision_frames = _Sampler(DECISION_FRAMES_PER_SECOND)
        self._no_offer_frames = _Sampler(NO_OFFER_FRAMES_PER_SECOND)
        self._mark_frames = _Sampler(MARK_FRAMES_PER_SECOND)
        self._awaiting: OrderedDict[str, dict[str, Any]] = OrderedDict()  # pause key -> frame
        self._shared = Totals()  # what was added to the shared board so far
        # frames not yet added to the shared board (encoded then: with the reasons come by then)
        self._unshared_frames: list[dict[str, Any]] = []
        self._unshared_no_offers: list[dict[str, Any]] = []
        self._unshared_marks: list[dict[str, Any]] = []
        # the totals of the last stats frame (shared: read when this process takes the lease)
        self._seen: Totals | None = None if shared else Totals()
        self._next_stats = 0.0
        self._next_uplift = 0.0
        self._uplift: dict[str, Any] = _uplift_json(uplift(Group(0, 0), Group(0, 0)))
        # the money panel: the latest figures (None before the first) and a point per refresh
        self.money: dict[str, Any] | None = None
        self.money_history: deque[list[float | None]] = deque(maxlen=MONEY_HISTORY)
        # the active and shadow models on known outcomes (`step_models`)
        self.model_figures: dict[str, Any] | None = None
        self._next_models = 0.0
        # whether this process works out the figures: always, but in Redis mode only while it
        # holds the publisher's lease
        self._leading = publishes and shared is None

    # --- counted as things happen ---------------------------------------------------------------
    def count_events(self, n: int) -> None:
        self.counted.events += n

    def count_accepted(self) -> None:
        self.counted.offers_accepted += 1

    async def on_decisions(self, decisions: list[DecisionMade], now: float | None = None) -> None:
        """Count decisions as soon as they are made, and show a sample of them: offers and
        holdouts (their reasons follow, `on_reasons`), and no_offers at a rate of their own."""
        now = time.time() if now is None else now
        # counted for the batch at once: a batch is thousands of pauses at peak
        counted = self.counted
        counted.decisions.update(map(_outcome_of, decisions))
        risks = np.fromiter(
            (risk for risk in map(_risk_of, decisions) if risk is not None), dtype=np.float64
        )
        if len(risks):
            bins = np.clip(risks[np.isfinite(risks)] * RISK_BINS, 0, RISK_BINS - 1).astype(np.intp)
            for i, count in enumerate(np.bincount(bins, minlength=RISK_BINS).tolist()):
                counted.risk_bins[i] += count
        no_offers = [d for d in decisions if d.outcome == Outcome.NO_OFFER]
        shown = [d for d in decisions if d.outcome != Outcome.NO_OFFER] if no_offers else decisions
        # Above its rate a kind of frame is sampled, and the next says how many were left out.
        for sampler, kind in ((self._decision_frames, shown), (self._no_offer_frames, no_offers)):
            if not kind:
                continue
            granted, skipped = sampler.take_many(len(kind), now)
            for decision in kind[:granted]:
                await self._show(decision, skipped)
                skipped = 0

    async def _show(self, decision: DecisionMade, skipped: int) -> None:
        frame = decision_frame(decision, skipped=skipped, pause_seconds=self.pause_seconds)
        if decision.outcome == Outcome.NO_OFFER:
            self.recent_no_offers.append(frame)
            if self.shared is not None:
                self._unshared_no_offers.append(frame)
        else:
            self.recent.append(frame)
            if self.shared is not None:
                self._unshared_frames.append(frame)
            if frame["reasons_pending"]:
                self._await_reasons(decision.pause_key, frame)
        await _broadcast(_encode(frame))

    def _await_reasons(self, pause_key: str, frame: dict[str, Any]) -> None:
        self._awaiting[pause_key] = frame
        while len(self._awaiting) > AWAITING_REASONS:
            self._awaiting.popitem(last=False)

    async def on_reasons(self, decisions: Sequence[DecisionMade]) -> None:
        """The reasons of decisions shown before them: into their frames (for the snapshot), and
        out to the dashboards. A decision without reasons by now gets none."""
        if not self._awaiting:
            return
        for decision in decisions:
            frame = self._awaiting.pop(decision.pause_key, None)
            if frame is None:
                continue
            frame["reasons"] = decision.reasons
            frame["reasons_in_words"] = reasons_in_words(
                decision.reasons, decision.features, pause_seconds=self.pause_seconds
            )
            frame["reasons_pending"] = False
            update = {
                "type": "reasons",
                "session": decision.session_id,
                "pause_key": decision.pause_key,
                "reasons": frame["reasons"],
                "reasons_in_words": frame["reasons_in_words"],
            }
            await _broadcast(_encode(update))

    async def on_marks(self, marks: Sequence[MarkMade]) -> None:
        """What shoppers did with offers and carts (shown, accepted, dismissed, bought), out to
        the dashboards as small update frames, at a rate of their own. Never raises: a mark is
        in the journal already, and the feed is for watching."""
        for mark in marks:
            if self._mark_frames.take(mark.at) is None:
                continue
            frame = {
                "type": "mark",
                "session": mark.session_id,
                "offer_id": mark.offer_id,
                "kind": mark.kind,
                "at": round(mark.at, 3),
            }
            self.recent_marks.append(frame)
            if self.shared is not None:
                self._unshared_marks.append(frame)
            try:
                await _broadcast(_encode(frame))
            except Exception as exc:
                log.warning("could not send a mark to the dashboards: %s", exc)

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
                self._leading = False
                return False
            self._leading = True
            if self._seen is None:  # this process has just taken the lease
                self._seen = await self.shared.published_totals()
            totals = await self.shared.totals()
        money_row = None
        if now >= self._next_uplift:
            self._next_uplift = now + UPLIFT_EVERY
            try:
                self._uplift, money, self._set_aside = await database_sync_to_async(_figures_now)()
            except Exception:
                log.exception("could not work out the uplift; showing the last figures")
            else:
                money_row = money_point(now, money)
                self.money = {**money, "at": money_row[0]}
                self.money_history.append(money_row)
        stats = self.stats(now, totals)
        text = _encode(stats)
        if self.shared is not None:
            await self.shared.publish(text, self.history[-1], totals, money_row)
        await _broadcast(text)
        return False

    async def step_models(self, now: float) -> bool:
        """The active and shadow models' figures on known outcomes, for the next stats frames:
        worked out in a thread beside `step` (it reads and re-scores thousands of decisions), by
        the process that publishes the stats."""
        if now < self._next_models or not self._leading:
            return False
        started = time.monotonic()
        try:
            figures = await database_sync_to_async(model_figures)()
        except Exception:
            log.exception("could not measure the models on known outcomes; showing the last")
        else:
            self.model_figures = None if figures is None else {**figures, "at": round(now, 3)}
        took = time.monotonic() - started
        self._next_models = now + max(MODELS_EVERY, MODELS_DUTY * took)
        return False

    async def _share(self) -> None:
        """Add what this process counted since its last turn to the shared board."""
        assert self.shared is not None
        # Taken before the await: what is counted meanwhile goes out next time.
        counted = self.counted.copy()
        frames, self._unshared_frames = self._unshared_frames, []
        no_offers, self._unshared_no_offers = self._unshared_no_offers, []
        marks, self._unshared_marks = self._unshared_marks, []
        try:
            await self.shared.add(
                counted.minus(self._shared),
                [_encode(frame) for frame in frames],
                [_encode(frame) for frame in no_offers],
                [_encode(frame) for frame in marks],
            )
        except BaseException:
            # kept for the next turn, as many as a snapshot shows
            self._unshared_frames = (frames + self._unshared_frames)[-RECENT_DECISIONS:]
            self._unshared_no_offers = (no_offers + self._unshared_no_offers)[-RECENT_NO_OFFERS:]
            self._unshared_marks = (marks + self._unshared_marks)[-RECENT_MARKS:]
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
            "money": self.money,
            "risk_histogram": list(totals.risk_bins),
            "model": self.models.active.label if self.models.active else None,
            "shadow_model": self.models.shadow.label if self.models.shadow else None,
            "model_figures": self.model_figures,
            "drift": self._drift(),
            "record": self._record_status(),
        }
        return self.last_stats

    def _drift(self) -> dict[str, Any] | None:
        """The latest drift measure (None: not measured yet), with the PSI above which a
        feature or the score has drifted."""
        latest = self.drift.latest() if self.drift is not None else None
        return None if latest is None else {**latest, "limit": PSI_LIMIT}

    def _record_status(self) -> dict[str, Any]:
        """Records on their way to the database, and set aside: the record's health."""
        waiting = self.journal.waiting() if self.journal is not None else 0
        return {
            "waiting": waiting,
            "set_aside": self._set_aside,
            "behind": waiting >= RECORD_BEHIND,
        }

    async def snapshot(self) -> str:
        """What a dashboard gets on (re)connect: the last 15 minutes, the latest decisions (offers
        and holdouts, and no_offers apart), the latest marks to apply to them, the money chart's
        points, and the alerts (open, and the latest resolved; None when the database does not
        answer)."""
        try:
            alerts: list[dict[str, Any]] | None = await database_sync_to_async(alerts_now)()
        except Exception:
            log.exception("could not read the alerts for a dashboard's snapshot")
            alerts = None
        if self.shared is not None:
            return _encode({**await self.shared.snapshot(), "alerts": alerts})
        return _encode(
            {
                "type": "snapshot",
                "history": list(self.history),
                "stats": self.last_stats,
                "decisions": list(self.recent),
                "no_offer_decisions": list(self.recent_no_offers),
                "marks": list(self.recent_marks),
                "money_history": list(self.money_history),
                "alerts": alerts,
            }
        )


class _Sampler:
    """A token bucket for one kind of frame, counting what it left out since the last it let
    through."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.bucket: TokenBucket | None = None
        self.skipped = 0

    def take(self, now: float) -> int | None:
        """None: leave this one out; else send it, saying how many were left out before it."""
        if self.bucket is None:
            self.bucket = TokenBucket(rate=self.rate, burst=self.rate, now=now)
        if self.bucket.take(1, now) == 0:
            self.skipped += 1
            return None
        skipped, self.skipped = self.skipped, 0
        return skipped

    def take_many(self, wanted: int, now: float) -> tuple[int, int]:
        """`take` for `wanted` frames in a row: how many of the first to send, and how many
        were left out before the first of them."""
        if self.bucket is None:
            self.bucket = TokenBucket(rate=self.rate, burst=self.rate, now=now)
        granted = self.bucket.take(wanted, now)
        if granted == 0:
            self.skipped += wanted
            return 0, 0
        skipped, self.skipped = self.skipped, wanted - granted
        return granted, skipped


_outcome_of = attrgetter("outcome")
_risk_of = attrgetter("risk")


def decision_frame(
    decision: DecisionMade, *, skipped: int = 0, pause_seconds: float | None = None
) -> dict[str, Any]:
    pause = settings.PAUSE_SECONDS if pause_seconds is None else pause_seconds
    explained = decision.outcome != Outcome.NO_OFFER
    return {
        "type": "decision",
        "session": decision.session_id,
        "pause_key": decision.pause_key,
        "at": round(decision.at, 3),
        "outcome": decision.outcome,
        "why": decision.why,
        "risk": None if decision.risk is None else round(decision.risk, 4),
        "cart_value": round(decision.cart_value, 2),
        "model": decision.model,
        "offer_id": None if decision.offer is None else decision.offer.offer_id,
        "reasons": decision.reasons,
        "reasons_in_words": reasons_in_words(
            decision.reasons, decision.features, pause_seconds=pause
        ),
        # offers and holdouts get their reasons a moment after they are decided
        "reasons_pending": explained and not decision.reasons,
        "features": decision.features,
        "admin_url": decision_admin_url(decision.pause_key),
        "skipped": skipped,
    }


@functools.cache
def _decisions_admin() -> str:
    return reverse("admin:offers_decision_changelist")


def decision_admin_url(pause_key: str) -> str:
    """The decision in the admin: its change list narrowed to its pause, which goes on to the
    decision itself once it is recorded (it may not be yet when the frame goes out)."""
    return f"{_decisions_admin()}?{urlencode({'pause_key': pause_key})}"


def conversion_now() -> dict[str, Any]:
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


def _figures_now() -> tuple[dict[str, Any], dict[str, Any], int]:
    """The conversion uplift, the money (`offers.money.uplift_money`) and the records set aside:
    the figures `step` refreshes every few seconds, in one thread."""
    return conversion_now(), uplift_money(window=MONEY_WINDOW), DeadRecord.objects.count()


def money_point(now: float, money: dict[str, Any]) -> list[float | None]:
    """A point of the money chart: [time, net incremental revenue per 1,000 at-risk sessions,
    its 95% interval's low and high] (None where not known yet)."""
    net = money["per_1000"]["net_incremental_revenue"]
    return [round(now), net["estimate"], net["low"], net["high"]]


def model_figures() -> dict[str, Any] | None:
    """The active and shadow models on known outcomes, each re-scored on the same decisions:
    with a shadow, those decided since it entered shadow (`shadow_trial`, as `promote_shadow`
    judges it); without, the active model on those of the last day. None without either model.

        {"since": ISO, "known_before": ISO, "n", "buyers", "basis": "shadow_trial" | "last_day",
         "outcome_window_seconds": OUTCOME_WINDOW_SECONDS,
         "models": [{"model": "cart-risk@3", "role": "active" | "shadow", "n", "roc_auc",
                     "log_loss", "trained_roc_auc"}]}  (active first; unknown figures None)
    """
    trial = shadow_trial()
    if trial is not None:
        comparison, basis = trial.comparison, "shadow_trial"
        roles = {trial.shadow.pk: "shadow"}
        if trial.active is not None:
            roles[trial.active.pk] = "active"
    else:
        active = ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).first()
        if active is None:
            return None
        since = timezone.now() - MODELS_WINDOW
        comparison, basis = compare_models([active], since=since), "last_day"
        roles = {active.pk: "active"}
    models = []
    for evaluation in comparison.models:
        figures = evaluation.figures.as_dict()
        trained = evaluation.model.metrics.get("auc")
        models.append(
            {
                "model": evaluation.model.label,
                "role": roles[evaluation.model.pk],
                "n": figures["n"],
                "roc_auc": figures["roc_auc"],
                "log_loss": figures["log_loss"],
                "trained_roc_auc": trained if isinstance(trained, int | float) else None,
            }
        )
    models.sort(key=lambda model: model["role"] != "active")
    return {
        "since": None if comparison.since is None else _iso(comparison.since),
        "known_before": _iso(comparison.known_before),
        "n": comparison.n,
        "buyers": comparison.buyers,
        "basis": basis,
        "outcome_window_seconds": settings.OUTCOME_WINDOW_SECONDS,
        "models": models,
    }


def alerts_now() -> list[dict[str, Any]]:
    """The alerts a dashboard opens with: the open ones (latest seen first), then the latest
    resolved."""
    open_alerts = Alert.objects.filter(resolved_at__isnull=True).order_by("-last_seen", "-id")
    resolved = Alert.objects.filter(resolved_at__isnull=False).order_by("-resolved_at", "-id")
    return [
        alert_json(alert) for alert in [*open_alerts[:OPEN_ALERTS], *resolved[:RESOLVED_ALERTS]]
    ]


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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
