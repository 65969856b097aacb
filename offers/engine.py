"""The Django side of the stream worker: the model registry, the offer rules and the records.

Each part is a worker step (`async def step(now) -> bool`) that does its database work in a
thread, so the event loop that serves the sockets never waits on the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction
from django.db.models import Count

from offers import metrics
from offers.models import Decision, Offer, OfferRule, ScoringModel
from streaming.decider import Budget, DecisionMade, ModelSlot
from streaming.policy import Rule
from streaming.scoring import ModelError, Scorer, load_model
from streaming.store import SessionStore

log = logging.getLogger(__name__)


def _utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC)


class ModelWatcher:
    """Keeps the slot's scorers equal to the registry's active and shadow models.

    Polls every `every` seconds, so an activation from the admin or from another process
    (`train_model --activate`) takes over within about that long, with no restart.
    """

    def __init__(self, slot: ModelSlot, *, every: float = 1.0) -> None:
        self.slot = slot
        self.every = every
        self._next = 0.0
        self._loaded: dict[str, tuple[int, Scorer] | None] = {"active": None, "shadow": None}
        self._failed: set[int] = set()

    async def step(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.every
        wanted = await database_sync_to_async(_registry_state)()
        changed = False
        for role in ("active", "shadow"):
            changed = await self._sync(role, wanted.get(role)) or changed
        return changed

    async def _sync(self, role: str, model_id: int | None) -> bool:
        loaded = self._loaded[role]
        if (loaded[0] if loaded else None) == model_id:
            return False
        if model_id is None:
            self._set(role, None)
            return True
        if model_id in self._failed:
            return False
        try:
            scorer = await database_sync_to_async(_load_scorer)(model_id)
        except (ModelError, ScoringModel.DoesNotExist) as exc:
            # Keep scoring with the last good model; an operator sees the alert.
            self._failed.add(model_id)
            metrics.MODEL_LOAD_FAILURES.inc()
            log.error("model %s could not be loaded, keeping the last good one: %s", model_id, exc)
            return False
        self._set(role, (model_id, scorer))
        log.info("now scoring with %s as the %s model", scorer.label, role)
        return True

    def _set(self, role: str, loaded: tuple[int, Scorer] | None) -> None:
        self._loaded[role] = loaded
        scorer = loaded[1] if loaded else None
        if role == "active":
            self.slot.active = scorer
            metrics.ACTIVE_MODEL.info({"label": scorer.label if scorer else ""})
        else:
            self.slot.shadow = scorer


def _registry_state() -> dict[str, int]:
    rows = ScoringModel.objects.filter(
        state__in=[ScoringModel.State.ACTIVE, ScoringModel.State.SHADOW]
    ).values_list("state", "id")
    return {state: model_id for state, model_id in rows}


def _load_scorer(model_id: int) -> Scorer:
    model = ScoringModel.objects.get(pk=model_id)
    return load_model(bytes(model.artifact), label=model.label)


class RuleBook:
    """The active offer rules, reloaded every few seconds; seeds today's budget use once a day."""

    def __init__(self, budget: Budget, *, every: float = 2.0) -> None:
        self.budget = budget
        self.every = every
        self._rules: list[Rule] = []
        self._next = 0.0
        self._seeded_day = ""

    def rules(self) -> list[Rule]:
        return self._rules

    async def step(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.every
        self._rules = await database_sync_to_async(_load_rules)()
        day = Budget.day_of(now)
        if day != self._seeded_day:
            self.budget.seed(day, await database_sync_to_async(_offers_made_on)(day))
            self._seeded_day = day
        return False


def _load_rules() -> list[Rule]:
    return [
        Rule(
            id=rule.pk,
            priority=rule.priority,
            min_risk=rule.min_risk,
            min_cart_value=float(rule.min_cart_value),
            discount_percent=rule.discount_percent,
            title=rule.title,
            message=rule.message,
            daily_budget=rule.daily_budget,
            valid_minutes=rule.valid_minutes,
            site=rule.site.key if rule.site else None,
        )
        for rule in OfferRule.objects.filter(active=True).select_related("site")
    ]


def _offers_made_on(day: str) -> dict[int, int]:
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    rows = (
        Offer.objects.filter(created_at__gte=start, created_at__lt=start + dt.timedelta(days=1))
        .exclude(rule=None)
        .values("rule")
        .annotate(n=Count("id"))
    )
    return {row["rule"]: row["n"] for row in rows}


@dataclass(slots=True)
class OfferEvent:
    session_id: str
    offer_id: str | None
    kind: str  # offer_shown, offer_accepted, offer_dismissed, purchase
    at: float
    tries: int = 0


class Recorder:
    """Writes decisions, offers and their outcomes in batches, off the event loop.

    A batch that fails (a database hiccup) stays queued and is tried again on the next tick,
    so nothing decided is lost while the process lives.
    """

    MAX_EVENT_TRIES = 50

    def __init__(self, *, store: SessionStore | None = None) -> None:
        self.store = store
        self._writing: asyncio.Task[bool] | None = None
        self._decisions: deque[DecisionMade] = deque()
        self._events: deque[OfferEvent] = deque()
        self._site_ids: dict[str, int] = {}

    async def record(self, decisions: list[DecisionMade]) -> None:
        self._decisions.extend(decisions)
        for decision in decisions:
            metrics.DECISIONS.labels(decision.outcome).inc()
            done = decision.sent_at if decision.sent_at is not None else decision.at
            metrics.DECISION_DELAY.observe(max(0.0, done - decision.deadline))

    async def step_in_background(self, now: float) -> bool:
        """The worker's step: write in a task of its own, so that no pause waits for the database."""
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self.step(now))
        return False

    async def flush(self) -> None:
        """Everything queued, written (at shutdown)."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        await self.step(0.0)

    def offer_event(self, event: OfferEvent) -> None:
        self._events.append(event)

    def pending(self) -> int:
        return len(self._decisions) + len(self._events)

    async def step(self, now: float) -> bool:
        if not self._decisions and not self._events:
            return False
        decisions = list(self._decisions)
        events = list(self._events)
        try:
            retry = await database_sync_to_async(self._write)(decisions, events)
        except Exception:
            metrics.RECORD_FAILURES.inc()
            log.exception("could not record %d decisions; trying again", len(decisions))
            return False
        # Events may have been queued while writing: drop exactly what was written.
        for _ in range(len(decisions)):
            self._decisions.popleft()
        if self.store is not None:
            # Only now, with the decisions in the database, are their pauses done for good.
            for decision in decisions:
                await self.store.finish(decision.session_id, decision.pause_key)
        for _ in range(len(events)):
            self._events.popleft()
        self._events.extend(retry)
        return True

    def _write(self, decisions: list[DecisionMade], events: list[OfferEvent]) -> list[OfferEvent]:
        if decisions:
            self._write_decisions(decisions)
        retry = []
        for event in events:
            if not self._apply_event(event):
                event.tries += 1
                if event.tries < self.MAX_EVENT_TRIES:
                    retry.append(event)
        return retry

    def _site_id(self, key: str) -> int:
        site_id = self._site_ids.get(key)
        if site_id is None:
            from offers.models import Site

            site_id = self._site_ids[key] = Site.objects.only("id").get(key=key).pk
        return site_id

    def _model_ids(self, labels: set[str]) -> dict[str, int]:
        found = {}
        for label in labels:
            name, _, version = label.rpartition("@")
            if name and version.isdigit():
                model = (
                    ScoringModel.objects.filter(name=name, version=int(version)).only("id").first()
                )
                if model:
                    found[label] = model.pk
        return found

    def _write_decisions(self, decisions: list[DecisionMade]) -> None:
        model_ids = self._model_ids({d.model for d in decisions if d.model})
        rows = [self._decision_row(d, model_ids) for d in decisions]
        try:
            with transaction.atomic():
                Decision.objects.bulk_create(rows)
                self._write_offers(decisions, rows)
        except IntegrityError:
            # A pause already recorded (a retry after a partial failure): write one by one,
            # skipping what is there, so each pause keeps exactly one decision.
            for decision, row in zip(decisions, rows, strict=True):
                row.pk = None
                with transaction.atomic():
                    if Decision.objects.filter(pause_key=decision.pause_key).exists():
                        continue
                    row.save()
                    self._write_offers([decision], [row])

    @staticmethod
    def _write_offers(decisions: list[DecisionMade], rows: list[Decision]) -> None:
        offers = [
            Offer(
                decision=row,
                public_id=d.offer.offer_id,
                session=d.session_id,
                rule_id=d.offer.rule_id,
                code=d.offer.code,
                title=d.offer.title,
                message=d.offer.message,
                discount_percent=d.offer.discount_percent,
                created_at=_utc(d.offer.created_at),
                expires_at=_utc(d.offer.expires_at),
            )
            for d, row in zip(decisions, rows, strict=True)
            if d.offer is not None
        ]
        if offers:
            Offer.objects.bulk_create(offers)

    def _decision_row(self, d: DecisionMade, model_ids: dict[str, int]) -> Decision:
        return Decision(
            site_id=self._site_id(d.site),
            session=d.session_id,
            pause_key=d.pause_key,
            at=_utc(d.at),
            model_id=model_ids.get(d.model),
            model_label=d.model,
            risk=d.risk,
            shadow_risk=d.shadow_risk,
            shadow_model=d.shadow_model,
            features=d.features,
            reasons=d.reasons,
            outcome=d.outcome,
            cart_value=Decimal(str(round(d.cart_value, 2))),
        )

    @staticmethod
    def _apply_event(event: OfferEvent) -> bool:
        at = _utc(event.at)
        if event.kind == "purchase":
            Decision.objects.filter(session=event.session_id, converted_at=None).update(
                converted_at=at
            )
            return True
        field = {
            "offer_shown": "shown_at",
            "offer_accepted": "accepted_at",
            "offer_dismissed": "dismissed_at",
        }[event.kind]
        offers = Offer.objects.filter(public_id=event.offer_id, session=event.session_id)
        if offers.filter(**{f"{field}__isnull": True}).update(**{field: at}):
            return True
        # Nothing to mark: marked before (done), or not written yet or not this session's (try
        # again later). Not `offers.exists()`: an offer its worker writes between the two
        # queries would pass for marked, and the mark be lost.
        return offers.filter(**{f"{field}__isnull": False}).exists()
