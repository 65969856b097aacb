"""The offer rules the policy reads, and each rule's budget spent today.

A worker step (`async def step(now) -> bool`) that reloads the active rules every few seconds, in
a thread, so the event loop that serves the sockets never waits on the database.
"""

from __future__ import annotations

import datetime as dt

from channels.db import database_sync_to_async
from django.db.models import Count

from offers.models import Offer, OfferRule
from streaming.decider import Budget
from streaming.policy import Rule


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
