from __future__ import annotations

import pytest

from offers.models import OfferRule
from offers.rulebook import RuleBook
from streaming.budget import Budget
from tests.factories import T0

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_rule_book_loads_active_rules_and_seeds_todays_budget(demo_site):
    from asgiref.sync import sync_to_async

    def setup() -> None:
        OfferRule.objects.create(
            site=demo_site, priority=5, min_risk=0.7, discount_percent=15, title="a", message="a"
        )
        OfferRule.objects.create(
            priority=9, min_risk=0.5, discount_percent=5, title="b", message="b"
        )
        OfferRule.objects.create(
            priority=1, min_risk=0.1, discount_percent=5, title="off", message="c", active=False
        )

    await sync_to_async(setup)()
    budget = Budget()
    book = RuleBook(budget)
    await book.step(T0)
    assert [(r.title, r.site) for r in book.rules()] == [("a", "demo"), ("b", None)]
    assert budget.used(T0) == {}
