"""The offer rules the policy reads, each rule's budget spent today, and each site's margin.

A worker step (`async def step(now) -> bool`) that reloads the active rules every few seconds, in
a thread, so the event loop that serves the sockets never waits on the database.
"""

from __future__ import annotations

import datetime as dt

from channels.db import database_sync_to_async
from django.db.models import Count, Q

from offers.models import Decision, Offer, OfferRule, Site
from streaming.budget import Budget, day_of
from streaming.policy import Rule, Targeting


class RuleBook:
    """The active offer rules, reloaded every few seconds; what the record says each spent today,
    every `seed_every` seconds (a budget's count only goes up from it)."""

    def __init__(self, budget: Budget, *, every: float = 2.0, seed_every: float = 30.0) -> None:
        self.budget = budget
        self.every = every
        self.seed_every = seed_every
        self._rules: list[Rule] = []
        self._margins: dict[str, float] = {}
        self._next = 0.0
        self._next_seed = 0.0
        self._seeded_day = ""

    def rules(self) -> list[Rule]:
        return self._rules

    def margins(self) -> dict[str, float]:
        """Site key -> gross margin (a fraction), for the rules that target by uplift."""
        return self._margins

    async def step(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.every
        self._rules, self._margins = await database_sync_to_async(_load_rules_and_margins)()
        day = day_of(now)
        if day != self._seeded_day or now >= self._next_seed:
            await self.budget.seed(day, await database_sync_to_async(spent_on)(day))
            self._seeded_day = day
            self._next_seed = now + self.seed_every
        return False


def _load_rules_and_margins() -> tuple[list[Rule], dict[str, float]]:
    return _load_rules(), site_margins()


def site_margins() -> dict[str, float]:
    """Each site's gross margin as a fraction."""
    return {
        key: float(percent) / 100
        for key, percent in Site.objects.values_list("key", "gross_margin_percent")
    }


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
            targeting=Targeting(rule.targeting),
        )
        for rule in OfferRule.objects.filter(active=True).select_related("site")
    ]


def spent_on(day: str) -> dict[int, int]:
    """Offers and holdouts each rule made on `day` (UTC), as recorded."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    spending = Q(outcome__in=["offer", "holdout"], at__gte=start, at__lt=end)
    rows = (
        Decision.objects.filter(spending).exclude(rule=None).values("rule").annotate(n=Count("id"))
    )
    spent = {row["rule"]: row["n"] for row in rows}
    # Offers recorded before decisions named their rule count too.
    older = (
        Offer.objects.filter(created_at__gte=start, created_at__lt=end, decision__rule=None)
        .exclude(rule=None)
        .values("rule")
        .annotate(n=Count("id"))
    )
    for row in older:
        spent[row["rule"]] = spent.get(row["rule"], 0) + row["n"]
    return spent
